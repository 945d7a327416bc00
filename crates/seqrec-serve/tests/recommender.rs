//! The library without HTTP: top-k, truncation, explanations (a hand-set model where one item alone
//! determines the recommendation; occlusion on a trained SASRec), attention weights, the GRU4Rec
//! step API against a full re-run, and loading a run directory with titles.

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use proptest::prelude::*;
use seqrec_data::Sequences;
use seqrec_models::{EpochReport, Model, ModelError, StepReport};
use seqrec_serve::{LoadOptions, RecOptions, Recommender, ServeError, top_k};

/// `score[r] = sum over the window of W[h][r]`: each history item adds its own row. `W` holds small
/// pseudo-random values except `W[trigger][target] = 5`. Counts its `score` calls and rows.
struct BagModel {
    n: usize,
    l: usize,
    w: Vec<f32>,
    calls: Rc<Cell<(usize, usize)>>,
}

impl BagModel {
    fn new(n: usize, l: usize, trigger: u32, target: u32, calls: Rc<Cell<(usize, usize)>>) -> Self {
        let cols = n + 1;
        let mut w = vec![0.0f32; cols * cols];
        let mut x = 12345u64;
        for v in w.iter_mut() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2; // in [-0.1, 0.1)
        }
        w[trigger as usize * cols + target as usize] = 5.0;
        Self { n, l, w, calls }
    }
}

impl Model for BagModel {
    fn name(&self) -> &'static str {
        "bag"
    }
    fn n_items(&self) -> usize {
        self.n
    }
    fn max_history(&self) -> usize {
        self.l
    }
    fn train_epoch(
        &mut self,
        _: &Sequences<'_>,
        _: usize,
        _: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        unreachable!("never trained")
    }
    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        let (c, r) = self.calls.get();
        self.calls.set((c + 1, r + batch));
        let cols = self.n + 1;
        for b in 0..batch {
            let row = &mut scores[b * cols..(b + 1) * cols];
            row.fill(0.0);
            for &h in &histories[b * self.l..(b + 1) * self.l] {
                if h != 0 {
                    for (o, &x) in row.iter_mut().zip(&self.w[h as usize * cols..]) {
                        *o += x;
                    }
                }
            }
        }
    }
    fn save(&self, _: &std::path::Path) -> Result<(), ModelError> {
        Ok(())
    }
    fn load(&mut self, _: &std::path::Path) -> Result<(), ModelError> {
        Ok(())
    }
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("m{i}")).collect()
}

#[test]
fn occlusion_ranks_the_item_that_alone_determines_the_recommendation_first() {
    let calls = Rc::new(Cell::new((0, 0)));
    let (trigger, target) = (7u32, 19u32);
    let model = BagModel::new(20, 6, trigger, target, calls.clone());
    let w = model.w.clone();
    let mut rec = Recommender::from_model(Box::new(model), names(20), "bag".into()).unwrap();
    // 8 items, the window keeps the last 6; the trigger sits in the middle of the window.
    let history = [1, 2, 3, 4, trigger, 5, 6, 8];
    let top = rec
        .recommend(
            &history,
            RecOptions {
                k: 3,
                exclude_seen: true,
            },
        )
        .unwrap();
    assert_eq!(top[0].item, target);
    calls.set((0, 0));
    let ex = rec.explain(&history, &[target, top[1].item]).unwrap();
    // ONE score call with the window and one occluded window per position: 1 + 6 rows.
    assert_eq!(calls.get(), (1, 7));
    let first = &ex[0].occlusion;
    assert_eq!(first.len(), 6);
    assert_eq!((first[0].item, first[0].position), (trigger, 4));
    // Reference values: in a bag model removing position j drops the score by exactly W[h_j][r].
    let cols = 21;
    for c in first {
        let expected = w[c.item as usize * cols + target as usize];
        assert!((c.value - expected).abs() < 1e-5, "{c:?} vs {expected}");
    }
    assert!(first[0].value > 4.8 && first[1].value < 0.2);
    // Positions 0 and 1 fell out of the window: they explain nothing.
    assert!(first.iter().all(|c| c.position >= 2));
    // No attention for a model without it.
    assert!(ex[0].attention.is_none());
}

