//! The training loop and the run directory.
//!
//! ```text
//! <run>/config.toml     resolved config
//! <run>/history.jsonl   one line per validation: epoch, loss, metrics, seconds
//! <run>/metrics.json    final test metrics of the best checkpoint (and MostPop's), validation, timings
//! <run>/curve.png       validation metric and loss against epoch
//! <run>/best/, last/    model files + model.json + items.json (+ trainer.json in last/)
//! ```
//! Checkpoints are written into `.<name>.tmp/`, then swapped in by renames, so a crash leaves either the
//! old or the new checkpoint, never a mix. `last/` is written after every epoch and is what `resume`
//! continues from; the trainer state in it (epoch, best, patience, history) makes a resumed run end
//! exactly like an uninterrupted one.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use seqrec_data::{Dataset, Sequences, Split};
use seqrec_metrics::Metric;
use seqrec_models::{Model, ModelError, MostPop, Precision};
use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetInfo, data_dir, load_dataset, resolve_dataset};
use crate::eval::{
    EvalOutcome, EvalSettings, Stage, evaluate, evaluate_protocols, format_table, popularity_before,
};
use crate::plot::{CurveText, plot_curve};
use crate::{Protocol, TrainConfig, TrainError};

/// Builds a model for the training sequences and seed (the registry's `ModelConfig::build`, or a test model).
pub type BuildFn<'a> =
    dyn Fn(&Sequences<'_>, u64) -> Result<Box<dyn Model>, ModelError> + Sync + 'a;

/// How to build the model, and the config recorded in checkpoints as `model.json`.
pub struct ModelFactory<'a> {
    /// JSON of the model config (written to `model.json` in each checkpoint).
    pub config: serde_json::Value,
    /// The constructor.
    pub build: Box<BuildFn<'a>>,
}

impl<'a> ModelFactory<'a> {
    /// The factory of the model `cfg.model` names (the registry).
    pub fn from_config(cfg: &'a TrainConfig) -> Self {
        ModelFactory {
            config: serde_json::to_value(&cfg.model).expect("model configs serialise to JSON"),
            build: Box::new(move |train, seed| cfg.model.build(train, seed)),
        }
    }
}

/// Options that do not change results.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// No progress bar (it is also hidden when stderr is not a terminal).
    pub quiet: bool,
    /// Stop after this epoch (0-based) as if interrupted: `last/` is written, no final evaluation.
    /// Used to test `resume`.
    pub stop_after_epoch: Option<usize>,
}

/// Why training stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All epochs ran.
    Completed,
    /// `patience` evaluations without improvement.
    EarlyStopped {
        /// The last epoch run (1-based).
        epoch: usize,
    },
    /// The loss or a gradient became NaN/Inf; the last good checkpoint was kept.
    NonFinite {
        /// The model's message.
        message: String,
    },
    /// [`RunOptions::stop_after_epoch`] was reached.
    Interrupted {
        /// The last epoch run (1-based).
        epoch: usize,
    },
}

/// One validation: a line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// Epochs completed (1-based).
    pub epoch: usize,
    /// Mean training loss of that epoch.
    pub loss: f64,
    /// Validation metrics by name (`NDCG@10`, ...).
    pub valid: std::collections::BTreeMap<String, f64>,
    /// Seconds since the run started (cumulative across resumes).
    pub seconds: f64,
}

/// The trainer's state, saved in `last/trainer.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Best (epoch, validation metric) so far.
    pub best: Option<(usize, f64)>,
    /// Evaluations since the best one.
    pub evals_since_best: usize,
    /// All validations so far.
    pub history: Vec<HistoryLine>,
    /// Loss of every epoch.
    pub losses: Vec<f64>,
    /// Training seconds (cumulative across resumes).
    pub train_seconds: f64,
    /// Validation seconds.
    pub valid_seconds: f64,
}

