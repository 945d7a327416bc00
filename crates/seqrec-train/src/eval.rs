//! Evaluation: score histories in batches, rank the target (ties against the model), aggregate metrics.

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use seqrec_data::{
    Dataset, Distribution, EvalBatcher, EvalCase, Id, Split, sample_eval_negatives,
    sample_eval_negatives_train_only,
};
use seqrec_metrics::{
    CatalogueAccumulator, CatalogueReport, Cutoffs, Exclude, Metric, MetricAccumulator,
    MetricReport, NanPolicy, TopK, rank_full, rank_sampled,
};
use seqrec_models::{Model, Precision};
use serde::Serialize;

use crate::{NegativesExclude, Protocol, TrainError};

/// How to evaluate: protocol, exclusions, cut-offs, batching.
#[derive(Clone, Debug)]
pub struct EvalSettings {
    /// Full ranking or sampled negatives.
    pub protocol: Protocol,
    /// Negatives per case (sampled protocols).
    pub negatives: usize,
    /// Seed of the sampled negatives.
    pub negatives_seed: u64,
    /// Which of the user's items the sampled negatives avoid.
    pub negatives_exclude: NegativesExclude,
    /// Each user's number of training events (index = user id), which
    /// [`NegativesExclude::Train`] needs: set by [`EvalSettings::with_split`].
    pub train_lens: Option<Arc<[u32]>>,
    /// Exclude the user's history from the full ranking.
    pub exclude_history: bool,
    /// Metric cut-offs.
    pub cutoffs: Cutoffs,
    /// Histories per batch.
    pub batch_size: usize,
    /// Arithmetic of the model's scoring ([`Model::set_serving_precision`]), set for the
    /// evaluation and put back to `f32` after it.
    pub precision: Precision,
}

impl EvalSettings {
    /// Records the training length of every user of `split` when the negatives avoid only
    /// training items ([`NegativesExclude::Train`]); otherwise returns `self` unchanged.
    pub fn with_split(mut self, split: &Split, n_users: usize) -> Self {
        if self.negatives_exclude == NegativesExclude::Train {
            let lens: Vec<u32> = (0..=n_users as Id)
                .map(|u| split.train_len(u) as u32)
                .collect();
            self.train_lens = Some(lens.into());
        }
        self
    }

    /// One line describing the protocol, for `metrics.json` and tables.
    pub fn describe(&self, n_items: usize) -> String {
        match self.protocol {
            Protocol::Full => format!(
                "full ranking over all {n_items} items, history {}, ties counted against the model",
                if self.exclude_history {
                    "excluded"
                } else {
                    "included"
                }
            ),
            Protocol::SampledUniform => format!(
                "target ranked against {} uniformly sampled items {} (SASRec), seed {}, ties against the model",
                self.negatives,
                self.negatives_describe(),
                self.negatives_seed
            ),
            Protocol::SampledPop => format!(
                "target ranked against {} popularity-sampled items {} (BERT4Rec), seed {}, ties against the model",
                self.negatives,
                self.negatives_describe(),
                self.negatives_seed
            ),
        }
    }

    /// Which items the sampled negatives avoid, in words.
    fn negatives_describe(&self) -> &'static str {
        match self.negatives_exclude {
            NegativesExclude::Seen => "the user never interacted with",
            NegativesExclude::Train => "outside the user's training items, with replacement",
        }
    }
}

/// The result of one evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalOutcome {
    /// Ranking metrics (means; per-user ranks are kept in memory for `--per-user`).
    pub metrics: MetricReport,
    /// Coverage, average popularity and Gini of the top-k lists (full protocol only).
    pub catalogue: Option<CatalogueReport>,
    /// Wall-clock seconds (reported under `timings` in `metrics.json`, not here, so that equal runs
    /// have equal metrics).
    #[serde(skip)]
    pub seconds: f64,
}

impl EvalOutcome {
    /// The mean of `metric`, `NaN` when its cut-off was not computed.
    pub fn value(&self, metric: Metric) -> f64 {
        self.metrics.mean(metric).unwrap_or(f64::NAN)
    }
}

/// Which cases to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Validation: the target is the second-to-last event, the input the training events.
    Valid,
    /// Test: the target is the last event, the input the training and validation events.
    Test,
}

impl Stage {
    /// The split's cases for this stage.
    pub fn cases(self, split: &Split) -> &[EvalCase] {
        match self {
            Stage::Valid => split.valid(),
            Stage::Test => split.test(),
        }
    }
}

