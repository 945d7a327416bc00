//! Optimizers, clipping and schedules: 5-step parameter trajectories against `torch.optim` (SGD with
//! momentum/dampening/weight decay, SGD Nesterov, Adagrad with lr decay, Adam with L2, AdamW), state
//! checks (a different module is an error), per-parameter decay by name, and gradient clipping.

#[path = "fixtures/core/fixture.rs"]
mod fixture;

use fixture::{Fixture, assert_close};
use seqrec_nn::clip::{clip_grad_norm, grad_norm};
use seqrec_nn::optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, Optimizer, Sgd, SgdConfig, WeightDecay,
};
use seqrec_nn::schedule::LrSchedule;
use seqrec_nn::{Embedding, Linear, Module, NnError, Padding, init::Rng};

/// `w` [3, 4] and `b` [4] as one module (a Linear's weight is [out, in]; here just two named tensors).
fn module_from(fx: &Fixture) -> Linear<f32> {
    let mut fc = Linear::<f32>::new("p", 4, 3, true, &mut Rng::new(0));
    fc.weight.value = fx.tensor("w0");
    fc.bias.as_mut().unwrap().value = fx.tensor("b0");
    fc
}

fn run_trajectory(name: &str, opt: &mut dyn Optimizer<f32>) {
    let fx = Fixture::load("optimizers");
    let mut m = module_from(&fx);
    for s in 0..5 {
        m.weight.grad = fx.tensor(&format!("grad{s}.w"));
        m.bias.as_mut().unwrap().grad = fx.tensor(&format!("grad{s}.b"));
        opt.step(&mut m).unwrap();
        assert_close(
            &format!("{name} step {s} w"),
            m.weight.value.as_slice(),
            fx.data(&format!("{name}.step{s}.w")),
            1e-5,
        );
        assert_close(
            &format!("{name} step {s} b"),
            m.bias.as_ref().unwrap().value.as_slice(),
            fx.data(&format!("{name}.step{s}.b")),
            1e-5,
        );
    }
    assert_eq!(opt.steps(), 5);
}

#[test]
fn sgd_momentum_dampening_weight_decay_matches_torch() {
    let cfg = SgdConfig {
        dampening: 0.1,
        weight_decay: WeightDecay::all(0.01),
        ..SgdConfig::new(0.1, 0.9)
    };
    run_trajectory("sgd_momentum", &mut Sgd::new(cfg).unwrap());
}

#[test]
fn sgd_nesterov_matches_torch() {
    let cfg = SgdConfig {
        nesterov: true,
        ..SgdConfig::new(0.1, 0.9)
    };
    run_trajectory("sgd_nesterov", &mut Sgd::new(cfg).unwrap());
}

#[test]
fn adagrad_matches_torch() {
    let cfg = AdagradConfig {
        lr_decay: 0.01,
        weight_decay: WeightDecay::all(0.02),
        initial_accumulator_value: 0.1,
        ..AdagradConfig::new(0.1)
    };
    run_trajectory("adagrad", &mut Adagrad::new(cfg).unwrap());
}

#[test]
fn adam_with_l2_matches_torch() {
    let cfg = AdamConfig {
        betas: (0.9, 0.98),
        weight_decay: WeightDecay::all(0.05),
        ..AdamConfig::adam(0.01)
    };
    run_trajectory("adam", &mut Adam::new(cfg).unwrap());
}

#[test]
fn adamw_matches_torch() {
    let cfg = AdamConfig {
        eps: 1e-6,
        ..AdamConfig::adamw(0.01, 0.1)
    };
    run_trajectory("adamw", &mut Adam::new(cfg).unwrap());
}

