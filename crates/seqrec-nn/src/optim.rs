//! Optimizers over any [`Module`]: [`Sgd`] (momentum, Nesterov), [`Adagrad`], [`Adam`] (L2 or decoupled
//! weight decay = AdamW), each matching `torch.optim`'s update rule exactly (same bias correction, same
//! `eps` placement), and [`WeightDecay`] to choose the decay per parameter by name.
//!
//! An optimizer's state is one [`Slot`] per parameter in the module's visiting order, created on the
//! first [`Optimizer::step`] and checked by name and shape on every later step, so stepping a different
//! module is an [`NnError::OptimizerMismatch`], not silent corruption. A step is one loop over
//! [`Module::visit_params_mut`]; it allocates nothing after the first.
//!
//! ```
//! use seqrec_nn::optim::{Adam, AdamConfig, Optimizer};
//! use seqrec_nn::{init::Rng, Linear, Module};
//!
//! let mut fc = Linear::<f32>::new("fc", 2, 1, false, &mut Rng::new(0));
//! let before = fc.weight.value.as_slice()[0];
//! fc.weight.grad.as_mut_slice().copy_from_slice(&[1.0, -1.0]);
//! let mut adam = Adam::new(AdamConfig::adam(0.1)).unwrap();
//! adam.step(&mut fc).unwrap();
//! // Adam's first step moves every weight by lr * sign(grad) (up to eps).
//! assert!((fc.weight.value.as_slice()[0] - (before - 0.1)).abs() < 1e-6);
//! ```

use std::fmt;
use std::sync::Arc;

use seqrec_tensor::Float;

use crate::error::NnError;
use crate::param::{Module, Param};

/// A name predicate for [`WeightDecay`] rules.
pub type NamePredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Per-parameter weight decay: the first rule whose predicate matches the parameter's name gives its
/// coefficient, otherwise `default`. Use it for L2 on embeddings only (SASRec-style
/// `l2_emb`), or to exclude biases and layer norms from AdamW's decay.
#[derive(Clone)]
pub struct WeightDecay {
    default: f64,
    rules: Vec<(NamePredicate, f64)>,
}

impl fmt::Debug for WeightDecay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightDecay")
            .field("default", &self.default)
            .field("rules", &self.rules.iter().map(|r| r.1).collect::<Vec<_>>())
            .finish()
    }
}

impl WeightDecay {
    /// No decay anywhere.
    pub fn none() -> Self {
        Self::all(0.0)
    }

    /// The same decay for every parameter.
    pub fn all(coefficient: f64) -> Self {
        Self {
            default: coefficient,
            rules: Vec::new(),
        }
    }

    /// Adds a rule: parameters whose name satisfies `predicate` (and no earlier rule) get `coefficient`.
    pub fn with_rule(
        mut self,
        predicate: impl Fn(&str) -> bool + Send + Sync + 'static,
        coefficient: f64,
    ) -> Self {
        self.rules.push((Arc::new(predicate), coefficient));
        self
    }

    /// Decay `coefficient` only on parameters whose name contains `fragment` (e.g. `"item_emb"`).
    pub fn only_containing(fragment: &str, coefficient: f64) -> Self {
        let fragment = fragment.to_owned();
        Self::none().with_rule(move |name| name.contains(&fragment), coefficient)
    }

    /// The coefficient for a parameter named `name`.
    pub fn for_param(&self, name: &str) -> f64 {
        self.rules
            .iter()
            .find(|(p, _)| p(name))
            .map_or(self.default, |r| r.1)
    }

    fn validate(&self) -> Result<(), NnError> {
        let all = std::iter::once(self.default).chain(self.rules.iter().map(|r| r.1));
        for wd in all {
            if !(wd.is_finite() && wd >= 0.0) {
                return Err(NnError::config(
                    "weight_decay",
                    wd,
                    "must be finite and >= 0",
                ));
            }
        }
        Ok(())
    }
}

/// Optimizer state for one parameter: its name and shape (to check the module), its weight decay, and
/// up to two moment buffers of the parameter's shape.
#[derive(Clone, Debug)]
pub struct Slot<T> {
    /// Parameter name.
    pub name: String,
    /// Parameter shape.
    pub shape: Vec<usize>,
    /// Weight decay chosen for it.
    pub weight_decay: f64,
    /// First buffer (momentum, Adam's `exp_avg`, Adagrad's `sum`), empty if unused.
    pub m: Vec<T>,
    /// Second buffer (Adam's `exp_avg_sq`), empty if unused.
    pub v: Vec<T>,
}