/// What a finished (or stopped) run produced.
#[derive(Debug)]
pub struct RunSummary {
    /// The run directory.
    pub dir: PathBuf,
    /// Why training stopped.
    pub stop: StopReason,
    /// Test evaluation of the best checkpoint (`None` when interrupted or no checkpoint was ever best).
    pub test: Option<EvalOutcome>,
    /// Test evaluation of MostPop on the same split.
    pub test_mostpop: Option<EvalOutcome>,
    /// The `metrics.json` written (`Null` when interrupted).
    pub metrics: serde_json::Value,
    /// Printable table: the model next to MostPop.
    pub table: String,
}

/// A loaded dataset with its split.
pub struct Experiment {
    /// The prepared dataset.
    pub ds: Dataset,
    /// Its description.
    pub info: DatasetInfo,
    /// Leave-one-out split.
    pub split: Split,
}

impl Experiment {
    /// Loads `cfg.data` and splits it.
    pub fn load(cfg: &TrainConfig) -> Result<Self, TrainError> {
        let spec = resolve_dataset(&cfg.data, &data_dir())?;
        let (ds, info) = load_dataset(&spec, &cfg.data.cache_dir)?;
        let split = Split::leave_one_out(&ds);
        split.check_dataset(&ds)?;
        split.check_no_leakage(&ds)?;
        Ok(Experiment { ds, info, split })
    }

    /// The training sequences (train prefixes).
    pub fn train(&self) -> Result<Sequences<'_>, TrainError> {
        Ok(self.split.train_sequences(&self.ds)?)
    }

    /// Everything observed before the test targets: training plus validation events of each user.
    /// MostPop is refitted on these for the test evaluation, as its test-time input.
    pub fn train_and_valid(&self) -> Sequences<'_> {
        let mut len: Vec<usize> = (0..=self.ds.n_users() as u32)
            .map(|u| if u == 0 { 0 } else { self.split.train_len(u) })
            .collect();
        for c in self.split.test() {
            len[c.user as usize] = len[c.user as usize].max(c.input_len as usize);
        }
        Sequences::from_prefixes(&self.ds, self.ds.user_ids().map(|u| (u, len[u as usize])))
    }
}

/// Evaluation settings from the config (chain [`EvalSettings::with_split`] for
/// `eval.negatives_exclude = "train"`).
pub fn eval_settings(cfg: &TrainConfig) -> Result<EvalSettings, TrainError> {
    Ok(EvalSettings {
        protocol: cfg.eval.protocol,
        negatives: cfg.eval.negatives,
        negatives_seed: cfg.eval.negatives_seed,
        negatives_exclude: cfg.eval.negatives_exclude,
        train_lens: None,
        exclude_history: cfg.eval.exclude_history,
        cutoffs: cfg.cutoffs()?,
        batch_size: cfg.eval.batch_size,
        precision: Precision::F32,
    })
}

fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, TrainError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| TrainError::ThreadPool(e.to_string()))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).expect("serialisable");
    s.push(b'\n');
    s
}

