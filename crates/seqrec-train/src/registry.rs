//! The model registry: [`ModelConfig`], one variant per model, tagged `model = "<name>"` in TOML.
//!
//! Adding a model is one entry in the `registry!` invocation below: its name, its config type (serde +
//! `Default` + `validate`) and how to build it from the training sequences and the seed.

use seqrec_data::Sequences;
use seqrec_models::{
    Bert4rec, Bert4recConfig, Ease, EaseConfig, Gru4rec, Gru4recConfig, GsasrecConfig, LstmAttn,
    LstmAttnConfig, Model, ModelError, MostPop, Sasrec, SasrecConfig,
};
use serde::{Deserialize, Serialize};

/// Configuration of [`MostPop`]: it has no hyper-parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MostPopConfig {}

impl MostPopConfig {
    /// Always valid.
    pub fn validate(&self) -> Result<(), ModelError> {
        Ok(())
    }
}

macro_rules! registry {
    ($( $(#[$doc:meta])* $name:literal => $variant:ident($cfg:ty) = |$c:ident, $t:ident, $s:ident| $build:expr; )+) => {
        /// Which model to train, with its hyper-parameters (`[model]` table, `model = "<name>"`).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "model")]
        pub enum ModelConfig {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($cfg), )+
        }

        impl ModelConfig {
            /// The registered model names.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The model's name (the TOML tag).
            pub fn name(&self) -> &'static str {
                match self { $( ModelConfig::$variant(_) => $name, )+ }
            }

            /// The default config of the model called `name`.
            pub fn default_for(name: &str) -> Option<Self> {
                match name { $( $name => Some(ModelConfig::$variant(<$cfg>::default())), )+ _ => None }
            }

            /// Checks the hyper-parameters.
            pub fn validate(&self) -> Result<(), ModelError> {
                match self { $( ModelConfig::$variant(c) => c.validate(), )+ }
            }

            /// Builds the model for the catalogue of `train`, seeded with `seed`.
            pub fn build(&self, train: &Sequences<'_>, seed: u64) -> Result<Box<dyn Model>, ModelError> {
                match self {
                    $( ModelConfig::$variant($c) => { let ($t, $s) = (train, seed); let _ = (&$c, &$t, &$s); $build } )+
                }
            }
        }
    };
}

// To add a model, add its entry here: its name, its config type and how to build it.
registry! {
    /// The popularity baseline.
    "mostpop" => MostPop(MostPopConfig) = |_c, t, _s| Ok(Box::new(MostPop::new(t)));
    /// SASRec (Kang & McAuley 2018), BCE with one negative or full softmax cross-entropy ("SASRec+").
    "sasrec" => Sasrec(SasrecConfig) = |c, t, s| Ok(Box::new(Sasrec::new(c.clone(), t, s)?));
    /// gSASRec (Petrov & Macdonald 2023): SASRec trained with gBCE over 256 negatives per position,
    /// with the official repository's ML-1M settings. The same network as `sasrec` (whose `loss` can
    /// also be set to `"gbce"` or `"sampled_softmax"`); only the defaults differ.
    "gsasrec" => Gsasrec(GsasrecConfig) = |c, t, s| Ok(Box::new(Sasrec::new(c.to_sasrec(), t, s)?));
    /// BERT4Rec (Sun et al. 2019): bidirectional self-attention trained by masked-item prediction,
    /// with Klenitskiy & Vasilev's ML-1M settings.
    "bert4rec" => Bert4rec(Bert4recConfig) = |c, t, s| Ok(Box::new(Bert4rec::new(c.clone(), t, s)?));
    /// GRU4Rec (Hidasi et al. 2016), full or sampled softmax cross-entropy.
    "gru4rec" => Gru4rec(Gru4recConfig) = |c, t, s| Ok(Box::new(Gru4rec::new(c.clone(), t, s)?));
    /// LSTM encoder + causal attention pooling + MLP head, with optional time/position context fusion.
    "lstm_attn" => LstmAttn(LstmAttnConfig) = |c, t, s| Ok(Box::new(LstmAttn::new(c.clone(), t, s)?));
    /// EASE (Steck 2019), the closed-form item-item baseline (stops itself after its one epoch).
    "ease" => Ease(EaseConfig) = |c, t, _s| Ok(Box::new(Ease::new(c.clone(), t)?));
}

/// The main job of `cargo xtask train` with no `--model`: SASRec with full softmax cross-entropy and
/// Klenitskiy & Vasilev's ML-1M settings (`d = 64`, dropout 0.1; `configs/sasrec-ce-ml1m.toml`), the
/// strongest SASRec variant under full ranking. `--model sasrec` gives the SASRec paper's own
/// defaults (BCE with one negative, `d = 50`, dropout 0.2).
impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Sasrec(SasrecConfig {
            loss: seqrec_models::SasrecLoss::Ce,
            hidden: 64,
            dropout: 0.1,
            ..SasrecConfig::default()
        })
    }
}