#[test]
fn unknown_items_empty_histories_and_bad_k_are_typed_errors() {
    let calls = Rc::new(Cell::new((0, 0)));
    let mut rec = Recommender::from_model(
        Box::new(BagModel::new(5, 3, 1, 2, calls)),
        names(5),
        "bag".into(),
    )
    .unwrap();
    let cat = rec.catalog().clone();
    match cat.resolve(&["m1", "nope", "m2"]) {
        Err(ServeError::UnknownItem {
            id,
            position,
            n_items,
        }) => {
            assert_eq!((id.as_str(), position, n_items), ("nope", 1, 5))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rec.recommend(
            &[],
            RecOptions {
                k: 1,
                exclude_seen: true
            }
        ),
        Err(ServeError::EmptyHistory)
    ));
    assert!(matches!(
        rec.recommend(
            &[1],
            RecOptions {
                k: 0,
                exclude_seen: true
            }
        ),
        Err(ServeError::BadK { k: 0, max: 5 })
    ));
    assert!(matches!(
        rec.recommend(
            &[9],
            RecOptions {
                k: 1,
                exclude_seen: true
            }
        ),
        Err(ServeError::UnknownItem { .. })
    ));
    // Truncation keeps the most recent items, right-aligned.
    assert_eq!(cat.window(&[1, 2, 3, 4, 5]), vec![3, 4, 5]);
    assert_eq!(cat.window(&[4]), vec![0, 0, 4]);
    // Exclusion uses the whole history, not just the window: with all 5 items seen nothing is left,
    // and without exclusion all 5 come back.
    let h = [1, 2, 3, 4, 5];
    assert!(
        rec.recommend(
            &h,
            RecOptions {
                k: 5,
                exclude_seen: true
            }
        )
        .unwrap()
        .is_empty()
    );
    let only_two = rec
        .recommend(
            &[1, 2, 3],
            RecOptions {
                k: 5,
                exclude_seen: true,
            },
        )
        .unwrap();
    let mut left: Vec<u32> = only_two.iter().map(|r| r.item).collect();
    left.sort();
    assert_eq!(left, [4, 5]);
    assert_eq!(
        rec.recommend(
            &h,
            RecOptions {
                k: 5,
                exclude_seen: false
            }
        )
        .unwrap()
        .len(),
        5
    );
}

fn reference_top_k(row: &[f32], k: usize, skip: &[u32]) -> Vec<u32> {
    let mut c: Vec<u32> = (1..row.len() as u32)
        .filter(|i| !skip.contains(i))
        .collect();
    let key = |i: u32| {
        let s = row[i as usize];
        if s.is_nan() { f32::NEG_INFINITY } else { s }
    };
    c.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    c.truncate(k);
    c
}

/// The scanning path skips blocks of 16 scores below the k-th best; +0.0 ranks above -0.0 (the total
/// order), so a block whose only candidate is a +0.0 against a k-th best of -0.0 must not be
/// skipped.
#[test]
fn top_k_block_skip_keeps_positive_zero_above_negative_zero() {
    let mut row = vec![-1.0f32; 48];
    row[1] = 5.0;
    row[2] = -0.0;
    row[40] = 0.0;
    let got: Vec<u32> = top_k(&row, 2, &[]).iter().map(|r| r.item).collect();
    assert_eq!(got, vec![1, 40]);
    assert_eq!(got, reference_top_k(&row, 2, &[]));
}

proptest! {
    #[test]
    fn top_k_matches_a_full_sort(
        row in prop::collection::vec(prop_oneof![(-3i32..3).prop_map(|x| x as f32), Just(f32::NAN)], 1..40),
        k in 0usize..45,
        skip in prop::collection::vec(0u32..50, 0..10),
    ) {
        let got: Vec<u32> = top_k(&row, k, &skip).iter().map(|r| r.item).collect();
        prop_assert_eq!(got, reference_top_k(&row, k, &skip));
    }

    /// Rows and `k` on both sides of the scanning path's limit (`k <= 64`), with many ties.
    #[test]
    fn top_k_matches_a_full_sort_for_long_rows(
        row in prop::collection::vec(prop_oneof![8 => (-20i32..20).prop_map(|x| x as f32 / 4.0), 1 => Just(f32::NAN), 1 => Just(-0.0f32)], 1..400),
        k in 1usize..130,
        skip in prop::collection::vec(0u32..400, 0..60),
    ) {
        let got: Vec<u32> = top_k(&row, k, &skip).iter().map(|r| r.item).collect();
        prop_assert_eq!(got, reference_top_k(&row, k, &skip));
    }
}

