//! Shared set-up of the criterion benchmarks in `benches/`.

use seqrec_data::{Dataset, Format, PrepareConfig, ReadOptions, prepare, read_log};

/// ML-1M as preprocessed by the SASRec paper (`ml-1m-sasrec.txt` in `SEQREC_DATA_DIR`), read through the
/// data crate: 6,040 users, 3,416 items, dense ids equal to the file's ids, line order as time.
///
/// # Panics
/// If the file is missing or malformed (a benchmark cannot run without it).
pub fn ml1m_sasrec() -> Dataset {
    let path = seqrec_train::dataset::data_dir().join("ml-1m-sasrec.txt");
    let opts = ReadOptions {
        format: Some(Format::UserItemPairs),
        ..ReadOptions::default()
    };
    let log = read_log(&path, &opts).unwrap_or_else(|e| panic!("{e} (set SEQREC_DATA_DIR)"));
    prepare(&log, &PrepareConfig::default()).expect("ml-1m-sasrec.txt prepares")
}
