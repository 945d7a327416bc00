//! Streaming readers for interaction logs: MovieLens, delimited text, RecBole `.inter`,
//! SASRec-style pairs and sequence lines.
//!
//! Readers work on bytes: the file is read in large chunks, lines are found with `memchr`,
//! numeric ids are parsed by hand and interned through a direct-index table (or a fast hash
//! map for sparse/large ids), so no `String` is allocated per event. Only id fields must be
//! UTF-8; other fields (titles, free text) may hold any bytes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result, excerpt};

/// How many rejected lines [`RawLog::first_invalid`] keeps when skipping invalid lines.
pub const MAX_REPORTED_INVALID: usize = 5;

/// The layout of a log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// MovieLens `UserID::MovieID::Rating::Timestamp` (ML-1M / ML-10M `ratings.dat`), no header.
    MovieLens,
    /// MovieLens-100k `u.data`: `user<TAB>item<TAB>rating<TAB>timestamp`, no header.
    MovieLens100k,
    /// Delimited text (CSV, TSV, `;`) with a header line; columns chosen by a [`ColumnMap`].
    /// Fields may be double-quoted (`"a,b"`, `""` for a quote); a quoted field may not span lines.
    Delimited {
        /// The field separator byte (`b','`, `b'\t'`, `b';'`, ...).
        delimiter: u8,
    },
    /// RecBole atomic `.inter` file: tab-separated with a `name:type` header
    /// (`user_id:token item_id:token rating:float timestamp:float`), any column order.
    RecBoleInter,
    /// SASRec-style `user item` lines (whitespace-separated); the line order is the time order.
    UserItemPairs,
    /// `user item1 item2 ...` lines, one user per line, items in time order.
    Sequences,
}

impl Format {
    /// True when the format carries real timestamps; otherwise timestamps are event positions.
    pub fn has_timestamps(&self) -> bool {
        matches!(
            self,
            Format::MovieLens
                | Format::MovieLens100k
                | Format::Delimited { .. }
                | Format::RecBoleInter
        )
    }

    /// A short stable name, the same one [`Format::from_name`] accepts.
    pub fn name(&self) -> String {
        match self {
            Format::MovieLens => "movielens".into(),
            Format::MovieLens100k => "ml100k".into(),
            Format::Delimited { delimiter: b',' } => "csv".into(),
            Format::Delimited { delimiter: b'\t' } => "tsv".into(),
            Format::Delimited { delimiter: b';' } => "ssv".into(),
            Format::Delimited { delimiter } => format!("delimited:{}", *delimiter as char),
            Format::RecBoleInter => "recbole".into(),
            Format::UserItemPairs => "pairs".into(),
            Format::Sequences => "sequences".into(),
        }
    }

    /// Parses a format name: `movielens`, `ml100k`, `csv`, `tsv`, `ssv` (`;`),
    /// `delimited:<char>`, `recbole`, `pairs`, `sequences`.
    ///
    /// ```
    /// use seqrec_data::Format;
    /// assert_eq!(Format::from_name("csv"), Ok(Format::Delimited { delimiter: b',' }));
    /// assert_eq!(Format::from_name("delimited:|"), Ok(Format::Delimited { delimiter: b'|' }));
    /// assert!(Format::from_name("parquet").is_err());
    /// ```
    pub fn from_name(name: &str) -> std::result::Result<Format, String> {
        Ok(match name {
            "movielens" | "ml" | "dat" => Format::MovieLens,
            "ml100k" | "udata" => Format::MovieLens100k,
            "csv" => Format::Delimited { delimiter: b',' },
            "tsv" => Format::Delimited { delimiter: b'\t' },
            "ssv" => Format::Delimited { delimiter: b';' },
            "recbole" | "inter" => Format::RecBoleInter,
            "pairs" | "sasrec" => Format::UserItemPairs,
            "sequences" | "seq" => Format::Sequences,
            other => match other.strip_prefix("delimited:") {
                Some(d) if d.len() == 1 && d != "\"" => Format::Delimited {
                    delimiter: d.as_bytes()[0],
                },
                _ => {
                    return Err(format!(
                        "unknown format {other:?}: expected movielens, ml100k, csv, tsv, ssv, \
                         delimited:<char>, recbole, pairs or sequences"
                    ));
                }
            },
        })
    }
}

/// A column of a headed file: by header name or by 0-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// The column whose header is this name (case-insensitive; a RecBole `:type` suffix is ignored).
    Name(String),
    /// The column at this 0-based position.
    Index(usize),
}

impl std::str::FromStr for Column {
    type Err = std::convert::Infallible;
    /// A number is a position, anything else a header name.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s.parse::<usize>() {
            Ok(i) => Column::Index(i),
            Err(_) => Column::Name(s.to_owned()),
        })
    }
}

/// Which columns of a headed file ([`Format::Delimited`], [`Format::RecBoleInter`]) hold what.
///
/// `None` means "find it in the header by a usual name" (`user_id`, `item_id`, `timestamp`,
/// `rating`, `session_id`, ...). When a session column is found (or named) it becomes the
/// sequence key instead of the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnMap {
    /// The user column.
    pub user: Option<Column>,
    /// The item column.
    pub item: Option<Column>,
    /// The timestamp column (integer seconds, a float, or a `YYYY-MM-DD[ HH:MM:SS]` date).
    pub timestamp: Option<Column>,
    /// The rating column (optional; needed for a rating threshold).
    pub rating: Option<Column>,
    /// The session column: when set, sessions (not users) are the sequences.
    pub session: Option<Column>,
}

/// How to read a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The format; `None` detects it from the file name and first lines.
    pub format: Option<Format>,
    /// Column mapping for headed formats.
    pub columns: ColumnMap,
    /// Skip malformed lines (counting them) instead of failing on the first one.
    pub skip_invalid: bool,
    /// Parse header-less formats (MovieLens, `u.data`, pairs, sequences) in parallel blocks on
    /// the rayon pool. The result is identical to the sequential reader's. Off by default: on
    /// the 2-vCPU development machine it measured slower than the sequential reader (the two
    /// vCPUs share one core, and the merge copies every event once more); try it on machines
    /// with more free cores.
    pub parallel: bool,
}

/// A log as read: one entry per event in file order, ids interned to raw indices `0..n`
/// in order of first appearance.
#[derive(Debug)]
pub struct RawLog {
    /// The file the log came from (or the name given to [`read_log_from`]).
    pub source: PathBuf,
    /// The format that was used (detected or given).
    pub format: Format,
    /// True when sequences are sessions (a session column), false when they are users.
    pub sessions: bool,
    /// Original id of each raw user (or session) index.
    pub user_ids: Vec<String>,
    /// Original id of each raw item index.
    pub item_ids: Vec<String>,
    /// Raw user (or session) index of each event.
    pub users: Vec<u32>,
    /// Raw item index of each event.
    pub items: Vec<u32>,
    /// Timestamp of each event: seconds (or the file's unit), or the event position for
    /// formats without timestamps (see [`Format::has_timestamps`]).
    pub times: Vec<i64>,
    /// Rating of each event, when the format has a rating column.
    pub ratings: Option<Vec<f32>>,
    /// True when `times` are real timestamps from the file, false when they are event positions.
    pub has_timestamps: bool,
    /// Number of lines skipped as invalid (only with [`ReadOptions::skip_invalid`]).
    pub skipped: u64,
    /// The first [`MAX_REPORTED_INVALID`] skipped lines' errors.
    pub first_invalid: Vec<DataError>,
}

