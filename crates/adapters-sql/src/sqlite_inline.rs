//! The chat lookup of a SQLite file, read on the calling thread.
//!
//! sqlx runs every SQLite connection on a thread of its own, so a query through its pool costs
//! two round trips to that thread (the query, and a ping when the connection goes back), each
//! two thread wake-ups. `get_running_by_chat` is the whole store work of a reuse, the service's
//! hottest request, and those wake-ups cost several times the indexed read itself
//! (docs/benchmarks.md). So that one query is read here with rusqlite, on the thread that asks.
//!
//! It never waits and never decides an error: the connections are read-only and never wait for
//! a lock (a WAL reader almost never needs one), and whenever this reader cannot answer at once
//! (every connection in use, the file cannot be opened, SQLite is busy, any error) it answers
//! `None` and the caller asks the pool, which waits with the busy timeout and reports the
//! store's state as every other query does. A connection that failed is closed and opened
//! again on a later call.
//!
//! Each read is one statement in autocommit mode, so it sees every write committed before it
//! started, from this process or another (the one-shot commands, an operator's shell).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::rows::SESSION_COLUMNS;

/// Connections kept at most: one per thread that reads at once (the runtime's worker threads),
/// with room to spare. They open as they are needed.
const CONNECTIONS: usize = 4;
/// Each connection's page cache, in KiB: the lookup touches a few index and table pages, and
/// the operating system caches the file anyway.
const CACHE_KIB: i64 = 512;

/// A `sandbox_sessions` row as the file stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionRow {
    pub(crate) session_id: String,
    pub(crate) chat_id: String,
    pub(crate) container_id: String,
    pub(crate) status: String,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) engine: String,
}

pub(crate) struct InlineReader {
    path: PathBuf,
    sql: String,
    connections: Vec<Mutex<Option<Connection>>>,
    /// Set when the store closes: from then on the pool answers (that it is closed).
    closed: AtomicBool,
}

impl InlineReader {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            sql: format!(
                "SELECT {SESSION_COLUMNS} FROM sandbox_sessions \
                 WHERE chat_id = ?1 AND status = 'running'"
            ),
            connections: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            closed: AtomicBool::new(false),
        }
    }

    /// Closes the connections; every later call answers `None`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for slot in &self.connections {
            // A connection in use is closed by the next call that finds the reader closed.
            if let Ok(mut slot) = slot.try_lock() {
                *slot = None;
            }
        }
    }

    /// The running session of `chat_id` (lower-case hyphenated), or `None` when this reader
    /// cannot answer at once and the pool must be asked.
    pub(crate) fn running_by_chat(&self, chat_id: &str) -> Option<Option<SessionRow>> {
        let mut slot = self.connections.iter().find_map(|slot| slot.try_lock().ok())?;
        if self.closed.load(Ordering::SeqCst) {
            *slot = None;
            return None;
        }
        if slot.is_none() {
            *slot = Some(self.open().ok()?);
        }
        let connection = slot.as_ref()?;
        match self.query(connection, chat_id) {
            Ok(found) => Some(found),
            Err(error) => {
                tracing::debug!(%error, "the inline SQLite read failed; asking the pool");
                *slot = None;
                None
            }
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags)?;
        // Busy means: let the pool wait for it, on a thread of its own.
        connection.busy_timeout(std::time::Duration::ZERO)?;
        connection.pragma_update(None, "cache_size", -CACHE_KIB)?;
        Ok(connection)
    }

    fn query(
        &self,
        connection: &Connection,
        chat_id: &str,
    ) -> rusqlite::Result<Option<SessionRow>> {
        let mut statement = connection.prepare_cached(&self.sql)?;
        statement
            .query_row([chat_id], |row| {
                Ok(SessionRow {
                    session_id: row.get(0)?,
                    chat_id: row.get(1)?,
                    container_id: row.get(2)?,
                    status: row.get(3)?,
                    created_at: row.get(4)?,
                    expires_at: row.get(5)?,
                    engine: row.get(6)?,
                })
            })
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = "00000000-0000-4000-8000-000000000001";

    /// A database file with the sessions table, written through a connection of its own.
    fn database(dir: &Path) -> (PathBuf, Connection) {
        let path = dir.join("store.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE sandbox_sessions (session_id TEXT PRIMARY KEY, chat_id TEXT NOT NULL,
                   container_id TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,
                   expires_at INTEGER NOT NULL, engine TEXT NOT NULL DEFAULT 'default');",
            )
            .unwrap();
        (path, writer)
    }

    fn insert(writer: &Connection, session: &str, status: &str, expires_at: i64) {
        writer
            .execute(
                "INSERT INTO sandbox_sessions \
                 (session_id, chat_id, container_id, status, created_at, expires_at, engine) \
                 VALUES (?1, ?2, 'c-1', ?3, 10, ?4, 'default')",
                rusqlite::params![session, CHAT, status, expires_at],
            )
            .unwrap();
    }

    #[test]
    fn it_reads_what_another_connection_committed_and_only_running_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = database(dir.path());
        let reader = InlineReader::new(&path);
        assert_eq!(reader.running_by_chat(CHAT), Some(None));

        insert(&writer, "s-stopped", "stopped", 20);
        assert_eq!(reader.running_by_chat(CHAT), Some(None), "a stopped row is not running");
        insert(&writer, "s-1", "running", 20);
        let found = reader.running_by_chat(CHAT).unwrap().unwrap();
        assert_eq!(found.session_id, "s-1");
        assert_eq!(
            (found.container_id.as_str(), found.created_at, found.expires_at),
            ("c-1", 10, 20)
        );

        // Every read sees the latest commit: no snapshot is kept between calls.
        writer
            .execute("UPDATE sandbox_sessions SET expires_at = 30 WHERE session_id = 's-1'", [])
            .unwrap();
        assert_eq!(reader.running_by_chat(CHAT).unwrap().unwrap().expires_at, 30);
        writer.execute("DELETE FROM sandbox_sessions WHERE session_id = 's-1'", []).unwrap();
        assert_eq!(reader.running_by_chat(CHAT), Some(None));
    }

    #[test]
    fn it_leaves_the_answer_to_the_pool_when_it_cannot_read_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let reader = InlineReader::new(&path);
        assert_eq!(reader.running_by_chat(CHAT), None, "no file yet");

        let (_, writer) = database(dir.path());
        insert(&writer, "s-1", "running", 20);
        assert_eq!(reader.running_by_chat(CHAT).unwrap().unwrap().session_id, "s-1");

        writer.execute_batch("DROP TABLE sandbox_sessions").unwrap();
        assert_eq!(reader.running_by_chat(CHAT), None, "no table");
        let (_, writer) = database(dir.path());
        insert(&writer, "s-2", "running", 20);
        assert_eq!(reader.running_by_chat(CHAT).unwrap().unwrap().session_id, "s-2");
    }

    #[test]
    fn it_never_waits_for_a_connection_and_a_closed_reader_answers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = database(dir.path());
        insert(&writer, "s-1", "running", 20);
        let reader = InlineReader::new(&path);
        let held: Vec<_> = reader.connections.iter().map(|slot| slot.lock().unwrap()).collect();
        assert_eq!(reader.running_by_chat(CHAT), None, "every connection in use");
        drop(held);
        assert!(reader.running_by_chat(CHAT).unwrap().is_some());

        reader.close();
        assert_eq!(reader.running_by_chat(CHAT), None);
        assert!(reader.connections.iter().all(|slot| slot.lock().unwrap().is_none()));
    }
}
