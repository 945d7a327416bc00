//! Gradient checks (f64, central differences, `GradTolerance::STRICT`) and invariants of the attention
//! layers: MultiheadAttention, FeedForward, TransformerBlock (three norm placements), a two-block SASRec
//! stack with a final LayerNorm, and AttentionPooling.

use proptest::prelude::*;
use seqrec_nn::gradcheck::{GradError, GradTolerance, check_input, check_module, dot};
use seqrec_nn::init::Rng;
use seqrec_nn::{
    Activation, AttentionMask, AttentionPooling, AttentionPoolingCache, AttentionPoolingConfig,
    AttnConfigError, FeedForward, FeedForwardCache, FeedForwardConfig, MhaCache, MhaConfig, Module,
    MultiheadAttention, NormPlacement, Phase, TransformerBlock, TransformerBlockCache,
    TransformerBlockConfig, TransformerEncoder, TransformerEncoderCache,
};
use seqrec_tensor::{Gelu, Tensor};

const TOL: GradTolerance = GradTolerance::STRICT;

fn assert_all_pass(errors: &[GradError], what: &str) {
    assert!(!errors.is_empty(), "{what}: nothing was checked");
    for e in errors {
        assert!(e.passes(), "{what}: {e}");
    }
}

/// Random keep flags `[b * t]` (about 70% real), with sequence 0 all padding when `all_pad`.
fn random_keep(rng: &mut Rng, b: usize, t: usize, all_pad: bool) -> Vec<bool> {
    let mut keep: Vec<bool> = (0..b * t).map(|_| rng.uniform01() < 0.7).collect();
    if all_pad {
        keep[..t].fill(false);
    }
    keep
}

/// `r` with rows at padded positions zeroed (a loss over real positions only).
fn zero_padded(mut r: Tensor<f64>, keep: &[bool]) -> Tensor<f64> {
    let c = r.cols();
    for (row, &k) in r.as_mut_slice().chunks_exact_mut(c).zip(keep) {
        if !k {
            row.fill(0.0);
        }
    }
    r
}

/// Two backward calls give twice the gradient up to the rounding of the second sum (bias gradients add
/// rows one by one into the accumulator, so `(g + r1) + r2` is not bit-equal to `2 (r1 + r2)`).
fn assert_close(want: f64, got: f64, name: &str) {
    assert!(
        (want - got).abs() <= 1e-12 * want.abs().max(1.0),
        "{name}: parameter gradients must accumulate: want {want}, got {got}"
    );
}

fn grads<M: Module<f64>>(m: &M) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    m.visit_params(&mut |p| out.push((p.name.clone(), p.grad.to_vec())));
    out
}

// ---------------------------------------------------------------- MultiheadAttention

fn mha_loss(
    m: &MultiheadAttention<f64>,
    xq: &Tensor<f64>,
    xkv: &Tensor<f64>,
    keep: Option<&[bool]>,
    phase: Phase,
    r: &Tensor<f64>,
) -> f64 {
    let s = xq.shape();
    let mut cache = MhaCache::new(m.config(), s[0], s[1]);
    let mut out = Tensor::zeros(s);
    m.forward(&mut out, &mut cache, xq, xkv, keep, phase);
    dot(&out, r)
}

#[allow(clippy::too_many_arguments)]
fn check_mha(
    b: usize,
    t: usize,
    heads: usize,
    dh: usize,
    mask: AttentionMask,
    padding: Option<bool>,
    dropout: f64,
    seed: u64,
) {
    let d = heads * dh;
    let mut rng = Rng::new(seed);
    let config = MhaConfig {
        d_model: d,
        num_heads: heads,
        mask,
        dropout,
        seed: 11,
    };
    let mut m = MultiheadAttention::<f64>::new("attn", config.clone(), &mut rng).unwrap();
    // Non-zero biases so their gradients and the dead-row rule are exercised.
    m.in_proj_bias.value = rng.uniform_tensor(&[3 * d], 0.5);
    m.out_proj.as_mut().unwrap().bias.as_mut().unwrap().value = rng.uniform_tensor(&[d], 0.5);
    let mut xq = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let mut xkv = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let r = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let keep = padding.map(|all_pad| random_keep(&mut rng, b, t, all_pad));
    let keep = keep.as_deref();
    let phase = Phase::Train { step: 3 };

    let mut cache = MhaCache::new(&config, b, t);
    let mut out = Tensor::zeros(&[b, t, d]);
    m.forward(&mut out, &mut cache, &xq, &xkv, keep, phase);
    assert!(out.as_slice().iter().all(|v| v.is_finite()));
    m.zero_grad();
    let (mut dxq, mut dxkv) = (Tensor::zeros(&[b, t, d]), Tensor::zeros(&[b, t, d]));
    m.backward(&mut dxq, &mut dxkv, &r, &xq, &xkv, &mut cache);

    let what = format!("mha b{b} t{t} h{heads} dh{dh} {mask:?} pad {padding:?} p {dropout}");
    let errs = check_module(&mut m, TOL, &mut |m| {
        mha_loss(m, &xq, &xkv, keep, phase, &r)
    });
    assert_all_pass(&errs, &what);
    let e = check_input("x_q", &mut xq, &dxq, TOL, &mut |x| {
        mha_loss(&m, x, &xkv, keep, phase, &r)
    });
    assert!(e.passes(), "{what}: {e}");
    let e = check_input("x_kv", &mut xkv, &dxkv, TOL, &mut |x| {
        mha_loss(&m, &xq, x, keep, phase, &r)
    });
    assert!(e.passes(), "{what}: {e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn mha_gradients_match_finite_differences(
        b in 1usize..=3, t in 1usize..=4, heads in 1usize..=2, dh in 1usize..=3,
        causal: bool, pad in 0u8..3, drop: bool, seed in 0u64..1000,
    ) {
        let mask = if causal { AttentionMask::Causal } else { AttentionMask::Bidirectional };
        let padding = match pad { 0 => None, 1 => Some(false), _ => Some(true) };
        check_mha(b, t, heads, dh, mask, padding, if drop { 0.3 } else { 0.0 }, seed);
    }
}

