//! Finished call records in the embedded database (`cdrs` table of
//! `causeway.db`): one row per call, the record as JSON beside the columns
//! queries use. Blocking: callers run it off the async runtime (the
//! runtime's record writer thread keeps them in batches, one transaction
//! each).

use super::CallRecord;
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::Mutex;

/// The most records one query returns.
pub const MAX_ROWS: usize = 1000;

/// The `cdrs` table.
#[derive(Debug)]
pub struct CdrStore {
    conn: Mutex<Connection>,
}

impl CdrStore {
    /// Opens (and creates) the table in the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<CdrStore> {
        let conn = crate::db::open(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS cdrs (
                id TEXT PRIMARY KEY,
                started_at INTEGER NOT NULL,
                ended_at INTEGER NOT NULL,
                record TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS cdrs_ended ON cdrs (ended_at);",
        )?;
        Ok(CdrStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps finished records, all or none (one transaction).
    pub fn put(&self, records: &[CallRecord]) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO cdrs (id, started_at, ended_at, record) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in records {
                let json = serde_json::to_string(r).unwrap_or_default();
                insert.execute(params![
                    r.id,
                    i64::try_from(r.started_at).unwrap_or(i64::MAX),
                    i64::try_from(r.ended_at.unwrap_or(r.started_at)).unwrap_or(i64::MAX),
                    json
                ])?;
            }
        }
        tx.commit()
    }

    /// Records of calls that ended at or after `since_ms` (unix ms), oldest
    /// first, at most [`MAX_ROWS`].
    pub fn since(&self, since_ms: u64) -> rusqlite::Result<Vec<CallRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT record FROM cdrs WHERE ended_at >= ?1 ORDER BY ended_at, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![i64::try_from(since_ms).unwrap_or(i64::MAX), MAX_ROWS as i64],
            |row| row.get::<_, String>(0),
        )?;
        let mut out = Vec::new();
        for json in rows {
            // A row this version cannot read is skipped, not fatal.
            if let Ok(r) = serde_json::from_str(&json?) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::CallParties;

    fn record(id: &str, started: u64, ended: u64) -> CallRecord {
        CallRecord {
            id: id.into(),
            parties: CallParties {
                from: "carol".into(),
                to: "alice".into(),
                rule: "local".into(),
                caller_leg: "sip".into(),
            },
            state: "ended".into(),
            started_at: started,
            answered_at: None,
            ended_at: Some(ended),
            media: None,
            ended_by: Some("caller".into()),
            status: Some(487),
            reason: Some("cancelled".into()),
            totals: None,
            legs: Vec::new(),
        }
    }

    #[test]
    fn records_come_back_by_end_time_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("causeway.db");
        let s = CdrStore::open(&path).unwrap();
        s.put(&[record("b", 10, 3_000)]).unwrap();
        s.put(&[record("a", 5, 1_000), record("c", 7, 2_000)])
            .unwrap();
        drop(s);
        let s = CdrStore::open(&path).unwrap();
        let all = s.since(0).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "c", "b"]
        );
        assert_eq!(all[0], record("a", 5, 1_000));
        assert_eq!(s.since(2_500).unwrap().len(), 1);
        assert!(s.since(5_000).unwrap().is_empty());
    }
}
