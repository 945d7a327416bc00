//! `cargo xtask data ...`: inspect, prepare and generate interaction logs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use seqrec_data::cache::{self, CacheKey};
use seqrec_data::synth::{SynthConfig, write_movielens};
use seqrec_data::{
    Column, ColumnMap, Dedup, Format, KCore, PrepareConfig, RawLog, ReadOptions, Stats,
    prepare_owned, read_log,
};

/// Data subcommands.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Print statistics of an interaction log (users, items, events, density, lengths, time span).
    Stats {
        /// The log file.
        file: PathBuf,
        #[command(flatten)]
        read: ReadArgs,
        /// Print one JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Filter, re-index and time-order a log, write its binary cache into --out, print its stats.
    ///
    /// A valid cache for the same file (path, size, mtime) and settings is loaded instead of
    /// re-parsing; a stale or corrupted one is rebuilt.
    Prepare {
        /// The log file.
        file: PathBuf,
        /// Directory for the cache file (`<dir>/<file name>.seqrec`); created if missing.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        read: ReadArgs,
        /// Drop users (sequences) with fewer events.
        #[arg(long, default_value_t = 0, value_name = "K")]
        min_user_events: usize,
        /// Drop items with fewer events.
        #[arg(long, default_value_t = 0, value_name = "K")]
        min_item_events: usize,
        /// k-core mode: `iterative` (repeat until stable) or `single-pass` (the SASRec script).
        #[arg(long, default_value = "iterative", value_parser = parse_kcore)]
        kcore: KCore,
        /// Keep only events with rating >= R.
        #[arg(long, value_name = "R")]
        rating_threshold: Option<f32>,
        /// Repeated (user, item) pairs: `all`, `first` or `last` (in time order).
        #[arg(long, default_value = "all")]
        dedup: Dedup,
        /// Split a user's events into sessions at gaps longer than S seconds.
        #[arg(long, value_name = "S")]
        session_gap: Option<i64>,
        /// Print one JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a seeded synthetic log in the MovieLens `::` format (Zipf items, varied user lengths).
    Synth {
        /// Number of events (lines).
        #[arg(long)]
        events: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Number of distinct items.
        #[arg(long, default_value_t = 100_000)]
        items: u32,
        /// Zipf exponent of item popularity.
        #[arg(long, default_value_t = 1.0)]
        zipf: f64,
        /// Shortest user length.
        #[arg(long, default_value_t = 5)]
        min_len: u32,
        /// Longest user length.
        #[arg(long, default_value_t = 5_000)]
        max_len: u32,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// How to read the log (shared by `stats` and `prepare`).
#[derive(Args)]
pub struct ReadArgs {
    /// Log format: movielens, ml100k, csv, tsv, ssv, delimited:<char>, recbole, pairs, sequences.
    /// Detected from the file name and first lines when omitted.
    #[arg(long, value_parser = Format::from_name)]
    format: Option<Format>,
    /// User column of a headed file (name or 0-based index).
    #[arg(long, value_name = "COL")]
    user_col: Option<Column>,
    /// Item column of a headed file.
    #[arg(long, value_name = "COL")]
    item_col: Option<Column>,
    /// Timestamp column of a headed file.
    #[arg(long, value_name = "COL")]
    time_col: Option<Column>,
    /// Rating column of a headed file.
    #[arg(long, value_name = "COL")]
    rating_col: Option<Column>,
    /// Session column of a headed file (sessions become the sequences).
    #[arg(long, value_name = "COL")]
    session_col: Option<Column>,
    /// Skip malformed lines (reporting how many and the first few) instead of stopping.
    #[arg(long)]
    skip_invalid: bool,
    /// Parse header-less formats on all cores (same result; helps with many free cores).
    #[arg(long)]
    parallel: bool,
}

impl ReadArgs {
    fn options(&self) -> ReadOptions {
        ReadOptions {
            format: self.format,
            columns: ColumnMap {
                user: self.user_col.clone(),
                item: self.item_col.clone(),
                timestamp: self.time_col.clone(),
                rating: self.rating_col.clone(),
                session: self.session_col.clone(),
            },
            skip_invalid: self.skip_invalid,
            parallel: self.parallel,
        }
    }
}

fn parse_kcore(s: &str) -> Result<KCore, String> {
    match s {
        "iterative" => Ok(KCore::Iterative),
        "single-pass" | "single" => Ok(KCore::SinglePass),
        other => Err(format!(
            "unknown k-core mode {other:?}: expected iterative or single-pass"
        )),
    }
}

/// Runs a data subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Stats { file, read, json } => {
            print!("{}", stats(&file, &read.options(), json)?);
            Ok(())
        }
        DataCommand::Prepare {
            file,
            out,
            read,
            min_user_events,
            min_item_events,
            kcore,
            rating_threshold,
            dedup,
            session_gap,
            json,
        } => {
            let mut b = PrepareConfig::builder()
                .min_user_events(min_user_events)
                .min_item_events(min_item_events)
                .kcore(kcore)
                .dedup(dedup);
            if let Some(r) = rating_threshold {
                b = b.rating_threshold(r);
            }
            if let Some(g) = session_gap {
                b = b.session_gap(g);
            }
            let cfg = b.build()?;
            print!("{}", prepare_cmd(&file, &out, &read.options(), &cfg, json)?);
            Ok(())
        }
        DataCommand::Synth {
            events,
            out,
            items,
            zipf,
            min_len,
            max_len,
            seed,
        } => {
            let cfg = SynthConfig {
                events,
                items,
                zipf_exponent: zipf,
                min_len,
                max_len,
                seed,
            };
            let start = Instant::now();
            let file = std::fs::File::create(&out)
                .with_context(|| format!("{}: cannot create", out.display()))?;
            let s = write_movielens(std::io::BufWriter::with_capacity(1 << 22, file), &cfg)
                .with_context(|| format!("{}: cannot write", out.display()))?;
            eprintln!(
                "wrote {} events, {} users, {} bytes to {} in {:.1} s",
                s.events,
                s.users,
                s.bytes,
                out.display(),
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

/// Prints skipped-line reports on stderr.
fn report_skipped(log: &RawLog) {
    if log.skipped > 0 {
        eprintln!("skipped {} invalid line(s); the first:", log.skipped);
        for e in &log.first_invalid {
            eprintln!("  {e}");
        }
    }
}

/// Reads a log, reporting skipped lines and the parse rate on stderr.
fn timed_read(file: &Path, opts: &ReadOptions) -> anyhow::Result<RawLog> {
    let start = Instant::now();
    let log = read_log(file, opts)?;
    let secs = start.elapsed().as_secs_f64();
    report_skipped(&log);
    eprintln!(
        "parsed {} events in {secs:.3} s ({:.1} M events/s)",
        log.n_events(),
        log.n_events() as f64 / secs / 1e6
    );
    Ok(log)
}

fn stats_json(s: &Stats, extra: serde_json::Value) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(s)?;
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    Ok(serde_json::to_string(&v)?)
}

/// Runs `data stats` and returns what it prints on stdout.
fn stats(file: &Path, opts: &ReadOptions, json: bool) -> anyhow::Result<String> {
    let mut o = String::new();
    let start = Instant::now();
    let log = timed_read(file, opts)?;
    let (format, sessions, has_timestamps, skipped) =
        (log.format, log.sessions, log.has_timestamps, log.skipped);
    let ds = prepare_owned(log, &PrepareConfig::default())?;
    let s = Stats::of(&ds);
    if json {
        let extra = serde_json::json!({
            "file": file.display().to_string(),
            "format": format.name(),
            "sequences": if sessions { "sessions" } else { "users" },
            "timestamps": if has_timestamps { "file" } else { "positions" },
            "skipped_lines": skipped,
        });
        writeln!(o, "{}", stats_json(&s, extra)?)?;
    } else {
        writeln!(o, "file           {} ({})", file.display(), format.name())?;
        if sessions {
            writeln!(o, "(sequences are sessions: \"users\" counts sessions)")?;
        }
        if !has_timestamps {
            writeln!(
                o,
                "(no timestamps in this format: times are event positions)"
            )?;
        }
        writeln!(o, "{s}")?;
        eprintln!("read in {:.3} s", start.elapsed().as_secs_f64());
    }
    Ok(o)
}

/// Runs `data prepare` and returns what it prints on stdout.
fn prepare_cmd(
    file: &Path,
    out: &Path,
    opts: &ReadOptions,
    cfg: &PrepareConfig,
    json: bool,
) -> anyhow::Result<String> {
    let mut o = String::new();
    let start = Instant::now();
    std::fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create the output directory", out.display()))?;
    let path = cache::cache_path(out, file);
    let key = CacheKey::new(file, opts, cfg)?;
    let (ds, status, raw) = match cache::load(&path, &key) {
        Ok(ds) => (ds, "hit".to_string(), None),
        Err(err) => {
            let why = match &err {
                seqrec_data::DataError::Io { error, .. }
                    if error.kind() == std::io::ErrorKind::NotFound =>
                {
                    "built".to_string()
                }
                other => format!("rebuilt ({other})"),
            };
            let log = timed_read(file, opts)?;
            let raw = (
                log.n_events(),
                log.n_users(),
                log.n_items(),
                log.skipped,
                log.format.name(),
            );
            let ds = prepare_owned(log, cfg)?;
            cache::save(&path, &key, &ds)?;
            (ds, why, Some(raw))
        }
    };
    let s = Stats::of(&ds);
    let secs = start.elapsed().as_secs_f64();
    if json {
        let mut extra = serde_json::json!({
            "file": file.display().to_string(),
            "cache": path.display().to_string(),
            "cache_status": status,
            "config": cfg.fingerprint(),
            "seconds": secs,
        });
        if let Some((events, users, items, skipped, format)) = raw {
            extra["raw"] = serde_json::json!({ "events": events, "users": users, "items": items, "format": format });
            extra["skipped_lines"] = serde_json::json!(skipped);
        }
        writeln!(o, "{}", stats_json(&s, extra)?)?;
    } else {
        if let Some((events, users, items, _, format)) = raw {
            writeln!(
                o,
                "read           {events} events, {users} users, {items} items ({format})"
            )?;
        }
        writeln!(o, "{s}")?;
        writeln!(o, "cache          {} ({status})", path.display())?;
        eprintln!("done in {secs:.3} s");
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: DataCommand,
    }

    fn data(name: &str) -> PathBuf {
        let dir = std::env::var_os("SEQREC_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
        let p = dir.join(name);
        assert!(
            p.is_file(),
            "missing dataset {} (set SEQREC_DATA_DIR)",
            p.display()
        );
        p
    }

    #[test]
    fn stats_json_has_integer_counts() {
        let out = stats(&data("ml-100k-u.data"), &ReadOptions::default(), true).unwrap();
        assert_eq!(out.lines().count(), 1, "one JSON object on one line");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["users"].as_u64(), Some(943));
        assert_eq!(v["items"].as_u64(), Some(1_682));
        assert_eq!(v["events"].as_u64(), Some(100_000));
        assert_eq!(v["format"], "ml100k");
    }

    #[test]
    fn prepare_builds_then_hits_the_cache() {
        let dir = std::env::temp_dir().join(format!("seqrec-xtask-test-{}", std::process::id()));
        let file = data("ml-100k-u.data");
        let args = [
            "t",
            "prepare",
            file.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--min-item-events",
            "5",
            "--json",
        ];
        let run_once = || {
            let Cli {
                cmd:
                    DataCommand::Prepare {
                        file,
                        out,
                        read,
                        min_user_events,
                        min_item_events,
                        kcore,
                        rating_threshold,
                        dedup,
                        session_gap,
                        json,
                    },
            } = Cli::try_parse_from(args).unwrap()
            else {
                panic!("parsed another command")
            };
            assert_eq!(
                (
                    min_user_events,
                    min_item_events,
                    kcore,
                    rating_threshold,
                    dedup,
                    session_gap
                ),
                (0, 5, KCore::Iterative, None, Dedup::KeepAll, None)
            );
            let cfg = PrepareConfig::builder()
                .min_item_events(min_item_events)
                .build()
                .unwrap();
            let text = prepare_cmd(&file, &out, &read.options(), &cfg, json).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        let first = run_once();
        let second = run_once();
        assert_eq!(first["cache_status"], "built");
        assert_eq!(second["cache_status"], "hit");
        assert_eq!(first["events"], second["events"]);
        assert_eq!(first["raw"]["events"].as_u64(), Some(100_000));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(
            Cli::try_parse_from(["t", "prepare", "x", "--out", "d", "--dedup", "sometimes"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["t", "stats", "x", "--format", "parquet"]).is_err());
        let err = stats(
            Path::new("/nonexistent/log.dat"),
            &ReadOptions::default(),
            false,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("/nonexistent/log.dat: "),
            "{err:#}"
        );
    }
}