#[test]
fn mha_edge_shapes_batch1_seq1_and_all_padding() {
    for mask in [AttentionMask::Causal, AttentionMask::Bidirectional] {
        check_mha(1, 1, 1, 2, mask, None, 0.0, 1);
        check_mha(1, 1, 2, 2, mask, Some(false), 0.0, 2);
        check_mha(1, 3, 2, 2, mask, Some(true), 0.0, 3);
        check_mha(2, 3, 1, 3, mask, Some(true), 0.2, 4);
        // Longer than one causal row block (32 rows): the blocked kernels' block edges.
        check_mha(2, 37, 2, 1, mask, Some(false), 0.2, 5);
    }
}

#[test]
fn mha_fully_masked_rows_are_zero_and_weights_are_distributions() {
    let mut rng = Rng::new(5);
    let config = MhaConfig {
        d_model: 4,
        num_heads: 2,
        mask: AttentionMask::Causal,
        dropout: 0.0,
        seed: 0,
    };
    let mut m = MultiheadAttention::<f64>::new("a", config.clone(), &mut rng).unwrap();
    m.out_proj.as_mut().unwrap().bias.as_mut().unwrap().value = Tensor::full(&[4], 0.7);
    let (b, t) = (2, 4);
    let x = rng.normal_tensor::<f64>(&[b, t, 4], 1.0);
    // Sequence 0: all padding. Sequence 1: left-padded by 2.
    let keep = [false, false, false, false, false, false, true, true];
    let mut cache = MhaCache::new(&config, b, t);
    let mut out = Tensor::zeros(&[b, t, 4]);
    m.forward(&mut out, &mut cache, &x, &x, Some(&keep), Phase::Eval);
    let live = cache.live_rows().to_vec();
    assert_eq!(live, [false, false, false, false, false, false, true, true]);
    for (row, &l) in out.as_slice().chunks_exact(4).zip(&live) {
        assert!(row.iter().all(|v| v.is_finite()));
        if !l {
            assert_eq!(row, [0.0; 4], "a query that sees no key outputs exactly 0");
        } else {
            assert!(row.iter().any(|&v| v != 0.0));
        }
    }
    let w = cache.weights();
    assert_eq!(w.shape(), [b, 2, t, t]);
    for (r, row) in w.as_slice().chunks_exact(t).enumerate() {
        let (bi, qi) = (r / (2 * t), r % t);
        let sum: f64 = row.iter().sum();
        if live[bi * t + qi] {
            assert!((sum - 1.0).abs() < 1e-12, "row {r} sums to {sum}");
            for (j, &p) in row.iter().enumerate() {
                if !keep[bi * t + j] || j > qi {
                    assert_eq!(p, 0.0, "masked key {j} of row {r} has weight {p}");
                }
            }
        } else {
            assert_eq!(sum, 0.0);
        }
    }
    let mut mean = Tensor::zeros(&[b, t, t]);
    m.mean_weights(&mut mean, &cache);
    for i in 0..b * t * t {
        let (bi, rest) = (i / (t * t), i % (t * t));
        let expect =
            (w.as_slice()[bi * 2 * t * t + rest] + w.as_slice()[(bi * 2 + 1) * t * t + rest]) / 2.0;
        assert_eq!(mean.as_slice()[i], expect);
    }
    // Backward through dead rows gives finite, zero-contribution gradients.
    m.zero_grad();
    let dy = Tensor::full(&[b, t, 4], 1.0);
    let (mut dq, mut dkv) = (Tensor::zeros(&[b, t, 4]), Tensor::zeros(&[b, t, 4]));
    m.backward(&mut dq, &mut dkv, &dy, &x, &x, &mut cache);
    // d out_proj.bias = number of live rows (dead rows pass no gradient).
    let live_count = live.iter().filter(|&&l| l).count() as f64;
    assert_eq!(
        m.out_proj
            .as_ref()
            .unwrap()
            .bias
            .as_ref()
            .unwrap()
            .grad
            .as_slice(),
        [live_count; 4]
    );
    assert!(dq.as_slice()[..16].iter().all(|&v| v == 0.0));
}

