//! The GEMM's parallel splits (row blocks, column blocks) and kernel edges (full and half-width column
//! panels, row tails, k-blocking) against the naive oracle, on 1, 2 and 3 rayon threads; the results of
//! every thread count must also be bit-identical (each element is the same sum in the same order).

use seqrec_tensor::{self as st, Float, Tensor, Tolerance, Transpose, reference as rf};

fn rand_tensor<T: Float>(shape: &[usize], seed: u64) -> Tensor<T> {
    Tensor::from_fn(shape, |i| {
        let u =
            (st::splitmix64(seed ^ st::splitmix64(i as u64)) >> 11) as f64 / (1u64 << 53) as f64;
        T::from_f64(2.0 * u - 1.0)
    })
}

fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// `(m, k, n)`: column split with a half-width last panel (n = 100 = 3 * 32 + 4), column split with a
/// 20-wide last panel, the 128x100x300 shape of the benches, a row split, and k > 256 (k-blocking;
/// k > 128 is already two blocks when A is transposed).
const SHAPES: [(usize, usize, usize); 6] = [
    (128, 200, 100),
    (100, 70, 340),
    (128, 100, 300),
    (300, 40, 200),
    (40, 600, 120),
    (7, 400, 1000),
];

fn check<T: Float>(tol: Tolerance) {
    for (si, &(m, k, n)) in SHAPES.iter().enumerate() {
        for (ta, tb) in [
            (Transpose::No, Transpose::No),
            (Transpose::Yes, Transpose::No),
            (Transpose::No, Transpose::Yes),
            (Transpose::Yes, Transpose::Yes),
        ] {
            let ashape = if ta == Transpose::No { [m, k] } else { [k, m] };
            let bshape = if tb == Transpose::No { [k, n] } else { [n, k] };
            let seed = 10 * si as u64;
            let a = rand_tensor::<T>(&ashape, seed);
            let b = rand_tensor::<T>(&bshape, seed + 1);
            let c0 = rand_tensor::<T>(&[m, n], seed + 2);
            for beta in [0.0, 1.0, -0.5] {
                let (alpha, beta) = (T::from_f64(0.75), T::from_f64(beta));
                let mut slow = c0.clone();
                rf::gemm(&mut slow, alpha, &a, ta, &b, tb, beta);
                let runs: Vec<Tensor<T>> = [1, 2, 3]
                    .into_iter()
                    .map(|threads| {
                        on_threads(threads, || {
                            let mut fast = c0.clone();
                            st::gemm(&mut fast, alpha, &a, ta, &b, tb, beta);
                            fast
                        })
                    })
                    .collect();
                for fast in &runs {
                    tol.assert_close(fast, &slow);
                    assert_eq!(
                        fast.as_slice(),
                        runs[0].as_slice(),
                        "[{m}, {k}] x [{k}, {n}] {ta:?} {tb:?}: thread counts disagree"
                    );
                }
            }
        }
    }
}

#[test]
fn gemm_splits_match_reference_f32() {
    check::<f32>(Tolerance::F32);
}

#[test]
fn gemm_splits_match_reference_f64() {
    check::<f64>(Tolerance::F64);
}

/// `gemm_slice` reads only the first `m k` / `k n` elements of longer slices and leaves the rest of `c`.
#[test]
fn gemm_slice_uses_the_leading_elements() {
    let (m, k, n) = (40, 30, 70);
    let a = rand_tensor::<f32>(&[k + 3, m], 1);
    let b = rand_tensor::<f32>(&[k * n + 5], 2);
    let mut c = vec![7.0f32; m * n + 4];
    st::gemm_slice(
        (m, k, n),
        1.0,
        a.as_slice(),
        Transpose::Yes,
        b.as_slice(),
        Transpose::No,
        0.0,
        &mut c,
    );
    let a_t = Tensor::from_vec(&[k, m], a.as_slice()[..k * m].to_vec()).unwrap();
    let b_t = Tensor::from_vec(&[k, n], b.as_slice()[..k * n].to_vec()).unwrap();
    let mut slow = Tensor::zeros(&[m, n]);
    rf::gemm(
        &mut slow,
        1.0,
        &a_t,
        Transpose::Yes,
        &b_t,
        Transpose::No,
        0.0,
    );
    let fast = Tensor::from_vec(&[m, n], c[..m * n].to_vec()).unwrap();
    Tolerance::F32.assert_close(&fast, &slow);
    assert_eq!(&c[m * n..], &[7.0; 4]);
}
