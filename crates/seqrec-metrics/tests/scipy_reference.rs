//! Statistics checked against scipy 1.17.1 (numpy 2.4.6). Each expected value was printed with `repr` by
//! the snippet quoted beside it; the data are regenerated here by the same integer formulas (all values are
//! exact binary fractions, so `a - b` is bit-identical in both languages, and so are the ties).
// Reference values are pasted exactly as scipy / mpmath printed them.
#![allow(clippy::excessive_precision)]

use seqrec_metrics::special::{
    ln_beta, normal_cdf, normal_sf, reg_inc_beta, student_t_cdf, student_t_quantile, student_t_sf,
};
use seqrec_metrics::{
    Metric, WilcoxonConfig, WilcoxonMethod, ZeroMethod, paired_t, paired_test, wilcoxon,
};

/// `|actual - expected| <= abs + rel * |expected|`, with a message naming the quantity.
fn close(name: &str, actual: f64, expected: f64, rel: f64, abs: f64) {
    assert!(
        (actual - expected).abs() <= abs + rel * expected.abs(),
        "{name}: got {actual:e}, scipy {expected:e} (diff {:e})",
        (actual - expected).abs()
    );
}

const REL: f64 = 1e-12;

#[test]
fn student_t_tail_matches_scipy() {
    // from scipy import stats; stats.t.sf(x, df)
    let cases = [
        (1.0, 1.0, 0.25), // Cauchy: exactly 1/4 (scipy prints 0.25000000000000006)
        (2.0, 2.0, 0.09175170953613698),
        (0.5, 5.0, 0.31914943582046457),
        (2.5, 10.0, 0.01572342211830441),
        (-1.3, 7.0, 0.8826160823038114),
        (8.0, 3.0, 0.002038288793892733),
        (40.0, 30.0, 6.863022597203209e-28), // far tail keeps relative precision
        (3.0, 6039.0, 0.001355408035299595), // ML-1M-sized df
        (0.1, 100000.0, 0.46017226295336316),
    ];
    for (x, df, p) in cases {
        close(
            &format!("t.sf({x}, {df})"),
            student_t_sf(x, df),
            p,
            1e-11,
            0.0,
        );
        close(
            &format!("t.cdf({x}, {df})"),
            student_t_cdf(x, df),
            1.0 - p,
            1e-11,
            1e-15,
        );
    }
    // df = 2 closed form: sf(t) = 1/2 - t / (2 sqrt(t^2 + 2)); at t = 2: 1/2 - 1/sqrt(6).
    close(
        "t.sf(2, 2) closed form",
        student_t_sf(2.0, 2.0),
        0.5 - 1.0 / 6f64.sqrt(),
        1e-14,
        0.0,
    );
    assert_eq!(student_t_sf(0.0, 4.0), 0.5);
    assert!(student_t_sf(1.0, 0.0).is_nan() && student_t_sf(f64::NAN, 3.0).is_nan());
}

#[test]
fn student_t_quantile_matches_scipy() {
    // stats.t.ppf(p, df)
    let cases = [
        (0.975, 1.0, 12.706204736174694),
        (0.975, 2.0, 4.302652729749462),
        (0.975, 5.0, 2.5705818356363146),
        (0.975, 30.0, 2.0422724563012378),
        (0.975, 6039.0, 1.9603568871197627),
        (0.025, 12.0, -2.1788128296672293),
        (0.9999, 3.0, 22.203742273205),
    ];
    for (p, df, q) in cases {
        close(
            &format!("t.ppf({p}, {df})"),
            student_t_quantile(p, df),
            q,
            1e-11,
            0.0,
        );
    }
    assert!(student_t_quantile(0.5, 9.0).abs() < 1e-15);
    assert!(student_t_quantile(1.5, 3.0).is_nan());
}

#[test]
fn normal_and_incomplete_beta_match_scipy() {
    // stats.norm.sf(z)
    for (z, p) in [
        (0.0, 0.5),
        (1.0, 0.15865525393145707),
        (1.959963984540054, 0.025),
        (5.0, 2.866515718791933e-07),
        (10.0, 7.61985302416047e-24),
        (-3.0, 0.9986501019683699),
    ] {
        close(&format!("norm.sf({z})"), normal_sf(z), p, 1e-13, 0.0);
        close(&format!("norm.cdf({z})"), normal_cdf(-z), p, 1e-13, 0.0);
    }
    // ln B(a, b) in all three branches (both < 10, one >= 10, both >= 10), against 40-digit mpmath 1.3:
    // mpmath.mp.dps = 40; mpmath.log(mpmath.beta(a, b)). scipy.special.betaln is itself off for large `a`
    // (it prints -3.434016926370532 for (3019.5, 0.5), -4.837521699315403 for (50000, 0.5), and
    // -6.3353902120143175 for (1e6, 0.5): errors 3e-12 to 1e-9), so it is not the reference here.
    for (a, b, v) in [
        (3019.5, 0.5, -3.434016926367085845),
        (50000.0, 0.5, -4.837521699280441510),
        (0.5, 0.5, 1.1447298858494002), // ln(pi)
        (12.5, 30.0, -25.90868399131007541),
        (5.0, 15.0, -10.97060917411286692),
        (1e6, 0.5, -6.335390211057436965),
    ] {
        close(&format!("betaln({a}, {b})"), ln_beta(a, b), v, 1e-13, 0.0);
    }
    // scipy.special.betainc(a, b, x)
    for (a, b, x, v) in [
        (0.5, 0.5, 0.3, 0.36901011956554536),
        (2.0, 3.0, 0.4, 0.5248), // I_0.4(2,3) = sum_{j=2..4} C(4,j) 0.4^j 0.6^(4-j) = 0.3456+0.1536+0.0256
        (10.0, 0.5, 0.9, 0.15164090963470994),
        (3019.5, 0.5, 0.99, 6.684405136519111e-15),
    ] {
        close(
            &format!("betainc({a}, {b}, {x})"),
            reg_inc_beta(a, b, x),
            v,
            1e-11,
            0.0,
        );
    }
}

