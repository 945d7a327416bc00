//! SASRec's serving forward (`score_last_position`, behind `Model::score_serving`) against the training
//! forward in eval mode (`score`, the oracle): random small networks with every parameter random
//! (norms and biases too), SASRec, pre-LN and post-LN blocks, with and without the final norm, one and
//! two heads, tied and separate output tables, input embeddings scaled by `sqrt(d)` or not, positions
//! by slot or from the window's first item (also checking `score_trimmed`), with and without the
//! attention's output projection; batches of
//! 1, of at most the GEMV threshold (4), above it and above `batch_size`; histories empty, of length 1,
//! shorter than, equal to and (truncated) longer than the window, mixed in one batch, and windows whose
//! last slot is padding.
//!
//! SASRec reads no context features (`Model::context` is `None`), so there is no context variant.

use seqrec_data::{Dataset, Sequences, Vocab};
use seqrec_models::{Model, Positions, Sasrec, SasrecConfig, SasrecNet};
use seqrec_nn::init::Rng;
use seqrec_nn::{Module, NormPlacement, TransformerBlockConfig, TransformerEncoder};
use seqrec_tensor::Float;

const N_ITEMS: usize = 60;

/// The block layouts the fast path supports.
#[derive(Clone, Copy, Debug)]
struct Variant {
    norm: NormPlacement,
    final_norm: bool,
    heads: usize,
    tied: bool,
    /// Input embeddings scaled by `sqrt(d)` (SASRec) or not (the gSASRec PyTorch repository).
    scaled: bool,
    /// Positions counted from the window's first item (`Positions::FirstItem`) or by slot.
    first_item: bool,
    /// The attention's output projection (`false`: the SASRec paper's block).
    out_proj: bool,
}

const VARIANTS: [Variant; 8] = [
    Variant {
        norm: NormPlacement::SasRec,
        final_norm: true,
        heads: 1,
        tied: true,
        scaled: true,
        first_item: false,
        out_proj: true,
    },
    Variant {
        norm: NormPlacement::SasRec,
        final_norm: true,
        heads: 2,
        tied: false,
        scaled: false,
        first_item: true,
        out_proj: true,
    },
    Variant {
        norm: NormPlacement::Pre,
        final_norm: true,
        heads: 2,
        tied: true,
        scaled: true,
        first_item: true,
        out_proj: true,
    },
    Variant {
        norm: NormPlacement::Pre,
        final_norm: false,
        heads: 1,
        tied: true,
        scaled: true,
        first_item: false,
        out_proj: true,
    },
    Variant {
        norm: NormPlacement::Post,
        final_norm: false,
        heads: 2,
        tied: true,
        scaled: true,
        first_item: false,
        out_proj: true,
    },
    Variant {
        norm: NormPlacement::Post,
        final_norm: true,
        heads: 1,
        tied: false,
        scaled: false,
        first_item: true,
        out_proj: true,
    },
    Variant {
        norm: NormPlacement::SasRec,
        final_norm: true,
        heads: 2,
        tied: true,
        scaled: true,
        first_item: false,
        out_proj: false,
    },
    Variant {
        norm: NormPlacement::Pre,
        final_norm: true,
        heads: 1,
        tied: false,
        scaled: true,
        first_item: true,
        out_proj: false,
    },
];

fn config(v: Variant, maxlen: usize, blocks: usize) -> SasrecConfig {
    SasrecConfig {
        hidden: 12,
        blocks,
        heads: v.heads,
        maxlen,
        dropout: 0.3,
        // Sub-batches of 8: batch 11 runs as 8 (GEMM) + 3 (GEMV).
        batch_size: 8,
        tied_output: v.tied,
        scale_embeddings: v.scaled,
        positions: if v.first_item {
            Positions::FirstItem
        } else {
            Positions::Slot
        },
        output_projection: v.out_proj,
        ..SasrecConfig::default()
    }
}