/// Common interface of the optimizers.
pub trait Optimizer<T: Float> {
    /// Applies one update to every parameter of `module` from its accumulated gradients (which it
    /// leaves untouched: call [`Module::zero_grad`] afterwards).
    ///
    /// # Errors
    /// [`NnError::OptimizerMismatch`] if `module` is not the module of the first step.
    fn step(&mut self, module: &mut dyn Module<T>) -> Result<(), NnError>;
    /// Current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (schedules call this before each step).
    fn set_lr(&mut self, lr: f64);
    /// Number of steps taken.
    fn steps(&self) -> u64;
}

/// Creates the slots on the first step, checks them on later ones, then calls `update` for every
/// (parameter, slot) pair in visiting order.
fn for_each_slot<T: Float>(
    slots: &mut Vec<Slot<T>>,
    decay: &WeightDecay,
    buffers: (bool, bool),
    module: &mut dyn Module<T>,
    mut update: impl FnMut(&mut Param<T>, &mut Slot<T>),
) -> Result<(), NnError> {
    if slots.is_empty() {
        module.visit_params(&mut |p| {
            let n = p.value.numel();
            slots.push(Slot {
                name: p.name.clone(),
                shape: p.value.shape().to_vec(),
                weight_decay: decay.for_param(&p.name),
                m: if buffers.0 {
                    vec![T::ZERO; n]
                } else {
                    Vec::new()
                },
                v: if buffers.1 {
                    vec![T::ZERO; n]
                } else {
                    Vec::new()
                },
            })
        });
    }
    let mut mismatch = None;
    let mut i = 0;
    module.visit_params(&mut |p| {
        if mismatch.is_none() {
            match slots.get(i) {
                Some(s) if s.name == p.name && s.shape == p.value.shape() => {}
                other => {
                    mismatch = Some(NnError::OptimizerMismatch {
                        index: i,
                        expected: other.map_or("<none>".into(), |s| s.name.clone()),
                        expected_shape: other.map_or(Vec::new(), |s| s.shape.clone()),
                        found: p.name.clone(),
                        found_shape: p.value.shape().to_vec(),
                    })
                }
            }
        }
        i += 1;
    });
    if let Some(e) = mismatch {
        return Err(e);
    }
    if i != slots.len() {
        return Err(NnError::OptimizerMismatch {
            index: i,
            expected: slots[i].name.clone(),
            expected_shape: slots[i].shape.clone(),
            found: "<none>".into(),
            found_shape: Vec::new(),
        });
    }
    let mut i = 0;
    module.visit_params_mut(&mut |p| {
        update(p, &mut slots[i]);
        i += 1;
    });
    Ok(())
}

fn check_lr(lr: f64) -> Result<(), NnError> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(NnError::config("lr", lr, "must be finite and >= 0"))
    }
}

/// Settings of [`Sgd`] (`torch.optim.SGD`).
#[derive(Clone, Debug)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 disables the buffer).
    pub momentum: f64,
    /// Dampening of the momentum's new gradient term.
    pub dampening: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`).
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: WeightDecay,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr` and `momentum`.
    pub fn new(lr: f64, momentum: f64) -> Self {
        Self {
            lr,
            momentum,
            dampening: 0.0,
            nesterov: false,
            weight_decay: WeightDecay::none(),
        }
    }
}

/// Stochastic gradient descent, `torch.optim.SGD`:
/// `g = grad + wd p`; `buf = g` on the first step, else `buf = μ buf + (1 - dampening) g`;
/// `g = g + μ buf` (Nesterov) or `g = buf`; `p -= lr g`.
#[derive(Clone, Debug)]
pub struct Sgd<T> {
    config: SgdConfig,
    slots: Vec<Slot<T>>,
    steps: u64,
}

