//! [`MostPop`]: recommend the items most often seen in training, whatever the history.

use std::path::Path;

use seqrec_data::Sequences;

use crate::epoch::single_pass;
use crate::model::{EpochReport, Model, ModelError, StepReport};
use crate::persist::{ckpt_err, write_atomic};

/// The checkpoint file: the item counts as a JSON array (index 0 is padding).
const FILE: &str = "mostpop.json";

/// The popularity baseline: the score of an item is its training count.
///
/// It is the floor every model must beat; ties between equally popular items count against it in
/// evaluation like for any model.
#[derive(Clone, Debug)]
pub struct MostPop {
    counts: Vec<f32>,
}

impl MostPop {
    /// A model for the catalogue of `train` (counts are filled by [`Model::train_epoch`]).
    pub fn new(train: &Sequences<'_>) -> Self {
        Self {
            counts: vec![0.0; train.n_items() + 1],
        }
    }
}

impl Model for MostPop {
    fn name(&self) -> &'static str {
        "mostpop"
    }

    fn n_items(&self) -> usize {
        self.counts.len() - 1
    }

    fn max_history(&self) -> usize {
        1
    }

    fn train_epoch(
        &mut self,
        train: &Sequences<'_>,
        _epoch: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        self.counts.iter_mut().for_each(|c| *c = 0.0);
        for k in 0..train.len() {
            for &i in train.items(k) {
                self.counts[i as usize] += 1.0;
            }
        }
        Ok(single_pass(train.len(), on_step))
    }

    fn score(&mut self, _histories: &[u32], batch: usize, scores: &mut [f32]) {
        let n = self.counts.len();
        assert_eq!(
            scores.len(),
            batch * n,
            "MostPop::score: scores must be [batch, n_items + 1]"
        );
        for row in scores.chunks_exact_mut(n) {
            row.copy_from_slice(&self.counts);
        }
    }

    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ckpt_err(dir, e))?;
        let path = dir.join(FILE);
        let text = serde_json::to_vec(&self.counts).map_err(|e| ckpt_err(&path, e))?;
        write_atomic(&path, &text)
    }

    fn load(&mut self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join(FILE);
        let text = std::fs::read(&path).map_err(|e| ckpt_err(&path, e))?;
        let counts: Vec<f32> = serde_json::from_slice(&text).map_err(|e| ckpt_err(&path, e))?;
        if counts.len() != self.counts.len() {
            return Err(ckpt_err(
                &path,
                format!(
                    "{} item counts, but the model has {} items",
                    counts.len().saturating_sub(1),
                    self.n_items()
                ),
            ));
        }
        self.counts = counts;
        Ok(())
    }
}
