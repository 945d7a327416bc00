//! Dataset short names, loading through the `seqrec-data` cache, and the fingerprint recorded in runs.

use std::path::{Path, PathBuf};

use seqrec_data::cache::{self, CacheStatus};
use seqrec_data::{Dataset, Format, KCore, PrepareConfig, ReadOptions};
use serde::Serialize;

use crate::{DataConfig, TrainError};

/// A known dataset: file name in `SEQREC_DATA_DIR`, format and preparation recipe.
#[derive(Clone, Copy, Debug)]
pub struct KnownDataset {
    /// The short name.
    pub name: &'static str,
    /// File name inside the data directory.
    pub file: &'static str,
    /// Its format.
    pub format: Format,
    /// Minimum events per user and per item (single-pass k-core when non-zero, the SASRec script).
    pub min_events: usize,
    /// One line describing the recipe.
    pub recipe: &'static str,
}

/// The short names accepted for `data.dataset`.
pub const KNOWN_DATASETS: &[KnownDataset] = &[
    KnownDataset {
        name: "ml-1m",
        file: "ml-1m-ratings.dat",
        format: Format::MovieLens,
        min_events: 5,
        recipe: "MovieLens-1M ratings, every rating an interaction, users/items with < 5 events dropped (single pass, SASRec)",
    },
    KnownDataset {
        name: "ml-1m-sasrec",
        file: "ml-1m-sasrec.txt",
        format: Format::UserItemPairs,
        min_events: 0,
        recipe: "the SASRec authors' preprocessed ML-1M file, used as is",
    },
    KnownDataset {
        name: "ml-100k",
        file: "ml-100k-u.data",
        format: Format::MovieLens100k,
        min_events: 0,
        recipe: "MovieLens-100k u.data, every rating an interaction",
    },
    KnownDataset {
        name: "games",
        file: "games-sasrec.txt",
        format: Format::UserItemPairs,
        min_events: 0,
        recipe: "Amazon Video Games as preprocessed for the SASRec paper",
    },
    KnownDataset {
        name: "sports",
        file: "amazon-sports-seq.txt",
        format: Format::Sequences,
        min_events: 0,
        recipe: "Amazon Sports 5-core sequences, used as is",
    },
    KnownDataset {
        name: "toys",
        file: "amazon-toys-seq.txt",
        format: Format::Sequences,
        min_events: 0,
        recipe: "Amazon Toys 5-core sequences, used as is",
    },
    KnownDataset {
        name: "instruments",
        file: "amazon-musical-instruments-5core.csv",
        format: Format::Delimited { delimiter: b',' },
        min_events: 0,
        recipe: "Amazon Musical Instruments 5-core ratings, every rating an interaction",
    },
    KnownDataset {
        name: "diginetica",
        file: "diginetica-sample-item-views.csv",
        format: Format::Delimited { delimiter: b';' },
        min_events: 0,
        recipe: "DIGINETICA sample item views, sessions are the sequences",
    },
];

/// The data directory: `$SEQREC_DATA_DIR`, else `../shared/data` next to the workspace root.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SEQREC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// A resolved dataset: where to read it and how to prepare it.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    /// The short name, or the path as given.
    pub name: String,
    /// The log file.
    pub path: PathBuf,
    /// Read options.
    pub read: ReadOptions,
    /// Preparation (filters, k-core).
    pub prepare: PrepareConfig,
    /// Human description of the recipe.
    pub recipe: String,
}

/// Resolves `cfg.dataset` (a short name in `data_dir`, or a path) and the filters.
pub fn resolve_dataset(cfg: &DataConfig, data_dir: &Path) -> Result<DatasetSpec, TrainError> {
    let known = KNOWN_DATASETS.iter().find(|k| k.name == cfg.dataset);
    let (path, mut format, min_events, recipe) = match known {
        Some(k) => (
            data_dir.join(k.file),
            Some(k.format),
            k.min_events,
            k.recipe.to_owned(),
        ),
        None => {
            let p = PathBuf::from(&cfg.dataset);
            if !p.is_file() {
                return Err(TrainError::UnknownDataset {
                    name: cfg.dataset.clone(),
                    known: KNOWN_DATASETS
                        .iter()
                        .map(|k| k.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            (
                p,
                None,
                0,
                "a log file, every event an interaction".to_owned(),
            )
        }
    };
    if !cfg.format.is_empty() {
        format =
            Some(Format::from_name(&cfg.format).map_err(|e| TrainError::config("data.format", e))?);
    }
    let pick = |v: i64| if v < 0 { min_events } else { v as usize };
    let (mu, mi) = (pick(cfg.min_user_events), pick(cfg.min_item_events));
    let mut b = PrepareConfig::builder()
        .min_user_events(mu)
        .min_item_events(mi);
    if mu > 0 || mi > 0 {
        // The SASRec script filters once (single pass); an iterative k-core is a different dataset.
        b = b.kcore(KCore::SinglePass);
    }
    let prepare = b.build()?;
    Ok(DatasetSpec {
        name: cfg.dataset.clone(),
        path,
        read: ReadOptions {
            format,
            ..ReadOptions::default()
        },
        prepare,
        recipe,
    })
}

/// What a run records about its data, so two runs can be checked to use the same dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetInfo {
    /// Short name or path.
    pub name: String,
    /// The log file read.
    pub path: String,
    /// The preparation recipe.
    pub recipe: String,
    /// `PrepareConfig::fingerprint()`.
    pub prepare: String,
    /// Users (sequences), items and events after preparation.
    pub n_users: usize,
    /// Items after preparation.
    pub n_items: usize,
    /// Events after preparation.
    pub n_events: usize,
    /// Checksum of the prepared dataset (user offsets and item ids), hex.
    pub fingerprint: String,
}

/// Loads the dataset through the `seqrec-data` cache in `cache_dir` (one sub-directory per recipe).
pub fn load_dataset(
    spec: &DatasetSpec,
    cache_dir: &Path,
) -> Result<(Dataset, DatasetInfo), TrainError> {
    let recipe_dir = cache_dir.join(format!(
        "{:016x}",
        cache::checksum(spec.prepare.fingerprint().as_bytes())
    ));
    let cache_file = cache::cache_path(&recipe_dir, &spec.path);
    let (ds, _status): (Dataset, CacheStatus) =
        cache::load_or_prepare(&spec.path, &spec.read, &spec.prepare, &cache_file)?;
    let info = dataset_info(spec, &ds);
    Ok((ds, info))
}

/// The [`DatasetInfo`] of a prepared dataset.
pub fn dataset_info(spec: &DatasetSpec, ds: &Dataset) -> DatasetInfo {
    let (offsets, items, _) = ds.parts();
    let mut bytes = Vec::with_capacity(offsets.len() * 8 + items.len() * 4);
    for &o in offsets {
        bytes.extend_from_slice(&(o as u64).to_le_bytes());
    }
    for &i in items {
        bytes.extend_from_slice(&i.to_le_bytes());
    }
    DatasetInfo {
        name: spec.name.clone(),
        path: std::fs::canonicalize(&spec.path)
            .unwrap_or_else(|_| spec.path.clone())
            .display()
            .to_string(),
        recipe: spec.recipe.clone(),
        prepare: spec.prepare.fingerprint(),
        n_users: ds.n_users(),
        n_items: ds.n_items(),
        n_events: ds.n_events(),
        fingerprint: format!("{:016x}", cache::checksum(&bytes)),
    }
}
