//! Gradient checks (f64, central differences, STRICT) of the GRU and LSTM backward passes through
//! time, padding invariance, gradient accumulation, the step API and config validation.

use proptest::prelude::*;
use seqrec_nn::gradcheck::{GradTolerance, check_input, check_module, dot};
use seqrec_nn::{
    Gru, Lstm, Module, Param, RnnCache, RnnConfig, RnnConfigError, RnnState, init::Rng,
};
use seqrec_tensor::{DropoutKey, Tensor};

/// A GRU or an LSTM behind one interface, so every test runs on both cells.
#[derive(Clone, Debug)]
enum Net {
    Gru(Gru<f64>),
    Lstm(Lstm<f64>),
}

impl Net {
    fn new(lstm: bool, cfg: RnnConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        if lstm {
            Net::Lstm(Lstm::new("rnn", cfg, &mut rng).unwrap())
        } else {
            Net::Gru(Gru::new("rnn", cfg, &mut rng).unwrap())
        }
    }
    fn with_dropout(self, p: f64) -> Self {
        match self {
            Net::Gru(n) => Net::Gru(n.with_dropout(p).unwrap()),
            Net::Lstm(n) => Net::Lstm(n.with_dropout(p).unwrap()),
        }
    }
    fn zero_state(&self, batch: usize) -> RnnState<f64> {
        match self {
            Net::Gru(n) => n.zero_state(batch),
            Net::Lstm(n) => n.zero_state(batch),
        }
    }
    fn new_cache(&self, batch: usize, seq: usize) -> RnnCache<f64> {
        match self {
            Net::Gru(n) => n.new_cache(batch, seq),
            Net::Lstm(n) => n.new_cache(batch, seq),
        }
    }
    fn forward(
        &self,
        out: &mut Tensor<f64>,
        last: &mut RnnState<f64>,
        cache: &mut RnnCache<f64>,
        x: &Tensor<f64>,
        mask: Option<&[bool]>,
        init: Option<&RnnState<f64>>,
    ) {
        match self {
            Net::Gru(n) => n.forward(out, last, cache, x, mask, init),
            Net::Lstm(n) => n.forward(out, last, cache, x, mask, init),
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        dx: Option<&mut Tensor<f64>>,
        dinit: Option<&mut RnnState<f64>>,
        dy: &Tensor<f64>,
        dlast: Option<&RnnState<f64>>,
        x: &Tensor<f64>,
        mask: Option<&[bool]>,
        cache: &mut RnnCache<f64>,
    ) {
        match self {
            Net::Gru(n) => n.backward(dx, dinit, dy, dlast, x, mask, cache),
            Net::Lstm(n) => n.backward(dx, dinit, dy, dlast, x, mask, cache),
        }
    }
    fn step(&self, state: &mut RnnState<f64>, x_t: &Tensor<f64>, out: &mut Tensor<f64>) {
        match self {
            Net::Gru(n) => n.step(state, x_t, out),
            Net::Lstm(n) => n.step(state, x_t, out),
        }
    }
    fn grads(&self) -> Vec<Vec<f64>> {
        let mut g = Vec::new();
        self.visit_params(&mut |p| g.push(p.grad.to_vec()));
        g
    }
}

impl Module<f64> for Net {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<f64>)) {
        match self {
            Net::Gru(n) => n.visit_params(f),
            Net::Lstm(n) => n.visit_params(f),
        }
    }
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<f64>)) {
        match self {
            Net::Gru(n) => n.visit_params_mut(f),
            Net::Lstm(n) => n.visit_params_mut(f),
        }
    }
}

/// One random problem: network, inputs, initial state, mask and the loss weights
/// `L = sum(y * ry) + sum(h_n * rh) + sum(c_n * rc)`.
#[derive(Debug)]
struct Case {
    net: Net,
    cfg: RnnConfig,
    batch: usize,
    seq: usize,
    x: Tensor<f64>,
    init: RnnState<f64>,
    mask: Vec<bool>,
    ry: Tensor<f64>,
    rlast: RnnState<f64>,
    dropout_key: Option<DropoutKey>,
}

