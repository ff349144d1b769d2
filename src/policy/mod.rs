//! The external policy server client, and the one async routing step:
//! [`decide`] turns a call into a final [`Decision`], asking the policy
//! server when a rule says so ([`decide_local`] decides at once what needs
//! no server).
//!
//! Owns the wire contract (documented in `docs/policy.md`): a
//! `GET {url}/policy/v1/service/configuration?local_alias=..` with a short
//! timeout, a JSON answer `{"status":"success","action":"continue"|"reject",
//! "result":{...}}`, an optional answer cache, and what a failure means
//! (the rule's `on_failure`). It must not decide routes itself: rules come
//! from the dialplan, targets from the server.

use crate::dialplan::{
    CallInfo, LoadContext, OnPolicyFailure, Route, Routing, Target, Verdict, reason_phrase,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest policy answer read, bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// What the policy server decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Route the call to this target.
    Route(Target),
    /// Refuse the call.
    Reject {
        /// SIP status.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// Why the policy server could not decide.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Neither the rule nor the config names a server.
    #[error("no policy server url configured")]
    NoUrl,
    /// No answer in time.
    #[error("policy server did not answer within {0} ms")]
    Timeout(u64),
    /// Connection refused, reset, DNS...
    #[error("policy server unreachable: {0}")]
    Unreachable(String),
    /// An HTTP status other than 200.
    #[error("policy server answered HTTP {0}")]
    Status(u16),
    /// The body is not the documented JSON.
    #[error("policy answer not understood: {0}")]
    BadAnswer(String),
}

#[derive(Deserialize)]
struct Wire {
    status: String,
    action: Option<String>,
    #[serde(default)]
    result: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReject {
    #[serde(default = "forbidden")]
    status: u16,
    reason: Option<String>,
}

fn forbidden() -> u16 {
    403
}

/// Parses and checks a policy server's body.
pub fn parse_answer(body: &[u8], ctx: &LoadContext) -> Result<Answer, PolicyError> {
    let bad = |m: String| PolicyError::BadAnswer(m);
    let wire: Wire = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if wire.status != "success" {
        return Err(bad(format!("status is {:?}, not \"success\"", wire.status)));
    }
    match wire.action.as_deref() {
        Some("continue") => {
            let result = wire
                .result
                .ok_or_else(|| bad("action continue without a result".into()))?;
            let target: Target =
                serde_json::from_value(result).map_err(|e| bad(format!("result: {e}")))?;
            if matches!(target, Target::Policy { .. }) {
                return Err(bad("result must not be another policy target".into()));
            }
            crate::dialplan::load::check_target(&target, ctx, false)
                .map_err(|e| bad(format!("result: {e}")))?;
            Ok(Answer::Route(target))
        }
        Some("reject") => {
            let r: WireReject = match wire.result {
                Some(v) if !v.is_null() => {
                    serde_json::from_value(v).map_err(|e| bad(format!("result: {e}")))?
                }
                _ => WireReject {
                    status: 403,
                    reason: None,
                },
            };
            if !(400..=699).contains(&r.status) {
                return Err(bad(format!("reject status {} is not 400-699", r.status)));
            }
            let reason = r
                .reason
                .filter(|s| !s.is_empty() && !s.contains(['\r', '\n']))
                .unwrap_or_else(|| reason_phrase(r.status).to_string());
            Ok(Answer::Reject {
                status: r.status,
                reason,
            })
        }
        other => Err(bad(format!(
            "action {other:?} is neither \"continue\" nor \"reject\""
        ))),
    }
}

/// Asks the policy server; one per gateway, shared by every call.
#[derive(Debug)]
pub struct PolicyClient {
    http: reqwest::Client,
    default_url: Option<String>,
    timeout: Duration,
    ttl: Duration,
    ctx: LoadContext,
    cache: Mutex<HashMap<String, (Instant, Answer)>>,
}

impl PolicyClient {
    /// A client per the `[policy]` config; `ctx` checks answered targets.
    pub fn new(cfg: &crate::config::PolicyConfig, ctx: LoadContext) -> Self {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("Causeway/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            http,
            default_url: cfg.url.as_ref().map(|u| u.get_ref().clone()),
            timeout,
            ttl: Duration::from_secs(cfg.cache_ttl),
            ctx,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Asks `url` (or the configured one) what to do with a call that `route` matched.
    pub async fn query(
        &self,
        url: Option<&str>,
        call: &CallInfo,
        route: &Route,
    ) -> Result<Answer, PolicyError> {
        let base = url
            .or(self.default_url.as_deref())
            .ok_or(PolicyError::NoUrl)?;
        let endpoint = format!(
            "{}/policy/v1/service/configuration",
            base.trim_end_matches('/')
        );
        let remote_address = call.source_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let params = [
            ("local_alias", route.to.as_str()),
            ("remote_alias", route.from.as_str()),
            ("protocol", call.protocol.as_str()),
            ("remote_address", remote_address.as_str()),
            ("call_direction", "dial_in"),
            ("rule", route.rule.as_str()),
        ];
        let request = self
            .http
            .get(&endpoint)
            .query(&params)
            .build()
            .map_err(|e| PolicyError::Unreachable(e.to_string()))?;
        let key = request.url().to_string();
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let answer = self.fetch(request).await?;
        if !self.ttl.is_zero() {
            let mut cache = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            cache.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            cache.insert(key, (now, answer.clone()));
        }
        Ok(answer)
    }

    fn cached(&self, key: &str) -> Option<Answer> {
        if self.ttl.is_zero() {
            return None;
        }
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, a)| a.clone())
    }

    async fn fetch(&self, request: reqwest::Request) -> Result<Answer, PolicyError> {
        let ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                PolicyError::Timeout(ms)
            } else {
                PolicyError::Unreachable(e.to_string())
            }
        };
        // The client timeout covers connect, headers and body; this bounds the whole
        // exchange the same way in case a server trickles bytes.
        let exchange = async {
            let mut resp = self.http.execute(request).await.map_err(classify)?;
            if resp.status() != reqwest::StatusCode::OK {
                return Err(PolicyError::Status(resp.status().as_u16()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(classify)? {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(PolicyError::BadAnswer(format!(
                        "answer larger than {MAX_ANSWER} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            parse_answer(&body, &self.ctx)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(PolicyError::Timeout(ms)))
    }
}

/// Where a call ends up after routing and any policy query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Connect the call to the route's target (never `reject` or `policy`).
    Route(Box<Route>),
    /// Refuse the call with this status.
    Reject {
        /// SIP status.
        status: u16,
        /// Reason phrase.
        reason: String,
        /// The rule that decided, if any.
        rule: Option<String>,
    },
}

fn finish(route: Route) -> Decision {
    match route.target.rejection() {
        Some((status, reason)) => Decision::Reject {
            status,
            reason,
            rule: Some(route.rule),
        },
        None => Decision::Route(Box::new(route)),
    }
}

/// Routes a call to a final decision: ephemeral aliases, then the plan;
/// `policy` rules ask the server and apply `on_failure` when it fails;
/// nothing matching is 404.
pub async fn decide(routing: &Routing, policy: &PolicyClient, call: &CallInfo) -> Decision {
    match decide_local(routing, call) {
        Ok(decision) => decision,
        Err(ask) => ask.decide(policy, call).await,
    }
}

/// The part of [`decide`] that needs no server: the decision itself, or
/// the policy query still to make (most calls never wait on a task).
pub fn decide_local(routing: &Routing, call: &CallInfo) -> Result<Decision, AskPolicy> {
    // One plan for the whole decision, even if a reload swaps it meanwhile.
    let plan = routing.plan();
    let verdict = crate::dialplan::route(&plan, &routing.aliases(), call);
    settle(plan, verdict)
}

/// A decision that waits on the policy server: a `policy` rule matched.
#[derive(Debug)]
pub struct AskPolicy {
    plan: std::sync::Arc<crate::dialplan::Dialplan>,
    route: Box<Route>,
}

impl AskPolicy {
    /// Asks the server, then applies the rule's `on_failure` when it fails
    /// (which may match further `policy` rules).
    pub async fn decide(self, policy: &PolicyClient, call: &CallInfo) -> Decision {
        let AskPolicy { plan, mut route } = self;
        loop {
            let Target::Policy { url, on_failure } = &route.target else {
                return finish(*route);
            };
            let verdict = match policy.query(url.as_deref(), call, &route).await {
                Ok(Answer::Route(target)) => return finish(Route { target, ..*route }),
                Ok(Answer::Reject { status, reason }) => {
                    return Decision::Reject {
                        status,
                        reason,
                        rule: Some(route.rule),
                    };
                }
                Err(e) => {
                    tracing::warn!(rule = %route.rule, error = %e, on_failure = ?on_failure, "policy server failed");
                    match on_failure {
                        OnPolicyFailure::Reject => {
                            return Decision::Reject {
                                status: 503,
                                reason: "Service Unavailable".into(),
                                rule: Some(route.rule),
                            };
                        }
                        OnPolicyFailure::Continue => {
                            plan.route_from(call, route.next_rule.unwrap_or(usize::MAX))
                        }
                    }
                }
            };
            match settle(plan.clone(), verdict) {
                Ok(decision) => return decision,
                Err(next) => route = next.route,
            }
        }
    }
}

/// A verdict as a decision, unless its rule asks the policy server.
fn settle(
    plan: std::sync::Arc<crate::dialplan::Dialplan>,
    verdict: Verdict,
) -> Result<Decision, AskPolicy> {
    let route = match verdict {
        Verdict::NoMatch => {
            return Ok(Decision::Reject {
                status: 404,
                reason: "Not Found".into(),
                rule: None,
            });
        }
        Verdict::Route(r) => r,
    };
    if matches!(route.target, Target::Policy { .. }) {
        Err(AskPolicy { plan, route })
    } else {
        Ok(finish(*route))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> LoadContext {
        LoadContext {
            trunks: vec!["carrier".into()],
            policy_url: true,
        }
    }

    #[test]
    fn answers_parse_into_targets_and_rejections() {
        let a = parse_answer(
            br#"{"status":"success","action":"continue","result":{"type":"sip","trunk":"carrier"}}"#,
            &ctx(),
        );
        assert_eq!(
            a,
            Ok(Answer::Route(Target::Sip {
                uri: None,
                trunk: Some("carrier".into())
            }))
        );
        let a = parse_answer(br#"{"status":"success","action":"reject"}"#, &ctx());
        assert_eq!(
            a,
            Ok(Answer::Reject {
                status: 403,
                reason: "Forbidden".into()
            })
        );
        let a = parse_answer(
            br#"{"status":"success","action":"reject","result":{"status":486,"reason":"Room Busy"}}"#,
            &ctx(),
        );
        assert_eq!(
            a,
            Ok(Answer::Reject {
                status: 486,
                reason: "Room Busy".into()
            })
        );
    }

    #[test]
    fn bad_answers_are_errors_not_routes() {
        for body in [
            &b"not json"[..],
            br#"{"status":"failed","action":"continue"}"#,
            br#"{"status":"success","action":"maybe"}"#,
            br#"{"status":"success","action":"continue"}"#,
            br#"{"status":"success","action":"continue","result":{"type":"teleport"}}"#,
            br#"{"status":"success","action":"continue","result":{"type":"sip","trunk":"unknown"}}"#,
            br#"{"status":"success","action":"continue","result":{"type":"policy"}}"#,
            br#"{"status":"success","action":"reject","result":{"status":200}}"#,
        ] {
            assert!(
                matches!(parse_answer(body, &ctx()), Err(PolicyError::BadAnswer(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
