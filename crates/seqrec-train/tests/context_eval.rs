//! Evaluation hands per-event context (time-gap buckets, positions) to models that ask for it
//! through `Model::context`, and only to them.

use std::path::Path;

use seqrec_data::{ContextConfig, Dataset, PositionFrom, Sequences, Split, Vocab};
use seqrec_metrics::Cutoffs;
use seqrec_models::{EpochReport, HistoryContext, Model, ModelError, StepReport};
use seqrec_train::run::eval_settings;
use seqrec_train::{EvalSettings, Protocol, TrainConfig, evaluate};

/// A model that records what evaluation passes it (its scores are all equal).
struct Probe {
    context: Option<ContextConfig>,
    maxlen: usize,
    n_items: usize,
    /// `(histories, time_buckets, positions)` of each scoring call; empty context for `score`.
    calls: Vec<(Vec<u32>, Vec<u32>, Vec<u32>)>,
}

impl Model for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn n_items(&self) -> usize {
        self.n_items
    }
    fn max_history(&self) -> usize {
        self.maxlen
    }
    fn context(&self) -> Option<ContextConfig> {
        self.context
    }
    fn train_epoch(
        &mut self,
        _: &Sequences<'_>,
        _: usize,
        _: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        unreachable!("not trained")
    }
    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        assert!(
            self.context.is_none(),
            "a context model must get its context"
        );
        self.calls
            .push((histories.to_vec(), Vec::new(), Vec::new()));
        scores[..batch * (self.n_items + 1)].fill(0.0);
    }
    fn score_with_context(
        &mut self,
        histories: &[u32],
        context: HistoryContext<'_>,
        batch: usize,
        scores: &mut [f32],
    ) {
        self.calls.push((
            histories.to_vec(),
            context.time_buckets.to_vec(),
            context.positions.to_vec(),
        ));
        scores[..batch * (self.n_items + 1)].fill(0.0);
    }
    fn save(&self, _: &Path) -> Result<(), ModelError> {
        Ok(())
    }
    fn load(&mut self, _: &Path) -> Result<(), ModelError> {
        Ok(())
    }
}

#[test]
fn evaluation_passes_context_to_models_that_ask_for_it() {
    let users = Vocab::from_originals(vec!["a".into(), "b".into()]).unwrap();
    let items = Vocab::from_originals((1..=6).map(|i| i.to_string()).collect()).unwrap();
    // User a: gaps 5 s, 0 s, 100 s, 1 s; user b: 3 events.
    let ds = Dataset::from_sequences(
        users,
        items,
        vec![
            (vec![1, 2, 3, 4, 5], vec![10, 15, 15, 115, 116]),
            (vec![6, 1, 2], vec![0, 1, 3]),
        ],
    )
    .unwrap();
    let split = Split::leave_one_out(&ds);
    // The config's defaults: full ranking, history excluded.
    let settings = EvalSettings {
        cutoffs: Cutoffs::new(vec![1]).unwrap(),
        batch_size: 8,
        ..eval_settings(&TrainConfig::default()).unwrap()
    };
    assert_eq!(settings.protocol, Protocol::Full);
    let popularity = vec![1u32; 7];
    let ctx = ContextConfig::new(24, PositionFrom::Start, 512).unwrap();
    let mut probe = Probe {
        context: Some(ctx),
        maxlen: 4,
        n_items: 6,
        calls: Vec::new(),
    };
    evaluate(&mut probe, &ds, split.test(), &popularity, &settings).unwrap();
    assert_eq!(probe.calls.len(), 1);
    let (hist, buckets, positions) = &probe.calls[0];
    // Test inputs: a = [1, 2, 3, 4] (all but the last), b = [6, 1] right-aligned in 4 columns.
    assert_eq!(hist, &[1, 2, 3, 4, 0, 0, 6, 1]);
    // Buckets: first event 1, then 2 + floor(log2(gap + 1)): 5 s -> 4, 0 s -> 2, 100 s -> 8; b: 1, 1 s -> 3.
    assert_eq!(buckets, &[1, 4, 2, 8, 0, 0, 1, 3]);
    // Positions from the start of each sequence.
    assert_eq!(positions, &[1, 2, 3, 4, 0, 0, 1, 2]);

    // A model without context is scored by `score` (the probe panics otherwise).
    let mut plain = Probe {
        context: None,
        maxlen: 4,
        n_items: 6,
        calls: Vec::new(),
    };
    evaluate(&mut plain, &ds, split.test(), &popularity, &settings).unwrap();
    assert_eq!(plain.calls.len(), 1);
    assert!(plain.calls[0].1.is_empty());
}
