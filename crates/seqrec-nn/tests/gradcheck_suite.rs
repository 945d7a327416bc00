//! The gradient-check suite (`seqrec_nn::gradcheck::suite`, printed by `cargo xtask gradcheck`) at tiny
//! and random small shapes: every row passes `GradTolerance::STRICT`, every case checks exactly the
//! tensors it should, and the suite covers every public layer type and loss function (a tidy check
//! against a literal list and against the crate's source).

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;
use seqrec_nn::NnError;
use seqrec_nn::gradcheck::GradTolerance;
use seqrec_nn::gradcheck::suite::{CASES, SuiteRow, SuiteShape, find_cases, run_cases, run_suite};

fn assert_all_pass(rows: &[SuiteRow], what: &str) {
    assert!(!rows.is_empty(), "{what}: nothing was checked");
    for r in rows {
        assert!(r.pass, "{what}: {r:?}");
        assert!(r.elements > 0, "{what}: {r:?}");
    }
}

/// The tensors each case must check, in order, for `layers` layers.
fn expected_tensors(case: &str, layers: usize) -> Vec<String> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let block = |p: &str| {
        [
            "self_attn.in_proj_weight",
            "self_attn.in_proj_bias",
            "self_attn.out_proj.weight",
            "self_attn.out_proj.bias",
            "linear1.weight",
            "linear1.bias",
            "linear2.weight",
            "linear2.bias",
            "norm1.weight",
            "norm1.bias",
            "norm2.weight",
            "norm2.bias",
        ]
        .map(|n| format!("{p}.{n}"))
        .to_vec()
    };
    let rnn = |p: &str, inputs: &[&str]| {
        let mut v = Vec::new();
        for k in 0..layers {
            for n in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
                v.push(format!("{p}.{n}_l{k}"));
            }
        }
        v.extend(s(inputs));
        v
    };
    match case {
        "linear" => s(&["fc.weight", "fc.bias", "x"]),
        "layer_norm" => s(&["ln.weight", "ln.bias", "x"]),
        "embedding" => s(&["emb.weight"]),
        "positional_embedding" => s(&["pos.weight", "x"]),
        "dropout" => s(&["x"]),
        "feed_forward" => s(&[
            "ff.linear1.weight",
            "ff.linear1.bias",
            "ff.linear2.weight",
            "ff.linear2.bias",
            "x",
        ]),
        "mha_causal" | "mha_bidirectional" => s(&[
            "attn.in_proj_weight",
            "attn.in_proj_bias",
            "attn.out_proj.weight",
            "attn.out_proj.bias",
            "x_q",
            "x_kv",
        ]),
        "mha_causal_no_out_proj" => s(&["attn.in_proj_weight", "attn.in_proj_bias", "x_q", "x_kv"]),
        "block_post" | "block_pre" | "block_sasrec" => {
            let mut v = block("block");
            v.push("x".into());
            v
        }
        "block_sasrec_paper" => {
            let mut v = block("block");
            v.retain(|n| !n.contains("out_proj"));
            v.push("x".into());
            v
        }
        "sasrec_encoder" => {
            let mut v: Vec<String> = (0..layers)
                .flat_map(|i| block(&format!("enc.layers.{i}")))
                .collect();
            v.extend(s(&["enc.norm.weight", "enc.norm.bias", "x"]));
            v
        }
        "gru" => rnn("gru", &["x", "h0"]),
        "lstm" => rnn("lstm", &["x", "h0", "c0"]),
        "attention_pooling" => s(&[
            "pool.proj.weight",
            "pool.proj.bias",
            "pool.score.weight",
            "h",
        ]),
        "softmax_cross_entropy"
        | "bce_with_logits"
        | "sampled_softmax"
        | "bpr"
        | "bpr_max"
        | "gbce" => s(&["logits"]),
        other => panic!("no expectation for case {other}: add it here"),
    }
}

fn assert_structure(rows: &[SuiteRow], shape: &SuiteShape) {
    let mut i = 0;
    for case in CASES {
        let want = expected_tensors(case.name, shape.layers);
        let got: Vec<String> = rows[i..]
            .iter()
            .take_while(|r| r.layer == case.name)
            .map(|r| r.tensor.clone())
            .collect();
        assert_eq!(got, want, "tensors checked by {}", case.name);
        i += got.len();
    }
    assert_eq!(i, rows.len(), "rows of no case");
}