impl RawLog {
    /// Number of events read.
    pub fn n_events(&self) -> usize {
        self.items.len()
    }

    /// Number of distinct users (or sessions).
    pub fn n_users(&self) -> usize {
        self.user_ids.len()
    }

    /// Number of distinct items.
    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }
}

/// Reads a log file, detecting the format unless `opts.format` names it.
///
/// ```no_run
/// use seqrec_data::{ReadOptions, read_log};
/// let log = read_log("ml-1m-ratings.dat", &ReadOptions::default())?;
/// println!("{} events", log.n_events());
/// # Ok::<(), seqrec_data::DataError>(())
/// ```
pub fn read_log(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<RawLog> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        error: source,
    })?;
    let size = file.metadata().ok().map(|m| m.len());
    read_impl(file, path, opts, size, PARALLEL_BLOCK)
}

/// Reads a log from any byte stream; `name` is used for format detection (its extension)
/// and in error messages.
///
/// ```
/// use seqrec_data::{Format, ReadOptions, read_log_from};
/// let text = "1::10::5::100\n1::11::3::90\n2::10::4::50\n";
/// let log = read_log_from(text.as_bytes(), "ratings.dat".as_ref(), &ReadOptions::default())?;
/// assert_eq!(log.format, Format::MovieLens);
/// assert_eq!((log.n_events(), log.n_users(), log.n_items()), (3, 2, 2));
/// assert_eq!(log.times, vec![100, 90, 50]);
/// # Ok::<(), seqrec_data::DataError>(())
/// ```
pub fn read_log_from<R: Read>(reader: R, name: &Path, opts: &ReadOptions) -> Result<RawLog> {
    read_impl(reader, name, opts, None, PARALLEL_BLOCK)
}

/// Estimated number of events in `size` bytes, from the first lines in `head`. Reserving
/// the event arrays up front avoids the doubling growth that would copy them and could leave
/// up to twice the needed memory allocated.
fn estimate_events(head: &[u8], format: Format, size: u64) -> usize {
    let whole = match memchr::memrchr(b'\n', head) {
        Some(p) => &head[..=p],
        None => return 0,
    };
    let lines = memchr::memchr_iter(b'\n', whole).count() as u64;
    let events = if format == Format::Sequences {
        let tokens = whole
            .split(|b| b.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
            .count() as u64;
        tokens.saturating_sub(lines)
    } else {
        lines
    };
    let per_byte = events as f64 / whole.len() as f64;
    // 5% slack; never more than one event per 4 bytes (`1 2\n` is the shortest record).
    ((size as f64 * per_byte * 1.05) as u64).min(size / 4) as usize + 16
}

fn read_impl<R: Read>(
    reader: R,
    name: &Path,
    opts: &ReadOptions,
    size: Option<u64>,
    block: usize,
) -> Result<RawLog> {
    let mut lines = LineReader::new(reader);
    let io_err = |source| DataError::Io {
        path: name.to_owned(),
        error: source,
    };
    let format = match opts.format {
        Some(f) => f,
        None => {
            let head = lines.peek(1 << 16).map_err(io_err)?;
            detect_format(name, head)?
        }
    };
    let mut b = Builder::new(name, format);
    if let Some(size) = size {
        let head = lines.peek(1 << 16).map_err(io_err)?;
        let n = estimate_events(head, format, size);
        b.u.reserve_exact(n);
        b.i.reserve_exact(n);
        b.t.reserve_exact(n);
        if matches!(format, Format::MovieLens | Format::MovieLens100k) {
            b.r.reserve_exact(n);
        }
    }
    let mut parser: Option<LineParser> = match format {
        Format::MovieLens => Some(LineParser::fixed(
            Split::DoubleColon,
            4,
            0,
            1,
            Some(3),
            Some(2),
        )),
        Format::MovieLens100k => Some(LineParser::fixed(
            Split::Byte(b'\t'),
            4,
            0,
            1,
            Some(3),
            Some(2),
        )),
        Format::UserItemPairs => Some(LineParser::fixed(Split::Whitespace, 2, 0, 1, None, None)),
        Format::Sequences => Some(LineParser::sequences()),
        Format::Delimited { .. } | Format::RecBoleInter => None, // built from the header
    };
    if let Some(p) = &parser
        && opts.parallel
        && rayon::current_num_threads() > 1
    {
        // No bigger block than the input needs (small inputs: no 64 MiB buffer).
        let block =
            block.min(size.map_or(1 << 20, |s| (s as usize).saturating_add(1).max(1 << 16)));
        let b = read_parallel(lines, p, b, name, opts, block)?;
        return finish_read(b, true, format, name);
    }
    let mut fields: Vec<(usize, usize)> = Vec::with_capacity(16);
    let mut scratch: Vec<u8> = Vec::new();
    while let Some((line_no, line)) = lines.next_line().map_err(io_err)? {
        let line = if line_no == 1 {
            line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
        } else {
            line
        };
        if is_blank(line) {
            continue;
        }
        let Some(p) = parser.as_mut() else {
            let delimiter = match format {
                Format::Delimited { delimiter } => delimiter,
                _ => b'\t',
            };
            let p = LineParser::from_header(
                line,
                delimiter,
                format == Format::RecBoleInter,
                &opts.columns,
            )
            .map_err(|(expected, found)| DataError::Header {
                path: name.to_owned(),
                expected,
                found: match opts.format {
                    // A guessed format may be the real cause: say what was guessed.
                    None => format!(
                        "{found} (format detected as {}; name another with --format)",
                        format.name()
                    ),
                    Some(_) => found,
                },
            })?;
            b.sessions = p.sessions;
            b.has_time = p.time.is_some();
            parser = Some(p);
            continue;
        };
        if let Err(bad) = p.parse(line, &mut fields, &mut scratch, &mut b) {
            record_invalid(&mut b, bad, line_no, name, opts.skip_invalid)?;
        }
    }
    finish_read(b, parser.is_some(), format, name)
}

/// Turns a rejected line into an error, or counts it when skipping invalid lines.
fn record_invalid(b: &mut Builder, bad: Bad, line: u64, name: &Path, skip: bool) -> Result<()> {
    let err = match bad {
        Bad::Record { expected, found } => DataError::Parse {
            path: name.to_owned(),
            line,
            expected,
            found,
        },
        Bad::TooMany(what) => {
            return Err(DataError::TooManyIds {
                path: name.to_owned(),
                what,
                max: MAX_IDS as u64,
            });
        }
    };
    if !skip {
        return Err(err);
    }
    b.skipped += 1;
    if b.first_invalid.len() < MAX_REPORTED_INVALID {
        b.first_invalid.push(err);
    }
    Ok(())
}

fn finish_read(b: Builder, had_parser: bool, format: Format, name: &Path) -> Result<RawLog> {
    if b.i.is_empty() {
        let expected = if !had_parser {
            "a header line and records".to_string()
        } else if b.skipped > 0 {
            format!(
                "at least one valid record ({} lines skipped as invalid)",
                b.skipped
            )
        } else {
            format!("{} records", format.name())
        };
        return Err(DataError::Empty {
            path: name.to_owned(),
            expected,
        });
    }
    Ok(b.finish())
}

// ---------------------------------------------------------------------------------------------
// Parallel parsing of header-less formats

/// Bytes parsed per parallel round. Each round is cut at line ends into one piece per thread;
/// pieces are parsed with their own interners, then merged in file order. A large block keeps
/// the per-piece merge work (one global lookup per distinct id in the piece) small.
const PARALLEL_BLOCK: usize = 64 << 20;

/// One piece's result: events with piece-local ids, and its rejected lines.
struct Piece {
    b: Builder,
    lines: u64,
    bad: Vec<(u64, Bad)>,
}

fn parse_piece(
    text: &[u8],
    p: &LineParser,
    proto: &Builder,
    at_file_start: bool,
    skip: bool,
) -> Piece {
    let mut b = Builder::new(&proto.source, proto.format);
    let n = estimate_events(
        &text[..text.len().min(1 << 16)],
        proto.format,
        text.len() as u64,
    );
    b.u.reserve_exact(n);
    b.i.reserve_exact(n);
    b.t.reserve_exact(n);
    if matches!(proto.format, Format::MovieLens | Format::MovieLens100k) {
        b.r.reserve_exact(n);
    }
    let mut fields = Vec::with_capacity(16);
    let mut scratch = Vec::new();
    let mut bad = Vec::new();
    let mut lines = 0u64;
    let mut start = 0;
    while start < text.len() {
        let end = memchr::memchr(b'\n', &text[start..]).map_or(text.len(), |p| start + p);
        let mut line = trim_cr(&text[start..end]);
        start = end + 1;
        lines += 1;
        if at_file_start && lines == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if is_blank(line) {
            continue;
        }
        if let Err(e) = p.parse(line, &mut fields, &mut scratch, &mut b) {
            bad.push((lines, e));
            if !skip {
                break;
            }
        }
    }
    Piece { b, lines, bad }
}

impl Key {
    fn as_ref(&self) -> IdRef<'_> {
        match self {
            Key::Num(n) => IdRef::Num(*n),
            Key::Str(s) => IdRef::Str(s),
        }
    }
}

