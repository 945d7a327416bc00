//! Hand-computed exact values, with the arithmetic written beside each number.

use std::collections::HashSet;

use seqrec_metrics::{
    CatalogueAccumulator, Cutoffs, Exclude, Metric, MetricAccumulator, MetricsError, NanPolicy,
    TopK, gini, rank_full, rank_full_batch, rank_in_scores, rank_sampled, top_k,
};

const E: NanPolicy = NanPolicy::Error;

#[test]
fn rank_counts_ties_against_the_model() {
    //          pad    1    2    3    4    5    6
    let row = [100.0, 0.3, 0.7, 0.3, 0.3, 0.1, 0.9];
    // target 1 (0.3): items >= 0.3 other than itself: 2 (0.7), 3 (0.3), 4 (0.3), 6 (0.9) -> rank 4.
    // The padding score 100 is never counted.
    assert_eq!(rank_full(&row, 1, Exclude::Nothing, E), Ok(4));
    // Same for targets 3 and 4: ties hurt every tied item, none is favoured by its position.
    assert_eq!(rank_full(&row, 3, Exclude::Nothing, E), Ok(4));
    assert_eq!(rank_full(&row, 4, Exclude::Nothing, E), Ok(4));
    // target 6 is the strict maximum: rank 0. target 5 is the strict minimum: rank 5 (all others).
    assert_eq!(rank_full(&row, 6, Exclude::Nothing, E), Ok(0));
    assert_eq!(rank_full(&row, 5, Exclude::Nothing, E), Ok(5));
    // Excluding {2, 4}: above target 1 remain 3 and 6 -> rank 2. All exclusion forms agree.
    let set: HashSet<u32> = [2, 4].into_iter().collect();
    let mask = [false, false, true, false, true, false, false];
    assert_eq!(rank_full(&row, 1, Exclude::Sorted(&[2, 4]), E), Ok(2));
    assert_eq!(rank_full(&row, 1, Exclude::Set(&set), E), Ok(2));
    assert_eq!(rank_full(&row, 1, Exclude::Mask(&mask), E), Ok(2));
    // The target in its own exclusion list is still ranked (repeat consumption), and padding in the list
    // is harmless: {0, 1, 2} excludes only item 2 -> above target 1: 3, 4, 6 -> rank 3.
    assert_eq!(rank_full(&row, 1, Exclude::Sorted(&[0, 1, 2]), E), Ok(3));
    let mask_with_target = [true, true, true, false, false, false, false];
    assert_eq!(
        rank_full(&row, 1, Exclude::Mask(&mask_with_target), E),
        Ok(3)
    );
}

#[test]
fn constant_scorer_gets_the_worst_rank() {
    // 50 real items all scoring 1.0: the target ties with 49 others -> rank 49 (HR@10 = 0, not 1).
    let row = vec![1.0f32; 51];
    for target in [1, 25, 50] {
        assert_eq!(rank_full(&row, target, Exclude::Nothing, E), Ok(49));
    }
    // With 10 history items excluded: 39.
    let hist: Vec<u32> = (2..12).collect();
    assert_eq!(rank_full(&row, 30, Exclude::Sorted(&hist), E), Ok(39));
    assert_eq!(rank_in_scores(1.0, &[1.0; 100], E), Ok(100));
}

