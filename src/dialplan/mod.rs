//! The dialplan: where every call goes, as typed, pure logic.
//!
//! Owns the TOML model of `dialplans/*.toml` (loading and validation live in
//! [`load`]), the compiled [`Dialplan`] and its [`Dialplan::route`] function,
//! ephemeral aliases ([`aliases`]) and the table-driven test cases admins keep
//! beside their plans ([`cases`]). Routing is pure: a [`CallInfo`] in, a
//! [`Verdict`] out, no clock, no I/O, regexes compiled once at load. Asking a
//! policy server and finding registered contacts happen later, in `policy` and
//! the call layer. It must not touch sockets; only [`load`] reads files, and
//! only when asked to.
//!
//! Rules are tried in ascending `priority`; the first whose every condition
//! holds wins. Called-alias patterns of all rules are compiled into one
//! [`regex::RegexSet`], so a 1,000-rule plan costs one automaton pass per call
//! rather than 1,000 regex runs.

pub mod aliases;
pub mod cases;
pub mod load;

use crate::sip::Transport;
use ipnet::IpNet;
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

pub use aliases::{AliasTable, EphemeralAlias};
pub use load::{DialplanError, LoadContext};

/// The plan used when no `dialplan.path` is configured.
pub const DEFAULT_PLAN: &str = include_str!("../../dialplans/default.toml");

/// A point in time as people write it: unix seconds, an RFC 3339 string, or
/// a TOML offset date-time.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeArg {
    /// Unix seconds.
    Unix(i64),
    /// RFC 3339 text.
    Text(String),
    /// A TOML date-time literal.
    Toml(toml::value::Datetime),
}

impl TimeArg {
    /// Unix seconds, or why the text is not a time.
    pub fn unix(&self) -> Result<i64, String> {
        let text = match self {
            TimeArg::Unix(s) => return Ok(*s),
            TimeArg::Text(t) => t.clone(),
            TimeArg::Toml(d) => d.to_string(),
        };
        text.parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .map_err(|_| {
                format!("bad time {text:?}: expected RFC 3339 with an offset, e.g. 2026-11-23T09:00:00Z, or unix seconds")
            })
    }
}

/// The signalling protocol a call arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SIP (any transport).
    Sip,
    /// H.323.
    H323,
    /// A browser or WHIP client.
    Webrtc,
}

impl Protocol {
    /// The lowercase name used in TOML, JSON and the policy query.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sip => "sip",
            Protocol::H323 => "h323",
            Protocol::Webrtc => "webrtc",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Protocol::Sip => 1,
            Protocol::H323 => 2,
            Protocol::Webrtc => 4,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sip" => Ok(Protocol::Sip),
            "h323" => Ok(Protocol::H323),
            "webrtc" => Ok(Protocol::Webrtc),
            _ => Err(format!("unknown protocol {s:?} (sip, h323 or webrtc)")),
        }
    }
}

/// Everything routing may look at, gathered by the leg that received the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// The called alias: a SIP user part when the host is ours, else
    /// `user@host`; the alias a browser dialled.
    pub to: String,
    /// The calling alias, same shape.
    pub from: String,
    /// Protocol the call arrived on.
    pub protocol: Protocol,
    /// Where the signalling came from.
    pub source_ip: Option<IpAddr>,
    /// SIP transport, when SIP.
    pub transport: Option<Transport>,
    /// Whether the caller is a registered or authenticated local user.
    pub registered: bool,
    /// When the call arrived, unix seconds (for time windows and alias validity).
    pub at: i64,
}

/// What to do when the policy server cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPolicyFailure {
    /// Reject the call with 503.
    #[default]
    Reject,
    /// Carry on with the next rule.
    Continue,
}

/// Where a call goes. The same shape in TOML, in JSON (ephemeral aliases,
/// policy answers) and in API output: a table with a `type` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// Every contact registered locally for the alias (SIP, H.323 or browser),
    /// rung in parallel; the first answer wins.
    Registered,
    /// A SIP destination: `uri` (its user part defaults to the alias) or a
    /// trunk from the gateway config. Exactly one of the two.
    Sip {
        /// `sip:host[:port][;transport=...]` or a full `sip:user@host` URI.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uri: Option<String>,
        /// The name of a `[[trunks]]` entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trunk: Option<String>,
    },
    /// Browsers registered through the client API under the alias.
    Webrtc,
    /// H.323 endpoints (reserved for the H.323 work).
    H323,
    /// The built-in echo service.
    Echo,
    /// Refuse the call.
    Reject {
        /// SIP status, 400-699 (default 403).
        #[serde(default = "default_reject_status")]
        status: u16,
        /// Reason phrase (default: the standard one for the status).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Ask the external policy server.
    Policy {
        /// Overrides `[policy] url` for this rule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// Reject (503) or carry on with the next rule when the server fails.
        #[serde(default)]
        on_failure: OnPolicyFailure,
    },
    /// Try each in order until one succeeds (e.g. registered, then a trunk).
    Fallback {
        /// The targets, none of them `policy` or `fallback`.
        targets: Vec<Target>,
    },
}

