//! `cargo xtask compare <a> <b> [--metric ndcg@10]`: are two runs really different, user by user?
//!
//! Each side is a run directory (its best checkpoint is re-evaluated on the test split with the run's own
//! protocol, through `run::evaluate_run`) or a per-user CSV written by `cargo xtask eval --per-user`
//! (`user,rank,...`: only the 0-based rank is read; every metric is a function of it). The two sides must
//! hold exactly the same users. The report: both means, the mean difference `a - b` with its 95%
//! confidence interval (Student t), the paired t-test p-value and the Wilcoxon signed-rank p-value
//! (scipy's `ttest_rel` and `wilcoxon` conventions, from `seqrec_metrics::paired_test`), preceded by a
//! `WARNING:` line for every setting that makes the two not comparable (dataset, data filters, split,
//! evaluation protocol, negatives, history exclusion), read from `config.toml` and `metrics.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use seqrec_metrics::{Metric, PairedTest, paired_test};
use seqrec_train::{Protocol, TrainConfig, parse_metric, run};

/// Compare two runs (or two per-user CSVs) on the same test users: means, difference with 95% CI,
/// paired t-test and Wilcoxon signed-rank test; warns when data, split or protocol differ.
#[derive(Args)]
pub struct CompareArgs {
    /// Run A: a run directory (`cargo xtask train`) or a per-user CSV (`cargo xtask eval --per-user`).
    a: PathBuf,
    /// Run B, same kinds as A. The difference is reported as A - B.
    b: PathBuf,
    /// Per-user metric to compare: ndcg@K, hr@K, recall@K, mrr@K, map@K, precision@K or mrr (any K).
    #[arg(long, default_value = "ndcg@10")]
    metric: String,
}

/// One side of the comparison: per-user ranks, and the settings when it is a run directory.
#[derive(Debug)]
pub struct Side {
    /// What the user passed.
    pub label: String,
    /// User ids, ascending, unique.
    pub users: Vec<u32>,
    /// 0-based rank of each user's test target.
    pub ranks: Vec<u32>,
    /// Settings that decide comparability (`None` for a CSV).
    pub settings: Option<BTreeMap<&'static str, String>>,
}

/// The outcome of a comparison.
#[derive(Debug)]
pub struct Comparison {
    /// The metric compared.
    pub metric: Metric,
    /// Label of A and of B.
    pub labels: [String; 2],
    /// Both tests.
    pub test: PairedTest,
    /// One line per incomparable setting.
    pub warnings: Vec<String>,
    /// Remarks that are not warnings (e.g. CSV inputs whose settings cannot be checked).
    pub notes: Vec<String>,
}

/// Runs `cargo xtask compare`.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let metric = parse_metric(&args.metric).context("--metric")?;
    for p in [&args.a, &args.b] {
        if !p.exists() {
            bail!("{}: no such run directory or per-user CSV", p.display());
        }
    }
    let a = load_side(&args.a)?;
    let b = load_side(&args.b)?;
    let cmp = compare(&a, &b, metric)?;
    print!("{}", format_comparison(&cmp));
    Ok(())
}

