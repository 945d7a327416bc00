//! Exact counts on the real logs in `SEQREC_DATA_DIR` (default `<workspace>/../shared/data`).
//! These tests fail, not skip, when the data is missing.

use std::collections::HashMap;
use std::path::PathBuf;

use seqrec_data::{
    Format, KCore, PrepareConfig, ReadOptions, Stats, prepare, read_log, read_movies,
};

fn data(name: &str) -> PathBuf {
    let dir = std::env::var_os("SEQREC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "missing dataset {} (set SEQREC_DATA_DIR)",
        p.display()
    );
    p
}

/// (events, users, items) after preparing with no filter.
fn counts(name: &str, expected_format: Format) -> (usize, usize, usize) {
    let log = read_log(data(name), &ReadOptions::default()).unwrap();
    assert_eq!(log.format, expected_format, "{name}: detected format");
    assert_eq!(log.skipped, 0);
    let ds = prepare(&log, &PrepareConfig::default()).unwrap();
    assert_eq!(
        (ds.n_events(), ds.n_users(), ds.n_items()),
        (log.n_events(), log.n_users(), log.n_items())
    );
    (ds.n_events(), ds.n_users(), ds.n_items())
}

#[test]
fn ml1m_counts_and_ties() {
    let log = read_log(data("ml-1m-ratings.dat"), &ReadOptions::default()).unwrap();
    assert_eq!(log.format, Format::MovieLens);
    let ds = prepare(&log, &PrepareConfig::default()).unwrap();
    let s = Stats::of(&ds);
    assert_eq!((s.events, s.users, s.items), (1_000_209, 6_040, 3_706));
    assert_eq!(s.tied_events, 774_028);
    assert_eq!(s.seq_len_min, 20);
    assert_eq!(s.seq_len_max, 2_314);
    let ratings = log.ratings.as_ref().unwrap();
    assert_eq!(ratings.iter().filter(|&&r| r >= 4.0).count(), 575_281);
    let r4 = prepare(
        &log,
        &PrepareConfig::builder()
            .rating_threshold(4.0)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(r4.n_events(), 575_281);
}

/// The SASRec recipe reproduces `ml-1m-sasrec.txt` user by user, item by item.
#[test]
fn ml1m_sasrec_recipe_matches_reference_sequences() {
    let log = read_log(data("ml-1m-ratings.dat"), &ReadOptions::default()).unwrap();
    let ds = prepare(&log, &PrepareConfig::sasrec()).unwrap();
    assert_eq!(
        (ds.n_events(), ds.n_users(), ds.n_items()),
        (999_611, 6_040, 3_416)
    );
    // ML-1M users all have >= 20 ratings, so the iterative k-core reaches the same fixed point.
    let iterative = prepare(
        &log,
        &PrepareConfig::builder()
            .min_user_events(5)
            .min_item_events(5)
            .kcore(KCore::Iterative)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(iterative, ds);

    let map_text = std::fs::read_to_string(data("ml-1m-sasrec-itemmap.tsv")).unwrap();
    let mut item_map: HashMap<String, String> = HashMap::new();
    for line in map_text.lines().skip(1) {
        let (s, m) = line.split_once('\t').unwrap();
        item_map.insert(s.to_owned(), m.to_owned());
    }
    assert_eq!(item_map.len(), 3_416);
    let mut reference: HashMap<String, Vec<String>> = HashMap::new();
    let text = std::fs::read_to_string(data("ml-1m-sasrec.txt")).unwrap();
    let mut lines = 0;
    for line in text.lines() {
        let (u, i) = line.split_once(' ').unwrap();
        reference
            .entry(u.to_owned())
            .or_default()
            .push(item_map[i].clone());
        lines += 1;
    }
    assert_eq!(lines, 999_611);
    assert_eq!(reference.len(), 6_040);
    let mut same_dense_ids = true;
    for u in ds.user_ids() {
        let user = ds.users.original(u).unwrap();
        let ours: Vec<&str> = ds
            .items_of(u)
            .iter()
            .map(|&i| ds.items.original(i).unwrap())
            .collect();
        assert_eq!(ours, reference[user], "user {user}");
        same_dense_ids &= ds
            .items_of(u)
            .iter()
            .all(|&i| item_map[&i.to_string()] == ds.items.original(i).unwrap());
    }
    // Dense ids are assigned in order of first appearance over users' time-ordered sequences,
    // which is also how the SASRec script numbered items.
    assert!(
        same_dense_ids,
        "dense item ids differ from the SASRec numbering"
    );
}

#[test]
fn ml100k_counts() {
    assert_eq!(
        counts("ml-100k-u.data", Format::MovieLens100k),
        (100_000, 943, 1_682)
    );
}

#[test]
fn games_counts() {
    assert_eq!(
        counts("games-sasrec.txt", Format::UserItemPairs),
        (287_107, 31_013, 23_715)
    );
}

#[test]
fn sports_and_toys_sequence_counts() {
    assert_eq!(
        counts("amazon-sports-seq.txt", Format::Sequences),
        (296_337, 35_598, 18_357)
    );
    assert_eq!(
        counts("amazon-toys-seq.txt", Format::Sequences),
        (167_597, 19_412, 11_924)
    );
}

#[test]
fn musical_instruments_csv_counts() {
    let c = counts(
        "amazon-musical-instruments-5core.csv",
        Format::Delimited { delimiter: b',' },
    );
    assert_eq!(c, (10_261, 1_429, 900));
}

#[test]
fn diginetica_sessions() {
    let log = read_log(
        data("diginetica-sample-item-views.csv"),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(log.format, Format::Delimited { delimiter: b';' });
    assert!(log.sessions, "the session column must be the sequence key");
    assert!(log.has_timestamps);
    let ds = prepare(&log, &PrepareConfig::default()).unwrap();
    assert_eq!(
        (ds.n_events(), ds.n_users(), ds.n_items()),
        (12_391, 2_986, 7_139)
    );
}

#[test]
fn movies_latin1_titles() {
    let movies = read_movies(data("ml-1m-movies.dat")).unwrap();
    assert_eq!(movies.len(), 3_883);
    assert!(movies.iter().all(|m| !m.title.contains('\u{FFFD}')));
    let accented = movies.iter().filter(|m| !m.title.is_ascii()).count();
    assert!(accented > 0, "ML-1M has Latin-1 titles");
    let les_mis = movies.iter().find(|m| m.id == "73").unwrap();
    assert_eq!(les_mis.title, "Misérables, Les (1995)");
    let toy = movies.iter().find(|m| m.id == "1").unwrap();
    assert_eq!(toy.title, "Toy Story (1995)");
    assert_eq!(toy.genres, vec!["Animation", "Children's", "Comedy"]);
}
