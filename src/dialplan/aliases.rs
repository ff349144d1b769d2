//! Ephemeral aliases: short-lived names that route to a target until they
//! expire (a website creates `meet-4f2a` for a visitor and shares a link).
//!
//! Owns the in-memory [`AliasTable`] routing reads (validity is checked
//! against the call's time, so an expired alias stops matching at once) and
//! [`AliasStore`], the `aliases` table in the embedded database that makes
//! them survive a restart. The store is the only disk I/O here; it must not be
//! called from the signalling path.

use super::{LoadContext, Target};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::path::Path;

/// One ephemeral alias (the admin API shows it without the PIN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralAlias {
    /// The alias callers dial, matched exactly.
    pub alias: String,
    /// Where calls to it go.
    pub target: Target,
    /// Unix seconds before which it does not match yet.
    pub valid_from: Option<i64>,
    /// Unix seconds from which it no longer matches.
    pub valid_until: i64,
    /// PIN callers must present (browsers via the client API).
    pub pin: Option<String>,
    /// Unix seconds of creation.
    pub created_at: i64,
}

impl EphemeralAlias {
    /// Whether it routes at `at` (unix seconds).
    pub fn valid_at(&self, at: i64) -> bool {
        self.valid_from.is_none_or(|f| at >= f) && at < self.valid_until
    }

    /// Checks what an API caller sent: a usable alias, a concrete target, a
    /// window that ends in the future.
    pub fn validate(&self, ctx: &LoadContext, now: i64) -> Result<(), String> {
        let a = &self.alias;
        if a.is_empty()
            || a.len() > 128
            || a.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err("alias must be 1-128 characters without spaces or '/'".into());
        }
        if matches!(self.target, Target::Policy { .. }) {
            return Err("an ephemeral alias needs a concrete target, not policy".into());
        }
        super::load::check_target(&self.target, ctx, false)?;
        if self.valid_until <= now {
            return Err("valid_until is in the past".into());
        }
        if self.valid_from.is_some_and(|f| f >= self.valid_until) {
            return Err("valid_from must be before valid_until".into());
        }
        if self
            .pin
            .as_ref()
            .is_some_and(|p| p.is_empty() || p.len() > 32 || !p.chars().all(|c| c.is_ascii_digit()))
        {
            return Err("pin must be 1-32 digits".into());
        }
        Ok(())
    }
}

/// The aliases routing consults, keyed by alias.
#[derive(Debug, Clone, Default)]
pub struct AliasTable {
    map: HashMap<String, EphemeralAlias>,
}

impl AliasTable {
    /// The alias if it exists and is valid at `at`.
    pub fn lookup(&self, alias: &str, at: i64) -> Option<&EphemeralAlias> {
        self.map.get(alias).filter(|a| a.valid_at(at))
    }

    /// The alias whether valid or not.
    pub fn get(&self, alias: &str) -> Option<&EphemeralAlias> {
        self.map.get(alias)
    }

    /// Adds or replaces.
    pub fn insert(&mut self, a: EphemeralAlias) {
        self.map.insert(a.alias.clone(), a);
    }

    /// Removes and returns it.
    pub fn remove(&mut self, alias: &str) -> Option<EphemeralAlias> {
        self.map.remove(alias)
    }

    /// Drops every alias expired at `now`.
    pub fn purge(&mut self, now: i64) {
        self.map.retain(|_, a| a.valid_until > now);
    }

    /// Aliases not yet expired at `now`, sorted by alias.
    pub fn list(&self, now: i64) -> Vec<EphemeralAlias> {
        let mut v: Vec<_> = self
            .map
            .values()
            .filter(|a| a.valid_until > now)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.alias.cmp(&b.alias));
        v
    }
}

/// The `aliases` table in the embedded database.
#[derive(Debug)]
pub struct AliasStore {
    conn: Connection,
}

impl AliasStore {
    /// Opens the database (shared with the location store; WAL allows both).
    pub fn open(path: &Path) -> rusqlite::Result<AliasStore> {
        let conn = crate::db::open(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS aliases (
                alias TEXT PRIMARY KEY,
                target TEXT NOT NULL,
                valid_from INTEGER,
                valid_until INTEGER NOT NULL,
                pin TEXT,
                created_at INTEGER NOT NULL
            );",
        )?;
        Ok(AliasStore { conn })
    }

    /// Aliases still valid (or not yet valid) at `now`; expired rows are deleted.
    pub fn load(&mut self, now: i64) -> rusqlite::Result<Vec<EphemeralAlias>> {
        self.purge(now)?;
        let mut stmt = self.conn.prepare(
            "SELECT alias, target, valid_from, valid_until, pin, created_at FROM aliases",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (alias, target, valid_from, valid_until, pin, created_at) = row?;
            match serde_json::from_str::<Target>(&target) {
                Ok(target) => out.push(EphemeralAlias {
                    alias,
                    target,
                    valid_from,
                    valid_until,
                    pin,
                    created_at,
                }),
                Err(e) => {
                    tracing::warn!(%alias, error = %e, "skipping stored alias with a bad target")
                }
            }
        }
        Ok(out)
    }

    /// Inserts or replaces.
    pub fn put(&mut self, a: &EphemeralAlias) -> rusqlite::Result<()> {
        let target = serde_json::to_string(&a.target).unwrap_or_default();
        self.conn.execute(
            "INSERT OR REPLACE INTO aliases (alias, target, valid_from, valid_until, pin, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![a.alias, target, a.valid_from, a.valid_until, a.pin, a.created_at],
        )?;
        Ok(())
    }

    /// Deletes; whether a row went.
    pub fn delete(&mut self, alias: &str) -> rusqlite::Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM aliases WHERE alias = ?1", params![alias])?
            > 0)
    }

    /// Deletes rows expired at `now`.
    pub fn purge(&mut self, now: i64) -> rusqlite::Result<usize> {
        self.conn
            .execute("DELETE FROM aliases WHERE valid_until <= ?1", params![now])
    }
}