/// A network of variant `v` whose parameters are all random (item row 0, padding, stays zero).
fn net<T: Float>(v: Variant, maxlen: usize, blocks: usize, seed: u64) -> SasrecNet<T> {
    let cfg = config(v, maxlen, blocks);
    let mut net = SasrecNet::<T>::new(&cfg, N_ITEMS, seed).unwrap();
    let mut rng = Rng::new(seed ^ 0x5E);
    if v.norm != NormPlacement::SasRec || !v.final_norm {
        let mut block = TransformerBlockConfig::sasrec(cfg.hidden, cfg.heads, cfg.dropout, 3);
        block.norm = v.norm;
        block.output_projection = v.out_proj;
        net.encoder =
            TransformerEncoder::new("encoder", &block, blocks, v.final_norm, &mut rng).unwrap();
    }
    net.visit_params_mut(&mut |p| {
        let shape = p.value.shape().to_vec();
        p.value = rng.normal_tensor(&shape, 0.5);
    });
    net.item_emb.weight.value.as_mut_slice()[..cfg.hidden].fill(T::ZERO);
    if let Some(o) = &mut net.output_emb {
        o.weight.value.as_mut_slice()[..cfg.hidden].fill(T::ZERO);
    }
    net
}

/// A copy of `n` (same parameters) that scores sub-batches of up to `batch_size` histories, so that
/// one `score_packed` call sees several groups of positions.
fn with_batch_size<T: Float>(
    n: &SasrecNet<T>,
    v: Variant,
    maxlen: usize,
    blocks: usize,
    batch_size: usize,
) -> SasrecNet<T> {
    let cfg = SasrecConfig {
        batch_size,
        ..config(v, maxlen, blocks)
    };
    let mut big = SasrecNet::<T>::new(&cfg, N_ITEMS, 0).unwrap();
    big.encoder = n.encoder.clone();
    big.item_emb = n.item_emb.clone();
    big.pos_emb = n.pos_emb.clone();
    big.output_emb = n.output_emb.clone();
    big
}

/// `[histories.len(), l]` right-aligned windows: the last `l` items of each history.
fn windows(histories: &[Vec<u32>], l: usize) -> Vec<u32> {
    let mut w = vec![0u32; histories.len() * l];
    for (r, h) in histories.iter().enumerate() {
        let h = &h[h.len().saturating_sub(l)..];
        w[r * l + l - h.len()..(r + 1) * l].copy_from_slice(h);
    }
    w
}

/// A history of `len` random items.
fn history(rng: &mut Rng, len: usize) -> Vec<u32> {
    (0..len)
        .map(|_| 1 + (rng.next_u64() % N_ITEMS as u64) as u32)
        .collect()
}

