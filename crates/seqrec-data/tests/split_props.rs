//! Property tests of the splits (no leakage, exact partition) and exact counts on ML-1M.

use std::path::PathBuf;

use proptest::prelude::*;
use seqrec_data::{Dataset, EvalCase, Id, Split, TemporalTargets, Vocab};

/// A random dataset: up to 25 users, up to 30 items, sequences of 0..40 events with
/// non-decreasing timestamps and frequent ties.
fn arb_dataset() -> impl Strategy<Value = Dataset> {
    (1usize..30, 1usize..25).prop_flat_map(|(n_items, n_users)| {
        let seq = prop::collection::vec((1..=n_items as Id, 0i64..4), 0..40);
        prop::collection::vec(seq, n_users).prop_map(move |seqs| {
            let users =
                Vocab::from_originals((0..seqs.len()).map(|u| format!("u{u}")).collect()).unwrap();
            let items =
                Vocab::from_originals((0..n_items).map(|i| format!("i{i}")).collect()).unwrap();
            let seqs = seqs
                .into_iter()
                .map(|events| {
                    let mut t = 0i64;
                    events
                        .into_iter()
                        .map(|(i, gap)| {
                            t += gap;
                            (i, t)
                        })
                        .unzip()
                })
                .collect();
            Dataset::from_sequences(users, items, seqs).unwrap()
        })
    })
}

/// Independent check of the core invariant: for every user, no training event is later (in
/// position or time) than any of the user's validation or test targets, and every case's
/// input ends right before its target.
fn assert_no_leak(ds: &Dataset, split: &Split) {
    for c in split.valid().iter().chain(split.test()) {
        let n_train = split.train_len(c.user);
        assert!(
            n_train <= c.input_len as usize,
            "user {}: training covers the target",
            c.user
        );
        let target_t = c.target_time(ds);
        assert!(split.train_times(ds, c.user).iter().all(|&t| t <= target_t));
        assert!(c.input_times(ds).iter().all(|&t| t <= target_t));
        assert_eq!(
            c.input_items(ds),
            &ds.items_of(c.user)[..c.input_len as usize]
        );
    }
    // A user's validation target precedes their test target.
    for v in split.valid() {
        if let Some(t) = split.test().iter().find(|t| t.user == v.user) {
            assert!(v.input_len < t.input_len);
        }
    }
    split.check_no_leakage(ds).unwrap();
}

