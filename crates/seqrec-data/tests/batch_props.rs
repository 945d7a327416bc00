//! Property tests of batching and negative sampling, plus ML-1M epoch counts.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use proptest::prelude::*;
use seqrec_data::{
    ContextConfig, Dataset, Distribution, EvalBatcher, Id, NegativeSampler, Negatives, PAD,
    PositionFrom, SasrecBatch, SasrecBatcher, SasrecConfig, Sequences, SessionParallel, Split,
    Vocab, WindowMode, sample_eval_negatives,
};

/// A random dataset: up to 20 users, 2..40 items, sequences of 0..60 events.
fn arb_dataset() -> impl Strategy<Value = Dataset> {
    (2usize..40, 1usize..20).prop_flat_map(|(n_items, n_users)| {
        let seq = prop::collection::vec((1..=n_items as Id, 0i64..50), 0..60);
        prop::collection::vec(seq, n_users).prop_map(move |seqs| build(n_items, seqs))
    })
}

fn build(n_items: usize, seqs: Vec<Vec<(Id, i64)>>) -> Dataset {
    let users = Vocab::from_originals((0..seqs.len()).map(|u| format!("u{u}")).collect()).unwrap();
    let items = Vocab::from_originals((0..n_items).map(|i| format!("i{i}")).collect()).unwrap();
    let seqs = seqs
        .into_iter()
        .map(|events| {
            let mut t = 0i64;
            events
                .into_iter()
                .map(|(i, gap)| {
                    t += gap * gap; // gaps 0..2,401 s: spans several log2 buckets
                    (i, t)
                })
                .unzip()
        })
        .collect();
    Dataset::from_sequences(users, items, seqs).unwrap()
}

/// Can every user still draw a negative (touched fewer than all items)?
fn has_free_items(ds: &Dataset) -> bool {
    ds.user_ids()
        .all(|u| ds.items_of(u).iter().collect::<HashSet<_>>().len() < ds.n_items())
}

/// One session-parallel step of a lane: (user, input, target, time bucket).
type LaneStep = (Id, u32, u32, u32);

/// All buffers of all batches of one epoch, for equality comparisons.
fn epoch_dump(b: &mut SasrecBatcher, epoch: u64) -> Vec<SasrecBatch> {
    b.start_epoch(epoch);
    let mut out = Vec::new();
    while let Some(batch) = b.next_batch().unwrap() {
        out.push(batch.clone());
    }
    out
}