#[test]
fn nan_policies() {
    let row = [0.0, 0.5, f32::NAN, 0.2, 0.9];
    // Error: a NaN candidate that takes part is reported with its id...
    assert_eq!(
        rank_full(&row, 1, Exclude::Nothing, E),
        Err(MetricsError::NanScore { item: 2 })
    );
    // ...but an excluded NaN is irrelevant: above 0.5 only item 4 -> rank 1.
    assert_eq!(rank_full(&row, 1, Exclude::Sorted(&[2]), E), Ok(1));
    // RankWorst: the NaN candidate counts above the target: items 2 and 4 -> rank 2.
    assert_eq!(
        rank_full(&row, 1, Exclude::Nothing, NanPolicy::RankWorst),
        Ok(2)
    );
    // A NaN target ranks below all 3 other items (worst) under RankWorst, and is an error otherwise.
    assert_eq!(
        rank_full(&row, 2, Exclude::Nothing, NanPolicy::RankWorst),
        Ok(3)
    );
    assert_eq!(
        rank_full(&row, 2, Exclude::Nothing, E),
        Err(MetricsError::NanScore { item: 2 })
    );
    assert_eq!(
        rank_sampled(&row, 1, &[3, 2], E),
        Err(MetricsError::NanScore { item: 2 })
    );
    assert_eq!(rank_sampled(&row, 1, &[3, 2], NanPolicy::RankWorst), Ok(1));
    assert_eq!(
        rank_in_scores(f32::NAN, &[0.1, 0.2], NanPolicy::RankWorst),
        Ok(2)
    );
    assert!(rank_in_scores(0.3, &[f32::NAN], E).is_err());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let row = [0.0, 0.5, 0.4];
    let oob = |t| {
        Err(MetricsError::TargetOutOfRange {
            target: t,
            n_items: 3,
        })
    };
    assert_eq!(rank_full(&row, 0, Exclude::Nothing, E), oob(0));
    assert_eq!(rank_full(&row, 3, Exclude::Nothing, E), oob(3));
    assert_eq!(
        rank_full(&[], 1, Exclude::Nothing, E),
        Err(MetricsError::TargetOutOfRange {
            target: 1,
            n_items: 0
        })
    );
    assert_eq!(
        rank_full(&row, 1, Exclude::Sorted(&[2, 2]), E),
        Err(MetricsError::NotSorted { position: 1 })
    );
    assert_eq!(
        rank_full(&row, 1, Exclude::Sorted(&[1, 9]), E),
        Err(MetricsError::ItemOutOfRange { id: 9, n_items: 3 })
    );
    let set: HashSet<u32> = [7].into_iter().collect();
    assert!(matches!(
        rank_full(&row, 1, Exclude::Set(&set), E),
        Err(MetricsError::ItemOutOfRange { id: 7, .. })
    ));
    assert_eq!(
        rank_full(&row, 1, Exclude::Mask(&[false; 2]), E),
        Err(MetricsError::LengthMismatch { a: 2, b: 3 })
    );
    assert_eq!(
        rank_sampled(&row, 1, &[2, 1], E),
        Err(MetricsError::CandidateIsTarget {
            position: 1,
            target: 1
        })
    );
    assert_eq!(
        rank_sampled(&row, 1, &[0], E),
        Err(MetricsError::ItemOutOfRange { id: 0, n_items: 3 })
    );
    assert!(rank_full_batch(&row, 3, &[1, 2], &[Exclude::Nothing; 2], E).is_err());
    assert!(Cutoffs::new([5, 0]).is_err() && Cutoffs::new(Vec::new()).is_err());
    assert!(top_k(&row, 2, Exclude::Sorted(&[5])).is_err());
    assert!(
        CatalogueAccumulator::new(3, Cutoffs::default())
            .add(&[1, 3])
            .is_err()
    );
    assert!(MetricAccumulator::new(Cutoffs::default()).finish().is_err());
}

#[test]
fn sampled_ranking() {
    let row = [0.0, 0.5, 0.9, 0.5, 0.1, 0.5];
    // Negatives [3, 4, 5, 2]: >= 0.5 are 3 (tie), 5 (tie), 2 -> rank 3.
    assert_eq!(rank_sampled(&row, 1, &[3, 4, 5, 2], E), Ok(3));
    // A duplicate (sampling with replacement) counts each time: [2, 2, 4] -> 2.
    assert_eq!(rank_sampled(&row, 1, &[2, 2, 4], E), Ok(2));
    // Scores-only form: target 0.5 among [0.1, 0.5, 0.9, 0.49] -> 2.
    assert_eq!(rank_in_scores(0.5, &[0.1, 0.5, 0.9, 0.49], E), Ok(2));
}

#[test]
fn batch_ranking_matches_row_by_row() {
    let n = 6;
    let scores: Vec<f32> = (0..3 * n).map(|i| ((i * 7) % 5) as f32).collect();
    let targets = [1, 4, 5];
    let ex = [Exclude::Nothing, Exclude::Sorted(&[2, 3]), Exclude::Nothing];
    let got = rank_full_batch(&scores, n, &targets, &ex, E).unwrap();
    for u in 0..3 {
        assert_eq!(
            got[u],
            rank_full(&scores[u * n..(u + 1) * n], targets[u], ex[u], E).unwrap()
        );
    }
}

