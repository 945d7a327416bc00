//! A versioned binary cache of a prepared [`Dataset`], so the next run skips parsing.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `SEQRECDS` |
//! | 4 | format version ([`VERSION`]) |
//! | 4 + k | key length and key: source path, size, mtime, read options, prepare config |
//! | 8 | payload length |
//! | 8 | payload checksum ([`checksum`]) |
//! | payload | counts, user and item original ids, CSR offsets (u64), items (u32), times (i64) |
//!
//! A cache is trusted only when magic, version, key, length and checksum all match; anything
//! else is a [`DataError::Cache`] and [`load_or_prepare`] rebuilds it. Writes go to a temporary
//! file in the same directory, which is then renamed over the target, so readers never see a
//! half-written cache.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Vocab};
use crate::error::{CacheProblem, DataError, Result};
use crate::prepare::{PrepareConfig, prepare_owned};
use crate::read::{ReadOptions, read_log};

/// Magic bytes at the start of every cache file.
pub const MAGIC: &[u8; 8] = b"SEQRECDS";
/// Cache format version; bump it whenever the layout or the meaning of a prepared dataset changes.
pub const VERSION: u32 = 1;

/// What a cache was built from. Two keys are equal only when the source file (path, size,
/// modification time), the read options and the prepare config are all the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key for preparing `source` with `opts` and `cfg`; reads the file's metadata.
    pub fn new(source: &Path, opts: &ReadOptions, cfg: &PrepareConfig) -> Result<Self> {
        let meta = std::fs::metadata(source).map_err(|e| DataError::Io {
            path: source.to_owned(),
            error: e,
        })?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let abs = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_owned());
        Ok(Self(format!(
            "src={};size={};mtime_ns={};read={:?};prep={}",
            abs.display(),
            meta.len(),
            mtime,
            opts,
            cfg.fingerprint()
        )))
    }

    /// A key from any text (tests, in-memory sources).
    pub fn from_text(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where [`load_or_prepare`] keeps the cache of `source` inside `dir`: `<dir>/<file name>.seqrec`.
pub fn cache_path(dir: &Path, source: &Path) -> PathBuf {
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "log".into());
    dir.join(format!("{name}.seqrec"))
}