/// Writes a checkpoint directory `<run>/<name>/` atomically (temp dir + renames).
fn write_checkpoint(
    run: &Path,
    name: &str,
    model: &dyn Model,
    model_json: &serde_json::Value,
    items: &[String],
    extra: &[(&str, Vec<u8>)],
) -> Result<(), TrainError> {
    let tmp = run.join(format!(".{name}.tmp"));
    let old = run.join(format!(".{name}.old"));
    let fin = run.join(name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    model.save(&tmp)?;
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("model.json", json_bytes(model_json)),
        ("items.json", json_bytes(&items)),
    ];
    files.extend(extra.iter().cloned());
    for (f, bytes) in files {
        let p = tmp.join(f);
        std::fs::write(&p, bytes).map_err(|e| TrainError::io(&p, e))?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    if fin.exists() {
        std::fs::rename(&fin, &old).map_err(|e| TrainError::io(&fin, e))?;
    }
    std::fs::rename(&tmp, &fin).map_err(|e| TrainError::io(&fin, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    Ok(())
}

/// The checkpoint directory `<run>/<name>`, or its `.old` copy when a crash interrupted the swap.
fn checkpoint_dir(run: &Path, name: &str) -> Option<PathBuf> {
    [run.join(name), run.join(format!(".{name}.old"))]
        .into_iter()
        .find(|p| p.is_dir())
}

/// Trains the model `cfg.model` names into `cfg.run_dir()`; see [`train_with`].
pub fn train(cfg: &TrainConfig, opts: &RunOptions) -> Result<RunSummary, TrainError> {
    train_with(cfg, &ModelFactory::from_config(cfg), opts, false)
}

/// Continues the run in `dir` from its `last/` checkpoint with the config saved there.
pub fn resume(dir: &Path, opts: &RunOptions) -> Result<RunSummary, TrainError> {
    let cfg = resume_config(dir)?;
    train_with(&cfg, &ModelFactory::from_config(&cfg), opts, true)
}

/// The config of the run in `dir`, with `out` pointing at `dir`.
pub fn resume_config(dir: &Path) -> Result<TrainConfig, TrainError> {
    let mut cfg = TrainConfig::from_file(&dir.join("config.toml"))?;
    cfg.out = dir.to_owned();
    Ok(cfg)
}

/// Trains with any model factory (the registry's or a custom one), writing the run directory.
///
/// With `resume = false` the directory must not hold a run yet; with `resume = true` the model and the
/// trainer state are restored from `last/` and training continues at the next epoch.
pub fn train_with(
    cfg: &TrainConfig,
    factory: &ModelFactory<'_>,
    opts: &RunOptions,
    resume: bool,
) -> Result<RunSummary, TrainError> {
    cfg.validate()?;
    let dir = cfg.run_dir();
    let run_err = |m: String| TrainError::RunDir {
        path: dir.clone(),
        message: m,
    };
    if resume {
        if checkpoint_dir(&dir, "last").is_none() {
            return Err(run_err("no last/ checkpoint to resume from".into()));
        }
    } else if dir.join("config.toml").exists() {
        return Err(run_err(
            "already holds a run: pass --resume to continue it, or choose another --out".into(),
        ));
    }
    let pool = thread_pool(cfg.train.threads)?;
    pool.install(|| train_loop(cfg, factory, opts, resume, &dir))
}

fn train_loop(
    cfg: &TrainConfig,
    factory: &ModelFactory<'_>,
    opts: &RunOptions,
    resume: bool,
    dir: &Path,
) -> Result<RunSummary, TrainError> {
    let run_start = Instant::now();
    let exp = Experiment::load(cfg)?;
    let train = exp.train()?;
    let settings = eval_settings(cfg)?.with_split(&exp.split, exp.ds.n_users());
    let metric = cfg.metric()?;
    let items = exp.ds.items.originals().to_vec();
    let valid_pop = popularity_before(&exp.ds, &exp.split, Stage::Valid);
    let mut model = (factory.build)(&train, cfg.train.seed)?;
    let mut state = TrainerState::default();
    if resume {
        let last = checkpoint_dir(dir, "last").expect("checked by train_with");
        let text = std::fs::read_to_string(last.join("trainer.json"))
            .map_err(|e| TrainError::io(last.join("trainer.json"), e))?;
        state = serde_json::from_str(&text).map_err(|e| TrainError::RunDir {
            path: last.clone(),
            message: format!("trainer.json: {e}"),
        })?;
        let saved_items: Vec<String> = std::fs::read_to_string(last.join("items.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if saved_items != items {
            return Err(TrainError::RunDir {
                path: last,
                message: "items.json does not match the dataset's item vocabulary".into(),
            });
        }
        model.load(&last)?;
    }
    // A model without a learning rate refuses a schedule here, before anything is written.
    if !cfg.train.lr_milestones.is_empty() {
        model.set_lr_factor(cfg.train.lr_factor(state.epochs_done))?;
    }
    // The run directory is written only once the data, the model and its checkpoint have loaded, so a
    // run that cannot start leaves nothing behind.
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    write_atomic(&dir.join("config.toml"), cfg.to_commented_toml().as_bytes())?;
    let hidden = opts.quiet || !std::io::stderr().is_terminal();
    let elapsed_before = state
        .history
        .last()
        .map_or(0.0, |h| h.seconds)
        .max(state.train_seconds);
    let mut stop = StopReason::Completed;
    for epoch in state.epochs_done..cfg.train.epochs {
        // A pure function of the epoch, so a resumed run continues the schedule exactly.
        if !cfg.train.lr_milestones.is_empty() {
            model.set_lr_factor(cfg.train.lr_factor(epoch))?;
        }
        let t0 = Instant::now();
        let bar = ProgressBar::new(0);
        if hidden {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} epoch ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, cfg.train.epochs));
        let mut seqs = 0usize;
        // Whole-run ETA from the mean epoch time so far (the bar's own ETA covers this epoch).
        let per_epoch =
            (state.epochs_done > 0).then(|| state.train_seconds / state.epochs_done as f64);
        let later_epochs = (cfg.train.epochs - epoch - 1) as f64;
        let result = model.train_epoch(&train, epoch, &mut |s| {
            seqs += s.sequences;
            bar.set_length(s.steps as u64);
            bar.set_position(s.step as u64 + 1);
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            let rate = seqs as f64 / secs;
            let run_eta = per_epoch.map_or(String::new(), |p| {
                let left = later_epochs * p + (p - secs).max(0.0);
                format!(
                    ", run ETA {}",
                    indicatif::HumanDuration(std::time::Duration::from_secs_f64(left))
                )
            });
            bar.set_message(format!("loss {:.4} {rate:.0} seq/s{run_eta}", s.loss));
        });
        bar.finish_and_clear();
        let report = match result {
            Ok(r) if r.loss.is_finite() => r,
            Ok(r) => {
                stop = StopReason::NonFinite {
                    message: format!("non-finite epoch loss {} at epoch {}", r.loss, epoch + 1),
                };
                break;
            }
            Err(e @ ModelError::NonFinite { .. }) => {
                stop = StopReason::NonFinite {
                    message: e.to_string(),
                };
                break;
            }
            Err(e) => return Err(e.into()),
        };
        state.train_seconds += t0.elapsed().as_secs_f64();
        state.losses.push(report.loss);
        state.epochs_done = epoch + 1;
        // A closed-form model is done after the epochs it needs: evaluate it and stop there.
        let converged = model.epochs_needed().is_some_and(|n| epoch + 1 >= n);
        let eval_now =
            (epoch + 1) % cfg.train.eval_every == 0 || epoch + 1 == cfg.train.epochs || converged;
        let mut improved = false;
        if eval_now {
            let v = match evaluate(
                model.as_mut(),
                &exp.ds,
                exp.split.valid(),
                &valid_pop,
                &settings,
            ) {
                Ok(v) => v,
                // NaN scores mean the parameters diverged even though the loss looked finite: stop
                // like a NaN loss, before this epoch's state reaches last/.
                Err(TrainError::Metrics(e @ seqrec_metrics::MetricsError::NanScore { .. })) => {
                    stop = StopReason::NonFinite {
                        message: format!("validation after epoch {}: {e}", epoch + 1),
                    };
                    state.epochs_done = epoch;
                    state.losses.pop();
                    break;
                }
                Err(e) => return Err(e),
            };
            state.valid_seconds += v.seconds;
            let value = v.value(metric);
            state.history.push(HistoryLine {
                epoch: epoch + 1,
                loss: report.loss,
                valid: metric_map(&v),
                seconds: elapsed_before + run_start.elapsed().as_secs_f64(),
            });
            if state.best.is_none_or(|(_, b)| value > b) {
                state.best = Some((epoch + 1, value));
                state.evals_since_best = 0;
                improved = true;
            } else {
                state.evals_since_best += 1;
            }
            if !opts.quiet {
                eprintln!(
                    "epoch {:>4}  loss {:.5}  valid {} {:.6}{}",
                    epoch + 1,
                    report.loss,
                    metric.name(),
                    value,
                    if improved { "  (best)" } else { "" }
                );
            }
        }
        if improved {
            let best = json_bytes(
                &serde_json::json!({"epoch": epoch + 1, "metric": metric.key(), "value": state.best.map(|b| b.1)}),
            );
            write_checkpoint(
                dir,
                "best",
                model.as_ref(),
                &factory.config,
                &items,
                &[("best.json", best)],
            )?;
        }
        write_checkpoint(
            dir,
            "last",
            model.as_ref(),
            &factory.config,
            &items,
            &[("trainer.json", json_bytes(&state))],
        )?;
        if eval_now {
            write_history(dir, &state)?;
            plot(dir, &state, metric)?;
        }
        if cfg.train.patience > 0 && state.evals_since_best >= cfg.train.patience {
            stop = StopReason::EarlyStopped { epoch: epoch + 1 };
            break;
        }
        if converged {
            stop = StopReason::Completed;
            break;
        }
        if opts.stop_after_epoch == Some(epoch) && epoch + 1 < cfg.train.epochs {
            return Ok(RunSummary {
                dir: dir.to_owned(),
                stop: StopReason::Interrupted { epoch: epoch + 1 },
                test: None,
                test_mostpop: None,
                metrics: serde_json::Value::Null,
                table: String::new(),
            });
        }
    }
    if let StopReason::NonFinite { message } = &stop {
        eprintln!(
            "training stopped: {message}; the last good checkpoint ({}/last, epoch {}) is kept",
            dir.display(),
            state.epochs_done
        );
    }
    finish(
        cfg, dir, &exp, &train, model, factory, &state, stop, &settings, metric,
    )
}

fn metric_map(o: &EvalOutcome) -> std::collections::BTreeMap<String, f64> {
    let mut m = std::collections::BTreeMap::new();
    for a in &o.metrics.at_k {
        for metric in Metric::at(a.k) {
            m.insert(metric.key(), o.value(metric));
        }
    }
    m.insert("mrr".into(), o.metrics.mrr);
    m
}

fn write_history(dir: &Path, state: &TrainerState) -> Result<(), TrainError> {
    let mut text = String::new();
    for h in &state.history {
        text.push_str(&serde_json::to_string(h).expect("serialisable"));
        text.push('\n');
    }
    write_atomic(&dir.join("history.jsonl"), text.as_bytes())
}

fn plot(dir: &Path, state: &TrainerState, metric: Metric) -> Result<(), TrainError> {
    let m: Vec<(f64, f64)> = state
        .history
        .iter()
        .map(|h| {
            (
                h.epoch as f64,
                h.valid.get(&metric.key()).copied().unwrap_or(f64::NAN),
            )
        })
        .collect();
    let l: Vec<(f64, f64)> = state
        .losses
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as f64 + 1.0, x))
        .collect();
    let tmp = dir.join(".curve.tmp.png");
    if plot_curve(&tmp, &metric.name(), &m, &l)? == CurveText::NoFont {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!(
                "note: no TrueType font found, curve.png has no labels \
                 (install fonts-dejavu-core or set SEQREC_FONT=/path/to/font.ttf)"
            )
        });
    }
    std::fs::rename(&tmp, dir.join("curve.png"))
        .map_err(|e| TrainError::io(dir.join("curve.png"), e))
}