impl<T: Float> Sgd<T> {
    /// An optimizer with `config`.
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] for a negative or non-finite rate, momentum or decay, or Nesterov
    /// without momentum or with dampening.
    pub fn new(config: SgdConfig) -> Result<Self, NnError> {
        check_lr(config.lr)?;
        if !(config.momentum.is_finite() && config.momentum >= 0.0) {
            return Err(NnError::config(
                "Sgd.momentum",
                config.momentum,
                "must be finite and >= 0",
            ));
        }
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(NnError::config(
                "Sgd.nesterov",
                true,
                format!(
                    "needs momentum > 0 and dampening = 0 (momentum = {}, dampening = {})",
                    config.momentum, config.dampening
                ),
            ));
        }
        config.weight_decay.validate()?;
        Ok(Self {
            config,
            slots: Vec::new(),
            steps: 0,
        })
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    fn step(&mut self, module: &mut dyn Module<T>) -> Result<(), NnError> {
        let c = &self.config;
        let first = self.steps == 0;
        let (lr, mu, damp) = (c.lr, c.momentum, c.dampening);
        let use_buf = mu != 0.0;
        for_each_slot(
            &mut self.slots,
            &c.weight_decay,
            (use_buf, false),
            module,
            |p, s| {
                let wd = s.weight_decay;
                let values = p.value.as_mut_slice();
                for (j, (w, &g)) in values.iter_mut().zip(p.grad.as_slice()).enumerate() {
                    let mut g = g.to_f64() + wd * w.to_f64();
                    if use_buf {
                        let b = if first {
                            g
                        } else {
                            mu * s.m[j].to_f64() + (1.0 - damp) * g
                        };
                        s.m[j] = T::from_f64(b);
                        g = if c.nesterov { g + mu * b } else { b };
                    }
                    *w = T::from_f64(w.to_f64() - lr * g);
                }
            },
        )?;
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.steps
    }
}

/// Settings of [`Adagrad`] (`torch.optim.Adagrad`).
#[derive(Clone, Debug)]
pub struct AdagradConfig {
    /// Learning rate.
    pub lr: f64,
    /// Learning-rate decay: step `t` (1-based) uses `lr / (1 + (t - 1) lr_decay)`.
    pub lr_decay: f64,
    /// Initial value of the squared-gradient sum.
    pub initial_accumulator_value: f64,
    /// Added to the square root of the sum (PyTorch default `1e-10`).
    pub eps: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: WeightDecay,
}

impl AdagradConfig {
    /// PyTorch's defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            lr_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            weight_decay: WeightDecay::none(),
        }
    }
}

/// Adagrad, `torch.optim.Adagrad`: `g = grad + wd p`; `sum += g²`; `p -= clr g / (sqrt(sum) + eps)`.
#[derive(Clone, Debug)]
pub struct Adagrad<T> {
    config: AdagradConfig,
    slots: Vec<Slot<T>>,
    steps: u64,
}

impl<T: Float> Adagrad<T> {
    /// An optimizer with `config`.
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] for a negative or non-finite rate, decay, accumulator or eps.
    pub fn new(config: AdagradConfig) -> Result<Self, NnError> {
        check_lr(config.lr)?;
        for (field, v) in [
            ("Adagrad.lr_decay", config.lr_decay),
            (
                "Adagrad.initial_accumulator_value",
                config.initial_accumulator_value,
            ),
            ("Adagrad.eps", config.eps),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(NnError::config(field, v, "must be finite and >= 0"));
            }
        }
        config.weight_decay.validate()?;
        Ok(Self {
            config,
            slots: Vec::new(),
            steps: 0,
        })
    }
}

impl<T: Float> Optimizer<T> for Adagrad<T> {
    fn step(&mut self, module: &mut dyn Module<T>) -> Result<(), NnError> {
        let c = &self.config;
        let first = self.slots.is_empty();
        let clr = c.lr / (1.0 + self.steps as f64 * c.lr_decay);
        let init = T::from_f64(c.initial_accumulator_value);
        for_each_slot(
            &mut self.slots,
            &c.weight_decay,
            (true, false),
            module,
            |p, s| {
                if first {
                    s.m.fill(init);
                }
                let wd = s.weight_decay;
                for (j, (w, &g)) in p
                    .value
                    .as_mut_slice()
                    .iter_mut()
                    .zip(p.grad.as_slice())
                    .enumerate()
                {
                    let g = g.to_f64() + wd * w.to_f64();
                    let sum = s.m[j].to_f64() + g * g;
                    s.m[j] = T::from_f64(sum);
                    *w = T::from_f64(w.to_f64() - clr * g / (s.m[j].to_f64().sqrt() + c.eps));
                }
            },
        )?;
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.steps
    }
}

