//! Paired comparison of two runs on the same users: mean difference with a 95% confidence interval, the
//! paired t-test and the Wilcoxon signed-rank test, conventions matching `scipy.stats` (`ttest_rel`,
//! `wilcoxon`) so numbers can be cross-checked.
//!
//! Differences are `d_i = a_i - b_i`: a positive mean difference means run `a` scores higher.

use serde::Serialize;

use crate::MetricsError;
use crate::special::{normal_sf, student_t_quantile, student_t_sf};

/// Largest number of ranked differences for which [`WilcoxonMethod::Exact`] is accepted: the exact
/// distribution costs `O(n^3)` time (doubled ranks sum to at most `n (n + 1)`).
pub const MAX_EXACT_N: usize = 1000;

/// Paired t-test of `a` against `b` (two-sided), with the 95% confidence interval of the mean difference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairedT {
    /// Number of pairs.
    pub n: usize,
    /// Mean of `a - b`.
    pub mean_diff: f64,
    /// Sample standard deviation of `a - b` (denominator `n - 1`).
    pub sd_diff: f64,
    /// Lower end of the 95% CI: `mean - t_{0.975, n-1} * sd / sqrt(n)`.
    pub ci95_low: f64,
    /// Upper end of the 95% CI.
    pub ci95_high: f64,
    /// `t = mean / (sd / sqrt(n))`.
    pub t_statistic: f64,
    /// Degrees of freedom, `n - 1`.
    pub df: f64,
    /// Two-sided p-value, `2 P(T_{n-1} > |t|)`.
    pub p_value: f64,
}

/// How the Wilcoxon test treats zero differences (scipy's `zero_method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum ZeroMethod {
    /// Drop zero differences before ranking (Wilcoxon's rule, scipy's default).
    #[default]
    Wilcox,
    /// Rank zeros with the others, then drop their ranks; the normal approximation is adjusted (Pratt 1959,
    /// Cureton 1967).
    Pratt,
}

/// How the Wilcoxon p-value is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum WilcoxonMethod {
    /// scipy's `method='auto'`: with more than 50 pairs (zeros included), the normal approximation; otherwise
    /// exact when there are no ties and no zeros, exact too when there are but at most 13 pairs (scipy runs a
    /// complete permutation test there, which is the same distribution), the normal approximation otherwise.
    #[default]
    Auto,
    /// The exact distribution of `R+` given the observed ranks, over all `2^n` sign patterns: with no ties or
    /// zeros this is scipy's `method='exact'`; with ties it equals a complete permutation test (scipy
    /// `method=PermutationMethod()` for `n <= 13`). At most [`MAX_EXACT_N`] ranked differences.
    Exact,
    /// Normal approximation with tie correction (and zero correction under [`ZeroMethod::Pratt`]): scipy's
    /// `method='asymptotic'`.
    Normal,
}

/// Options of the Wilcoxon signed-rank test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WilcoxonConfig {
    /// Treatment of zero differences.
    pub zero_method: ZeroMethod,
    /// Apply the continuity correction (`0.5`) to the normal approximation (scipy's `correction`,
    /// default `false`).
    pub continuity: bool,
    /// How the p-value is computed.
    pub method: WilcoxonMethod,
}

/// Result of the Wilcoxon signed-rank test (two-sided).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Wilcoxon {
    /// Number of pairs given (zeros included).
    pub n: usize,
    /// Number of zero differences.
    pub n_zero: usize,
    /// Sum of the ranks of positive differences (`a > b`).
    pub r_plus: f64,
    /// Sum of the ranks of negative differences.
    pub r_minus: f64,
    /// `min(r_plus, r_minus)`, scipy's two-sided `statistic`.
    pub statistic: f64,
    /// z of the normal approximation (before any continuity correction); `None` when exact.
    pub z: Option<f64>,
    /// Two-sided p-value.
    pub p_value: f64,
    /// `true` when the p-value is exact, `false` for the normal approximation.
    pub exact: bool,
}

/// Both tests on the same pairs, plus the means of each run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairedTest {
    /// Mean of `a`.
    pub mean_a: f64,
    /// Mean of `b`.
    pub mean_b: f64,
    /// Paired t-test and CI.
    pub t: PairedT,
    /// Wilcoxon signed-rank test.
    pub wilcoxon: Wilcoxon,
}

fn check_pairs(a: &[f64], b: &[f64]) -> Result<(), MetricsError> {
    if a.len() != b.len() {
        return Err(MetricsError::LengthMismatch {
            a: a.len(),
            b: b.len(),
        });
    }
    if let Some(i) = a
        .iter()
        .zip(b)
        .position(|(x, y)| !x.is_finite() || !y.is_finite())
    {
        return Err(MetricsError::NonFinite(i));
    }
    Ok(())
}

