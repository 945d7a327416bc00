//! [`Store`]: user histories in an embedded SQLite database (WAL journal).
//!
//! One table, `events(user, seq, item, ts)`, primary key `(user, seq)`: `seq` numbers a user's events
//! from 1 in arrival order. An append is one statement in autocommit mode, so when
//! [`Store::append`] returns, the event is committed to the write-ahead log:
//! - with [`SyncMode::Normal`] (the default) the commit has been written to the operating system,
//!   which keeps it if the server process is killed (SIGKILL, crash), but not on power loss;
//! - with [`SyncMode::Full`] the log is also `fsync`ed before the call returns, which survives power
//!   loss too, at the cost of one disk flush per event.
//!
//! Items are stored as original ids (strings), so histories survive a reload onto a model with a
//! different catalogue.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::ServeError;

/// How hard a commit waits for the disk (SQLite's `synchronous` pragma, in WAL mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `synchronous = NORMAL`: durable across process crashes, not power loss.
    #[default]
    Normal,
    /// `synchronous = FULL`: the log is flushed to disk at every commit.
    Full,
}

impl SyncMode {
    /// Parses `normal` or `full`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "normal" => Some(SyncMode::Normal),
            "full" => Some(SyncMode::Full),
            _ => None,
        }
    }
}

/// The history database: one writer connection and a few reader connections (WAL lets readers run
/// while a write commits).
#[derive(Debug)]
pub struct Store {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
}

fn db_err(e: rusqlite::Error) -> ServeError {
    ServeError::Store(e.to_string())
}

fn open_conn(path: &Path, sync: SyncMode) -> Result<Connection, ServeError> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(db_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ServeError::Store(format!(
            "{}: journal_mode is {mode}, WAL was asked for",
            path.display()
        )));
    }
    let sync = match sync {
        SyncMode::Normal => "NORMAL",
        SyncMode::Full => "FULL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))
        .map_err(db_err)?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// # Errors
    /// [`ServeError::Store`] if the file cannot be opened or is not a seqrec history database.
    pub fn open(path: &Path, sync: SyncMode) -> Result<Self, ServeError> {
        let writer = open_conn(path, sync)?;
        writer
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS events (
                    user TEXT NOT NULL,
                    seq  INTEGER NOT NULL,
                    item TEXT NOT NULL,
                    ts   INTEGER NOT NULL,
                    PRIMARY KEY (user, seq)
                 ) WITHOUT ROWID;",
            )
            .map_err(db_err)?;
        let readers = (0..4)
            .map(|_| open_conn(path, sync).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers,
        })
    }

    /// Appends one event and returns its sequence number (the user's event count after it).
    /// The event is committed when this returns (see the module docs for what survives what).
    ///
    /// # Errors
    /// [`ServeError::Store`] if the write fails.
    pub fn append(&self, user: &str, item: &str, ts: i64) -> Result<u64, ServeError> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let seq: i64 = conn
            .prepare_cached(
                "INSERT INTO events (user, seq, item, ts)
                 SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3 FROM events WHERE user = ?1
                 RETURNING seq",
            )
            .and_then(|mut s| s.query_row(params![user, item, ts], |r| r.get(0)))
            .map_err(db_err)?;
        Ok(seq as u64)
    }

    fn with_reader<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, rusqlite::Error>,
    ) -> Result<R, ServeError> {
        // Take a free reader if there is one, else wait for the first.
        for r in &self.readers {
            if let Ok(conn) = r.try_lock() {
                return f(&conn).map_err(db_err);
            }
        }
        let conn = self.readers[0].lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(db_err)
    }

    /// The user's items, oldest first (empty for an unknown user).
    ///
    /// # Errors
    /// [`ServeError::Store`] if the read fails.
    pub fn history(&self, user: &str) -> Result<Vec<String>, ServeError> {
        self.with_reader(|c| {
            let mut s = c.prepare_cached("SELECT item FROM events WHERE user = ?1 ORDER BY seq")?;
            let rows = s.query_map(params![user], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
    }

    /// The user's number of events.
    ///
    /// # Errors
    /// [`ServeError::Store`] if the read fails.
    pub fn count(&self, user: &str) -> Result<u64, ServeError> {
        self.with_reader(|c| {
            c.prepare_cached("SELECT MAX(seq) FROM events WHERE user = ?1")?
                .query_row(params![user], |r| r.get::<_, Option<i64>>(0))
                .optional()
                .map(|v| v.flatten().unwrap_or(0) as u64)
        })
    }

    /// Closes every connection (the last one checkpoints the WAL into the database file).
    ///
    /// # Errors
    /// [`ServeError::Store`] if a connection fails to close.
    pub fn close(self) -> Result<(), ServeError> {
        for r in self.readers {
            let c = r.into_inner().unwrap_or_else(|p| p.into_inner());
            c.close().map_err(|(_, e)| db_err(e))?;
        }
        let w = self.writer.into_inner().unwrap_or_else(|p| p.into_inner());
        w.close().map_err(|(_, e)| db_err(e))
    }
}