/// Appends a piece to the global builder in file order: ids are re-interned once per distinct
/// id of the piece, positions (for formats without timestamps) are shifted.
fn merge_piece(
    g: &mut Builder,
    piece: Piece,
    line_base: u64,
    name: &Path,
    skip: bool,
) -> Result<()> {
    let Piece { b, lines: _, bad } = piece;
    let too_many = |what| DataError::TooManyIds {
        path: name.to_owned(),
        what,
        max: MAX_IDS as u64,
    };
    let umap: Vec<u32> = b
        .users
        .keys
        .iter()
        .map(|k| g.users.intern(k.as_ref()))
        .collect::<Option<_>>()
        .ok_or_else(|| too_many("users"))?;
    let imap: Vec<u32> = b
        .items
        .keys
        .iter()
        .map(|k| g.items.intern(k.as_ref()))
        .collect::<Option<_>>()
        .ok_or_else(|| too_many("items"))?;
    g.u.extend(b.u.iter().map(|&u| umap[u as usize]));
    g.i.extend(b.i.iter().map(|&i| imap[i as usize]));
    if g.has_time {
        g.t.extend_from_slice(&b.t);
    } else {
        let shift = g.position;
        g.t.extend(b.t.iter().map(|&t| t + shift));
        g.position += b.position;
    }
    g.r.extend_from_slice(&b.r);
    // Events of the piece all come before its first error in non-skip mode, so order is kept.
    for (line, e) in bad {
        record_invalid(g, e, line_base + line, name, skip)?;
    }
    Ok(())
}

/// Cuts `text` into about `n` pieces, each ending just after a newline (the last at the end).
fn cut_pieces(text: &[u8], n: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..n {
        let target = (text.len() * k / n).max(start);
        if target >= text.len() {
            break;
        }
        if let Some(p) = memchr::memchr(b'\n', &text[target..]) {
            let end = target + p + 1;
            pieces.push(&text[start..end]);
            start = end;
        } else {
            break;
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// Parses a header-less format in blocks of `block` bytes, each split across rayon threads.
/// Gives exactly the sequential reader's result (ids, order, errors and line numbers).
fn read_parallel<R: Read>(
    lines: LineReader<R>,
    p: &LineParser,
    mut g: Builder,
    name: &Path,
    opts: &ReadOptions,
    block: usize,
) -> Result<Builder> {
    use rayon::prelude::*;
    let io_err = |error| DataError::Io {
        path: name.to_owned(),
        error,
    };
    let (mut reader, mut buf) = lines.into_parts();
    let threads = rayon::current_num_threads();
    let mut line_base = 0u64;
    let mut at_file_start = true;
    let mut eof = false;
    while !eof {
        // Fill the block (keeping the carried partial line at its front).
        // `read_to_end` on a `take` fills spare capacity without zeroing it first.
        let want = block.max(buf.len() * 2) - buf.len();
        buf.reserve_exact(want);
        let got = (&mut reader)
            .take(want as u64)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        if got < want {
            eof = true;
        }
        let len = buf.len();
        let end = if eof {
            len
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(p) => p + 1,
                None => continue, // one line longer than the block: read more
            }
        };
        let pieces = cut_pieces(&buf[..end], threads);
        let results: Vec<Piece> = pieces
            .par_iter()
            .enumerate()
            .map(|(k, t)| parse_piece(t, p, &g, at_file_start && k == 0, opts.skip_invalid))
            .collect();
        at_file_start = false;
        for piece in results {
            let n = piece.lines;
            merge_piece(&mut g, piece, line_base, name, opts.skip_invalid)?;
            line_base += n;
        }
        buf.drain(..end);
    }
    Ok(g)
}

/// Detects the format of a file from its name and first bytes.
///
/// Rules, in order: a `.inter` extension is RecBole; a first line with `::` is MovieLens; four
/// numeric tab-separated fields are MovieLens-100k; a `.csv`/`.tsv` extension or a first line
/// with letters and a `,` `;` `\t` or `|` separator is delimited text with a header (the most
/// frequent separator wins); whitespace-separated tokens are `user item` pairs when every
/// sniffed line has two tokens, sequence lines otherwise.
pub fn detect_format(name: &Path, head: &[u8]) -> Result<Format> {
    let ext = name
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let unknown = |reason: &str| DataError::UnknownFormat {
        path: name.to_owned(),
        reason: reason.to_owned(),
    };
    if ext == "inter" {
        return Ok(Format::RecBoleInter);
    }
    // Only whole lines of the sniffed head (the last one may be cut).
    let mut lines: Vec<&[u8]> = head.split(|&b| b == b'\n').map(trim_cr).collect();
    if lines.len() > 1 && !head.ends_with(b"\n") && head.len() >= 1 << 16 {
        lines.pop();
    }
    let lines: Vec<&[u8]> = lines
        .into_iter()
        .filter(|l| !l.iter().all(|b| b.is_ascii_whitespace()))
        .take(200)
        .collect();
    let first = match lines.first() {
        Some(l) => l.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(l),
        None => {
            return Err(DataError::Empty {
                path: name.to_owned(),
                expected: "interaction records".into(),
            });
        }
    };
    if memchr::memmem::find(first, b"::").is_some() {
        return Ok(Format::MovieLens);
    }
    let tab_fields: Vec<&[u8]> = first.split(|&b| b == b'\t').collect();
    if tab_fields.len() == 4
        && tab_fields
            .iter()
            .all(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit))
    {
        return Ok(Format::MovieLens100k);
    }
    let count = |d: u8| first.iter().filter(|&&b| b == d).count();
    let best = [b',', b';', b'\t', b'|']
        .into_iter()
        .max_by_key(|&d| count(d))
        .filter(|&d| count(d) > 0);
    match ext.as_str() {
        "csv" => {
            return Ok(Format::Delimited {
                delimiter: best.unwrap_or(b','),
            });
        }
        "tsv" => return Ok(Format::Delimited { delimiter: b'\t' }),
        _ => {}
    }
    if let Some(d) = best
        && first.iter().any(u8::is_ascii_alphabetic)
    {
        return Ok(Format::Delimited { delimiter: d });
    }
    let token_counts: Vec<usize> = lines
        .iter()
        .map(|l| {
            l.split(|b| *b == b' ' || *b == b'\t')
                .filter(|t| !t.is_empty())
                .count()
        })
        .collect();
    if token_counts.iter().all(|&n| n == 2) {
        return Ok(Format::UserItemPairs);
    }
    if token_counts.iter().all(|&n| n >= 2) {
        return Ok(Format::Sequences);
    }
    Err(unknown(
        "first lines are neither MovieLens, delimited with a header, nor whitespace-separated ids",
    ))
}

/// A MovieLens movie: `MovieID::Title::Genres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movie {
    /// The original movie id (as in `ratings.dat`).
    pub id: String,
    /// The title, decoded to UTF-8.
    pub title: String,
    /// The genres (split on `|`).
    pub genres: Vec<String>,
}

