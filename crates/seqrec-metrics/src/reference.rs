//! Plain, obviously-correct versions of the fast paths, used as oracles by the tests and benches.
//! Never optimise these.

use std::collections::HashSet;

/// Rank of `target` by the definition: count the other rankable items `i` (not padding, not excluded,
/// not the target) with `!(row[i] < row[target])`. Panics on out-of-range ids (oracle only).
pub fn rank_naive(row: &[f32], target: u32, exclude: &[u32]) -> usize {
    let excluded: HashSet<u32> = exclude.iter().copied().collect();
    let t = row[target as usize];
    (1..row.len() as u32)
        .filter(|&i| i != target && !excluded.contains(&i))
        .filter(|&i| !(row[i as usize] < t))
        .count()
}

/// Top-k by a full sort of all rankable items: score descending, then id ascending. Assumes no NaN.
pub fn top_k_naive(row: &[f32], k: usize, exclude: &[u32]) -> Vec<(u32, f32)> {
    let excluded: HashSet<u32> = exclude.iter().copied().collect();
    let mut all: Vec<(u32, f32)> = (1..row.len() as u32)
        .filter(|i| !excluded.contains(i))
        .map(|i| (i, row[i as usize]))
        .collect();
    all.sort_by(|x, y| y.1.partial_cmp(&x.1).expect("no NaN").then(x.0.cmp(&y.0)));
    all.truncate(k);
    all
}

/// Gini index by the mean absolute difference: `sum_i sum_j |c_i - c_j| / (2 n^2 mean)`, `O(n^2)`.
pub fn gini_naive(counts: &[u64]) -> Option<f64> {
    let n = counts.len() as f64;
    let total: u64 = counts.iter().sum();
    if counts.is_empty() || total == 0 {
        return None;
    }
    let mad: f64 = counts
        .iter()
        .flat_map(|&x| counts.iter().map(move |&y| (x as f64 - y as f64).abs()))
        .sum();
    Some(mad / (2.0 * n * total as f64))
}
