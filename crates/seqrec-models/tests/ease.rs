//! EASE's closed form against numpy (`scripts/fixtures_ease.py`, committed as `fixtures/ease.json`) and
//! against the naive Gauss-Jordan oracle on random data; zero diagonal; checkpoint round-trip; MovieLens
//! 100k figures of the LAPACK path reproduced by the default pure-Rust inverse; and, with the opt-in
//! feature `openblas` (`cargo test -p seqrec-models --features openblas --test ease`), the pure-Rust
//! and LAPACK inverses agree.

mod common;

use proptest::prelude::*;
use seqrec_data::{Dataset, Sequences, Vocab};
use seqrec_models::ease::{closed_form_reference, gram_reference};
use seqrec_models::{Ease, EaseConfig, Model, ModelError};

fn dataset(seqs: &[Vec<u32>], n_items: usize) -> Dataset {
    let users = Vocab::from_originals((0..seqs.len()).map(|u| format!("u{u}")).collect()).unwrap();
    let items = Vocab::from_originals((0..n_items).map(|i| format!("i{i}")).collect()).unwrap();
    let rows = seqs
        .iter()
        .map(|s| (s.clone(), (0..s.len() as i64).collect()))
        .collect();
    Dataset::from_sequences(users, items, rows).unwrap()
}

fn fitted(ds: &Dataset, lambda: f64) -> Ease {
    let seqs = Sequences::all(ds);
    let mut m = Ease::new(
        EaseConfig {
            lambda,
            max_history: 0,
        },
        &seqs,
    )
    .unwrap();
    let report = m.train_epoch(&seqs, 0, &mut |_| {}).unwrap();
    assert_eq!((report.steps, report.sequences), (1, seqs.len()));
    m
}

/// Per-element bound `|x - y| <= abs + rel * |y|`; panics naming the index.
fn assert_close(got: &[f64], want: &[f64], rel: f64, abs: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (x, y)) in got.iter().zip(want).enumerate() {
        assert!(
            (x - y).abs() <= abs + rel * y.abs(),
            "{what}[{i}]: got {x}, want {y}"
        );
    }
}

/// `B` without the padding row and column, as f64.
fn unpadded(m: &Ease) -> Vec<f64> {
    let w = m.n_items() + 1;
    let b = m.weights();
    (1..w)
        .flat_map(|i| (1..w).map(move |j| f64::from(b[i * w + j])))
        .collect()
}

struct Fixture {
    n_items: usize,
    lambda: f64,
    sequences: Vec<Vec<u32>>,
    b: Vec<f64>,
    histories: Vec<Vec<u32>>,
    scores: Vec<Vec<f64>>,
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ease.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect()
    };
    let floats = |x: &serde_json::Value| -> Vec<f64> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_f64().unwrap())
            .collect()
    };
    Fixture {
        n_items: v["n_items"].as_u64().unwrap() as usize,
        lambda: v["lambda"].as_f64().unwrap(),
        sequences: v["sequences"].as_array().unwrap().iter().map(ids).collect(),
        b: v["B"].as_array().unwrap().iter().flat_map(floats).collect(),
        histories: v["histories"].as_array().unwrap().iter().map(ids).collect(),
        scores: v["scores"].as_array().unwrap().iter().map(floats).collect(),
    }
}

#[test]
fn closed_form_matches_numpy() {
    let f = fixture();
    let ds = dataset(&f.sequences, f.n_items);
    let mut m = fitted(&ds, f.lambda);
    // B is stored in f32: relative 1e-6 plus an absolute floor for near-zero entries.
    assert_close(&unpadded(&m), &f.b, 2e-6, 1e-7, "B");
    // The naive oracle agrees with numpy to f64 precision.
    let oracle = closed_form_reference(&gram_reference(&Sequences::all(&ds)), f.n_items, f.lambda);
    assert_close(&oracle, &f.b, 1e-12, 1e-14, "oracle B");
    // Scores of whole histories (window = longest sequence + 1, left-padded with 0).
    let l = m.max_history();
    let w = f.n_items + 1;
    for (h, want) in f.histories.iter().zip(&f.scores) {
        assert!(h.len() <= l);
        let mut input = vec![0u32; l];
        input[l - h.len()..].copy_from_slice(h);
        let mut scores = vec![f32::NAN; w];
        m.score(&input, 1, &mut scores);
        assert_eq!(scores[0], 0.0, "padding column");
        let got: Vec<f64> = scores[1..].iter().map(|&x| f64::from(x)).collect();
        assert_close(&got, want, 1e-5, 1e-6, "scores");
    }
}