/// Reads a MovieLens `movies.dat` (`MovieID::Title::Genres`).
///
/// The ML-1M file is Latin-1: a line that is valid UTF-8 is taken as is, any other line is
/// decoded as Latin-1 (every byte is the code point of the same value), so `Ã©`-style mojibake
/// never appears.
pub fn read_movies(path: impl AsRef<Path>) -> Result<Vec<Movie>> {
    let path = path.as_ref();
    let io_err = |source| DataError::Io {
        path: path.to_owned(),
        error: source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut lines = LineReader::new(file);
    let mut movies = Vec::new();
    while let Some((line_no, line)) = lines.next_line().map_err(io_err)? {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let text = match std::str::from_utf8(line) {
            Ok(s) => s.to_owned(),
            Err(_) => line.iter().map(|&b| b as char).collect(),
        };
        let parts: Vec<&str> = text.split("::").collect();
        if parts.len() != 3 || parts[0].trim().is_empty() {
            return Err(DataError::Parse {
                path: path.to_owned(),
                line: line_no,
                expected: "3 fields MovieID::Title::Genres".into(),
                found: format!("{} fields in {}", parts.len(), excerpt(line)),
            });
        }
        movies.push(Movie {
            id: parts[0].trim().to_owned(),
            title: parts[1].to_owned(),
            genres: parts[2]
                .split('|')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
        });
    }
    if movies.is_empty() {
        return Err(DataError::Empty {
            path: path.to_owned(),
            expected: "MovieID::Title::Genres lines".into(),
        });
    }
    Ok(movies)
}

// ---------------------------------------------------------------------------------------------
// Line reading

/// Buffered line reader over large chunks; yields `(1-based line number, line without \n/\r\n)`.
pub(crate) struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    line_no: u64,
}

/// Initial read buffer (grows for longer lines). 256 KiB amortises the read syscalls while
/// staying in L2 (one syscall per ~10,000 MovieLens lines).
const CHUNK: usize = 1 << 18;

impl<R: Read> LineReader<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self {
            reader,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            line_no: 0,
        }
    }

    /// Reads more bytes after the unconsumed ones; false at end of input.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The first bytes of the input (up to `n` or end of input) without consuming them.
    pub(crate) fn peek(&mut self, n: usize) -> std::io::Result<&[u8]> {
        while self.end - self.start < n && self.fill()? {}
        Ok(&self.buf[self.start..self.end.min(self.start + n)])
    }

    /// The reader and the bytes read but not yet consumed.
    pub(crate) fn into_parts(self) -> (R, Vec<u8>) {
        let mut buf = self.buf;
        buf.truncate(self.end);
        buf.drain(..self.start);
        (self.reader, buf)
    }

    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        let mut searched = 0;
        let (a, b, next) = loop {
            if let Some(p) = memchr::memchr(b'\n', &self.buf[self.start + searched..self.end]) {
                let nl = self.start + searched + p;
                break (self.start, nl, nl + 1);
            }
            searched = self.end - self.start;
            if !self.fill()? {
                if self.start == self.end {
                    return Ok(None);
                }
                break (self.start, self.end, self.end);
            }
        };
        self.start = next;
        self.line_no += 1;
        Ok(Some((self.line_no, trim_cr(&self.buf[a..b]))))
    }
}

/// True for an empty or whitespace-only line (checks the first byte before scanning).
#[inline]
fn is_blank(line: &[u8]) -> bool {
    line.first().is_none_or(u8::is_ascii_whitespace) && line.iter().all(u8::is_ascii_whitespace)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

// ---------------------------------------------------------------------------------------------
// Interning

/// Largest number of distinct users or items: dense ids `1..=MAX_IDS` must fit a `u32`.
const MAX_IDS: usize = u32::MAX as usize - 1;

/// FxHash-style multiplicative hasher: ids are not attacker-controlled keys in a server,
/// and SipHash would cost more than the whole rest of the per-event work.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(FX_K);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// An id as found in a field: a canonical non-negative integer (no sign, no leading zero,
/// at most 19 digits) or any other UTF-8 string. The two never collide: `"007"` is a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdRef<'a> {
    Num(u64),
    Str(&'a str),
}

enum Key {
    Num(u64),
    Str(Box<str>),
}

fn id_ref(field: &[u8]) -> std::result::Result<IdRef<'_>, Bad> {
    if let Some(n) = parse_canonical_u64(field) {
        return Ok(IdRef::Num(n));
    }
    if field.is_empty() {
        return Err(Bad::record("a non-empty id", excerpt(field)));
    }
    match std::str::from_utf8(field) {
        Ok(s) => Ok(IdRef::Str(s)),
        Err(_) => Err(Bad::record("a UTF-8 id", excerpt(field))),
    }
}

fn parse_canonical_u64(f: &[u8]) -> Option<u64> {
    if f.is_empty() || f.len() > 19 || (f.len() > 1 && f[0] == b'0') {
        return None;
    }
    let mut n: u64 = 0;
    for &c in f {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + d as u64;
    }
    Some(n)
}

/// Maps ids to raw indices `0..n` in order of first appearance.
#[derive(Default)]
struct Interner {
    /// `table[n]` is `index + 1` of numeric id `n` (0 = unseen), for ids below `table.len()`.
    table: Vec<u32>,
    /// Numeric ids at or above `table.len()`.
    nums: HashMap<u64, u32, FxBuild>,
    strs: HashMap<Box<str>, u32, FxBuild>,
    keys: Vec<Key>,
}

