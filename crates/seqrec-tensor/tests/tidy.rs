//! Tidy invariants of the source tree: every `unsafe` block carries a `// SAFETY:` comment, every
//! `*_forward` op has a `*_backward` next to it, and every public op has a reference version.

use std::fs;
use std::path::Path;

fn sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "found only {} source files", out.len());
    out
}

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let mut missing = Vec::new();
    let mut blocks = 0;
    for (name, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap();
            if !code.contains("unsafe {") {
                continue;
            }
            blocks += 1;
            // The comment sits on one of the few lines above (or on the same line).
            let window = &lines[i.saturating_sub(4)..=i];
            if !window.iter().any(|l| l.contains("SAFETY:")) {
                missing.push(format!("{name}:{}", i + 1));
            }
        }
    }
    assert!(
        blocks > 5,
        "expected unsafe blocks in the GEMM code, found {blocks}"
    );
    assert!(
        missing.is_empty(),
        "unsafe blocks without a // SAFETY: comment: {missing:?}"
    );
}

#[test]
fn every_forward_has_a_backward_and_every_op_a_reference() {
    let srcs = sources();
    let all: String = srcs
        .iter()
        .filter(|(n, _)| n != "reference.rs")
        .map(|(_, t)| t.as_str())
        .collect();
    let reference = &srcs.iter().find(|(n, _)| n == "reference.rs").unwrap().1;
    let pub_fns: Vec<String> = all
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("pub fn "))
        .map(|rest| rest.split(['<', '(']).next().unwrap().to_string())
        .collect();
    let forwards: Vec<&String> = pub_fns.iter().filter(|f| f.ends_with("_forward")).collect();
    assert!(
        forwards.len() >= 8,
        "expected the forward ops, found {forwards:?}"
    );
    for f in forwards {
        let b = f.replace("_forward", "_backward");
        assert!(pub_fns.contains(&b), "{f} has no {b}");
    }
    // Ops that write tensors (outputs first) must have an oracle with the same name.
    for op in [
        "gemm",
        "gemm_batched",
        "add",
        "sub",
        "mul",
        "scale",
        "axpy",
        "axpby",
        "mul_acc",
        "add_bias",
        "add_bias_backward",
        "sigmoid_forward",
        "tanh_forward",
        "relu_forward",
        "gelu_forward",
        "softmax_forward",
        "softmax_backward",
        "log_softmax_forward",
        "log_softmax_backward",
        "layernorm_forward",
        "layernorm_backward",
        "embedding_forward",
        "embedding_backward",
        "dropout_forward",
        "dropout_backward",
        "sum",
        "sq_norm",
        "sum_last",
        "max_last",
        "topk",
        "slice",
        "concat",
        "transpose",
    ] {
        assert!(
            pub_fns.iter().any(|f| f == op),
            "{op} is not a public op any more"
        );
        assert!(
            reference.contains(&format!("pub fn {op}<")),
            "reference::{op} is missing"
        );
    }
}