fn default_reject_status() -> u16 {
    403
}

impl Target {
    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Registered => "registered",
            Target::Sip { .. } => "sip",
            Target::Webrtc => "webrtc",
            Target::H323 => "h323",
            Target::Echo => "echo",
            Target::Reject { .. } => "reject",
            Target::Policy { .. } => "policy",
            Target::Fallback { .. } => "fallback",
        }
    }

    /// Status and reason phrase for a `reject` target.
    pub fn rejection(&self) -> Option<(u16, String)> {
        match self {
            Target::Reject { status, reason } => Some((
                *status,
                reason
                    .clone()
                    .unwrap_or_else(|| reason_phrase(*status).to_string()),
            )),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sip {
                uri: Some(u),
                trunk: _,
            } => write!(f, "sip {u}"),
            Target::Sip { trunk: Some(t), .. } => write!(f, "sip trunk {t}"),
            Target::Reject { .. } => {
                let (s, r) = self.rejection().unwrap_or_default();
                write!(f, "reject {s} {r}")
            }
            Target::Policy { url, on_failure } => {
                write!(f, "policy")?;
                if let Some(u) = url {
                    write!(f, " {u}")?;
                }
                write!(f, " (on failure: {on_failure:?})")
            }
            Target::Fallback { targets } => {
                write!(f, "fallback [")?;
                for (i, t) in targets.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{t}")?;
                }
                write!(f, "]")
            }
            other => f.write_str(other.kind()),
        }
    }
}

/// The standard reason phrase for a SIP status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        410 => "Gone",
        480 => "Temporarily Unavailable",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// SRTP requirement for the SIP leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Srtp {
    /// Callees are offered plain RTP; a caller's SDES offer is answered
    /// with SRTP, its plain offer with RTP.
    #[default]
    Optional,
    /// Callees are offered RTP/SAVP with an SDES key only (an answer
    /// without one ends the call with 488); a caller's plain RTP offer
    /// gets 488.
    Required,
    /// Plain RTP only: callees are offered it, and a caller's RTP/SAVP
    /// offer gets 488.
    Off,
}

/// How digits reach a SIP leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMode {
    /// RFC 4733 telephone-events when the SIP side agreed them, else SIP
    /// INFO (`application/dtmf-relay`).
    #[default]
    Auto,
    /// Telephone-events only (digits are dropped toward a SIP side that
    /// agreed none).
    Rfc4733,
    /// SIP INFO only, even where telephone-events were agreed.
    Info,
}

/// Per-rule media options, handed to the call layer with the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaOptions {
    /// Codec preference, first preferred (empty: the gateway's default order).
    pub codecs: Vec<String>,
    /// Whether video is offered and accepted.
    pub video: bool,
    /// Whether transcoding is allowed (false: passthrough only).
    pub transcode: bool,
    /// Cap on the media bitrate, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bitrate_kbps: Option<u32>,
    /// SRTP on the SIP leg.
    pub srtp: Srtp,
    /// How digits are sent to the SIP legs (received either way).
    pub dtmf: DtmfMode,
}

impl Default for MediaOptions {
    fn default() -> Self {
        Self {
            codecs: vec![],
            video: true,
            transcode: true,
            max_bitrate_kbps: None,
            srtp: Srtp::Optional,
            dtmf: DtmfMode::Auto,
        }
    }
}

/// Codec names a rule may list.
pub const KNOWN_CODECS: &[&str] = &["opus", "g722", "pcmu", "pcma", "h264", "vp8"];

/// Where a route leads, once targets nobody can take are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The built-in echo service.
    Echo,
    /// A target that needs the call bridge.
    Bridge(Target),
    /// A `reject` target: status and reason phrase.
    Reject(u16, String),
    /// Every target was skipped.
    Nobody,
}

