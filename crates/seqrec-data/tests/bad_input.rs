//! Malformed input gives typed errors naming file, line, expectation and finding; nothing panics.

use std::path::Path;

use proptest::prelude::*;
use seqrec_data::{
    CacheProblem, Column, ColumnMap, DataError, Format, PrepareConfig, ReadOptions, cache, prepare,
    read_log, read_log_from,
};

fn read(text: &[u8], name: &str, format: Option<Format>) -> Result<seqrec_data::RawLog, DataError> {
    read_log_from(
        text,
        Path::new(name),
        &ReadOptions {
            format,
            ..ReadOptions::default()
        },
    )
}

fn parse_error(err: DataError) -> (String, u64, String, String) {
    match err {
        DataError::Parse {
            path,
            line,
            expected,
            found,
        } => (path.display().to_string(), line, expected, found),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn wrong_field_count_names_file_line_expected_and_found() {
    let err = read(b"1::10::5::100\n1::11::5\n", "ratings.dat", None).unwrap_err();
    let msg = err.to_string();
    let (path, line, expected, found) = parse_error(err);
    assert_eq!((path.as_str(), line), ("ratings.dat", 2));
    assert_eq!(expected, "4 fields");
    assert!(found.starts_with("3 field(s)"), "{found}");
    assert!(
        msg.starts_with("ratings.dat:2: expected 4 fields, found 3 field(s) in \"1::11::5\""),
        "{msg}"
    );
}

#[test]
fn non_numeric_timestamp_and_rating() {
    let (_, line, expected, found) =
        parse_error(read(b"1::10::5::100\n\n2::3::4::soon\n", "r.dat", None).unwrap_err());
    assert_eq!(line, 3, "blank lines still count");
    assert!(expected.contains("timestamp"));
    assert_eq!(found, "\"soon\"");
    let (_, line, expected, _) =
        parse_error(read(b"1\t2\tfive\t100\n", "u.data", Some(Format::MovieLens100k)).unwrap_err());
    assert_eq!(line, 1);
    assert!(expected.contains("rating"));
}

#[test]
fn non_utf8_ids_are_errors_but_other_fields_are_fine() {
    let (_, line, expected, _) =
        parse_error(read(b"u\xE9 1\n", "p.txt", Some(Format::UserItemPairs)).unwrap_err());
    assert_eq!((line, expected.as_str()), (1, "a UTF-8 id"));
    // A Latin-1 title column is never decoded.
    let log = read(
        b"user_id,item_id,title,timestamp\n1,2,Mis\xE9rables,5\n",
        "x.csv",
        None,
    )
    .unwrap();
    assert_eq!(log.n_events(), 1);
}

#[test]
fn empty_files() {
    for (text, name) in [
        (&b""[..], "r.dat"),
        (b"\n\n", "r.dat"),
        (b"user_id,item_id\n", "x.csv"),
    ] {
        let format = if name.ends_with("dat") {
            Some(Format::MovieLens)
        } else {
            None
        };
        let err = read(text, name, format).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("{name}: empty file")));
    }
    // Without a named format, an empty file fails in detection, still as Empty.
    assert!(matches!(
        read(b"", "r.dat", None).unwrap_err(),
        DataError::Empty { .. }
    ));
}