fn random_state(net: &Net, batch: usize, rng: &mut Rng) -> RnnState<f64> {
    let mut s = net.zero_state(batch);
    let shape = s.h.shape().to_vec();
    s.h = rng.normal_tensor(&shape, 1.0);
    if let Some(c) = &mut s.c {
        *c = rng.normal_tensor(&shape, 1.0);
    }
    s
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(
        lstm: bool,
        num_layers: usize,
        batch: usize,
        seq: usize,
        d_in: usize,
        h: usize,
        mask: Vec<bool>,
        seed: u64,
    ) -> Self {
        let cfg = RnnConfig {
            input_size: d_in,
            hidden_size: h,
            num_layers,
        };
        let net = Net::new(lstm, cfg, seed);
        let mut rng = Rng::new(seed ^ 0x5eed);
        let x = rng.normal_tensor(&[batch, seq, d_in], 1.0);
        let ry = rng.normal_tensor(&[batch, seq, h], 1.0);
        let init = random_state(&net, batch, &mut rng);
        let rlast = random_state(&net, batch, &mut rng);
        Self {
            net,
            cfg,
            batch,
            seq,
            x,
            init,
            mask,
            ry,
            rlast,
            dropout_key: None,
        }
    }

    fn loss_of(&self, net: &Net, x: &Tensor<f64>, init: &RnnState<f64>) -> f64 {
        let mut y = Tensor::zeros(&[self.batch, self.seq, self.cfg.hidden_size]);
        let mut last = net.zero_state(self.batch);
        let mut cache = net.new_cache(self.batch, self.seq);
        cache.set_dropout_key(self.dropout_key);
        net.forward(
            &mut y,
            &mut last,
            &mut cache,
            x,
            Some(&self.mask),
            Some(init),
        );
        let mut l = dot(&y, &self.ry) + dot(&last.h, &self.rlast.h);
        if let (Some(c), Some(rc)) = (&last.c, &self.rlast.c) {
            l += dot(c, rc);
        }
        l
    }

    /// Forward + backward with `dy = ry`, `dlast = rlast`; returns `(y, last, dx, dinit)`.
    fn run(&mut self) -> (Tensor<f64>, RnnState<f64>, Tensor<f64>, RnnState<f64>) {
        let mut y = Tensor::zeros(&[self.batch, self.seq, self.cfg.hidden_size]);
        let mut last = self.net.zero_state(self.batch);
        let mut cache = self.net.new_cache(self.batch, self.seq);
        cache.set_dropout_key(self.dropout_key);
        self.net.forward(
            &mut y,
            &mut last,
            &mut cache,
            &self.x,
            Some(&self.mask),
            Some(&self.init),
        );
        let mut dx = Tensor::full(self.x.shape(), f64::NAN);
        let mut dinit = random_state(&self.net, self.batch, &mut Rng::new(99));
        self.net.backward(
            Some(&mut dx),
            Some(&mut dinit),
            &self.ry,
            Some(&self.rlast),
            &self.x,
            Some(&self.mask),
            &mut cache,
        );
        (y, last, dx, dinit)
    }
}

fn assert_all_pass(errors: &[seqrec_nn::gradcheck::GradError]) {
    for e in errors {
        assert!(e.passes(), "{e}");
    }
}

/// Full gradient check of one case: every parameter, x, h0 (and c0).
fn gradcheck_case(mut case: Case) {
    case.net.zero_grad();
    let (_, _, dx, dinit) = case.run();
    let tol = GradTolerance::STRICT;
    let mut net = case.net.clone();
    let errors = check_module(&mut net, tol, &mut |n: &mut Net| {
        case.loss_of(n, &case.x, &case.init)
    });
    assert_all_pass(&errors);
    assert_eq!(errors.len(), 4 * case.cfg.num_layers);

    let mut x = case.x.clone();
    let e = check_input("x", &mut x, &dx, tol, &mut |x| {
        case.loss_of(&case.net, x, &case.init)
    });
    assert!(e.passes(), "{e}");

    let mut h0 = case.init.h.clone();
    let e = check_input("h0", &mut h0, &dinit.h, tol, &mut |h| {
        let mut s = case.init.clone();
        s.h = h.clone();
        case.loss_of(&case.net, &case.x, &s)
    });
    assert!(e.passes(), "{e}");
    if let (Some(c0), Some(dc0)) = (&case.init.c, &dinit.c) {
        let mut c0 = c0.clone();
        let e = check_input("c0", &mut c0, dc0, tol, &mut |c| {
            let mut s = case.init.clone();
            s.c = Some(c.clone());
            case.loss_of(&case.net, &case.x, &s)
        });
        assert!(e.passes(), "{e}");
    }
}

