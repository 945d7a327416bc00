//! Hand-computed values (maths beside the numbers), mask edge cases, accumulation rules, dropout
//! statistics, top-k ties, and finite-difference gradient checks in f64.

use seqrec_tensor::{
    self as st, DropoutKey, Exclude, Gelu, Mask, Padding, Tensor, Tolerance, Transpose,
};

fn t(shape: &[usize], v: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

#[test]
fn gemm_small_exact_all_transposes_and_accumulation() {
    // a = [[1, 2], [3, 4]], b = [[5, 6], [7, 8]]
    let a = t(&[2, 2], &[1., 2., 3., 4.]);
    let b = t(&[2, 2], &[5., 6., 7., 8.]);
    let mut c = Tensor::zeros(&[2, 2]);
    // a b = [[1*5+2*7, 1*6+2*8], [3*5+4*7, 3*6+4*8]] = [[19, 22], [43, 50]]
    st::gemm(&mut c, 1.0, &a, Transpose::No, &b, Transpose::No, 0.0);
    assert_eq!(c.as_slice(), &[19., 22., 43., 50.]);
    // a^T b = [[1*5+3*7, 1*6+3*8], [2*5+4*7, 2*6+4*8]] = [[26, 30], [38, 44]]
    st::gemm(&mut c, 1.0, &a, Transpose::Yes, &b, Transpose::No, 0.0);
    assert_eq!(c.as_slice(), &[26., 30., 38., 44.]);
    // a b^T = [[1*5+2*6, 1*7+2*8], [3*5+4*6, 3*7+4*8]] = [[17, 23], [39, 53]]
    st::gemm(&mut c, 1.0, &a, Transpose::No, &b, Transpose::Yes, 0.0);
    assert_eq!(c.as_slice(), &[17., 23., 39., 53.]);
    // a^T b^T = (b a)^T; b a = [[5+18, 10+24], [7+24, 14+32]] = [[23, 34], [31, 46]] -> [[23, 31], [34, 46]]
    st::gemm(&mut c, 1.0, &a, Transpose::Yes, &b, Transpose::Yes, 0.0);
    assert_eq!(c.as_slice(), &[23., 31., 34., 46.]);
    // beta = 1 accumulates: c = 2 * a b + c = [[38+23, 44+31], [86+34, 100+46]]
    st::gemm(&mut c, 2.0, &a, Transpose::No, &b, Transpose::No, 1.0);
    assert_eq!(c.as_slice(), &[61., 75., 120., 146.]);
    // beta = 0 never reads c, even NaN.
    c.fill(f64::NAN);
    st::gemm(&mut c, 1.0, &a, Transpose::No, &b, Transpose::No, 0.0);
    assert_eq!(c.as_slice(), &[19., 22., 43., 50.]);
}

#[test]
fn gemm_matrix_view_of_rank3_and_batched() {
    // [2, 1, 2] x [2, 3]: rows of x are [1, 0] and [0, 1], so the output rows are w's rows.
    let x = t(&[2, 1, 2], &[1., 0., 0., 1.]);
    let w = t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let mut y = Tensor::zeros(&[2, 1, 3]);
    st::gemm(&mut y, 1.0, &x, Transpose::No, &w, Transpose::No, 0.0);
    assert_eq!(y.as_slice(), &[1., 2., 3., 4., 5., 6.]);
    // Batched q k^T: batch 0 q=[1,2] k=[3,4] -> 11; batch 1 q=[1,1] k=[2,-2] -> 0.
    let q = t(&[2, 1, 2], &[1., 2., 1., 1.]);
    let k = t(&[2, 1, 2], &[3., 4., 2., -2.]);
    let mut s = Tensor::zeros(&[2, 1, 1]);
    st::gemm_batched(&mut s, 1.0, &q, Transpose::No, &k, Transpose::Yes, 0.0);
    assert_eq!(s.as_slice(), &[11., 0.]);
}

#[test]
#[should_panic(expected = "gemm: shape mismatch")]
fn gemm_shape_mismatch_names_shapes() {
    let a = Tensor::<f32>::zeros(&[2, 3]);
    let b = Tensor::<f32>::zeros(&[4, 2]);
    let mut c = Tensor::zeros(&[2, 2]);
    st::gemm(&mut c, 1.0, &a, Transpose::No, &b, Transpose::No, 0.0);
}

#[test]
fn softmax_exact_values_and_fully_masked_rows() {
    // softmax([0, ln 3]) = [1, 3] / 4
    let x = t(&[1, 2], &[0.0, 3f64.ln()]);
    let mut y = Tensor::zeros(&[1, 2]);
    st::softmax_forward(&mut y, &x, Mask::None);
    Tolerance::F64.assert_close(&y, &t(&[1, 2], &[0.25, 0.75]));
    // log_softmax = [ln 1/4, ln 3/4]
    st::log_softmax_forward(&mut y, &x, Mask::None);
    Tolerance::F64.assert_close(&y, &t(&[1, 2], &[0.25f64.ln(), 0.75f64.ln()]));

    // Causal + key padding with left padding: sequence [pad, a, b] and [a, b, c].
    // Keys kept: seq 0 -> [F, T, T], seq 1 -> [T, T, T]. Query 0 of seq 0 sees key 0 only, which is padded:
    // fully masked -> zeros (softmax) / -inf (log-softmax), never NaN.
    let scores = Tensor::<f64>::zeros(&[2, 3, 3]);
    let keep = [false, true, true, true, true, true];
    let mut p = Tensor::zeros(&[2, 3, 3]);
    st::softmax_forward(&mut p, &scores, Mask::CausalKeyPadding(&keep));
    #[rustfmt::skip]
    let expect = [
        0., 0., 0.,      // seq 0, query 0: nothing visible
        0., 1., 0.,      // query 1: key 1 only
        0., 0.5, 0.5,    // query 2: keys 1, 2 with equal scores
        1., 0., 0.,      // seq 1, query 0
        0.5, 0.5, 0.,
        1. / 3., 1. / 3., 1. / 3.,
    ];
    Tolerance::F64.assert_close(&p, &t(&[2, 3, 3], &expect));
    let mut lp = Tensor::zeros(&[2, 3, 3]);
    st::log_softmax_forward(&mut lp, &scores, Mask::CausalKeyPadding(&keep));
    assert!(lp.as_slice()[..3].iter().all(|&v| v == f64::NEG_INFINITY));
    assert_eq!(lp.get(&[0, 1, 1]), 0.0); // log 1
    // Backward through a fully masked row gives zero gradient, not NaN.
    let dy = Tensor::full(&[2, 3, 3], 1.0);
    let mut dx = Tensor::zeros(&[2, 3, 3]);
    st::softmax_backward(&mut dx, &dy, &p);
    assert!(dx.as_slice().iter().all(|v| v.is_finite()));
    st::log_softmax_backward(&mut dx, &dy, &lp);
    assert_eq!(&dx.as_slice()[..3], &[0., 0., 0.]);
    assert!(dx.as_slice().iter().all(|v| v.is_finite()));

    // Additive mask all -inf on a row -> zeros.
    let add = t(&[2, 2], &[f64::NEG_INFINITY, f64::NEG_INFINITY, 0.0, 0.0]);
    let x = t(&[2, 2], &[1.0, 2.0, 1.0, 1.0]);
    let mut y = Tensor::zeros(&[2, 2]);
    st::softmax_forward(&mut y, &x, Mask::Additive(&add));
    assert_eq!(y.as_slice(), &[0.0, 0.0, 0.5, 0.5]);
}

#[test]
fn layernorm_exact_values_and_parameter_gradients_accumulate() {
    // x = [1, 2, 3]: mean 2, biased var (1 + 0 + 1) / 3 = 2/3, rstd = 1 / sqrt(2/3 + eps)
    let x = t(&[1, 3], &[1., 2., 3.]);
    let gamma = t(&[3], &[1., 1., 1.]);
    let beta = t(&[3], &[0., 0., 10.]);
    let (mut y, mut m, mut s) = (
        Tensor::zeros(&[1, 3]),
        Tensor::zeros(&[1]),
        Tensor::zeros(&[1]),
    );
    st::layernorm_forward(&mut y, &mut m, &mut s, &x, &gamma, &beta, 0.0);
    let r = (1.5f64).sqrt(); // 1 / sqrt(2/3)
    Tolerance::F64.assert_close(&y, &t(&[1, 3], &[-r, 0.0, r + 10.0]));
    assert_eq!(m.as_slice(), &[2.0]);
    Tolerance::F64.assert_close(&s, &t(&[1], &[r]));
    // Two backward calls give twice the parameter gradients; dx is overwritten (same both times).
    let dout = t(&[1, 3], &[1., 0., 0.]);
    let (mut dx, mut dg, mut db) = (
        Tensor::zeros(&[1, 3]),
        Tensor::zeros(&[3]),
        Tensor::zeros(&[3]),
    );
    st::layernorm_backward(&mut dx, &mut dg, &mut db, &dout, &x, &m, &s, &gamma);
    let dx1 = dx.clone();
    st::layernorm_backward(&mut dx, &mut dg, &mut db, &dout, &x, &m, &s, &gamma);
    assert_eq!(dx, dx1);
    // dgamma = 2 * dout * norm = 2 * [-r, 0, 0]; dbeta = 2 * dout
    Tolerance::F64.assert_close(&dg, &t(&[3], &[-2.0 * r, 0.0, 0.0]));
    assert_eq!(db.as_slice(), &[2., 0., 0.]);
}

#[test]
fn embedding_scatter_add_accumulates_repeated_ids_and_skips_padding() {
    let mut dtable = Tensor::<f64>::zeros(&[4, 2]);
    let ids = [2u32, 0, 2, 3, 2];
    let dout = t(&[5, 2], &[1., 10., 5., 5., 2., 20., 7., 7., 4., 40.]);
    st::embedding_backward(&mut dtable, &dout, &ids, Padding::Skip(0));
    // id 2 appears three times: [1+2+4, 10+20+40]; id 0 is padding (skipped); id 3 once.
    assert_eq!(dtable.as_slice(), &[0., 0., 0., 0., 7., 70., 7., 7.]);
    st::embedding_backward(&mut dtable, &dout, &ids, Padding::None);
    assert_eq!(dtable.as_slice(), &[5., 5., 0., 0., 14., 140., 14., 14.]);
    let table = t(&[4, 2], &[0., 0., 1., 1., 2., 2., 3., 3.]);
    let mut out = Tensor::zeros(&[1, 3, 2]);
    st::embedding_forward(&mut out, &table, &[3, 0, 1]);
    assert_eq!(out.as_slice(), &[3., 3., 0., 0., 1., 1.]);
}

#[test]
#[should_panic(expected = "id 9 out of range for a table of 4 rows")]
fn embedding_out_of_range_id_names_it() {
    let table = Tensor::<f32>::zeros(&[4, 2]);
    let mut out = Tensor::zeros(&[1, 2]);
    st::embedding_forward(&mut out, &table, &[9]);
}

#[test]
fn dropout_same_key_same_mask_and_rate_close_to_p() {
    let n = 200_000;
    let x = Tensor::<f32>::full(&[n], 1.0);
    let key = DropoutKey {
        seed: 1234,
        step: 7,
    };
    let (mut a, mut b) = (Tensor::zeros(&[n]), Tensor::zeros(&[n]));
    st::dropout_forward(&mut a, &x, 0.25, key);
    st::dropout_forward(&mut b, &x, 0.25, key);
    assert_eq!(a, b, "same seed and step must give the same mask");
    let dropped = a.as_slice().iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    // Binomial std of the rate: sqrt(0.25 * 0.75 / 2e5) ~ 9.7e-4; allow 5 sigma.
    assert!((dropped - 0.25).abs() < 5e-3, "drop rate {dropped}");
    // Kept values are scaled by 1 / (1 - p) = 4/3, so the mean stays ~1.
    assert!(a.as_slice().iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
    st::dropout_forward(
        &mut b,
        &x,
        0.25,
        DropoutKey {
            seed: 1234,
            step: 8,
        },
    );
    assert_ne!(a, b, "a new step must give a new mask");
    // Backward regenerates the same mask: dx = dy * mask / (1 - p).
    let mut dx = Tensor::zeros(&[n]);
    st::dropout_backward(&mut dx, &x, 0.25, key);
    assert_eq!(dx, a);
}

#[test]
fn topk_ties_prefer_lower_ids_and_exclusion_works() {
    // scores: id 0..6 = [1, 3, 3, 2, 3, NaN]
    let x = Tensor::<f32>::from_vec(&[1, 6], vec![1., 3., 3., 2., 3., f32::NAN]).unwrap();
    let (mut ids, mut s) = (vec![0u32; 4], vec![0f32; 4]);
    st::topk(&mut ids, &mut s, &x, 4, Exclude::None);
    assert_eq!(ids, [1, 2, 4, 3]);
    assert_eq!(s, [3., 3., 3., 2.]);
    let hist = vec![vec![2u32, 99]];
    st::topk(&mut ids, &mut s, &x, 4, Exclude::Rows(&hist));
    assert_eq!(ids, [1, 4, 3, 0]);
    // Fewer candidates than k: NaN ranks last, then NO_ID / -inf fill.
    let (mut ids, mut s) = (vec![0u32; 7], vec![0f32; 7]);
    st::topk(&mut ids, &mut s, &x, 7, Exclude::None);
    assert_eq!(ids, [1, 2, 4, 3, 0, 5, st::NO_ID]);
    assert!(s[5].is_nan() && s[6] == f32::NEG_INFINITY);
}

#[test]
fn activation_exact_values() {
    let x = t(&[4], &[-1.0, 0.0, 1.0, 2.0]);
    let mut y = Tensor::zeros(&[4]);
    st::sigmoid_forward(&mut y, &x);
    // sigmoid(0) = 1/2, sigmoid(-x) = 1 - sigmoid(x)
    assert_eq!(y.get(&[1]), 0.5);
    Tolerance::F64.assert_close(&t(&[1], &[y.get(&[0]) + y.get(&[2])]), &t(&[1], &[1.0]));
    st::gelu_forward(&mut y, &x, Gelu::Erf);
    // PyTorch: torch.nn.functional.gelu(torch.tensor([-1., 0., 1., 2.], dtype=torch.float64))
    //   = [-0.15865525393145707, 0.0, 0.8413447460685429, 1.9544997361036416]
    Tolerance::F64.assert_close(
        &y,
        &t(
            &[4],
            &[
                -0.15865525393145707,
                0.0,
                0.8413447460685429,
                1.9544997361036416,
            ],
        ),
    );
    st::gelu_forward(&mut y, &x, Gelu::Tanh);
    // PyTorch approximate='tanh': [-0.15880800939172324, 0.0, 0.8411919906082768, 1.954597694087775]
    Tolerance::F64.assert_close(
        &y,
        &t(
            &[4],
            &[
                -0.15880800939172324,
                0.0,
                0.8411919906082768,
                1.954597694087775,
            ],
        ),
    );
}

/// Central finite differences of `loss(x) = sum(w * f(x))` against the analytic `dx`.
fn grad_check(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    f: impl Fn(&Tensor<f64>) -> Tensor<f64>,
    dx: &Tensor<f64>,
) {
    let h = 1e-6;
    let loss = |x: &Tensor<f64>| {
        let y = f(x);
        y.as_slice()
            .iter()
            .zip(w.as_slice())
            .map(|(a, b)| a * b)
            .sum::<f64>()
    };
    let mut num = Tensor::zeros(x.shape());
    for i in 0..x.numel() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.as_mut_slice()[i] += h;
        xm.as_mut_slice()[i] -= h;
        num.as_mut_slice()[i] = (loss(&xp) - loss(&xm)) / (2.0 * h);
    }
    Tolerance::GRAD_CHECK.assert_close(dx, &num);
}

fn randt(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::from_fn(shape, |i| {
        ((st::splitmix64(seed ^ i as u64) >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
    })
}

#[test]
fn backward_passes_match_finite_differences() {
    let shape = [2, 3, 4];
    let x = randt(&shape, 1);
    let w = randt(&shape, 2);
    let mut dx = Tensor::zeros(&shape);
    let keep = [true, false, true, true, true, true, false, true];
    let mask = Mask::CausalKeyPadding(&keep);
    // The q=3, k=4 causal mask sees keys j <= i + 1.
    let sm = |x: &Tensor<f64>| {
        let mut y = Tensor::zeros(x.shape());
        st::softmax_forward(&mut y, x, mask);
        y
    };
    st::softmax_backward(&mut dx, &w, &sm(&x));
    grad_check(&x, &w, sm, &dx);
    let lsm = |x: &Tensor<f64>| {
        let mut y = Tensor::zeros(x.shape());
        st::log_softmax_forward(&mut y, x, Mask::None);
        y
    };
    st::log_softmax_backward(&mut dx, &w, &lsm(&x));
    grad_check(&x, &w, lsm, &dx);

    type Fwd = fn(&mut Tensor<f64>, &Tensor<f64>);
    type Bwd = fn(&mut Tensor<f64>, &Tensor<f64>, &Tensor<f64>);
    let acts: [(Fwd, Bwd, bool); 3] = [
        (st::sigmoid_forward, st::sigmoid_backward, true),
        (st::tanh_forward, st::tanh_backward, true),
        (st::relu_forward, st::relu_backward, true),
    ];
    for (fwd, bwd, from_output) in acts {
        let f = |x: &Tensor<f64>| {
            let mut y = Tensor::zeros(x.shape());
            fwd(&mut y, x);
            y
        };
        assert!(from_output);
        bwd(&mut dx, &w, &f(&x));
        grad_check(&x, &w, f, &dx);
    }
    for kind in [Gelu::Erf, Gelu::Tanh] {
        let f = |x: &Tensor<f64>| {
            let mut y = Tensor::zeros(x.shape());
            st::gelu_forward(&mut y, x, kind);
            y
        };
        st::gelu_backward(&mut dx, &w, &x, kind);
        grad_check(&x, &w, f, &dx);
    }

    // Layer norm: dx, and dgamma / dbeta by perturbing the parameters.
    let x2 = randt(&[3, 5], 3);
    let w2 = randt(&[3, 5], 4);
    let gamma = randt(&[5], 5);
    let beta = randt(&[5], 6);
    let ln = |x: &Tensor<f64>, g: &Tensor<f64>, b: &Tensor<f64>| {
        let (mut y, mut m, mut s) = (
            Tensor::zeros(&[3, 5]),
            Tensor::zeros(&[3]),
            Tensor::zeros(&[3]),
        );
        st::layernorm_forward(&mut y, &mut m, &mut s, x, g, b, 1e-5);
        (y, m, s)
    };
    let (_, m, s) = ln(&x2, &gamma, &beta);
    let (mut dx2, mut dg, mut db) = (
        Tensor::zeros(&[3, 5]),
        Tensor::zeros(&[5]),
        Tensor::zeros(&[5]),
    );
    st::layernorm_backward(&mut dx2, &mut dg, &mut db, &w2, &x2, &m, &s, &gamma);
    grad_check(&x2, &w2, |x| ln(x, &gamma, &beta).0, &dx2);
    grad_check(&gamma, &w2, |g| ln(&x2, g, &beta).0, &dg);
    grad_check(&beta, &w2, |b| ln(&x2, &gamma, b).0, &db);

    // GEMM: d(sum w * (a b))/da = w b^T, computed with the transpose flags.
    let a = randt(&[3, 4], 7);
    let b = randt(&[4, 2], 8);
    let wc = randt(&[3, 2], 9);
    let mut da = Tensor::zeros(&[3, 4]);
    st::gemm(&mut da, 1.0, &wc, Transpose::No, &b, Transpose::Yes, 0.0);
    let mm = |a: &Tensor<f64>| {
        let mut c = Tensor::zeros(&[3, 2]);
        st::gemm(&mut c, 1.0, a, Transpose::No, &b, Transpose::No, 0.0);
        c
    };
    grad_check(&a, &wc, mm, &da);

    // Bias: d(sum w * (y + bias))/dbias = column sums of w.
    let bias = randt(&[4], 10);
    let y0 = randt(&[6, 4], 11);
    let wb = randt(&[6, 4], 12);
    let mut dbias = Tensor::zeros(&[4]);
    st::add_bias_backward(&mut dbias, &wb);
    grad_check(
        &bias,
        &wb,
        |b| {
            let mut y = y0.clone();
            st::add_bias(&mut y, b);
            y
        },
        &dbias,
    );
}

#[test]
fn tensor_construction_errors_are_typed() {
    let e = Tensor::<f32>::from_vec(&[2, 3], vec![0.0; 5]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "shape [2, 3] holds 6 elements but 5 were given"
    );
    let mut x = Tensor::<f32>::zeros(&[2, 3]);
    assert!(x.try_reshape(&[4, 2]).is_err());
    x.reshape(&[3, 2]);
    assert_eq!((x.rows(), x.cols()), (3, 2));
    x.resize(&[1, 2]);
    assert_eq!(x.numel(), 2);
    assert_eq!(x.cast::<f64>().shape(), &[1, 2]);
}

#[test]
fn exp_approx_f32_is_within_2_ulp_of_exp() {
    // Dense sweep over the normal range plus the clamp edges, against f64 exp rounded to f32.
    let mut worst = 0.0f64;
    for i in 0..=400_000 {
        let x = -87.0f32 + (175.0 * i as f32 / 400_000.0);
        let got = st::exp_approx_f32(x) as f64;
        let want = (x as f64).exp();
        let ulp = (want as f32).next_up() as f64 - want as f32 as f64;
        worst = worst.max((got - want).abs() / ulp);
    }
    assert!(worst <= 2.0, "worst error {worst} ulp");
    assert_eq!(st::exp_approx_f32(0.0), 1.0);
    assert_eq!(st::exp_approx_f32(-100.0), 0.0);
    assert_eq!(st::exp_approx_f32(f32::NEG_INFINITY), 0.0);
}