/// Checks one epoch against the sequences independently; returns the (user, target index)
/// pairs seen, failing on any duplicate.
fn check_epoch(
    ds: &Dataset,
    b: &mut SasrecBatcher,
    epoch: u64,
    ctx: Option<ContextConfig>,
) -> HashSet<(Id, usize)> {
    let mut seen = HashSet::new();
    b.start_epoch(epoch);
    let mut n_batches = 0;
    while let Some(batch) = b.next_batch().unwrap() {
        n_batches += 1;
        let l = batch.maxlen;
        for r in 0..batch.batch_size {
            let row = &batch.inputs[r * l..(r + 1) * l];
            let trow = &batch.targets[r * l..(r + 1) * l];
            if r >= batch.rows {
                assert!(
                    row.iter().chain(trow).all(|&x| x == PAD),
                    "unused row not padding"
                );
                assert_eq!(batch.users[r], PAD);
                continue;
            }
            let u = batch.users[r];
            let items = ds.items_of(u);
            let times = ds.times_of(u);
            let end = batch.last_target[r] as usize;
            // Right alignment: exactly the last min(l, end) columns hold inputs.
            let filled = l.min(end);
            assert!(row[..l - filled].iter().all(|&x| x == PAD), "left padding");
            let mut kept_started = false;
            for c in l - filled..l {
                let t = end - (l - 1 - c);
                assert_eq!(row[c], items[t - 1], "input at column {c}");
                if trow[c] == PAD {
                    assert!(!kept_started, "masked target right of a kept one");
                } else {
                    kept_started = true;
                    assert_eq!(trow[c], items[t]);
                    assert!(seen.insert((u, t)), "target ({u}, {t}) twice in one epoch");
                }
                if let Some(ctx) = ctx {
                    let i = t - 1;
                    let gap = i.checked_sub(1).map(|p| times[i] - times[p]);
                    assert_eq!(batch.time_buckets[r * l + c], ctx.time_bucket(gap));
                    let expected_pos = match ctx.position_from() {
                        PositionFrom::Start => t,
                        PositionFrom::End => end - t + 1,
                    }
                    .min(ctx.max_position() as usize);
                    assert_eq!(batch.positions[r * l + c] as usize, expected_pos);
                }
                if batch.n_neg > 0 && batch.negatives.len() == batch.batch_size * l * batch.n_neg {
                    let negs =
                        &batch.negatives[(r * l + c) * batch.n_neg..(r * l + c + 1) * batch.n_neg];
                    if trow[c] == PAD {
                        assert!(negs.iter().all(|&x| x == PAD));
                    } else {
                        assert!(
                            negs.iter().all(|&x| x != PAD && !items.contains(&x)),
                            "negative hits user {u}'s items"
                        );
                    }
                }
            }
            if ctx.is_some() {
                assert!(
                    batch.time_buckets[r * l..r * l + l - filled]
                        .iter()
                        .all(|&x| x == 0)
                );
                assert!(
                    batch.positions[r * l..r * l + l - filled]
                        .iter()
                        .all(|&x| x == 0)
                );
            }
        }
    }
    assert_eq!(n_batches, b.n_batches());
    assert_eq!(seen.len(), b.n_targets());
    seen
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn sliding_windows_cover_every_target_once(
        ds in arb_dataset(),
        maxlen in 1usize..12,
        stride_frac in 0.0f64..1.0,
        batch_size in 1usize..9,
        seed in any::<u64>(),
        n_neg in 0usize..3,
        pos_end in any::<bool>(),
    ) {
        let stride = 1 + ((maxlen - 1) as f64 * stride_frac) as usize;
        let ctx = ContextConfig::new(6, if pos_end { PositionFrom::End } else { PositionFrom::Start }, 7).unwrap();
        let negatives = if n_neg > 0 && has_free_items(&ds) {
            Negatives::PerPosition { n: n_neg, sampler: NegativeSampler::uniform(ds.n_items()).unwrap() }
        } else {
            Negatives::None
        };
        let cfg = SasrecConfig {
            batch_size, maxlen, window: WindowMode::Sliding { stride }, negatives, shuffle: true, seed,
            context: Some(ctx),
        };
        let mut b = SasrecBatcher::new(Sequences::all(&ds), cfg).unwrap();
        let expected: HashSet<(Id, usize)> = ds.user_ids()
            .flat_map(|u| (1..ds.items_of(u).len()).map(move |t| (u, t)))
            .collect();
        for epoch in 0..2 {
            let seen = check_epoch(&ds, &mut b, epoch, Some(ctx));
            prop_assert_eq!(&seen, &expected);
        }
        // Same seed and epoch: the very same batches.
        prop_assert_eq!(epoch_dump(&mut b, 1), epoch_dump(&mut b, 1));
    }

    #[test]
    fn last_window_keeps_last_maxlen_targets(ds in arb_dataset(), maxlen in 1usize..12, batch_size in 1usize..9) {
        let cfg = SasrecConfig { batch_size, maxlen, shuffle: false, ..SasrecConfig::default() };
        let mut b = SasrecBatcher::new(Sequences::all(&ds), cfg).unwrap();
        let seen = check_epoch(&ds, &mut b, 0, None);
        let expected: HashSet<(Id, usize)> = ds.user_ids()
            .flat_map(|u| {
                let n = ds.items_of(u).len();
                (n.saturating_sub(maxlen).max(1)..n).map(move |t| (u, t))
            })
            .collect();
        prop_assert_eq!(seen, expected);
    }

    #[test]
    fn popularity_negatives_avoid_user_items(ds in arb_dataset(), alpha in 0.0f64..1.5, seed in any::<u64>()) {
        prop_assume!(has_free_items(&ds));
        // A log with no events gives every item weight 0: no popularity sampler exists, a typed error.
        let sampler = match NegativeSampler::popularity(&ds.item_counts(), alpha) {
            Ok(sampler) => sampler,
            Err(e) => {
                prop_assert_eq!(ds.n_events(), 0, "unexpected error {:?}", e);
                return Ok(());
            }
        };
        // Users whose untouched items all have zero weight must be rejected up front.
        let cfg = SasrecConfig {
            batch_size: 4, maxlen: 8, negatives: Negatives::PerPosition { n: 2, sampler }, seed,
            ..SasrecConfig::default()
        };
        match SasrecBatcher::new(Sequences::all(&ds), cfg) {
            Ok(mut b) => { check_epoch(&ds, &mut b, 0, None); }
            Err(e) => prop_assert!(alpha > 0.0, "unexpected error {e}"),
        }
    }

    #[test]
    fn shared_negatives_have_requested_shape(ds in arb_dataset(), n in 1usize..20, seed in any::<u64>()) {
        let counts = ds.item_counts();
        prop_assume!(counts.iter().any(|&c| c > 0));
        let sampler = NegativeSampler::popularity(&counts, 1.0).unwrap();
        let cfg = SasrecConfig { batch_size: 3, maxlen: 5, negatives: Negatives::Shared { n, sampler }, seed, ..SasrecConfig::default() };
        let mut b = SasrecBatcher::new(Sequences::all(&ds), cfg).unwrap();
        while let Some(batch) = b.next_batch().unwrap() {
            prop_assert_eq!(batch.negatives.len(), n);
            // Popularity with alpha 1 never draws an item with zero count.
            prop_assert!(batch.negatives.iter().all(|&x| x != PAD && counts[x as usize] > 0));
        }
    }

    #[test]
    fn session_parallel_replays_sequences(ds in arb_dataset(), lanes in 1usize..7, shuffle in proptest::option::of(any::<u64>())) {
        let ctx = ContextConfig::default();
        let mut sp = SessionParallel::new(Sequences::all(&ds), lanes, shuffle, Some(ctx)).unwrap();
        // Per lane, the steps since the last reset: (user, input, target, bucket).
        let mut open: Vec<Option<Vec<LaneStep>>> = vec![None; lanes];
        let mut segments: Vec<Vec<LaneStep>> = Vec::new();
        let mut was_inactive = vec![false; lanes];
        while let Some(step) = sp.next_step() {
            prop_assert!(step.active.iter().any(|&a| a));
            for l in 0..lanes {
                if !step.active[l] {
                    prop_assert!(!step.reset[l]);
                    prop_assert_eq!((step.inputs[l], step.targets[l], step.users[l]), (PAD, PAD, PAD));
                    if let Some(seg) = open[l].take() { segments.push(seg); }
                    was_inactive[l] = true;
                    continue;
                }
                prop_assert!(!was_inactive[l], "lane {} reactivated", l);
                if step.reset[l] {
                    if let Some(seg) = open[l].take() { segments.push(seg); }
                    open[l] = Some(Vec::new());
                }
                let seg = open[l].as_mut().expect("first step of a lane must reset");
                seg.push((step.users[l], step.inputs[l], step.targets[l], step.time_buckets[l]));
            }
        }
        segments.extend(open.into_iter().flatten());
        // Each segment is exactly one whole sequence, in order; every sequence appears once.
        let mut users_seen = HashSet::new();
        for seg in &segments {
            let u = seg[0].0;
            prop_assert!(users_seen.insert(u), "user {} replayed twice", u);
            let items = ds.items_of(u);
            let times = ds.times_of(u);
            prop_assert_eq!(seg.len(), items.len() - 1, "user {} segment length", u);
            for (p, &(su, inp, tgt, tb)) in seg.iter().enumerate() {
                prop_assert_eq!(su, u);
                prop_assert_eq!(inp, items[p]);
                prop_assert_eq!(tgt, items[p + 1]);
                prop_assert_eq!(tb, ctx.time_bucket(p.checked_sub(1).map(|q| times[p] - times[q])));
            }
        }
        let expected: HashSet<Id> = ds.user_ids().filter(|&u| ds.items_of(u).len() >= 2).collect();
        prop_assert_eq!(users_seen, expected);
    }

    #[test]
    fn eval_batches_are_right_aligned_prefixes(ds in arb_dataset(), maxlen in 1usize..12, batch_size in 1usize..6) {
        let split = Split::leave_one_out(&ds);
        let ctx = ContextConfig::new(10, PositionFrom::End, 100).unwrap();
        let mut eb = EvalBatcher::new(&ds, split.test(), batch_size, maxlen, Some(ctx)).unwrap();
        let mut n = 0;
        while let Some(b) = eb.next_batch() {
            for r in 0..b.rows {
                let case = split.test()[b.case_index[r]];
                let input = case.input_items(&ds);
                let k = input.len().min(maxlen);
                let row = &b.inputs[r * maxlen..(r + 1) * maxlen];
                prop_assert!(row[..maxlen - k].iter().all(|&x| x == PAD));
                prop_assert_eq!(&row[maxlen - k..], &input[input.len() - k..]);
                prop_assert_eq!(b.targets[r], case.target(&ds));
                prop_assert_eq!(b.positions[(r + 1) * maxlen - 1], 1);
                n += 1;
            }
        }
        prop_assert_eq!(n, split.test().len());
    }

    #[test]
    fn eval_negatives_exclude_history_and_target(ds in arb_dataset(), n in 1usize..10, seed in any::<u64>(), pop in any::<bool>()) {
        let split = Split::leave_one_out(&ds);
        let cases: Vec<(Id, Id)> = split.test().iter().map(|c| (c.user, c.target(&ds))).collect();
        let dist = if pop { Distribution::Popularity { alpha: 1.0 } } else { Distribution::Uniform };
        match sample_eval_negatives(&ds, &cases, n, dist, seed) {
            Ok(neg) => {
                for (k, &(u, target)) in cases.iter().enumerate() {
                    let s = neg.of_case(k);
                    prop_assert_eq!(s.len(), n);
                    prop_assert_eq!(s.iter().collect::<HashSet<_>>().len(), n, "duplicates");
                    prop_assert!(s.iter().all(|x| *x != target && *x != PAD && !ds.items_of(u).contains(x)));
                }
                prop_assert_eq!(sample_eval_negatives(&ds, &cases, n, dist, seed).unwrap(), neg);
            }
            Err(_) => {
                // Only when some user lacks n candidates, or (popularity) the log has no events at all.
                if pop && ds.n_events() == 0 {
                    return Ok(());
                }
                let counts = ds.item_counts();
                let short = cases.iter().any(|&(u, _)| {
                    let seen: HashSet<_> = ds.items_of(u).iter().collect();
                    (1..=ds.n_items() as Id).filter(|i| !seen.contains(i) && (!pop || counts[*i as usize] > 0)).count() < n
                });
                prop_assert!(short);
            }
        }
    }
}

