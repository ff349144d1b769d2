//! The disk side of routing: loading and hot-reloading the dialplan files,
//! and persisting ephemeral aliases.
//!
//! Owns [`PlanSource`] (the configured plan path, the last good plan's
//! fingerprint and the last reload error) and [`AliasService`] (alias writes
//! go to SQLite first, then to the in-memory table routing reads). The
//! watcher polls file metadata once a second rather than using inotify: it
//! sees edits made by renaming a new file into place (what most editors and
//! config management tools do), works on every filesystem, and costs a few
//! `stat` calls. Everything here blocks; callers run it off the async
//! threads. It must not make routing decisions.

use crate::dialplan::aliases::AliasStore;
use crate::dialplan::{Dialplan, DialplanError, EphemeralAlias, LoadContext, Routing, load};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What identifies a version of the plan files on disk.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    let files = load::plan_files(path).unwrap_or_default();
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (f, modified, len)
        })
        .collect()
}

/// The state of the loaded plan, as the admin API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanStatus {
    /// The configured path, or none for the embedded default.
    pub path: Option<String>,
    /// Files in the current plan.
    pub files: Vec<String>,
    /// Rules in the current plan.
    pub rules: usize,
    /// Unix seconds of the last successful load.
    pub loaded_at: u64,
    /// Errors of the last rejected reload (the old plan stayed).
    pub last_errors: Vec<DialplanError>,
}

/// Where the plan comes from, and its reload state.
#[derive(Debug)]
pub struct PlanSource {
    path: Option<PathBuf>,
    ctx: LoadContext,
    routing: Arc<Routing>,
    state: Mutex<(Fingerprint, PlanStatus)>,
}

impl PlanSource {
    /// Loads the plan for the first time (the embedded default without a path).
    pub fn open(
        path: Option<PathBuf>,
        ctx: LoadContext,
        now: u64,
    ) -> Result<(Arc<PlanSource>, Arc<Routing>), Vec<DialplanError>> {
        let (plan, print) = match &path {
            Some(p) => {
                let print = fingerprint(p);
                (load::load_path(p, &ctx)?, print)
            }
            None => (Dialplan::embedded_default()?, Vec::new()),
        };
        let status = PlanStatus {
            path: path.as_ref().map(|p| p.display().to_string()),
            files: plan.sources().to_vec(),
            rules: plan.len(),
            loaded_at: now,
            last_errors: vec![],
        };
        let routing = Arc::new(Routing::new(plan));
        let source = Arc::new(PlanSource {
            path,
            ctx,
            routing: routing.clone(),
            state: Mutex::new((print, status)),
        });
        Ok((source, routing))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Fingerprint, PlanStatus)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Current status.
    pub fn status(&self) -> PlanStatus {
        self.state().1.clone()
    }

    /// Loads the files again; a valid plan replaces the current one for new
    /// calls, an invalid one is logged and kept out.
    pub fn reload(&self, now: u64) -> Result<PlanStatus, Vec<DialplanError>> {
        let Some(path) = &self.path else {
            // The embedded default cannot change.
            return Ok(self.status());
        };
        let print = fingerprint(path);
        let result = load::load_path(path, &self.ctx);
        let mut state = self.state();
        state.0 = print;
        match result {
            Ok(plan) => {
                tracing::info!(path = %path.display(), rules = plan.len(), "dialplan loaded");
                state.1 = PlanStatus {
                    path: Some(path.display().to_string()),
                    files: plan.sources().to_vec(),
                    rules: plan.len(),
                    loaded_at: now,
                    last_errors: vec![],
                };
                self.routing.swap(plan);
                Ok(state.1.clone())
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "dialplan rejected; the previous plan stays");
                }
                state.1.last_errors.clone_from(&errors);
                Err(errors)
            }
        }
    }

    /// Reloads when the files changed since the last load attempt.
    pub fn reload_if_changed(&self, now: u64) {
        let Some(path) = &self.path else { return };
        let print = fingerprint(path);
        if print != self.state().0 {
            let _ = self.reload(now);
        }
    }

    /// Whether there are files to watch.
    pub fn watchable(&self) -> bool {
        self.path.is_some()
    }
}

/// Why an alias could not be created or removed.
#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    /// The request is not a valid alias.
    #[error("{0}")]
    Invalid(String),
    /// A live alias of that name exists.
    #[error("alias {0:?} exists")]
    Exists(String),
    /// The database failed.
    #[error("storage: {0}")]
    Storage(#[from] rusqlite::Error),
}

/// Ephemeral aliases: the database first, then the routing table.
#[derive(Debug)]
pub struct AliasService {
    store: Mutex<AliasStore>,
    routing: Arc<Routing>,
    ctx: LoadContext,
}

impl AliasService {
    /// Opens the store and loads live aliases into the routing table.
    pub fn open(
        db: &Path,
        routing: Arc<Routing>,
        ctx: LoadContext,
        now: i64,
    ) -> rusqlite::Result<AliasService> {
        let mut store = AliasStore::open(db)?;
        let loaded = store.load(now)?;
        tracing::info!(aliases = loaded.len(), "ephemeral aliases restored");
        {
            let mut table = routing.aliases_mut();
            for a in loaded {
                table.insert(a);
            }
        }
        Ok(AliasService {
            store: Mutex::new(store),
            routing,
            ctx,
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, AliasStore> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Validates, persists and publishes a new alias.
    pub fn create(&self, a: EphemeralAlias, now: i64) -> Result<EphemeralAlias, AliasError> {
        a.validate(&self.ctx, now).map_err(AliasError::Invalid)?;
        let mut store = self.store();
        if self
            .routing
            .aliases()
            .get(&a.alias)
            .is_some_and(|old| old.valid_until > now)
        {
            return Err(AliasError::Exists(a.alias));
        }
        store.put(&a)?;
        self.routing.aliases_mut().insert(a.clone());
        Ok(a)
    }

    /// Removes an alias; whether a live one existed (expired ones count as gone).
    pub fn delete(&self, alias: &str, now: i64) -> Result<bool, AliasError> {
        let stored = self.store().delete(alias)?;
        let live = self
            .routing
            .aliases_mut()
            .remove(alias)
            .is_some_and(|a| a.valid_until > now);
        Ok(stored && live)
    }

    /// Live aliases.
    pub fn list(&self, now: i64) -> Vec<EphemeralAlias> {
        self.routing.aliases().list(now)
    }

    /// Drops expired aliases from memory and disk.
    pub fn purge(&self, now: i64) {
        self.routing.aliases_mut().purge(now);
        if let Err(e) = self.store().purge(now) {
            tracing::error!(error = %e, "could not purge expired aliases");
        }
    }
}