#[test]
fn stepping_a_different_module_is_an_error() {
    let mut rng = Rng::new(1);
    let mut a = Linear::<f32>::new("a", 3, 2, true, &mut rng);
    let mut adam = Adam::new(AdamConfig::adam(0.1)).unwrap();
    adam.step(&mut a).unwrap();
    // Same shapes, other names.
    let mut b = Linear::<f32>::new("b", 3, 2, true, &mut rng);
    let err = adam.step(&mut b).unwrap_err();
    assert!(
        matches!(&err, NnError::OptimizerMismatch { index: 0, expected, found, .. } if expected == "a.weight" && found == "b.weight"),
        "{err}"
    );
    // Same names, other shape.
    let mut c = Linear::<f32>::new("a", 4, 2, true, &mut rng);
    let err = adam.step(&mut c).unwrap_err();
    assert!(
        matches!(&err, NnError::OptimizerMismatch { expected_shape, found_shape, .. } if expected_shape == &[2, 3] && found_shape == &[2, 4]),
        "{err}"
    );
    // Fewer parameters.
    let mut d = Linear::<f32>::new("a", 3, 2, false, &mut rng);
    let err = adam.step(&mut d).unwrap_err();
    assert!(
        matches!(&err, NnError::OptimizerMismatch { index: 1, expected, .. } if expected == "a.bias"),
        "{err}"
    );
    assert!(err.to_string().contains("a.bias"), "{err}");
    // The failed steps changed nothing and did not count.
    assert_eq!(adam.steps(), 1);
}

#[test]
fn invalid_configs_name_the_field() {
    let e = Adam::<f32>::new(AdamConfig {
        betas: (1.0, 0.999),
        ..AdamConfig::adam(0.1)
    })
    .unwrap_err();
    assert!(e.to_string().contains("Adam.beta1"), "{e}");
    let e = Sgd::<f32>::new(SgdConfig {
        nesterov: true,
        ..SgdConfig::new(0.1, 0.0)
    })
    .unwrap_err();
    assert!(e.to_string().contains("Sgd.nesterov"), "{e}");
    let e = Adam::<f32>::new(AdamConfig::adamw(0.1, -1.0)).unwrap_err();
    assert!(e.to_string().contains("weight_decay"), "{e}");
    let e = Adam::<f32>::new(AdamConfig::adam(f64::NAN)).unwrap_err();
    assert!(e.to_string().contains("lr"), "{e}");
}

/// Two named parameters: an item embedding and a linear layer.
struct TwoPart {
    emb: Embedding<f64>,
    fc: Linear<f64>,
}

impl Module<f64> for TwoPart {
    fn visit_params(&self, f: &mut dyn FnMut(&seqrec_nn::Param<f64>)) {
        self.emb.visit_params(f);
        self.fc.visit_params(f);
    }
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut seqrec_nn::Param<f64>)) {
        self.emb.visit_params_mut(f);
        self.fc.visit_params_mut(f);
    }
}

#[test]
fn l2_on_embeddings_only_by_name() {
    let mut rng = Rng::new(2);
    let mut m = TwoPart {
        emb: Embedding::new("item_emb", 5, 3, 1.0, Padding::Skip(0), &mut rng).unwrap(),
        fc: Linear::new("fc", 3, 2, true, &mut rng),
    };
    let before_emb = m.emb.weight.value.clone();
    let before_fc = m.fc.weight.value.clone();
    let (lr, wd) = (0.1, 0.5);
    let cfg = SgdConfig {
        weight_decay: WeightDecay::only_containing("item_emb", wd),
        ..SgdConfig::new(lr, 0.0)
    };
    let mut sgd = Sgd::new(cfg).unwrap();
    sgd.step(&mut m).unwrap(); // zero gradients: only the decay acts
    // p <- p - lr * wd * p on the embedding; the linear layer does not move.
    for (a, b) in m
        .emb
        .weight
        .value
        .as_slice()
        .iter()
        .zip(before_emb.as_slice())
    {
        assert!((a - b * (1.0 - lr * wd)).abs() < 1e-15);
    }
    assert_eq!(m.fc.weight.value, before_fc);
    // The padding row (zero value, zero gradient) stays exactly zero.
    assert!(m.emb.weight.value.as_slice()[..3].iter().all(|&v| v == 0.0));
    assert_eq!(
        WeightDecay::all(0.1)
            .with_rule(|n| n.ends_with("bias"), 0.0)
            .for_param("fc.bias"),
        0.0
    );
}