impl Interner {
    fn next_index(&self) -> Option<u32> {
        (self.keys.len() < MAX_IDS).then_some(self.keys.len() as u32)
    }

    /// The raw index of `id`; `None` when the vocabulary is full.
    #[inline]
    fn intern(&mut self, id: IdRef<'_>) -> Option<u32> {
        match id {
            IdRef::Num(n) => {
                if (n as usize) < self.table.len() {
                    let slot = self.table[n as usize];
                    if slot != 0 {
                        return Some(slot - 1);
                    }
                    let idx = self.next_index()?;
                    self.table[n as usize] = idx + 1;
                    self.keys.push(Key::Num(n));
                    return Some(idx);
                }
                // Grow the direct table while it stays proportional to the number of ids
                // (dense ids like MovieLens'); sparse or huge ids go to the hash map.
                let limit = (1usize << 20).max(self.keys.len() * 8);
                if (n as usize) < limit {
                    let new_len = ((n as usize) + 1)
                        .next_power_of_two()
                        .min(limit)
                        .max(n as usize + 1);
                    self.table.resize(new_len, 0);
                    let table = &mut self.table;
                    self.nums.retain(|&k, &mut v| {
                        if (k as usize) < table.len() {
                            table[k as usize] = v + 1;
                            false
                        } else {
                            true
                        }
                    });
                    return self.intern(id);
                }
                if let Some(&idx) = self.nums.get(&n) {
                    return Some(idx);
                }
                let idx = self.next_index()?;
                self.nums.insert(n, idx);
                self.keys.push(Key::Num(n));
                Some(idx)
            }
            IdRef::Str(s) => {
                if let Some(&idx) = self.strs.get(s) {
                    return Some(idx);
                }
                let idx = self.next_index()?;
                self.strs.insert(s.into(), idx);
                self.keys.push(Key::Str(s.into()));
                Some(idx)
            }
        }
    }