/// MostPop evaluated on validation (fit on training) and test (fit on training + validation).
pub fn mostpop_baseline(
    exp: &Experiment,
    settings: &EvalSettings,
    stage: Stage,
) -> Result<EvalOutcome, TrainError> {
    let mut out = mostpop_baseline_protocols(exp, settings, stage, &[settings.protocol])?;
    Ok(out.remove(0))
}

/// The protocols of the test report: `first` (the run's), then the others in the order full,
/// sampled-uniform, sampled-pop. The extra sampled protocols are left out when some user has seen
/// so much of the catalogue that `negatives` unseen items cannot be drawn (tiny catalogues).
pub fn test_protocols(first: Protocol, ds: &Dataset, negatives: usize) -> Vec<Protocol> {
    let max_seen = ds
        .user_ids()
        .map(|u| {
            let mut items = ds.items_of(u).to_vec();
            items.sort_unstable();
            items.dedup();
            items.len()
        })
        .max()
        .unwrap_or(0);
    let sampled_ok = ds.n_items() >= max_seen + negatives;
    let mut v = vec![first];
    for p in [
        Protocol::Full,
        Protocol::SampledUniform,
        Protocol::SampledPop,
    ] {
        if p != first && (p == Protocol::Full || sampled_ok) {
            v.push(p);
        }
    }
    v
}