#[test]
fn metric_values_by_hand() {
    let ln3 = 3f64.log2();
    // NDCG = 1/log2(r+2): r=0 -> 1; r=1 -> 1/log2 3 = 0.63093...; r=2 -> 1/2; r=6 -> 1/log2 8 = 1/3.
    assert_eq!(Metric::Ndcg(10).value(0), 1.0);
    assert_eq!(Metric::Ndcg(10).value(1), 1.0 / ln3);
    assert!((Metric::Ndcg(10).value(1) - 0.6309297535714575).abs() < 1e-16);
    assert_eq!(Metric::Ndcg(10).value(2), 0.5);
    assert_eq!(Metric::Ndcg(10).value(6), 1.0 / 3.0);
    // Cut-off is strict: rank k is outside top-k.
    assert_eq!(Metric::Ndcg(6).value(6), 0.0);
    assert_eq!(Metric::Hr(5).value(4), 1.0);
    assert_eq!(Metric::Hr(5).value(5), 0.0);
    assert_eq!(Metric::Recall(5).value(4), 1.0);
    // Precision@5 with a hit = 1/5; MAP@10 = MRR@10 = 1/(r+1): r=4 -> 1/5.
    assert_eq!(Metric::Precision(5).value(3), 0.2);
    assert_eq!(Metric::Map(10).value(4), 0.2);
    assert_eq!(Metric::MrrAt(10).value(4), 0.2);
    assert_eq!(Metric::MrrAt(3).value(4), 0.0);
    assert_eq!(Metric::Mrr.value(4), 0.2);
    assert_eq!(Metric::Mrr.value(999), 0.001);
    assert_eq!(Metric::Ndcg(10).name(), "NDCG@10");
}

#[test]
fn accumulator_means_by_hand() {
    // Users 10..13 with ranks 0, 1, 6, 30 at default cut-offs 5, 10, 20.
    let mut acc = MetricAccumulator::new(Cutoffs::default());
    for (u, r) in [(13, 30), (10, 0), (12, 6), (11, 1)] {
        acc.add(u, r);
    }
    let rep = acc.finish().unwrap();
    assert_eq!(rep.users, vec![10, 11, 12, 13]);
    assert_eq!(rep.ranks, vec![0, 1, 6, 30]);
    let ln3 = 3f64.log2();
    // HR@5: ranks 0, 1 -> 2/4. HR@10 and HR@20: ranks 0, 1, 6 -> 3/4.
    assert_eq!(rep.mean(Metric::Hr(5)), Some(0.5));
    assert_eq!(rep.mean(Metric::Hr(10)), Some(0.75));
    assert_eq!(rep.mean(Metric::Hr(20)), Some(0.75));
    // NDCG@5 = (1 + 1/log2 3) / 4; NDCG@10 = (1 + 1/log2 3 + 1/3) / 4.
    assert_eq!(rep.mean(Metric::Ndcg(5)), Some((1.0 + 1.0 / ln3) / 4.0));
    assert_eq!(
        rep.mean(Metric::Ndcg(10)),
        Some((1.0 + 1.0 / ln3 + 1.0 / 3.0) / 4.0)
    );
    // MRR = (1 + 1/2 + 1/7 + 1/31) / 4; MRR@10 drops the 1/31.
    assert_eq!(rep.mrr, (1.0 + 0.5 + 1.0 / 7.0 + 1.0 / 31.0) / 4.0);
    assert_eq!(
        rep.mean(Metric::MrrAt(10)),
        Some((1.0 + 0.5 + 1.0 / 7.0) / 4.0)
    );
    assert_eq!(rep.mean(Metric::Map(10)), rep.mean(Metric::MrrAt(10)));
    // Precision@10 = HR@10 / 10 = 0.075.
    assert_eq!(
        rep.mean(Metric::Precision(10)),
        Some((0.1 + 0.1 + 0.1) / 4.0)
    );
    assert_eq!(rep.mean_rank, 37.0 / 4.0);
    assert_eq!(rep.mean(Metric::Hr(7)), None); // not configured
    assert_eq!(rep.per_user(Metric::Hr(5)), vec![1.0, 1.0, 0.0, 0.0]);
    // Adding user 12 again is an error (one target per user).
    acc.add(12, 3);
    assert_eq!(acc.finish(), Err(MetricsError::DuplicateUser(12)));
    let other = MetricAccumulator::new(Cutoffs::new([1]).unwrap());
    assert!(matches!(
        acc.merge(other),
        Err(MetricsError::MergeMismatch(_))
    ));
}

