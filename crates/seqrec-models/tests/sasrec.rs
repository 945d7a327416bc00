//! SASRec: whole-model gradient checks in f64, determinism and exact resume, learning a deterministic
//! successor function, padding invariance, checkpoint errors and config validation.

use proptest::prelude::*;
use seqrec_data::{Dataset, Sequences, Vocab};
use seqrec_metrics::{Exclude, NanPolicy, rank_full};
use seqrec_models::{
    Model, ModelError, Positions, Sasrec, SasrecConfig, SasrecLoss, SasrecNet, TrainInputs,
};
use seqrec_nn::gradcheck::{GradTolerance, check_module};
use seqrec_nn::{Module, Phase};

fn tiny(loss: SasrecLoss) -> SasrecConfig {
    SasrecConfig {
        hidden: 8,
        blocks: 2,
        heads: 2,
        maxlen: 6,
        dropout: 0.0,
        batch_size: 3,
        loss,
        ..SasrecConfig::default()
    }
}

/// Three rows in SASRec's layout over items 1..=7: a short (padded) row, a full row, and a row with a
/// single event.
const INPUTS: [u32; 18] = [0, 0, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 0, 0, 0, 0, 0, 6];
const TARGETS: [u32; 18] = [0, 0, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 0, 0, 0, 0, 0, 7];
const NEGATIVES: [u32; 18] = [0, 0, 6, 7, 6, 1, 2, 4, 5, 6, 7, 5, 0, 0, 0, 0, 0, 3];

fn batch() -> TrainInputs<'static> {
    TrainInputs {
        rows: 3,
        inputs: &INPUTS,
        targets: &TARGETS,
        negatives: &NEGATIVES,
    }
}

fn gradcheck(config: SasrecConfig, phase: Phase) {
    let mut net = SasrecNet::<f64>::new(&config, 7, 11).unwrap();
    let b = batch();
    net.zero_grad();
    let loss = net.forward_backward(&b, phase);
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    // The loss-only path computes the same value as the fused one.
    assert_eq!(net.loss(&b, phase), loss);
    // The padding row is not an item: it never receives a gradient.
    assert!(
        net.item_emb.weight.grad.as_slice()[..8]
            .iter()
            .all(|&g| g == 0.0)
    );
    let errors = check_module(&mut net, GradTolerance::STRICT, &mut |m: &mut SasrecNet<
        f64,
    >| {
        m.loss(&b, phase)
    });
    let mut names = Vec::new();
    for e in &errors {
        assert!(e.passes(), "{:?} {phase:?}: {e}", config.loss);
        names.push(e.name.clone());
    }
    // Every parameter was checked: embeddings, positions, 2 blocks of 12 tensors (10 without the
    // attention's output projection), final norm.
    let per_block = if config.output_projection { 12 } else { 10 };
    assert_eq!(errors.len(), 2 + 2 * per_block + 2, "{names:?}");
}

#[test]
fn gradcheck_bce_whole_model() {
    gradcheck(tiny(SasrecLoss::Bce), Phase::Eval);
}

#[test]
fn gradcheck_ce_whole_model() {
    gradcheck(tiny(SasrecLoss::Ce), Phase::Eval);
}

#[test]
fn gradcheck_with_positions_from_the_first_item() {
    let config = SasrecConfig {
        positions: Positions::FirstItem,
        ..tiny(SasrecLoss::Ce)
    };
    gradcheck(config.clone(), Phase::Eval);
    // and the positions do change the output of a padded row, not of the full row
    let mut slot = SasrecNet::<f64>::new(&tiny(SasrecLoss::Ce), 7, 11).unwrap();
    let mut first = SasrecNet::<f64>::new(&config, 7, 11).unwrap();
    let (mut a, mut b) = (vec![0.0; 3 * 8], vec![0.0; 3 * 8]);
    slot.score(&INPUTS, 3, &mut a);
    first.score(&INPUTS, 3, &mut b);
    assert_ne!(a[..8], b[..8]);
    assert_eq!(a[8..16], b[8..16]);
}

