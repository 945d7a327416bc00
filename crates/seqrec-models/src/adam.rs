//! [`AdamState`]: `torch.optim.Adam` with state that can be checkpointed, shared by every model.
//!
//! `seqrec_nn::optim::Adam` cannot restore its moments yet, and exact resume needs them, so the models
//! keep them here as [`Param`]s named `exp_avg.<param>` / `exp_avg_sq.<param>`, which
//! `seqrec_nn::checkpoint` saves and loads by name. The update is `seqrec_nn::optim::Adam`'s (L2 mode),
//! bit for bit (tested in `sasrec.rs`).

use seqrec_nn::{Module, NnError, Param};
use seqrec_tensor::{Float, Tensor};

use crate::ModelError;

/// Adam's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdamHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 coefficient added to the gradient (`torch.optim.Adam`'s `weight_decay`).
    pub weight_decay: f64,
}

/// Adam's moments (one per model parameter, in visiting order) and step count.
#[derive(Clone, Debug)]
pub(crate) struct AdamState<T> {
    pub hyper: AdamHyper,
    pub m: Vec<Param<T>>,
    pub v: Vec<Param<T>>,
    pub steps: u64,
    /// Multiplies `hyper.lr` (a learning-rate schedule's factor; 1 by default). Not checkpointed: the
    /// training loop sets it from the epoch before each epoch.
    pub lr_factor: f64,
}

impl<T: Float> AdamState<T> {
    /// Zero moments for every parameter of `net`.
    pub fn new(net: &dyn Module<T>, hyper: AdamHyper) -> Self {
        let (mut m, mut v) = (Vec::new(), Vec::new());
        net.visit_params(&mut |p| {
            m.push(Param::new(
                format!("exp_avg.{}", p.name),
                Tensor::zeros(p.value.shape()),
            ));
            v.push(Param::new(
                format!("exp_avg_sq.{}", p.name),
                Tensor::zeros(p.value.shape()),
            ));
        });
        Self {
            hyper,
            m,
            v,
            steps: 0,
            lr_factor: 1.0,
        }
    }

    /// Sets [`AdamState::lr_factor`].
    ///
    /// # Errors
    /// [`ModelError::Config`] unless `factor` is finite and positive.
    pub fn set_lr_factor(&mut self, factor: f64) -> Result<(), ModelError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(ModelError::Config(format!(
                "learning-rate factor {factor}: must be finite and > 0"
            )));
        }
        self.lr_factor = factor;
        Ok(())
    }

    /// Ends one training step of every model the same way: a non-finite `loss` or gradient norm is
    /// [`ModelError::NonFinite`] (nothing is updated, so the training loop keeps the last good
    /// checkpoint); otherwise the gradients are clipped to the global norm `clip` (when set) and Adam
    /// steps.
    pub fn finish_step(
        &mut self,
        net: &mut dyn Module<T>,
        loss: f64,
        clip: Option<f64>,
        epoch: usize,
        step: usize,
    ) -> Result<(), ModelError> {
        let non_finite = |what, value| ModelError::NonFinite {
            what,
            epoch,
            step,
            value,
        };
        if !loss.is_finite() {
            return Err(non_finite("loss", loss));
        }
        if let Some(max_norm) = clip {
            seqrec_nn::clip::clip_grad_norm(net, max_norm).map_err(|e| match e {
                NnError::NonFiniteGradNorm { norm, .. } => non_finite("gradient norm", norm),
                other => ModelError::Config(format!("clip_grad_norm: {other}")),
            })?;
        }
        self.step(net);
        Ok(())
    }

    /// One step over `net`'s gradients: `g += wd p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g²;
    /// p -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
    pub fn step(&mut self, net: &mut dyn Module<T>) {
        let AdamHyper {
            lr,
            beta1: b1,
            beta2: b2,
            eps,
            weight_decay: wd,
        } = self.hyper;
        let t = (self.steps + 1) as i32;
        let step_size = lr * self.lr_factor / (1.0 - b1.powi(t));
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let mut k = 0;
        let (ms, vs) = (&mut self.m, &mut self.v);
        net.visit_params_mut(&mut |p| {
            let (m, v) = (ms[k].value.as_mut_slice(), vs[k].value.as_mut_slice());
            for (j, (w, &g)) in p
                .value
                .as_mut_slice()
                .iter_mut()
                .zip(p.grad.as_slice())
                .enumerate()
            {
                let w64 = w.to_f64();
                let g = g.to_f64() + wd * w64;
                let mj = T::from_f64(b1 * m[j].to_f64() + (1.0 - b1) * g);
                let vj = T::from_f64(b2 * v[j].to_f64() + (1.0 - b2) * g * g);
                m[j] = mj;
                v[j] = vj;
                let denom = vj.to_f64().sqrt() / bc2_sqrt + eps;
                *w = T::from_f64(w64 - step_size * mj.to_f64() / denom);
            }
            k += 1;
        });
        self.steps += 1;
    }
}