#[test]
fn mha_gradients_accumulate() {
    let mut rng = Rng::new(9);
    let config = MhaConfig {
        d_model: 4,
        num_heads: 2,
        mask: AttentionMask::Bidirectional,
        dropout: 0.0,
        seed: 0,
    };
    let mut m = MultiheadAttention::<f64>::new("a", config.clone(), &mut rng).unwrap();
    let x = rng.normal_tensor::<f64>(&[2, 3, 4], 1.0);
    let r = rng.normal_tensor::<f64>(&[2, 3, 4], 1.0);
    let mut cache = MhaCache::new(&config, 2, 3);
    let mut out = Tensor::zeros(&[2, 3, 4]);
    m.forward(&mut out, &mut cache, &x, &x, None, Phase::Eval);
    let (mut dq, mut dkv) = (Tensor::zeros(&[2, 3, 4]), Tensor::zeros(&[2, 3, 4]));
    m.zero_grad();
    m.backward(&mut dq, &mut dkv, &r, &x, &x, &mut cache);
    let once = grads(&m);
    let dq1 = dq.clone();
    m.backward(&mut dq, &mut dkv, &r, &x, &x, &mut cache);
    for ((name, g1), (_, g2)) in once.iter().zip(grads(&m)) {
        for (a, b) in g1.iter().zip(&g2) {
            assert_close(2.0 * a, *b, name);
        }
    }
    assert_eq!(dq, dq1, "input gradients are assigned, not accumulated");
}

#[test]
fn config_errors_name_fields_and_values() {
    let mut rng = Rng::new(0);
    let bad = MhaConfig {
        d_model: 50,
        num_heads: 3,
        mask: AttentionMask::Causal,
        dropout: 0.1,
        seed: 0,
    };
    let err = MultiheadAttention::<f32>::new("a", bad.clone(), &mut rng).unwrap_err();
    assert_eq!(
        err,
        AttnConfigError::HeadsDoNotDivide {
            d_model: 50,
            num_heads: 3
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("num_heads = 3") && msg.contains("d_model = 50"),
        "{msg}"
    );
    let zero = MhaConfig {
        num_heads: 0,
        ..bad.clone()
    };
    assert_eq!(
        zero.validate(),
        Err(AttnConfigError::ZeroSize { field: "num_heads" })
    );
    let p = MhaConfig {
        num_heads: 2,
        dropout: 1.0,
        ..bad
    };
    assert!(matches!(
        p.validate(),
        Err(AttnConfigError::Dropout {
            field: "dropout",
            ..
        })
    ));
    let mut block = TransformerBlockConfig::sasrec(8, 2, 0.2, 0);
    block.d_ff = 0;
    assert_eq!(
        block.validate(),
        Err(AttnConfigError::ZeroSize { field: "d_ff" })
    );
    block.d_ff = 8;
    block.eps = 0.0;
    assert!(matches!(block.validate(), Err(AttnConfigError::Eps { .. })));
    block.eps = f64::NAN;
    assert!(block.validate().is_err());
    let pool = AttentionPoolingConfig {
        d_model: 4,
        d_att: 0,
    };
    assert_eq!(
        pool.validate(),
        Err(AttnConfigError::ZeroSize { field: "d_att" })
    );
    assert!(
        TransformerEncoder::<f32>::new(
            "e",
            &TransformerBlockConfig::sasrec(8, 2, 0.2, 0),
            0,
            true,
            &mut rng
        )
        .is_err()
    );
}

// ---------------------------------------------------------------- FeedForward

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn feedforward_gradients_match_finite_differences(
        rows in 1usize..=5, d in 1usize..=4, d_ff in 1usize..=5, act in 0u8..3, drop: bool,
        seed in 0u64..1000,
    ) {
        let activation = match act {
            0 => Activation::Relu,
            1 => Activation::Gelu(Gelu::Erf),
            _ => Activation::Gelu(Gelu::Tanh),
        };
        let config = FeedForwardConfig { d_model: d, d_ff, activation, dropout: if drop { 0.4 } else { 0.0 }, seed: 7 };
        let mut rng = Rng::new(seed);
        let mut ff = FeedForward::<f64>::new("ff", config.clone(), &mut rng).unwrap();
        let mut x = rng.normal_tensor::<f64>(&[rows, 1, d], 1.0);
        let r = rng.normal_tensor::<f64>(&[rows, 1, d], 1.0);
        let phase = Phase::Train { step: 1 };
        let loss = |ff: &FeedForward<f64>, x: &Tensor<f64>| {
            let mut c = FeedForwardCache::new(ff.config(), rows);
            let mut y = Tensor::zeros(x.shape());
            ff.forward(&mut y, &mut c, x, phase);
            dot(&y, &r)
        };
        let mut cache = FeedForwardCache::new(&config, rows);
        let mut y = Tensor::zeros(&[rows, 1, d]);
        ff.forward(&mut y, &mut cache, &x, phase);
        ff.zero_grad();
        let mut dx = Tensor::zeros(&[rows, 1, d]);
        ff.backward(Some(&mut dx), &r, &x, &mut cache);
        assert_all_pass(&check_module(&mut ff, TOL, &mut |m| loss(m, &x)), "feedforward");
        let e = check_input("x", &mut x, &dx, TOL, &mut |x| loss(&ff, x));
        prop_assert!(e.passes(), "{}", e);
    }
}