/// A 64-bit checksum in the style of xxHash64: four independent lanes over 8-byte words
/// (so it runs at memory speed), then a tail and an avalanche. Not cryptographic: it detects
/// corruption, not tampering.
///
/// ```
/// use seqrec_data::cache::checksum;
/// assert_ne!(checksum(b"hello world"), checksum(b"hello worle"));
/// assert_eq!(checksum(b""), checksum(b""));
/// ```
pub fn checksum(data: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    #[inline(always)]
    fn round(acc: u64, w: u64) -> u64 {
        acc.wrapping_add(w.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    let mut lanes = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        for (l, lane) in lanes.iter_mut().enumerate() {
            *lane = round(
                *lane,
                u64::from_le_bytes(b[l * 8..l * 8 + 8].try_into().unwrap()),
            );
        }
    }
    let mut h = lanes[0].rotate_left(1)
        ^ lanes[1].rotate_left(7)
        ^ lanes[2].rotate_left(12)
        ^ lanes[3].rotate_left(18);
    for lane in lanes {
        h = (h ^ round(0, lane)).wrapping_mul(P1).wrapping_add(P3);
    }
    h = h.wrapping_add(data.len() as u64);
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        h = (h ^ round(0, u64::from_le_bytes(w.try_into().unwrap())))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P3);
    }
    for &b in words.remainder() {
        h = (h ^ (b as u64).wrapping_mul(P3))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

fn encode_payload(ds: &Dataset) -> Vec<u8> {
    let (offsets, items, times) = ds.parts();
    let strings = |v: &Vocab| v.originals().iter().map(|s| 4 + s.len()).sum::<usize>();
    let size = 24
        + strings(&ds.users)
        + strings(&ds.items)
        + 8 * offsets.len()
        + 4 * items.len()
        + 8 * times.len();
    let mut p = Vec::with_capacity(size);
    p.extend_from_slice(&(ds.n_users() as u64).to_le_bytes());
    p.extend_from_slice(&(ds.n_items() as u64).to_le_bytes());
    p.extend_from_slice(&(ds.n_events() as u64).to_le_bytes());
    for v in [&ds.users, &ds.items] {
        for s in v.originals() {
            p.extend_from_slice(&(s.len() as u32).to_le_bytes());
            p.extend_from_slice(s.as_bytes());
        }
    }
    for &o in offsets {
        p.extend_from_slice(&(o as u64).to_le_bytes());
    }
    for &i in items {
        p.extend_from_slice(&i.to_le_bytes());
    }
    for &t in times {
        p.extend_from_slice(&t.to_le_bytes());
    }
    debug_assert_eq!(p.len(), size);
    p
}

/// Writes `ds` to `path` atomically (temporary file, then rename). Concurrent writers of the same
/// cache (two runs, or two threads of one process) each write their own temporary file: the last
/// rename wins and readers see one complete file either way.
pub fn save(path: &Path, key: &CacheKey, ds: &Dataset) -> Result<()> {
    let io = |source| DataError::Io {
        path: path.to_owned(),
        error: source,
    };
    let payload = encode_payload(ds);
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let writer = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp_name.push(format!(".{}-{writer}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(key.0.len() as u32).to_le_bytes())?;
        w.write_all(key.0.as_bytes())?;
        w.write_all(&(payload.len() as u64).to_le_bytes())?;
        w.write_all(&checksum(&payload).to_le_bytes())?;
        w.write_all(&payload)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// A little-endian cursor that reports truncation instead of panicking.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], CacheProblem> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                CacheProblem::Truncated(format!(
                    "{what}: need {n} bytes at offset {}, file has {}",
                    self.pos,
                    self.data.len()
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> std::result::Result<u32, CacheProblem> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> std::result::Result<u64, CacheProblem> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn count(&mut self, what: &str, elem: usize) -> std::result::Result<usize, CacheProblem> {
        let n = self.u64(what)?;
        let left = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(elem as u64) > left {
            return Err(CacheProblem::Invalid(format!(
                "{what} = {n} does not fit the {left} payload bytes left"
            )));
        }
        Ok(n as usize)
    }
}

/// Loads a cache written by [`save`], checking magic, version, key, length and checksum.
pub fn load(path: &Path, key: &CacheKey) -> Result<Dataset> {
    let data = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        error: source,
    })?;
    decode(&data, key).map_err(|reason| DataError::Cache {
        path: path.to_owned(),
        reason,
    })
}

/// Decodes a cache image held in memory (what [`load`] does after reading the file).
pub fn decode(data: &[u8], key: &CacheKey) -> std::result::Result<Dataset, CacheProblem> {
    let mut c = Cursor { data, pos: 0 };
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err(CacheProblem::BadMagic);
    }
    c.pos = MAGIC.len();
    let version = c.u32("version")?;
    if version != VERSION {
        return Err(CacheProblem::Version {
            expected: VERSION,
            found: version,
        });
    }
    let klen = c.u32("key length")? as usize;
    let stored_key = c.take(klen, "key")?;
    if stored_key != key.0.as_bytes() {
        return Err(CacheProblem::Stale {
            expected: key.0.clone(),
            found: String::from_utf8_lossy(stored_key).into_owned(),
        });
    }
    let plen = c.u64("payload length")?;
    let stored = c.u64("checksum")?;
    let left = (data.len() - c.pos) as u64;
    if plen != left {
        return Err(CacheProblem::Truncated(format!(
            "payload of {plen} bytes announced, {left} present"
        )));
    }
    let payload = &data[c.pos..];
    let computed = checksum(payload);
    if computed != stored {
        return Err(CacheProblem::Checksum { stored, computed });
    }
    let mut p = Cursor {
        data: payload,
        pos: 0,
    };
    let n_users = p.count("user count", 4)?;
    let n_items = p.count("item count", 4)?;
    let n_events = p.count("event count", 12)?;
    let mut strings = |n: usize, what: &str| -> std::result::Result<Vec<String>, CacheProblem> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let len = p.u32(what)? as usize;
            let bytes = p.take(len, what)?;
            let s = std::str::from_utf8(bytes)
                .map_err(|_| CacheProblem::Invalid(format!("{what} is not UTF-8")))?;
            v.push(s.to_owned());
        }
        Ok(v)
    };
    let users = strings(n_users, "user id")?;
    let items = strings(n_items, "item id")?;
    let offsets: Vec<usize> = p
        .take(8 * (n_users + 2), "offsets")?
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    let item_seq: Vec<u32> = p
        .take(4 * n_events, "items")?
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let time_seq: Vec<i64> = p
        .take(8 * n_events, "times")?
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    if p.pos != payload.len() {
        return Err(CacheProblem::Invalid(format!(
            "{} trailing payload bytes",
            payload.len() - p.pos
        )));
    }
    let users = Vocab::from_originals(users)
        .map_err(|d| CacheProblem::Invalid(format!("duplicate user id {d:?}")))?;
    let items = Vocab::from_originals(items)
        .map_err(|d| CacheProblem::Invalid(format!("duplicate item id {d:?}")))?;
    Dataset::from_parts(users, items, offsets, item_seq, time_seq).map_err(CacheProblem::Invalid)
}

/// Whether [`load_or_prepare`] used the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// The cache was valid and loaded.
    Hit,
    /// The log was parsed and prepared, and the cache (re)written; `reason` says why the old
    /// cache was not used (`None`: there was none).
    Built {
        /// Why an existing cache was rejected.
        reason: Option<String>,
    },
}

/// Loads the cache at `cache` if it is valid for `source`, `opts` and `cfg`; otherwise reads and
/// prepares `source` and writes the cache.
///
/// ```no_run
/// use seqrec_data::{PrepareConfig, ReadOptions, cache};
/// let src = std::path::Path::new("ml-1m-ratings.dat");
/// let path = cache::cache_path("cache".as_ref(), src);
/// let (ds, status) = cache::load_or_prepare(src, &ReadOptions::default(), &PrepareConfig::sasrec(), &path)?;
/// println!("{} users ({status:?})", ds.n_users());
/// # Ok::<(), seqrec_data::DataError>(())
/// ```
pub fn load_or_prepare(
    source: &Path,
    opts: &ReadOptions,
    cfg: &PrepareConfig,
    cache: &Path,
) -> Result<(Dataset, CacheStatus)> {
    let key = CacheKey::new(source, opts, cfg)?;
    let reason = match load(cache, &key) {
        Ok(ds) => return Ok((ds, CacheStatus::Hit)),
        Err(DataError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(e.to_string()),
    };
    let log = read_log(source, opts)?;
    let ds = prepare_owned(log, cfg)?;
    if let Some(dir) = cache.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| DataError::Io {
            path: dir.to_owned(),
            error: e,
        })?;
    }
    save(cache, &key, &ds)?;
    Ok((ds, CacheStatus::Built { reason }))
}
