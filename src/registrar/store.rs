//! Location store: where registrar bindings persist.
//!
//! [`LocationStore`] is the seam for backends (embedded SQLite now, Redis for
//! a cluster later); the registrar keeps its working set in memory and only
//! writes through this trait, so a backend never sits on the request path's
//! read side. Backends must not interpret bindings beyond storing them.

use super::Binding;
use crate::sip::Transport;
use rusqlite::{Connection, params};
use std::path::Path;

/// A change to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Insert or replace the binding with this (aor, key).
    Upsert(Binding),
    /// Remove one binding.
    Remove {
        /// Address of record.
        aor: String,
        /// Binding key within the AOR.
        key: String,
    },
    /// Remove every binding of an address of record.
    RemoveAll {
        /// Address of record.
        aor: String,
    },
}

/// A storage failure (logged; the registrar keeps serving from memory).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be prepared.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Persistence for bindings.
pub trait LocationStore: Send {
    /// Every binding still valid at `now` (unix seconds); expired ones are purged.
    fn load(&mut self, now: u64) -> Result<Vec<Binding>, StoreError>;
    /// Applies changes atomically.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Deletes bindings expired at `now`; returns how many.
    fn purge_expired(&mut self, now: u64) -> Result<usize, StoreError>;
}

/// Keeps nothing across restarts (tests, or `data_dir = ""` setups).
#[derive(Debug, Default)]
pub struct MemoryStore {
    rows: Vec<Binding>,
}

impl LocationStore for MemoryStore {
    fn load(&mut self, now: u64) -> Result<Vec<Binding>, StoreError> {
        self.purge_expired(now)?;
        Ok(self.rows.clone())
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        for op in ops {
            match op {
                StoreOp::Upsert(b) => {
                    self.rows.retain(|r| !(r.aor == b.aor && r.key == b.key));
                    self.rows.push(b.clone());
                }
                StoreOp::Remove { aor, key } => {
                    self.rows.retain(|r| !(&r.aor == aor && &r.key == key))
                }
                StoreOp::RemoveAll { aor } => self.rows.retain(|r| &r.aor != aor),
            }
        }
        Ok(())
    }

    fn purge_expired(&mut self, now: u64) -> Result<usize, StoreError> {
        let before = self.rows.len();
        self.rows.retain(|r| r.expires_at > now);
        Ok(before - self.rows.len())
    }
}

/// Bindings in an embedded SQLite database (`<data_dir>/causeway.db`, WAL mode).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (and creates or migrates) the database file.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = crate::db::open(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS bindings (
                aor TEXT NOT NULL,
                key TEXT NOT NULL,
                contact TEXT NOT NULL,
                expires_at INTEGER NOT NULL,
                q INTEGER NOT NULL,
                call_id TEXT NOT NULL,
                cseq INTEGER NOT NULL,
                transport TEXT NOT NULL,
                source TEXT NOT NULL,
                local TEXT NOT NULL,
                user_agent TEXT NOT NULL,
                registered_at INTEGER NOT NULL,
                PRIMARY KEY (aor, key)
            );
            CREATE INDEX IF NOT EXISTS bindings_expiry ON bindings (expires_at);",
        )?;
        Ok(SqliteStore { conn })
    }
}

impl LocationStore for SqliteStore {
    fn load(&mut self, now: u64) -> Result<Vec<Binding>, StoreError> {
        self.purge_expired(now)?;
        let mut stmt = self.conn.prepare(
            "SELECT aor, key, contact, expires_at, q, call_id, cseq, transport, source, local,
                    user_agent, registered_at FROM bindings",
        )?;
        let rows = stmt.query_map([], |r| {
            let transport: String = r.get(7)?;
            let source: String = r.get(8)?;
            let local: String = r.get(9)?;
            Ok((
                Binding {
                    aor: r.get(0)?,
                    key: r.get(1)?,
                    contact: r.get(2)?,
                    expires_at: r.get::<_, i64>(3)? as u64,
                    q: r.get::<_, i64>(4)? as u16,
                    call_id: r.get(5)?,
                    cseq: r.get::<_, i64>(6)? as u32,
                    transport: Transport::Udp,
                    source: "0.0.0.0:0"
                        .parse()
                        .map_err(|_| rusqlite::Error::InvalidQuery)?,
                    local: "0.0.0.0:0"
                        .parse()
                        .map_err(|_| rusqlite::Error::InvalidQuery)?,
                    conn: None,
                    user_agent: r.get(10)?,
                    registered_at: r.get::<_, i64>(11)? as u64,
                },
                transport,
                source,
                local,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut b, transport, source, local) = row?;
            // A row we cannot interpret is skipped rather than failing the start.
            let (Some(t), Ok(s), Ok(l)) =
                (Transport::parse(&transport), source.parse(), local.parse())
            else {
                tracing::warn!(aor = %b.aor, "skipping unreadable binding row");
                continue;
            };
            (b.transport, b.source, b.local) = (t, s, l);
            out.push(b);
        }
        Ok(out)
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT OR REPLACE INTO bindings (aor, key, contact, expires_at, q, call_id, cseq,
                   transport, source, local, user_agent, registered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            let mut remove =
                tx.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND key = ?2")?;
            let mut remove_all = tx.prepare_cached("DELETE FROM bindings WHERE aor = ?1")?;
            for op in ops {
                match op {
                    StoreOp::Upsert(b) => {
                        upsert.execute(params![
                            b.aor,
                            b.key,
                            b.contact,
                            b.expires_at as i64,
                            b.q as i64,
                            b.call_id,
                            b.cseq as i64,
                            b.transport.as_str(),
                            b.source.to_string(),
                            b.local.to_string(),
                            b.user_agent,
                            b.registered_at as i64,
                        ])?;
                    }
                    StoreOp::Remove { aor, key } => {
                        remove.execute(params![aor, key])?;
                    }
                    StoreOp::RemoveAll { aor } => {
                        remove_all.execute(params![aor])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn purge_expired(&mut self, now: u64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM bindings WHERE expires_at <= ?1",
            params![now as i64],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(aor: &str, key: &str, expires_at: u64) -> Binding {
        Binding {
            aor: aor.into(),
            key: key.into(),
            contact: format!("sip:{key}"),
            expires_at,
            q: 1000,
            call_id: "c".into(),
            cseq: 1,
            transport: Transport::Tcp,
            source: "127.0.0.1:5062".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: Some(4),
            user_agent: "ua".into(),
            registered_at: 1,
        }
    }

    #[test]
    fn sqlite_round_trips_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db/causeway.db");
        {
            let mut s = SqliteStore::open(&path).unwrap();
            s.apply(&[
                StoreOp::Upsert(binding("sip:a@x", "k1", 100)),
                StoreOp::Upsert(binding("sip:a@x", "k2", 200)),
                StoreOp::Upsert(binding("sip:b@x", "k1", 200)),
                StoreOp::Remove {
                    aor: "sip:b@x".into(),
                    key: "k1".into(),
                },
            ])
            .unwrap();
        }
        let mut s = SqliteStore::open(&path).unwrap();
        let rows = s.load(150).unwrap();
        assert_eq!(rows.len(), 1, "k1 expired at 100, b removed");
        let mut want = binding("sip:a@x", "k2", 200);
        want.conn = None; // connections do not survive a restart
        assert_eq!(rows[0], want);
        s.apply(&[StoreOp::RemoveAll {
            aor: "sip:a@x".into(),
        }])
        .unwrap();
        assert!(s.load(150).unwrap().is_empty());
    }
}