// ---------------------------------------------------------------- TransformerBlock

#[allow(clippy::too_many_arguments)]
fn block_config(
    d: usize,
    heads: usize,
    d_ff: usize,
    norm: NormPlacement,
    mask: AttentionMask,
    dropout: f64,
    zero_padded: bool,
    activation: Activation,
) -> TransformerBlockConfig {
    TransformerBlockConfig {
        d_model: d,
        num_heads: heads,
        d_ff,
        activation,
        dropout,
        mask,
        norm,
        eps: 1e-5,
        zero_padded_outputs: zero_padded,
        mask_padded_keys: true,
        output_projection: true,
        seed: 42,
    }
}

/// Random non-trivial layer-norm affine parameters (the defaults 1 and 0 hide bugs).
fn perturb_norms<M: Module<f64>>(m: &mut M, rng: &mut Rng) {
    m.visit_params_mut(&mut |p| {
        if p.name.contains("norm") {
            let base = if p.name.ends_with("weight") { 1.0 } else { 0.0 };
            for v in p.value.as_mut_slice() {
                *v = base + rng.uniform(0.3);
            }
        }
    });
}

fn block_loss(
    m: &TransformerBlock<f64>,
    x: &Tensor<f64>,
    keep: Option<&[bool]>,
    phase: Phase,
    r: &Tensor<f64>,
) -> f64 {
    let s = x.shape();
    let mut c = TransformerBlockCache::new(m.config(), s[0], s[1]);
    let mut y = Tensor::zeros(s);
    m.forward(&mut y, &mut c, x, keep, phase);
    dot(&y, r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(18))]

    #[test]
    fn block_gradients_match_finite_differences(
        b in 1usize..=2, t in 1usize..=4, heads in 1usize..=2, d_ff in 1usize..=4,
        norm in 0u8..3, causal: bool, pad in 0u8..3, drop: bool, zero_padded: bool, gelu: bool,
        mask_keys: bool, seed in 0u64..1000,
    ) {
        let norm = [NormPlacement::Post, NormPlacement::Pre, NormPlacement::SasRec][norm as usize];
        let mask = if causal { AttentionMask::Causal } else { AttentionMask::Bidirectional };
        let act = if gelu { Activation::Gelu(Gelu::Erf) } else { Activation::Relu };
        // Width 3 (one head) or 4 (two heads of 2). A layer norm over 2 elements is nearly a sign function
        // (x1 - x2) / |x1 - x2|: its third derivative is so large that the central difference at step 1e-5
        // is off by ~1e-6 relative (measured: the error falls as step^2, converging to the analytic value).
        let dh = if heads == 1 { 3 } else { 2 };
        let d = heads * dh;
        let mut config = block_config(d, heads, d_ff, norm, mask, if drop { 0.25 } else { 0.0 }, zero_padded, act);
        config.mask_padded_keys = mask_keys;
        let mut rng = Rng::new(seed);
        let mut m = TransformerBlock::<f64>::new("layers.0", config.clone(), &mut rng).unwrap();
        perturb_norms(&mut m, &mut rng);
        let mut x = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
        let r = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
        let keep = match pad { 0 => None, 1 => Some(random_keep(&mut rng, b, t, false)), _ => Some(random_keep(&mut rng, b, t, true)) };
        let keep = keep.as_deref();
        let phase = Phase::Train { step: 5 };
        let mut cache = TransformerBlockCache::new(&config, b, t);
        let mut y = Tensor::zeros(&[b, t, d]);
        m.forward(&mut y, &mut cache, &x, keep, phase);
        prop_assert!(y.as_slice().iter().all(|v| v.is_finite()));
        m.zero_grad();
        let mut dx = Tensor::zeros(&[b, t, d]);
        m.backward(&mut dx, &r, &x, keep, &mut cache);
        let what = format!("{norm:?} {mask:?} b{b} t{t} h{heads} dh{dh} pad {pad} drop {drop}");
        assert_all_pass(&check_module(&mut m, TOL, &mut |m| block_loss(m, &x, keep, phase, &r)), &what);
        let e = check_input("x", &mut x, &dx, TOL, &mut |x| block_loss(&m, x, keep, phase, &r));
        prop_assert!(e.passes(), "{}: {}", what, e);
    }
}

