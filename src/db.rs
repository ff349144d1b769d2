//! The embedded database file (`<data_dir>/causeway.db`): each store (the
//! location store, aliases, call records) keeps its own connection to it,
//! and every connection is opened here, with the same settings. Owns how a
//! connection is opened; each store owns its own tables.

use rusqlite::Connection;
use std::path::Path;

/// How long a connection waits for another's write to finish before it
/// gives up with "database is locked": the stores write from different
/// threads.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens a connection to the database at `path` (created if missing; its
/// directory must exist) in WAL mode, so readers do not wait for writers,
/// and with `synchronous=NORMAL`: a commit is synced at the next
/// checkpoint, not at once, so a power cut may lose the last writes but
/// never corrupts the file.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}