#[test]
fn gradcheck_without_the_output_projection() {
    for loss in [SasrecLoss::Bce, SasrecLoss::Ce] {
        let config = SasrecConfig {
            output_projection: false,
            dropout: 0.3,
            ..tiny(loss)
        };
        gradcheck(config, Phase::Train { step: 2 });
    }
}

#[test]
fn gradcheck_with_l2_emb_and_dropout_masks() {
    // Dropout masks are a function of (seed, step), so with a fixed step the loss is a smooth function
    // of the parameters and can be gradient-checked like any other.
    for loss in [SasrecLoss::Bce, SasrecLoss::Ce] {
        let config = SasrecConfig {
            dropout: 0.3,
            l2_emb: 0.05,
            ..tiny(loss)
        };
        gradcheck(config, Phase::Train { step: 5 });
    }
}

#[test]
fn parameter_gradients_accumulate_across_backward_calls() {
    for loss in [SasrecLoss::Bce, SasrecLoss::Ce] {
        let mut net = SasrecNet::<f64>::new(&tiny(loss), 7, 2).unwrap();
        let grads = |net: &SasrecNet<f64>| {
            let mut g = Vec::new();
            net.visit_params(&mut |p| g.extend_from_slice(p.grad.as_slice()));
            g
        };
        net.zero_grad();
        net.forward_backward(&batch(), Phase::Eval);
        let once = grads(&net);
        assert!(once.iter().any(|&g| g != 0.0));
        net.forward_backward(&batch(), Phase::Eval);
        for (i, (a, b)) in once.iter().zip(grads(&net)).enumerate() {
            assert!(
                (2.0 * a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "{loss:?} [{i}]: {a} {b}"
            );
        }
    }
}

/// `n_users` sequences of `len` events over `n_items` items where the next item is `succ(prev)`.
fn chain_dataset(n_users: u32, n_items: u32, len: u32) -> Dataset {
    chain_dataset_with(n_users, n_items, |_| len)
}

/// As [`chain_dataset`] with the length of user `u`'s sequence given by `len(u)`.
fn chain_dataset_with(n_users: u32, n_items: u32, len: impl Fn(u32) -> u32) -> Dataset {
    let users = Vocab::from_originals((0..n_users).map(|u| format!("u{u}")).collect()).unwrap();
    let items = Vocab::from_originals((0..n_items).map(|i| format!("i{i}")).collect()).unwrap();
    let seqs = (0..n_users)
        .map(|u| {
            let mut x = (u * 11) % n_items + 1;
            let mut items = Vec::new();
            for _ in 0..len(u) {
                items.push(x);
                x = succ(x, n_items);
            }
            (items, (0..len(u) as i64).collect())
        })
        .collect();
    Dataset::from_sequences(users, items, seqs).unwrap()
}

/// A permutation of `1..=n` (7 is prime to the `n` used here).
fn succ(x: u32, n: u32) -> u32 {
    ((x - 1) * 7 + 3) % n + 1
}

fn params(m: &Sasrec) -> Vec<(String, Vec<u32>)> {
    let mut out = Vec::new();
    m.net().visit_params(&mut |p| {
        out.push((
            p.name.clone(),
            p.value.as_slice().iter().map(|v| v.to_bits()).collect(),
        ))
    });
    out
}

fn small(loss: SasrecLoss) -> SasrecConfig {
    SasrecConfig {
        hidden: 16,
        blocks: 2,
        heads: 2,
        maxlen: 8,
        dropout: 0.2,
        batch_size: 8,
        loss,
        ..SasrecConfig::default()
    }
}

#[test]
fn same_seed_same_parameters_after_two_epochs() {
    let ds = chain_dataset(20, 30, 10);
    let train = Sequences::all(&ds);
    for loss in [SasrecLoss::Bce, SasrecLoss::Ce] {
        let run = |seed| {
            let mut m = Sasrec::new(small(loss), &train, seed).unwrap();
            for epoch in 0..2 {
                m.train_epoch(&train, epoch, &mut |_| {}).unwrap();
            }
            assert_eq!(m.steps(), 2 * 3);
            params(&m)
        };
        let a = run(7);
        assert_eq!(
            a,
            run(7),
            "{loss:?}: same seed must give bit-identical parameters"
        );
        assert_ne!(
            a,
            run(8),
            "{loss:?}: another seed must give other parameters"
        );
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("seqrec-sasrec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn resume_matches_uninterrupted_run_bit_for_bit() {
    let ds = chain_dataset(20, 30, 10);
    let train = Sequences::all(&ds);
    for loss in [SasrecLoss::Bce, SasrecLoss::Ce] {
        let dir = temp_dir(&format!("resume-{loss:?}"));
        let mut straight = Sasrec::new(small(loss), &train, 7).unwrap();
        straight.train_epoch(&train, 0, &mut |_| {}).unwrap();
        straight.train_epoch(&train, 1, &mut |_| {}).unwrap();

        let mut first = Sasrec::new(small(loss), &train, 7).unwrap();
        first.train_epoch(&train, 0, &mut |_| {}).unwrap();
        first.save(&dir).unwrap();
        // A fresh model built with another seed: the checkpoint restores the seed too.
        let mut resumed = Sasrec::new(small(loss), &train, 12345).unwrap();
        resumed.load(&dir).unwrap();
        assert_eq!(params(&resumed), params(&first));
        assert_eq!(resumed.steps(), first.steps());
        resumed.train_epoch(&train, 1, &mut |_| {}).unwrap();
        assert_eq!(params(&resumed), params(&straight), "{loss:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The SASRec paper's block (no attention output projection): no `out_proj` parameter, saved and
/// restored exactly, and resumed training matches the uninterrupted run.
#[test]
fn a_model_without_the_output_projection_saves_loads_and_resumes() {
    let ds = chain_dataset(20, 30, 10);
    let train = Sequences::all(&ds);
    let config = SasrecConfig {
        output_projection: false,
        ..small(SasrecLoss::Bce)
    };
    let dir = temp_dir("no-out-proj");
    let mut straight = Sasrec::new(config.clone(), &train, 7).unwrap();
    let names = |m: &Sasrec| -> Vec<String> { params(m).into_iter().map(|(n, _)| n).collect() };
    let with_proj = names(&Sasrec::new(small(SasrecLoss::Bce), &train, 7).unwrap());
    // The same parameters less the four out_proj tensors (weight and bias in each of 2 blocks).
    let kept: Vec<String> = with_proj
        .iter()
        .filter(|n| !n.contains("out_proj"))
        .cloned()
        .collect();
    assert_eq!(with_proj.len(), kept.len() + 4);
    assert_eq!(names(&straight), kept);
    straight.train_epoch(&train, 0, &mut |_| {}).unwrap();
    straight.train_epoch(&train, 1, &mut |_| {}).unwrap();
    let mut first = Sasrec::new(config.clone(), &train, 7).unwrap();
    first.train_epoch(&train, 0, &mut |_| {}).unwrap();
    first.save(&dir).unwrap();
    let mut resumed = Sasrec::new(config, &train, 99).unwrap();
    resumed.load(&dir).unwrap();
    assert_eq!(params(&resumed), params(&first));
    resumed.train_epoch(&train, 1, &mut |_| {}).unwrap();
    assert_eq!(params(&resumed), params(&straight));
    // A model that has the projection cannot load this checkpoint: the tensors are missing.
    let mut other = Sasrec::new(small(SasrecLoss::Bce), &train, 7).unwrap();
    let err = other.load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("out_proj") || err.contains("output_projection"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_a_checkpoint_of_another_shape_names_the_tensor_and_both_shapes() {
    let ds = chain_dataset(6, 30, 10);
    let train = Sequences::all(&ds);
    let dir = temp_dir("shape");
    let a = Sasrec::new(small(SasrecLoss::Bce), &train, 1).unwrap();
    a.save(&dir).unwrap();
    let mut b = Sasrec::new(
        SasrecConfig {
            hidden: 12,
            ..small(SasrecLoss::Bce)
        },
        &train,
        1,
    )
    .unwrap();
    let before = params(&b);
    let err = b.load(&dir).unwrap_err();
    match &err {
        ModelError::Checkpoint { message, .. } => {
            assert!(message.contains("item_emb.weight"), "{message}");
            assert!(message.contains("[31, 16]"), "{message}");
            assert!(message.contains("[31, 12]"), "{message}");
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    assert_eq!(
        params(&b),
        before,
        "a failed load must leave the model untouched"
    );
    let missing = b.load(&dir.join("nope")).unwrap_err();
    assert!(
        matches!(missing, ModelError::Checkpoint { .. }),
        "{missing:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Trains on chains of a fixed successor function and checks HR@1 on every item.
fn learns(loss: SasrecLoss) {
    let n = 30u32;
    // Lengths 3..=12, so short right-aligned histories are seen in training.
    let ds = chain_dataset_with(60, n, |u| 3 + (u * 7) % 10);
    let train = Sequences::all(&ds);
    let config = SasrecConfig {
        hidden: 32,
        blocks: 1,
        heads: 1,
        maxlen: 12,
        dropout: 0.1,
        lr: 0.01,
        batch_size: 16,
        loss,
        ..SasrecConfig::default()
    };
    let l = config.maxlen;
    let mut model = Sasrec::new(config, &train, 3).unwrap();
    let mut losses = Vec::new();
    let mut steps_seen = 0;
    for epoch in 0..25 {
        let r = model
            .train_epoch(&train, epoch, &mut |s| {
                assert!(s.loss.is_finite());
                steps_seen += 1;
            })
            .unwrap();
        assert_eq!(r.steps, 4);
        assert_eq!(r.sequences, 60);
        losses.push(r.loss);
    }
    assert_eq!(steps_seen, 25 * 4);
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.3 * first, "{loss:?}: loss {first} -> {last}");
    // Every item as the last of a history of 5 chain steps, right-aligned, left-padded.
    let mut histories = vec![0u32; n as usize * l];
    let mut targets = Vec::new();
    for x in 1..=n {
        let mut chain = vec![x];
        while chain.len() < 5 {
            // Walk backwards: find the predecessor of chain[0].
            let p = (1..=n).find(|&p| succ(p, n) == chain[0]).unwrap();
            chain.insert(0, p);
        }
        let row = (x - 1) as usize * l;
        histories[row + l - 5..row + l].copy_from_slice(&chain);
        targets.push(succ(x, n));
    }
    let mut scores = vec![0.0f32; n as usize * (n as usize + 1)];
    model.score(&histories, n as usize, &mut scores);
    // Ranked against the items not in the history (the usual "seen items removed" protocol): BCE
    // never draws a user's own items as negatives, so nothing in training pushes them down.
    let hits = targets
        .iter()
        .enumerate()
        .filter(|&(r, &t)| {
            let row = &scores[r * (n as usize + 1)..(r + 1) * (n as usize + 1)];
            let mut seen: Vec<u32> = histories[r * l..(r + 1) * l]
                .iter()
                .copied()
                .filter(|&i| i != 0 && i != t)
                .collect();
            seen.sort_unstable();
            seen.dedup();
            rank_full(row, t, Exclude::Sorted(&seen), NanPolicy::Error).unwrap() == 0
        })
        .count();
    let hr1 = hits as f64 / n as f64;
    assert!(hr1 >= 0.9, "{loss:?}: HR@1 = {hr1} (losses {losses:?})");
}

#[test]
fn learns_a_successor_function_bce() {
    learns(SasrecLoss::Bce);
}

#[test]
fn learns_a_successor_function_ce() {
    learns(SasrecLoss::Ce);
}

#[test]
fn batch_rows_are_scored_independently() {
    let config = SasrecConfig {
        batch_size: 2,
        ..tiny(SasrecLoss::Bce)
    };
    let mut net = SasrecNet::<f32>::new(&config, 7, 5).unwrap();
    let cols = 8;
    // Three rows scored together (in sub-batches of 2) vs each alone.
    let mut together = vec![0.0f32; 3 * cols];
    net.score(&INPUTS, 3, &mut together);
    for r in 0..3 {
        let mut alone = vec![0.0f32; cols];
        net.score(&INPUTS[r * 6..(r + 1) * 6], 1, &mut alone);
        for (a, b) in alone.iter().zip(&together[r * cols..(r + 1) * cols]) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "row {r}: {a} vs {b}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the padding positions hold (here: the padding row of the item table, which feeds every
    /// padded position), the scores of real items do not change.
    #[test]
    fn padding_content_does_not_change_scores(
        len in 1usize..=6,
        items in proptest::collection::vec(1u32..=7, 6),
        pad in proptest::collection::vec(-3.0f32..3.0, 8),
        seed in 0u64..1000,
    ) {
        let mut net = SasrecNet::<f32>::new(&tiny(SasrecLoss::Ce), 7, seed).unwrap();
        let mut history = vec![0u32; 6];
        history[6 - len..].copy_from_slice(&items[..len]);
        let mut clean = vec![0.0f32; 8];
        net.score(&history, 1, &mut clean);
        net.item_emb.weight.value.as_mut_slice()[..8].copy_from_slice(&pad);
        let mut dirty = vec![0.0f32; 8];
        net.score(&history, 1, &mut dirty);
        for i in 1..8 {
            prop_assert!(
                (clean[i] - dirty[i]).abs() <= 1e-5 * (1.0 + clean[i].abs()),
                "item {}: {} vs {} (len {})", i, clean[i], dirty[i], len
            );
        }
    }
}

#[test]
fn non_finite_loss_is_reported() {
    let ds = chain_dataset(6, 30, 10);
    let train = Sequences::all(&ds);
    let mut m = Sasrec::new(small(SasrecLoss::Bce), &train, 1).unwrap();
    // Poison every item row: any batch's loss is NaN.
    m.net_mut().item_emb.weight.value.as_mut_slice()[16..].fill(f32::NAN);
    match m.train_epoch(&train, 3, &mut |_| {}) {
        Err(ModelError::NonFinite {
            what, epoch, step, ..
        }) => {
            assert_eq!((what, epoch, step), ("loss", 3, 0));
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn config_defaults_serde_and_validation() {
    let c = SasrecConfig::default();
    assert_eq!(
        (c.hidden, c.blocks, c.heads, c.maxlen, c.batch_size),
        (50, 2, 1, 200, 128)
    );
    assert_eq!(
        (c.dropout, c.lr, c.betas, c.l2_emb),
        (0.2, 0.001, (0.9, 0.98), 0.0)
    );
    assert_eq!(c.loss, SasrecLoss::Bce);
    c.validate().unwrap();
    let parsed: SasrecConfig = serde_json::from_str(r#"{"hidden": 64, "loss": "ce"}"#).unwrap();
    assert_eq!(parsed.hidden, 64);
    assert_eq!(parsed.loss, SasrecLoss::Ce);
    assert_eq!(parsed.blocks, 2);
    let typo = serde_json::from_str::<SasrecConfig>(r#"{"hiden": 64}"#).unwrap_err();
    assert!(typo.to_string().contains("hiden"), "{typo}");
    let err = SasrecConfig {
        hidden: 50,
        heads: 3,
        ..c.clone()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("heads") && err.contains('3'), "{err}");
    let err = SasrecConfig {
        dropout: 1.0,
        ..c.clone()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("dropout"), "{err}");
    let ds = chain_dataset(3, 30, 4);
    let bad = Sasrec::new(SasrecConfig { maxlen: 0, ..c }, &Sequences::all(&ds), 0);
    assert!(matches!(bad, Err(ModelError::Config(m)) if m.contains("maxlen")));
}

/// A tensor of the PyTorch fixture: shape and row-major values.
#[derive(serde::Deserialize)]
struct Fixture {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn fixture() -> std::collections::HashMap<String, Fixture> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sasrec.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Step 0 against PyTorch (`scripts/fixtures_sasrec.py`, SASRec.pytorch's `log2feats` in float64 with
/// padded keys masked): the loss, every parameter gradient and the evaluation scores, for both losses.
#[test]
fn matches_pytorch_reference_at_step_0() {
    let fx = fixture();
    let ids = |k: &str| -> Vec<u32> { fx[k].data.iter().map(|&v| v as u32).collect() };
    let (inputs, targets, negatives) = (
        ids("batch.inputs"),
        ids("batch.targets"),
        ids("batch.negatives"),
    );
    let b = TrainInputs {
        rows: 3,
        inputs: &inputs,
        targets: &targets,
        negatives: &negatives,
    };
    for (loss, tag, l2) in [
        (SasrecLoss::Bce, "bce", fx["cfg.l2_emb"].data[0]),
        (SasrecLoss::Ce, "ce", 0.0),
    ] {
        let config = SasrecConfig {
            l2_emb: l2,
            ..tiny(loss)
        };
        let mut net = SasrecNet::<f64>::new(&config, 7, 0).unwrap();
        let mut n = 0;
        net.visit_params_mut(&mut |p| {
            let f = &fx[&format!("param.{}", p.name)];
            assert_eq!(f.shape, p.value.shape(), "{}", p.name);
            p.value.as_mut_slice().copy_from_slice(&f.data);
            n += 1;
        });
        assert_eq!(n, 28);
        net.zero_grad();
        let got = net.forward_backward(&b, Phase::Eval);
        let want = fx[&format!("loss.{tag}")].data[0];
        assert!(
            (got - want).abs() <= 1e-12 * want.abs(),
            "{tag}: loss {got} vs torch {want}"
        );
        let mut scores = vec![0.0f64; 3 * 8];
        net.score(&inputs, 3, &mut scores);
        for (i, (&s, &w)) in scores.iter().zip(&fx["scores"].data).enumerate() {
            assert!(
                (s - w).abs() <= 1e-12 + 1e-9 * w.abs(),
                "score [{i}] = {s} vs torch {w}"
            );
        }
        net.visit_params(&mut |p| {
            let want = &fx[&format!("grad.{tag}.{}", p.name)].data;
            for (i, (&g, &w)) in p.grad.as_slice().iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-12 + 1e-9 * w.abs(),
                    "{tag}: d {}[{i}] = {g} vs torch {w}",
                    p.name
                );
            }
        });
    }
}

#[test]
fn gradient_clipping_is_applied_when_configured() {
    let ds = chain_dataset(20, 30, 10);
    let train = Sequences::all(&ds);
    let run = |clip| {
        let config = SasrecConfig {
            clip_grad_norm: clip,
            ..small(SasrecLoss::Ce)
        };
        let mut m = Sasrec::new(config, &train, 4).unwrap();
        for epoch in 0..2 {
            m.train_epoch(&train, epoch, &mut |_| {}).unwrap();
        }
        params(&m)
    };
    let free = run(None);
    // A bound far above any gradient norm leaves every step unchanged (the scale factor is exactly 1).
    assert_eq!(run(Some(1e9)), free);
    // A tight bound rescales every step's gradient by a different factor: Adam's update changes.
    assert_ne!(run(Some(1e-3)), free);
}
