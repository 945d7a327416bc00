//! `cargo xtask train` / `cargo xtask eval` end to end on a small synthetic log (MostPop).

use std::path::PathBuf;
use std::process::Command;

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

#[test]
fn train_then_eval_through_the_cli() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("xtask-train-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // 40 users, 12 items, 5..9 events each.
    let mut log = String::new();
    for u in 0..40u32 {
        log.push_str(&format!("u{u}"));
        for k in 0..5 + u % 5 {
            log.push_str(&format!(" i{}", (u * 7 + k * 3) % 12));
        }
        log.push('\n');
    }
    let data = dir.join("log.txt");
    std::fs::write(&data, log).unwrap();
    let run = dir.join("run");
    let common = [
        "--set".to_string(),
        "data.format=sequences".into(),
        "--set".into(),
        format!(
            "data.cache_dir={:?}",
            dir.join("cache").display().to_string()
        ),
    ];

    // --print-config prints a config that parses back, with the overrides applied.
    let out = xtask()
        .args(["train", "--print-config", "--epochs", "3", "--data"])
        .arg(&data)
        .args(&common)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg =
        seqrec_train::TrainConfig::from_toml_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(cfg.train.epochs, 3);
    assert_eq!(cfg.data.format, "sequences");

    let out = xtask()
        .args([
            "train",
            "--quiet",
            "--epochs",
            "2",
            "--eval-every",
            "1",
            "--threads",
            "1",
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .args(&common)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("NDCG@10") && stdout.contains("MostPop"),
        "{stdout}"
    );
    assert!(run.join("metrics.json").is_file());
    assert_eq!(
        std::fs::read_to_string(run.join("history.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );

    let csv = dir.join("per_user.csv");
    let out = xtask()
        .args([
            "eval",
            "--protocol",
            "sampled-uniform",
            "--negatives",
            "5",
            "--run",
        ])
        .arg(&run)
        .arg("--per-user")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Header + one row per user with a test case.
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 41);

    // The same checkpoint scored in bf16 (SASRec on AMX tiles), next to MostPop in f32; a CPU without
    // AMX refuses with the reason.
    let out = xtask()
        .args(["eval", "--precision", "bf16", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if out.status.success() {
        assert!(
            stdout.contains("(sasrec, bf16)") && stdout.contains("MostPop"),
            "{stdout}"
        );
    } else {
        assert!(stderr.contains("without AMX"), "{stderr}");
        println!("bf16 evaluation skipped: {stderr}");
    }

    // Bad input: a clear error naming the field, non-zero exit.
    let out = xtask()
        .args(["train", "--metric", "ndcg@7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("train.metric"));
}
