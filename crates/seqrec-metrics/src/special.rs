//! Special functions for the tests: regularised incomplete beta, Student-t and normal distributions.
//!
//! Written by hand (Numerical Recipes' continued fraction with the modified Lentz method) so the crate needs
//! no statistics dependency; `libm` supplies `lgamma` and `erfc`. Checked against scipy in the tests.

/// Regularised incomplete beta function `I_x(a, b)` for `a, b > 0`, `x` in `[0, 1]`.
///
/// Uses the continued fraction directly when `x < (a + 1) / (a + b + 2)` (where it converges fast) and
/// the symmetry `I_x(a, b) = 1 - I_{1-x}(b, a)` otherwise, so small results keep their relative precision
/// on the direct side. Returns NaN for arguments outside the domain.
pub fn reg_inc_beta(a: f64, b: f64, x: f64) -> f64 {
    reg_inc_beta_xy(a, b, x, 1.0 - x)
}

/// [`reg_inc_beta`] given both `x` and `y = 1 - x`, so a caller who can form `y` without cancellation
/// (Student-t: `x = df / (df + t^2)`, `y = t^2 / (df + t^2)`) keeps its relative precision near `x = 1`.
fn reg_inc_beta_xy(a: f64, b: f64, x: f64, y: f64) -> f64 {
    if a.is_nan()
        || b.is_nan()
        || a <= 0.0
        || b <= 0.0
        || !(0.0..=1.0).contains(&x)
        || !(0.0..=1.0).contains(&y)
    {
        return f64::NAN;
    }
    if x == 0.0 || y == 1.0 {
        return 0.0;
    }
    if x == 1.0 || y == 0.0 {
        return 1.0;
    }
    // ln of x^a y^b / B(a, b)
    let ln_front = a * x.ln() + b * y.ln() - ln_beta(a, b);
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, y) / b
    }
}

/// `ln B(a, b) = ln Gamma(a) + ln Gamma(b) - ln Gamma(a + b)` for `a, b > 0`.
///
/// Summing `lgamma` values loses absolute precision when an argument is large (Student-t with `df` = 6039
/// users has `a` = 3019.5: each `lgamma` is ~2e4, so ~1e-12 of it cancels away). With `p = min(a, b)`,
/// `q = max(a, b)` and Stirling's `ln Gamma(x) = (x - 1/2) ln x - x + ln(2 pi)/2 + corr(x)`, the large parts
/// cancel analytically (as in TOMS 708's `betaln`):
/// - `q >= 10`: `ln Gamma(q) - ln Gamma(p + q) = -p ln q - (p + q - 1/2) ln1p(p / q) + p + corr(q) - corr(p + q)`;
/// - both `>= 10`: `ln B = ln(2 pi)/2 - (ln q)/2 + (p - 1/2) ln(p / q) - (p + q - 1/2) ln1p(p / q) + corr(p) +
///   corr(q) - corr(p + q)`.
pub fn ln_beta(a: f64, b: f64) -> f64 {
    let (p, q) = if a < b { (a, b) } else { (b, a) };
    if q < 10.0 {
        libm::lgamma(p) + libm::lgamma(q) - libm::lgamma(p + q)
    } else if p < 10.0 {
        let diff = -p * q.ln() - (p + q - 0.5) * (p / q).ln_1p() + p + stirling_corr(q)
            - stirling_corr(p + q);
        libm::lgamma(p) + diff
    } else {
        0.5 * (2.0 * std::f64::consts::PI).ln() - 0.5 * q.ln() + (p - 0.5) * (p / q).ln()
            - (p + q - 0.5) * (p / q).ln_1p()
            + stirling_corr(p)
            + stirling_corr(q)
            - stirling_corr(p + q)
    }
}

/// `corr(x) = ln Gamma(x) - [(x - 1/2) ln x - x + ln(2 pi)/2]` for `x >= 10`: Stirling's series
/// `1/(12x) - 1/(360x^3) + 1/(1260x^5) - 1/(1680x^7) + 1/(1188x^9) - 691/(360360x^11) + 1/(156x^13)`;
/// the first omitted term is below 3e-17 at `x = 10`.
fn stirling_corr(x: f64) -> f64 {
    let x2 = 1.0 / (x * x);
    let series = 1.0 / 12.0
        - x2 * (1.0 / 360.0
            - x2 * (1.0 / 1260.0
                - x2 * (1.0 / 1680.0
                    - x2 * (1.0 / 1188.0 - x2 * (691.0 / 360360.0 - x2 / 156.0)))));
    series / x
}

/// Continued fraction for the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const MAX_ITER: usize = 100_000; // converges in O(sqrt(max(a, b))) steps; df ~ 1e6 users is fine
    const EPS: f64 = 1e-16;
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=MAX_ITER {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step: d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        // Odd step: d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// Upper tail `P(T > t)` of Student's t with `df` degrees of freedom.
///
/// `P(|T| > |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)`, halved for one tail.
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    let denom = df + t * t;
    let tail = 0.5 * reg_inc_beta_xy(0.5 * df, 0.5, df / denom, t * t / denom);
    if t > 0.0 { tail } else { 1.0 - tail }
}

/// CDF `P(T <= t)` of Student's t with `df` degrees of freedom.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    student_t_sf(-t, df)
}

/// The `p`-quantile of Student's t (`student_t_cdf(q, df) = p`), by bisection on the CDF to full precision.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    if p.is_nan() || df.is_nan() || df <= 0.0 || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 || p == 1.0 {
        return if p == 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, df);
    }
    // Upper tail probability q = 1 - p <= 0.5; find t >= 0 with sf(t) = q (sf is decreasing).
    let q = 1.0 - p;
    let mut hi = 1.0;
    while student_t_sf(hi, df) > q {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if student_t_sf(mid, df) > q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Standard normal CDF, `Phi(z) = erfc(-z / sqrt 2) / 2` (accurate in both tails).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Standard normal upper tail, `1 - Phi(z) = erfc(z / sqrt 2) / 2`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}