#[test]
fn seeds_and_epochs_change_batches() {
    let mut seqs = Vec::new();
    for u in 0..50u32 {
        seqs.push(
            (0..30)
                .map(|k| (1 + (u * 7 + k * 3) % 97, k as i64))
                .collect(),
        );
    }
    let ds = build(100, seqs);
    let mk = |seed| {
        let cfg = SasrecConfig {
            batch_size: 8,
            maxlen: 10,
            window: WindowMode::Sliding { stride: 5 },
            negatives: Negatives::PerPosition {
                n: 1,
                sampler: NegativeSampler::uniform(100).unwrap(),
            },
            seed,
            ..SasrecConfig::default()
        };
        SasrecBatcher::new(Sequences::all(&ds), cfg).unwrap()
    };
    let (mut a, mut a2, mut b) = (mk(1), mk(1), mk(2));
    assert_eq!(epoch_dump(&mut a, 0), epoch_dump(&mut a2, 0));
    assert_ne!(epoch_dump(&mut a, 0), epoch_dump(&mut b, 0));
    assert_ne!(epoch_dump(&mut a, 0), epoch_dump(&mut a, 1));
    // Unshuffled order with the same negatives stream differs only in negatives between seeds.
    let users = |d: &[SasrecBatch]| d.iter().flat_map(|b| b.users.clone()).collect::<Vec<_>>();
    assert_ne!(users(&epoch_dump(&mut a, 0)), users(&epoch_dump(&mut a, 1)));
}