#[test]
fn compare_checks_users_and_pairs_by_user() {
    let mut a = MetricAccumulator::new(Cutoffs::default());
    let mut b = MetricAccumulator::new(Cutoffs::default());
    // Added in different orders: pairing is by user id, not by insertion order.
    for (u, r) in [(1, 0), (2, 3), (3, 12)] {
        a.add(u, r);
    }
    for (u, r) in [(3, 0), (1, 0), (2, 30)] {
        b.add(u, r);
    }
    let (ra, rb) = (a.finish().unwrap(), b.finish().unwrap());
    // HR@10 per user: a = [1, 1, 0], b = [1, 0, 1] -> d = [0, 1, -1], mean 0, sd 1.
    let cmp = ra.compare(&rb, Metric::Hr(10)).unwrap();
    assert_eq!(
        (cmp.mean_a, cmp.mean_b, cmp.t.mean_diff),
        (2.0 / 3.0, 2.0 / 3.0, 0.0)
    );
    assert_eq!(cmp.t.sd_diff, 1.0);
    assert_eq!(cmp.t.p_value, 1.0); // t = 0
    // Wilcoxon: zero dropped, |d| = [1, 1] tie at rank 1.5 each: R+ = R- = 1.5; exact p = 1.
    assert_eq!(
        (
            cmp.wilcoxon.r_plus,
            cmp.wilcoxon.r_minus,
            cmp.wilcoxon.p_value
        ),
        (1.5, 1.5, 1.0)
    );
    let mut c = MetricAccumulator::new(Cutoffs::default());
    c.add(1, 0);
    c.add(2, 0);
    c.add(4, 0);
    assert!(matches!(
        ra.compare(&c.finish().unwrap(), Metric::Mrr),
        Err(MetricsError::UsersDiffer(_))
    ));
}

