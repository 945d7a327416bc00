//! The bookkeeping every model's `train_epoch` shares: the key of each optimiser step (dropout masks
//! and sampling are drawn from it, so a resumed run draws what an uninterrupted one did), one
//! [`StepReport`] per step, and the epoch's totals.

use crate::model::{EpochReport, StepReport};

/// The key of step `step` of epoch `epoch`: `epoch` in the high 32 bits, `step` in the low ones.
pub(crate) fn step_key(epoch: usize, step: usize) -> u64 {
    ((epoch as u64) << 32) | step as u64
}

/// Running totals of one epoch of `steps` optimiser steps, reporting each step as it is recorded.
pub(crate) struct EpochTally<'a> {
    steps: usize,
    done: usize,
    loss_sum: f64,
    sequences: usize,
    on_step: &'a mut dyn FnMut(&StepReport),
}

impl<'a> EpochTally<'a> {
    /// An epoch expected to take `steps` steps (for progress reports; the count recorded wins).
    pub fn new(steps: usize, on_step: &'a mut dyn FnMut(&StepReport)) -> Self {
        Self {
            steps,
            done: 0,
            loss_sum: 0.0,
            sequences: 0,
            on_step,
        }
    }

    /// Index of the step about to run.
    pub fn step(&self) -> usize {
        self.done
    }

    /// Records the step about to run: its mean `loss` over `sequences` rows (or sessions).
    pub fn record(&mut self, loss: f64, sequences: usize) {
        (self.on_step)(&StepReport {
            step: self.done,
            steps: self.steps,
            loss,
            sequences,
        });
        self.loss_sum += loss;
        self.sequences += sequences;
        self.done += 1;
    }

    /// The epoch's summary: the mean loss over the recorded steps (0 without any).
    pub fn finish(self) -> EpochReport {
        EpochReport {
            loss: self.loss_sum / self.done.max(1) as f64,
            steps: self.done,
            sequences: self.sequences,
        }
    }
}

/// The report of a model fitted in one pass with no loss to follow (MostPop, EASE): a single step
/// over all `sequences`, loss 0.
pub(crate) fn single_pass(sequences: usize, on_step: &mut dyn FnMut(&StepReport)) -> EpochReport {
    let mut tally = EpochTally::new(1, on_step);
    tally.record(0.0, sequences);
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_reports_each_step_and_averages_the_loss() {
        let mut seen = Vec::new();
        let mut on_step = |r: &StepReport| seen.push(*r);
        let mut tally = EpochTally::new(3, &mut on_step);
        tally.record(2.0, 128);
        assert_eq!(tally.step(), 1);
        tally.record(1.0, 100);
        let report = tally.finish();
        assert_eq!(
            report,
            EpochReport {
                loss: 1.5,
                steps: 2,
                sequences: 228
            }
        );
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[1].step, seen[1].steps, seen[1].loss), (1, 3, 1.0));
    }

    #[test]
    fn empty_epoch_has_zero_loss_and_single_pass_one_step() {
        let mut none = |_: &StepReport| {};
        let report = EpochTally::new(0, &mut none).finish();
        assert_eq!((report.loss, report.steps, report.sequences), (0.0, 0, 0));
        let report = single_pass(6040, &mut none);
        assert_eq!(
            (report.loss, report.steps, report.sequences),
            (0.0, 1, 6040)
        );
    }

    #[test]
    fn step_keys_differ_across_epochs_and_steps() {
        assert_eq!(step_key(0, 5), 5);
        assert_eq!(step_key(1, 0), 1 << 32);
        assert_ne!(step_key(1, 2), step_key(2, 1));
    }
}