/// The key of a protocol in `metrics.json`: `full`, `sampled_uniform_<n>`, `sampled_popular_<n>`.
pub fn protocol_key(p: Protocol, negatives: usize) -> String {
    match p {
        Protocol::Full => "full".into(),
        Protocol::SampledUniform => format!("sampled_uniform_{negatives}"),
        Protocol::SampledPop => format!("sampled_popular_{negatives}"),
    }
}

/// An evaluation in `metrics.json`: lowercase metric keys (`hr@10`, `ndcg@10`, `mrr`, ...), the
/// number of users, and the catalogue report of the full protocol.
fn outcome_json(o: &EvalOutcome) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in metric_map(o) {
        m.insert(k, serde_json::json!(v));
    }
    m.insert("users".into(), serde_json::json!(o.metrics.n_users));
    if let Some(c) = &o.catalogue {
        m.insert("catalogue".into(), serde_json::json!(c));
    }
    serde_json::Value::Object(m)
}

/// [`mostpop_baseline`] under several protocols (one fit, each history scored once).
pub fn mostpop_baseline_protocols(
    exp: &Experiment,
    settings: &EvalSettings,
    stage: Stage,
    protocols: &[Protocol],
) -> Result<Vec<EvalOutcome>, TrainError> {
    let train = exp.train()?;
    let fit = match stage {
        Stage::Valid => train.clone(),
        Stage::Test => exp.train_and_valid(),
    };
    let mut mp = MostPop::new(&train);
    mp.train_epoch(&fit, 0, &mut |_| {})?;
    let pop = popularity_before(&exp.ds, &exp.split, stage);
    evaluate_protocols(
        &mut mp,
        &exp.ds,
        stage.cases(&exp.split),
        &pop,
        settings,
        protocols,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    cfg: &TrainConfig,
    dir: &Path,
    exp: &Experiment,
    train: &Sequences<'_>,
    mut model: Box<dyn Model>,
    factory: &ModelFactory<'_>,
    state: &TrainerState,
    stop: StopReason,
    settings: &EvalSettings,
    metric: Metric,
) -> Result<RunSummary, TrainError> {
    let test_pop = popularity_before(&exp.ds, &exp.split, Stage::Test);
    // The test split under every protocol (each history scored once), the configured one first.
    let protocols = test_protocols(settings.protocol, &exp.ds, settings.negatives);
    let tests = match checkpoint_dir(dir, "best") {
        Some(best) if state.best.is_some() => {
            model.load(&best)?;
            Some(evaluate_protocols(
                model.as_mut(),
                &exp.ds,
                exp.split.test(),
                &test_pop,
                settings,
                &protocols,
            )?)
        }
        _ => None,
    };
    let mp_valid = mostpop_baseline(exp, settings, Stage::Valid)?;
    let mp_tests = mostpop_baseline_protocols(exp, settings, Stage::Test, &protocols)?;
    let best_valid = state
        .best
        .and_then(|(e, _)| state.history.iter().find(|h| h.epoch == e))
        .map(|h| h.valid.clone());
    let protocol = settings.describe(exp.ds.n_items());
    let by_protocol = |outcomes: &[EvalOutcome]| {
        let mut m = serde_json::Map::new();
        for (&p, o) in protocols.iter().zip(outcomes) {
            m.insert(protocol_key(p, settings.negatives), outcome_json(o));
        }
        serde_json::Value::Object(m)
    };
    let descriptions: serde_json::Map<String, serde_json::Value> = protocols
        .iter()
        .map(|&p| {
            let s = EvalSettings {
                protocol: p,
                ..settings.clone()
            };
            (
                protocol_key(p, settings.negatives),
                serde_json::Value::String(s.describe(exp.ds.n_items())),
            )
        })
        .collect();
    let sequences = train.len() as f64 * state.epochs_done as f64;
    let metrics = serde_json::json!({
        "schema": 1,
        "model": cfg.model.name(),
        "dataset": cfg.data.dataset,
        "config": cfg,
        "model_config": factory.config,
        "dataset_info": exp.info,
        "split": format!(
            "leave-one-out: per user, last event = test target, second-to-last = validation target, rest = training ({} valid / {} test cases, {} training events)",
            exp.split.valid().len(), exp.split.test().len(), exp.split.n_train_events()
        ),
        "train": {
            "epochs": state.epochs_done,
            "best_epoch": state.best.map(|b| b.0),
            "stop": stop,
            "seconds": state.train_seconds,
            "seconds_per_epoch": if state.epochs_done > 0 { state.train_seconds / state.epochs_done as f64 } else { 0.0 },
            "sequences_per_second": if state.train_seconds > 0.0 { sequences / state.train_seconds } else { 0.0 },
            "valid_seconds": state.valid_seconds,
            "test_seconds": tests.as_ref().map(|t| t[0].seconds),
        },
        "selection_metric": metric.key(),
        "valid": {
            "protocol": settings.protocol.name(),
            "model": best_valid,
            "mostpop": metric_map(&mp_valid),
        },
        "test": tests.as_deref().map(by_protocol),
        "mostpop": { "test": by_protocol(&mp_tests) },
        "protocols": descriptions,
        "protocol": protocol,
        "seed": cfg.train.seed,
        "threads": cfg.train.threads,
    });
    let test = tests.map(|mut t| t.remove(0));
    let mp_test = mp_tests.into_iter().next().expect("at least one protocol");
    write_atomic(&dir.join("metrics.json"), &json_bytes(&metrics))?;
    let title = format!("test ({protocol})");
    let table = match &test {
        Some(t) => format_table(&title, &[(cfg.model.name(), t), ("MostPop", &mp_test)]),
        None => format_table(&title, &[("MostPop", &mp_test)]),
    };
    Ok(RunSummary {
        dir: dir.to_owned(),
        stop,
        test,
        test_mostpop: Some(mp_test),
        metrics,
        table,
    })
}

/// Re-evaluates the best checkpoint of the run in `dir` on the test cases with `settings`, next to
/// MostPop: `(model, mostpop)`.
pub fn evaluate_run(
    dir: &Path,
    factory: Option<&ModelFactory<'_>>,
    settings_override: impl FnOnce(&mut EvalSettings),
) -> Result<(EvalOutcome, EvalOutcome, Experiment), TrainError> {
    let cfg = resume_config(dir)?;
    let mut settings = eval_settings(&cfg)?;
    settings_override(&mut settings);
    let registry;
    let factory = match factory {
        Some(f) => f,
        None => {
            registry = ModelFactory::from_config(&cfg);
            &registry
        }
    };
    let pool = thread_pool(cfg.train.threads)?;
    pool.install(|| {
        let exp = Experiment::load(&cfg)?;
        let settings = settings.with_split(&exp.split, exp.ds.n_users());
        let best = checkpoint_dir(dir, "best").ok_or_else(|| TrainError::RunDir {
            path: dir.to_owned(),
            message: "no best/ checkpoint".into(),
        })?;
        let m = {
            let train = exp.train()?;
            let mut model = (factory.build)(&train, cfg.train.seed)?;
            model.load(&best)?;
            let pop = popularity_before(&exp.ds, &exp.split, Stage::Test);
            evaluate(model.as_mut(), &exp.ds, exp.split.test(), &pop, &settings)?
        };
        // MostPop's counts need no other arithmetic than f32.
        let mp_settings = EvalSettings {
            precision: Precision::F32,
            ..settings
        };
        let mp = mostpop_baseline(&exp, &mp_settings, Stage::Test)?;
        Ok((m, mp, exp))
    })
}