/// ds1: `a_i = ((37 i) mod 17) / 4`, `b_i = ((11 i) mod 13) / 4`, i in 0..10:
/// d = [0, -2, -0.75, 0.5, 1.75, 3, 0, -2, -0.75, 0.5] (two zeros, three tie pairs).
fn ds1() -> (Vec<f64>, Vec<f64>) {
    let a = (0..10).map(|i| ((i * 37) % 17) as f64 / 4.0).collect();
    let b = (0..10).map(|i| ((i * 11) % 13) as f64 / 4.0).collect();
    (a, b)
}

#[test]
fn paired_t_and_ci_match_scipy_small() {
    // r = stats.ttest_rel(a, b); ci = r.confidence_interval(0.95)
    let (a, b) = ds1();
    let r = paired_t(&a, &b).unwrap();
    close("ds1 mean", r.mean_diff, 0.025, 1e-15, 0.0); // sum d = 0.25 over 10
    close("ds1 t", r.t_statistic, 0.050935327723126735, REL, 0.0);
    close("ds1 p", r.p_value, 0.9604896113696542, REL, 0.0);
    close("ds1 ci lo", r.ci95_low, -1.0853085343314148, REL, 0.0);
    close("ds1 ci hi", r.ci95_high, 1.1353085343314147, REL, 0.0);
    assert_eq!(r.df, 9.0);
}

#[test]
fn wilcoxon_small_with_ties_and_zeros_matches_scipy() {
    let (a, b) = ds1();
    let auto = WilcoxonConfig::default();
    // stats.wilcoxon(a, b): n = 10 with ties/zeros -> complete permutation test (2^8 sign patterns)
    let r = wilcoxon(&a, &b, auto).unwrap();
    assert_eq!(r.statistic, 16.0);
    assert_eq!(r.n_zero, 2);
    assert!(r.exact);
    close("ds1 W p auto", r.p_value, 0.7890625, 1e-14, 0.0);
    // stats.wilcoxon(a, b, method='asymptotic')
    let normal = WilcoxonConfig {
        method: WilcoxonMethod::Normal,
        ..auto
    };
    close(
        "ds1 W p asym",
        wilcoxon(&a, &b, normal).unwrap().p_value,
        0.7786403373808597,
        REL,
        0.0,
    );
    // stats.wilcoxon(a, b, method='asymptotic', correction=True)
    let cc = WilcoxonConfig {
        continuity: true,
        ..normal
    };
    close(
        "ds1 W p asym cc",
        wilcoxon(&a, &b, cc).unwrap().p_value,
        0.8330288937195213,
        REL,
        0.0,
    );

    // ds2: a = ((5i) mod 7)/4, b = ((3i) mod 7)/4, i in 0..12
    // d = [0, .5, -.75, -.25, .25, .75, -.5, 0, .5, -.75, -.25, .25]
    let a: Vec<f64> = (0..12).map(|i| ((i * 5) % 7) as f64 / 4.0).collect();
    let b: Vec<f64> = (0..12).map(|i| ((i * 3) % 7) as f64 / 4.0).collect();
    let r = wilcoxon(&a, &b, auto).unwrap();
    assert_eq!(r.statistic, 26.0); // stats.wilcoxon(a, b).statistic
    close("ds2 p perm", r.p_value, 0.921875, 1e-14, 0.0);
    let pratt = WilcoxonConfig {
        zero_method: ZeroMethod::Pratt,
        ..auto
    };
    let r = wilcoxon(&a, &b, pratt).unwrap();
    assert_eq!(r.statistic, 36.0); // stats.wilcoxon(a, b, zero_method='pratt').statistic
    close("ds2 pratt p perm", r.p_value, 0.974609375, 1e-14, 0.0);
    close(
        "ds2 p asym",
        wilcoxon(&a, &b, normal).unwrap().p_value,
        0.8770474335019055,
        REL,
        0.0,
    );
    let pratt_normal = WilcoxonConfig {
        zero_method: ZeroMethod::Pratt,
        ..normal
    };
    close(
        "ds2 pratt p asym",
        wilcoxon(&a, &b, pratt_normal).unwrap().p_value,
        0.905308838263529,
        REL,
        0.0,
    );
}