proptest! {
    #[test]
    fn leave_one_out_is_exact(ds in arb_dataset()) {
        let split = Split::leave_one_out(&ds);
        assert_no_leak(&ds, &split);
        let mut expected_valid = Vec::new();
        let mut expected_test = Vec::new();
        for u in ds.user_ids() {
            let n = ds.items_of(u).len();
            if n < 3 {
                prop_assert_eq!(split.train_len(u), n);
            } else {
                prop_assert_eq!(split.train_len(u), n - 2);
                expected_valid.push(EvalCase { user: u, input_len: (n - 2) as u32 });
                expected_test.push(EvalCase { user: u, input_len: (n - 1) as u32 });
            }
        }
        prop_assert_eq!(split.valid(), &expected_valid[..]);
        prop_assert_eq!(split.test(), &expected_test[..]);
        // Training, validation and test targets partition the events.
        prop_assert_eq!(split.n_train_events() + split.valid().len() + split.test().len(), ds.n_events());
        // Training counts plus held-out targets give the full counts.
        let mut counts = split.train_item_counts(&ds);
        for c in split.valid().iter().chain(split.test()) {
            counts[c.target(&ds) as usize] += 1;
        }
        prop_assert_eq!(counts, ds.item_counts());
    }

    #[test]
    fn temporal_never_trains_after_cutoff(ds in arb_dataset(), a in 0i64..120, b in 0i64..120) {
        let (valid_cut, test_cut) = (a.min(b), a.max(b));
        let split = Split::temporal(&ds, valid_cut, test_cut).unwrap();
        assert_no_leak(&ds, &split);
        for u in ds.user_ids() {
            let times = ds.times_of(u);
            let train = split.train_times(&ds, u);
            prop_assert!(train.iter().all(|&t| t < valid_cut));
            prop_assert_eq!(train.len(), times.iter().filter(|&&t| t < valid_cut).count());
        }
        for c in split.test() {
            prop_assert!(c.target_time(&ds) >= test_cut);
            prop_assert!(c.input_times(&ds).iter().all(|&t| t < test_cut));
            prop_assert!(c.input_len > 0);
        }
        for c in split.valid() {
            let t = c.target_time(&ds);
            prop_assert!(valid_cut <= t && t < test_cut);
            prop_assert!(c.input_times(&ds).iter().all(|&t| t < valid_cut));
        }
        // Every user with history before the cut-off and an event after it has a test case.
        let expected = ds.user_ids().filter(|&u| {
            let t = ds.times_of(u);
            t.iter().any(|&x| x < test_cut) && t.iter().any(|&x| x >= test_cut)
        }).count();
        prop_assert_eq!(split.test().len(), expected);
        if valid_cut < test_cut {
            prop_assert!(Split::temporal(&ds, test_cut, valid_cut).is_err());
        }
    }

    #[test]
    fn temporal_all_successive_targets_every_later_event(ds in arb_dataset(), a in 0i64..120, b in 0i64..120) {
        let (valid_cut, test_cut) = (a.min(b), a.max(b));
        let split = Split::temporal_with(&ds, valid_cut, test_cut, TemporalTargets::AllSuccessive).unwrap();
        assert_no_leak(&ds, &split);
        let mut expected_valid = Vec::new();
        let mut expected_test = Vec::new();
        let mut no_history = 0;
        for u in ds.user_ids() {
            let times = ds.times_of(u);
            prop_assert!(split.train_times(&ds, u).iter().all(|&t| t < valid_cut));
            for (i, &t) in times.iter().enumerate() {
                if t < valid_cut {
                    continue;
                }
                if i == 0 {
                    no_history += 1;
                    continue;
                }
                let case = EvalCase { user: u, input_len: i as u32 };
                if t < test_cut { expected_valid.push(case) } else { expected_test.push(case) }
            }
        }
        prop_assert_eq!(split.valid(), &expected_valid[..]);
        prop_assert_eq!(split.test(), &expected_test[..]);
        prop_assert_eq!(
            split.n_train_events() + split.valid().len() + split.test().len() + no_history,
            ds.n_events()
        );
    }

    #[test]
    fn random_users_are_disjoint_and_seeded(ds in arb_dataset(), vf in 0.0f64..0.5, tf in 0.0f64..0.5, seed in any::<u64>()) {
        let split = Split::random_users(&ds, vf, tf, seed).unwrap();
        assert_no_leak(&ds, &split);
        let mut held_out = std::collections::HashSet::new();
        for c in split.valid().iter().chain(split.test()) {
            prop_assert!(held_out.insert(c.user), "user {} in two held-out sets", c.user);
            prop_assert_eq!(split.train_len(c.user), 0);
            prop_assert_eq!(c.input_len as usize, ds.items_of(c.user).len() - 1);
        }
        let n_train_users = ds.user_ids().filter(|&u| split.train_len(u) > 0).count();
        let n = ds.n_users();
        let n_held = (tf * n as f64).round() as usize + (vf * n as f64).round() as usize;
        // Training users are the rest (those with events), each with every event.
        let trainers = ds.user_ids().filter(|&u| split.train_len(u) == ds.items_of(u).len() && !ds.items_of(u).is_empty()).count();
        prop_assert_eq!(trainers, n_train_users);
        prop_assert!(n_train_users <= n - n_held.min(n));
        prop_assert_eq!(Split::random_users(&ds, vf, tf, seed).unwrap(), split);
    }
}

#[test]
fn bad_fractions_are_errors() {
    let users = Vocab::from_originals(vec!["a".into()]).unwrap();
    let items = Vocab::from_originals(vec!["x".into()]).unwrap();
    let ds = Dataset::from_sequences(users, items, vec![(vec![1, 1], vec![0, 1])]).unwrap();
    for (v, t) in [(-0.1, 0.1), (0.6, 0.6), (f64::NAN, 0.0), (0.0, 1.5)] {
        assert!(Split::random_users(&ds, v, t, 0).is_err(), "{v} {t}");
    }
}

#[test]
fn random_users_seed_changes_assignment() {
    let n = 200;
    let users = Vocab::from_originals((0..n).map(|u| u.to_string()).collect()).unwrap();
    let items = Vocab::from_originals(vec!["x".into(), "y".into()]).unwrap();
    let ds = Dataset::from_sequences(
        users,
        items,
        (0..n).map(|_| (vec![1, 2, 1], vec![0, 1, 2])).collect(),
    )
    .unwrap();
    let a = Split::random_users(&ds, 0.1, 0.1, 1).unwrap();
    let b = Split::random_users(&ds, 0.1, 0.1, 2).unwrap();
    assert_eq!(a.test().len(), 20);
    assert_eq!(a.valid().len(), 20);
    assert_eq!(a.n_train_events(), 160 * 3);
    assert_ne!(a.test(), b.test());
}

#[test]
fn split_rejects_other_dataset() {
    let users = Vocab::from_originals(vec!["a".into()]).unwrap();
    let items = Vocab::from_originals(vec!["x".into()]).unwrap();
    let ds = Dataset::from_sequences(
        users.clone(),
        items.clone(),
        vec![(vec![1, 1, 1], vec![0, 1, 2])],
    )
    .unwrap();
    let other = Dataset::from_sequences(users, items, vec![(vec![1, 1], vec![0, 1])]).unwrap();
    let split = Split::leave_one_out(&ds);
    assert!(split.check_no_leakage(&other).is_err());
    assert!(split.train_sequences(&other).is_err());
}