/// Paired t-test (scipy `ttest_rel(a, b)`) and the 95% CI of the mean difference.
///
/// When every difference is identical (`sd = 0`) scipy returns NaN; here `t = 0, p = 1` if the differences
/// are all zero (identical runs) and `t = +-inf, p = 0` otherwise, with a zero-width CI.
///
/// # Errors
/// [`MetricsError::LengthMismatch`], [`MetricsError::NonFinite`], and [`MetricsError::NotEnoughData`] for
/// fewer than 2 pairs.
///
/// ```
/// use seqrec_metrics::paired_t;
/// // d = [1, 2, 3]: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3, df = 2.
/// let r = paired_t(&[2.0, 4.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
/// assert!((r.t_statistic - 2.0 * 3f64.sqrt()).abs() < 1e-12);
/// // scipy.stats.ttest_rel([2, 4, 6], [1, 2, 3]).pvalue = 0.07417990022744853
/// assert!((r.p_value - 0.07417990022744853).abs() < 1e-12);
/// ```
pub fn paired_t(a: &[f64], b: &[f64]) -> Result<PairedT, MetricsError> {
    check_pairs(a, b)?;
    let n = a.len();
    if n < 2 {
        return Err(MetricsError::NotEnoughData(format!(
            "a paired t-test needs >= 2 pairs, got {n}"
        )));
    }
    let nf = n as f64;
    let mean = a.iter().zip(b).map(|(x, y)| x - y).sum::<f64>() / nf;
    let ss = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y - mean).powi(2))
        .sum::<f64>();
    let sd = (ss / (nf - 1.0)).sqrt();
    let se = sd / nf.sqrt();
    let df = nf - 1.0;
    let (t, p) = if se > 0.0 {
        let t = mean / se;
        (t, (2.0 * student_t_sf(t.abs(), df)).min(1.0))
    } else if mean == 0.0 {
        (0.0, 1.0)
    } else {
        (mean.signum() * f64::INFINITY, 0.0)
    };
    let half = student_t_quantile(0.975, df) * se;
    Ok(PairedT {
        n,
        mean_diff: mean,
        sd_diff: sd,
        ci95_low: mean - half,
        ci95_high: mean + half,
        t_statistic: t,
        df,
        p_value: p,
    })
}