#[test]
fn wilcoxon_exact_without_ties_matches_scipy() {
    // ds6: a_i = ((17 i) mod 40 + 1) * s_i / 4 with s_i = +1 if (i^2 mod 5) < 3 else -1, b = 0, i in 0..40.
    // All |d| distinct, no zeros: stats.wilcoxon(a, b) uses the exact null distribution.
    let a: Vec<f64> = (0..40)
        .map(|i| {
            let s = if (i * i) % 5 < 3 { 1.0 } else { -1.0 };
            (((i * 17) % 40 + 1) as f64) * s / 4.0
        })
        .collect();
    let b = vec![0.0; 40];
    let r = wilcoxon(&a, &b, WilcoxonConfig::default()).unwrap();
    assert!(r.exact);
    assert_eq!(r.statistic, 336.0);
    close("ds6 p exact", r.p_value, 0.32689447529082827, 1e-12, 0.0);
    let normal = WilcoxonConfig {
        method: WilcoxonMethod::Normal,
        ..Default::default()
    };
    close(
        "ds6 p asym",
        wilcoxon(&a, &b, normal).unwrap().p_value,
        0.3199036007902615,
        REL,
        0.0,
    );
    close(
        "ds6 t p",
        paired_t(&a, &b).unwrap().p_value,
        0.3261004319195482,
        REL,
        0.0,
    );
}

#[test]
fn ndcg_columns_of_two_runs_match_scipy() {
    // ds3, the real use: per-user NDCG@10 of two runs, 300 users, many zeros and ties.
    // ra = [(i*7919) % 50], rb = [(i*104729 + 13) % 45]; f = lambda r: 1/math.log2(r+2) if r < 10 else 0.0
    let a: Vec<f64> = (0..300u64)
        .map(|i| Metric::Ndcg(10).value(((i * 7919) % 50) as usize))
        .collect();
    let b: Vec<f64> = (0..300u64)
        .map(|i| Metric::Ndcg(10).value(((i * 104729 + 13) % 45) as usize))
        .collect();
    let r = paired_test(&a, &b).unwrap();
    // r = stats.ttest_rel(a, b); ci = r.confidence_interval(0.95)
    close("ds3 t", r.t.t_statistic, -0.646664509616063, 1e-10, 0.0);
    close("ds3 t p", r.t.p_value, 0.5183451770035736, 1e-10, 0.0);
    close("ds3 ci lo", r.t.ci95_low, -0.04563859653535954, 1e-10, 0.0);
    close("ds3 ci hi", r.t.ci95_high, 0.023063115499917256, 1e-10, 0.0);
    // stats.wilcoxon(a, b) (n > 50: asymptotic, no continuity correction)
    assert!(!r.wilcoxon.exact);
    assert_eq!(r.wilcoxon.statistic, 3356.0);
    close(
        "ds3 wilcox p",
        r.wilcoxon.p_value,
        0.5699776982484386,
        1e-10,
        0.0,
    );
    let expected = [
        // (zero_method, correction, statistic, p) from stats.wilcoxon(a, b, zero_method=.., correction=..)
        (ZeroMethod::Wilcox, true, 3356.0, 0.5708792590264433),
        (ZeroMethod::Pratt, false, 13130.0, 0.3622994553005159),
        (ZeroMethod::Pratt, true, 13130.0, 0.3624979191345443),
    ];
    for (zero_method, continuity, w, p) in expected {
        let cfg = WilcoxonConfig {
            zero_method,
            continuity,
            method: WilcoxonMethod::Auto,
        };
        let r = wilcoxon(&a, &b, cfg).unwrap();
        assert_eq!(r.statistic, w, "{cfg:?}");
        close(&format!("ds3 {cfg:?}"), r.p_value, p, 1e-10, 0.0);
    }
}

#[test]
fn strong_effect_tiny_p_values_match_scipy() {
    // ds4: a_i = ((37 i) mod 101)/8 + 1, b_i = ((53 i) mod 97)/8, i in 0..400
    let a: Vec<f64> = (0..400)
        .map(|i| ((i * 37) % 101) as f64 / 8.0 + 1.0)
        .collect();
    let b: Vec<f64> = (0..400).map(|i| ((i * 53) % 97) as f64 / 8.0).collect();
    let r = paired_test(&a, &b).unwrap();
    close("ds4 t", r.t.t_statistic, 5.110654029439149, REL, 0.0);
    close("ds4 t p", r.t.p_value, 4.989283559312626e-07, 1e-10, 0.0);
    assert_eq!(r.wilcoxon.statistic, 28477.5);
    close(
        "ds4 W p",
        r.wilcoxon.p_value,
        2.035036416373088e-06,
        1e-10,
        0.0,
    );
}
