//! Route test tables: `*.cases.toml` files admins keep beside their dialplan,
//! run by `causeway dialplan test` and by the test suite for every plan in
//! `dialplans/`.
//!
//! Owns the case format and the comparison of expected and actual verdicts.
//! Each case is a call (`to`, optional `from`, `protocol`, `source_ip`,
//! `transport`, `registered`, `at`) and an `expect` table; only the keys
//! given in `expect` are compared. Cases without `at` route at Monday
//! 2026-01-05 12:00 UTC, so a table never depends on the day it runs.

use super::{CallInfo, Dialplan, Protocol, Target, TimeArg, Verdict};
use crate::sip::Transport;
use serde::Deserialize;
use std::net::IpAddr;
use toml::Spanned;

/// Where cases without `at` are routed: Monday 2026-01-05 12:00:00 UTC.
pub const DEFAULT_AT: i64 = 1_767_614_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(default)]
    case: Vec<Spanned<Case>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    to: String,
    #[serde(default)]
    from: String,
    #[serde(default = "default_protocol")]
    protocol: Protocol,
    source_ip: Option<IpAddr>,
    transport: Option<Transport>,
    #[serde(default)]
    registered: bool,
    at: Option<TimeArg>,
    expect: Expect,
}

fn default_protocol() -> Protocol {
    Protocol::Sip
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// Nothing matches (404).
    #[serde(default)]
    no_match: bool,
    rule: Option<String>,
    target: Option<String>,
    to: Option<String>,
    from: Option<String>,
    status: Option<u16>,
    uri: Option<String>,
    trunk: Option<String>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name, or `to=<alias>`.
    pub name: String,
    /// Line of the case in its file.
    pub line: usize,
    /// What differed; empty when the case passed.
    pub failures: Vec<String>,
}

impl CaseResult {
    /// Whether the verdict was as expected.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every case in `src` (named `file` in errors) against `plan`.
pub fn run(plan: &Dialplan, src: &str, file: &str) -> Result<Vec<CaseResult>, String> {
    let parsed: CasesFile = toml::from_str(src).map_err(|e| {
        let (line, col) = crate::config::line_col(src, e.span().map_or(0, |s| s.start));
        format!(
            "{file}:{line}:{col}: {}",
            e.message().trim().replace('\n', " ")
        )
    })?;
    if parsed.case.is_empty() {
        return Err(format!("{file}: no [[case]] entries"));
    }
    let mut out = Vec::new();
    for c in parsed.case {
        let (line, _) = crate::config::line_col(src, c.span().start);
        let c = c.into_inner();
        let name = c.name.clone().unwrap_or_else(|| format!("to={}", c.to));
        let at = match c.at.as_ref().map(TimeArg::unix).transpose() {
            Ok(t) => t.unwrap_or(DEFAULT_AT),
            Err(e) => return Err(format!("{file}:{line}: case `{name}`: {e}")),
        };
        let call = CallInfo {
            to: c.to.clone(),
            from: c.from.clone(),
            protocol: c.protocol,
            source_ip: c.source_ip,
            transport: c.transport,
            registered: c.registered,
            at,
        };
        let failures = compare(&c.expect, &plan.route(&call));
        out.push(CaseResult {
            name,
            line,
            failures,
        });
    }
    Ok(out)
}

fn compare(e: &Expect, got: &Verdict) -> Vec<String> {
    let mut f = Vec::new();
    let route = match got {
        Verdict::NoMatch if e.no_match => return f,
        Verdict::NoMatch => {
            f.push("expected a route, but no rule matched".to_string());
            return f;
        }
        Verdict::Route(r) if e.no_match => {
            f.push(format!("expected no match, but rule `{}` matched", r.rule));
            return f;
        }
        Verdict::Route(r) => r,
    };
    let mut check = |what: &str, want: &Option<String>, have: &str| {
        if let Some(w) = want
            && w != have
        {
            f.push(format!("{what}: expected {w:?}, got {have:?}"));
        }
    };
    check("rule", &e.rule, &route.rule);
    check("target", &e.target, route.target.kind());
    check("to", &e.to, &route.to);
    check("from", &e.from, &route.from);
    let (uri, trunk) = match &route.target {
        Target::Sip { uri, trunk } => (uri.clone(), trunk.clone()),
        _ => (None, None),
    };
    check("uri", &e.uri, uri.as_deref().unwrap_or("(none)"));
    check("trunk", &e.trunk, trunk.as_deref().unwrap_or("(none)"));
    if let Some(want) = e.status {
        match route.target.rejection() {
            Some((s, _)) if s == want => {}
            Some((s, _)) => f.push(format!("status: expected {want}, got {s}")),
            None => f.push(format!(
                "status: expected reject {want}, got target {}",
                route.target
            )),
        }
    }
    f
}