#[test]
fn diagonal_and_padding_are_zero() {
    let f = fixture();
    let ds = dataset(&f.sequences, f.n_items);
    let m = fitted(&ds, f.lambda);
    let w = f.n_items + 1;
    let b = m.weights();
    for i in 0..w {
        assert_eq!(b[i * w + i], 0.0, "B[{i}, {i}]");
        assert_eq!(b[i], 0.0, "padding row, column {i}");
        assert_eq!(b[i * w], 0.0, "padding column, row {i}");
    }
    // Off the diagonal something is non-zero (the fit did run).
    assert!(b.iter().any(|&x| x != 0.0));
}

#[test]
fn batch_scoring_equals_row_by_row_and_ignores_order_and_repeats() {
    let f = fixture();
    let ds = dataset(&f.sequences, f.n_items);
    let mut m = fitted(&ds, f.lambda);
    let (l, w) = (m.max_history(), f.n_items + 1);
    let rows: Vec<Vec<u32>> = vec![vec![3, 1, 4], vec![4, 1, 3, 3, 1], vec![9]];
    let mut input = vec![0u32; rows.len() * l];
    for (r, h) in rows.iter().enumerate() {
        input[r * l + l - h.len()..(r + 1) * l].copy_from_slice(h);
    }
    let mut batch = vec![0f32; rows.len() * w];
    m.score(&input, rows.len(), &mut batch);
    for r in 0..rows.len() {
        let mut one = vec![0f32; w];
        m.score(&input[r * l..(r + 1) * l], 1, &mut one);
        assert_eq!(one, batch[r * w..(r + 1) * w]);
    }
    // Rows 0 and 1 hold the same set of items: identical scores (binary, order-free history).
    assert_eq!(batch[..w], batch[w..2 * w]);
}

