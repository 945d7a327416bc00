//! Finite-difference gradient checks (f64, `GradTolerance::STRICT`) for `Linear`, `LayerNorm`,
//! `Embedding`, `PositionalEmbedding`, `Dropout` and every loss, on random small shapes including
//! batch 1, sequence length 1 and all-padding rows; gradient accumulation; masks contributing exactly
//! zero; and a check that the harness itself fails on a wrong gradient.

use proptest::prelude::*;
use seqrec_nn::gradcheck::{GradError, GradTolerance, check_input, check_module, dot};
use seqrec_nn::loss::{
    bce_with_logits, bpr, bpr_max, gbce, gbce_beta, sampled_softmax, softmax_cross_entropy,
};
use seqrec_nn::{
    Dropout, DropoutCache, Embedding, LayerNorm, LayerNormCache, Linear, Module, Padding,
    PositionMask, PositionalEmbedding, init::Rng,
};
use seqrec_tensor::Tensor;

const TOL: GradTolerance = GradTolerance::STRICT;

fn assert_all_pass(errors: &[GradError]) {
    assert!(!errors.is_empty(), "nothing was checked");
    for e in errors {
        assert!(e.passes(), "{e}");
    }
}

fn grads(m: &dyn Module<f64>) -> Vec<Vec<f64>> {
    let mut v = Vec::new();
    m.visit_params(&mut |p| v.push(p.grad.to_vec()));
    v
}

// ---------------------------------------------------------------- Linear

fn linear_case(batch: usize, seq: usize, din: usize, dout: usize, bias: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut fc = Linear::<f64>::new("fc", din, dout, bias, &mut rng);
    let mut x = rng.normal_tensor::<f64>(&[batch, seq, din], 1.0);
    let r = rng.normal_tensor::<f64>(&[batch, seq, dout], 1.0);
    let mut y = Tensor::zeros(&[batch, seq, dout]);
    let mut dx = Tensor::zeros(&[batch, seq, din]);
    fc.zero_grad();
    fc.forward(&mut y, &x);
    fc.backward(Some(&mut dx), &r, &x);
    assert_all_pass(&check_module(&mut fc, TOL, &mut |m: &mut Linear<f64>| {
        let mut y = Tensor::zeros(&[batch, seq, dout]);
        m.forward(&mut y, &x);
        dot(&y, &r)
    }));
    let e = check_input("x", &mut x, &dx, TOL, &mut |x| {
        let mut y = Tensor::zeros(&[batch, seq, dout]);
        fc.forward(&mut y, x);
        dot(&y, &r)
    });
    assert!(e.passes(), "{e}");
}

// ---------------------------------------------------------------- LayerNorm

fn layernorm_case(rows: usize, d: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut ln = LayerNorm::<f64>::new("ln", d, 1e-5);
    ln.weight.value = rng.normal_tensor(&[d], 1.0);
    ln.bias.value = rng.normal_tensor(&[d], 1.0);
    let mut x = rng.normal_tensor::<f64>(&[rows, d], 1.5);
    let r = rng.normal_tensor::<f64>(&[rows, d], 1.0);
    let mut y = Tensor::zeros(&[rows, d]);
    let mut dx = Tensor::zeros(&[rows, d]);
    let mut cache = LayerNormCache::new(rows);
    ln.zero_grad();
    ln.forward(&mut y, &mut cache, &x);
    ln.backward(&mut dx, &r, &x, &cache);
    assert_all_pass(&check_module(&mut ln, TOL, &mut |m: &mut LayerNorm<
        f64,
    >| {
        let mut y = Tensor::zeros(&[rows, d]);
        m.forward(&mut y, &mut LayerNormCache::new(rows), &x);
        dot(&y, &r)
    }));
    let e = check_input("x", &mut x, &dx, TOL, &mut |x| {
        let mut y = Tensor::zeros(&[rows, d]);
        ln.forward(&mut y, &mut LayerNormCache::new(rows), x);
        dot(&y, &r)
    });
    assert!(e.passes(), "{e}");
}