/// Per-item counts of everything a model could see before the stage's targets: training events for
/// validation, training plus validation events for test. Index 0 (padding) is 0.
pub fn popularity_before(ds: &Dataset, split: &Split, stage: Stage) -> Vec<u32> {
    let mut counts = split.train_item_counts(ds);
    if stage == Stage::Test {
        for c in split.valid() {
            counts[c.target(ds) as usize] += 1;
        }
    }
    counts
}

/// Evaluates `model` on `cases` under `s.protocol`. `popularity` (`n_items + 1` entries) feeds the
/// catalogue's average popularity.
///
/// Scoring runs batch by batch (the model may use the rayon pool inside); ranking and top-k run over
/// the rows of a batch in parallel and are accumulated in case order, so the result does not depend
/// on the thread count.
pub fn evaluate(
    model: &mut dyn Model,
    ds: &Dataset,
    cases: &[EvalCase],
    popularity: &[u32],
    s: &EvalSettings,
) -> Result<EvalOutcome, TrainError> {
    let mut out = evaluate_protocols(model, ds, cases, popularity, s, &[s.protocol])?;
    Ok(out.remove(0))
}

/// Negatives, metric and catalogue accumulators of one protocol during [`evaluate_protocols`].
struct ProtocolRun {
    negatives: Option<seqrec_data::EvalNegatives>,
    acc: MetricAccumulator,
    cat: Option<CatalogueAccumulator>,
}

/// Like [`evaluate`], for several protocols at once: each history is scored once and ranked under
/// every protocol in `protocols` (the other settings come from `s`). Returns one outcome per
/// protocol, in order; each carries the total wall-clock time.
pub fn evaluate_protocols(
    model: &mut dyn Model,
    ds: &Dataset,
    cases: &[EvalCase],
    popularity: &[u32],
    s: &EvalSettings,
    protocols: &[Protocol],
) -> Result<Vec<EvalOutcome>, TrainError> {
    model.set_serving_precision(s.precision)?;
    let outcomes = score_and_rank(model, ds, cases, popularity, s, protocols);
    if s.precision != Precision::F32 {
        model.set_serving_precision(Precision::F32)?;
    }
    outcomes
}