/// The moments as one module (all `exp_avg` first, then all `exp_avg_sq`), for checkpoints.
impl<T: Float> Module<T> for AdamState<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        self.m.iter().chain(&self.v).for_each(f);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        self.m.iter_mut().chain(self.v.iter_mut()).for_each(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parameter `w` with a settable gradient.
    struct One(Param<f32>);

    impl Module<f32> for One {
        fn visit_params(&self, f: &mut dyn FnMut(&Param<f32>)) {
            f(&self.0);
        }
        fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<f32>)) {
            f(&mut self.0);
        }
    }

    fn setup(grad: [f32; 2]) -> (One, AdamState<f32>) {
        let mut net = One(Param::new(
            "w",
            Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap(),
        ));
        net.0.grad.as_mut_slice().copy_from_slice(&grad);
        let hyper = AdamHyper {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let adam = AdamState::new(&net, hyper);
        (net, adam)
    }

    #[test]
    fn finish_step_refuses_non_finite_loss_and_gradient_norm_without_updating() {
        let (mut net, mut adam) = setup([0.5, 0.5]);
        let e = adam
            .finish_step(&mut net, f64::NAN, None, 3, 4)
            .unwrap_err();
        assert!(matches!(
            e,
            ModelError::NonFinite {
                what: "loss",
                epoch: 3,
                step: 4,
                ..
            }
        ));
        // A NaN gradient with clipping on is a non-finite stop, not a config error.
        let (mut net, mut adam) = setup([f32::NAN, 0.5]);
        let e = adam
            .finish_step(&mut net, 1.0, Some(1.0), 0, 7)
            .unwrap_err();
        assert!(
            matches!(
                e,
                ModelError::NonFinite {
                    what: "gradient norm",
                    step: 7,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(net.0.value.as_slice(), &[1.0, 2.0]);
        assert_eq!(adam.steps, 0);
        let e = adam
            .finish_step(&mut net, 1.0, Some(-1.0), 0, 0)
            .unwrap_err();
        assert!(matches!(e, ModelError::Config(_)), "{e:?}");
    }

    #[test]
    fn finish_step_clips_then_steps() {
        // Gradient norm 5 clipped to 1: Adam's first step moves each weight by about lr * sign.
        let (mut net, mut adam) = setup([3.0, 4.0]);
        adam.finish_step(&mut net, 0.5, Some(1.0), 0, 0).unwrap();
        assert_eq!(adam.steps, 1);
        let g = net.0.grad.as_slice();
        assert!(
            ((g[0] * g[0] + g[1] * g[1]).sqrt() - 1.0).abs() < 1e-5,
            "{g:?}"
        );
        let w = net.0.value.as_slice();
        assert!(
            (w[0] - 0.9).abs() < 1e-4 && (w[1] - 1.9).abs() < 1e-4,
            "{w:?}"
        );
    }

    #[test]
    fn lr_factor_scales_the_step_and_nothing_else() {
        // Two steps at factor 0.5 equal two steps of an Adam whose lr is halved, moments included.
        let (mut a, mut adam_a) = setup([0.3, -0.7]);
        let (mut b, mut adam_b) = setup([0.3, -0.7]);
        adam_a.lr_factor = 0.5;
        adam_b.hyper.lr *= 0.5;
        for _ in 0..2 {
            adam_a.step(&mut a);
            adam_b.step(&mut b);
        }
        assert_eq!(a.0.value.as_slice(), b.0.value.as_slice());
        assert_eq!(adam_a.m[0].value.as_slice(), adam_b.m[0].value.as_slice());
        assert_eq!(adam_a.v[0].value.as_slice(), adam_b.v[0].value.as_slice());
        // and it does move less than factor 1.
        let (mut c, mut adam_c) = setup([0.3, -0.7]);
        adam_c.step(&mut c);
        adam_c.step(&mut c);
        assert!((c.0.value.as_slice()[0] - 1.0).abs() > (a.0.value.as_slice()[0] - 1.0).abs());
    }
}