// ---------------------------------------------------------------- Embedding + positions

/// Ids in `[0, num)` where id 0 (padding) appears with probability about 1/3; `r` is zero at padded
/// positions, as a masked loss would make it.
fn ids_and_r(rng: &mut Rng, rows: usize, d: usize, num: usize) -> (Vec<u32>, Tensor<f64>) {
    let ids: Vec<u32> = (0..rows)
        .map(|_| {
            if rng.uniform01() < 0.33 {
                0
            } else {
                1 + (rng.next_u64() % (num as u64 - 1)) as u32
            }
        })
        .collect();
    let mut r = rng.normal_tensor::<f64>(&[rows, d], 1.0);
    for (i, &id) in ids.iter().enumerate() {
        if id == 0 {
            r.as_mut_slice()[i * d..(i + 1) * d].fill(0.0);
        }
    }
    (ids, r)
}

fn embedding_case(batch: usize, seq: usize, d: usize, num: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut emb = Embedding::<f64>::new("emb", num, d, 1.0, Padding::Skip(0), &mut rng).unwrap();
    let (ids, r) = ids_and_r(&mut rng, batch * seq, d, num);
    let mut y = Tensor::zeros(&[batch, seq, d]);
    emb.zero_grad();
    emb.forward(&mut y, &ids);
    emb.backward(&r.clone().reshaped(&[batch, seq, d]), &ids);
    assert_all_pass(&check_module(&mut emb, TOL, &mut |m: &mut Embedding<
        f64,
    >| {
        let mut y = Tensor::zeros(&[batch * seq, d]);
        m.forward(&mut y, &ids);
        dot(&y, &r)
    }));
}

/// `mode`: 0 every position, 1 padding skipped, 2 positions counted from the row's first item.
fn positional_case(batch: usize, seq: usize, d: usize, max_len: usize, mode: u8, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut pos = PositionalEmbedding::<f64>::new("pos", max_len, d, 1.0, &mut rng).unwrap();
    let (ids, r) = ids_and_r(&mut rng, batch * seq, d, 5);
    let r = r.reshaped(&[batch, seq, d]);
    let mask = match mode {
        0 => PositionMask::All,
        1 => PositionMask::SkipPadding(&ids),
        _ => PositionMask::FromFirstItem(&ids),
    };
    let mut x = rng.normal_tensor::<f64>(&[batch, seq, d], 1.0);
    let mut y = Tensor::zeros(&[batch, seq, d]);
    pos.zero_grad();
    pos.forward(&mut y, &x, mask);
    pos.backward(&r, mask);
    assert_all_pass(&check_module(
        &mut pos,
        TOL,
        &mut |m: &mut PositionalEmbedding<f64>| {
            let mut y = Tensor::zeros(&[batch, seq, d]);
            m.forward(&mut y, &x, mask);
            dot(&y, &r)
        },
    ));
    // dx = dy (identity).
    let e = check_input("x", &mut x, &r, TOL, &mut |x| {
        let mut y = Tensor::zeros(&[batch, seq, d]);
        pos.forward(&mut y, x, mask);
        dot(&y, &r)
    });
    assert!(e.passes(), "{e}");
}

// ---------------------------------------------------------------- losses

#[derive(Clone, Copy, Debug)]
enum Loss {
    Ce,
    Bce,
    SampledSoftmax,
    Bpr,
    BprMax,
    Gbce,
}

const LOSSES: [Loss; 6] = [
    Loss::Ce,
    Loss::Bce,
    Loss::SampledSoftmax,
    Loss::Bpr,
    Loss::BprMax,
    Loss::Gbce,
];

