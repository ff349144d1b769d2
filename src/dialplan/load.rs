//! Dialplan files: TOML in, a validated [`Dialplan`] or every error found,
//! each with file, line, column and the rule's name.
//!
//! Owns the file format (documented in `dialplans/default.toml`) and every
//! check on it: bad regexes, unknown targets or trunks, bad networks, days,
//! times and zones, duplicate names and priorities, and rules that can never
//! match because an earlier rule catches every call. Reads files only in
//! [`load_path`].

use super::{
    Dialplan, KNOWN_CODECS, MediaOptions, OnPolicyFailure, Protocol, Rewrite, Rule, Target, Window,
};
use crate::sip::Transport;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// What a plan may refer to outside itself.
#[derive(Debug, Clone, Default)]
pub struct LoadContext {
    /// Names of the `[[trunks]]` in the gateway config.
    pub trunks: Vec<String>,
    /// Whether `[policy] url` is configured (rules may then omit `url`).
    pub policy_url: bool,
}

impl LoadContext {
    /// What the gateway config offers to dialplans.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            trunks: cfg
                .trunks
                .iter()
                .map(|t| t.get_ref().name.clone())
                .collect(),
            policy_url: cfg.policy.url.is_some(),
        }
    }
}

/// One problem in a dialplan file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DialplanError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when the file could not be read).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The rule's name, when the problem is inside a rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// One-line reason.
    pub message: String,
}

