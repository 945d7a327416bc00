//! seqrec-nn: layers, losses and optimizers, each with a forward and a hand-written backward pass.
//!
//! No autograd: like llm.c, every backward is written out next to its forward and checked against central
//! finite differences in `f64` ([`gradcheck`]). Principal types: [`Param`] (a named value with its gradient),
//! the [`Module`] trait (visit parameters in a stable order), [`Linear`], [`LayerNorm`], [`Embedding`],
//! [`PositionalEmbedding`], [`Dropout`], [`FeedForward`], [`MultiheadAttention`] (causal or bidirectional,
//! key padding, attention weights for explanations), [`TransformerBlock`]/[`TransformerEncoder`] (post-LN,
//! pre-LN and SASRec's placement), [`Gru`] and [`Lstm`] (multi-layer, padding masks, full BPTT, a step API
//! for serving), [`AttentionPooling`], and [`init::Rng`] (seeded initialisation matching PyTorch's
//! defaults). Parameter names and layouts are PyTorch's. Training pieces: fused losses that return the mean loss and write `dlogits` in one pass
//! ([`loss`]), optimizers matching `torch.optim` ([`optim`]), gradient clipping ([`clip`]), learning-rate
//! schedules ([`schedule`]) and safetensors checkpoints exchangeable with PyTorch ([`checkpoint`]).
//! Errors from user input or files are [`NnError`].
//!
//! Conventions (see `docs/ARCHITECTURE.md`):
//! - Parameter gradients accumulate (`+=`); activation gradients are assigned (`=`). Call
//!   [`Module::zero_grad`] once per step.
//! - Parameters use PyTorch's names and layouts (`weight` is `[out, in]` for a linear layer), so weights can
//!   be exchanged with PyTorch through safetensors.
//! - Callers own activation buffers and pass them in, so a training step allocates nothing.
//!
//! ```
//! use seqrec_nn::{init::Rng, Linear, Module};
//! use seqrec_tensor::Tensor;
//!
//! let mut rng = Rng::new(0);
//! let mut fc = Linear::<f32>::new("fc", 3, 2, true, &mut rng);
//! let x = Tensor::from_vec(&[4, 3], vec![0.5; 12]).unwrap();
//! let mut y = Tensor::zeros(&[4, 2]);
//! fc.forward(&mut y, &x);
//! let dy = Tensor::full(&[4, 2], 1.0);
//! let mut dx = Tensor::zeros(&[4, 3]);
//! fc.zero_grad();
//! fc.backward(Some(&mut dx), &dy, &x);
//! // d(sum y)/d bias = number of rows.
//! assert_eq!(fc.bias.as_ref().unwrap().grad.as_slice(), &[4.0, 4.0]);
//! assert_eq!(fc.num_params(), 3 * 2 + 2);
//! ```
#![deny(missing_docs)]

mod attention;
pub mod checkpoint;
pub mod clip;
mod dropout;
mod embedding;
mod error;
mod feedforward;
pub mod gradcheck;
mod gru;
pub mod init;
mod layernorm;
mod linear;
pub mod loss;
mod lstm;
pub mod optim;
mod param;
mod pooling;
mod positional;
mod rnn_common;
pub mod schedule;
mod transformer;

pub use attention::{
    AttentionMask, AttnConfigError, MhaCache, MhaConfig, MultiheadAttention, Phase,
};
pub use dropout::{Dropout, DropoutCache};
pub use embedding::Embedding;
pub use error::NnError;
pub use feedforward::{Activation, FeedForward, FeedForwardCache, FeedForwardConfig};
pub use gru::Gru;
pub use layernorm::{LayerNorm, LayerNormCache};
pub use linear::Linear;
pub use lstm::Lstm;
pub use param::{Module, Param};
pub use pooling::{AttentionPooling, AttentionPoolingCache, AttentionPoolingConfig};
pub use positional::{PositionMask, PositionalEmbedding};
pub use rnn_common::{RnnCache, RnnConfig, RnnConfigError, RnnLayer, RnnState};
pub use seqrec_tensor::Padding;
pub use transformer::{
    NormPlacement, TransformerBlock, TransformerBlockCache, TransformerBlockConfig,
    TransformerEncoder, TransformerEncoderCache,
};