/// The indices of the 10 highest scores of a row (items 1..), highest first.
fn top10<T: Float>(row: &[T]) -> Vec<usize> {
    let mut idx: Vec<usize> = (1..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
    idx.truncate(10);
    idx
}

/// Scores `w` with both paths and compares them: max abs difference `<= tol`, and the same top 10
/// for every row whose top 11 reference scores are at least `4 tol` apart (not tied).
/// Returns how many rows had their top 10 compared.
fn compare<T: Float>(net: &mut SasrecNet<T>, w: &[u32], tol: f64, label: &str) -> usize {
    let (l, cols) = (net.config().maxlen, N_ITEMS + 1);
    let b = w.len() / l;
    let mut reference = vec![T::ZERO; b * cols];
    let mut fast = vec![T::from_f64(f64::NAN); b * cols];
    let mut trimmed = vec![T::from_f64(f64::NAN); b * cols];
    net.score(w, b, &mut reference);
    net.score_last_position(w, b, &mut fast);
    net.score_trimmed(w, b, &mut trimmed);
    for (i, (&x, &y)) in reference.iter().zip(&trimmed).enumerate() {
        let diff = (x.to_f64() - y.to_f64()).abs();
        assert!(
            diff <= tol,
            "{label}: score_trimmed, entry {i}: reference {x}, trimmed {y} (|diff| {diff:e} > {tol:e})"
        );
    }
    let mut ranked = 0;
    for r in 0..b {
        let (a, z) = (
            &reference[r * cols..(r + 1) * cols],
            &fast[r * cols..(r + 1) * cols],
        );
        for (i, (&x, &y)) in a.iter().zip(z).enumerate() {
            let diff = (x.to_f64() - y.to_f64()).abs();
            assert!(
                diff <= tol,
                "{label}: row {r} item {i}: reference {x}, fast {y} (|diff| {diff:e} > {tol:e})"
            );
        }
        let mut sorted: Vec<f64> = a[1..].iter().map(|v| v.to_f64()).collect();
        sorted.sort_by(|x, y| y.total_cmp(x));
        if sorted[..11].windows(2).all(|p| p[0] - p[1] > 4.0 * tol) {
            assert_eq!(top10(a), top10(z), "{label}: row {r}: top 10 differ");
            ranked += 1;
        }
    }
    ranked
}

/// Batches exercising every shape the fast path distinguishes, for window `l` (> 16, the attention
/// tile, so that several tiles run).
fn batches(rng: &mut Rng, l: usize) -> Vec<(&'static str, Vec<Vec<u32>>)> {
    let mixed: Vec<Vec<u32>> = [1, l, 2, l - 1, 17, 16, 0, 3 * l, l / 2, 5, l + 1]
        .iter()
        .map(|&n| history(rng, n))
        .collect();
    vec![
        ("batch 1, length 1", vec![history(rng, 1)]),
        (
            "batch 1, shorter than the window",
            vec![history(rng, l / 3)],
        ),
        ("batch 1, the full window", vec![history(rng, l)]),
        (
            "batch 1, longer than the window",
            vec![history(rng, 2 * l + 3)],
        ),
        ("batch 1, empty", vec![Vec::new()]),
        (
            "batch 3 (GEMV), mixed",
            vec![history(rng, l), history(rng, 4), history(rng, 1)],
        ),
        (
            "batch 4 (GEMV), mixed",
            vec![
                history(rng, 19),
                Vec::new(),
                history(rng, l + 7),
                history(rng, 2),
            ],
        ),
        (
            "batch 5 (GEMM), full windows",
            (0..5).map(|_| history(rng, l)).collect(),
        ),
        (
            "batch 8 (GEMM), short",
            (0..8).map(|i| history(rng, i + 1)).collect(),
        ),
        ("batch 11 (> batch_size), mixed", mixed),
    ]
}

fn check_all<T: Float>(tol: f64) {
    let l = 40;
    let mut rng = Rng::new(17);
    let mut ranked = 0;
    for (vi, v) in VARIANTS.iter().enumerate() {
        for blocks in [1, 2] {
            let mut n = net::<T>(*v, l, blocks, 100 + vi as u64);
            for (name, hs) in batches(&mut rng, l) {
                let label = format!("{} {v:?}, {blocks} blocks, {name}", T::NAME);
                ranked += compare(&mut n, &windows(&hs, l), tol, &label);
            }
        }
    }
    // Random scores are rarely tied: most rows must have had their top 10 compared.
    assert!(ranked > 200, "only {ranked} rows had untied top-10 scores");
}

#[test]
fn serving_forward_matches_the_training_forward_in_f32() {
    check_all::<f32>(1e-4);
}

/// In `f64` the two paths differ only by summation order: a much tighter bound catches any term
/// the `f32` tolerance could hide.
#[test]
fn serving_forward_matches_the_training_forward_in_f64() {
    check_all::<f64>(1e-10);
}

/// A sub-batch with more packed positions than one group of the serving forward (512): the
/// histories are processed group by group and scored together.
#[test]
fn histories_over_several_groups_match() {
    let l = 50;
    let mut rng = Rng::new(23);
    for v in [VARIANTS[0], VARIANTS[4]] {
        let mut n = net::<f64>(v, l, 2, 31);
        // Same parameters, larger sub-batches.
        let mut big = with_batch_size(&n, v, l, 2, 64);
        let hs: Vec<Vec<u32>> = (0..40).map(|i| history(&mut rng, (i * 7) % 61)).collect();
        let w = windows(&hs, l);
        // 40 histories of up to 50 positions: about 1,000 packed rows, two or three groups.
        let ranked = compare(&mut big, &w, 1e-10, &format!("{v:?} several groups"));
        assert!(ranked > 20, "only {ranked} rows had untied top-10 scores");
        compare(
            &mut n,
            &w,
            1e-10,
            &format!("{v:?} several groups, batch_size 8"),
        );
    }
}

/// A batch large enough to be split over threads (1,898 packed positions: three parts of at least 512
/// positions, on one thread each or shared by two) gives bit-identical scores in pools of 1, 2 and 3
/// threads, and matches the training forward.
#[test]
fn splitting_the_batch_over_threads_changes_no_score() {
    let l = 50;
    let mut rng = Rng::new(41);
    let v = VARIANTS[0];
    let hs: Vec<Vec<u32>> = (0..60).map(|i| history(&mut rng, (i * 13) % 71)).collect();
    let w = windows(&hs, l);
    let b = hs.len();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        // One sub-batch of all 60 histories, so that the forward sees the whole batch at once.
        let mut n = with_batch_size(&net::<f32>(v, l, 2, 17), v, l, 2, b);
        let mut s = vec![f32::NAN; b * (N_ITEMS + 1)];
        pool.install(|| n.score_last_position(&w, b, &mut s));
        s
    };
    let one = run(1);
    assert!(one.iter().all(|x| x.is_finite()), "every score is written");
    for threads in [2, 3] {
        let many = run(threads);
        let first_diff = one
            .iter()
            .zip(&many)
            .position(|(x, y)| x.to_bits() != y.to_bits());
        assert_eq!(first_diff, None, "{threads} threads differ from one");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let mut n = with_batch_size(&net::<f32>(v, l, 2, 17), v, l, 2, b);
    pool.install(|| compare(&mut n, &w, 1e-4, "three threads"));
}

/// A window whose last slot is padding (not what the serving layer builds, but a valid input): the
/// training forward zeroes that slot's block outputs, so the hidden state is the final norm of zero
/// whatever the earlier items; interior padding is masked like left padding.
#[test]
fn windows_with_padding_inside_or_at_the_end_match() {
    let l = 20;
    for (vi, v) in VARIANTS.iter().enumerate() {
        let mut n = net::<f64>(*v, l, 2, 7 + vi as u64);
        let mut w = vec![0u32; 3 * l];
        // Row 0: items in slots 0..5 then padding (left-aligned); row 1: a hole in the middle;
        // row 2: a hole just before the last slot.
        for (t, slot) in w[..5].iter_mut().enumerate() {
            *slot = 1 + t as u32;
        }
        for t in 3..l {
            w[l + t] = if t == 9 || t == 10 { 0 } else { 2 + t as u32 };
        }
        w[3 * l - 1] = 9;
        w[3 * l - 5] = 4;
        compare(&mut n, &w, 1e-10, &format!("{v:?} padded windows"));
        let cols = N_ITEMS + 1;
        let mut s = vec![0.0; 3 * cols];
        n.score_last_position(&w, 3, &mut s);
        let mut empty = vec![0.0; cols];
        n.score_last_position(&vec![0u32; l], 1, &mut empty);
        assert_eq!(
            &s[..cols],
            &empty[..],
            "{v:?}: a window ending in padding scores like an empty one"
        );
    }
}

/// The scratch buffers are reused across calls of different sizes without leaking state: a large
/// batch, then a small one, then the large one again give the results of a fresh network.
#[test]
fn scratch_reuse_across_batch_sizes_does_not_change_scores() {
    let l = 24;
    let mut rng = Rng::new(5);
    let big = windows(
        &(0..9)
            .map(|i| history(&mut rng, 1 + 3 * i))
            .collect::<Vec<_>>(),
        l,
    );
    let small = windows(&[history(&mut rng, 2)], l);
    let cols = N_ITEMS + 1;
    let v = VARIANTS[1];
    let fresh = |w: &[u32]| {
        let mut n = net::<f32>(v, l, 2, 3);
        let mut s = vec![0.0f32; w.len() / l * cols];
        n.score_last_position(w, w.len() / l, &mut s);
        s
    };
    let (big_fresh, small_fresh) = (fresh(&big), fresh(&small));
    let mut n = net::<f32>(v, l, 2, 3);
    let mut s_big = vec![0.0f32; 9 * cols];
    let mut s_small = vec![0.0f32; cols];
    n.score_last_position(&big, 9, &mut s_big);
    n.score_last_position(&small, 1, &mut s_small);
    assert_eq!(s_small, small_fresh);
    n.score_last_position(&big, 9, &mut s_big);
    assert_eq!(s_big, big_fresh);
}

/// `Model::score_serving` of a trained-shape `Sasrec` runs the fast path: it agrees with
/// `Model::score` and writes every score.
#[test]
fn model_score_serving_agrees_with_score() {
    let n_items = 30u32;
    let users = Vocab::from_originals((0..5).map(|u| u.to_string()).collect()).unwrap();
    let items = Vocab::from_originals((0..n_items).map(|i| i.to_string()).collect()).unwrap();
    let seqs = (0..5u32)
        .map(|u| {
            (
                (0..20).map(|t| (u * 7 + t) % n_items + 1).collect(),
                (0..20).collect(),
            )
        })
        .collect();
    let ds = Dataset::from_sequences(users, items, seqs).unwrap();
    let train = Sequences::all(&ds);
    let cfg = SasrecConfig {
        hidden: 16,
        heads: 2,
        maxlen: 10,
        batch_size: 2,
        ..SasrecConfig::default()
    };
    let mut m = Sasrec::new(cfg, &train, 4).unwrap();
    m.train_epoch(&train, 0, &mut |_| {}).unwrap();
    let mut rng = Rng::new(1);
    let hs: Vec<Vec<u32>> = [3, 10, 1, 25, 0, 7]
        .iter()
        .map(|&n| {
            (0..n)
                .map(|_| 1 + (rng.next_u64() % n_items as u64) as u32)
                .collect()
        })
        .collect();
    let w = windows(&hs, 10);
    let cols = n_items as usize + 1;
    let mut a = vec![0.0f32; 6 * cols];
    let mut z = vec![f32::NAN; 6 * cols];
    m.score(&w, 6, &mut a);
    m.score_serving(&w, 6, &mut z);
    for (i, (x, y)) in a.iter().zip(&z).enumerate() {
        assert!((x - y).abs() <= 1e-4, "index {i}: score {x}, serving {y}");
    }
}

/// The bf16 serving path (projections, feed-forwards and attention products on AMX tiles) against
/// the f32 serving forward, on every block variant, one and two blocks, every batch shape: each
/// row's largest score change stays under 3% of the row's score range and the mean change under
/// 0.5%, the top 10 overlap by at least 9 of 10 on average,
/// and the scores do change (the tiles ran). Skipped, after checking the refusal, where the CPU has no
/// AMX bf16 tiles.
#[test]
fn bf16_serving_stays_close_to_f32() {
    use seqrec_models::Precision;
    let l = 40;
    let err = net::<f64>(VARIANTS[0], l, 1, 1)
        .set_serving_precision(Precision::Bf16)
        .unwrap_err();
    assert!(err.to_string().contains("f64"), "{err}");
    let mut probe = net::<f32>(VARIANTS[0], l, 1, 1);
    if let Err(e) = probe.set_serving_precision(Precision::Bf16) {
        assert!(e.to_string().contains("AMX"), "unexpected refusal: {e}");
        eprintln!("skipped: {e}");
        return;
    }
    let cols = N_ITEMS + 1;
    let mut rng = Rng::new(29);
    let (mut worst, mut overlap, mut rows, mut changed) = (0.0f64, 0usize, 0usize, 0usize);
    let mut total = 0.0f64;
    for (vi, v) in VARIANTS.iter().enumerate() {
        for blocks in [1, 2] {
            let mut n = net::<f32>(*v, l, blocks, 300 + vi as u64);
            for (name, hs) in batches(&mut rng, l) {
                let w = windows(&hs, l);
                let b = hs.len();
                let (mut f, mut h) = (vec![f32::NAN; b * cols], vec![f32::NAN; b * cols]);
                n.set_serving_precision(Precision::F32).unwrap();
                n.score_last_position(&w, b, &mut f);
                n.set_serving_precision(Precision::Bf16).unwrap();
                n.score_last_position(&w, b, &mut h);
                for (r, (a, z)) in f.chunks_exact(cols).zip(h.chunks_exact(cols)).enumerate() {
                    let (lo, hi) = a[1..]
                        .iter()
                        .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                    let diff = a[1..]
                        .iter()
                        .zip(&z[1..])
                        .map(|(&x, &y)| (x - y).abs() as f64)
                        .fold(0.0, f64::max);
                    // A constant row (an empty history without a final norm scores 0
                    // everywhere) must stay exact.
                    let rel = if hi > lo {
                        diff / (hi - lo) as f64
                    } else {
                        diff
                    };
                    assert!(
                        rel <= 0.03,
                        "{v:?}, {blocks} blocks, {name}, row {r}: bf16 moved a score by {diff} \
                         ({:.2}% of the row's range)",
                        100.0 * rel
                    );
                    worst = worst.max(rel);
                    total += rel;
                    changed += usize::from(diff > 0.0);
                    let (ta, tz) = (top10(a), top10(z));
                    overlap += ta.iter().filter(|i| tz.contains(i)).count();
                    rows += 1;
                }
            }
        }
    }
    eprintln!(
        "bf16: worst change {:.3}% of a row's range, mean {:.3}%, top-10 overlap {:.3}",
        100.0 * worst,
        100.0 * total / rows as f64,
        overlap as f64 / (10 * rows) as f64
    );
    // Measured: mean 0.11%; keys packed from the values instead (a bug this test must catch):
    // mean 2.7%, worst 47%.
    assert!(
        total / rows as f64 <= 0.005,
        "mean change {:.3}% of a row's range",
        100.0 * total / rows as f64
    );
    assert!(
        changed * 2 > rows,
        "bf16 changed only {changed} of {rows} rows: did it run?"
    );
    assert!(
        overlap * 10 >= 9 * 10 * rows,
        "top-10 overlap {overlap} of {}",
        10 * rows
    );
}