#[test]
fn block_gradients_accumulate_and_names_match_pytorch() {
    let config = block_config(
        4,
        2,
        6,
        NormPlacement::Post,
        AttentionMask::Bidirectional,
        0.0,
        false,
        Activation::Relu,
    );
    let mut rng = Rng::new(1);
    let mut m = TransformerBlock::<f64>::new("layers.0", config.clone(), &mut rng).unwrap();
    let mut names = Vec::new();
    m.visit_params(&mut |p| names.push((p.name.clone(), p.value.shape().to_vec())));
    let expect: Vec<(String, Vec<usize>)> = [
        ("self_attn.in_proj_weight", vec![12, 4]),
        ("self_attn.in_proj_bias", vec![12]),
        ("self_attn.out_proj.weight", vec![4, 4]),
        ("self_attn.out_proj.bias", vec![4]),
        ("linear1.weight", vec![6, 4]),
        ("linear1.bias", vec![6]),
        ("linear2.weight", vec![4, 6]),
        ("linear2.bias", vec![4]),
        ("norm1.weight", vec![4]),
        ("norm1.bias", vec![4]),
        ("norm2.weight", vec![4]),
        ("norm2.bias", vec![4]),
    ]
    .into_iter()
    .map(|(n, s)| (format!("layers.0.{n}"), s))
    .collect();
    assert_eq!(names, expect);

    let x = rng.normal_tensor::<f64>(&[2, 3, 4], 1.0);
    let r = rng.normal_tensor::<f64>(&[2, 3, 4], 1.0);
    let mut cache = TransformerBlockCache::new(&config, 2, 3);
    let mut y = Tensor::zeros(&[2, 3, 4]);
    m.forward(&mut y, &mut cache, &x, None, Phase::Eval);
    let mut dx = Tensor::zeros(&[2, 3, 4]);
    m.zero_grad();
    m.backward(&mut dx, &r, &x, None, &mut cache);
    let once = grads(&m);
    m.backward(&mut dx, &r, &x, None, &mut cache);
    for ((name, g1), (_, g2)) in once.iter().zip(grads(&m)) {
        for (a, b) in g1.iter().zip(&g2) {
            assert_close(2.0 * a, *b, name);
        }
    }
}

#[test]
fn dropout_zero_in_training_is_exactly_eval() {
    for norm in [
        NormPlacement::Post,
        NormPlacement::Pre,
        NormPlacement::SasRec,
    ] {
        let config = block_config(
            4,
            2,
            4,
            norm,
            AttentionMask::Causal,
            0.0,
            true,
            Activation::Relu,
        );
        let mut rng = Rng::new(3);
        let m = TransformerBlock::<f32>::new("b", config.clone(), &mut rng).unwrap();
        let x = rng.normal_tensor::<f32>(&[2, 5, 4], 1.0);
        let keep = [true, true, true, true, false, false, true, true, true, true];
        let mut c = TransformerBlockCache::new(&config, 2, 5);
        let (mut y1, mut y2) = (Tensor::zeros(&[2, 5, 4]), Tensor::zeros(&[2, 5, 4]));
        m.forward(&mut y1, &mut c, &x, Some(&keep), Phase::Eval);
        m.forward(&mut y2, &mut c, &x, Some(&keep), Phase::Train { step: 9 });
        assert_eq!(y1, y2, "{norm:?}");
        // And dropout > 0 changes the output in training only.
        let mut cfg = config.clone();
        cfg.dropout = 0.5;
        let m2 = TransformerBlock::<f32>::new("b", cfg.clone(), &mut Rng::new(3)).unwrap();
        let mut y3 = Tensor::zeros(&[2, 5, 4]);
        m2.forward(&mut y3, &mut c, &x, Some(&keep), Phase::Eval);
        assert_eq!(y1, y3, "{norm:?}: eval ignores dropout");
        m2.forward(&mut y3, &mut c, &x, Some(&keep), Phase::Train { step: 9 });
        assert_ne!(
            y1, y3,
            "{norm:?}: dropout 0.5 must change the training output"
        );
    }
}

// ---------------------------------------------------------------- two-block SASRec stack

