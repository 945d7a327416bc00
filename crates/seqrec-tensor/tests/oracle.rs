//! Every fast kernel against the naive `reference` oracle, on random shapes (including 1s) with proptest,
//! plus a few sizes large enough to take the parallel paths. Comparison is per element with a named
//! `Tolerance`, reporting the index.

use proptest::prelude::*;
use seqrec_tensor::{
    self as st, DropoutKey, Exclude, Float, Gelu, Mask, Padding, Tensor, Tolerance, Transpose,
    reference as rf,
};

/// Deterministic uniform values in `[lo, hi)` from a seed (splitmix64 stream).
fn rand_tensor<T: Float>(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor<T> {
    Tensor::from_fn(shape, |i| {
        let u =
            (st::splitmix64(seed ^ st::splitmix64(i as u64)) >> 11) as f64 / (1u64 << 53) as f64;
        T::from_f64(lo + (hi - lo) * u)
    })
}

fn tol<T: Float>() -> Tolerance {
    if T::NAME == "f32" {
        Tolerance::F32
    } else {
        Tolerance::F64
    }
}

fn trans(b: bool) -> Transpose {
    if b { Transpose::Yes } else { Transpose::No }
}

fn check_gemm<T: Float>(m: usize, k: usize, n: usize, ta: bool, tb: bool, beta: f64, seed: u64) {
    let (ta, tb) = (trans(ta), trans(tb));
    let ashape = if ta == Transpose::No { [m, k] } else { [k, m] };
    let bshape = if tb == Transpose::No { [k, n] } else { [n, k] };
    let a = rand_tensor::<T>(&ashape, seed, -1.0, 1.0);
    let b = rand_tensor::<T>(&bshape, seed + 1, -1.0, 1.0);
    let c0 = rand_tensor::<T>(&[m, n], seed + 2, -1.0, 1.0);
    let (alpha, beta) = (T::from_f64(0.75), T::from_f64(beta));
    let mut fast = c0.clone();
    let mut slow = c0.clone();
    st::gemm(&mut fast, alpha, &a, ta, &b, tb, beta);
    rf::gemm(&mut slow, alpha, &a, ta, &b, tb, beta);
    tol::<T>().assert_close(&fast, &slow);
}

fn check_gemm_batched<T: Float>(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    seed: u64,
) {
    let (ta, tb) = (trans(ta), trans(tb));
    let ashape = if ta == Transpose::No {
        [batch, m, k]
    } else {
        [batch, k, m]
    };
    let bshape = if tb == Transpose::No {
        [batch, k, n]
    } else {
        [batch, n, k]
    };
    let a = rand_tensor::<T>(&ashape, seed, -1.0, 1.0);
    let b = rand_tensor::<T>(&bshape, seed + 1, -1.0, 1.0);
    let c0 = rand_tensor::<T>(&[batch, m, n], seed + 2, -1.0, 1.0);
    let mut fast = c0.clone();
    let mut slow = c0;
    st::gemm_batched(&mut fast, T::ONE, &a, ta, &b, tb, T::ONE);
    rf::gemm_batched(&mut slow, T::ONE, &a, ta, &b, tb, T::ONE);
    tol::<T>().assert_close(&fast, &slow);
}

/// A keep mask of `len` flags with about `frac` of them false.
fn keep_flags(len: usize, seed: u64, frac: f64) -> Vec<bool> {
    (0..len)
        .map(|i| {
            (st::splitmix64(seed ^ (i as u64 * 7919)) >> 11) as f64 / (1u64 << 53) as f64 >= frac
        })
        .collect()
}

fn check_softmax<T: Float>(shape: &[usize], seed: u64, mask_kind: u8) {
    let x = rand_tensor::<T>(shape, seed, -4.0, 4.0);
    let k = x.cols();
    let q = if shape.len() >= 2 {
        shape[shape.len() - 2]
    } else {
        1
    };
    let batch = x.rows() / q;
    let add = Tensor::from_fn(&[q, k], |i| {
        if (st::splitmix64(seed + i as u64) & 3) == 0 {
            T::NEG_INFINITY
        } else {
            T::from_f64((i % 5) as f64 * 0.1)
        }
    });
    let keep = keep_flags(x.numel(), seed, 0.3);
    let pad = keep_flags(batch * k, seed + 9, 0.4);
    let mask = match mask_kind {
        0 => Mask::None,
        1 => Mask::Additive(&add),
        2 => Mask::Keep(&keep),
        3 if q <= k => Mask::Causal,
        4 => Mask::KeyPadding(&pad),
        5 if q <= k => Mask::CausalKeyPadding(&pad),
        _ => Mask::None,
    };
    let mut fast = Tensor::zeros(shape);
    let mut slow = Tensor::zeros(shape);
    st::softmax_forward(&mut fast, &x, mask);
    rf::softmax_forward(&mut slow, &x, mask);
    tol::<T>().assert_close(&fast, &slow);
    assert!(
        fast.as_slice().iter().all(|v| !v.is_nan()),
        "softmax produced NaN"
    );
    let mut inplace = x.clone();
    st::softmax_inplace(&mut inplace, mask);
    tol::<T>().assert_close(&inplace, &slow);

    let dy = rand_tensor::<T>(shape, seed + 3, -1.0, 1.0);
    let (mut dfast, mut dslow) = (Tensor::zeros(shape), Tensor::zeros(shape));
    st::softmax_backward(&mut dfast, &dy, &fast);
    rf::softmax_backward(&mut dslow, &dy, &fast);
    tol::<T>().assert_close(&dfast, &dslow);

    st::log_softmax_forward(&mut fast, &x, mask);
    rf::log_softmax_forward(&mut slow, &x, mask);
    tol::<T>().assert_close(&fast, &slow);
    assert!(
        fast.as_slice().iter().all(|v| !v.is_nan()),
        "log_softmax produced NaN"
    );
    st::log_softmax_backward(&mut dfast, &dy, &fast);
    rf::log_softmax_backward(&mut dslow, &dy, &fast);
    tol::<T>().assert_close(&dfast, &dslow);
    assert!(
        dfast.as_slice().iter().all(|v| v.is_finite()),
        "log_softmax backward not finite"
    );
}

fn check_layernorm<T: Float>(rows: usize, c: usize, seed: u64) {
    let x = rand_tensor::<T>(&[rows, c], seed, -3.0, 3.0);
    let gamma = rand_tensor::<T>(&[c], seed + 1, 0.5, 1.5);
    let beta = rand_tensor::<T>(&[c], seed + 2, -0.5, 0.5);
    let eps = T::from_f64(1e-5);
    let (mut o1, mut m1, mut s1) = (
        Tensor::zeros(&[rows, c]),
        Tensor::zeros(&[rows]),
        Tensor::zeros(&[rows]),
    );
    let (mut o2, mut m2, mut s2) = (o1.clone(), m1.clone(), s1.clone());
    st::layernorm_forward(&mut o1, &mut m1, &mut s1, &x, &gamma, &beta, eps);
    rf::layernorm_forward(&mut o2, &mut m2, &mut s2, &x, &gamma, &beta, eps);
    let t = tol::<T>();
    t.assert_close(&o1, &o2);
    t.assert_close(&m1, &m2);
    t.assert_close(&s1, &s2);
    let dout = rand_tensor::<T>(&[rows, c], seed + 3, -1.0, 1.0);
    let g0 = rand_tensor::<T>(&[c], seed + 4, -1.0, 1.0);
    let (mut dx1, mut dg1, mut db1) = (Tensor::zeros(&[rows, c]), g0.clone(), g0.clone());
    let (mut dx2, mut dg2, mut db2) = (dx1.clone(), g0.clone(), g0.clone());
    st::layernorm_backward(&mut dx1, &mut dg1, &mut db1, &dout, &x, &m1, &s1, &gamma);
    rf::layernorm_backward(&mut dx2, &mut dg2, &mut db2, &dout, &x, &m1, &s1, &gamma);
    // dx of a centred quantity suffers cancellation; compare with an absolute floor scaled to the inputs.
    let t = Tolerance {
        absolute: t.absolute * 10.0,
        ..t
    };
    t.assert_close(&dx1, &dx2);
    t.assert_close(&dg1, &dg2);
    t.assert_close(&db1, &db2);
}

fn check_elementwise<T: Float>(shape: &[usize], seed: u64) {
    let a = rand_tensor::<T>(shape, seed, -2.0, 2.0);
    let b = rand_tensor::<T>(shape, seed + 1, -2.0, 2.0);
    let t = Tolerance::EXACT;
    let (mut f, mut s) = (Tensor::zeros(shape), Tensor::zeros(shape));
    st::add(&mut f, &a, &b);
    rf::add(&mut s, &a, &b);
    t.assert_close(&f, &s);
    st::sub(&mut f, &a, &b);
    rf::sub(&mut s, &a, &b);
    t.assert_close(&f, &s);
    st::mul(&mut f, &a, &b);
    rf::mul(&mut s, &a, &b);
    t.assert_close(&f, &s);
    st::scale(&mut f, &a, T::from_f64(-1.5));
    rf::scale(&mut s, &a, T::from_f64(-1.5));
    t.assert_close(&f, &s);
    st::axpy(&mut f, T::from_f64(0.25), &b);
    rf::axpy(&mut s, T::from_f64(0.25), &b);
    t.assert_close(&f, &s);
    st::axpby(&mut f, T::from_f64(2.0), &a, T::from_f64(0.5));
    rf::axpby(&mut s, T::from_f64(2.0), &a, T::from_f64(0.5));
    t.assert_close(&f, &s);
    st::mul_acc(&mut f, &a, &b);
    rf::mul_acc(&mut s, &a, &b);
    t.assert_close(&f, &s);
    let mut g = f.clone();
    st::add_assign(&mut g, &a);
    rf::axpy(&mut s, T::ONE, &a);
    t.assert_close(&g, &s);
    let mut h = a.clone();
    st::scale_inplace(&mut h, T::from_f64(3.0));
    rf::scale(&mut s, &a, T::from_f64(3.0));
    t.assert_close(&h, &s);

    let c = a.cols();
    let bias = rand_tensor::<T>(&[c], seed + 2, -1.0, 1.0);
    let (mut y1, mut y2) = (a.clone(), a.clone());
    st::add_bias(&mut y1, &bias);
    rf::add_bias(&mut y2, &bias);
    t.assert_close(&y1, &y2);
    let (mut db1, mut db2) = (bias.clone(), bias.clone());
    st::add_bias_backward(&mut db1, &a);
    rf::add_bias_backward(&mut db2, &a);
    tol::<T>().assert_close(&db1, &db2);
}

fn check_activations<T: Float>(shape: &[usize], seed: u64) {
    let x = rand_tensor::<T>(shape, seed, -6.0, 6.0);
    let dy = rand_tensor::<T>(shape, seed + 1, -1.0, 1.0);
    let t = Tolerance::EXACT;
    let (mut f, mut s) = (Tensor::zeros(shape), Tensor::zeros(shape));
    let (mut df, mut ds) = (Tensor::zeros(shape), Tensor::zeros(shape));
    st::sigmoid_forward(&mut f, &x);
    rf::sigmoid_forward(&mut s, &x);
    t.assert_close(&f, &s);
    st::sigmoid_backward(&mut df, &dy, &f);
    rf::sigmoid_backward(&mut ds, &dy, &f);
    t.assert_close(&df, &ds);
    st::tanh_forward(&mut f, &x);
    rf::tanh_forward(&mut s, &x);
    t.assert_close(&f, &s);
    st::tanh_backward(&mut df, &dy, &f);
    rf::tanh_backward(&mut ds, &dy, &f);
    t.assert_close(&df, &ds);
    st::relu_forward(&mut f, &x);
    rf::relu_forward(&mut s, &x);
    t.assert_close(&f, &s);
    st::relu_backward(&mut df, &dy, &f);
    rf::relu_backward(&mut ds, &dy, &f);
    t.assert_close(&df, &ds);
    for kind in [Gelu::Erf, Gelu::Tanh] {
        st::gelu_forward(&mut f, &x, kind);
        rf::gelu_forward(&mut s, &x, kind);
        t.assert_close(&f, &s);
        st::gelu_backward(&mut df, &dy, &x, kind);
        rf::gelu_backward(&mut ds, &dy, &x, kind);
        t.assert_close(&df, &ds);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn gemm_matches_reference_all_transposes(m in 1usize..12, k in 1usize..12, n in 1usize..12,
                                             ta: bool, tb: bool, beta in prop::sample::select(vec![0.0, 1.0, -0.5]),
                                             seed: u64) {
        check_gemm::<f32>(m, k, n, ta, tb, beta, seed);
        check_gemm::<f64>(m, k, n, ta, tb, beta, seed);
    }

    #[test]
    fn gemm_batched_matches_reference(batch in 1usize..5, m in 1usize..8, k in 1usize..8, n in 1usize..8,
                                      ta: bool, tb: bool, seed: u64) {
        check_gemm_batched::<f32>(batch, m, k, n, ta, tb, seed);
        check_gemm_batched::<f64>(batch, m, k, n, ta, tb, seed);
    }

    #[test]
    fn softmax_and_log_softmax_match_reference(b in 1usize..4, q in 1usize..6, k in 1usize..9,
                                               mask_kind in 0u8..6, seed: u64) {
        check_softmax::<f32>(&[b, q, k], seed, mask_kind);
        check_softmax::<f64>(&[b, q, k], seed, mask_kind);
    }

    #[test]
    fn layernorm_matches_reference(rows in 1usize..10, c in 1usize..20, seed: u64) {
        check_layernorm::<f32>(rows, c, seed);
        check_layernorm::<f64>(rows, c, seed);
    }

    #[test]
    fn elementwise_and_bias_match_reference(r in 1usize..7, c in 1usize..9, seed: u64) {
        check_elementwise::<f32>(&[r, c], seed);
        check_elementwise::<f64>(&[r, c], seed);
    }

    #[test]
    fn activations_match_reference(r in 1usize..7, c in 1usize..9, seed: u64) {
        check_activations::<f32>(&[r, c], seed);
        check_activations::<f64>(&[r, c], seed);
    }

    #[test]
    fn embedding_matches_reference(vocab in 1usize..10, d in 1usize..6, n in 1usize..20, seed: u64, skip: bool) {
        let table = rand_tensor::<f32>(&[vocab, d], seed, -1.0, 1.0);
        let ids: Vec<u32> = (0..n).map(|i| (st::splitmix64(seed + i as u64) % vocab as u64) as u32).collect();
        let (mut o1, mut o2) = (Tensor::zeros(&[n, d]), Tensor::zeros(&[n, d]));
        st::embedding_forward(&mut o1, &table, &ids);
        rf::embedding_forward(&mut o2, &table, &ids);
        Tolerance::EXACT.assert_close(&o1, &o2);
        let pad = if skip { Padding::Skip(0) } else { Padding::None };
        let dout = rand_tensor::<f32>(&[n, d], seed + 1, -1.0, 1.0);
        let (mut g1, mut g2) = (table.clone(), table.clone());
        st::embedding_backward(&mut g1, &dout, &ids, pad);
        rf::embedding_backward(&mut g2, &dout, &ids, pad);
        Tolerance::EXACT.assert_close(&g1, &g2);
    }

    #[test]
    fn dropout_matches_reference(n in 1usize..200, p in 0.0f64..0.95, seed: u64, step: u64) {
        let x = rand_tensor::<f32>(&[n], seed, -1.0, 1.0);
        let key = DropoutKey { seed, step };
        let (mut f, mut s) = (Tensor::zeros(&[n]), Tensor::zeros(&[n]));
        st::dropout_forward(&mut f, &x, p, key);
        rf::dropout_forward(&mut s, &x, p, key);
        Tolerance::EXACT.assert_close(&f, &s);
        st::dropout_backward(&mut f, &x, p, key);
        rf::dropout_backward(&mut s, &x, p, key);
        Tolerance::EXACT.assert_close(&f, &s);
    }

    #[test]
    fn reductions_match_reference(r in 1usize..7, c in 1usize..9, seed: u64) {
        let x = rand_tensor::<f64>(&[r, c], seed, -2.0, 2.0);
        prop_assert_eq!(st::sum(&x), rf::sum(&x));
        prop_assert_eq!(st::sq_norm(&x), rf::sq_norm(&x));
        prop_assert_eq!(st::mean(&x), rf::sum(&x) / (r * c) as f64);
        let (mut f, mut s) = (Tensor::zeros(&[r]), Tensor::zeros(&[r]));
        st::sum_last(&mut f, &x);
        rf::sum_last(&mut s, &x);
        Tolerance::F64.assert_close(&f, &s);
        st::max_last(&mut f, &x);
        rf::max_last(&mut s, &x);
        Tolerance::EXACT.assert_close(&f, &s);
        prop_assert_eq!(st::max(&x), s.as_slice().iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b)));
        st::mean_last(&mut f, &x);
        rf::sum_last(&mut s, &x);
        let s = Tensor::from_fn(&[r], |i| s.as_slice()[i] / c as f64);
        Tolerance::F64.assert_close(&f, &s);
    }

    #[test]
    fn topk_matches_reference(r in 1usize..5, n in 1usize..30, k in 0usize..12, seed: u64, excl in 0u8..3) {
        // Few distinct values so that ties are frequent.
        let x = Tensor::<f32>::from_fn(&[r, n], |i| (st::splitmix64(seed + i as u64) % 4) as f32);
        let lists: Vec<Vec<u32>> = (0..r).map(|row| (0..n as u32 + 2).filter(|j| (st::splitmix64(seed ^ (*j as u64 + 31 * row as u64)) & 3) == 0).collect()).collect();
        let mut offsets = vec![0];
        let flat: Vec<u32> = lists.iter().flatten().copied().collect();
        for l in &lists { offsets.push(offsets.last().unwrap() + l.len()); }
        let ex = match excl { 0 => Exclude::None, 1 => Exclude::Rows(&lists), _ => Exclude::Csr { offsets: &offsets, ids: &flat } };
        let (mut i1, mut s1) = (vec![0u32; r * k], vec![0f32; r * k]);
        let (mut i2, mut s2) = (vec![0u32; r * k], vec![0f32; r * k]);
        st::topk(&mut i1, &mut s1, &x, k, ex);
        rf::topk(&mut i2, &mut s2, &x, k, ex);
        prop_assert_eq!(i1, i2);
        prop_assert_eq!(s1, s2);
    }

    #[test]
    fn slice_concat_transpose_match_reference(a in 1usize..4, b in 1usize..5, c in 1usize..4, d in 1usize..3,
                                              axis in 0usize..4, seed: u64, ax2 in 0usize..4) {
        let shape = [a, b, c, d];
        let x = rand_tensor::<f32>(&shape, seed, -1.0, 1.0);
        let len = shape[axis];
        let start = (seed as usize) % len;
        let part_len = 1 + (seed as usize / 7) % (len - start);
        let mut pshape = shape;
        pshape[axis] = part_len;
        let (mut p1, mut p2) = (Tensor::zeros(&pshape), Tensor::zeros(&pshape));
        st::slice(&mut p1, &x, axis, start);
        rf::slice(&mut p2, &x, axis, start);
        Tolerance::EXACT.assert_close(&p1, &p2);
        // slice_assign of the slice restores x; slice_add doubles that region.
        let mut y = Tensor::zeros(&shape);
        st::slice_assign(&mut y, &p1, axis, start);
        st::slice_add(&mut y, &p1, axis, start);
        let mut back = Tensor::zeros(&pshape);
        st::slice(&mut back, &y, axis, start);
        let mut twice = Tensor::zeros(&pshape);
        st::scale(&mut twice, &p1, 2.0);
        Tolerance::EXACT.assert_close(&back, &twice);
        // concat(x, part) along axis.
        let mut cshape = shape;
        cshape[axis] += part_len;
        let (mut c1, mut c2) = (Tensor::zeros(&cshape), Tensor::zeros(&cshape));
        st::concat(&mut c1, &[&x, &p1], axis);
        rf::concat(&mut c2, &[&x, &p1], axis);
        Tolerance::EXACT.assert_close(&c1, &c2);
        if ax2 != axis {
            let mut tshape = shape;
            tshape.swap(axis, ax2);
            let (mut t1, mut t2) = (Tensor::zeros(&tshape), Tensor::zeros(&tshape));
            st::transpose(&mut t1, &x, axis, ax2);
            rf::transpose(&mut t2, &x, axis, ax2);
            Tolerance::EXACT.assert_close(&t1, &t2);
        }
    }
}

