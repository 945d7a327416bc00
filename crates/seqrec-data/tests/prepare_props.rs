//! Property tests of `prepare` and the cache against plain, obviously-correct oracles.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use seqrec_data::{
    Dataset, Dedup, KCore, PrepareConfig, RawLog, ReadOptions, cache, prepare, read_log_from,
};

/// A raw event: (user, item, time), all small so ties and repeats are frequent.
type Event = (u32, u32, i64);

fn events(max_users: u32, max_items: u32, max_len: usize) -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec((1..=max_users, 1..=max_items, 0i64..6), 1..max_len)
}

fn log_of(events: &[Event]) -> RawLog {
    let text: String = events
        .iter()
        .map(|(u, i, t)| format!("{u}::{i}::5::{t}\n"))
        .collect();
    read_log_from(text.as_bytes(), Path::new("p.dat"), &ReadOptions::default()).unwrap()
}

/// The dataset as `(user, item, time)` triples with original ids, per user in dataset order.
fn triples(ds: &Dataset) -> Vec<(String, Vec<(String, i64)>)> {
    ds.user_ids()
        .map(|u| {
            let seq = ds
                .items_of(u)
                .iter()
                .zip(ds.times_of(u))
                .map(|(&i, &t)| (ds.items.original(i).unwrap().to_owned(), t))
                .collect();
            (ds.users.original(u).unwrap().to_owned(), seq)
        })
        .collect()
}

/// Oracle: each user's events in file order, stable-sorted by time; users by first appearance.
fn oracle_sequences(events: &[Event]) -> Vec<(String, Vec<(String, i64)>)> {
    oracle_sequences_in(events, events)
}

/// Like [`oracle_sequences`] for a filtered subset `kept` of `all`: users keep the order of
/// their first appearance in the whole file.
fn oracle_sequences_in(kept: &[Event], all: &[Event]) -> Vec<(String, Vec<(String, i64)>)> {
    let events = kept;
    let mut users: Vec<u32> = Vec::new();
    for &(u, _, _) in all {
        if !kept.iter().any(|e| e.0 == u) {
            continue;
        }
        if !users.contains(&u) {
            users.push(u);
        }
    }
    users
        .iter()
        .map(|&u| {
            let mut seq: Vec<(String, i64)> = events
                .iter()
                .filter(|e| e.0 == u)
                .map(|&(_, i, t)| (i.to_string(), t))
                .collect();
            seq.sort_by_key(|&(_, t)| t);
            (u.to_string(), seq)
        })
        .collect()
}

/// Brute-force k-core: the largest set of events induced by a user subset and an item subset in
/// which every kept user has >= ku events and every kept item >= ki. Returns kept event indices.
fn oracle_kcore(events: &[Event], ku: usize, ki: usize) -> Vec<usize> {
    let users: Vec<u32> = events
        .iter()
        .map(|e| e.0)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let items: Vec<u32> = events
        .iter()
        .map(|e| e.1)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut best: Vec<usize> = Vec::new();
    for um in 0u32..1 << users.len() {
        for im in 0u32..1 << items.len() {
            let keep_u = |u: u32| um >> users.iter().position(|&x| x == u).unwrap() & 1 == 1;
            let keep_i = |i: u32| im >> items.iter().position(|&x| x == i).unwrap() & 1 == 1;
            let kept: Vec<usize> = (0..events.len())
                .filter(|&e| keep_u(events[e].0) && keep_i(events[e].1))
                .collect();
            let mut du: BTreeMap<u32, usize> = BTreeMap::new();
            let mut di: BTreeMap<u32, usize> = BTreeMap::new();
            for &e in &kept {
                *du.entry(events[e].0).or_default() += 1;
                *di.entry(events[e].1).or_default() += 1;
            }
            if du.values().all(|&d| d >= ku)
                && di.values().all(|&d| d >= ki)
                && kept.len() > best.len()
            {
                best = kept;
            }
        }
    }
    best
}