#[test]
fn every_case_passes_at_tiny_shapes() {
    let shape = SuiteShape::TINY;
    let rows = run_suite(&shape, 1).unwrap();
    assert_all_pass(&rows, "tiny");
    assert_structure(&rows, &shape);
    // Element counts follow the shape: e.g. the embedding table is (items + 1) x width, the full
    // cross-entropy sees (batch * seq) x (items + 1) logits, the GRU's first weight is 3h x d.
    let count = |layer: &str, tensor: &str| {
        rows.iter()
            .find(|r| r.layer == layer && r.tensor == tensor)
            .unwrap()
            .elements
    };
    let (b, t, d) = (shape.batch, shape.seq, shape.width);
    assert_eq!(count("embedding", "emb.weight"), (shape.items + 1) * d);
    assert_eq!(
        count("softmax_cross_entropy", "logits"),
        b * t * (shape.items + 1)
    );
    assert_eq!(count("bpr", "logits"), b * t * (1 + shape.negatives));
    assert_eq!(count("gru", "gru.weight_ih_l0"), 3 * d * d);
    assert_eq!(count("lstm", "c0"), shape.layers * b * d);
    assert_eq!(count("mha_causal", "attn.in_proj_weight"), 3 * d * d);
    // Same seed, same rows, bit for bit.
    assert_eq!(rows, run_suite(&shape, 1).unwrap());
}

/// The tidy check. `COVERED` is the literal list of every public layer type and loss function of
/// seqrec-nn: a new layer or loss must be added here *and* get a suite case, or this test fails. The
/// list is also compared with the source (every type with a `pub fn backward`, every generic
/// `pub fn` in `loss.rs`), so forgetting to extend the list fails too.
#[test]
fn suite_covers_every_layer_and_loss() {
    const COVERED: [&str; 18] = [
        "Linear",
        "LayerNorm",
        "Embedding",
        "PositionalEmbedding",
        "Dropout",
        "FeedForward",
        "MultiheadAttention",
        "TransformerBlock",
        "TransformerEncoder",
        "Gru",
        "Lstm",
        "AttentionPooling",
        "softmax_cross_entropy",
        "bce_with_logits",
        "sampled_softmax",
        "bpr",
        "bpr_max",
        "gbce",
    ];
    let literal: BTreeSet<&str> = COVERED.into_iter().collect();
    let covered: BTreeSet<&str> = CASES.iter().map(|c| c.covers).collect();
    assert_eq!(covered, literal, "suite cases vs the literal list");

    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = public_layers_and_losses(&src);
    let literal: BTreeSet<String> = COVERED.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, literal, "the crate's source vs the literal list");

    // Case names are unique (they are what `--only` selects).
    let names: BTreeSet<&str> = CASES.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), CASES.len());
}

/// Types with a `pub fn backward` in their inherent impl, and `pub fn name<T: Float>(` in `loss.rs`.
fn public_layers_and_losses(src: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    assert!(files.len() > 10, "source not found under {}", src.display());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut current: Option<String> = None;
        for line in text.lines() {
            // `impl<T: Float> Name<T> {` or `impl Name {` (not trait impls, which contain " for ").
            if let Some(rest) = line.strip_prefix("impl")
                && line.ends_with('{')
                && !line.contains(" for ")
            {
                current = Some(impl_type_name(rest));
            }
            if line.starts_with("    pub fn backward")
                && let Some(name) = &current
            {
                out.insert(name.clone());
            }
        }
        if path.file_name().unwrap() == "loss.rs" {
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("pub fn ")
                    && let Some((name, _)) = rest.split_once("<T: Float>(")
                {
                    out.insert(name.to_owned());
                }
            }
        }
    }
    out
}