/// The data directory: `$SEQREC_DATA_DIR`, else `shared/data` next to the repository.
fn data_dir() -> PathBuf {
    std::env::var_os("SEQREC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// Parses `user item` lines (1-based dense ids, time order); timestamps are line numbers.
fn load_sasrec_txt(name: &str) -> Dataset {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set SEQREC_DATA_DIR)", path.display()));
    let mut seqs: Vec<(Vec<Id>, Vec<i64>)> = Vec::new();
    let mut n_items = 0;
    for (line_no, line) in text.lines().enumerate() {
        let mut f = line.split_ascii_whitespace();
        let u: usize = f.next().unwrap().parse().unwrap();
        let i: Id = f.next().unwrap().parse().unwrap();
        if seqs.len() < u {
            seqs.resize(u, (Vec::new(), Vec::new()));
        }
        seqs[u - 1].0.push(i);
        seqs[u - 1].1.push(line_no as i64);
        n_items = n_items.max(i as usize);
    }
    let users = Vocab::from_originals((1..=seqs.len()).map(|u| u.to_string()).collect()).unwrap();
    let items = Vocab::from_originals((1..=n_items).map(|i| i.to_string()).collect()).unwrap();
    Dataset::from_sequences(users, items, seqs).unwrap()
}

#[test]
fn ml1m_leave_one_out_counts() {
    let ds = load_sasrec_txt("ml-1m-sasrec.txt");
    assert_eq!(
        (ds.n_users(), ds.n_items(), ds.n_events()),
        (6_040, 3_416, 999_611)
    );
    let split = Split::leave_one_out(&ds);
    assert_eq!(split.test().len(), 6_040);
    assert_eq!(split.valid().len(), 6_040);
    assert_eq!(split.n_train_events(), 999_611 - 2 * 6_040);
    split.check_no_leakage(&ds).unwrap();
    // User 1's targets are their last two lines of the file.
    let u1 = ds.items_of(1);
    assert_eq!(split.test()[0].target(&ds), u1[u1.len() - 1]);
    assert_eq!(split.valid()[0].target(&ds), u1[u1.len() - 2]);
    let seqs = split.train_sequences(&ds).unwrap();
    assert_eq!(seqs.len(), 6_040);
    assert_eq!(seqs.n_events(), 987_531);
}

#[test]
fn ml1m_temporal_by_line_order() {
    // Timestamps are line numbers, so a cut-off at line 900,000 must put exactly the first
    // 900,000 lines' events in training.
    let ds = load_sasrec_txt("ml-1m-sasrec.txt");
    let split = Split::temporal(&ds, 800_000, 900_000).unwrap();
    assert_eq!(split.n_train_events(), 800_000);
    split.check_no_leakage(&ds).unwrap();
    assert!(split.test().iter().all(|c| c.target_time(&ds) >= 900_000));
}

#[test]
fn ml100k_temporal_with_real_timestamps() {
    // u.data: user \t item \t rating \t unix seconds; users' events are not in time order in
    // the file, so sort each user's events by time (stable) before building the dataset.
    let path = data_dir().join("ml-100k-u.data");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set SEQREC_DATA_DIR)", path.display()));
    let rows: Vec<(usize, Id, i64)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    let n_users = rows.iter().map(|r| r.0).max().unwrap();
    let n_items = rows.iter().map(|r| r.1).max().unwrap() as usize;
    let mut per_user: Vec<Vec<(i64, Id)>> = vec![Vec::new(); n_users];
    for &(u, i, t) in &rows {
        per_user[u - 1].push((t, i));
    }
    let seqs = per_user
        .into_iter()
        .map(|mut ev| {
            ev.sort_by_key(|&(t, _)| t);
            let (times, items): (Vec<i64>, Vec<Id>) = ev.into_iter().unzip();
            (items, times)
        })
        .collect();
    let users = Vocab::from_originals((1..=n_users).map(|u| u.to_string()).collect()).unwrap();
    let items = Vocab::from_originals((1..=n_items).map(|i| i.to_string()).collect()).unwrap();
    let ds = Dataset::from_sequences(users, items, seqs).unwrap();
    assert_eq!(
        (ds.n_users(), ds.n_items(), ds.n_events()),
        (943, 1_682, 100_000)
    );

    let (valid_cut, test_cut) = (889_237_269, 891_382_267);
    // Counted from the raw rows, independently of the dataset and the split.
    let raw_train = rows.iter().filter(|r| r.2 < valid_cut).count();
    let raw_test_period = rows.iter().filter(|r| r.2 >= test_cut).count();
    for targets in [
        TemporalTargets::FirstPerUser,
        TemporalTargets::AllSuccessive,
    ] {
        let split = Split::temporal_with(&ds, valid_cut, test_cut, targets).unwrap();
        split.check_no_leakage(&ds).unwrap();
        assert_eq!(split.n_train_events(), raw_train);
        assert!(split.test().iter().all(|c| c.target_time(&ds) >= test_cut));
        if targets == TemporalTargets::AllSuccessive {
            // Every test-period event is a target unless it is its user's first event.
            let first_in_test = ds
                .user_ids()
                .filter(|&u| ds.times_of(u)[0] >= test_cut)
                .count();
            assert_eq!(split.test().len(), raw_test_period - first_in_test);
        }
    }
}