#[test]
fn header_not_matching_mapping() {
    let opts = ReadOptions {
        columns: ColumnMap {
            user: Some(Column::Name("customer".into())),
            ..ColumnMap::default()
        },
        ..ReadOptions::default()
    };
    let err = read_log_from(
        &b"user_id,item_id,timestamp\n1,2,3\n"[..],
        Path::new("x.csv"),
        &opts,
    )
    .unwrap_err();
    match &err {
        DataError::Header {
            expected, found, ..
        } => {
            assert!(expected.contains("\"customer\""), "{expected}");
            assert!(found.contains("user_id"), "{found}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("x.csv:1: header does not match")
    );
    // No recognisable item column; the guessed format is named.
    let err = read(b"user_id,thing\n1,2\n", "x.csv", None).unwrap_err();
    assert!(matches!(err, DataError::Header { .. }), "{err:?}");
    assert!(err.to_string().contains("format detected as csv"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = read_log("/nonexistent/ratings.dat", &ReadOptions::default()).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(err.to_string().starts_with("/nonexistent/ratings.dat: "));
}

#[test]
fn undetectable_format() {
    let err = read(b"hello\n", "notes.txt", None).unwrap_err();
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err:?}");
    assert!(err.to_string().contains("--format"));
}

#[test]
fn skip_invalid_counts_and_reports_the_first_lines() {
    let mut text = String::new();
    for i in 0..10 {
        text.push_str(&format!("1::{i}::5::{i}\n"));
        text.push_str(&format!("bad line {i}\n"));
    }
    let opts = ReadOptions {
        format: Some(Format::MovieLens),
        skip_invalid: true,
        ..ReadOptions::default()
    };
    let log = read_log_from(text.as_bytes(), Path::new("r.dat"), &opts).unwrap();
    assert_eq!(log.n_events(), 10);
    assert_eq!(log.skipped, 10);
    assert_eq!(log.first_invalid.len(), seqrec_data::MAX_REPORTED_INVALID);
    let lines: Vec<u64> = log
        .first_invalid
        .iter()
        .map(|e| match e {
            DataError::Parse { line, .. } => *line,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(lines, vec![2, 4, 6, 8, 10]);
    // A partially bad sequence line is skipped whole: no half-read user.
    let opts = ReadOptions {
        format: Some(Format::Sequences),
        skip_invalid: true,
        ..ReadOptions::default()
    };
    let log = read_log_from(&b"1 2 3\n2 4 \xff\n3 5\n"[..], Path::new("s.txt"), &opts).unwrap();
    assert_eq!(
        (log.n_events(), log.n_users(), log.n_items(), log.skipped),
        (3, 2, 3, 1)
    );
}

#[test]
fn config_errors() {
    assert!(matches!(
        PrepareConfig::builder()
            .rating_threshold(f32::INFINITY)
            .build(),
        Err(DataError::Config(_))
    ));
    assert!(matches!(
        PrepareConfig::builder().session_gap(0).build(),
        Err(DataError::Config(_))
    ));
    let log = read(b"1 2\n1 3\n", "p.txt", None).unwrap();
    let cfg = PrepareConfig::builder()
        .rating_threshold(4.0)
        .build()
        .unwrap();
    let err = prepare(&log, &cfg).unwrap_err();
    assert!(err.to_string().contains("no rating column"), "{err}");
    let cfg = PrepareConfig::builder()
        .min_user_events(10)
        .build()
        .unwrap();
    assert!(matches!(
        prepare(&log, &cfg),
        Err(DataError::NothingLeft(_))
    ));
}

#[test]
fn cache_rejects_garbage() {
    let key = cache::CacheKey::from_text("k");
    assert_eq!(
        cache::decode(b"", &key).unwrap_err(),
        CacheProblem::BadMagic
    );
    assert_eq!(
        cache::decode(b"NOTACACHEFILE", &key).unwrap_err(),
        CacheProblem::BadMagic
    );
    let mut v = cache::MAGIC.to_vec();
    v.extend_from_slice(&99u32.to_le_bytes());
    assert_eq!(
        cache::decode(&v, &key).unwrap_err(),
        CacheProblem::Version {
            expected: cache::VERSION,
            found: 99
        }
    );
}

const FORMATS: [Option<Format>; 8] = [
    None,
    Some(Format::MovieLens),
    Some(Format::MovieLens100k),
    Some(Format::Delimited { delimiter: b',' }),
    Some(Format::Delimited { delimiter: b';' }),
    Some(Format::RecBoleInter),
    Some(Format::UserItemPairs),
    Some(Format::Sequences),
];

/// Lines assembled from tokens that real files contain, so the fuzzer reaches past the first check.
fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"::".to_vec()),
        Just(b"\t".to_vec()),
        Just(b",".to_vec()),
        Just(b";".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"user_id:token".to_vec()),
        Just(b"item_id".to_vec()),
        Just(b"timestamp".to_vec()),
        Just(b"session_id".to_vec()),
        Just(b"rating".to_vec()),
        Just(b"2016-05-09".to_vec()),
        Just(b"-".to_vec()),
        Just(b"1e308".to_vec()),
        Just(b"99999999999999999999".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        (0u64..20).prop_map(|n| n.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..4),
    ];
    proptest::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

fn exercise(bytes: &[u8]) {
    for name in ["r.dat", "x.csv", "x.inter", "u.data", "s.txt"] {
        for format in FORMATS {
            for skip_invalid in [false, true] {
                let opts = ReadOptions {
                    format,
                    skip_invalid,
                    ..ReadOptions::default()
                };
                if let Ok(log) = read_log_from(bytes, Path::new(name), &opts) {
                    assert_eq!(log.users.len(), log.n_events());
                    assert_eq!(log.times.len(), log.n_events());
                    let cfg = PrepareConfig::builder()
                        .min_item_events(2)
                        .dedup(seqrec_data::Dedup::Last)
                        .session_gap(3)
                        .build()
                        .unwrap();
                    let _ = prepare(&log, &cfg);
                    let ds = prepare(&log, &PrepareConfig::default()).unwrap();
                    assert_eq!(ds.n_events(), log.n_events());
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        exercise(&bytes);
    }

    #[test]
    fn token_soup_never_panics(bytes in token_soup()) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_cache_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let key = cache::CacheKey::from_text("");
        let mut v = cache::MAGIC.to_vec();
        v.extend_from_slice(&cache::VERSION.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&bytes);
        let _ = cache::decode(&v, &key);
        let _ = cache::decode(&bytes, &key);
    }
}