#[test]
fn session_parallel_shared_negatives_are_seeded() {
    let seqs: Vec<Vec<(Id, i64)>> = (0..30u32)
        .map(|u| {
            (0..(2 + u % 7))
                .map(|k| (1 + (u + k) % 50, k as i64))
                .collect()
        })
        .collect();
    let ds = build(50, seqs);
    let counts = ds.item_counts();
    let run = |seed: u64, epoch: u64| {
        let sampler = NegativeSampler::popularity(&counts, 0.75).unwrap();
        let mut sp = SessionParallel::new(Sequences::all(&ds), 4, Some(1), None)
            .unwrap()
            .with_shared_negatives(5, sampler, seed)
            .unwrap();
        sp.start_epoch(epoch);
        let mut all = Vec::new();
        while let Some(step) = sp.next_step() {
            assert_eq!(step.negatives.len(), 5);
            assert!(
                step.negatives
                    .iter()
                    .all(|&x| x != PAD && counts[x as usize] > 0)
            );
            all.extend_from_slice(&step.negatives);
        }
        all
    };
    assert_eq!(run(3, 0), run(3, 0));
    assert_ne!(run(3, 0), run(4, 0));
    assert_ne!(run(3, 0), run(3, 1));
    let sp = SessionParallel::new(Sequences::all(&ds), 4, None, None).unwrap();
    assert!(
        sp.with_shared_negatives(0, NegativeSampler::uniform(50).unwrap(), 0)
            .is_err()
    );
    let sp = SessionParallel::new(Sequences::all(&ds), 4, None, None).unwrap();
    assert!(
        sp.with_shared_negatives(2, NegativeSampler::uniform(49).unwrap(), 0)
            .is_err()
    );
}

