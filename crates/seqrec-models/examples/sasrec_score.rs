//! Micro-benchmark of SASRec's scoring paths at serving sizes (issue 7, docs/serving.md): the paper's
//! ML-1M network (`d = 50`, 2 blocks, 1 head, window 200, 3,416 items, random weights: latency does not
//! depend on them) scoring
//!
//! - one history of 200 items (batch 1),
//! - 64 histories of 200 items (batch 64),
//! - 64 histories of mixed lengths (1 to 200, uniform),
//!
//! through `score` (the training forward in eval mode over the whole window), `score_trimmed` (the same
//! forward on the slots that are not padding in every row), `score_serving` (what the server and the
//! evaluation call) and, on a CPU with AMX tiles, `score_serving` in bf16. The paths take turns call
//! by call. Prints the median and the 10th/90th percentile of the time per call and per query over
//! `--reps` calls (default 200) after 20 warm-up calls, and the median ratio of each path's time to
//! `score_serving`'s in the same turn; `--only TEXT` keeps the lines whose case or path name
//! contains `TEXT`.
//!
//! ```text
//! cargo run --release -p seqrec-models --example sasrec_score [-- --reps 500] [--only serving]
//! ```

use std::time::Instant;

use seqrec_models::{Model, Precision, Sasrec, SasrecConfig};

const N_ITEMS: usize = 3416;

/// A small deterministic generator (SplitMix64), so that runs compare like with like.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `[batch, maxlen]` right-aligned windows whose lengths `len(r)` returns.
fn windows(g: &mut Gen, batch: usize, l: usize, len: impl Fn(&mut Gen) -> usize) -> Vec<u32> {
    let mut w = vec![0u32; batch * l];
    for r in 0..batch {
        let n = len(g).clamp(1, l);
        for slot in &mut w[r * l + l - n..(r + 1) * l] {
            *slot = 1 + g.below(N_ITEMS) as u32;
        }
    }
    w
}

/// Median, 10th and 90th percentile of `xs` (sorted in place).
fn percentiles(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<usize>().expect("--reps takes a count"))
        .unwrap_or(200);
    // `--only TEXT`: run only the paths and cases whose names contain TEXT (e.g. for a profiler).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let config = SasrecConfig::default();
    let l = config.maxlen;
    // A catalogue of N_ITEMS items: one user whose history touches every item.
    let users = seqrec_data::Vocab::from_originals(vec!["u".into()]).unwrap();
    let items =
        seqrec_data::Vocab::from_originals((0..N_ITEMS).map(|i| i.to_string()).collect()).unwrap();
    let seq: Vec<u32> = (1..=N_ITEMS as u32).collect();
    let times: Vec<i64> = (0..N_ITEMS as i64).collect();
    let ds = seqrec_data::Dataset::from_sequences(users, items, vec![(seq, times)]).unwrap();
    let mut model = Sasrec::new(config, &seqrec_data::Sequences::all(&ds), 7).unwrap();
    let mut g = Gen(42);
    let cases = [
        ("batch 1, history 200", windows(&mut g, 1, l, |_| 200)),
        ("batch 64, history 200", windows(&mut g, 64, l, |_| 200)),
        (
            "batch 64, mixed lengths 1..=200",
            windows(&mut g, 64, l, |g| 1 + g.below(200)),
        ),
    ];
    println!(
        "SASRec d = 50, 2 blocks, 1 head, window {l}, {N_ITEMS} items; {reps} calls per line, \
         median [p10, p90]"
    );
    type Path = fn(&mut Sasrec, &[u32], usize, &mut [f32]);
    let mut paths: Vec<(&str, Path)> = vec![
        ("score (full window)", |m, w, b, s| m.score(w, b, s)),
        ("score_trimmed", |m, w, b, s| {
            m.net_mut().score_trimmed(w, b, s)
        }),
        ("score_serving", |m, w, b, s| m.score_serving(w, b, s)),
    ];
    // `serve --precision bf16`, where this CPU has AMX tiles.
    if model.set_serving_precision(Precision::Bf16).is_ok() {
        model.set_serving_precision(Precision::F32).unwrap();
        paths.push(("score_serving bf16", |m, w, b, s| {
            m.set_serving_precision(Precision::Bf16).unwrap();
            m.score_serving(w, b, s);
            m.set_serving_precision(Precision::F32).unwrap();
        }));
    }
    for (name, w) in &cases {
        let b = w.len() / l;
        let mut scores = vec![0.0f32; b * (N_ITEMS + 1)];
        println!("{name}:");
        let chosen: Vec<(&str, Path)> = paths
            .iter()
            .copied()
            .filter(|(pname, _)| format!("{name}: {pname}").contains(&only))
            .collect();
        for &(_, f) in &chosen {
            for _ in 0..20 {
                f(&mut model, w, b, &mut scores);
            }
        }
        // The paths take turns call by call, so that the machine's drift hits them alike.
        let mut us = vec![Vec::with_capacity(reps); chosen.len()];
        for _ in 0..reps {
            for (times, &(_, f)) in us.iter_mut().zip(&chosen) {
                let t = Instant::now();
                f(&mut model, w, b, &mut scores);
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let serving = chosen.iter().position(|(p, _)| *p == "score_serving");
        for (i, (pname, _)) in chosen.iter().enumerate() {
            // Paired against `score_serving` (f32): the median of the per-turn time ratios.
            let ratio = match serving {
                Some(s) if s != i => {
                    let mut r: Vec<f64> = us[s].iter().zip(&us[i]).map(|(a, b)| a / b).collect();
                    format!("  {:.2}x score_serving", percentiles(&mut r).0)
                }
                _ => String::new(),
            };
            let (p50, p10, p90) = percentiles(&mut us[i]);
            println!(
                "  {pname:<22} {p50:>9.1} us/call [{p10:.1}, {p90:.1}]  {:>8.1} us/query{ratio}",
                p50 / b as f64
            );
        }
    }
}