/// A matched route: the rule, the rewritten aliases and the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Rule name (or the ephemeral alias).
    pub rule: String,
    /// `file:line` of the rule, or `ephemeral alias`.
    pub origin: String,
    /// The rule's priority (none for ephemeral aliases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Called alias after transforms.
    pub to: String,
    /// Calling alias after transforms.
    pub from: String,
    /// Where the call goes.
    pub target: Target,
    /// Media options of the rule.
    pub media: MediaOptions,
    /// Whether a SIP caller not registered from its source must first
    /// authenticate as a local user (digest, 407 challenge).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auth: bool,
    /// PIN the caller must present (ephemeral aliases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Index of the rule after this one, where a `policy` rule that fails
    /// with `on_failure = "continue"` resumes.
    #[serde(skip)]
    pub next_rule: Option<usize>,
}

impl Route {
    /// Walks the route's targets (a `fallback` list in order, else the one
    /// target): `echo` and `reject` decide; `registered` is taken when
    /// `registered()` says someone is registered for the alias, else
    /// skipped; browsers and H.323 endpoints cannot register yet and are
    /// skipped; anything else needs the call bridge. `registered` is asked
    /// at most once, and only if a `registered` target is reached.
    pub fn reach(&self, mut registered: impl FnMut() -> bool) -> Reach {
        let targets = match &self.target {
            Target::Fallback { targets } => targets.as_slice(),
            t => std::slice::from_ref(t),
        };
        for t in targets {
            match t {
                Target::Echo => return Reach::Echo,
                Target::Reject { .. } => {
                    let (status, reason) = t.rejection().unwrap_or((403, "Forbidden".into()));
                    return Reach::Reject(status, reason);
                }
                Target::Registered => {
                    if registered() {
                        return Reach::Bridge(t.clone());
                    }
                }
                Target::Webrtc | Target::H323 => {}
                Target::Sip { .. } | Target::Policy { .. } | Target::Fallback { .. } => {
                    return Reach::Bridge(t.clone());
                }
            }
        }
        Reach::Nobody
    }

    /// Whether [`Route::reach`] may need to know about registrations.
    pub fn has_registered_target(&self) -> bool {
        match &self.target {
            Target::Fallback { targets } => targets.contains(&Target::Registered),
            t => *t == Target::Registered,
        }
    }
}

/// The outcome of routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// A rule (or an ephemeral alias) matched.
    Route(Box<Route>),
    /// Nothing matched: the call gets 404.
    NoMatch,
}

/// A time-of-day window in some time zone.
#[derive(Debug, Clone)]
struct Window {
    zone: usize,
    /// Bit n set: weekday n (Monday = 0) matches.
    days: u8,
    /// Minutes after midnight, start inclusive, end exclusive; start > end wraps.
    minutes: Option<(u16, u16)>,
}

/// A compiled alias rewrite.
#[derive(Debug, Clone, Default)]
struct Rewrite {
    /// Own pattern, replaced everywhere; `None` with `with` set rewrites the
    /// whole alias from the match pattern's captures.
    replace: Option<Regex>,
    with: Option<String>,
    strip_prefix: Option<String>,
    add_prefix: Option<String>,
    domain: Option<String>,
    strip_domain: bool,
}

