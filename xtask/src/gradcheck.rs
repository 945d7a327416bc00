//! `cargo xtask gradcheck`: the finite-difference gradient check of every layer and loss at larger
//! shapes than the unit tests, printed as a table of worst errors per tensor.

use std::fmt::Write as _;
use std::time::Instant;

use clap::Args;
use seqrec_nn::gradcheck::GradTolerance;
use seqrec_nn::gradcheck::suite::{self, SuiteCase, SuiteRow, SuiteShape};

/// Options of `cargo xtask gradcheck` (defaults: [`SuiteShape::DEFAULT`]).
#[derive(Args)]
pub struct GradcheckArgs {
    /// Seed of every layer's parameters, inputs and loss weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = SuiteShape::DEFAULT.batch)]
    batch: usize,
    /// Positions per sequence.
    #[arg(long, default_value_t = SuiteShape::DEFAULT.seq)]
    seq: usize,
    /// Model width (use 3 or more: a layer norm over 2 elements defeats central differences).
    #[arg(long, default_value_t = SuiteShape::DEFAULT.width)]
    width: usize,
    /// Attention heads (must divide --width).
    #[arg(long, default_value_t = SuiteShape::DEFAULT.heads)]
    heads: usize,
    /// Transformer blocks and GRU / LSTM layers.
    #[arg(long, default_value_t = SuiteShape::DEFAULT.layers)]
    layers: usize,
    /// Real items (embedding rows and cross-entropy classes are items + 1).
    #[arg(long, default_value_t = SuiteShape::DEFAULT.items)]
    items: usize,
    /// Sampled negatives per position for the sampled losses.
    #[arg(long, default_value_t = SuiteShape::DEFAULT.negatives)]
    negatives: usize,
    /// Relative part of the pass criterion |a - n| <= abs + rel * max(|a|, |n|).
    #[arg(long, default_value_t = GradTolerance::STRICT.relative)]
    rel_tol: f64,
    /// Absolute part of the pass criterion. The default 1e-9 is near the central difference's
    /// round-off floor: shapes much larger than the default need more (e.g. 1e-8).
    #[arg(long, default_value_t = GradTolerance::STRICT.absolute)]
    abs_tol: f64,
    /// Run only these cases (comma-separated or repeated; see --list).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    only: Vec<String>,
    /// List the case names and the type or loss each covers, then exit.
    #[arg(long)]
    list: bool,
}

/// Runs the suite, prints the table, and fails when any row fails.
pub fn run(args: GradcheckArgs) -> anyhow::Result<()> {
    if args.list {
        for c in suite::CASES {
            println!("{:<24} {}", c.name, c.covers);
        }
        return Ok(());
    }
    let shape = SuiteShape {
        batch: args.batch,
        seq: args.seq,
        width: args.width,
        heads: args.heads,
        layers: args.layers,
        items: args.items,
        negatives: args.negatives,
    };
    shape.validate()?;
    let tol = GradTolerance {
        relative: args.rel_tol,
        absolute: args.abs_tol,
    };
    let cases: Vec<SuiteCase> = if args.only.is_empty() {
        suite::CASES.to_vec()
    } else {
        suite::find_cases(&args.only)?
    };
    println!(
        "gradcheck: f64 central differences (step {:e}), tolerance |a - n| <= {:e} + {:e} max(|a|, |n|)",
        seqrec_nn::gradcheck::EPS,
        tol.absolute,
        tol.relative,
    );
    println!(
        "shape: batch {} seq {} width {} heads {} layers {} items {} negatives {}; seed {}\n",
        shape.batch,
        shape.seq,
        shape.width,
        shape.heads,
        shape.layers,
        shape.items,
        shape.negatives,
        args.seed
    );
    let start = Instant::now();
    let rows = suite::run_cases(&shape, args.seed, tol, &cases)?;
    let secs = start.elapsed().as_secs_f64();
    print!("{}", table(&rows));
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!(
        "\n{} cases, {} tensors, {} elements checked in {secs:.2} s; {failed} failed",
        cases.len(),
        rows.len(),
        rows.iter().map(|r| r.elements).sum::<usize>()
    );
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} tensors failed the gradient check",
        rows.len()
    );
    Ok(())
}

/// The aligned table: layer, tensor, elements, max abs err, max rel err, err / tolerance, pass.
fn table(rows: &[SuiteRow]) -> String {
    let header = [
        "layer",
        "tensor",
        "elements",
        "max abs err",
        "max rel err",
        "err/tol",
        "pass",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.layer.to_owned(),
                r.tensor.clone(),
                r.elements.to_string(),
                format!("{:.2e}", r.max_abs),
                format!("{:.2e}", r.max_rel),
                format!("{:.3}", r.worst_ratio),
                if r.pass { "ok" } else { "FAIL" }.to_owned(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        for (i, (c, w)) in cols.iter().zip(width).enumerate() {
            // Text columns left-aligned, numbers right-aligned.
            let sep = if i + 1 < cols.len() { "  " } else { "\n" };
            if i < 2 {
                let _ = write!(out, "{c:<w$}{sep}");
            } else {
                let _ = write!(out, "{c:>w$}{sep}");
            }
        }
    };
    line(&header);
    let rule: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
    line(&rule.iter().map(String::as_str).collect::<Vec<_>>());
    for row in &cells {
        line(&row.each_ref().map(String::as_str));
    }
    out
}