/// How [`Adam`] applies weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecayMode {
    /// `torch.optim.Adam`: `g = grad + wd p` before the moments (L2 regularisation).
    L2,
    /// `torch.optim.AdamW`: `p *= 1 - lr wd` before the Adam update (Loshchilov & Hutter 2019).
    Decoupled,
}

/// Settings of [`Adam`].
#[derive(Clone, Debug)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// `(β1, β2)`.
    pub betas: (f64, f64),
    /// Added to `sqrt(v̂)` (outside the square root, as PyTorch).
    pub eps: f64,
    /// Per-parameter decay coefficients.
    pub weight_decay: WeightDecay,
    /// L2 (Adam) or decoupled (AdamW).
    pub mode: DecayMode,
}

impl AdamConfig {
    /// `torch.optim.Adam` defaults: betas (0.9, 0.999), eps 1e-8, no decay.
    pub fn adam(lr: f64) -> Self {
        Self {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: WeightDecay::none(),
            mode: DecayMode::L2,
        }
    }

    /// `torch.optim.AdamW` with decay `weight_decay` on every parameter (PyTorch's default is 0.01).
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self {
            weight_decay: WeightDecay::all(weight_decay),
            mode: DecayMode::Decoupled,
            ..Self::adam(lr)
        }
    }
}

/// Adam / AdamW exactly as `torch.optim` (single-tensor path, `amsgrad = False`), step `t` from 1:
/// ```text
/// L2:        g = grad + wd p            Decoupled: p = p (1 - lr wd)
/// m = β1 m + (1 - β1) g
/// v = β2 v + (1 - β2) g²
/// p = p - (lr / (1 - β1^t)) m / (sqrt(v) / sqrt(1 - β2^t) + eps)
/// ```
#[derive(Clone, Debug)]
pub struct Adam<T> {
    config: AdamConfig,
    slots: Vec<Slot<T>>,
    steps: u64,
}

impl<T: Float> Adam<T> {
    /// An optimizer with `config`.
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] for a negative or non-finite rate, eps or decay, or betas outside `[0, 1)`.
    pub fn new(config: AdamConfig) -> Result<Self, NnError> {
        check_lr(config.lr)?;
        for (field, b) in [
            ("Adam.beta1", config.betas.0),
            ("Adam.beta2", config.betas.1),
        ] {
            if !(0.0..1.0).contains(&b) {
                return Err(NnError::config(field, b, "must be in [0, 1)"));
            }
        }
        if !(config.eps.is_finite() && config.eps >= 0.0) {
            return Err(NnError::config(
                "Adam.eps",
                config.eps,
                "must be finite and >= 0",
            ));
        }
        config.weight_decay.validate()?;
        Ok(Self {
            config,
            slots: Vec::new(),
            steps: 0,
        })
    }

    /// The per-parameter state, in visiting order (for inspection and checkpointing).
    pub fn slots(&self) -> &[Slot<T>] {
        &self.slots
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn step(&mut self, module: &mut dyn Module<T>) -> Result<(), NnError> {
        let c = &self.config;
        let t = (self.steps + 1) as i32;
        let (b1, b2) = c.betas;
        let step_size = c.lr / (1.0 - b1.powi(t));
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let (lr, eps, mode) = (c.lr, c.eps, c.mode);
        for_each_slot(
            &mut self.slots,
            &c.weight_decay,
            (true, true),
            module,
            |p, s| {
                let wd = s.weight_decay;
                for (j, (w, &g)) in p
                    .value
                    .as_mut_slice()
                    .iter_mut()
                    .zip(p.grad.as_slice())
                    .enumerate()
                {
                    let mut w64 = w.to_f64();
                    let mut g = g.to_f64();
                    match mode {
                        DecayMode::L2 => g += wd * w64,
                        DecayMode::Decoupled => w64 *= 1.0 - lr * wd,
                    }
                    let m = T::from_f64(b1 * s.m[j].to_f64() + (1.0 - b1) * g);
                    let v = T::from_f64(b2 * s.v[j].to_f64() + (1.0 - b2) * g * g);
                    s.m[j] = m;
                    s.v[j] = v;
                    let denom = v.to_f64().sqrt() / bc2_sqrt + eps;
                    *w = T::from_f64(w64 - step_size * m.to_f64() / denom);
                }
            },
        )?;
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.steps
    }
}
