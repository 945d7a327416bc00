//! Test helpers: a tiny bigram model that learns a little more every epoch and can produce NaN on
//! demand, a synthetic Markov-chain log, and scratch directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use seqrec_data::{SeqRng, Sequences};
use seqrec_models::{EpochReport, Model, ModelError, StepReport};
use seqrec_train::{ModelFactory, TrainConfig};

/// Transition counts `counts[prev * (n + 1) + next]`; each epoch adds the transitions of a seeded
/// random quarter of the training sequences, so validation metrics move from epoch to epoch.
pub struct SlowBigram {
    n: usize,
    counts: Vec<f32>,
    row_sums: Vec<f32>,
    seed: u64,
    nan_at_epoch: Option<usize>,
    /// With `nan_at_epoch`: corrupt the parameters but report a finite loss (only the scores show it).
    silent: bool,
}

impl SlowBigram {
    pub fn new(
        train: &Sequences<'_>,
        seed: u64,
        nan_at_epoch: Option<usize>,
        silent: bool,
    ) -> Self {
        let n = train.n_items();
        Self {
            n,
            counts: vec![0.0; (n + 1) * (n + 1)],
            row_sums: vec![0.0; n + 1],
            seed,
            nan_at_epoch,
            silent,
        }
    }
}

impl Model for SlowBigram {
    fn name(&self) -> &'static str {
        "slow-bigram"
    }
    fn n_items(&self) -> usize {
        self.n
    }
    fn max_history(&self) -> usize {
        1
    }
    fn train_epoch(
        &mut self,
        train: &Sequences<'_>,
        epoch: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        if self.nan_at_epoch == Some(epoch) {
            // Corrupt the state first: the trainer must not save it.
            self.counts.fill(f32::NAN);
            if self.silent {
                return Ok(EpochReport {
                    loss: 1.0,
                    steps: 1,
                    sequences: train.len(),
                });
            }
            return Err(ModelError::NonFinite {
                what: "loss",
                epoch,
                step: 0,
                value: f64::NAN,
            });
        }
        let mut order: Vec<usize> = (0..train.len()).collect();
        SeqRng::new(self.seed, epoch as u64).shuffle(&mut order);
        let take = (train.len() / 4).max(1);
        let w = self.n + 1;
        let steps = take.div_ceil(16);
        let (mut total, mut count) = (0f64, 0usize);
        for (step, chunk) in order[..take].chunks(16).enumerate() {
            let (mut loss, mut trans) = (0f64, 0usize);
            for &k in chunk {
                for p in train.items(k).windows(2) {
                    let (a, b) = (p[0] as usize, p[1] as usize);
                    let prob = (self.counts[a * w + b] as f64 + 0.1)
                        / (self.row_sums[a] as f64 + 0.1 * self.n as f64);
                    loss -= prob.ln();
                    trans += 1;
                    self.counts[a * w + b] += 1.0;
                    self.row_sums[a] += 1.0;
                }
            }
            total += loss;
            count += trans;
            on_step(&StepReport {
                step,
                steps,
                loss: loss / trans.max(1) as f64,
                sequences: chunk.len(),
            });
        }
        Ok(EpochReport {
            loss: total / count.max(1) as f64,
            steps,
            sequences: take,
        })
    }
    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        let w = self.n + 1;
        for r in 0..batch {
            let h = histories[r] as usize;
            scores[r * w..(r + 1) * w].copy_from_slice(&self.counts[h * w..(h + 1) * w]);
        }
    }
    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let bytes: Vec<u8> = self
            .counts
            .iter()
            .chain(&self.row_sums)
            .flat_map(|x| x.to_le_bytes())
            .collect();
        std::fs::write(dir.join("bigram.bin"), bytes).map_err(|e| ModelError::Checkpoint {
            path: dir.display().to_string(),
            message: e.to_string(),
        })
    }
    fn load(&mut self, dir: &Path) -> Result<(), ModelError> {
        let err = |m: String| ModelError::Checkpoint {
            path: dir.join("bigram.bin").display().to_string(),
            message: m,
        };
        let bytes = std::fs::read(dir.join("bigram.bin")).map_err(|e| err(e.to_string()))?;
        let w = self.n + 1;
        if bytes.len() != 4 * (w * w + w) {
            return Err(err(format!("{} bytes", bytes.len())));
        }
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.counts.copy_from_slice(&v[..w * w]);
        self.row_sums.copy_from_slice(&v[w * w..]);
        Ok(())
    }
}

/// The factory of [`SlowBigram`].
pub fn bigram_factory(nan_at_epoch: Option<usize>) -> ModelFactory<'static> {
    diverging_factory(nan_at_epoch, false)
}

/// The factory of [`SlowBigram`] whose parameters turn NaN at `nan_at_epoch`, reporting it (`silent
/// = false`) or not.
pub fn diverging_factory(nan_at_epoch: Option<usize>, silent: bool) -> ModelFactory<'static> {
    ModelFactory {
        config: serde_json::json!({"model": "slow-bigram", "nan_at_epoch": nan_at_epoch}),
        build: Box::new(move |train, seed| {
            Ok(Box::new(SlowBigram::new(train, seed, nan_at_epoch, silent)))
        }),
    }
}

/// An empty scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("seqrec-train")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a synthetic log (`user item item ...` per line) where the next item mostly follows
/// `next = (7 * prev + 3) mod 30 + 1`, so a bigram model beats popularity by far.
pub fn synthetic_log(dir: &Path) -> PathBuf {
    let mut rng = SeqRng::new(2024, 0);
    let mut text = String::new();
    for u in 1..=240u64 {
        let len = 6 + rng.below(10) as usize;
        let mut item = 1 + rng.below(30);
        text.push_str(&format!("u{u}"));
        for _ in 0..len {
            text.push_str(&format!(" i{item}"));
            item = if rng.below(10) < 7 {
                (7 * item + 3) % 30 + 1
            } else {
                1 + rng.below(30)
            };
        }
        text.push('\n');
    }
    let p = dir.join("markov.txt");
    std::fs::write(&p, text).unwrap();
    p
}

/// A small, fast config on the synthetic log, writing into `dir/run`.
pub fn small_config(dir: &Path) -> TrainConfig {
    let log = synthetic_log(dir);
    let mut cfg = TrainConfig::default();
    cfg.data.dataset = log.display().to_string();
    cfg.data.format = "sequences".into();
    cfg.data.cache_dir = dir.join("cache");
    cfg.train.epochs = 6;
    cfg.train.eval_every = 2;
    cfg.train.patience = 0;
    cfg.train.seed = 7;
    cfg.train.threads = 2;
    cfg.out = dir.join("run");
    cfg.validate().unwrap();
    cfg
}

/// All files under `dir` (relative path, bytes), sorted.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// `history.jsonl` without the wall-clock seconds.
pub fn history_without_seconds(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

/// `metrics.json` parsed.
pub fn metrics_json(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}