#[test]
fn per_user_csv_is_exact() {
    let mut acc = MetricAccumulator::new(Cutoffs::new([2]).unwrap());
    acc.add(5, 2);
    acc.add(4, 0);
    let mut out = Vec::new();
    acc.finish().unwrap().write_per_user_csv(&mut out).unwrap();
    // User 4: rank 0 -> HR 1, NDCG 1, MRR@2 1, MRR 1. User 5: rank 2 -> outside top-2, MRR 1/3.
    let expected = "user,rank,HR@2,NDCG@2,MRR@2,MRR\n4,0,1,1,1,1\n5,2,0,0,0,0.3333333333333333\n";
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn report_serialises_means_only() {
    let mut acc = MetricAccumulator::new(Cutoffs::new([1]).unwrap());
    acc.add(1, 0);
    let rep = acc.finish().unwrap();
    // serde is exercised through the derive; the per-user vectors are skipped (exported as CSV instead).
    fn is_serialize<T: serde::Serialize>(_: &T) {}
    is_serialize(&rep);
    assert_eq!(rep.at_k.len(), 1);
}

#[test]
fn top_k_by_hand() {
    //           pad  1    2    3    4    5    6
    let row = [9.0f32, 0.2, 0.8, 0.5, 0.8, 0.5, 0.1];
    // Sorted by (score desc, id asc): 2 (0.8), 4 (0.8), 3 (0.5), 5 (0.5), 1, 6.
    let (ids, scores) = top_k(&row, 3, Exclude::Nothing).unwrap();
    assert_eq!(ids, vec![2, 4, 3]);
    assert_eq!(scores, vec![0.8, 0.8, 0.5]);
    // Excluding 2 and 3: 4, 5, 1.
    assert_eq!(
        top_k(&row, 3, Exclude::Sorted(&[2, 3])).unwrap().0,
        vec![4, 5, 1]
    );
    // k larger than the catalogue: everything rankable (padding never), in order.
    assert_eq!(
        top_k(&row, 10, Exclude::Nothing).unwrap().0,
        vec![2, 4, 3, 5, 1, 6]
    );
    assert_eq!(
        top_k(&row, 0, Exclude::Nothing).unwrap().0,
        Vec::<u32>::new()
    );
    // -0.0 and +0.0 tie: lower id first.
    assert_eq!(
        top_k(&[0.0, 0.0, -0.0, 0.0], 3, Exclude::Nothing)
            .unwrap()
            .0,
        vec![1, 2, 3]
    );
    // NaN: an error unless excluded.
    let nan_row = [0.0, 0.3, f32::NAN, 0.4];
    assert_eq!(
        top_k(&nan_row, 2, Exclude::Nothing),
        Err(MetricsError::NanScore { item: 2 })
    );
    assert_eq!(
        top_k(&nan_row, 2, Exclude::Sorted(&[2])).unwrap().0,
        vec![3, 1]
    );
    // The reusable selector gives the same answers call after call.
    let mut sel = TopK::new(2);
    for _ in 0..3 {
        sel.select(&row, Exclude::Nothing).unwrap();
        assert_eq!(sel.ids(), &[2, 4]);
    }
}

#[test]
fn catalogue_by_hand() {
    // Gini of [1, 2, 3, 4]: weights (2i - n - 1) = -3, -1, 1, 3; sum w c = -3 - 2 + 3 + 12 = 10;
    // G = 10 / (n * sum c) = 10 / 40 = 0.25. (Mean absolute difference: sum_ij |ci - cj| = 20,
    // 20 / (2 * 16 * 2.5) = 0.25.)
    assert_eq!(gini(&[4, 1, 3, 2]), Some(0.25));
    assert_eq!(gini(&[7; 100]), Some(0.0));
    assert_eq!(gini(&[0, 0, 0, 0, 5]), Some(0.8)); // (n - 1) / n
    assert_eq!(gini(&[0, 0]), None);
    assert_eq!(gini(&[]), None);

    // 5 real items (ids 1..=5). Lists: [1, 2, 3], [1, 2, 4], [2, 1, 5], cut-offs 1, 2, 3.
    let mut acc = CatalogueAccumulator::new(6, Cutoffs::new([1, 2, 3]).unwrap());
    let mut other = acc.empty_like();
    acc.add(&[1, 2, 3]).unwrap();
    acc.add(&[1, 2, 4]).unwrap();
    other.add(&[2, 1, 5]).unwrap();
    acc.merge(&other).unwrap();
    let popularity = [0, 100, 50, 10, 5, 1];
    let r = acc.finish(&popularity).unwrap();
    assert_eq!((r.n_lists, r.n_items), (3, 5));
    // k = 1: items 1, 1, 2 -> distinct {1, 2}: coverage 2/5; counts [2, 1, 0, 0, 0]:
    // sorted [0, 0, 0, 1, 2], weights -4, -2, 0, 2, 4 -> 2 + 8 = 10; G = 10 / (5 * 3) = 2/3.
    // avg popularity (100 + 100 + 50) / 3.
    assert_eq!(r.at_k[0].distinct_items, 2);
    assert_eq!(r.at_k[0].coverage, 0.4);
    assert_eq!(r.at_k[0].gini, 10.0 / 15.0);
    assert_eq!(r.at_k[0].avg_popularity, 250.0 / 3.0);
    // k = 2: 1 and 2 three times each -> counts [3, 3, 0, 0, 0], sorted weights -> 2*3 + 4*3 = 18,
    // G = 18 / (5 * 6) = 0.6; coverage 2/5; avg popularity (3 * 100 + 3 * 50) / 6 = 75.
    assert_eq!(r.at_k[1].gini, 0.6);
    assert_eq!(r.at_k[1].avg_popularity, 75.0);
    // k = 3: counts [3, 3, 1, 1, 1] -> sorted [1, 1, 1, 3, 3], weights -4,-2,0,2,4: -4-2+0+6+12 = 12,
    // G = 12 / (5 * 9) = 4/15; coverage 5/5; avg pop (300 + 150 + 10 + 5 + 1) / 9.
    assert_eq!(r.at_k[2].coverage, 1.0);
    assert_eq!(r.at_k[2].gini, 12.0 / 45.0);
    assert_eq!(r.at_k[2].avg_popularity, 466.0 / 9.0);
    assert_eq!(acc.counts(2).unwrap(), &[0, 3, 3, 1, 1, 1]);
    assert!(matches!(
        acc.finish(&[0, 1]),
        Err(MetricsError::PopularityLength {
            got: 2,
            expected: 6
        })
    ));
}