/// Wilcoxon signed-rank test of `a` against `b`, two-sided (scipy `wilcoxon(a, b, ...)`).
///
/// Ranks are of `|d|`, average ranks for ties. The normal approximation uses mean `m(m+1)/4` and variance
/// `m(m+1)(2m+1)/24 - sum(t^3 - t)/48` over tie groups of size `t` (`m` ranked values); under Pratt the
/// zeros' share `z(z+1)/4` and `z(z+1)(2z+1)/24` is subtracted. With no non-zero difference the result is
/// `p = 1` (scipy gives NaN).
///
/// # Errors
/// [`MetricsError::LengthMismatch`], [`MetricsError::NonFinite`], [`MetricsError::NotEnoughData`] for no
/// pairs, and [`MetricsError::TooLargeForExact`] when [`WilcoxonMethod::Exact`] is asked for more than
/// [`MAX_EXACT_N`] ranked differences.
///
/// ```
/// use seqrec_metrics::{wilcoxon, WilcoxonConfig};
/// // d = [1, 2, 3, -4, 5]: ranks 1..5, R+ = 1 + 2 + 3 + 5 = 11, R- = 4; exact two-sided p = 2 * 7/32.
/// let r = wilcoxon(&[1.0, 2.0, 3.0, -4.0, 5.0], &[0.0; 5], WilcoxonConfig::default()).unwrap();
/// assert_eq!((r.r_plus, r.statistic), (11.0, 4.0));
/// assert!(r.exact && (r.p_value - 0.4375).abs() < 1e-15);
/// ```
pub fn wilcoxon(a: &[f64], b: &[f64], config: WilcoxonConfig) -> Result<Wilcoxon, MetricsError> {
    check_pairs(a, b)?;
    let n = a.len();
    if n == 0 {
        return Err(MetricsError::NotEnoughData(
            "the Wilcoxon test needs at least one pair".into(),
        ));
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n_zero = d.iter().filter(|&&x| x == 0.0).count();
    // Values that get ranks: non-zero ones (Wilcox) or all (Pratt).
    let mut ranked: Vec<f64> = match config.zero_method {
        ZeroMethod::Wilcox => d.iter().copied().filter(|&x| x != 0.0).collect(),
        ZeroMethod::Pratt => d.clone(),
    };
    ranked.sort_unstable_by(|x, y| x.abs().total_cmp(&y.abs()));
    // Average ranks, tie groups, and doubled ranks (integers) of the non-zero values with their signs.
    let mut r_plus = 0.0;
    let mut r_minus = 0.0;
    let mut tie_term = 0.0; // sum of t^3 - t over tie groups of non-zero |d|
    let mut has_ties = false;
    let mut doubled: Vec<usize> = Vec::with_capacity(ranked.len());
    let mut i = 0;
    while i < ranked.len() {
        let mut j = i + 1;
        while j < ranked.len() && ranked[j].abs() == ranked[i].abs() {
            j += 1;
        }
        // Positions i..j (0-based) share the average rank ((i+1) + j) / 2; doubled: i + 1 + j.
        let twice = i + 1 + j;
        let rank = twice as f64 / 2.0;
        let t = (j - i) as f64;
        let zero_group = ranked[i] == 0.0;
        if !zero_group {
            if j - i > 1 {
                has_ties = true;
                tie_term += t * t * t - t;
            }
            for &x in &ranked[i..j] {
                if x > 0.0 {
                    r_plus += rank;
                } else {
                    r_minus += rank;
                }
                doubled.push(twice);
            }
        }
        i = j;
    }
    let statistic = r_plus.min(r_minus);
    let m = doubled.len();
    if m == 0 {
        return Ok(Wilcoxon {
            n,
            n_zero,
            r_plus,
            r_minus,
            statistic,
            z: None,
            p_value: 1.0,
            exact: true,
        });
    }
    let exact = match config.method {
        WilcoxonMethod::Exact => {
            if m > MAX_EXACT_N {
                return Err(MetricsError::TooLargeForExact {
                    n: m,
                    max: MAX_EXACT_N,
                });
            }
            true
        }
        WilcoxonMethod::Normal => false,
        WilcoxonMethod::Auto => n <= 50 && ((!has_ties && n_zero == 0) || n <= 13),
    };
    if exact {
        let p = exact_p(&doubled, (2.0 * r_plus).round() as usize);
        return Ok(Wilcoxon {
            n,
            n_zero,
            r_plus,
            r_minus,
            statistic,
            z: None,
            p_value: p,
            exact: true,
        });
    }
    let count = ranked.len() as f64;
    let mut mean = count * (count + 1.0) * 0.25;
    let mut var24 = count * (count + 1.0) * (2.0 * count + 1.0);
    if config.zero_method == ZeroMethod::Pratt {
        let z0 = n_zero as f64;
        mean -= z0 * (z0 + 1.0) * 0.25;
        var24 -= z0 * (z0 + 1.0) * (2.0 * z0 + 1.0);
    }
    let se = ((var24 - tie_term / 2.0) / 24.0).sqrt();
    let z = (r_plus - mean) / se;
    let zc = if config.continuity {
        z - z.signum() * 0.5 / se
    } else {
        z
    };
    Ok(Wilcoxon {
        n,
        n_zero,
        r_plus,
        r_minus,
        statistic,
        z: Some(z),
        p_value: (2.0 * normal_sf(zc.abs())).min(1.0),
        exact: false,
    })
}

/// Exact two-sided p-value of `R+` (given doubled, `2 R+ = observed2`) when each rank's sign is a fair coin:
/// `2 min(P(R+ <= obs), P(R+ >= obs))`, clipped to 1. Dynamic programme over doubled ranks (integers even
/// with ties), in probabilities so nothing overflows.
fn exact_p(doubled: &[usize], observed2: usize) -> f64 {
    let total: usize = doubled.iter().sum();
    let mut pmf = vec![0.0f64; total + 1];
    pmf[0] = 1.0;
    let mut reach = 0;
    for &r in doubled {
        // Each value either joins R+ (shift by r) or not, with probability 1/2 each; in place, high to low.
        for s in (0..=reach).rev() {
            let p = pmf[s] * 0.5;
            pmf[s] = p;
            pmf[s + r] += p;
        }
        reach += r;
    }
    let obs = observed2.min(total);
    let cdf: f64 = pmf[..=obs].iter().sum();
    let sf: f64 = pmf[obs..].iter().sum();
    (2.0 * cdf.min(sf)).min(1.0)
}

/// Paired t-test and Wilcoxon test (default [`WilcoxonConfig`]) with both means: the usual "is run `a`
/// better than run `b` on the same users" report. Feed it [`MetricReport::per_user`](crate::MetricReport)
/// columns of two runs whose user lists match.
///
/// # Errors
/// Those of [`paired_t`] and [`wilcoxon`].
pub fn paired_test(a: &[f64], b: &[f64]) -> Result<PairedTest, MetricsError> {
    let t = paired_t(a, b)?;
    let wilcoxon = wilcoxon(a, b, WilcoxonConfig::default())?;
    let n = a.len() as f64;
    Ok(PairedTest {
        mean_a: a.iter().sum::<f64>() / n,
        mean_b: b.iter().sum::<f64>() / n,
        t,
        wilcoxon,
    })
}