#[test]
fn trained_sasrec_explanations_and_attention() {
    let dir = scratch("rec-sasrec");
    let run = train_run(&dir, "sasrec", "sasrec", 1, 8);
    let mut rec = Recommender::load(&run, &LoadOptions::default()).unwrap();
    let cat = rec.catalog().clone();
    assert_eq!(
        (cat.model_name(), cat.n_items(), cat.max_history()),
        ("sasrec", 30, 12)
    );
    // The synthetic walk: the successor of the last item is the answer, whatever came before.
    let last = 105u64;
    let ids: Vec<String> = [120u64, 111, 127, last]
        .iter()
        .map(|i| i.to_string())
        .collect();
    let history = cat.resolve(&ids).unwrap();
    let top = rec
        .recommend(
            &history,
            RecOptions {
                k: 3,
                exclude_seen: false,
            },
        )
        .unwrap();
    assert_eq!(
        cat.original(top[0].item).unwrap(),
        successor(last).to_string()
    );
    let ex = rec.explain(&history, &[top[0].item]).unwrap();
    // Occlusion: the last item alone determines the recommendation, it ranks first.
    assert_eq!(ex[0].occlusion[0].position, 3);
    assert_eq!(
        cat.original(ex[0].occlusion[0].item).unwrap(),
        last.to_string()
    );
    // Attention: one weight per history position, a distribution over them.
    let att = ex[0].attention.as_ref().unwrap();
    assert_eq!(att.len(), 4);
    let sum: f32 = att.iter().map(|c| c.value).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    assert!(att.iter().all(|c| c.value >= 0.0));
    // Raw weights are zero on padding.
    let w = rec
        .model_mut()
        .last_attention(&cat.window(&history))
        .unwrap();
    assert!(w[..8].iter().all(|&x| x == 0.0), "{w:?}");
    // The run's users: the dataset's full history.
    assert!(rec.user_history("u1").unwrap().len() >= 8);
    assert!(matches!(
        rec.user_history("nobody"),
        Err(ServeError::UnknownUser(_))
    ));
}

#[test]
fn gru4rec_steps_match_a_full_rerun() {
    let dir = scratch("rec-gru");
    let run = train_run(&dir, "gru", "gru4rec", 3, 2);
    let mut rec = Recommender::load(&run, &LoadOptions::default()).unwrap();
    let cat = rec.catalog().clone();
    assert!(cat.recurrent());
    let n = cat.n_items();
    let history: Vec<u32> = vec![3, 17, 17, 9, 30, 1, 22];
    let mut full = vec![0.0f32; n + 1];
    let mut stepped = vec![0.0f32; n + 1];
    for t in 1..=history.len() {
        let w = cat.window(&history[..t]);
        rec.model_mut().score(&w, 1, &mut full);
        let r = rec.model_mut().recurrent().unwrap();
        let mut st = vec![1.0; r.state_len()];
        r.init_state(&mut st);
        for &i in &history[..t] {
            r.step(&mut st, i);
        }
        r.score_states(&st, 1, &mut stepped);
        for i in 1..=n {
            assert!(
                (full[i] - stepped[i]).abs() <= 1e-4 * (1.0 + full[i].abs()),
                "t {t} item {i}: {} vs {}",
                full[i],
                stepped[i]
            );
        }
    }
}