    fn into_strings(self) -> Vec<String> {
        drop(self.strs);
        self.keys
            .into_iter()
            .map(|k| match k {
                Key::Num(n) => n.to_string(),
                Key::Str(s) => s.into_string(),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Field parsing

enum Bad {
    Record { expected: String, found: String },
    TooMany(&'static str),
}

impl Bad {
    fn record(expected: impl Into<String>, found: impl Into<String>) -> Self {
        Bad::Record {
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// Parses a timestamp: an integer, a finite float (floored: RecBole writes `978300760.0`),
/// or a date `YYYY-MM-DD` optionally followed by `[T ]HH:MM[:SS[.fff]]` and `Z` (UTC seconds).
pub fn parse_timestamp(f: &[u8]) -> Option<i64> {
    let f = f.trim_ascii();
    let (neg, digits) = match f.first() {
        Some(b'-') => (true, &f[1..]),
        Some(b'+') => (false, &f[1..]),
        _ => (false, f),
    };
    if !digits.is_empty() && digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit) {
        let mut n: i64 = 0;
        for &c in digits {
            n = n * 10 + (c - b'0') as i64;
        }
        return Some(if neg { -n } else { n });
    }
    if let Some(t) = parse_date(f) {
        return Some(t);
    }
    let s = std::str::from_utf8(f).ok()?;
    let x: f64 = s.parse().ok()?;
    if x.is_finite() && x.abs() < 9.0e18 {
        Some(x.floor() as i64)
    } else {
        None
    }
}

fn parse_date(f: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(b.iter().fold(0i64, |n, &c| n * 10 + (c - b'0') as i64))
    }
    if f.len() < 10 || f[4] != b'-' || f[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(&f[0..4])?, num(&f[5..7])?, num(&f[8..10])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    let mut rest = &f[10..];
    if rest.is_empty() {
        return Some(secs);
    }
    if rest[0] != b'T' && rest[0] != b' ' {
        return None;
    }
    rest = &rest[1..];
    rest = rest.strip_suffix(b"Z").unwrap_or(rest);
    let mut parts = rest.splitn(3, |&b| b == b':');
    let h = num(parts.next()?)?;
    let mi = num(parts.next()?)?;
    let s = match parts.next() {
        Some(sec) => {
            let whole = sec.split(|&b| b == b'.').next()?;
            num(whole)?
        }
        None => 0,
    };
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    secs += h * 3600 + mi * 60 + s;
    Some(secs)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_rating(f: &[u8]) -> Option<f32> {
    let f = f.trim_ascii();
    if f.len() == 1 && f[0].is_ascii_digit() {
        return Some((f[0] - b'0') as f32);
    }
    let x: f32 = std::str::from_utf8(f).ok()?.parse().ok()?;
    x.is_finite().then_some(x)
}

#[derive(Clone, Copy)]
enum Split {
    Byte(u8),
    DoubleColon,
    Whitespace,
}

/// Splits `line` into field ranges. Quoted fields (delimited text only) are unescaped into
/// `scratch` and the returned slice is then `scratch`, else `line`.
fn split<'a>(
    line: &'a [u8],
    how: Split,
    quoted: bool,
    out: &mut Vec<(usize, usize)>,
    scratch: &'a mut Vec<u8>,
) -> &'a [u8] {
    out.clear();
    match how {
        Split::Byte(d) => {
            if quoted && memchr::memchr(b'"', line).is_some() {
                split_quoted(line, d, out, scratch);
                return scratch;
            }
            let mut s = 0;
            for p in memchr::memchr_iter(d, line) {
                out.push((s, p));
                s = p + 1;
            }
            out.push((s, line.len()));
        }
        Split::DoubleColon => {
            let mut s = 0;
            let mut i = 0;
            while let Some(p) = memchr::memchr(b':', &line[i..]) {
                let p = i + p;
                if line.get(p + 1) == Some(&b':') {
                    out.push((s, p));
                    s = p + 2;
                    i = p + 2;
                } else {
                    i = p + 1;
                }
            }
            out.push((s, line.len()));
        }
        Split::Whitespace => {
            let mut i = 0;
            let n = line.len();
            while i < n {
                while i < n && (line[i] == b' ' || line[i] == b'\t') {
                    i += 1;
                }
                let s = i;
                while i < n && line[i] != b' ' && line[i] != b'\t' {
                    i += 1;
                }
                if i > s {
                    out.push((s, i));
                }
            }
        }
    }
    line
}

/// RFC 4180 fields on one line: `"a,b"` is one field, `""` inside quotes is a quote.
fn split_quoted(line: &[u8], d: u8, out: &mut Vec<(usize, usize)>, scratch: &mut Vec<u8>) {
    scratch.clear();
    let mut i = 0;
    let n = line.len();
    loop {
        let s = scratch.len();
        if i < n && line[i] == b'"' {
            i += 1;
            while i < n {
                if line[i] == b'"' {
                    if i + 1 < n && line[i + 1] == b'"' {
                        scratch.push(b'"');
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                } else {
                    scratch.push(line[i]);
                    i += 1;
                }
            }
            // Bytes between the closing quote and the delimiter are kept (lenient, like csv).
            while i < n && line[i] != d {
                scratch.push(line[i]);
                i += 1;
            }
        } else {
            while i < n && line[i] != d {
                scratch.push(line[i]);
                i += 1;
            }
        }
        out.push((s, scratch.len()));
        if i >= n {
            break;
        }
        i += 1; // the delimiter
        if i == n {
            out.push((scratch.len(), scratch.len()));
            break;
        }
    }
}

/// Parses the records of one format into the builder.
struct LineParser {
    split: Split,
    quoted: bool,
    /// Exact number of fields per record; 0 for sequence lines.
    n_fields: usize,
    key: usize,
    item: usize,
    time: Option<usize>,
    rating: Option<usize>,
    sessions: bool,
    header_names: Vec<String>,
    /// Single-pass scanner for all-numeric lines; anything it does not accept goes through
    /// the general split-then-parse path, which also produces the error messages.
    fast: Option<Fast>,
}

/// Layouts with a hand-written single-pass scanner.
#[derive(Clone, Copy)]
enum Fast {
    /// `user SEP item SEP rating SEP timestamp` with `::` as separator.
    MovieLens,
    /// The same with a tab.
    Tab4,
    /// `user item` with one space or tab.
    Pair,
}

/// Reads decimal digits from `i`; returns the (wrapping) value and the end index.
#[inline(always)]
fn scan_digits(line: &[u8], mut i: usize) -> (u64, usize) {
    let mut n: u64 = 0;
    while let Some(&c) = line.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        n = n.wrapping_mul(10).wrapping_add(d as u64);
        i += 1;
    }
    (n, i)
}

/// A canonical id (no leading zero, 1..=19 digits) at `line[a..b]`, as `parse_canonical_u64`.
#[inline(always)]
fn canonical(line: &[u8], a: usize, b: usize) -> bool {
    let len = b - a;
    (1..=19).contains(&len) && (len == 1 || line[a] != b'0')
}

impl Fast {
    #[inline(always)]
    fn sep(self, line: &[u8], i: usize) -> Option<usize> {
        match self {
            Fast::MovieLens => {
                (line.get(i) == Some(&b':') && line.get(i + 1) == Some(&b':')).then_some(i + 2)
            }
            Fast::Tab4 => (line.get(i) == Some(&b'\t')).then_some(i + 1),
            Fast::Pair => matches!(line.get(i), Some(b' ' | b'\t')).then_some(i + 1),
        }
    }

    /// `(user, item, rating, timestamp)` when the line is plain canonical numbers.
    #[inline(always)]
    fn scan(self, line: &[u8]) -> Option<(u64, u64, Option<f32>, Option<i64>)> {
        let (u, e) = scan_digits(line, 0);
        if !canonical(line, 0, e) {
            return None;
        }
        let a = self.sep(line, e)?;
        let (it, e) = scan_digits(line, a);
        if !canonical(line, a, e) {
            return None;
        }
        if let Fast::Pair = self {
            return (e == line.len()).then_some((u, it, None, None));
        }
        let a = self.sep(line, e)?;
        let (r, e) = scan_digits(line, a);
        if e == a || e - a > 6 {
            return None;
        }
        let a = self.sep(line, e)?;
        let (t, e) = scan_digits(line, a);
        if e != line.len() || e == a || e - a > 18 {
            return None;
        }
        Some((u, it, Some(r as f32), Some(t as i64)))
    }
}

impl LineParser {
    fn fixed(
        split: Split,
        n_fields: usize,
        key: usize,
        item: usize,
        time: Option<usize>,
        rating: Option<usize>,
    ) -> Self {
        let fast = match (split, n_fields, time, rating) {
            (Split::DoubleColon, 4, Some(3), Some(2)) if (key, item) == (0, 1) => {
                Some(Fast::MovieLens)
            }
            (Split::Byte(b'\t'), 4, Some(3), Some(2)) if (key, item) == (0, 1) => Some(Fast::Tab4),
            (Split::Whitespace, 2, None, None) if (key, item) == (0, 1) => Some(Fast::Pair),
            _ => None,
        };
        Self {
            fast,
            split,
            quoted: false,
            n_fields,
            key,
            item,
            time,
            rating,
            sessions: false,
            header_names: Vec::new(),
        }
    }

    fn sequences() -> Self {
        Self::fixed(Split::Whitespace, 0, 0, 1, None, None)
    }

    fn from_header(
        line: &[u8],
        delimiter: u8,
        recbole: bool,
        cols: &ColumnMap,
    ) -> std::result::Result<Self, (String, String)> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let base = split(line, Split::Byte(delimiter), true, &mut out, &mut scratch);
        let names: Vec<String> = out
            .iter()
            .map(|&(a, b)| {
                let raw = String::from_utf8_lossy(&base[a..b]).trim().to_owned();
                if recbole {
                    raw.split(':').next().unwrap_or("").to_owned()
                } else {
                    raw
                }
            })
            .collect();
        let found = || format!("header {:?}", names);
        let find = |c: &Column, role: &str| -> std::result::Result<usize, (String, String)> {
            match c {
                Column::Index(i) if *i < names.len() => Ok(*i),
                Column::Index(i) => Err((
                    format!("a {role} column at position {i}"),
                    format!("{} columns in {}", names.len(), found()),
                )),
                Column::Name(n) => {
                    let n = n.split(':').next().unwrap_or("");
                    names
                        .iter()
                        .position(|h| h.eq_ignore_ascii_case(n))
                        .ok_or_else(|| (format!("a {role} column named {n:?}"), found()))
                }
            }
        };
        let auto = |cands: &[&str]| {
            cands
                .iter()
                .find_map(|c| names.iter().position(|h| h.eq_ignore_ascii_case(c)))
        };
        const USER: &[&str] = &[
            "user_id",
            "userid",
            "user",
            "reviewerid",
            "visitorid",
            "uid",
        ];
        const ITEM: &[&str] = &[
            "item_id",
            "itemid",
            "item",
            "movie_id",
            "movieid",
            "product_id",
            "asin",
            "iid",
        ];
        const TIME: &[&str] = &[
            "timestamp",
            "time",
            "ts",
            "datetime",
            "unixreviewtime",
            "timeframe",
            "date",
            "eventdate",
        ];
        const RATING: &[&str] = &["rating", "score", "overall"];
        const SESSION: &[&str] = &["session_id", "sessionid", "session"];
        let opt = |c: &Option<Column>,
                   role: &str,
                   cands: &[&str],
                   auto_ok: bool|
         -> std::result::Result<Option<usize>, (String, String)> {
            match c {
                Some(c) => find(c, role).map(Some),
                None if auto_ok => Ok(auto(cands)),
                None => Ok(None),
            }
        };
        let session = opt(&cols.session, "session", SESSION, cols.user.is_none())?;
        let user = opt(&cols.user, "user", USER, true)?;
        let key = match (session, user) {
            (Some(s), _) => s,
            (None, Some(u)) => u,
            (None, None) => {
                return Err((
                    format!(
                        "a user column (one of {USER:?}) or a session column (one of {SESSION:?})"
                    ),
                    found(),
                ));
            }
        };
        let item = opt(&cols.item, "item", ITEM, true)?
            .ok_or_else(|| (format!("an item column (one of {ITEM:?})"), found()))?;
        let time = opt(&cols.timestamp, "timestamp", TIME, true)?;
        let rating = opt(&cols.rating, "rating", RATING, true)?;
        Ok(Self {
            split: Split::Byte(delimiter),
            quoted: true,
            n_fields: names.len(),
            key,
            item,
            time,
            rating,
            sessions: session.is_some(),
            header_names: names,
            fast: None,
        })
    }

    fn describe(&self) -> String {
        if self.header_names.is_empty() {
            format!("{} fields", self.n_fields)
        } else {
            format!("{} fields {:?}", self.n_fields, self.header_names)
        }
    }

    #[inline]
    fn parse(
        &self,
        line: &[u8],
        fields: &mut Vec<(usize, usize)>,
        scratch: &mut Vec<u8>,
        b: &mut Builder,
    ) -> std::result::Result<(), Bad> {
        if let Some(fast) = self.fast
            && let Some((u, i, r, t)) = fast.scan(line)
        {
            let t = match t {
                Some(t) => t,
                None => b.next_position(),
            };
            let u = b.users.intern(IdRef::Num(u)).ok_or(Bad::TooMany("users"))?;
            let i = b.items.intern(IdRef::Num(i)).ok_or(Bad::TooMany("items"))?;
            b.push(u, i, t, r);
            return Ok(());
        }
        let base = split(line, self.split, self.quoted, fields, scratch);
        let f = |i: usize| &base[fields[i].0..fields[i].1];
        if self.n_fields == 0 {
            // `user item1 item2 ...`
            if fields.len() < 2 {
                return Err(Bad::record(
                    "a user id followed by at least one item id",
                    format!("{} field(s) in {}", fields.len(), excerpt(line)),
                ));
            }
            let user = id_ref(f(0))?;
            for i in 1..fields.len() {
                id_ref(f(i))?;
            }
            let u = b.users.intern(user).ok_or(Bad::TooMany("users"))?;
            for i in 1..fields.len() {
                let it = b.items.intern(id_ref(f(i))?).ok_or(Bad::TooMany("items"))?;
                let t = b.next_position();
                b.push(u, it, t, None);
            }
            return Ok(());
        }
        if fields.len() != self.n_fields {
            return Err(Bad::record(
                self.describe(),
                format!("{} field(s) in {}", fields.len(), excerpt(line)),
            ));
        }
        let t = match self.time {
            Some(i) => parse_timestamp(f(i)).ok_or_else(|| {
                Bad::record(
                    "a timestamp (integer, float or YYYY-MM-DD date)",
                    excerpt(f(i)),
                )
            })?,
            None => b.next_position(),
        };
        let r = match self.rating {
            Some(i) => Some(
                parse_rating(f(i)).ok_or_else(|| Bad::record("a numeric rating", excerpt(f(i))))?,
            ),
            None => None,
        };
        let user = id_ref(f(self.key))?;
        let item = id_ref(f(self.item))?;
        let u = b.users.intern(user).ok_or(Bad::TooMany("users"))?;
        let it = b.items.intern(item).ok_or(Bad::TooMany("items"))?;
        b.push(u, it, t, r);
        Ok(())
    }
}

struct Builder {
    source: PathBuf,
    format: Format,
    sessions: bool,
    has_time: bool,
    users: Interner,
    items: Interner,
    u: Vec<u32>,
    i: Vec<u32>,
    t: Vec<i64>,
    r: Vec<f32>,
    position: i64,
    skipped: u64,
    first_invalid: Vec<DataError>,
}

impl Builder {
    fn new(source: &Path, format: Format) -> Self {
        Self {
            source: source.to_owned(),
            format,
            sessions: false,
            has_time: format.has_timestamps(),
            users: Interner::default(),
            items: Interner::default(),
            u: Vec::new(),
            i: Vec::new(),
            t: Vec::new(),
            r: Vec::new(),
            position: 0,
            skipped: 0,
            first_invalid: Vec::new(),
        }
    }

    fn next_position(&mut self) -> i64 {
        let p = self.position;
        self.position += 1;
        p
    }

    #[inline]
    fn push(&mut self, u: u32, i: u32, t: i64, r: Option<f32>) {
        self.u.push(u);
        self.i.push(i);
        self.t.push(t);
        if let Some(r) = r {
            self.r.push(r);
        }
    }

    fn finish(mut self) -> RawLog {
        // Give back what the size estimate over-reserved (a cheap `mremap` for big arrays).
        self.u.shrink_to_fit();
        self.i.shrink_to_fit();
        self.t.shrink_to_fit();
        self.r.shrink_to_fit();
        let ratings = (self.r.len() == self.i.len() && !self.r.is_empty()).then_some(self.r);
        RawLog {
            source: self.source,
            format: self.format,
            sessions: self.sessions,
            user_ids: self.users.into_strings(),
            item_ids: self.items.into_strings(),
            users: self.u,
            items: self.i,
            times: self.t,
            ratings,
            has_timestamps: self.has_time,
            skipped: self.skipped,
            first_invalid: self.first_invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, name: &str) -> Result<RawLog> {
        read_log_from(text.as_bytes(), Path::new(name), &ReadOptions::default())
    }

    #[test]
    fn dates_match_unix_epoch() {
        assert_eq!(parse_timestamp(b"1970-01-01"), Some(0));
        // date -u -d 2016-05-09 +%s
        assert_eq!(parse_timestamp(b"2016-05-09"), Some(1_462_752_000));
        assert_eq!(parse_timestamp(b"2000-02-29T12:30:15Z"), Some(951_827_415));
        assert_eq!(parse_timestamp(b"978300760.0"), Some(978_300_760));
        assert_eq!(parse_timestamp(b"-5"), Some(-5));
        assert_eq!(parse_timestamp(b"abc"), None);
        assert_eq!(parse_timestamp(b"2016-13-01"), None);
    }

    #[test]
    fn quoted_fields_are_unescaped() {
        let log = read(
            "user_id,item_id,timestamp\n\"a,1\",\"x \"\"q\"\"\",5\nb,y,6\n",
            "x.csv",
        )
        .unwrap();
        assert_eq!(log.user_ids, vec!["a,1", "b"]);
        assert_eq!(log.item_ids, vec!["x \"q\"", "y"]);
    }

    #[test]
    fn recbole_inter_any_column_order() {
        let text = "item_id:token\ttimestamp:float\tuser_id:token\trating:float\n\
                    10\t978300760.0\tu1\t5.0\n\
                    11\t978300700.5\tu1\t3.5\n\
                    10\t978300000\tu2\t4\n";
        let log = read(text, "ml-1m.inter").unwrap();
        assert_eq!(log.format, Format::RecBoleInter);
        assert_eq!(log.user_ids, vec!["u1", "u2"]);
        assert_eq!(log.item_ids, vec!["10", "11"]);
        assert_eq!(log.users, vec![0, 0, 1]);
        assert_eq!(log.items, vec![0, 1, 0]);
        assert_eq!(log.times, vec![978_300_760, 978_300_700, 978_300_000]);
        assert_eq!(log.ratings, Some(vec![5.0, 3.5, 4.0]));
        assert!(!log.sessions && log.has_timestamps);
    }

    #[test]
    fn explicit_columns_by_name_and_index() {
        let opts = ReadOptions {
            columns: ColumnMap {
                user: Some(Column::Name("who".into())),
                item: Some(Column::Index(2)),
                timestamp: Some(Column::Name("when".into())),
                ..ColumnMap::default()
            },
            ..ReadOptions::default()
        };
        let text = "when|who|what\n2016-05-09|a|x\n2016-05-08|a|y\n";
        let log = read_log_from(text.as_bytes(), Path::new("log.psv"), &opts).unwrap();
        assert_eq!(log.format, Format::Delimited { delimiter: b'|' });
        assert_eq!(log.item_ids, vec!["x", "y"]);
        assert_eq!(log.times, vec![1_462_752_000, 1_462_665_600]);
        assert_eq!(log.ratings, None);
    }

    #[test]
    fn crlf_bom_and_missing_final_newline() {
        let log = read(
            "\u{feff}user_id;item_id;timestamp\r\n1;2;3\r\n1;4;5",
            "x.csv",
        )
        .unwrap();
        assert_eq!(log.format, Format::Delimited { delimiter: b';' });
        assert_eq!(log.item_ids, vec!["2", "4"]);
        assert_eq!(log.times, vec![3, 5]);
    }

    #[test]
    fn sequence_lines_use_positions() {
        let log = read("7 3 1 2\n8 1\n", "s.txt").unwrap();
        assert_eq!(log.format, Format::Sequences);
        assert_eq!(log.users, vec![0, 0, 0, 1]);
        assert_eq!(log.item_ids, vec!["3", "1", "2"]);
        assert_eq!(log.times, vec![0, 1, 2, 3]);
        assert!(!log.has_timestamps);
    }

    #[test]
    fn leading_zeros_are_distinct_ids() {
        let log = read("7 1\n007 1\n7 2\n", "p.txt").unwrap();
        assert_eq!(log.format, Format::UserItemPairs);
        assert_eq!(log.user_ids, vec!["7", "007"]);
        assert_eq!(log.users, vec![0, 1, 0]);
    }

    #[test]
    fn sparse_and_dense_numeric_ids_intern_consistently() {
        let mut it = Interner::default();
        let ids = [5u64, 1 << 40, 3_000_000, 5, 2_000_000, 1 << 40, 3_000_000];
        let got: Vec<u32> = ids
            .iter()
            .map(|&n| it.intern(IdRef::Num(n)).unwrap())
            .collect();
        assert_eq!(got, vec![0, 1, 2, 0, 3, 1, 2]);
        // Growing the table moves 3_000_000 out of the map; it must keep its index.
        for n in 0..400_000u64 {
            it.intern(IdRef::Num(n + 10)).unwrap();
        }
        assert_eq!(it.intern(IdRef::Num(3_000_000)), Some(2));
        assert_eq!(it.intern(IdRef::Num(2_000_000)), Some(3));
    }

    type Parsed = std::result::Result<(Vec<String>, Vec<String>, Vec<i64>, Vec<f32>), ()>;

    fn parse_all(p: &LineParser, text: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            let mut b = Builder::new(Path::new("x"), Format::MovieLens);
            let r = p.parse(line, &mut Vec::new(), &mut Vec::new(), &mut b);
            out.push(
                r.map(|()| {
                    let log = b.finish();
                    (
                        log.user_ids,
                        log.item_ids,
                        log.times,
                        log.ratings.unwrap_or_default(),
                    )
                })
                .map_err(|_| ()),
            );
        }
        out
    }

    proptest::proptest! {
        /// The single-pass scanner accepts only what the general path reads identically.
        #[test]
        fn fast_path_agrees_with_general_path(
            fields in proptest::collection::vec(proptest::prop_oneof![
                "[0-9]{1,3}", "0[0-9]{1,2}", "[0-9]{18,21}", "-[0-9]", "[0-9]\\.[05]", " ?[a-c]?"
            ], 1..6),
            sep in proptest::prop_oneof!["::", "\t", " ", "  ", ":"],
        ) {
            let line = fields.join(&sep);
            let cases = [
                LineParser::fixed(Split::DoubleColon, 4, 0, 1, Some(3), Some(2)),
                LineParser::fixed(Split::Byte(b'\t'), 4, 0, 1, Some(3), Some(2)),
                LineParser::fixed(Split::Whitespace, 2, 0, 1, None, None),
            ];
            for fast in cases {
                let mut slow = LineParser::fixed(fast.split, fast.n_fields, 0, 1, fast.time, fast.rating);
                slow.fast = None;
                proptest::prop_assert!(fast.fast.is_some());
                proptest::prop_assert_eq!(parse_all(&fast, line.as_bytes()), parse_all(&slow, line.as_bytes()), "{:?}", line);
            }
        }
    }

    use proptest::prelude::{Just, Strategy};

    /// What a read produced, comparable across the two paths.
    type Outcome = std::result::Result<
        (
            Vec<String>,
            Vec<String>,
            Vec<u32>,
            Vec<u32>,
            Vec<i64>,
            Option<Vec<f32>>,
            u64,
            Vec<String>,
        ),
        String,
    >;

    fn outcome(r: Result<RawLog>) -> Outcome {
        r.map(|l| {
            (
                l.user_ids,
                l.item_ids,
                l.users,
                l.items,
                l.times,
                l.ratings,
                l.skipped,
                l.first_invalid.iter().map(|e| e.to_string()).collect(),
            )
        })
        .map_err(|e| e.to_string())
    }

    proptest::proptest! {
        /// Parallel block parsing gives exactly the sequential result: ids, order, positions,
        /// skipped lines and the first error with its line number.
        #[test]
        fn parallel_read_equals_sequential(
            lines in proptest::collection::vec(proptest::prop_oneof![
                8 => (1u32..9, 1u32..9, 1u32..6, 0i64..50).prop_map(|(u, i, r, t)| format!("{u}::{i}::{r}::{t}")),
                8 => (1u32..9, 1u32..9, 1u32..6, 0i64..50).prop_map(|(u, i, r, t)| format!("{u}\t{i}\t{r}\t{t}")),
                8 => (1u32..9, 1u32..9).prop_map(|(u, i)| format!("{u} {i}")),
                4 => proptest::collection::vec(1u32..9, 1..5).prop_map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")),
                1 => Just(String::new()),
                1 => Just("x y z".to_string()),
                1 => Just("\u{feff}1 2".to_string()),
            ], 0..40),
            crlf in proptest::bool::ANY,
            final_newline in proptest::bool::ANY,
            block in 1usize..64,
            skip in proptest::bool::ANY,
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut text = lines.join(nl);
            if final_newline { text.push_str(nl); }
            let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
            for format in [Format::MovieLens, Format::MovieLens100k, Format::UserItemPairs, Format::Sequences] {
                let opts = ReadOptions { format: Some(format), skip_invalid: skip, parallel: true, ..ReadOptions::default() };
                let run = |block| outcome(read_impl(text.as_bytes(), Path::new("x"), &opts, Some(text.len() as u64), block));
                let seq = one.install(|| run(PARALLEL_BLOCK));
                let par = three.install(|| run(block));
                proptest::prop_assert_eq!(&seq, &par, "{:?} block {}", format, block);
            }
        }
    }
}
