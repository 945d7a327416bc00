//! The GRU and LSTM time loops run per block of batch rows, one block per rayon thread. This checks, at a
//! batch large enough to be split (48 rows: blocks of 24 + 24 on 2 threads, 16 + 16 + 16 on 3), that
//! every output, final state and gradient is bit-identical on 1, 2 and 3 threads, with padding, an
//! initial state, two layers, dropout between them and a final-state gradient all in play. The 1-thread
//! path (one block) is the one the gradient checks and PyTorch fixtures validate.

use seqrec_nn::{Gru, Lstm, Module, RnnConfig, init::Rng};
use seqrec_tensor::{DropoutKey, Tensor};

const BATCH: usize = 48;
const SEQ: usize = 9;
const CFG: RnnConfig = RnnConfig {
    input_size: 13,
    hidden_size: 24,
    num_layers: 2,
};

/// Left padding on some rows, right padding (and a hole) on others.
fn mask() -> Vec<bool> {
    (0..BATCH * SEQ)
        .map(|i| {
            let (b, t) = (i / SEQ, i % SEQ);
            match b % 4 {
                0 => t >= b % SEQ,
                1 => t + b % 5 < SEQ,
                2 => t != 3,
                _ => true,
            }
        })
        .collect()
}

fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Forward + backward of `$net` (a `Gru<f32>` or `Lstm<f32>` built from seed 5), returning every
/// output, state and gradient as one list of vectors.
macro_rules! run {
    ($net:ty) => {{
        let mut rng = Rng::new(5);
        let mut net = <$net>::new("rnn", CFG, &mut rng)
            .unwrap()
            .with_dropout(0.25)
            .unwrap();
        let x = rng.normal_tensor::<f32>(&[BATCH, SEQ, CFG.input_size], 1.0);
        let dy = rng.normal_tensor::<f32>(&[BATCH, SEQ, CFG.hidden_size], 1.0);
        let mut init = net.zero_state(BATCH);
        init.h = rng.normal_tensor(init.h.shape(), 0.5);
        if let Some(c) = &mut init.c {
            *c = rng.normal_tensor(c.shape(), 0.5);
        }
        let mut dlast = net.zero_state(BATCH);
        dlast.h = rng.normal_tensor(dlast.h.shape(), 1.0);
        if let Some(c) = &mut dlast.c {
            *c = rng.normal_tensor(c.shape(), 1.0);
        }
        let m = mask();
        let mut y = Tensor::zeros(&[BATCH, SEQ, CFG.hidden_size]);
        let mut last = net.zero_state(BATCH);
        let mut cache = net.new_cache(BATCH, SEQ);
        cache.set_dropout_key(Some(DropoutKey { seed: 9, step: 2 }));
        let mut dx = Tensor::zeros(x.shape());
        let mut dinit = net.zero_state(BATCH);
        net.forward(&mut y, &mut last, &mut cache, &x, Some(&m), Some(&init));
        net.backward(
            Some(&mut dx),
            Some(&mut dinit),
            &dy,
            Some(&dlast),
            &x,
            Some(&m),
            &mut cache,
        );
        let mut all = vec![y.as_slice().to_vec(), dx.as_slice().to_vec()];
        for s in [&last, &dinit] {
            all.push(s.h.as_slice().to_vec());
            if let Some(c) = &s.c {
                all.push(c.as_slice().to_vec());
            }
        }
        net.visit_params(&mut |p| all.push(p.grad.as_slice().to_vec()));
        all
    }};
}

#[test]
fn gru_is_bit_identical_on_any_thread_count() {
    let one = on_threads(1, || run!(Gru<f32>));
    assert!(one[0].iter().any(|&v| v != 0.0) && one.iter().flatten().all(|v| v.is_finite()));
    for threads in [2, 3] {
        assert!(
            on_threads(threads, || run!(Gru<f32>)) == one,
            "GRU on {threads} threads differs from 1 thread"
        );
    }
}

#[test]
fn lstm_is_bit_identical_on_any_thread_count() {
    let one = on_threads(1, || run!(Lstm<f32>));
    assert!(one[0].iter().any(|&v| v != 0.0) && one.iter().flatten().all(|v| v.is_finite()));
    for threads in [2, 3] {
        assert!(
            on_threads(threads, || run!(Lstm<f32>)) == one,
            "LSTM on {threads} threads differs from 1 thread"
        );
    }
}