#[test]
fn titles_from_a_latin1_movies_file() {
    let dir = scratch("rec-titles");
    let run = train_run(&dir, "sasrec", "sasrec", 1, 1);
    // "Caf\xe9" is Latin-1 for Café.
    let movies = b"101::Caf\xe9 (1999)::Drama\n102::Plain (2000)::Comedy|Drama\n999::Elsewhere (1990)::Drama\n".to_vec();
    let path = dir.join("movies.dat");
    std::fs::write(&path, movies).unwrap();
    let rec = Recommender::load(
        &run,
        &LoadOptions {
            items: Some(path),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let cat = rec.catalog();
    assert_eq!(cat.title(cat.dense("101").unwrap()), Some("Café (1999)"));
    assert_eq!(cat.title(cat.dense("102").unwrap()), Some("Plain (2000)"));
    assert_eq!(cat.title(cat.dense("103").unwrap()), None);
    assert_eq!(
        cat.item_json(cat.dense("101").unwrap()),
        serde_json::json!(101)
    );
}

/// SASRec's serving paths (padding-trimmed; trimmed with the last block on the last position only)
/// equal the full-window scores for batches that mix short and full histories (2 blocks, 2 heads,
/// random init), with the input table tied to the output (SASRec) or not (gSASRec's default).
#[test]
fn sasrec_trimmed_scoring_equals_the_full_window() {
    for tied_output in [true, false] {
        trimmed_scoring_equals_the_full_window(tied_output);
    }
}

fn trimmed_scoring_equals_the_full_window(tied_output: bool) {
    use seqrec_data::{Dataset, Vocab};
    use seqrec_models::{Sasrec, SasrecConfig};
    let users = Vocab::from_originals(vec!["u".into()]).unwrap();
    let items = Vocab::from_originals((1..=30).map(|i| i.to_string()).collect()).unwrap();
    let ds = Dataset::from_sequences(users, items, vec![((1..=30).collect(), (0..30).collect())])
        .unwrap();
    let cfg = SasrecConfig {
        hidden: 16,
        blocks: 2,
        heads: 2,
        maxlen: 12,
        batch_size: 4,
        tied_output,
        ..SasrecConfig::default()
    };
    let mut m = Sasrec::new(cfg, &Sequences::all(&ds), 9).unwrap();
    let l = 12;
    let cases: Vec<Vec<u32>> = vec![
        vec![5],
        vec![3, 9, 27],
        (1..=12).collect(),
        vec![30, 1],
        vec![7; 6],
        vec![2, 4],
    ];
    for group in [&cases[..1], &cases[1..2], &cases[..], &cases[3..]] {
        let b = group.len();
        let mut w = vec![0u32; b * l];
        for (r, h) in group.iter().enumerate() {
            w[r * l + l - h.len()..(r + 1) * l].copy_from_slice(h);
        }
        let (mut full, mut trim, mut last) = (
            vec![0.0f32; b * 31],
            vec![0.0f32; b * 31],
            vec![0.0f32; b * 31],
        );
        m.score(&w, b, &mut full);
        m.net_mut().score_trimmed(&w, b, &mut trim);
        m.score_serving(&w, b, &mut last);
        for (i, ((a, t), z)) in full.iter().zip(&trim).zip(&last).enumerate() {
            assert!(
                (a - t).abs() <= 1e-5 * (1.0 + a.abs()),
                "trimmed, batch {b} index {i}: {a} vs {t}"
            );
            assert!(
                (a - z).abs() <= 1e-5 * (1.0 + a.abs()),
                "last position, batch {b} index {i}: {a} vs {z}"
            );
        }
    }
}

/// `LoadOptions::precision`: a SASRec run loads in bf16 where the CPU has AMX tiles (its model id
/// says so, and its scores stay within 3% of each row's range of the f32 scores); a GRU4Rec run, which
/// has no bf16 path, is refused with an error that names the fix.
#[test]
fn bf16_precision_loads_sasrec_and_refuses_others() {
    use seqrec_models::Precision;
    let dir = scratch("rec-bf16");
    let bf16 = LoadOptions {
        precision: Precision::Bf16,
        ..LoadOptions::default()
    };
    let gru = train_run(&dir, "gru", "gru4rec", 3, 1);
    let err = Recommender::load(&gru, &bf16).unwrap_err().to_string();
    assert!(err.contains("--precision f32"), "{err}");
    let run = train_run(&dir, "sasrec", "sasrec", 1, 1);
    let mut f32_rec = Recommender::load(&run, &LoadOptions::default()).unwrap();
    let mut rec = match Recommender::load(&run, &bf16) {
        Ok(rec) => rec,
        Err(e) => {
            assert!(e.to_string().contains("AMX"), "{e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    assert!(
        rec.catalog().model_id().ends_with("@bf16"),
        "{}",
        rec.catalog().model_id()
    );
    let cat = rec.catalog().clone();
    let n = cat.n_items();
    let w = cat.window(&[3, 17, 9, 30, 1, 22]);
    let (mut a, mut b) = (vec![0.0f32; n + 1], vec![0.0f32; n + 1]);
    f32_rec.model_mut().score_serving(&w, 1, &mut a);
    rec.model_mut().score_serving(&w, 1, &mut b);
    let range = a[1..].iter().fold(f32::MIN, |m, &x| m.max(x))
        - a[1..].iter().fold(f32::MAX, |m, &x| m.min(x));
    let diff = a[1..]
        .iter()
        .zip(&b[1..])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(
        diff > 0.0 && diff <= 0.03 * range,
        "bf16 moved a score by {diff}, range {range}"
    );
}