#[test]
fn save_load_round_trip_is_exact() {
    let f = fixture();
    let ds = dataset(&f.sequences, f.n_items);
    let seqs = Sequences::all(&ds);
    let m = fitted(&ds, f.lambda);
    let dir = std::env::temp_dir().join(format!("seqrec-ease-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    m.save(&dir).unwrap();
    let mut fresh = Ease::new(EaseConfig::default(), &seqs).unwrap();
    assert!(!fresh.is_fitted());
    fresh.load(&dir).unwrap();
    assert!(fresh.is_fitted());
    assert_eq!(fresh.weights(), m.weights());
    // A loaded model does not refit (its B would be recomputed with the default lambda otherwise).
    fresh.train_epoch(&seqs, 1, &mut |_| {}).unwrap();
    assert_eq!(fresh.weights(), m.weights());

    // Another catalogue size is refused, and the model is left as it was.
    let other = dataset(&[vec![1, 2, 3]], 3);
    let mut small = Ease::new(EaseConfig::default(), &Sequences::all(&other)).unwrap();
    let err = small.load(&dir).unwrap_err();
    assert!(
        matches!(&err, ModelError::Checkpoint { message, .. } if message.contains("9 items")),
        "{err}"
    );
    assert!(!small.is_fitted());
    // A corrupted weights file is an error, not a panic.
    std::fs::write(dir.join("ease.safetensors"), b"not safetensors").unwrap();
    assert!(fresh.load(&dir).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The fit (pure Rust, or LAPACK with `openblas`) equals the Gauss-Jordan oracle on random logs
    /// (repeats, items nobody saw).
    #[test]
    fn fit_matches_the_naive_oracle(
        n_items in 1usize..12,
        seqs in prop::collection::vec(prop::collection::vec(1u32..12, 1..10), 1..15),
        lambda in 0.05f64..50.0,
    ) {
        let seqs: Vec<Vec<u32>> = seqs
            .into_iter()
            .map(|s| s.into_iter().map(|i| (i - 1) % n_items as u32 + 1).collect())
            .collect();
        let ds = dataset(&seqs, n_items);
        let m = fitted(&ds, lambda);
        let oracle = closed_form_reference(&gram_reference(&Sequences::all(&ds)), n_items, lambda);
        let got = unpadded(&m);
        for (i, (x, y)) in got.iter().zip(&oracle).enumerate() {
            prop_assert!((x - y).abs() <= 1e-6 + 1e-5 * y.abs(), "B[{}]: {} vs {}", i, x, y);
        }
        for i in 0..n_items {
            prop_assert_eq!(got[i * n_items + i], 0.0);
        }
    }
}

/// Validation NDCG@10 (all 943 users) and the top-10 of the first users on ML-100k, `lambda = 200`.
fn ml100k_figures(m: &mut Ease, ds: &Dataset, split: &seqrec_data::Split) -> (f64, Vec<Vec<u32>>) {
    let ndcg = common::valid_ndcg10(m, ds, split, usize::MAX);
    let (l, w) = (m.max_history(), m.n_items() + 1);
    let tops = split.valid()[..5]
        .iter()
        .map(|case| {
            let items = case.input_items(ds);
            let h = &items[items.len().saturating_sub(l)..];
            let mut input = vec![0u32; l];
            input[l - h.len()..].copy_from_slice(h);
            let mut scores = vec![0f32; w];
            m.score(&input, 1, &mut scores);
            let mut ids: Vec<u32> = (1..w as u32).collect();
            ids.sort_by(|&a, &b| {
                scores[b as usize]
                    .total_cmp(&scores[a as usize])
                    .then(a.cmp(&b))
            });
            ids.truncate(10);
            ids
        })
        .collect();
    (ndcg, tops)
}

/// Real data: the default (pure-Rust) fit reproduces what the LAPACK fit gave on ML-100k before it became
/// opt-in (printed by this test with `--features openblas`, which runs the LAPACK path).
#[test]
fn ml100k_matches_the_lapack_figures() {
    let (ds, split) = common::ml100k();
    let train = split.train_sequences(&ds).unwrap();
    let mut m = Ease::new(
        EaseConfig {
            lambda: 200.0,
            max_history: 0,
        },
        &train,
    )
    .unwrap();
    m.fit(&train).unwrap();
    let (ndcg, tops) = ml100k_figures(&mut m, &ds, &split);
    eprintln!("ML-100k valid NDCG@10 {ndcg:.10}, top-10 of the first users {tops:?}");
    assert!(
        (ndcg - LAPACK_ML100K_NDCG).abs() < 1e-9,
        "NDCG@10 {ndcg} vs LAPACK {LAPACK_ML100K_NDCG}"
    );
    assert_eq!(tops, LAPACK_ML100K_TOPS.map(|t| t.to_vec()).to_vec());
}

/// The pure-Rust inverse and LAPACK agree on ML-100k's `G + 200 I` per element, and the fitted model
/// (which uses LAPACK with this feature) gives the same weights as a fit through the pure-Rust inverse.
#[cfg(feature = "openblas")]
#[test]
fn pure_rust_and_lapack_inverses_agree_on_ml100k() {
    use seqrec_models::spd::{spd_inverse_in_place, spd_inverse_lapack};
    let (ds, split) = common::ml100k();
    let train = split.train_sequences(&ds).unwrap();
    let n = train.n_items();
    let mut a = gram_reference(&train);
    for i in 0..n {
        a[i * n + i] += 200.0;
    }
    let lapack = spd_inverse_lapack(a.clone(), n).unwrap();
    let mut rust = a;
    spd_inverse_in_place(&mut rust, n).unwrap();
    let scale = lapack.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert_close(&rust, &lapack, 1e-9, 1e-12 * scale, "P");
    // B from the pure-Rust P equals the model's B (LAPACK) within f32 rounding.
    let mut m = Ease::new(
        EaseConfig {
            lambda: 200.0,
            max_history: 0,
        },
        &train,
    )
    .unwrap();
    m.fit(&train).unwrap();
    let b: Vec<f64> = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            if i == j {
                0.0
            } else {
                -rust[k] / rust[j * n + j]
            }
        })
        .collect();
    assert_close(&unpadded(&m), &b, 2e-6, 1e-9, "B");
}

/// Test figures of the LAPACK fit (`--features openblas`, before the pure-Rust inverse existed).
const LAPACK_ML100K_NDCG: f64 = 0.08307982861459991;
const LAPACK_ML100K_TOPS: [[u32; 10]; 5] = [
    [3, 29, 30, 2, 18, 15, 13, 19, 21, 22],
    [44, 47, 41, 52, 71, 118, 46, 42, 40, 74],
    [137, 198, 88, 199, 92, 201, 192, 209, 132, 204],
    [296, 17, 154, 146, 19, 89, 48, 307, 47, 312],
    [96, 105, 392, 41, 399, 397, 2, 40, 398, 42],
];
