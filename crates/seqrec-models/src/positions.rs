//! [`Positions`]: where the learned positions of a left-padded window are counted from.

use seqrec_nn::PositionMask;
use serde::{Deserialize, Serialize};

/// Which row of the position table an item of a left-padded window `[0, .., 0, i1, .., in]` gets.
///
/// The two reference implementations differ here: SASRec's code pads on the left and numbers the
/// slots, so the most recent item is always position `maxlen - 1`; Klenitskiy & Vasilev's SASRec and
/// BERT4Rec (RecSys 2023) pad on the right, so the oldest item of the window is position 0 and a short
/// history's last item sits at its length. Attention masks make the layout itself irrelevant; only
/// these indices differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// The slot of the padded window (SASRec's code): the last item is position `maxlen - 1`.
    #[default]
    Slot,
    /// The item's index within the window (right padding): the oldest item is position 0.
    FirstItem,
}

impl Positions {
    /// The mask that makes [`seqrec_nn::PositionalEmbedding`] index this way, skipping padding (id 0).
    pub fn mask(self, ids: &[u32]) -> PositionMask<'_> {
        match self {
            Positions::Slot => PositionMask::SkipPadding(ids),
            Positions::FirstItem => PositionMask::FromFirstItem(ids),
        }
    }
}