/// `Name` from the text after `impl` in `impl<T: Float> Name<T> {` or `impl Name {`.
fn impl_type_name(rest: &str) -> String {
    let mut rest = rest.trim_start();
    if rest.starts_with('<') {
        // Skip the generic parameter list, which may itself contain `<..>`.
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '<' => 1,
                    '>' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(rest.len(), |(i, _)| i + 1);
        rest = rest[end..].trim_start();
    }
    rest.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn impl_names_are_parsed() {
    assert_eq!(impl_type_name("<T: Float> Linear<T> {"), "Linear");
    assert_eq!(impl_type_name(" Dropout {"), "Dropout");
    assert_eq!(impl_type_name("<T: Into<f64>> Foo<T> {"), "Foo");
}

#[test]
fn bad_shapes_and_names_are_errors_naming_the_field() {
    let field = |e: NnError| match e {
        NnError::InvalidConfig { field, .. } => field,
        other => panic!("unexpected error {other}"),
    };
    let bad = SuiteShape {
        heads: 3,
        ..SuiteShape::DEFAULT
    };
    assert_eq!(field(run_suite(&bad, 0).unwrap_err()), "SuiteShape.heads");
    let bad = SuiteShape {
        seq: 0,
        ..SuiteShape::DEFAULT
    };
    assert_eq!(field(bad.validate().unwrap_err()), "SuiteShape.seq");
    let bad = SuiteShape {
        items: 4,
        negatives: 4,
        ..SuiteShape::DEFAULT
    };
    let e = bad.validate().unwrap_err();
    assert!(e.to_string().contains("negatives + 1 = 5"), "{e}");
    assert!(SuiteShape::DEFAULT.validate().is_ok() && SuiteShape::TINY.validate().is_ok());

    let e = find_cases(&["gru", "grux"]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("grux") && msg.contains("sasrec_encoder"),
        "{msg}"
    );
    // A filter that leaves nothing to run is an error, not an empty success.
    assert!(run_cases(&SuiteShape::TINY, 0, GradTolerance::STRICT, &[]).is_err());
    let nan = GradTolerance {
        relative: f64::NAN,
        absolute: 0.0,
    };
    assert_eq!(
        field(run_cases(&SuiteShape::TINY, 0, nan, CASES).unwrap_err()),
        "GradTolerance.relative"
    );
    // The tolerance decides pass/fail: with a zero tolerance the same checks fail (round-off is never
    // exactly zero everywhere), so rows are not passing by construction.
    let zero = GradTolerance {
        relative: 0.0,
        absolute: 0.0,
    };
    let strictest = run_cases(
        &SuiteShape::TINY,
        0,
        zero,
        &find_cases(&["linear"]).unwrap(),
    )
    .unwrap();
    assert!(strictest.iter().any(|r| !r.pass), "{strictest:?}");
    // --only runs exactly the named cases, in the order given.
    let cases = find_cases(&["lstm", "bpr"]).unwrap();
    let rows = run_cases(&SuiteShape::TINY, 0, GradTolerance::STRICT, &cases).unwrap();
    assert_all_pass(&rows, "only");
    let layers: Vec<&str> = rows.iter().map(|r| r.layer).collect();
    assert_eq!(layers, [vec!["lstm"; 4 * 2 + 3], vec!["bpr"]].concat());
}

proptest! {
    // A fixed proptest seed: SASRec's ReLU has a kink, and when a pre-activation lies within the
    // finite-difference step of 0 the central difference itself is wrong (seen once, ratio 1.25, with a
    // ReLU Pre block, which is why that case now uses GELU). 300 random shapes and seeds then gave no
    // failure, but the chance is not zero, so CI runs the same 12 cases every time.
    #![proptest_config(ProptestConfig {
        cases: 12,
        rng_seed: proptest::test_runner::RngSeed::Fixed(2026),
        ..ProptestConfig::default()
    })]

    /// Random small shapes: batch 1 (no padding at all), seq 1, one or two heads and layers.
    #[test]
    fn every_case_passes_at_random_small_shapes(
        batch in 1usize..=3, seq in 1usize..=3, heads in 1usize..=2, layers in 1usize..=2,
        negatives in 1usize..=3, extra_items in 0usize..3, seed: u64,
    ) {
        // Width 3 (one head) or 4 (two heads of 2): see `SuiteShape` on layer norms over 2 elements.
        let width = if heads == 1 { 3 } else { 4 };
        let shape = SuiteShape {
            batch, seq, width, heads, layers, items: negatives + 1 + extra_items, negatives,
        };
        let rows = run_suite(&shape, seed).unwrap();
        assert_all_pass(&rows, &format!("{shape:?} seed {seed}"));
        assert_structure(&rows, &shape);
    }
}