/// Loads a run directory (re-evaluating its best checkpoint on the test split) or a per-user CSV.
pub fn load_side(path: &Path) -> anyhow::Result<Side> {
    let label = path.display().to_string();
    if path.is_dir() {
        let cfg = run::resume_config(path)
            .with_context(|| format!("{label}: not a run directory (config.toml)"))?;
        let metrics_json: Option<serde_json::Value> =
            std::fs::read_to_string(path.join("metrics.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
        let (model, _mostpop, _exp) =
            run::evaluate_run(path, None, |_| {}).with_context(|| format!("evaluating {label}"))?;
        Ok(Side {
            label,
            users: model.metrics.users.clone(),
            ranks: model.metrics.ranks.clone(),
            settings: Some(settings_of(&cfg, metrics_json.as_ref())),
        })
    } else {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {label}"))?;
        let (users, ranks) = parse_per_user_csv(&text).with_context(|| label.clone())?;
        Ok(Side {
            label,
            users,
            ranks,
            settings: None,
        })
    }
}

/// Parses `user,rank,...` (the header of `MetricReport::write_per_user_csv`) into users sorted
/// ascending with their ranks. Errors name the line.
pub fn parse_per_user_csv(text: &str) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, h)| h.trim()).unwrap_or_default();
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols.len() < 2 || cols[0] != "user" || cols[1] != "rank" {
        bail!(
            "line 1: expected a header starting with user,rank (cargo xtask eval --per-user), found {header:?}"
        );
    }
    let mut rows: Vec<(u32, u32)> = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut f = line.split(',').map(str::trim);
        let (Some(u), Some(r)) = (f.next(), f.next()) else {
            bail!("line {}: expected user,rank,..., found {line:?}", i + 1);
        };
        let u: u32 = u
            .parse()
            .with_context(|| format!("line {}: user {u:?} is not an integer id", i + 1))?;
        let r: u32 = r
            .parse()
            .with_context(|| format!("line {}: rank {r:?} is not a 0-based integer", i + 1))?;
        rows.push((u, r));
    }
    if rows.is_empty() {
        bail!("no users after the header");
    }
    rows.sort_unstable_by_key(|&(u, _)| u);
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        bail!("user {} appears twice", w[0].0);
    }
    Ok(rows.into_iter().unzip())
}

/// The settings of a run that must agree for a paired comparison to mean anything.
fn settings_of(
    cfg: &TrainConfig,
    metrics: Option<&serde_json::Value>,
) -> BTreeMap<&'static str, String> {
    let mut s = BTreeMap::new();
    s.insert("data.dataset", cfg.data.dataset.clone());
    s.insert("data.format", cfg.data.format.clone());
    s.insert("data.min_user_events", cfg.data.min_user_events.to_string());
    s.insert("data.min_item_events", cfg.data.min_item_events.to_string());
    s.insert("data.split", cfg.data.split.clone());
    s.insert("eval.protocol", cfg.eval.protocol.name().to_owned());
    if cfg.eval.protocol == Protocol::Full {
        s.insert("eval.exclude_history", cfg.eval.exclude_history.to_string());
    } else {
        s.insert("eval.negatives", cfg.eval.negatives.to_string());
        s.insert("eval.negatives_seed", cfg.eval.negatives_seed.to_string());
        s.insert(
            "eval.negatives_exclude",
            cfg.eval.negatives_exclude.name().to_owned(),
        );
    }
    if let Some(m) = metrics {
        // What was actually prepared: a changed file or data directory shows up here even when the
        // config's names agree.
        // `dataset_info` in schema 1; `dataset` in the files written before it.
        for (key, ptrs) in [
            (
                "prepared dataset fingerprint",
                ["/dataset_info/fingerprint", "/dataset/fingerprint"],
            ),
            (
                "preparation recipe",
                ["/dataset_info/prepare", "/dataset/prepare"],
            ),
            ("split (metrics.json)", ["/split", "/split"]),
        ] {
            if let Some(v) = ptrs
                .iter()
                .find_map(|p| m.pointer(p).and_then(|v| v.as_str()))
            {
                s.insert(key, v.to_owned());
            }
        }
    }
    s
}