#[test]
fn clipping_scales_to_max_norm_and_rejects_non_finite() {
    let mut rng = Rng::new(3);
    let mut fc = Linear::<f64>::new("fc", 4, 3, true, &mut rng);
    fc.weight.grad = rng.normal_tensor(&[3, 4], 2.0);
    fc.bias.as_mut().unwrap().grad = rng.normal_tensor(&[3], 2.0);
    let norm = grad_norm(&fc);
    let direct: f64 = fc
        .weight
        .grad
        .as_slice()
        .iter()
        .chain(fc.bias.as_ref().unwrap().grad.as_slice())
        .map(|g| g * g)
        .sum::<f64>()
        .sqrt();
    assert!((norm - direct).abs() < 1e-12);
    let returned = clip_grad_norm(&mut fc, 1.0).unwrap();
    assert_eq!(returned, norm);
    assert!(
        (grad_norm(&fc) - 1.0 / (1.0 + 1e-6 / norm)).abs() < 1e-9,
        "{}",
        grad_norm(&fc)
    );
    // Below the bound nothing changes.
    let g = fc.weight.grad.clone();
    clip_grad_norm(&mut fc, 10.0).unwrap();
    assert_eq!(fc.weight.grad, g);
    // A NaN is a typed error naming the parameter and element; gradients untouched.
    fc.bias.as_mut().unwrap().grad.as_mut_slice()[2] = f64::NAN;
    let err = clip_grad_norm(&mut fc, 1.0).unwrap_err();
    assert!(
        matches!(&err, NnError::NonFiniteGradNorm { param, index: 2, .. } if param == "fc.bias"),
        "{err}"
    );
    assert_eq!(fc.weight.grad, g);
    fc.bias.as_mut().unwrap().grad.as_mut_slice()[2] = f64::INFINITY;
    assert!(matches!(
        clip_grad_norm(&mut fc, 1.0),
        Err(NnError::NonFiniteGradNorm { .. })
    ));
    assert!(matches!(
        clip_grad_norm(&mut fc, 0.0),
        Err(NnError::InvalidConfig {
            field: "max_norm",
            ..
        })
    ));
}

#[test]
fn schedules_follow_their_formulas() {
    assert_eq!(LrSchedule::Constant.factor(12345), 1.0);
    let lin = LrSchedule::warmup_linear(4, 12).unwrap();
    let got: Vec<f64> = (0..14).map(|s| lin.factor(s)).collect();
    let want = [
        0.0, 0.25, 0.5, 0.75, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0, 0.0,
    ];
    assert_eq!(got, want);
    let cos = LrSchedule::warmup_cosine(2, 10, 0.1).unwrap();
    assert_eq!(cos.factor(1), 0.5);
    assert!((cos.factor(2) - 1.0).abs() < 1e-15);
    // Halfway through the decay: min + (1 - min) / 2.
    assert!((cos.factor(6) - 0.55).abs() < 1e-12, "{}", cos.factor(6));
    assert!((cos.factor(10) - 0.1).abs() < 1e-12);
    assert!((cos.factor(50) - 0.1).abs() < 1e-12);
    assert!(matches!(
        LrSchedule::warmup_linear(5, 4),
        Err(NnError::InvalidConfig {
            field: "LrSchedule.warmup",
            ..
        })
    ));
    assert!(LrSchedule::warmup_linear(0, 0).is_err());
    assert!(LrSchedule::warmup_cosine(0, 10, 1.5).is_err());
    // No warmup: starts at full rate.
    assert_eq!(LrSchedule::warmup_linear(0, 10).unwrap().factor(0), 1.0);
}

#[test]
fn schedule_drives_optimizer_lr() {
    let mut rng = Rng::new(4);
    let mut fc = Linear::<f64>::new("fc", 2, 1, false, &mut rng);
    let sched = LrSchedule::warmup_linear(2, 4).unwrap();
    let mut sgd = Sgd::new(SgdConfig::new(1.0, 0.0)).unwrap();
    let mut moved = Vec::new();
    for step in 0..4 {
        sgd.set_lr(sched.lr(1.0, step));
        fc.weight.grad.fill(1.0);
        let before = fc.weight.value.as_slice()[0];
        sgd.step(&mut fc).unwrap();
        moved.push(before - fc.weight.value.as_slice()[0]);
    }
    let want = [0.0, 0.5, 1.0, 0.5];
    for (a, b) in moved.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{moved:?}");
    }
}
