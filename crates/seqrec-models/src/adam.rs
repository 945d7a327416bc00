//! [`AdamState`]: `torch.optim.Adam` with state that can be checkpointed, shared by every model.
//!
//! `seqrec_nn::optim::Adam` cannot restore its moments yet, and exact resume needs them, so the models
//! keep them here as [`Param`]s named `exp_avg.<param>` / `exp_avg_sq.<param>`, which
//! `seqrec_nn::checkpoint` saves and loads by name. The update is `seqrec_nn::optim::Adam`'s (L2 mode),
//! bit for bit (tested in `sasrec.rs`).

use seqrec_nn::{Module, Param};
use seqrec_tensor::{Float, Tensor};

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
        }
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
        let step_size = lr / (1.0 - b1.powi(t));
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