/// Compares `a` against `b` on `metric` (difference `a - b`).
///
/// # Errors
/// When the two sides do not hold the same users, or have fewer than 2.
pub fn compare(a: &Side, b: &Side, metric: Metric) -> anyhow::Result<Comparison> {
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    match (&a.settings, &b.settings) {
        (Some(sa), Some(sb)) => {
            let keys: std::collections::BTreeSet<&&str> = sa.keys().chain(sb.keys()).collect();
            for k in keys {
                let (va, vb) = (sa.get(*k), sb.get(*k));
                if va != vb {
                    let show =
                        |v: Option<&String>| v.map_or("(not set)".to_owned(), |v| format!("{v:?}"));
                    warnings.push(format!("{k} differs: A {} vs B {}", show(va), show(vb)));
                }
            }
        }
        _ => {
            for s in [a, b] {
                if s.settings.is_none() {
                    notes.push(format!(
                        "{} is a per-user CSV: its dataset, split and protocol cannot be checked",
                        s.label
                    ));
                }
            }
        }
    }
    if a.users != b.users {
        let only_a = a
            .users
            .iter()
            .filter(|u| b.users.binary_search(u).is_err())
            .count();
        let only_b = b
            .users
            .iter()
            .filter(|u| a.users.binary_search(u).is_err())
            .count();
        let mut msg = format!(
            "the two sides do not hold the same users ({} in A, {} in B; {only_a} only in A, {only_b} only in B): \
             a paired comparison needs the same test users",
            a.users.len(),
            b.users.len()
        );
        for w in &warnings {
            msg.push_str(&format!("\nWARNING: {w}"));
        }
        bail!(msg);
    }
    let va: Vec<f64> = a.ranks.iter().map(|&r| metric.value(r as usize)).collect();
    let vb: Vec<f64> = b.ranks.iter().map(|&r| metric.value(r as usize)).collect();
    let test = paired_test(&va, &vb).context("paired test")?;
    Ok(Comparison {
        metric,
        labels: [a.label.clone(), b.label.clone()],
        test,
        warnings,
        notes,
    })
}