impl fmt::Display for DialplanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(r) = &self.rule {
            write!(f, "rule `{r}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for DialplanError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Default zone for time windows in this file.
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    priority: Spanned<i64>,
    #[serde(default)]
    #[allow(dead_code)] // documentation for humans, kept so the key is accepted
    description: Option<String>,
    #[serde(default, rename = "match")]
    matches: RawMatch,
    #[serde(default)]
    transform: RawTransform,
    target: Spanned<Target>,
    media: Option<Spanned<MediaOptions>>,
    /// SIP callers not registered from their source must authenticate.
    #[serde(default)]
    auth: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    to: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    protocol: Option<Spanned<Vec<Protocol>>>,
    source_net: Option<Spanned<Vec<String>>>,
    transport: Option<Spanned<Vec<Transport>>>,
    registered: Option<bool>,
    days: Option<Spanned<Vec<String>>>,
    time: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTransform {
    to: Option<Spanned<RawRewrite>>,
    from: Option<Spanned<RawRewrite>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    replace: Option<Spanned<String>>,
    with: Option<String>,
    strip_prefix: Option<String>,
    add_prefix: Option<String>,
    domain: Option<String>,
    strip_domain: Option<bool>,
}

/// Patterns treated as "matches every alias" when looking for catch-alls.
const UNIVERSAL: &[&str] = &[".*", "(.*)", "^.*$", "^(.*)$", ".*?", "(?s).*"];

/// Files a dialplan path stands for: the file itself, or every `*.toml` in
/// the directory except `*.cases.toml`, sorted.
pub fn plan_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".toml") && !name.ends_with(".cases.toml") && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads a dialplan file, or every plan file in a directory, as one plan.
pub fn load_path(path: &Path, ctx: &LoadContext) -> Result<Dialplan, Vec<DialplanError>> {
    let unreadable = |file: String, e: std::io::Error| DialplanError {
        file,
        line: 0,
        column: 0,
        rule: None,
        message: format!("cannot read: {e}"),
    };
    let files = plan_files(path).map_err(|e| vec![unreadable(path.display().to_string(), e)])?;
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match std::fs::read_to_string(&f) {
            Ok(s) => sources.push((name, s)),
            Err(e) => errors.push(unreadable(name, e)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    from_sources(&sources, ctx)
}

/// A rule being compiled, with where it came from.
struct Pending {
    /// None when the rule itself has errors (still checked against the others).
    rule: Option<Rule>,
    name: String,
    priority: i64,
    origin: String,
    file: usize,
    name_offset: usize,
    catch_all: bool,
}

/// Compiles `(file name, TOML text)` pairs into one plan.
pub fn from_sources(
    sources: &[(String, String)],
    ctx: &LoadContext,
) -> Result<Dialplan, Vec<DialplanError>> {
    let mut errors = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut zones: Vec<(String, jiff::tz::TimeZone)> = Vec::new();
    let mut patterns: Vec<String> = Vec::new();

    for (file_index, (file, src)) in sources.iter().enumerate() {
        let at = |offset: usize, rule: Option<&str>, message: String| {
            let (line, column) = crate::config::line_col(src, offset);
            DialplanError {
                file: file.clone(),
                line,
                column,
                rule: rule.map(str::to_string),
                message,
            }
        };
        let raw: RawFile = match toml::from_str(src) {
            Ok(r) => r,
            Err(e) => {
                let message = e.message().trim().replace('\n', " ");
                errors.push(at(e.span().map_or(0, |s| s.start), None, message));
                continue;
            }
        };
        let file_zone = match &raw.timezone {
            Some(z) => match zone_index(&mut zones, z.get_ref()) {
                Ok(i) => Some(i),
                Err(m) => {
                    errors.push(at(z.span().start, None, m));
                    continue;
                }
            },
            None => None,
        };
        for r in raw.rule {
            let name = r.name.get_ref().clone();
            let mut errs = Vec::new();
            let compiled = compile_rule(&r, ctx, file_zone, &mut zones, &mut errs);
            errors.extend(errs.into_iter().map(|(off, m)| at(off, Some(&name), m)));
            let (line, _) = crate::config::line_col(src, r.name.span().start);
            let origin = format!("{file}:{line}");
            let rule = compiled.map(|(mut rule, to_pattern)| {
                rule.origin.clone_from(&origin);
                if let Some(p) = to_pattern {
                    if let Some((index, _)) = &mut rule.to {
                        *index = patterns.len();
                    }
                    patterns.push(p);
                }
                rule
            });
            pending.push(Pending {
                catch_all: is_catch_all(&r),
                rule,
                name,
                priority: *r.priority.get_ref(),
                origin,
                file: file_index,
                name_offset: r.name.span().start,
            });
        }
    }

    // Order and cross-rule checks.
    pending.sort_by_key(|p| p.priority);
    let locate = |p: &Pending, message: String| {
        let (file, src) = &sources[p.file];
        let (line, column) = crate::config::line_col(src, p.name_offset);
        DialplanError {
            file: file.clone(),
            line,
            column,
            rule: Some(p.name.clone()),
            message,
        }
    };
    let mut names: HashMap<&str, &Pending> = HashMap::new();
    for (i, p) in pending.iter().enumerate() {
        if let Some(prev) = names.insert(&p.name, p) {
            errors.push(locate(
                p,
                format!("duplicate rule name (also at {})", prev.origin),
            ));
        }
        if i > 0 && pending[i - 1].priority == p.priority {
            let prev = &pending[i - 1];
            errors.push(locate(
                p,
                format!(
                    "duplicate priority {} (also rule `{}` at {})",
                    p.priority, prev.name, prev.origin
                ),
            ));
        }
    }
    if let Some(first) = pending.iter().position(|p| p.catch_all) {
        let catcher = &pending[first];
        for p in &pending[first + 1..] {
            errors.push(locate(
                p,
                format!(
                    "unreachable: rule `{}` (priority {}, {}) before it matches every call",
                    catcher.name, catcher.priority, catcher.origin
                ),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let set = regex::RegexSetBuilder::new(&patterns)
        .dfa_size_limit(16 << 20)
        .build()
        .map_err(|e| {
            vec![DialplanError {
                file: sources.first().map(|s| s.0.clone()).unwrap_or_default(),
                line: 0,
                column: 0,
                rule: None,
                message: format!(
                    "the called-alias patterns together are too large: {}",
                    regex_message(&e)
                ),
            }]
        })?;
    Ok(Dialplan {
        rules: pending.into_iter().filter_map(|p| p.rule).collect(),
        set,
        zones: zones.into_iter().map(|(_, z)| z).collect(),
        sources: sources.iter().map(|s| s.0.clone()).collect(),
    })
}

fn is_catch_all(r: &RawRule) -> bool {
    let m = &r.matches;
    let universal = |p: &Option<Spanned<String>>| {
        p.as_ref()
            .is_none_or(|s| UNIVERSAL.contains(&s.get_ref().trim()))
    };
    let terminal = !matches!(
        r.target.get_ref(),
        Target::Policy {
            on_failure: OnPolicyFailure::Continue,
            ..
        }
    );
    terminal
        && universal(&m.to)
        && universal(&m.from)
        && m.protocol.is_none()
        && m.source_net.is_none()
        && m.transport.is_none()
        && m.registered.is_none()
        && m.days.is_none()
        && m.time.is_none()
}

/// The useful line of a regex error (it comes with a multi-line diagram).
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text.lines().last().unwrap_or_default())
        .trim()
        .to_string()
}

/// Compiles a whole-alias pattern (`^(?:p)$`).
fn anchored(p: &Spanned<String>, errs: &mut Vec<(usize, String)>) -> Option<(String, Regex)> {
    let full = format!("^(?:{})$", p.get_ref());
    match Regex::new(&full) {
        Ok(re) => Some((full, re)),
        Err(e) => {
            errs.push((
                p.span().start,
                format!("bad regex {:?}: {}", p.get_ref(), regex_message(&e)),
            ));
            None
        }
    }
}

fn zone_index(zones: &mut Vec<(String, jiff::tz::TimeZone)>, name: &str) -> Result<usize, String> {
    if let Some(i) = zones.iter().position(|(n, _)| n == name) {
        return Ok(i);
    }
    let tz = jiff::tz::TimeZone::get(name).map_err(|_| {
        format!("unknown time zone {name:?} (an IANA name such as \"Europe/Paris\")")
    })?;
    zones.push((name.to_string(), tz));
    Ok(zones.len() - 1)
}

fn parse_days(days: &[String]) -> Result<u8, String> {
    let mut mask = 0u8;
    for d in days {
        mask |= match d.to_ascii_lowercase().as_str() {
            "mon" | "monday" => 1,
            "tue" | "tuesday" => 2,
            "wed" | "wednesday" => 4,
            "thu" | "thursday" => 8,
            "fri" | "friday" => 16,
            "sat" | "saturday" => 32,
            "sun" | "sunday" => 64,
            "weekdays" => 31,
            "weekend" => 96,
            _ => {
                return Err(format!("unknown day {d:?} (mon..sun, weekdays or weekend)"));
            }
        };
    }
    if mask == 0 {
        return Err("days must list at least one day".into());
    }
    Ok(mask)
}

/// `"HH:MM-HH:MM"` into minutes after midnight.
fn parse_time_window(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("bad time window {s:?}: expected \"HH:MM-HH:MM\", e.g. \"08:00-18:00\"");
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
    if start == end {
        return Err(format!("time window {s:?} is empty"));
    }
    Ok((start, end))
}

fn compile_rewrite(
    raw: &Spanned<RawRewrite>,
    matcher: Option<&Regex>,
    key: &str,
    errs: &mut Vec<(usize, String)>,
) -> Option<Rewrite> {
    let r = raw.get_ref();
    let replace = match &r.replace {
        Some(p) => match Regex::new(p.get_ref()) {
            Ok(re) => Some(re),
            Err(e) => {
                errs.push((
                    p.span().start,
                    format!("bad regex {:?}: {}", p.get_ref(), regex_message(&e)),
                ));
                return None;
            }
        },
        None => None,
    };
    if r.replace.is_some() && r.with.is_none() {
        errs.push((
            raw.span().start,
            format!("transform.{key}: `replace` needs `with`"),
        ));
        return None;
    }
    if r.replace.is_none() && r.with.is_some() && matcher.is_none() {
        errs.push((
            raw.span().start,
            format!("transform.{key}: `with` without `replace` rewrites from match.{key}, which is not set"),
        ));
        return None;
    }
    if r.domain.is_some() && r.strip_domain == Some(true) {
        errs.push((
            raw.span().start,
            format!("transform.{key}: give `domain` or `strip_domain`, not both"),
        ));
        return None;
    }
    Some(Rewrite {
        replace,
        with: r.with.clone(),
        strip_prefix: r.strip_prefix.clone().filter(|s| !s.is_empty()),
        add_prefix: r.add_prefix.clone().filter(|s| !s.is_empty()),
        domain: r.domain.clone(),
        strip_domain: r.strip_domain.unwrap_or(false),
    })
}

/// Checks a target against the context; `nested` is true inside a fallback list.
pub(crate) fn check_target(t: &Target, ctx: &LoadContext, nested: bool) -> Result<(), String> {
    match t {
        Target::Sip { uri, trunk } => match (uri, trunk) {
            (Some(_), Some(_)) | (None, None) => {
                Err("a sip target needs exactly one of `uri` or `trunk`".into())
            }
            (Some(u), None) => match crate::sip::msg::Uri::parse(u) {
                Ok(parsed) if parsed.is_sip() => Ok(()),
                _ => Err(format!(
                    "bad SIP URI {u:?} (expected sip:host or sip:user@host)"
                )),
            },
            (None, Some(name)) if ctx.trunks.iter().any(|n| n == name) => Ok(()),
            (None, Some(name)) => Err(format!(
                "unknown trunk {name:?} (trunks in the config: {})",
                if ctx.trunks.is_empty() {
                    "none".to_string()
                } else {
                    ctx.trunks.join(", ")
                }
            )),
        },
        Target::Reject { status, reason } => {
            if !(400..=699).contains(status) {
                return Err(format!("reject status {status} is not 400-699"));
            }
            if reason.as_deref().is_some_and(|r| r.contains(['\r', '\n'])) {
                return Err("reject reason must be one line".into());
            }
            Ok(())
        }
        Target::Policy { .. } | Target::Fallback { .. } if nested => Err(format!(
            "`{}` cannot appear inside a fallback list",
            t.kind()
        )),
        Target::Policy { url, .. } => match url {
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(format!(
                "policy url {u:?} must start with http:// or https://"
            )),
            None if !ctx.policy_url => {
                Err("policy target without `url`, and no [policy] url in the gateway config".into())
            }
            _ => Ok(()),
        },
        Target::Fallback { targets } => {
            if targets.is_empty() {
                return Err("fallback needs at least one target".into());
            }
            targets.iter().try_for_each(|t| check_target(t, ctx, true))
        }
        Target::Registered | Target::Webrtc | Target::H323 | Target::Echo => Ok(()),
    }
}

fn check_media(m: &MediaOptions) -> Result<MediaOptions, String> {
    let mut out = m.clone();
    out.codecs = m.codecs.iter().map(|c| c.to_ascii_lowercase()).collect();
    for c in &out.codecs {
        if !KNOWN_CODECS.contains(&c.as_str()) {
            return Err(format!(
                "unknown codec {c:?} (known: {})",
                KNOWN_CODECS.join(", ")
            ));
        }
    }
    if out.max_bitrate_kbps == Some(0) {
        return Err("max_bitrate_kbps must be above 0".into());
    }
    Ok(out)
}

/// Compiles one rule; problems go to `errs` as (offset, message).
/// Returns the rule and its anchored called-alias pattern.
fn compile_rule(
    r: &RawRule,
    ctx: &LoadContext,
    file_zone: Option<usize>,
    zones: &mut Vec<(String, jiff::tz::TimeZone)>,
    errs: &mut Vec<(usize, String)>,
) -> Option<(Rule, Option<String>)> {
    let before = errs.len();
    let name = r.name.get_ref();
    if name.trim().is_empty() || name.contains(['\r', '\n']) {
        errs.push((
            r.name.span().start,
            "rule name must be one non-empty line".into(),
        ));
    }
    let m = &r.matches;
    let to = m.to.as_ref().and_then(|p| anchored(p, errs));
    let from = m
        .from
        .as_ref()
        .and_then(|p| anchored(p, errs))
        .map(|(_, re)| re);

    let mut protocols = 0u8;
    if let Some(list) = &m.protocol {
        if list.get_ref().is_empty() {
            errs.push((
                list.span().start,
                "protocol list is empty: it would match nothing".into(),
            ));
        }
        for p in list.get_ref() {
            protocols |= p.bit();
        }
    }
    let mut nets = Vec::new();
    if let Some(list) = &m.source_net {
        if list.get_ref().is_empty() {
            errs.push((
                list.span().start,
                "source_net list is empty: it would match nothing".into(),
            ));
        }
        for n in list.get_ref() {
            let parsed = n
                .parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => nets.push(net.trunc()),
                Err(_) => errs.push((
                    list.span().start,
                    format!(
                        "bad network {n:?} (expected CIDR such as \"10.0.0.0/8\" or an address)"
                    ),
                )),
            }
        }
    }
    let transports = match &m.transport {
        Some(list) if list.get_ref().is_empty() => {
            errs.push((
                list.span().start,
                "transport list is empty: it would match nothing".into(),
            ));
            vec![]
        }
        Some(list) => list.get_ref().clone(),
        None => vec![],
    };

    let window = if m.days.is_some() || m.time.is_some() {
        let zone = match &m.timezone {
            Some(z) => zone_index(zones, z.get_ref())
                .map_err(|e| errs.push((z.span().start, e)))
                .ok(),
            // "UTC" is always in the bundled database.
            None => Some(file_zone.unwrap_or_else(|| zone_index(zones, "UTC").unwrap_or(0))),
        };
        let days = match &m.days {
            Some(d) => parse_days(d.get_ref())
                .map_err(|e| errs.push((d.span().start, e)))
                .ok(),
            None => Some(0x7f),
        };
        let minutes = match &m.time {
            Some(t) => parse_time_window(t.get_ref())
                .map(Some)
                .map_err(|e| errs.push((t.span().start, e)))
                .ok(),
            None => Some(None),
        };
        match (zone, days, minutes) {
            (Some(zone), Some(days), Some(minutes)) => Some(Window {
                zone,
                days,
                minutes,
            }),
            _ => None,
        }
    } else {
        if let Some(z) = &m.timezone {
            errs.push((z.span().start, "timezone without days or time".into()));
        }
        None
    };

    let to_rewrite = r
        .transform
        .to
        .as_ref()
        .and_then(|t| compile_rewrite(t, to.as_ref().map(|(_, re)| re), "to", errs));
    let from_rewrite = r
        .transform
        .from
        .as_ref()
        .and_then(|t| compile_rewrite(t, from.as_ref(), "from", errs));

    if let Err(e) = check_target(r.target.get_ref(), ctx, false) {
        errs.push((r.target.span().start, e));
    }
    let media = match &r.media {
        Some(m) => check_media(m.get_ref())
            .map_err(|e| errs.push((m.span().start, e)))
            .ok(),
        None => Some(MediaOptions::default()),
    };
    if errs.len() > before {
        return None;
    }
    let (to_pattern, to) = match to {
        Some((p, re)) => (Some(p), Some((0, re))),
        None => (None, None),
    };
    Some((
        Rule {
            name: name.clone(),
            origin: String::new(),
            priority: *r.priority.get_ref(),
            to,
            from,
            protocols,
            nets,
            transports,
            registered: m.registered,
            window,
            to_rewrite,
            from_rewrite,
            target: r.target.get_ref().clone(),
            media: media.unwrap_or_default(),
            auth: r.auth,
        },
        to_pattern,
    ))
}