fn encoder_loss(
    m: &TransformerEncoder<f64>,
    x: &Tensor<f64>,
    keep: Option<&[bool]>,
    phase: Phase,
    r: &Tensor<f64>,
) -> f64 {
    let s = x.shape();
    let mut c = TransformerEncoderCache::new(m, s[0], s[1]);
    let mut y = Tensor::zeros(s);
    m.forward(&mut y, &mut c, x, keep, phase);
    dot(&y, r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn sasrec_two_block_stack_gradients_match(
        b in 1usize..=2, t in 1usize..=4, heads in 1usize..=2, pad: bool, drop: bool, seed in 0u64..1000,
    ) {
        let d = heads + 2; // 3 or 4: see block_gradients_match_finite_differences
        let mut config = TransformerBlockConfig::sasrec(d, heads, if drop { 0.2 } else { 0.0 }, 17);
        config.eps = 1e-5;
        let mut rng = Rng::new(seed);
        let mut m = TransformerEncoder::<f64>::new("enc", &config, 2, true, &mut rng).unwrap();
        perturb_norms(&mut m, &mut rng);
        let mut x = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
        let keep = pad.then(|| random_keep(&mut rng, b, t, false));
        let keep = keep.as_deref();
        let r = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
        let phase = Phase::Train { step: 2 };
        let mut cache = TransformerEncoderCache::new(&m, b, t);
        let mut y = Tensor::zeros(&[b, t, d]);
        m.forward(&mut y, &mut cache, &x, keep, phase);
        m.zero_grad();
        let mut dx = Tensor::zeros(&[b, t, d]);
        m.backward(&mut dx, &r, &x, keep, &mut cache);
        let errs = check_module(&mut m, TOL, &mut |m| encoder_loss(m, &x, keep, phase, &r));
        prop_assert_eq!(errs.len(), 2 * 12 + 2);
        assert_all_pass(&errs, "sasrec stack");
        let e = check_input("x", &mut x, &dx, TOL, &mut |x| encoder_loss(&m, x, keep, phase, &r));
        prop_assert!(e.passes(), "{}", e);
    }
}

/// Changing the inputs at padded positions leaves real outputs and every parameter gradient exactly
/// unchanged (loss over real positions only), for every norm placement and the whole stack.
#[test]
fn padding_invariance_of_blocks_and_stack() {
    let (b, t, d) = (3, 6, 4);
    // Left padding, right padding and one all-padding sequence.
    let keep: Vec<bool> = [
        [false, false, true, true, true, true],
        [true, true, true, true, false, false],
        [false; 6],
    ]
    .concat();
    for norm in [
        NormPlacement::Post,
        NormPlacement::Pre,
        NormPlacement::SasRec,
    ] {
        for mask in [AttentionMask::Causal, AttentionMask::Bidirectional] {
            let mut config = block_config(d, 2, 5, norm, mask, 0.3, true, Activation::Relu);
            config.seed = 8;
            let mut rng = Rng::new(21);
            let mut enc =
                TransformerEncoder::<f32>::new("enc", &config, 2, true, &mut rng).unwrap();
            let x1 = rng.normal_tensor::<f32>(&[b, t, d], 1.0);
            let mut x2 = x1.clone();
            for (i, v) in x2.as_mut_slice().iter_mut().enumerate() {
                if !keep[i / d] {
                    *v = 100.0 * rng.normal() as f32 - 7.0;
                }
            }
            let r = rng.normal_tensor::<f32>(&[b, t, d], 1.0);
            let mut r = r;
            let c = r.cols();
            for (row, &k) in r.as_mut_slice().chunks_exact_mut(c).zip(&keep) {
                if !k {
                    row.fill(0.0);
                }
            }
            let run = |enc: &mut TransformerEncoder<f32>, x: &Tensor<f32>| {
                let mut cache = TransformerEncoderCache::new(enc, b, t);
                let mut y = Tensor::zeros(&[b, t, d]);
                let phase = Phase::Train { step: 4 };
                enc.forward(&mut y, &mut cache, x, Some(&keep), phase);
                enc.zero_grad();
                let mut dx = Tensor::zeros(&[b, t, d]);
                enc.backward(&mut dx, &r, x, Some(&keep), &mut cache);
                let mut g = Vec::new();
                enc.visit_params(&mut |p| g.push(p.grad.to_vec()));
                (y, dx, g)
            };
            let (y1, dx1, g1) = run(&mut enc, &x1);
            let (y2, dx2, g2) = run(&mut enc, &x2);
            for i in 0..b * t * d {
                if keep[i / d] {
                    assert_eq!(
                        y1.as_slice()[i],
                        y2.as_slice()[i],
                        "{norm:?} {mask:?} y[{i}]"
                    );
                    assert_eq!(
                        dx1.as_slice()[i],
                        dx2.as_slice()[i],
                        "{norm:?} {mask:?} dx[{i}]"
                    );
                }
            }
            assert_eq!(
                g1, g2,
                "{norm:?} {mask:?}: parameter gradients depend on padded inputs"
            );
            assert!(g1.iter().flatten().any(|&v| v != 0.0));
        }
    }
}

#[test]
fn mha_padding_invariance() {
    let (b, t, d) = (2, 5, 6);
    let keep = [
        true, true, true, false, false, false, false, true, true, true,
    ];
    for mask in [AttentionMask::Causal, AttentionMask::Bidirectional] {
        let config = MhaConfig {
            d_model: d,
            num_heads: 3,
            mask,
            dropout: 0.2,
            seed: 1,
        };
        let mut rng = Rng::new(2);
        let mut m = MultiheadAttention::<f64>::new("a", config.clone(), &mut rng).unwrap();
        let x1 = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
        let mut x2 = x1.clone();
        for (i, v) in x2.as_mut_slice().iter_mut().enumerate() {
            if !keep[i / d] {
                *v = -50.0 + rng.normal();
            }
        }
        let r = zero_padded(rng.normal_tensor::<f64>(&[b, t, d], 1.0), &keep);
        let mut run = |x: &Tensor<f64>| {
            let mut cache = MhaCache::new(&config, b, t);
            let mut y = Tensor::zeros(&[b, t, d]);
            m.forward(
                &mut y,
                &mut cache,
                x,
                x,
                Some(&keep),
                Phase::Train { step: 1 },
            );
            m.zero_grad();
            let (mut dq, mut dkv) = (Tensor::zeros(&[b, t, d]), Tensor::zeros(&[b, t, d]));
            m.backward(&mut dq, &mut dkv, &r, x, x, &mut cache);
            (y, dq, dkv, grads(&m))
        };
        let (y1, dq1, dkv1, g1) = run(&x1);
        let (y2, dq2, dkv2, g2) = run(&x2);
        for i in 0..b * t * d {
            if keep[i / d] {
                assert_eq!(y1.as_slice()[i], y2.as_slice()[i], "{mask:?} y[{i}]");
                assert_eq!(dq1.as_slice()[i], dq2.as_slice()[i]);
                assert_eq!(dkv1.as_slice()[i], dkv2.as_slice()[i]);
            } else {
                // Padded keys receive no gradient through keys and values.
                assert_eq!(dkv1.as_slice()[i], 0.0);
            }
        }
        assert_eq!(g1, g2, "{mask:?}");
    }
}

/// A smaller last batch reuses the caches (resize) and gives the same rows as a fresh cache.
#[test]
fn cache_reuse_with_smaller_batch_matches_fresh_cache() {
    let config = TransformerBlockConfig::sasrec(4, 2, 0.0, 0);
    let mut rng = Rng::new(4);
    let enc = TransformerEncoder::<f64>::new("e", &config, 2, true, &mut rng).unwrap();
    let mut big = TransformerEncoderCache::new(&enc, 3, 5);
    let x3 = rng.normal_tensor::<f64>(&[3, 5, 4], 1.0);
    let mut y3 = Tensor::zeros(&[3, 5, 4]);
    enc.forward(&mut y3, &mut big, &x3, None, Phase::Eval);
    let x2 = rng.normal_tensor::<f64>(&[2, 5, 4], 1.0);
    let (mut ya, mut yb) = (Tensor::zeros(&[2, 5, 4]), Tensor::zeros(&[2, 5, 4]));
    enc.forward(&mut ya, &mut big, &x2, None, Phase::Eval);
    let mut fresh = TransformerEncoderCache::new(&enc, 2, 5);
    enc.forward(&mut yb, &mut fresh, &x2, None, Phase::Eval);
    assert_eq!(ya, yb);
}

// ---------------------------------------------------------------- AttentionPooling

fn pool_loss(
    m: &AttentionPooling<f64>,
    cfg: &AttentionPoolingConfig,
    h: &Tensor<f64>,
    keep: Option<&[bool]>,
    r: &Tensor<f64>,
) -> f64 {
    let s = h.shape();
    let mut c = AttentionPoolingCache::new(cfg, s[0], s[1]);
    let mut pooled = Tensor::zeros(&[s[0], s[2]]);
    let mut w = Tensor::zeros(&[s[0], s[1]]);
    m.forward(&mut pooled, &mut w, &mut c, h, keep);
    dot(&pooled, r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn attention_pooling_gradients_match(
        b in 1usize..=3, t in 1usize..=5, d in 1usize..=4, d_att in 1usize..=4, pad in 0u8..3,
        seed in 0u64..1000,
    ) {
        let cfg = AttentionPoolingConfig { d_model: d, d_att };
        let mut rng = Rng::new(seed);
        let mut m = AttentionPooling::<f64>::new("pool", &cfg, &mut rng).unwrap();
        let mut h = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
        let r = rng.normal_tensor::<f64>(&[b, d], 1.0);
        let keep = match pad { 0 => None, 1 => Some(random_keep(&mut rng, b, t, false)), _ => Some(random_keep(&mut rng, b, t, true)) };
        let keep = keep.as_deref();
        let mut c = AttentionPoolingCache::new(&cfg, b, t);
        let mut pooled = Tensor::zeros(&[b, d]);
        let mut w = Tensor::zeros(&[b, t]);
        m.forward(&mut pooled, &mut w, &mut c, &h, keep);
        for bi in 0..b {
            let row = &w.as_slice()[bi * t..(bi + 1) * t];
            let any = keep.is_none_or(|k| k[bi * t..(bi + 1) * t].iter().any(|&x| x));
            let sum: f64 = row.iter().sum();
            let ok = if any { (sum - 1.0).abs() < 1e-12 } else { sum == 0.0 };
            prop_assert!(ok, "weights of sequence {} sum to {}", bi, sum);
            if !any {
                prop_assert!(pooled.as_slice()[bi * d..(bi + 1) * d].iter().all(|&v| v == 0.0));
            }
        }
        m.zero_grad();
        let mut dh = Tensor::zeros(&[b, t, d]);
        m.backward(&mut dh, &r, &h, &mut c);
        assert_all_pass(&check_module(&mut m, TOL, &mut |m| pool_loss(m, &cfg, &h, keep, &r)), "pooling");
        let e = check_input("h", &mut h, &dh, TOL, &mut |h| pool_loss(&m, &cfg, h, keep, &r));
        prop_assert!(e.passes(), "{}", e);
    }
}

#[test]
fn attention_pooling_reference_values() {
    // d = 1, d_att = 1, W = 0 so every score is v * tanh(b): uniform weights over real positions,
    // pooled = mean of the real hidden states.
    let cfg = AttentionPoolingConfig {
        d_model: 1,
        d_att: 1,
    };
    let mut m = AttentionPooling::<f64>::new("p", &cfg, &mut Rng::new(0)).unwrap();
    m.proj.weight.value.fill(0.0);
    let h = Tensor::from_vec(&[1, 4, 1], vec![1.0, 2.0, 3.0, 10.0]).unwrap();
    let keep = [true, true, true, false];
    let mut c = AttentionPoolingCache::new(&cfg, 1, 4);
    let (mut pooled, mut w) = (Tensor::zeros(&[1, 1]), Tensor::zeros(&[1, 4]));
    m.forward(&mut pooled, &mut w, &mut c, &h, Some(&keep));
    assert!((pooled.as_slice()[0] - 2.0).abs() < 1e-15);
    for (got, want) in w
        .as_slice()
        .iter()
        .zip([1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0])
    {
        assert!((got - want).abs() < 1e-15);
    }
}

#[test]
fn attention_pooling_padding_invariance_and_accumulation() {
    let cfg = AttentionPoolingConfig {
        d_model: 3,
        d_att: 4,
    };
    let (b, t, d) = (3, 5, 3);
    let keep = [
        false, false, true, true, true, true, true, true, true, false, false, false, false, false,
        false,
    ];
    let mut rng = Rng::new(12);
    let mut m = AttentionPooling::<f32>::new("pool", &cfg, &mut rng).unwrap();
    let h1 = rng.normal_tensor::<f32>(&[b, t, d], 1.0);
    let mut h2 = h1.clone();
    for (i, v) in h2.as_mut_slice().iter_mut().enumerate() {
        if !keep[i / d] {
            *v = 40.0 * rng.normal() as f32;
        }
    }
    let r = rng.normal_tensor::<f32>(&[b, d], 1.0);
    let mut run = |h: &Tensor<f32>, twice: bool| {
        let mut c = AttentionPoolingCache::new(&cfg, b, t);
        let (mut pooled, mut w) = (Tensor::zeros(&[b, d]), Tensor::zeros(&[b, t]));
        m.forward(&mut pooled, &mut w, &mut c, h, Some(&keep));
        m.zero_grad();
        let mut dh = Tensor::zeros(&[b, t, d]);
        m.backward(&mut dh, &r, h, &mut c);
        if twice {
            m.backward(&mut dh, &r, h, &mut c);
        }
        let mut g = Vec::new();
        m.visit_params(&mut |p| g.push(p.grad.to_vec()));
        (pooled, w, dh, g)
    };
    let (p1, w1, dh1, g1) = run(&h1, false);
    let (p2, w2, dh2, g2) = run(&h2, false);
    assert_eq!(p1, p2);
    assert_eq!(w1, w2);
    assert_eq!(g1, g2);
    for i in 0..b * t * d {
        if keep[i / d] {
            assert_eq!(dh1.as_slice()[i], dh2.as_slice()[i]);
        } else {
            assert_eq!(dh1.as_slice()[i], 0.0, "padded positions get no gradient");
        }
    }
    // All-padding sequence 2 pools to exact zeros.
    assert!(p1.as_slice()[2 * d..].iter().all(|&v| v == 0.0));
    let (_, _, dh3, g3) = run(&h1, true);
    assert_eq!(dh3, dh1, "input gradients are assigned");
    for (a, b2) in g1.iter().flatten().zip(g3.iter().flatten()) {
        assert!((2.0 * a - b2).abs() <= 1e-6 * a.abs().max(1.0), "{a} {b2}");
    }
}