/// The printed report.
pub fn format_comparison(c: &Comparison) -> String {
    let mut out = String::new();
    for w in &c.warnings {
        out.push_str(&format!("WARNING: {w}\n"));
    }
    if !c.warnings.is_empty() {
        out.push_str(
            "WARNING: the runs were not evaluated the same way: the numbers below compare different things\n",
        );
    }
    for n in &c.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    let t = &c.test.t;
    let w = &c.test.wilcoxon;
    out.push_str(&format!(
        "{} on the test split, {} users paired\n",
        c.metric.name(),
        t.n
    ));
    let width = c.labels.iter().map(String::len).max().unwrap_or(0);
    out.push_str(&format!(
        "  A  {:<width$}  mean {:.6}\n",
        c.labels[0], c.test.mean_a
    ));
    out.push_str(&format!(
        "  B  {:<width$}  mean {:.6}\n",
        c.labels[1], c.test.mean_b
    ));
    out.push_str(&format!(
        "  A - B                 {:+.6}   95% CI [{:+.6}, {:+.6}]\n",
        t.mean_diff, t.ci95_low, t.ci95_high
    ));
    out.push_str(&format!(
        "  paired t-test         t = {:.4} (df {}), p = {:.4e}\n",
        t.t_statistic, t.df, t.p_value
    ));
    out.push_str(&format!(
        "  Wilcoxon signed-rank  W = {} (R+ {}, R- {}), {} zero differences dropped, p = {:.4e} ({})\n",
        w.statistic,
        w.r_plus,
        w.r_minus,
        w.n_zero,
        w.p_value,
        match w.z {
            Some(z) if !w.exact => format!("normal approximation, z = {z:.4}"),
            _ => "exact".to_owned(),
        }
    ));
    let verdict = match (t.p_value < 0.05, w.p_value < 0.05) {
        (true, true) => format!(
            "{} is better at the 5% level by both tests",
            if t.mean_diff > 0.0 { "A" } else { "B" }
        ),
        (false, false) => "no significant difference at the 5% level by either test".to_owned(),
        (tt, _) => format!(
            "the tests disagree at the 5% level (significant by {} only)",
            if tt { "the t-test" } else { "Wilcoxon" }
        ),
    };
    out.push_str(&format!("  {verdict}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/compare")
            .join(name)
    }

    fn close(got: f64, want: f64, rel: f64, what: &str) {
        assert!(
            (got - want).abs() <= rel * want.abs().max(1e-300),
            "{what}: got {got}, want {want}"
        );
    }

    /// Both per-user CSV fixtures against scipy (`scripts/fixtures_compare.py`): 80 users (normal
    /// approximation, zeros and ties) and 11 users (exact distribution), three metrics.
    #[test]
    fn csv_statistics_match_scipy() {
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("scipy.json")).unwrap()).unwrap();
        let mut checked = 0;
        for case in ["large", "small"] {
            let a = load_side(&fixture(&format!("{case}_a.csv"))).unwrap();
            let b = load_side(&fixture(&format!("{case}_b.csv"))).unwrap();
            assert!(a.users.windows(2).all(|w| w[0] < w[1]), "sorted by user");
            for m in ["ndcg@10", "hr@10", "mrr"] {
                let r = &reference[case][m];
                let f = |k: &str| r[k].as_f64().unwrap();
                let c = compare(&a, &b, parse_metric(m).unwrap()).unwrap();
                let what = |x: &str| format!("{case} {m} {x}");
                close(c.test.mean_a, f("mean_a"), 1e-12, &what("mean_a"));
                close(c.test.mean_b, f("mean_b"), 1e-12, &what("mean_b"));
                close(c.test.t.mean_diff, f("mean_diff"), 1e-12, &what("diff"));
                close(
                    c.test.t.ci95_low,
                    r["ci95"][0].as_f64().unwrap(),
                    1e-9,
                    &what("ci low"),
                );
                close(
                    c.test.t.ci95_high,
                    r["ci95"][1].as_f64().unwrap(),
                    1e-9,
                    &what("ci high"),
                );
                close(c.test.t.t_statistic, f("t"), 1e-10, &what("t"));
                close(c.test.t.p_value, f("t_p"), 1e-9, &what("t p"));
                close(
                    c.test.wilcoxon.statistic,
                    f("wilcoxon_statistic"),
                    0.0,
                    &what("W"),
                );
                close(
                    c.test.wilcoxon.p_value,
                    f("wilcoxon_p"),
                    1e-9,
                    &what("Wilcoxon p"),
                );
                assert!(c.warnings.is_empty());
                assert_eq!(c.notes.len(), 2, "both CSVs get a note");
                let text = format_comparison(&c);
                assert!(
                    text.contains(&format!("{} users paired", a.users.len())),
                    "{text}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 6);
    }

    #[test]
    fn malformed_csvs_are_errors_naming_the_line() {
        let err = |t: &str| format!("{:#}", parse_per_user_csv(t).unwrap_err());
        assert!(err("u,r\n1,2\n").contains("line 1"));
        assert!(err("user,rank\n1,2\n3,x\n").contains("line 3"));
        assert!(err("user,rank\n1,-2\n").contains("line 2"));
        assert!(err("user,rank\n1\n").contains("line 2"));
        assert!(err("user,rank\n").contains("no users"));
        assert!(err("user,rank\n4,1\n2,0\n4,3\n").contains("user 4 appears twice"));
        assert_eq!(
            parse_per_user_csv("user,rank,NDCG@10\n4,1,0.6\n\n2,0,1\n").unwrap(),
            (vec![2, 4], vec![0, 1])
        );
    }

    /// What `MetricReport::write_per_user_csv` writes, `parse_per_user_csv` reads back exactly (users
    /// added out of order, large ranks, several cut-offs).
    #[test]
    fn per_user_csv_round_trips() {
        use seqrec_metrics::{Cutoffs, MetricAccumulator};
        let mut acc = MetricAccumulator::new(Cutoffs::new([1, 10, 50]).unwrap());
        let mut x = 12345u64;
        for u in (1..=500u32).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            acc.add(u * 3, ((x >> 33) % 5000) as usize);
        }
        let report = acc.finish().unwrap();
        let mut bytes = Vec::new();
        report.write_per_user_csv(&mut bytes).unwrap();
        let (users, ranks) = parse_per_user_csv(std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert_eq!(users, report.users);
        assert_eq!(ranks, report.ranks);
    }

    #[test]
    fn different_users_are_refused() {
        let side = |users: Vec<u32>| Side {
            label: "x".into(),
            ranks: vec![0; users.len()],
            users,
            settings: None,
        };
        let e = compare(&side(vec![1, 2, 3]), &side(vec![1, 2, 4]), Metric::Mrr).unwrap_err();
        assert!(e.to_string().contains("1 only in A, 1 only in B"), "{e}");
    }

    /// Real runs on MovieLens-100k (trained in a scratch directory): EASE against MostPop with equal
    /// settings (no warning, EASE significantly better, the CSV path gives the same numbers), then MostPop
    /// against a MostPop evaluated with the history kept and on another item filter (warnings).
    #[test]
    fn real_runs_on_ml100k() {
        use seqrec_train::{RunOptions, train};
        let dir = std::env::temp_dir().join(format!("seqrec-xtask-compare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = RunOptions {
            quiet: true,
            stop_after_epoch: None,
        };
        let run_dir = |name: &str, sets: &[(&str, &str)]| -> PathBuf {
            let mut cfg = TrainConfig::default();
            cfg.set("model.model", sets[0].1).unwrap();
            cfg.data.dataset = "ml-100k".into();
            cfg.data.cache_dir = dir.join("cache");
            cfg.train.epochs = 1;
            cfg.train.eval_every = 1;
            for (k, v) in &sets[1..] {
                cfg.set(k, v).unwrap();
            }
            cfg.out = dir.join(name);
            train(&cfg, &opts).unwrap();
            cfg.out
        };
        let ease = run_dir("ease", &[("model.model", "ease"), ("model.lambda", "200")]);
        let pop = run_dir("mostpop", &[("model.model", "mostpop")]);
        let a = load_side(&ease).unwrap();
        let b = load_side(&pop).unwrap();
        let c = compare(&a, &b, Metric::Ndcg(10)).unwrap();
        assert_eq!(c.test.t.n, 943);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // EASE 0.0703 vs MostPop (fit on training only, as a model) 0.0432 on 943 users.
        assert!(c.test.t.ci95_low > 0.0 && c.test.t.p_value < 1e-3, "{c:?}");
        assert!(
            c.test.wilcoxon.p_value < 1e-3 && !c.test.wilcoxon.exact,
            "{c:?}"
        );
        // The means are the test NDCG@10 that training wrote to metrics.json.
        for (side, mean) in [(&ease, c.test.mean_a), (&pop, c.test.mean_b)] {
            let m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(side.join("metrics.json")).unwrap())
                    .unwrap();
            assert!((m["test"]["full"]["ndcg@10"].as_f64().unwrap() - mean).abs() < 1e-12);
        }
        assert!(format_comparison(&c).contains("A is better at the 5% level by both tests"));

        // The same comparison from A's per-user CSV: identical statistics.
        let (model, _, _) = run::evaluate_run(&ease, None, |_| {}).unwrap();
        let csv = dir.join("ease.csv");
        model
            .metrics
            .write_per_user_csv(std::fs::File::create(&csv).unwrap())
            .unwrap();
        let c2 = compare(&load_side(&csv).unwrap(), &b, Metric::Ndcg(10)).unwrap();
        assert_eq!(c2.test, c.test);
        assert_eq!(c2.notes.len(), 1);

        // Different protocol and data filter: warnings name each setting.
        let other = run_dir(
            "mostpop-other",
            &[
                ("model.model", "mostpop"),
                ("eval.exclude_history", "false"),
                ("data.min_item_events", "10"),
            ],
        );
        let c3 = compare(&b, &load_side(&other).unwrap(), Metric::Hr(10)).unwrap();
        let text = format_comparison(&c3);
        for key in [
            "eval.exclude_history differs",
            "data.min_item_events differs",
            "prepared dataset fingerprint differs",
        ] {
            assert!(
                text.contains(&format!("WARNING: {key}")),
                "{key} missing in\n{text}"
            );
        }
        assert!(text.contains("compare different things"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
