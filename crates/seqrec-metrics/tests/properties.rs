//! Property tests: invariants of ranking, metrics, top-k, catalogue and statistics, each fast path
//! checked against the plain oracle in `seqrec_metrics::reference`.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;
use seqrec_metrics::reference::{gini_naive, rank_naive, top_k_naive};
use seqrec_metrics::special::{student_t_cdf, student_t_quantile};
use seqrec_metrics::{
    CatalogueAccumulator, Cutoffs, Exclude, Metric, MetricAccumulator, NanPolicy, WilcoxonConfig,
    WilcoxonMethod, ZeroMethod, gini, rank_full, rank_full_batch, rank_in_scores, rank_sampled,
    top_k, wilcoxon,
};

const E: NanPolicy = NanPolicy::Error;

/// A score row of 2..80 entries with small integer scores (many ties), a target in range, and a sorted
/// exclusion list drawn from the row.
fn case() -> impl Strategy<Value = (Vec<f32>, u32, Vec<u32>)> {
    (2usize..80)
        .prop_flat_map(|n| {
            (
                prop::collection::vec((0u8..6).prop_map(f32::from), n),
                1..n as u32,
                prop::collection::btree_set(0..n as u32, 0..n),
            )
        })
        .prop_map(|(row, t, ex)| (row, t, ex.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rank_matches_oracle_for_every_exclusion_form((row, t, ex) in case()) {
        let expected = rank_naive(&row, t, &ex);
        let set: HashSet<u32> = ex.iter().copied().collect();
        let mut mask = vec![false; row.len()];
        ex.iter().for_each(|&i| mask[i as usize] = true);
        prop_assert_eq!(rank_full(&row, t, Exclude::Sorted(&ex), E).unwrap(), expected);
        prop_assert_eq!(rank_full(&row, t, Exclude::Set(&set), E).unwrap(), expected);
        prop_assert_eq!(rank_full(&row, t, Exclude::Mask(&mask), E).unwrap(), expected);
        // Bounds: 0 <= rank <= number of other rankable, non-excluded items.
        let others = (1..row.len() as u32).filter(|&i| i != t && !set.contains(&i)).count();
        prop_assert!(expected <= others);
    }

    #[test]
    fn excluding_more_never_worsens_the_rank((row, t, ex) in case(), extra in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
        let mut more: BTreeSet<u32> = ex.iter().copied().collect();
        for ix in extra {
            more.insert(ix.index(row.len()) as u32);
        }
        let more: Vec<u32> = more.into_iter().collect();
        let base = rank_full(&row, t, Exclude::Sorted(&ex), E).unwrap();
        let fewer_above = rank_full(&row, t, Exclude::Sorted(&more), E).unwrap();
        prop_assert!(fewer_above <= base);
        prop_assert!(rank_full(&row, t, Exclude::Sorted(&ex), E).unwrap() <= rank_full(&row, t, Exclude::Nothing, E).unwrap());
    }

    #[test]
    fn constant_scorer_gets_the_worst_rank(n in 2usize..200, c in -5.0f32..5.0, t_ix in any::<prop::sample::Index>()) {
        let row = vec![c; n];
        let t = 1 + t_ix.index(n - 1) as u32;
        prop_assert_eq!(rank_full(&row, t, Exclude::Nothing, E).unwrap(), n - 2);
    }

    #[test]
    fn adding_a_better_item_costs_exactly_one_place((row, t, ex) in case(), delta in 0.0f32..3.0) {
        let before = rank_full(&row, t, Exclude::Sorted(&ex), E).unwrap();
        let ts = row[t as usize];
        // A new last item scoring >= the target (delta = 0 is a tie, which also counts against the model).
        let mut better = row.clone();
        better.push(ts + delta);
        prop_assert_eq!(rank_full(&better, t, Exclude::Sorted(&ex), E).unwrap(), before + 1);
        // A strictly worse one changes nothing.
        let mut worse = row.clone();
        worse.push(ts - 0.5 - delta);
        prop_assert_eq!(rank_full(&worse, t, Exclude::Sorted(&ex), E).unwrap(), before);
    }

    #[test]
    fn sampled_rank_is_a_count_over_candidates((row, t, _ex) in case(), picks in prop::collection::vec(any::<prop::sample::Index>(), 0..30)) {
        let negs: Vec<u32> = picks.iter().map(|ix| 1 + ix.index(row.len() - 1) as u32).filter(|&i| i != t).collect();
        let ts = row[t as usize];
        let expected = negs.iter().filter(|&&i| row[i as usize] >= ts).count();
        prop_assert_eq!(rank_sampled(&row, t, &negs, E).unwrap(), expected);
        let scores: Vec<f32> = negs.iter().map(|&i| row[i as usize]).collect();
        prop_assert_eq!(rank_in_scores(ts, &scores, E).unwrap(), expected);
    }

    #[test]
    fn batch_equals_rows(rows in prop::collection::vec(prop::collection::vec((0u8..4).prop_map(f32::from), 12), 1..20), ts in prop::collection::vec(1u32..12, 20)) {
        let flat: Vec<f32> = rows.concat();
        let targets = &ts[..rows.len()];
        let ex = vec![Exclude::Sorted(&[1, 2]); rows.len()];
        let got = rank_full_batch(&flat, 12, targets, &ex, E).unwrap();
        for (u, row) in rows.iter().enumerate() {
            prop_assert_eq!(got[u], rank_full(row, targets[u], ex[u], E).unwrap());
        }
    }

    #[test]
    fn ndcg_hr_mrr_are_monotone_in_k(rank in 0usize..100, k1 in 1usize..60, dk in 0usize..60) {
        let k2 = k1 + dk;
        for (m1, m2) in [
            (Metric::Hr(k1), Metric::Hr(k2)),
            (Metric::Ndcg(k1), Metric::Ndcg(k2)),
            (Metric::MrrAt(k1), Metric::MrrAt(k2)),
            (Metric::Map(k1), Metric::Map(k2)),
        ] {
            prop_assert!(m1.value(rank) <= m2.value(rank));
        }
        // And in the rank: a better rank never scores lower.
        prop_assert!(Metric::Ndcg(k1).value(rank) >= Metric::Ndcg(k1).value(rank + 1));
        prop_assert!(Metric::Mrr.value(rank) > Metric::Mrr.value(rank + 1));
        // NDCG <= HR, MRR@k <= NDCG@k (1/(r+1) <= 1/log2(r+2)), all in [0, 1].
        prop_assert!(Metric::Ndcg(k1).value(rank) <= Metric::Hr(k1).value(rank));
        prop_assert!(Metric::MrrAt(k1).value(rank) <= Metric::Ndcg(k1).value(rank));
        prop_assert!((0.0..=1.0).contains(&Metric::Ndcg(k1).value(rank)));
    }

    #[test]
    fn accumulator_merge_equals_single_pass(ranks in prop::collection::vec(0usize..300, 1..200), splits in prop::collection::vec(any::<prop::sample::Index>(), 0..6), order_seed in any::<u64>()) {
        let cut = Cutoffs::new([1, 5, 10, 20]).unwrap();
        let mut single = MetricAccumulator::new(cut.clone());
        for (u, &r) in ranks.iter().enumerate() {
            single.add(u as u32 * 3, r);
        }
        // Split users into chunks at random boundaries, merge the chunks in a scrambled order.
        let mut bounds: Vec<usize> = splits.iter().map(|ix| ix.index(ranks.len())).collect();
        bounds.extend([0, ranks.len()]);
        bounds.sort_unstable();
        let mut parts: Vec<MetricAccumulator> = bounds.windows(2).map(|w| {
            let mut a = MetricAccumulator::new(cut.clone());
            for (u, &r) in ranks.iter().enumerate().take(w[1]).skip(w[0]) {
                a.add(u as u32 * 3, r);
            }
            a
        }).collect();
        let rot = (order_seed as usize) % parts.len();
        parts.rotate_left(rot);
        parts.reverse();
        let mut merged = MetricAccumulator::new(cut);
        for p in parts {
            merged.merge(p).unwrap();
        }
        let a = single.finish().unwrap();
        let b = merged.finish().unwrap();
        prop_assert_eq!(&a, &b); // bit for bit, per-user ranks included
        // Means are monotone in k.
        for w in a.at_k.windows(2) {
            prop_assert!(w[0].hr <= w[1].hr && w[0].ndcg <= w[1].ndcg && w[0].mrr <= w[1].mrr);
        }
        // Means equal the plain average of the per-user column.
        let col = a.per_user(Metric::Ndcg(10));
        let plain = col.iter().sum::<f64>() / col.len() as f64;
        prop_assert_eq!(a.mean(Metric::Ndcg(10)).unwrap(), plain);
    }

    #[test]
    fn top_k_matches_full_sort((row, _t, ex) in case(), k in 0usize..30) {
        let (ids, scores) = top_k(&row, k, Exclude::Sorted(&ex)).unwrap();
        let expected = top_k_naive(&row, k, &ex);
        let exp_ids: Vec<u32> = expected.iter().map(|e| e.0).collect();
        let exp_scores: Vec<f32> = expected.iter().map(|e| e.1).collect();
        prop_assert_eq!(ids, exp_ids);
        prop_assert_eq!(scores, exp_scores);
    }

    #[test]
    fn top_k_with_real_valued_scores(row in prop::collection::vec(-1e3f32..1e3, 2..300), k in 1usize..50) {
        let (ids, _) = top_k(&row, k, Exclude::Nothing).unwrap();
        let exp: Vec<u32> = top_k_naive(&row, k, &[]).iter().map(|e| e.0).collect();
        prop_assert_eq!(ids, exp);
    }

    #[test]
    fn gini_matches_mean_absolute_difference(counts in prop::collection::vec(0u64..50, 1..60)) {
        let fast = gini(&counts);
        let slow = gini_naive(&counts);
        prop_assert_eq!(fast.is_some(), slow.is_some());
        if let (Some(f), Some(s)) = (fast, slow) {
            prop_assert!((f - s).abs() < 1e-12, "{} vs {}", f, s);
            let n = counts.len() as f64;
            prop_assert!(f >= -1e-15 && f <= (n - 1.0) / n + 1e-12);
        }
    }

    #[test]
    fn gini_of_equal_counts_is_zero(c in 1u64..1_000_000, n in 1usize..500) {
        prop_assert_eq!(gini(&vec![c; n]), Some(0.0));
    }

    #[test]
    fn catalogue_merge_equals_single_pass(lists in prop::collection::vec(prop::collection::vec(1u32..30, 0..12), 1..30), at in any::<prop::sample::Index>()) {
        let cut = Cutoffs::new([1, 5, 10]).unwrap();
        let mut single = CatalogueAccumulator::new(30, cut.clone());
        lists.iter().for_each(|l| single.add(l).unwrap());
        let split = at.index(lists.len());
        let (mut a, mut b) = (single.empty_like(), single.empty_like());
        lists[..split].iter().for_each(|l| a.add(l).unwrap());
        lists[split..].iter().for_each(|l| b.add(l).unwrap());
        b.merge(&a).unwrap();
        let pop: Vec<u32> = (0..30).collect();
        match (single.finish(&pop), b.finish(&pop)) {
            (Ok(x), Ok(y)) => {
                prop_assert_eq!(&x, &y);
                for w in x.at_k.windows(2) {
                    prop_assert!(w[0].coverage <= w[1].coverage);
                }
            }
            (Err(x), Err(y)) => prop_assert_eq!(x, y),
            (x, y) => prop_assert!(false, "{:?} vs {:?}", x, y),
        }
    }

    #[test]
    fn wilcoxon_exact_equals_brute_force_enumeration(d in prop::collection::vec((-6i32..=6).prop_map(|x| f64::from(x) / 2.0), 1..11), pratt in any::<bool>()) {
        // Oracle: enumerate all 2^m sign patterns of the ranked non-zero |d|, count R+ <= and >= observed.
        let zero_method = if pratt { ZeroMethod::Pratt } else { ZeroMethod::Wilcox };
        let cfg = WilcoxonConfig { zero_method, continuity: false, method: WilcoxonMethod::Exact };
        let zeros = vec![0.0; d.len()];
        let r = wilcoxon(&d, &zeros, cfg).unwrap();
        // Average ranks by the definition: rank of x = (#{|y| < |x|} + (#{|y| == |x|} + 1) / 2), over the
        // values that are ranked (all under Pratt, non-zero under Wilcox).
        let ranked: Vec<f64> = d.iter().copied().filter(|&x| pratt || x != 0.0).collect();
        let rank = |x: f64| {
            let below = ranked.iter().filter(|y| y.abs() < x.abs()).count() as f64;
            let equal = ranked.iter().filter(|y| y.abs() == x.abs()).count() as f64;
            below + (equal + 1.0) / 2.0
        };
        let nz: Vec<(f64, bool)> = d.iter().filter(|&&x| x != 0.0).map(|&x| (rank(x), x > 0.0)).collect();
        let obs: f64 = nz.iter().filter(|e| e.1).map(|e| e.0).sum();
        prop_assert_eq!(r.r_plus, obs);
        let m = nz.len();
        let (mut le, mut ge) = (0u64, 0u64);
        for pattern in 0u64..(1 << m) {
            let s: f64 = (0..m).filter(|&j| pattern >> j & 1 == 1).map(|j| nz[j].0).sum();
            le += u64::from(s <= obs);
            ge += u64::from(s >= obs);
        }
        let expected = if m == 0 { 1.0 } else { (2.0 * le.min(ge) as f64 / (1u64 << m) as f64).min(1.0) };
        prop_assert!((r.p_value - expected).abs() < 1e-12, "{} vs {}", r.p_value, expected);
        // Swapping the runs swaps R+ and R- and keeps the p-value.
        let s = wilcoxon(&zeros, &d, cfg).unwrap();
        prop_assert_eq!((s.r_plus, s.r_minus), (r.r_minus, r.r_plus));
        prop_assert!((s.p_value - r.p_value).abs() < 1e-15);
    }

    #[test]
    fn paired_t_is_symmetric_and_shift_invariant(a in prop::collection::vec(0.0f64..1.0, 2..60), shift in -2.0f64..2.0, noise in prop::collection::vec(-0.5f64..0.5, 60)) {
        let b: Vec<f64> = a.iter().zip(&noise).map(|(x, e)| x + e).collect();
        let r = seqrec_metrics::paired_t(&a, &b).unwrap();
        let s = seqrec_metrics::paired_t(&b, &a).unwrap();
        prop_assert!((r.p_value - s.p_value).abs() < 1e-12);
        prop_assert!((r.t_statistic + s.t_statistic).abs() < 1e-9 * r.t_statistic.abs().max(1.0));
        prop_assert!(r.ci95_low <= r.mean_diff && r.mean_diff <= r.ci95_high);
        prop_assert!((0.0..=1.0).contains(&r.p_value));
        // The CI excludes 0 exactly when p < 0.05 (same t quantile), away from the boundary.
        if (r.p_value - 0.05).abs() > 1e-9 {
            prop_assert_eq!(r.p_value < 0.05, r.ci95_low > 0.0 || r.ci95_high < 0.0);
        }
        let a2: Vec<f64> = a.iter().map(|x| x + shift).collect();
        let b2: Vec<f64> = b.iter().map(|x| x + shift).collect();
        let q = seqrec_metrics::paired_t(&a2, &b2).unwrap();
        prop_assert!((q.p_value - r.p_value).abs() < 1e-6);
    }

    #[test]
    fn student_t_quantile_inverts_cdf(p in 0.001f64..0.999, df in 0.5f64..5000.0) {
        let q = student_t_quantile(p, df);
        prop_assert!((student_t_cdf(q, df) - p).abs() < 1e-12);
        prop_assert!((student_t_cdf(-q, df) - (1.0 - p)).abs() < 1e-12);
    }
}