impl Rewrite {
    fn apply(&self, alias: &str, matcher: Option<&Regex>) -> String {
        let mut s = match (&self.replace, &self.with, matcher) {
            (Some(re), Some(with), _) => re.replace_all(alias, with.as_str()).into_owned(),
            (None, Some(with), Some(m)) => match m.captures(alias) {
                Some(caps) => {
                    let mut out = String::new();
                    caps.expand(with, &mut out);
                    out
                }
                None => alias.to_string(),
            },
            _ => alias.to_string(),
        };
        if let Some(p) = &self.strip_prefix
            && let Some(rest) = s.strip_prefix(p.as_str())
        {
            s = rest.to_string();
        }
        if let Some(p) = &self.add_prefix {
            s.insert_str(0, p);
        }
        if (self.strip_domain || self.domain.is_some())
            && let Some(at) = s.rfind('@')
        {
            s.truncate(at);
        }
        if let Some(d) = &self.domain {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    origin: String,
    priority: i64,
    /// Index in the plan's regex set, and the same pattern for captures.
    to: Option<(usize, Regex)>,
    from: Option<Regex>,
    /// Bit mask of [`Protocol::bit`]; 0 means any.
    protocols: u8,
    nets: Vec<IpNet>,
    transports: Vec<Transport>,
    registered: Option<bool>,
    window: Option<Window>,
    to_rewrite: Option<Rewrite>,
    from_rewrite: Option<Rewrite>,
    target: Target,
    media: MediaOptions,
    auth: bool,
}

impl Rule {
    /// Every condition except the called alias, which the regex set checks:
    /// the first that fails.
    fn check(&self, call: &CallInfo, local: &mut LocalTimes<'_>) -> Result<(), Miss> {
        if self.protocols != 0 && self.protocols & call.protocol.bit() == 0 {
            return Err(Miss::Protocol);
        }
        if self.registered.is_some_and(|want| want != call.registered) {
            return Err(Miss::Registered);
        }
        if !self.transports.is_empty()
            && !call.transport.is_some_and(|t| self.transports.contains(&t))
        {
            return Err(Miss::Transport);
        }
        if !self.nets.is_empty()
            && !call
                .source_ip
                .is_some_and(|ip| self.nets.iter().any(|n| n.contains(&ip)))
        {
            return Err(Miss::SourceNet);
        }
        if self
            .from
            .as_ref()
            .is_some_and(|re| !re.is_match(&call.from))
        {
            return Err(Miss::From);
        }
        if let Some(w) = &self.window {
            let (weekday, minute) = local.get(w.zone, call.at);
            if w.days & (1 << weekday) == 0 {
                return Err(Miss::Day);
            }
            if let Some((start, end)) = w.minutes {
                let inside = if start <= end {
                    (start..end).contains(&minute)
                } else {
                    minute >= start || minute < end
                };
                if !inside {
                    return Err(Miss::Time);
                }
            }
        }
        Ok(())
    }

    fn route(&self, call: &CallInfo, index: usize) -> Route {
        let to_re = self.to.as_ref().map(|(_, re)| re);
        let to = self
            .to_rewrite
            .as_ref()
            .map_or_else(|| call.to.clone(), |r| r.apply(&call.to, to_re));
        let from = self.from_rewrite.as_ref().map_or_else(
            || call.from.clone(),
            |r| r.apply(&call.from, self.from.as_ref()),
        );
        Route {
            rule: self.name.clone(),
            origin: self.origin.clone(),
            priority: Some(self.priority),
            to,
            from,
            target: self.target.clone(),
            media: self.media.clone(),
            auth: self.auth,
            pin: None,
            next_rule: Some(index + 1),
        }
    }
}

/// The condition of a rule that a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// `match.to`
    To,
    /// `match.from`
    From,
    /// `match.protocol`
    Protocol,
    /// `match.registered`
    Registered,
    /// `match.transport`
    Transport,
    /// `match.source_net`
    SourceNet,
    /// `match.days`
    Day,
    /// `match.time`
    Time,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Miss::To => "the called alias does not match match.to",
            Miss::From => "the calling alias does not match match.from",
            Miss::Protocol => "the protocol is not in match.protocol",
            Miss::Registered => "match.registered differs",
            Miss::Transport => "the transport is not in match.transport",
            Miss::SourceNet => "the source address is not in match.source_net",
            Miss::Day => "the day is not in match.days",
            Miss::Time => "the time is outside match.time",
        })
    }
}

/// Local weekday and minute per time zone, computed at most once per route.
struct LocalTimes<'a> {
    zones: &'a [jiff::tz::TimeZone],
    cache: Vec<Option<(u8, u16)>>,
}

impl LocalTimes<'_> {
    fn get(&mut self, zone: usize, at: i64) -> (u8, u16) {
        if let Some(Some(v)) = self.cache.get(zone) {
            return *v;
        }
        let v = match (
            jiff::Timestamp::from_second(at),
            self.zones.get(zone).cloned(),
        ) {
            (Ok(ts), Some(tz)) => {
                let z = ts.to_zoned(tz);
                let weekday = u8::try_from(z.weekday().to_monday_zero_offset()).unwrap_or(0);
                let minute =
                    u16::try_from(i32::from(z.hour()) * 60 + i32::from(z.minute())).unwrap_or(0);
                (weekday, minute)
            }
            // Out of jiff's range (year beyond 9999): treat as Monday midnight.
            _ => (0, 0),
        };
        if self.cache.len() <= zone {
            self.cache.resize(zone + 1, None);
        }
        self.cache[zone] = Some(v);
        v
    }
}

/// A loaded, validated dialplan.
#[derive(Debug, Clone)]
pub struct Dialplan {
    rules: Vec<Rule>,
    set: RegexSet,
    zones: Vec<jiff::tz::TimeZone>,
    sources: Vec<String>,
}