fn temp_path(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "seqrec-props-{}-{tag}-{n}.seqrec",
        std::process::id()
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Time order with stable ties, and nothing lost or invented.
    #[test]
    fn sequences_are_stable_time_sorted(evs in events(6, 8, 40)) {
        let ds = prepare(&log_of(&evs), &PrepareConfig::default()).unwrap();
        prop_assert_eq!(triples(&ds), oracle_sequences(&evs));
    }

    /// Dense ids are a bijection onto 1..=N: original -> dense -> original round trips.
    #[test]
    fn reindexing_is_a_bijection(evs in events(6, 8, 40), min_item in 0usize..4) {
        let cfg = PrepareConfig::builder().min_item_events(min_item).build().unwrap();
        let Ok(ds) = prepare(&log_of(&evs), &cfg) else { return Ok(()) };
        for (vocab, n) in [(&ds.users, ds.n_users()), (&ds.items, ds.n_items())] {
            prop_assert_eq!(vocab.len(), n);
            let mut seen = HashSet::new();
            for id in 1..=n as u32 {
                let orig = vocab.original(id).unwrap();
                prop_assert_eq!(vocab.get(orig), Some(id));
                prop_assert!(seen.insert(orig.to_owned()));
            }
            prop_assert_eq!(vocab.original(0), None);
            prop_assert_eq!(vocab.original(n as u32 + 1), None);
        }
        // Every item id is used (no holes) and every user has events.
        prop_assert!(ds.item_counts()[1..].iter().all(|&c| c > 0));
        prop_assert!(ds.user_ids().all(|u| !ds.items_of(u).is_empty()));
    }

    /// Iterative k-core equals the brute-force largest subset with the k-core property.
    #[test]
    fn kcore_is_the_largest_valid_subset(evs in events(5, 5, 26), ku in 0usize..5, ki in 0usize..5) {
        let cfg = PrepareConfig::builder().min_user_events(ku).min_item_events(ki).kcore(KCore::Iterative).build().unwrap();
        let kept = oracle_kcore(&evs, ku, ki);
        match prepare(&log_of(&evs), &cfg) {
            Err(seqrec_data::DataError::NothingLeft(_)) => prop_assert!(kept.is_empty()),
            Err(e) => prop_assert!(false, "{e}"),
            Ok(ds) => {
                let kept_events: Vec<Event> = kept.iter().map(|&e| evs[e]).collect();
                prop_assert_eq!(triples(&ds), oracle_sequences_in(&kept_events, &evs));
                // The property itself.
                prop_assert!(ds.user_ids().all(|u| ds.items_of(u).len() >= ku));
                prop_assert!(ds.item_counts()[1..].iter().all(|&c| c as usize >= ki));
            }
        }
    }

    /// Single pass: counts on the input, one removal.
    #[test]
    fn single_pass_kcore_matches_oracle(evs in events(5, 6, 30), ku in 0usize..5, ki in 0usize..5) {
        let cfg = PrepareConfig::builder().min_user_events(ku).min_item_events(ki).kcore(KCore::SinglePass).build().unwrap();
        let du = |u: u32| evs.iter().filter(|e| e.0 == u).count();
        let di = |i: u32| evs.iter().filter(|e| e.1 == i).count();
        let kept: Vec<Event> = evs.iter().copied().filter(|e| du(e.0) >= ku && di(e.1) >= ki).collect();
        match prepare(&log_of(&evs), &cfg) {
            Err(_) => prop_assert!(kept.is_empty()),
            Ok(ds) => prop_assert_eq!(triples(&ds), oracle_sequences_in(&kept, &evs)),
        }
    }

    /// Dedup keeps the first (or last) event of each (user, item) in stable time order.
    #[test]
    fn dedup_matches_oracle(evs in events(4, 4, 30), last in any::<bool>()) {
        let policy = if last { Dedup::Last } else { Dedup::First };
        let ds = prepare(&log_of(&evs), &PrepareConfig::builder().dedup(policy).build().unwrap()).unwrap();
        let expected: Vec<(String, Vec<(String, i64)>)> = oracle_sequences(&evs)
            .into_iter()
            .map(|(u, seq)| {
                let keep: Vec<bool> = (0..seq.len())
                    .map(|k| {
                        let same = |j: usize| seq[j].0 == seq[k].0;
                        if last { !(k + 1..seq.len()).any(same) } else { !(0..k).any(same) }
                    })
                    .collect();
                (u, seq.into_iter().zip(keep).filter(|(_, k)| *k).map(|(e, _)| e).collect())
            })
            .collect();
        prop_assert_eq!(triples(&ds), expected);
    }

    /// Session splitting cuts exactly where the gap exceeds the threshold.
    #[test]
    fn session_gap_matches_oracle(evs in events(3, 5, 30), gap in 1i64..4) {
        let ds = prepare(&log_of(&evs), &PrepareConfig::builder().session_gap(gap).build().unwrap()).unwrap();
        let mut expected = Vec::new();
        for (u, seq) in oracle_sequences(&evs) {
            let mut part = 1;
            let mut cur: Vec<(String, i64)> = Vec::new();
            for e in seq {
                if let Some(prev) = cur.last() && e.1 - prev.1 > gap {
                    expected.push((format!("{u}#{part}"), std::mem::take(&mut cur)));
                    part += 1;
                }
                cur.push(e);
            }
            expected.push((format!("{u}#{part}"), cur));
        }
        prop_assert_eq!(triples(&ds), expected);
    }

    /// The consuming variant gives the same dataset for every setting.
    #[test]
    fn prepare_owned_equals_prepare(evs in events(5, 6, 30), ku in 0usize..4, ki in 0usize..4, dedup in 0u8..3, gap in proptest::option::of(1i64..4), r in proptest::option::of(1.0f32..6.0)) {
        let text: String = evs.iter().enumerate().map(|(k, (u, i, t))| format!("{u}::{i}::{}::{t}\n", k % 5 + 1)).collect();
        let log = read_log_from(text.as_bytes(), Path::new("p.dat"), &ReadOptions::default()).unwrap();
        let mut b = PrepareConfig::builder().min_user_events(ku).min_item_events(ki)
            .dedup([Dedup::KeepAll, Dedup::First, Dedup::Last][dedup as usize]);
        if let Some(g) = gap { b = b.session_gap(g); }
        if let Some(r) = r { b = b.rating_threshold(r); }
        let cfg = b.build().unwrap();
        let borrowed = prepare(&log, &cfg).map_err(|e| e.to_string());
        let owned = seqrec_data::prepare_owned(log, &cfg).map_err(|e| e.to_string());
        prop_assert_eq!(borrowed, owned);
    }

    /// A saved cache loads back equal; any flipped byte or truncation is rejected.
    #[test]
    fn cache_round_trip_and_corruption(evs in events(6, 8, 40), flip in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>()) {
        let ds = prepare(&log_of(&evs), &PrepareConfig::default()).unwrap();
        let path = temp_path("rt");
        let key = cache::CacheKey::from_text("props");
        cache::save(&path, &key, &ds).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        prop_assert_eq!(&cache::decode(&bytes, &key).unwrap(), &ds);
        let stale = matches!(cache::decode(&bytes, &cache::CacheKey::from_text("other")), Err(seqrec_data::CacheProblem::Stale { .. }));
        prop_assert!(stale, "a cache for another key must be stale");
        let mut bad = bytes.clone();
        let at = flip.index(bad.len());
        bad[at] ^= 1 << bit;
        prop_assert!(cache::decode(&bad, &key).is_err(), "flipped bit {bit} of byte {at} went unnoticed");
        let cut = cut.index(bytes.len());
        prop_assert!(cache::decode(&bytes[..cut], &key).is_err());
    }
}

