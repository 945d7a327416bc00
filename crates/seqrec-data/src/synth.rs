//! A seeded generator of large synthetic logs in the MovieLens `::` format, for scale benchmarks.
//!
//! The model, chosen to stress a reader and a k-core like real logs do:
//! - **item popularity** is Zipf: item of popularity rank `r` (1-based) is drawn with
//!   probability proportional to `1 / r^s` (`s = zipf_exponent`); ranks are mapped to item ids
//!   through a seeded random permutation so popular items are not the small ids;
//! - **user lengths** are Pareto-like: `min_len / u^(1/alpha)` with `u` uniform in (0, 1] and
//!   `alpha = 1.5` (mean about `3 * min_len`), capped at `max_len`; the last user takes the rest;
//! - **timestamps** start at a random second in 2000-2020 per user and strictly increase by 1 s
//!   to 1 h per event; users are written one after the other, like `ml-1m-ratings.dat`;
//! - ratings are uniform in 1..=5.
//!
//! The random generator is a hand-written SplitMix64, so the output for a seed never changes
//! with a dependency upgrade.

use std::io::Write;

/// Settings of [`write_movielens`].
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Total number of events (lines).
    pub events: u64,
    /// Number of distinct items drawn from.
    pub items: u32,
    /// Zipf exponent of item popularity (1.0 is classic Zipf).
    pub zipf_exponent: f64,
    /// Smallest user length (before the last user, which takes the remainder).
    pub min_len: u32,
    /// Largest user length.
    pub max_len: u32,
    /// Random seed.
    pub seed: u64,
}

impl Default for SynthConfig {
    /// One million events over 100,000 items, exponent 1.0, lengths 5..=5000, seed 42.
    fn default() -> Self {
        Self {
            events: 1_000_000,
            items: 100_000,
            zipf_exponent: 1.0,
            min_len: 5,
            max_len: 5_000,
            seed: 42,
        }
    }
}

/// What [`write_movielens`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthSummary {
    /// Lines written.
    pub events: u64,
    /// Users written (ids `1..=users`).
    pub users: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, passes BigCrush.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in `0..n` (`n > 0`), by multiply-shift (bias below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Writes `cfg.events` lines `user::item::rating::timestamp` to `w`.
///
/// ```
/// use seqrec_data::synth::{SynthConfig, write_movielens};
/// let mut out = Vec::new();
/// let cfg = SynthConfig { events: 1000, items: 50, ..SynthConfig::default() };
/// let s = write_movielens(&mut out, &cfg).unwrap();
/// assert_eq!(s.events, 1000);
/// assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1000);
/// assert_eq!(s.bytes as usize, out.len());
/// ```
pub fn write_movielens<W: Write>(mut w: W, cfg: &SynthConfig) -> std::io::Result<SynthSummary> {
    if cfg.items == 0
        || cfg.min_len == 0
        || cfg.max_len < cfg.min_len
        || !cfg.zipf_exponent.is_finite()
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "synth needs items > 0, 0 < min_len <= max_len and a finite exponent",
        ));
    }
    let mut rng = SplitMix64::new(cfg.seed);
    // Inverse-CDF lookup of Zipf ranks.
    let n = cfg.items as usize;
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0f64;
    for r in 1..=n {
        acc += 1.0 / (r as f64).powf(cfg.zipf_exponent);
        cdf.push(acc);
    }
    let total = acc;
    let mut perm: Vec<u32> = (1..=cfg.items).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut written = 0u64;
    let mut bytes = 0u64;
    let mut user = 0u64;
    while written < cfg.events {
        user += 1;
        let u = 1.0 - rng.next_f64(); // (0, 1]
        let len = (cfg.min_len as f64 / u.powf(1.0 / 1.5)).min(cfg.max_len as f64) as u64;
        let len = len.max(1).min(cfg.events - written);
        let mut t: i64 = 946_684_800 + rng.below(631_152_000) as i64;
        for _ in 0..len {
            let x = rng.next_f64() * total;
            let rank = cdf.partition_point(|&c| c <= x).min(n - 1);
            let item = perm[rank];
            let rating = 1 + rng.below(5);
            t += 1 + rng.below(3600) as i64;
            push_u64(&mut buf, user);
            buf.extend_from_slice(b"::");
            push_u64(&mut buf, item as u64);
            buf.extend_from_slice(b"::");
            push_u64(&mut buf, rating);
            buf.extend_from_slice(b"::");
            push_u64(&mut buf, t as u64);
            buf.push(b'\n');
        }
        written += len;
        if buf.len() >= 1 << 20 {
            w.write_all(&buf)?;
            bytes += buf.len() as u64;
            buf.clear();
        }
    }
    w.write_all(&buf)?;
    bytes += buf.len() as u64;
    w.flush()?;
    Ok(SynthSummary {
        events: written,
        users: user,
        bytes,
    })
}

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}