#[test]
fn config_errors() {
    let ds = build(3, vec![vec![(1, 0), (2, 1), (3, 2)]]);
    let seqs = || Sequences::all(&ds);
    let bad = [
        SasrecConfig {
            batch_size: 0,
            ..SasrecConfig::default()
        },
        SasrecConfig {
            maxlen: 0,
            ..SasrecConfig::default()
        },
        SasrecConfig {
            maxlen: 4,
            window: WindowMode::Sliding { stride: 5 },
            ..SasrecConfig::default()
        },
        SasrecConfig {
            window: WindowMode::Sliding { stride: 0 },
            ..SasrecConfig::default()
        },
        // The user touched every item: no uniform negative exists.
        SasrecConfig {
            negatives: Negatives::PerPosition {
                n: 1,
                sampler: NegativeSampler::uniform(3).unwrap(),
            },
            ..SasrecConfig::default()
        },
        SasrecConfig {
            negatives: Negatives::PerPosition {
                n: 1,
                sampler: NegativeSampler::uniform(4).unwrap(),
            },
            ..SasrecConfig::default()
        },
    ];
    for cfg in bad {
        assert!(SasrecBatcher::new(seqs(), cfg.clone()).is_err(), "{cfg:?}");
    }
    assert!(SessionParallel::new(seqs(), 0, None, None).is_err());
    let split = Split::leave_one_out(&ds);
    let mut bad_case = split.test().to_vec();
    bad_case[0].input_len = 3;
    assert!(EvalBatcher::new(&ds, &bad_case, 2, 2, None).is_err());
}

fn data_dir() -> PathBuf {
    std::env::var_os("SEQREC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// `ml-1m-sasrec.txt` through the crate's own reader (`user item` pairs; line order is time order).
fn load_ml1m() -> Dataset {
    let opts = seqrec_data::ReadOptions {
        format: Some(seqrec_data::Format::UserItemPairs),
        ..seqrec_data::ReadOptions::default()
    };
    let log = seqrec_data::read_log(data_dir().join("ml-1m-sasrec.txt"), &opts)
        .unwrap_or_else(|e| panic!("{e} (set SEQREC_DATA_DIR)"));
    seqrec_data::prepare(&log, &seqrec_data::PrepareConfig::default()).unwrap()
}

#[test]
fn ml1m_epoch_counts_and_negatives() {
    let ds = load_ml1m();
    let split = Split::leave_one_out(&ds);
    let train = split.train_sequences(&ds).unwrap();
    // Sliding windows with stride = maxlen: every training target once.
    let cfg = SasrecConfig {
        batch_size: 128,
        maxlen: 200,
        window: WindowMode::Sliding { stride: 200 },
        negatives: Negatives::PerPosition {
            n: 1,
            sampler: NegativeSampler::uniform(ds.n_items()).unwrap(),
        },
        seed: 42,
        ..SasrecConfig::default()
    };
    let mut b = SasrecBatcher::new(train.clone(), cfg).unwrap();
    // 987,531 training events in 6,040 sequences give 987,531 - 6,040 targets.
    assert_eq!(b.n_targets(), 981_491);
    let mut targets = 0usize;
    let mut per_user: HashMap<Id, usize> = HashMap::new();
    let mut user_items = vec![Vec::new(); ds.n_users() + 1];
    for u in ds.user_ids() {
        let mut v = split.train_items(&ds, u).to_vec();
        v.sort_unstable();
        user_items[u as usize] = v;
    }
    while let Some(batch) = b.next_batch().unwrap() {
        for r in 0..batch.rows {
            let u = batch.users[r];
            let seen = &user_items[u as usize];
            for c in 0..batch.maxlen {
                let k = r * batch.maxlen + c;
                if batch.targets[k] != PAD {
                    targets += 1;
                    *per_user.entry(u).or_default() += 1;
                    assert!(seen.binary_search(&batch.negatives[k]).is_err());
                }
            }
        }
    }
    assert_eq!(targets, 981_491);
    for u in ds.user_ids() {
        assert_eq!(per_user[&u], split.train_len(u) - 1, "user {u}");
    }
    // SASRec's truncation: one window per user, at most 200 targets.
    let cfg = SasrecConfig {
        batch_size: 128,
        maxlen: 200,
        ..SasrecConfig::default()
    };
    let b = SasrecBatcher::new(train, cfg).unwrap();
    assert_eq!(b.n_windows(), 6_040);
    assert_eq!(b.n_batches(), 48);
    let expected: usize = ds
        .user_ids()
        .map(|u| (split.train_len(u) - 1).min(200))
        .sum();
    assert_eq!(b.n_targets(), expected);
}