/// `load_or_prepare` builds, hits, and rebuilds on a stale or corrupted cache.
#[test]
fn load_or_prepare_rebuilds_stale_and_corrupt_caches() {
    let dir = std::env::temp_dir().join(format!("seqrec-cache-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("log.dat");
    std::fs::write(&src, "1::10::5::1\n1::11::4::2\n2::10::3::3\n").unwrap();
    let path = cache::cache_path(&dir, &src);
    let opts = ReadOptions::default();
    let cfg = PrepareConfig::default();
    let (a, s) = cache::load_or_prepare(&src, &opts, &cfg, &path).unwrap();
    assert_eq!(s, cache::CacheStatus::Built { reason: None });
    let (b, s) = cache::load_or_prepare(&src, &opts, &cfg, &path).unwrap();
    assert_eq!((s, &b), (cache::CacheStatus::Hit, &a));
    // Another config: stale.
    let cfg2 = PrepareConfig::builder()
        .rating_threshold(4.0)
        .build()
        .unwrap();
    let (c, s) = cache::load_or_prepare(&src, &opts, &cfg2, &path).unwrap();
    assert!(
        matches!(&s, cache::CacheStatus::Built { reason: Some(r) } if r.contains("stale")),
        "{s:?}"
    );
    assert_eq!(c.n_events(), 2);
    // Source changed (size): stale again.
    std::fs::write(&src, "1::10::5::1\n1::11::4::2\n2::10::3::3\n3::12::5::4\n").unwrap();
    let (d, s) = cache::load_or_prepare(&src, &opts, &cfg2, &path).unwrap();
    assert!(matches!(s, cache::CacheStatus::Built { reason: Some(_) }));
    assert_eq!(d.n_events(), 3);
    // Corrupt the last byte: checksum mismatch, rebuilt.
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let (e, s) = cache::load_or_prepare(&src, &opts, &cfg2, &path).unwrap();
    assert!(
        matches!(&s, cache::CacheStatus::Built { reason: Some(r) } if r.contains("checksum")),
        "{s:?}"
    );
    assert_eq!(e, d);
    // Truncated: rebuilt.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (_, s) = cache::load_or_prepare(&src, &opts, &cfg2, &path).unwrap();
    assert!(
        matches!(&s, cache::CacheStatus::Built { reason: Some(r) } if r.contains("truncated")),
        "{s:?}"
    );
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Threads of one process sharing a cache (parallel tests, a server and a trainer) never see a
/// missing or torn file: each writer has its own temporary file.
#[test]
fn concurrent_load_or_prepare_on_one_cache_all_succeed() {
    let dir = std::env::temp_dir().join(format!("seqrec-cache-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("log.dat");
    let text: String = (0..2000)
        .map(|i| format!("{}::{}::5::{i}\n", i % 37, i % 101))
        .collect();
    std::fs::write(&src, text).unwrap();
    let path = cache::cache_path(&dir, &src);
    let opts = ReadOptions::default();
    let cfg = PrepareConfig::default();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| cache::load_or_prepare(&src, &opts, &cfg, &path)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = &results[0].as_ref().unwrap().0;
    for r in &results {
        assert_eq!(&r.as_ref().unwrap().0, first);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