/// Runs `loss` on `logits`; `valid[i]` masks row `i` (for CE: target 0 = ignored).
fn eval_loss(
    loss: Loss,
    d: Option<&mut Tensor<f64>>,
    logits: &Tensor<f64>,
    valid: &[bool],
    aux: &Tensor<f64>,
) -> f64 {
    let c = logits.cols();
    match loss {
        Loss::Ce => {
            // Real rows target a class in 1..c (or 0 when c == 1 is impossible: c >= 2 here).
            let targets: Vec<u32> = valid
                .iter()
                .enumerate()
                .map(|(i, &v)| if v { 1 + (i % (c - 1)) as u32 } else { 0 })
                .collect();
            softmax_cross_entropy(d, logits, &targets, 0)
        }
        Loss::Bce => bce_with_logits(d, logits, valid),
        Loss::SampledSoftmax => sampled_softmax(d, logits, Some(aux), valid),
        Loss::Bpr => bpr(d, logits, valid),
        Loss::BprMax => bpr_max(d, logits, valid, 0.5),
        Loss::Gbce => gbce(d, logits, valid, gbce_beta(c - 1, 1000, 0.75).unwrap()),
    }
}

fn loss_case(loss: Loss, n: usize, c: usize, valid: &[bool], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut logits = rng.normal_tensor::<f64>(&[n, c], 2.0);
    // ln q of a proper distribution-like range.
    let aux = Tensor::from_fn(&[n, c], |_| (0.01 + 0.5 * rng.uniform01()).ln());
    let mut d = Tensor::full(&[n, c], f64::NAN); // must be fully overwritten
    let value = eval_loss(loss, Some(&mut d), &logits, valid, &aux);
    assert!(
        d.as_slice().iter().all(|v| v.is_finite()),
        "{loss:?}: dlogits not fully written"
    );
    assert_eq!(
        value,
        eval_loss(loss, None, &logits, valid, &aux),
        "{loss:?}: eval path differs"
    );
    let e = check_input(
        &format!("{loss:?} logits"),
        &mut logits,
        &d,
        TOL,
        &mut |x| eval_loss(loss, None, x, valid, &aux),
    );
    assert!(e.passes(), "{e}");

    // Masked rows: arbitrary values there change nothing, bit for bit, and get zero gradient.
    let mut other = logits.clone();
    for (i, &v) in valid.iter().enumerate() {
        if !v {
            for j in 0..c {
                other.as_mut_slice()[i * c + j] = 1e3 * rng.normal();
            }
        }
    }
    let mut d2 = Tensor::zeros(&[n, c]);
    assert_eq!(
        value,
        eval_loss(loss, Some(&mut d2), &other, valid, &aux),
        "{loss:?}: masked rows leak into the loss"
    );
    assert_eq!(d, d2, "{loss:?}: masked rows leak into the gradient");
    for (i, &v) in valid.iter().enumerate() {
        if !v {
            assert!(
                d.as_slice()[i * c..(i + 1) * c].iter().all(|&g| g == 0.0),
                "{loss:?}: masked row {i} has gradient"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn linear_gradients(batch in 1usize..3, seq in 1usize..3, din in 1usize..4, dout in 1usize..4, bias: bool, seed: u64) {
        linear_case(batch, seq, din, dout, bias, seed);
    }

    #[test]
    fn layernorm_gradients(rows in 1usize..4, d in 1usize..6, seed: u64) {
        layernorm_case(rows, d, seed);
    }

    #[test]
    fn embedding_gradients(batch in 1usize..3, seq in 1usize..4, d in 1usize..4, num in 2usize..6, seed: u64) {
        embedding_case(batch, seq, d, num, seed);
    }

    #[test]
    fn positional_gradients(batch in 1usize..3, seq in 1usize..4, d in 1usize..4, extra in 0usize..2, mode in 0u8..3, seed: u64) {
        positional_case(batch, seq, d, seq + extra, mode, seed);
    }

    /// A left-padded row with positions from its first item gets exactly what the same items get
    /// unpadded at the start of a row (right padding), and its padded slots pass through.
    #[test]
    fn positions_from_first_item_equal_right_padding(items in prop::collection::vec(1u32..9, 1..5), pad in 0usize..3, seed: u64) {
        let (n, d) = (items.len(), 3);
        let seq = n + pad;
        let mut rng = Rng::new(seed);
        let pos = PositionalEmbedding::<f64>::new("pos", seq, d, 1.0, &mut rng).unwrap();
        let mut left = vec![0u32; pad];
        left.extend(&items);
        let mut right = items.clone();
        right.extend(std::iter::repeat_n(0u32, pad));
        let x_right = rng.normal_tensor::<f64>(&[1, seq, d], 1.0);
        // the same item vectors, moved to the end of the row; padded slots hold other values
        let mut x_left = rng.normal_tensor::<f64>(&[1, seq, d], 1.0);
        x_left.as_mut_slice()[pad * d..].copy_from_slice(&x_right.as_slice()[..n * d]);
        let (mut y_left, mut y_right) = (Tensor::zeros(&[1, seq, d]), Tensor::zeros(&[1, seq, d]));
        pos.forward(&mut y_left, &x_left, PositionMask::FromFirstItem(&left));
        pos.forward(&mut y_right, &x_right, PositionMask::SkipPadding(&right));
        prop_assert_eq!(&y_left.as_slice()[pad * d..], &y_right.as_slice()[..n * d]);
        prop_assert_eq!(&y_left.as_slice()[..pad * d], &x_left.as_slice()[..pad * d]);
    }

    #[test]
    fn loss_gradients(n in 1usize..5, c in 2usize..6, mask in prop::collection::vec(any::<bool>(), 4), seed: u64) {
        let valid: Vec<bool> = (0..n).map(|i| mask[i % 4]).collect();
        for loss in LOSSES {
            loss_case(loss, n, c, &valid, seed);
        }
    }
}

#[test]
fn all_masked_batches_have_zero_loss_and_gradient() {
    let mut rng = Rng::new(9);
    let logits = rng.normal_tensor::<f64>(&[3, 4], 1.0);
    let aux = Tensor::zeros(&[3, 4]);
    for loss in LOSSES {
        let mut d = Tensor::full(&[3, 4], 7.0);
        assert_eq!(
            eval_loss(loss, Some(&mut d), &logits, &[false; 3], &aux),
            0.0,
            "{loss:?}"
        );
        assert!(d.as_slice().iter().all(|&g| g == 0.0), "{loss:?}");
    }
}

#[test]
fn loss_reference_values() {
    // BCE, one row [0, 0]: softplus(0) + softplus(0) = 2 ln 2; gradient (σ(0) - 1, σ(0)) = (-1/2, 1/2).
    let x = Tensor::from_vec(&[1, 2], vec![0.0f64, 0.0]).unwrap();
    let mut d = Tensor::zeros(&[1, 2]);
    assert!((bce_with_logits(Some(&mut d), &x, &[true]) - 2.0 * 2f64.ln()).abs() < 1e-15);
    assert_eq!(d.as_slice(), &[-0.5, 0.5]);
    // BPR, x⁺ = x⁻: -ln σ(0) = ln 2.
    assert!((bpr(None, &x, &[true]) - 2f64.ln()).abs() < 1e-15);
    // gBCE with t = 0 is BCE over all 1 + k logits: (softplus(0) + softplus(0)) / 2 = ln 2.
    let beta = gbce_beta(1, 10, 0.0).unwrap();
    assert_eq!(beta, 1.0);
    assert!((gbce(None, &x, &[true], beta) - 2f64.ln()).abs() < 1e-15);
    // t = 1 gives beta = alpha = k / (num_items - 1).
    assert!((gbce_beta(4, 101, 1.0).unwrap() - 0.04).abs() < 1e-15);
    assert!(
        gbce_beta(0, 10, 0.5).is_err()
            && gbce_beta(10, 10, 0.5).is_err()
            && gbce_beta(1, 10, 1.5).is_err()
    );
    // Sampled softmax with uniform q equals plain sampled softmax (a constant shift).
    let x = Tensor::from_vec(&[1, 3], vec![1.0f64, 2.0, -1.0]).unwrap();
    let q = Tensor::full(&[1, 3], 0.1f64.ln());
    let plain = sampled_softmax(None, &x, None, &[true]);
    let want = (1f64.exp() + 2f64.exp() + (-1f64).exp()).ln() - 1.0;
    assert!((plain - want).abs() < 1e-15);
    assert!((sampled_softmax(None, &x, Some(&q), &[true]) - plain).abs() < 1e-14);
    // BPR-max with one negative and no regularisation: -ln σ(x⁺ - x⁻).
    let x = Tensor::from_vec(&[1, 2], vec![1.5f64, -0.5]).unwrap();
    assert!((bpr_max(None, &x, &[true], 0.0) + (1.0 / (1.0 + (-2f64).exp())).ln()).abs() < 1e-15);
}

// ---------------------------------------------------------------- dropout

#[test]
fn dropout_gradient_masks_and_modes() {
    let mut rng = Rng::new(11);
    let mut x = rng.normal_tensor::<f64>(&[3, 5], 1.0);
    let r = rng.normal_tensor::<f64>(&[3, 5], 1.0);
    let mut drop = Dropout::new(0.4, 77).unwrap();
    let mut y = Tensor::zeros(&[3, 5]);
    let mut cache = DropoutCache::new();
    drop.forward(&mut y, &mut cache, &x);
    let mut dx = Tensor::zeros(&[3, 5]);
    drop.backward(&mut dx, &r, &cache);
    // With the mask fixed (same key), dropout is linear: check dx by finite differences.
    let mut replay = Dropout::new(0.4, 77).unwrap();
    let e = check_input("x", &mut x, &dx, TOL, &mut |x| {
        replay.set_counter(0);
        let mut y = Tensor::zeros(&[3, 5]);
        replay.forward(&mut y, &mut DropoutCache::new(), x);
        dot(&y, &r)
    });
    assert!(e.passes(), "{e}");
    // Kept elements are scaled by 1 / (1 - p), dropped ones are 0, and the mask is the same in backward.
    for ((&a, &b), (&g, &rr)) in y
        .as_slice()
        .iter()
        .zip(x.as_slice())
        .zip(dx.as_slice().iter().zip(r.as_slice()))
    {
        assert!(
            a == 0.0 && g == 0.0 || ((a - b / 0.6).abs() < 1e-15 && (g - rr / 0.6).abs() < 1e-15)
        );
    }
    // The next call draws a new mask; the same seed replays the same sequence.
    let mut y2 = Tensor::zeros(&[3, 5]);
    drop.forward(&mut y2, &mut cache, &x);
    assert_eq!(drop.counter(), 2);
    let ones = Tensor::full(&[64, 64], 1.0f64);
    let mut a = Dropout::new(0.5, 5).unwrap();
    let mut b = Dropout::new(0.5, 5).unwrap();
    let (mut ya, mut yb) = (Tensor::zeros(&[64, 64]), Tensor::zeros(&[64, 64]));
    let mut c = DropoutCache::new();
    a.forward(&mut ya, &mut c, &ones);
    b.forward(&mut yb, &mut c, &ones);
    assert_eq!(ya, yb);
    a.forward(&mut ya, &mut c, &ones);
    assert_ne!(ya, yb);
    let kept = ya.as_slice().iter().filter(|&&v| v != 0.0).count() as f64 / 4096.0;
    assert!((kept - 0.5).abs() < 0.05, "kept fraction {kept}");
    // Eval mode and p = 0 are identities, forward and backward.
    a.eval();
    a.forward(&mut ya, &mut c, &ones);
    assert_eq!(ya, ones);
    assert_eq!(c.key, None);
    a.backward(&mut yb, &ones, &c);
    assert_eq!(yb, ones);
    assert!(Dropout::new(1.0, 0).is_err() && Dropout::new(-0.1, 0).is_err());
}

// ---------------------------------------------------------------- accumulation, masks, harness

#[test]
fn parameter_gradients_accumulate() {
    let mut rng = Rng::new(12);
    let x = rng.normal_tensor::<f64>(&[4, 3], 1.0);
    let r = rng.normal_tensor::<f64>(&[4, 3], 1.0);
    let ids = [0u32, 2, 2, 1];

    let mut fc = Linear::<f64>::new("fc", 3, 3, true, &mut rng);
    let mut dx = Tensor::zeros(&[4, 3]);
    fc.zero_grad();
    fc.backward(Some(&mut dx), &r, &x);
    let once = grads(&fc);
    let dx_once = dx.clone();
    fc.backward(Some(&mut dx), &r, &x);
    assert_eq!(
        dx, dx_once,
        "activation gradients are assigned, not accumulated"
    );
    let twice = grads(&fc);

    let mut ln = LayerNorm::<f64>::new("ln", 3, 1e-5);
    let mut cache = LayerNormCache::new(4);
    let mut y = Tensor::zeros(&[4, 3]);
    ln.forward(&mut y, &mut cache, &x);
    ln.zero_grad();
    ln.backward(&mut dx, &r, &x, &cache);
    let ln_once = grads(&ln);
    ln.backward(&mut dx, &r, &x, &cache);

    let mut emb = Embedding::<f64>::new("emb", 3, 3, 1.0, Padding::Skip(0), &mut rng).unwrap();
    emb.zero_grad();
    emb.backward(&r, &ids);
    let emb_once = grads(&emb);
    emb.backward(&r, &ids);

    let mut pos = PositionalEmbedding::<f64>::new("pos", 4, 3, 1.0, &mut rng).unwrap();
    let r3 = r.clone().reshaped(&[1, 4, 3]);
    pos.zero_grad();
    pos.backward(&r3, PositionMask::All);
    let pos_once = grads(&pos);
    pos.backward(&r3, PositionMask::All);

    for (once, twice) in [
        (once, twice),
        (ln_once, grads(&ln)),
        (emb_once, grads(&emb)),
        (pos_once, grads(&pos)),
    ] {
        assert!(once.iter().flatten().any(|&g| g != 0.0));
        for (a, b) in once.iter().flatten().zip(twice.iter().flatten()) {
            // Exact for scatter-adds; a GEMM with beta = 1 may round differently (FMA), hence 1e-14.
            assert!(
                (2.0 * a - b).abs() <= 1e-14 * b.abs(),
                "{a} twice is not {b}"
            );
        }
    }
}

#[test]
fn padding_contributes_nothing() {
    let mut rng = Rng::new(13);
    let mut emb = Embedding::<f64>::new("emb", 5, 3, 1.0, Padding::Skip(0), &mut rng).unwrap();
    assert!(
        emb.weight.value.as_slice()[..3].iter().all(|&v| v == 0.0),
        "padding row initialised to zero"
    );
    let ids = [0u32, 3, 0, 3, 1, 0];
    let dy = rng.normal_tensor::<f64>(&[6, 3], 1.0); // non-zero even at padded positions
    emb.zero_grad();
    emb.backward(&dy, &ids);
    assert!(
        emb.weight.grad.as_slice()[..3].iter().all(|&g| g == 0.0),
        "padding row got gradient"
    );
    // Repeated ids accumulate: row 3 = dy[1] + dy[3].
    for j in 0..3 {
        assert_eq!(
            emb.weight.grad.get(&[3, j]),
            dy.get(&[1, j]) + dy.get(&[3, j])
        );
    }
    let mut y = Tensor::zeros(&[6, 3]);
    emb.forward(&mut y, &ids);
    assert!(y.as_slice()[..3].iter().all(|&v| v == 0.0));

    // Positions: padded rows pass x through untouched and give no gradient, whatever dy holds there.
    let mut pos = PositionalEmbedding::<f64>::new("pos", 3, 3, 1.0, &mut rng).unwrap();
    let x = rng.normal_tensor::<f64>(&[2, 3, 3], 1.0);
    let mut out = Tensor::zeros(&[2, 3, 3]);
    pos.forward(&mut out, &x, PositionMask::SkipPadding(&ids));
    for (r, &id) in ids.iter().enumerate() {
        if id == 0 {
            assert_eq!(
                &out.as_slice()[r * 3..r * 3 + 3],
                &x.as_slice()[r * 3..r * 3 + 3]
            );
        }
    }
    let mut dy2 = dy.clone().reshaped(&[2, 3, 3]);
    pos.zero_grad();
    pos.backward(&dy2, PositionMask::SkipPadding(&ids));
    let g1 = pos.weight.grad.clone();
    for (r, &id) in ids.iter().enumerate() {
        if id == 0 {
            dy2.as_mut_slice()[r * 3..r * 3 + 3].fill(123.0);
        }
    }
    pos.zero_grad();
    pos.backward(&dy2, PositionMask::SkipPadding(&ids));
    assert_eq!(pos.weight.grad, g1);
}

#[test]
fn harness_catches_wrong_gradients() {
    let mut rng = Rng::new(14);
    let mut fc = Linear::<f64>::new("fc", 3, 2, true, &mut rng);
    let x = rng.normal_tensor::<f64>(&[4, 3], 1.0);
    let r = rng.normal_tensor::<f64>(&[4, 2], 1.0);
    let mut loss = |m: &mut Linear<f64>| {
        let mut y = Tensor::zeros(&[4, 2]);
        m.forward(&mut y, &x);
        dot(&y, &r)
    };
    fc.zero_grad();
    fc.backward(None, &r, &x);
    assert_all_pass(&check_module(&mut fc, TOL, &mut loss));
    // One element off by 1e-4 (relative ~1e-4, above STRICT's 1e-6): caught, at that index.
    fc.weight.grad.as_mut_slice()[4] += 1e-4;
    let errors = check_module(&mut fc, TOL, &mut loss);
    assert!(!errors[0].passes() && errors[0].index == 4, "{}", errors[0]);
    assert!(errors[1].passes());
    // A transposed gradient (a classic bug) is caught too.
    fc.zero_grad();
    fc.backward(None, &r, &x);
    let g = fc.weight.grad.clone();
    fc.weight.grad = Tensor::from_fn(&[2, 3], |i| g.as_slice()[(i * 2) % 5 + usize::from(i == 5)]);
    assert!(!check_module(&mut fc, TOL, &mut loss)[0].passes());
    // A gradient missing its accumulation (zero) is caught.
    fc.zero_grad();
    assert!(
        check_module(&mut fc, TOL, &mut loss)
            .iter()
            .all(|e| !e.passes())
    );
}

#[test]
fn config_errors_name_the_field() {
    let mut rng = Rng::new(0);
    let e = Embedding::<f32>::new("e", 0, 4, 1.0, Padding::None, &mut rng).unwrap_err();
    assert!(e.to_string().contains("Embedding.num_embeddings"), "{e}");
    let e = Embedding::<f32>::new("e", 4, 4, 1.0, Padding::Skip(4), &mut rng).unwrap_err();
    assert!(
        e.to_string().contains("Embedding.padding") && e.to_string().contains("num_embeddings = 4"),
        "{e}"
    );
    let e = PositionalEmbedding::<f32>::new("p", 0, 4, 1.0, &mut rng).unwrap_err();
    assert!(e.to_string().contains("max_len"), "{e}");
    let emb = Embedding::<f32>::new("e", 4, 2, 1.0, Padding::Skip(0), &mut rng).unwrap();
    assert!(emb.check_ids(&[0, 3, 1]).is_ok());
    let e = emb.check_ids(&[0, 3, 9]).unwrap_err();
    assert!(
        e.to_string().contains("position 2") && e.to_string().contains('9'),
        "{e}"
    );
}

#[test]
fn wide_sampled_rows_use_the_heap_scratch_and_stay_correct() {
    // 1 + 600 columns: wider than the loss driver's stack scratch (512).
    let (n, c) = (2, 601);
    for loss in LOSSES {
        loss_case(loss, n, c, &[true, false], 21);
    }
}
