//! The popularity baseline on real data (SASRec's ML-1M file), checked against an independent numpy
//! computation. Fails (does not skip) when the data are missing.
//!
//! Protocol: leave-one-out (each user's last item is the target), scores = training counts (all items
//! before each user's last), full ranking over all 3416 items with the user's earlier items excluded, ties
//! counted against the model. The popularity scorer ties a lot (many items share a count), so this
//! exercises the tie rule on real data. Expected numbers from this numpy script (numpy 2.4.6):
//!
//! ```python
//! seqs = {}
//! for line in open('ml-1m-sasrec.txt'):
//!     u, i = map(int, line.split()); seqs.setdefault(u, []).append(i)
//! n_items = max(max(s) for s in seqs.values())
//! pop = np.zeros(n_items + 1, dtype=np.int64)
//! for s in seqs.values():
//!     for i in s[:-1]: pop[i] += 1
//! score = pop.astype(np.float64)
//! order = np.lexsort((np.arange(n_items + 1), -score)); order = order[order != 0]  # score desc, id asc
//! ranks = []; counts10 = np.zeros(n_items + 1, dtype=np.int64)
//! for u in sorted(seqs):
//!     s = seqs[u]; t = s[-1]; hist = set(s[:-1]) - {t}; ts = score[t]
//!     ranks.append(int((score[1:] >= ts).sum()) - 1 - sum(1 for h in hist if score[h] >= ts))
//!     seen = set(s[:-1]); top = [i for i in order[:10 + len(seen)] if i not in seen][:10]
//!     for i in top: counts10[i] += 1
//! # hits@5 122, hits@10 219, hits@20 413, sum of ranks 3957661, max rank 3374
//! # NDCG@10 0.01781499649694793, MRR 0.019887597271626877
//! # distinct@10 199, gini@10 0.9923631101012764, avg pop@10 2526.129834437086
//! # user 1: target 53, rank 793, top-10 [63, 79, 55, 135, 130, 131, 66, 186, 54, 74]
//! ```

use std::path::PathBuf;

use seqrec_metrics::{
    CatalogueAccumulator, Cutoffs, Exclude, Metric, MetricAccumulator, NanPolicy, TopK, rank_full,
};

fn data_dir() -> PathBuf {
    std::env::var_os("SEQREC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// `user item` lines, users 1-based and contiguous, items in time order.
fn load_sequences() -> Vec<Vec<u32>> {
    let path = data_dir().join("ml-1m-sasrec.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is required for this test: {e} (set SEQREC_DATA_DIR)",
            path.display()
        )
    });
    let mut seqs: Vec<Vec<u32>> = Vec::new();
    for line in text.lines() {
        let mut it = line
            .split_whitespace()
            .map(|x| x.parse::<u32>().expect("integer"));
        let (u, i) = (it.next().expect("user") as usize, it.next().expect("item"));
        if seqs.len() < u {
            seqs.resize(u, Vec::new());
        }
        seqs[u - 1].push(i);
    }
    seqs
}

#[test]
fn popularity_baseline_on_ml1m_matches_numpy() {
    let seqs = load_sequences();
    assert_eq!(seqs.len(), 6040);
    let n_items = seqs.iter().flatten().copied().max().unwrap() as usize;
    assert_eq!(n_items, 3416);
    let mut pop = vec![0u32; n_items + 1];
    for s in &seqs {
        for &i in &s[..s.len() - 1] {
            pop[i as usize] += 1;
        }
    }
    let row: Vec<f32> = pop.iter().map(|&c| c as f32).collect(); // counts < 2^24: exact in f32

    let mut acc = MetricAccumulator::new(Cutoffs::default());
    let mut cat = CatalogueAccumulator::new(n_items + 1, Cutoffs::new([10]).unwrap());
    let mut top = TopK::new(10);
    let mut seen = Vec::new();
    for (u, s) in seqs.iter().enumerate() {
        let target = *s.last().unwrap();
        seen.clear();
        seen.extend_from_slice(&s[..s.len() - 1]);
        seen.sort_unstable();
        seen.dedup();
        let rank = rank_full(&row, target, Exclude::Sorted(&seen), NanPolicy::Error).unwrap();
        acc.add(u as u32 + 1, rank);
        top.select(&row, Exclude::Sorted(&seen)).unwrap();
        cat.add(top.ids()).unwrap();
        if u == 0 {
            assert_eq!((target, rank), (53, 793));
            assert_eq!(top.ids(), &[63, 79, 55, 135, 130, 131, 66, 186, 54, 74]);
        }
    }
    let rep = acc.finish().unwrap();
    let hits = |k: usize| rep.ranks.iter().filter(|&&r| (r as usize) < k).count();
    assert_eq!((hits(5), hits(10), hits(20)), (122, 219, 413));
    assert_eq!(
        rep.ranks.iter().map(|&r| u64::from(r)).sum::<u64>(),
        3957661
    );
    assert_eq!(rep.ranks.iter().max(), Some(&3374));
    assert_eq!(rep.mean(Metric::Hr(10)), Some(219.0 / 6040.0));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(close(
        rep.mean(Metric::Ndcg(10)).unwrap(),
        0.01781499649694793
    ));
    assert!(close(rep.mrr, 0.019887597271626877));
    let c = cat.finish(&pop).unwrap();
    assert_eq!(c.at_k[0].distinct_items, 199);
    assert!(
        close(c.at_k[0].gini, 0.9923631101012764),
        "{}",
        c.at_k[0].gini
    );
    assert!(close(c.at_k[0].avg_popularity, 2526.129834437086));
}