// Sizes above the parallel thresholds (2^15 elements, 2^21 multiply-adds), so the rayon paths run.

#[test]
fn gemm_parallel_paths_match_reference() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        check_gemm::<f32>(300, 40, 200, ta, tb, 1.0, 7);
        // k > 256 takes the AVX-512 kernel's k-blocking (later blocks accumulate onto earlier ones).
        check_gemm::<f32>(70, 600, 45, ta, tb, 0.0, 8);
        check_gemm::<f32>(9, 300, 33, ta, tb, -0.5, 9);
    }
    check_gemm_batched::<f32>(16, 40, 64, 40, false, true, 3);
}

#[test]
fn row_ops_parallel_paths_match_reference() {
    check_softmax::<f32>(&[8, 64, 80], 5, 5);
    check_softmax::<f32>(&[8, 64, 80], 6, 1);
    check_layernorm::<f32>(1200, 50, 9);
    check_elementwise::<f32>(&[700, 60], 11);
    check_activations::<f32>(&[700, 60], 12);
}

#[test]
fn topk_parallel_path_matches_reference() {
    let (r, n, k) = (40, 1000, 10);
    let x = Tensor::<f32>::from_fn(&[r, n], |i| (st::splitmix64(i as u64) % 50) as f32);
    let lists: Vec<Vec<u32>> = (0..r as u32)
        .map(|row| (0..20).map(|j| (row * 31 + j * 17) % n as u32).collect())
        .collect();
    let (mut i1, mut s1) = (vec![0u32; r * k], vec![0f32; r * k]);
    let (mut i2, mut s2) = (vec![0u32; r * k], vec![0f32; r * k]);
    st::topk(&mut i1, &mut s1, &x, k, Exclude::Rows(&lists));
    rf::topk(&mut i2, &mut s2, &x, k, Exclude::Rows(&lists));
    assert_eq!(i1, i2);
    assert_eq!(s1, s2);
}

#[test]
fn dropout_parallel_path_matches_reference_and_reductions_are_thread_count_independent() {
    let x = rand_tensor::<f32>(&[300, 300], 1, -1.0, 1.0);
    let key = DropoutKey { seed: 42, step: 3 };
    let (mut f, mut s) = (Tensor::zeros(&[300, 300]), Tensor::zeros(&[300, 300]));
    st::dropout_forward(&mut f, &x, 0.3, key);
    rf::dropout_forward(&mut s, &x, 0.3, key);
    Tolerance::EXACT.assert_close(&f, &s);
    // Bias gradient on 1 thread and on 3 threads: bit-identical (chunking is fixed by the shape).
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut db = Tensor::<f32>::zeros(&[300]);
            st::add_bias_backward(&mut db, &x);
            (db, st::sum(&x))
        })
    };
    assert_eq!(run(1), run(3));
}