/// A rule as the admin API and the CLI list it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSummary {
    /// Name.
    pub name: String,
    /// Priority.
    pub priority: i64,
    /// `file:line`.
    pub origin: String,
    /// Target.
    pub target: Target,
}

impl Dialplan {
    /// The embedded default plan.
    pub fn embedded_default() -> Result<Dialplan, Vec<DialplanError>> {
        load::from_sources(
            &[("<embedded dialplan>".to_string(), DEFAULT_PLAN.to_string())],
            &LoadContext::default(),
        )
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the plan has no rules (every call gets 404).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The files the plan came from.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The rules in the order they are tried.
    pub fn summary(&self) -> Vec<RuleSummary> {
        self.rules
            .iter()
            .map(|r| RuleSummary {
                name: r.name.clone(),
                priority: r.priority,
                origin: r.origin.clone(),
                target: r.target.clone(),
            })
            .collect()
    }

    /// Routes a call: the first rule whose conditions all hold.
    pub fn route(&self, call: &CallInfo) -> Verdict {
        self.route_from(call, 0)
    }

    /// Routes a call trying only rules from index `start` on (where a failed
    /// `policy` rule with `on_failure = "continue"` resumes).
    pub fn route_from(&self, call: &CallInfo, start: usize) -> Verdict {
        let matched = self.set.matches(&call.to);
        let mut local = LocalTimes {
            zones: &self.zones,
            cache: Vec::new(),
        };
        for (i, rule) in self.rules.iter().enumerate().skip(start) {
            if let Some((set_index, _)) = &rule.to
                && !matched.matched(*set_index)
            {
                continue;
            }
            if rule.check(call, &mut local).is_ok() {
                return Verdict::Route(Box::new(rule.route(call, i)));
            }
        }
        Verdict::NoMatch
    }

    /// For each rule in order, why it does not match the call (None: it
    /// matches). For people asking why a call went where it went.
    pub fn explain(&self, call: &CallInfo) -> Vec<(RuleSummary, Option<Miss>)> {
        let mut local = LocalTimes {
            zones: &self.zones,
            cache: Vec::new(),
        };
        self.rules
            .iter()
            .zip(self.summary())
            .map(|(rule, summary)| {
                let miss = match &rule.to {
                    Some((_, re)) if !re.is_match(&call.to) => Some(Miss::To),
                    _ => rule.check(call, &mut local).err(),
                };
                (summary, miss)
            })
            .collect()
    }
}

/// Ephemeral aliases first (an exact, valid alias wins), then the plan.
pub fn route(plan: &Dialplan, aliases: &AliasTable, call: &CallInfo) -> Verdict {
    if let Some(a) = aliases.lookup(&call.to, call.at) {
        return Verdict::Route(Box::new(Route {
            rule: a.alias.clone(),
            origin: "ephemeral alias".into(),
            priority: None,
            to: call.to.clone(),
            from: call.from.clone(),
            target: a.target.clone(),
            media: MediaOptions::default(),
            auth: false,
            pin: a.pin.clone(),
            next_rule: None,
        }));
    }
    plan.route(call)
}

/// The live routing state shared by the signalling core, the admin API and
/// the reload watcher: the current plan (swapped whole on reload) and the
/// ephemeral aliases.
#[derive(Debug)]
pub struct Routing {
    plan: RwLock<Arc<Dialplan>>,
    aliases: RwLock<AliasTable>,
}

impl Routing {
    /// Starts with a plan and no aliases.
    pub fn new(plan: Dialplan) -> Self {
        Self {
            plan: RwLock::new(Arc::new(plan)),
            aliases: RwLock::new(AliasTable::default()),
        }
    }

    /// The current plan; calls routed with it keep it even if a reload swaps it.
    pub fn plan(&self) -> Arc<Dialplan> {
        // A poisoned lock still holds a whole plan: swaps are single assignments.
        self.plan
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Swaps in a new plan for calls that arrive from now on.
    pub fn swap(&self, plan: Dialplan) {
        *self
            .plan
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(plan);
    }

    /// Reads the alias table.
    pub fn aliases(&self) -> std::sync::RwLockReadGuard<'_, AliasTable> {
        self.aliases
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the alias table.
    pub fn aliases_mut(&self) -> std::sync::RwLockWriteGuard<'_, AliasTable> {
        self.aliases
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Routes with ephemeral aliases first, then the current plan.
    pub fn route(&self, call: &CallInfo) -> Verdict {
        let plan = self.plan();
        route(&plan, &self.aliases(), call)
    }
}

#[cfg(test)]
mod tests;