/// The body of [`evaluate_protocols`], in the precision it set.
fn score_and_rank(
    model: &mut dyn Model,
    ds: &Dataset,
    cases: &[EvalCase],
    popularity: &[u32],
    s: &EvalSettings,
    protocols: &[Protocol],
) -> Result<Vec<EvalOutcome>, TrainError> {
    let start = Instant::now();
    let n = ds.n_items();
    if model.n_items() != n {
        return Err(TrainError::Model(seqrec_models::ModelError::Data(format!(
            "the model has {} items, the dataset {n}",
            model.n_items()
        ))));
    }
    let width = n + 1;
    let mut runs = Vec::with_capacity(protocols.len());
    for &p in protocols {
        let negatives = match p {
            Protocol::Full => None,
            p => {
                let pairs: Vec<(Id, Id)> = cases.iter().map(|c| (c.user, c.target(ds))).collect();
                let dist = if p == Protocol::SampledPop {
                    Distribution::Popularity { alpha: 1.0 }
                } else {
                    Distribution::Uniform
                };
                Some(match (s.negatives_exclude, &s.train_lens) {
                    (NegativesExclude::Seen, _) => {
                        sample_eval_negatives(ds, &pairs, s.negatives, dist, s.negatives_seed)?
                    }
                    (NegativesExclude::Train, Some(lens)) => {
                        let triples: Vec<(Id, Id, usize)> = pairs
                            .iter()
                            .map(|&(u, t)| (u, t, lens.get(u as usize).map_or(0, |&l| l as usize)))
                            .collect();
                        sample_eval_negatives_train_only(
                            ds,
                            &triples,
                            s.negatives,
                            dist,
                            s.negatives_seed,
                        )?
                    }
                    (NegativesExclude::Train, None) => {
                        return Err(TrainError::config(
                            "eval.negatives_exclude",
                            "\"train\" needs each user's training length: build the settings with EvalSettings::with_split",
                        ));
                    }
                })
            }
        };
        runs.push(ProtocolRun {
            negatives,
            acc: MetricAccumulator::new(s.cutoffs.clone()),
            cat: (p == Protocol::Full).then(|| CatalogueAccumulator::new(width, s.cutoffs.clone())),
        });
    }
    let kmax = s.cutoffs.max();
    // Models that read per-event context (time gaps, positions) get it built for their config.
    let context = model.context();
    let window = model.max_history().max(1);
    // Cases go to the model longest history first, so that the rows of a batch have similar lengths
    // and a window model skips the slots that are padding in all of them (`Model::score_serving`).
    // `order[i]` is the index in `cases` of the i-th case scored; metrics do not depend on the order
    // (accumulators sort by user, catalogue counts are sums).
    let mut order: Vec<usize> = (0..cases.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((cases[i].input_len as usize).min(window)));
    let sorted: Vec<EvalCase> = order.iter().map(|&i| cases[i]).collect();
    let mut batcher = EvalBatcher::new(ds, &sorted, s.batch_size, window, context)?;
    let mut scores = vec![0f32; s.batch_size * width];
    while let Some(b) = batcher.next_batch() {
        let rows = b.rows;
        let l = b.maxlen;
        let scores = &mut scores[..rows * width];
        if context.is_some() {
            let ctx = seqrec_models::HistoryContext {
                time_buckets: &b.time_buckets[..rows * l],
                positions: &b.positions[..rows * l],
            };
            model.score_with_context(&b.inputs[..rows * l], ctx, rows, scores);
        } else {
            model.score_serving(&b.inputs[..rows * l], rows, scores);
        }
        for run in &mut runs {
            let want_top = run.cat.is_some();
            let negatives = &run.negatives;
            let per_row: Vec<Result<(usize, Vec<u32>), TrainError>> = scores
                .par_chunks(width)
                .enumerate()
                .map(|(r, row)| {
                    let ci = order[b.case_index[r]];
                    let target = b.targets[r];
                    let mut hist: Vec<Id> = if s.exclude_history {
                        cases[ci].input_items(ds).to_vec()
                    } else {
                        Vec::new()
                    };
                    hist.sort_unstable();
                    hist.dedup();
                    let exclude = Exclude::Sorted(&hist);
                    let rank = match negatives {
                        None => rank_full(row, target, exclude, NanPolicy::Error)?,
                        Some(neg) => rank_sampled(row, target, neg.of_case(ci), NanPolicy::Error)?,
                    };
                    let top = if want_top {
                        let mut t = TopK::new(kmax);
                        t.select(row, exclude)?;
                        t.ids().to_vec()
                    } else {
                        Vec::new()
                    };
                    Ok((rank, top))
                })
                .collect();
            for (r, res) in per_row.into_iter().enumerate() {
                let (rank, top) = res?;
                run.acc.add(b.users[r], rank);
                if let Some(c) = run.cat.as_mut() {
                    c.add(&top)?;
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    runs.into_iter()
        .map(|run| {
            Ok(EvalOutcome {
                metrics: run.acc.finish()?,
                catalogue: match run.cat {
                    Some(c) => Some(c.finish(popularity)?),
                    None => None,
                },
                seconds,
            })
        })
        .collect()
}

/// A text table of the model next to MostPop: one row per metric, one column per model.
pub fn format_table(title: &str, columns: &[(&str, &EvalOutcome)]) -> String {
    let mut out = format!("{title}\n{:<14}", "metric");
    for (name, _) in columns {
        out.push_str(&format!("{name:>12}"));
    }
    out.push('\n');
    let Some((_, first)) = columns.first() else {
        return out;
    };
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    for a in &first.metrics.at_k {
        for m in [
            Metric::Hr(a.k),
            Metric::Ndcg(a.k),
            Metric::MrrAt(a.k),
            Metric::Precision(a.k),
            Metric::Map(a.k),
        ] {
            rows.push((m.name(), columns.iter().map(|(_, o)| o.value(m)).collect()));
        }
    }
    rows.push((
        "MRR".into(),
        columns.iter().map(|(_, o)| o.metrics.mrr).collect(),
    ));
    if let Some(c) = &first.catalogue {
        for (i, a) in c.at_k.iter().enumerate() {
            let get = |f: fn(&seqrec_metrics::CatalogueAtK) -> f64| -> Vec<f64> {
                columns
                    .iter()
                    .map(|(_, o)| {
                        o.catalogue
                            .as_ref()
                            .and_then(|c| c.at_k.get(i))
                            .map_or(f64::NAN, f)
                    })
                    .collect()
            };
            rows.push((format!("Coverage@{}", a.k), get(|x| x.coverage)));
            rows.push((format!("AvgPop@{}", a.k), get(|x| x.avg_popularity)));
            rows.push((format!("Gini@{}", a.k), get(|x| x.gini)));
        }
    }
    if columns.iter().any(|(n, _)| *n == "MostPop") {
        rows.push((String::new(), Vec::new()));
    }
    for (name, vals) in rows {
        if name.is_empty() {
            out.push_str(
                "MostPop: item popularity over all events before the targets (training, plus validation for test)\n",
            );
            continue;
        }
        out.push_str(&format!("{name:<14}"));
        for v in vals {
            if v.abs() >= 100.0 {
                out.push_str(&format!("{v:>12.1}"));
            } else {
                out.push_str(&format!("{v:>12.6}"));
            }
        }
        out.push('\n');
    }
    out
}