/// `(lstm, layers, batch, seq, d_in, h, mask, seed)`; mask row 0 is all padding when `pad_row0`.
fn case_strategy() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        1usize..=2,
        1usize..=3,
        1usize..=4,
        1usize..=3,
        1usize..=3,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(|(lstm, layers, batch, seq, d_in, h, pad_row0, seed)| {
            proptest::collection::vec(any::<bool>(), batch * seq).prop_map(move |mut mask| {
                if pad_row0 {
                    mask[..seq].fill(false);
                }
                Case::new(lstm, layers, batch, seq, d_in, h, mask, seed)
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random GRU / LSTM, 1 or 2 layers, random masks (with all-padding rows, batch 1, seq 1).
    #[test]
    fn gradients_match_finite_differences(case in case_strategy()) {
        gradcheck_case(case);
    }

    /// Changing inputs (and upstream gradients) at padded steps changes nothing: outputs, final state,
    /// every parameter gradient, dx at real steps and dh0 are bit-identical; dx is zero at padded steps.
    #[test]
    fn padding_contributes_nothing(case in case_strategy(), noise_seed in any::<u64>()) {
        let mut a = case;
        a.net.zero_grad();
        let (ya, la, dxa, dia) = a.run();
        let ga = a.net.grads();

        let mut rng = Rng::new(noise_seed);
        let (seq, d_in, h) = (a.seq, a.cfg.input_size, a.cfg.hidden_size);
        for (p, &real) in a.mask.clone().iter().enumerate() {
            if !real {
                for j in 0..d_in {
                    a.x.as_mut_slice()[p * d_in + j] = 100.0 * rng.normal();
                }
                for j in 0..h {
                    a.ry.as_mut_slice()[p * h + j] = 100.0 * rng.normal();
                }
            }
        }
        a.net.zero_grad();
        let (yb, lb, dxb, dib) = a.run();
        prop_assert_eq!(ya.to_vec(), yb.to_vec());
        prop_assert_eq!(la.h.to_vec(), lb.h.to_vec());
        prop_assert_eq!(la.c.map(|c| c.to_vec()), lb.c.map(|c| c.to_vec()));
        prop_assert_eq!(ga, a.net.grads());
        prop_assert_eq!(dxa.to_vec(), dxb.to_vec());
        prop_assert_eq!(dia.h.to_vec(), dib.h.to_vec());
        prop_assert_eq!(dia.c.map(|c| c.to_vec()), dib.c.map(|c| c.to_vec()));
        for (p, &real) in a.mask.iter().enumerate() {
            let row = &dxb.as_slice()[p * d_in..(p + 1) * d_in];
            let out = &yb.as_slice()[p * h..(p + 1) * h];
            if !real {
                prop_assert!(row.iter().all(|&v| v == 0.0), "dx at padded step {p}: {row:?}");
                prop_assert!(out.iter().all(|&v| v == 0.0), "y at padded step {p}: {out:?}");
            }
        }
        let _ = seq;
    }

    /// Stepping one event at a time through the real events of each row (left padding: the real
    /// suffix) equals the full forward: same top-layer outputs and final state.
    #[test]
    fn step_api_equals_full_forward(case in case_strategy()) {
        let mut c = case;
        let (batch, seq, d_in, h) = (c.batch, c.seq, c.cfg.input_size, c.cfg.hidden_size);
        // Left padding: row b has its first `pad_b` steps padded.
        for b in 0..batch {
            let pad = (b * 7 + seq) % (seq + 1);
            for t in 0..seq {
                c.mask[b * seq + t] = t >= pad;
            }
        }
        let (y, last, _, _) = c.run();
        let nl = c.cfg.num_layers;
        for b in 0..batch {
            // A batch-1 state starting from row b's initial state.
            let mut state = c.net.zero_state(1);
            for l in 0..nl {
                let src = (l * batch + b) * h;
                state.h.as_mut_slice()[l * h..(l + 1) * h].copy_from_slice(&c.init.h.as_slice()[src..src + h]);
                if let (Some(sc), Some(ic)) = (&mut state.c, &c.init.c) {
                    sc.as_mut_slice()[l * h..(l + 1) * h].copy_from_slice(&ic.as_slice()[src..src + h]);
                }
            }
            let mut out = Tensor::zeros(&[1, h]);
            for t in 0..seq {
                if !c.mask[b * seq + t] {
                    continue;
                }
                let p = b * seq + t;
                let xt = Tensor::from_vec(&[1, d_in], c.x.as_slice()[p * d_in..(p + 1) * d_in].to_vec()).unwrap();
                c.net.step(&mut state, &xt, &mut out);
                for (j, (&a, &e)) in out.as_slice().iter().zip(&y.as_slice()[p * h..(p + 1) * h]).enumerate() {
                    prop_assert!((a - e).abs() <= 1e-12, "row {b} step {t} unit {j}: step {a} vs forward {e}");
                }
            }
            for l in 0..nl {
                let src = (l * batch + b) * h;
                for j in 0..h {
                    let (a, e) = (state.h.as_slice()[l * h + j], last.h.as_slice()[src + j]);
                    prop_assert!((a - e).abs() <= 1e-12, "h_n layer {l} row {b} unit {j}: {a} vs {e}");
                    if let (Some(sc), Some(lc)) = (&state.c, &last.c) {
                        let (a, e) = (sc.as_slice()[l * h + j], lc.as_slice()[src + j]);
                        prop_assert!((a - e).abs() <= 1e-12, "c_n layer {l} row {b} unit {j}: {a} vs {e}");
                    }
                }
            }
        }
    }
}

/// Deterministic 1- and 2-layer cases for both cells, with batch 1, seq 1 and an all-padding row, so the
/// named configurations are always covered whatever proptest draws.
#[test]
fn gradients_match_on_edge_shapes() {
    for lstm in [false, true] {
        for layers in [1, 2] {
            // batch 1, seq 1, real
            gradcheck_case(Case::new(lstm, layers, 1, 1, 2, 3, vec![true], 1));
            // batch 2, seq 3: row 0 all padding, row 1 right-padded
            let mask = vec![false, false, false, true, true, false];
            gradcheck_case(Case::new(lstm, layers, 2, 3, 3, 2, mask, 2));
            // left padding
            let mask = vec![false, true, true, false, false, true];
            gradcheck_case(Case::new(lstm, layers, 2, 3, 2, 3, mask, 3));
        }
    }
}

/// Two backward calls without zero_grad give twice the parameter gradients (`+=`), while the
/// activation gradients are assigned (the same both times).
#[test]
fn parameter_gradients_accumulate() {
    for lstm in [false, true] {
        let mask = vec![true, true, false, false, true, true];
        let mut c = Case::new(lstm, 2, 2, 3, 3, 4, mask, 5);
        c.net.zero_grad();
        let (_, _, dx1, di1) = c.run();
        let g1 = c.net.grads();
        let (_, _, dx2, di2) = c.run();
        let g2 = c.net.grads();
        for (a, b) in g1.iter().zip(&g2) {
            for (x, y) in a.iter().zip(b) {
                // beta = 1 GEMMs add in a different order than the first pass: equal up to rounding.
                assert!(
                    (2.0 * x - y).abs() <= 1e-13 * y.abs().max(1.0),
                    "{x} * 2 vs {y}"
                );
            }
        }
        assert!(g1.iter().flatten().any(|&v| v != 0.0));
        assert_eq!(dx1.to_vec(), dx2.to_vec());
        assert_eq!(di1.h.to_vec(), di2.h.to_vec());
    }
}

/// No mask equals an all-true mask, and a smaller batch reuses a larger cache correctly.
#[test]
fn no_mask_equals_all_real_and_cache_shrinks() {
    for lstm in [false, true] {
        let cfg = RnnConfig {
            input_size: 3,
            hidden_size: 4,
            num_layers: 2,
        };
        let net = Net::new(lstm, cfg, 8);
        let mut rng = Rng::new(4);
        let x = rng.normal_tensor::<f64>(&[2, 5, 3], 1.0);
        let mut big = net.new_cache(4, 6);
        let mut fresh = net.new_cache(2, 5);
        let (mut y1, mut y2) = (Tensor::zeros(&[2, 5, 4]), Tensor::zeros(&[2, 5, 4]));
        let (mut l1, mut l2) = (net.zero_state(2), net.zero_state(2));
        net.forward(&mut y1, &mut l1, &mut big, &x, None, None);
        net.forward(&mut y2, &mut l2, &mut fresh, &x, Some(&[true; 10]), None);
        assert_eq!(y1.to_vec(), y2.to_vec());
        assert_eq!(l1.h.to_vec(), l2.h.to_vec());
        assert!(y1.as_slice().iter().all(|v| v.is_finite() && *v != 0.0));
    }
}

/// PyTorch's init bound and parameter names / shapes / order.
#[test]
fn names_shapes_and_init_follow_pytorch() {
    let cfg = RnnConfig {
        input_size: 5,
        hidden_size: 16,
        num_layers: 2,
    };
    let gru = Gru::<f32>::new("enc.gru", cfg, &mut Rng::new(0)).unwrap();
    let lstm = Lstm::<f32>::new("lstm", cfg, &mut Rng::new(0)).unwrap();
    let mut seen = Vec::new();
    gru.visit_params(&mut |p| seen.push((p.name.clone(), p.value.shape().to_vec())));
    assert_eq!(
        seen,
        vec![
            ("enc.gru.weight_ih_l0".to_string(), vec![48, 5]),
            ("enc.gru.weight_hh_l0".to_string(), vec![48, 16]),
            ("enc.gru.bias_ih_l0".to_string(), vec![48]),
            ("enc.gru.bias_hh_l0".to_string(), vec![48]),
            ("enc.gru.weight_ih_l1".to_string(), vec![48, 16]),
            ("enc.gru.weight_hh_l1".to_string(), vec![48, 16]),
            ("enc.gru.bias_ih_l1".to_string(), vec![48]),
            ("enc.gru.bias_hh_l1".to_string(), vec![48]),
        ]
    );
    let mut shapes = Vec::new();
    lstm.visit_params(&mut |p| {
        // uniform(-1/sqrt(h), 1/sqrt(h)) = ±0.25
        assert!(
            p.value.as_slice().iter().all(|v| v.abs() <= 0.25),
            "{}",
            p.name
        );
        shapes.push(p.value.shape().to_vec());
    });
    assert_eq!(shapes[0], vec![64, 5]);
    assert_eq!(
        lstm.num_params(),
        4 * 16 * (5 + 16 + 2) + 4 * 16 * (16 + 16 + 2)
    );
    let max = {
        let mut m = 0.0f32;
        gru.visit_params(&mut |p| p.value.as_slice().iter().for_each(|v| m = m.max(v.abs())));
        m
    };
    assert!(max > 0.24 && max <= 0.25, "max |w| {max}");
}

#[test]
fn zero_sizes_are_typed_errors_naming_the_field() {
    let ok = RnnConfig {
        input_size: 2,
        hidden_size: 3,
        num_layers: 1,
    };
    assert_eq!(ok.validate(), Ok(()));
    for (cfg, field) in [
        (
            RnnConfig {
                input_size: 0,
                ..ok
            },
            "input_size",
        ),
        (
            RnnConfig {
                hidden_size: 0,
                ..ok
            },
            "hidden_size",
        ),
        (
            RnnConfig {
                num_layers: 0,
                ..ok
            },
            "num_layers",
        ),
    ] {
        let err = Gru::<f32>::new("g", cfg, &mut Rng::new(0)).unwrap_err();
        assert_eq!(err, RnnConfigError::Zero { field, value: 0 });
        assert!(err.to_string().contains(field), "{err}");
        assert!(Lstm::<f32>::new("l", cfg, &mut Rng::new(0)).is_err());
    }
}

/// `None` for dx, dh0 and dh_n gives the same parameter gradients as passing buffers and a zero dh_n.
#[test]
fn optional_gradients_can_be_skipped() {
    for lstm in [false, true] {
        let mask = vec![true, false, true, true, true, false];
        let mut c = Case::new(lstm, 2, 2, 3, 2, 3, mask.clone(), 11);
        let mut zero_last = c.net.zero_state(2);
        zero_last.reset();
        c.rlast = zero_last;
        c.net.zero_grad();
        let _ = c.run();
        let with = c.net.grads();

        let mut y = Tensor::zeros(&[2, 3, 3]);
        let mut last = c.net.zero_state(2);
        let mut cache = c.net.new_cache(2, 3);
        c.net.forward(
            &mut y,
            &mut last,
            &mut cache,
            &c.x,
            Some(&mask),
            Some(&c.init),
        );
        c.net.zero_grad();
        c.net
            .backward(None, None, &c.ry, None, &c.x, Some(&mask), &mut cache);
        assert_eq!(with, c.net.grads());
    }
}

/// Empty batches and empty sequences run without panicking; with no steps the final state is h0.
#[test]
fn empty_shapes_are_fine() {
    for lstm in [false, true] {
        let cfg = RnnConfig {
            input_size: 2,
            hidden_size: 3,
            num_layers: 2,
        };
        let mut net = Net::new(lstm, cfg, 1);
        let init = random_state(&net, 2, &mut Rng::new(2));
        let x = Tensor::zeros(&[2, 0, 2]);
        let mut y = Tensor::zeros(&[2, 0, 3]);
        let mut last = net.zero_state(2);
        let mut cache = net.new_cache(2, 0);
        net.forward(&mut y, &mut last, &mut cache, &x, None, Some(&init));
        assert_eq!(last.h.to_vec(), init.h.to_vec());
        let mut dinit = net.zero_state(2);
        let dlast = random_state(&net, 2, &mut Rng::new(3));
        net.zero_grad();
        net.backward(
            None,
            Some(&mut dinit),
            &y,
            Some(&dlast),
            &x,
            None,
            &mut cache,
        );
        assert_eq!(dinit.h.to_vec(), dlast.h.to_vec());
        assert!(net.grads().iter().flatten().all(|&g| g == 0.0));

        let x = Tensor::zeros(&[0, 4, 2]);
        let mut y = Tensor::zeros(&[0, 4, 3]);
        let mut last = net.zero_state(0);
        let mut cache = net.new_cache(0, 4);
        net.forward(&mut y, &mut last, &mut cache, &x, None, None);
        net.backward(None, None, &y, None, &x, None, &mut cache);
    }
}

/// The f32 path (polynomial sigmoid / tanh) agrees with the f64 path at a realistic width.
#[test]
fn f32_matches_f64_at_width_64() {
    let cfg = RnnConfig {
        input_size: 32,
        hidden_size: 64,
        num_layers: 2,
    };
    let (batch, seq) = (4, 12);
    let mut rng = Rng::new(21);
    let x64 = rng.normal_tensor::<f64>(&[batch, seq, 32], 1.0);
    let dy64 = rng.normal_tensor::<f64>(&[batch, seq, 64], 1.0);
    let mask: Vec<bool> = (0..batch * seq).map(|i| i % seq >= i / seq).collect();
    let tol = seqrec_tensor::Tolerance {
        relative: 1e-4,
        absolute: 1e-5,
    };
    for lstm in [false, true] {
        let net64 = Net::new(lstm, cfg, 5);
        let run64 = |net: &mut Net| {
            let mut y = Tensor::zeros(&[batch, seq, 64]);
            let mut last = net.zero_state(batch);
            let mut cache = net.new_cache(batch, seq);
            net.forward(&mut y, &mut last, &mut cache, &x64, Some(&mask), None);
            let mut dx = Tensor::zeros(&[batch, seq, 32]);
            net.zero_grad();
            net.backward(
                Some(&mut dx),
                None,
                &dy64,
                None,
                &x64,
                Some(&mask),
                &mut cache,
            );
            (y, dx)
        };
        let (y64, dx64) = run64(&mut net64.clone());
        let (x32, dy32) = (x64.cast::<f32>(), dy64.cast::<f32>());
        let (y32, dx32) = if lstm {
            let Net::Lstm(n) = &net64 else { unreachable!() };
            let mut n32 = Lstm::<f32>::new("rnn", cfg, &mut Rng::new(0)).unwrap();
            let mut vals = Vec::new();
            n.visit_params(&mut |p| vals.push(p.value.cast::<f32>()));
            let mut it = vals.into_iter();
            n32.visit_params_mut(&mut |p| p.value = it.next().unwrap());
            let mut y = Tensor::zeros(&[batch, seq, 64]);
            let mut last = n32.zero_state(batch);
            let mut cache = n32.new_cache(batch, seq);
            n32.forward(&mut y, &mut last, &mut cache, &x32, Some(&mask), None);
            let mut dx = Tensor::zeros(&[batch, seq, 32]);
            n32.backward(
                Some(&mut dx),
                None,
                &dy32,
                None,
                &x32,
                Some(&mask),
                &mut cache,
            );
            (y, dx)
        } else {
            let Net::Gru(n) = &net64 else { unreachable!() };
            let mut n32 = Gru::<f32>::new("rnn", cfg, &mut Rng::new(0)).unwrap();
            let mut vals = Vec::new();
            n.visit_params(&mut |p| vals.push(p.value.cast::<f32>()));
            let mut it = vals.into_iter();
            n32.visit_params_mut(&mut |p| p.value = it.next().unwrap());
            let mut y = Tensor::zeros(&[batch, seq, 64]);
            let mut last = n32.zero_state(batch);
            let mut cache = n32.new_cache(batch, seq);
            n32.forward(&mut y, &mut last, &mut cache, &x32, Some(&mask), None);
            let mut dx = Tensor::zeros(&[batch, seq, 32]);
            n32.backward(
                Some(&mut dx),
                None,
                &dy32,
                None,
                &x32,
                Some(&mask),
                &mut cache,
            );
            (y, dx)
        };
        tol.check(y32.as_slice(), y64.cast::<f32>().as_slice())
            .unwrap_or_else(|e| panic!("lstm={lstm} y: {e}"));
        tol.check(dx32.as_slice(), dx64.cast::<f32>().as_slice())
            .unwrap_or_else(|e| panic!("lstm={lstm} dx: {e}"));
    }
}

#[test]
#[should_panic(expected = "x must be [batch, seq, 3]")]
fn wrong_input_width_panics_with_the_shapes() {
    let cfg = RnnConfig {
        input_size: 3,
        hidden_size: 2,
        num_layers: 1,
    };
    let gru = Gru::<f32>::new("g", cfg, &mut Rng::new(0)).unwrap();
    let x = Tensor::zeros(&[1, 2, 4]);
    let mut y = Tensor::zeros(&[1, 2, 2]);
    let mut last = gru.zero_state(1);
    let mut cache = gru.new_cache(1, 2);
    gru.forward(&mut y, &mut last, &mut cache, &x, None, None);
}

/// Dropout between layers (training key set): gradients still match finite differences (the mask is a
/// fixed function of the key), it changes the outputs, and without a key the network equals one built
/// without dropout.
#[test]
fn dropout_between_layers() {
    let key = DropoutKey { seed: 17, step: 3 };
    for lstm in [false, true] {
        let mask = vec![true, true, false, true, true, true, false, false];
        let mut c = Case::new(lstm, 2, 2, 4, 3, 5, mask.clone(), 13);
        let (y_plain, ..) = c.run();
        c.net = c.net.clone().with_dropout(0.4);
        let (y_eval, ..) = c.run();
        assert_eq!(y_plain.to_vec(), y_eval.to_vec(), "no key: no dropout");
        c.dropout_key = Some(key);
        let (y_train, ..) = c.run();
        assert_ne!(
            y_plain.to_vec(),
            y_train.to_vec(),
            "key set: dropout applied"
        );
        // Padded steps still output exactly zero.
        for (p, &real) in mask.iter().enumerate() {
            if !real {
                assert!(
                    y_train.as_slice()[p * 5..(p + 1) * 5]
                        .iter()
                        .all(|&v| v == 0.0)
                );
            }
        }
        gradcheck_case(c);
    }
    let cfg = RnnConfig {
        input_size: 2,
        hidden_size: 3,
        num_layers: 2,
    };
    for p in [1.0, -0.1, f64::NAN] {
        let err = Gru::<f32>::new("g", cfg, &mut Rng::new(0))
            .unwrap()
            .with_dropout(p)
            .unwrap_err();
        assert!(matches!(err, RnnConfigError::Dropout { .. }), "{err}");
        assert!(
            Lstm::<f32>::new("l", cfg, &mut Rng::new(0))
                .unwrap()
                .with_dropout(p)
                .is_err()
        );
    }
}
