//! The HTTP side: the admin API on axum.
//!
//! Owns routing, bearer-token checks and JSON shapes. It reads registrations
//! only by asking the signalling core over a channel ([`Query`]), so it never
//! holds a lock the SIP path needs; dialplan reloads and alias writes go
//! through the runtime's [`PlanSource`] and [`AliasService`] on blocking
//! threads. It must not decide anything about calls or registrations.

pub mod client;

use crate::dialplan::{CallInfo, EphemeralAlias, Protocol, Routing, Target, TimeArg};
use crate::gateway::Counters;
use crate::registrar::Binding;
use crate::runtime::routing::{AliasError, AliasService, PlanSource};
use crate::runtime::{unix_now, wall_i64};
use crate::sip::Transport;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// A question for the signalling core.
#[derive(Debug)]
pub enum Query {
    /// Every live registration binding.
    Registrations(oneshot::Sender<Vec<Binding>>),
    /// Outbound trunk registrations.
    Trunks(oneshot::Sender<Vec<crate::trunks::TrunkStatus>>),
    /// Whether anyone is registered under an alias (a user part, or `user@host`).
    Registered(String, oneshot::Sender<bool>),
    /// Bridged calls in progress.
    Calls(oneshot::Sender<Vec<crate::cdr::CallRecord>>),
    /// Hang up a bridged call; false when there is none by that id.
    HangUp(String, oneshot::Sender<bool>),
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Bearer token for `/api/admin`.
    pub admin_token: Arc<str>,
    /// Where questions go.
    pub queries: mpsc::Sender<Query>,
    /// Signalling counters.
    pub counters: Arc<Counters>,
    /// When the gateway started.
    pub started: Instant,
    /// The dialplan files and their reload state.
    pub plan: Arc<PlanSource>,
    /// The live plan and aliases.
    pub routing: Arc<Routing>,
    /// Ephemeral alias writes.
    pub aliases: Arc<AliasService>,
    /// Records of ended calls.
    pub cdrs: Arc<crate::cdr::store::CdrStore>,
    /// The client API (what it knows of browser sides of calls).
    pub client: Arc<client::ClientApi>,
}

/// An API error as JSON: `{"status": "failed", "reason": ...}`, plus
/// `errors` when there is a list to give (dialplan reload).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
    errors: Option<serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            errors: None,
        }
    }

    fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "gateway is shutting down")
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"status": "failed", "reason": self.reason});
        if let Some(e) = self.errors {
            body["errors"] = e;
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<(StatusCode, Json<serde_json::Value>), ApiError>;

fn success(status: StatusCode, result: impl Serialize) -> ApiResult {
    Ok((status, Json(json!({"status": "success", "result": result}))))
}

/// Runs blocking work (disk) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "worker failed"))
}

/// The built-in web client, embedded so the binary serves it from anywhere.
const WEB_INDEX: &str = include_str!("../../web/index.html");
const WEB_JS: &str = include_str!("../../web/app.js");
const WEB_CSS: &str = include_str!("../../web/style.css");

fn web_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The router for all HTTP endpoints: admin API, client API, WHIP and the
/// web client.
pub fn router(state: ApiState, client: Arc<client::ClientApi>) -> Router {
    let admin = Router::new()
        .route("/api/admin/v1/health", get(health))
        .route("/api/admin/v1/registrations", get(registrations))
        .route("/api/admin/v1/trunks", get(trunks))
        .route("/api/admin/v1/calls", get(calls))
        .route(
            "/api/admin/v1/calls/{call}",
            axum::routing::delete(hang_up_call),
        )
        .route("/api/admin/v1/cdrs", get(cdrs))
        .route("/api/admin/v1/dialplan", get(dialplan_status))
        .route("/api/admin/v1/dialplan/reload", post(dialplan_reload))
        .route("/api/admin/v1/dialplan/route", post(dialplan_route))
        .route(
            "/api/admin/v1/aliases",
            get(list_aliases).post(create_alias),
        )
        .route(
            "/api/admin/v1/aliases/{alias}",
            axum::routing::delete(delete_alias),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let web = Router::new()
        .route(
            "/",
            get(|| async { web_file("text/html; charset=utf-8", WEB_INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { web_file("text/javascript; charset=utf-8", WEB_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { web_file("text/css; charset=utf-8", WEB_CSS) }),
        );
    admin
        .with_state(state)
        .merge(client::router(client))
        .merge(web)
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn require_admin(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if crate::sip::digest::constant_time_eq(t, &s.admin_token) => next.run(req).await,
        _ => {
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

async fn health(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "success",
        "result": {
            "healthy": true,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": s.started.elapsed().as_secs(),
            "sip": &*s.counters,
        }
    }))
}

/// One registration as the admin API shows it.
#[derive(Debug, Serialize)]
struct RegistrationView {
    aor: String,
    contact: String,
    transport: crate::sip::Transport,
    source: String,
    local: String,
    user_agent: String,
    q: f32,
    expires_at: u64,
    expires_in: u64,
    registered_at: u64,
    connected: bool,
}

async fn registrations(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let (tx, rx) = oneshot::channel();
    s.queries
        .send(Query::Registrations(tx))
        .await
        .map_err(|_| ApiError::unavailable())?;
    let mut bindings = rx.await.map_err(|_| ApiError::unavailable())?;
    bindings.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
    let now = crate::runtime::unix_now();
    let list: Vec<RegistrationView> = bindings
        .into_iter()
        .map(|b| RegistrationView {
            connected: b.conn.is_some(),
            aor: b.aor,
            contact: b.contact,
            transport: b.transport,
            source: b.source.to_string(),
            local: b.local.to_string(),
            user_agent: b.user_agent,
            q: f32::from(b.q) / 1000.0,
            expires_in: b.expires_at.saturating_sub(now),
            expires_at: b.expires_at,
            registered_at: b.registered_at,
        })
        .collect();
    Ok(Json(json!({"status": "success", "result": list})))
}

async fn trunks(State(s): State<ApiState>) -> ApiResult {
    let (tx, rx) = oneshot::channel();
    s.queries
        .send(Query::Trunks(tx))
        .await
        .map_err(|_| ApiError::unavailable())?;
    success(
        StatusCode::OK,
        rx.await.map_err(|_| ApiError::unavailable())?,
    )
}

async fn calls(State(s): State<ApiState>) -> ApiResult {
    let (tx, rx) = oneshot::channel();
    s.queries
        .send(Query::Calls(tx))
        .await
        .map_err(|_| ApiError::unavailable())?;
    let mut calls = rx.await.map_err(|_| ApiError::unavailable())?;
    for leg in calls.iter_mut().flat_map(|c| c.legs.iter_mut()) {
        s.client.browser_leg(leg);
    }
    success(StatusCode::OK, calls)
}

async fn hang_up_call(
    State(s): State<ApiState>,
    axum::extract::Path(call): axum::extract::Path<String>,
) -> ApiResult {
    let (tx, rx) = oneshot::channel();
    s.queries
        .send(Query::HangUp(call.clone(), tx))
        .await
        .map_err(|_| ApiError::unavailable())?;
    if rx.await.map_err(|_| ApiError::unavailable())? {
        success(StatusCode::OK, json!({"call": call, "hung_up": true}))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no call {call:?} in progress"),
        ))
    }
}

#[derive(Debug, serde::Deserialize)]
struct CdrQuery {
    /// Unix seconds: calls that ended at or after it.
    since: Option<u64>,
}

async fn cdrs(
    State(s): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<CdrQuery>,
) -> ApiResult {
    let since_ms = q.since.unwrap_or(0).saturating_mul(1000);
    let store = s.cdrs.clone();
    let rows = tokio::task::spawn_blocking(move || store.since(since_ms))
        .await
        .map_err(|_| ApiError::unavailable())?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    success(StatusCode::OK, rows)
}

async fn dialplan_status(State(s): State<ApiState>) -> ApiResult {
    let status = s.plan.status();
    let rules = s.routing.plan().summary();
    success(StatusCode::OK, json!({"plan": status, "rules": rules}))
}

async fn dialplan_reload(State(s): State<ApiState>) -> ApiResult {
    let plan = s.plan.clone();
    match blocking(move || plan.reload(unix_now())).await? {
        Ok(status) => success(StatusCode::OK, status),
        Err(errors) => Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            reason: format!(
                "the dialplan has {} error(s); the previous plan stays",
                errors.len()
            ),
            errors: serde_json::to_value(&errors).ok(),
        }),
    }
}

/// A call to try against the live plan (`POST /api/admin/v1/dialplan/route`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteQuery {
    to: String,
    #[serde(default)]
    from: String,
    #[serde(default = "sip")]
    protocol: Protocol,
    source_ip: Option<std::net::IpAddr>,
    transport: Option<Transport>,
    #[serde(default)]
    registered: bool,
    at: Option<TimeArg>,
}

fn sip() -> Protocol {
    Protocol::Sip
}

async fn dialplan_route(
    State(s): State<ApiState>,
    body: Result<Json<RouteQuery>, JsonRejection>,
) -> ApiResult {
    let Json(q) = body?;
    let at = match &q.at {
        Some(t) => t
            .unix()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?,
        None => wall_i64(),
    };
    let call = CallInfo {
        to: q.to,
        from: q.from,
        protocol: q.protocol,
        source_ip: q.source_ip,
        transport: q.transport,
        registered: q.registered,
        at,
    };
    success(StatusCode::OK, s.routing.route(&call))
}

/// `POST /api/admin/v1/aliases`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAlias {
    alias: String,
    target: Target,
    valid_from: Option<TimeArg>,
    valid_until: TimeArg,
    pin: Option<String>,
}

/// An alias as the API shows it: times in RFC 3339, the PIN never echoed.
fn alias_view(a: &EphemeralAlias, now: i64) -> serde_json::Value {
    let rfc3339 = |t: i64| {
        jiff::Timestamp::from_second(t)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    json!({
        "alias": a.alias,
        "target": a.target,
        "valid_from": a.valid_from.map(rfc3339),
        "valid_until": rfc3339(a.valid_until),
        "expires_in": (a.valid_until - now).max(0),
        "active": a.valid_at(now),
        "pin_protected": a.pin.is_some(),
        "created_at": rfc3339(a.created_at),
    })
}

async fn create_alias(
    State(s): State<ApiState>,
    body: Result<Json<NewAlias>, JsonRejection>,
) -> ApiResult {
    let Json(n) = body?;
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let now = wall_i64();
    let alias = EphemeralAlias {
        alias: n.alias,
        target: n.target,
        valid_from: n
            .valid_from
            .as_ref()
            .map(TimeArg::unix)
            .transpose()
            .map_err(bad)?,
        valid_until: n.valid_until.unix().map_err(bad)?,
        pin: n.pin,
        created_at: now,
    };
    let service = s.aliases.clone();
    match blocking(move || service.create(alias, now)).await? {
        Ok(a) => {
            tracing::info!(
                target = a.target.kind(),
                valid_until = a.valid_until,
                "ephemeral alias created"
            );
            success(StatusCode::CREATED, alias_view(&a, now))
        }
        Err(AliasError::Invalid(e)) => Err(bad(e)),
        Err(e @ AliasError::Exists(_)) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
        Err(e @ AliasError::Storage(_)) => {
            tracing::error!(error = %e, "alias not stored");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "alias could not be stored",
            ))
        }
    }
}

async fn list_aliases(State(s): State<ApiState>) -> ApiResult {
    let now = wall_i64();
    let list: Vec<_> = s
        .aliases
        .list(now)
        .iter()
        .map(|a| alias_view(a, now))
        .collect();
    success(StatusCode::OK, list)
}

async fn delete_alias(State(s): State<ApiState>, Path(alias): Path<String>) -> ApiResult {
    let service = s.aliases.clone();
    match blocking(move || service.delete(&alias, wall_i64())).await? {
        Ok(true) => success(StatusCode::OK, json!({})),
        Ok(false) => Err(ApiError::new(StatusCode::NOT_FOUND, "no such alias")),
        Err(e) => {
            tracing::error!(error = %e, "alias not deleted");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "alias could not be deleted",
            ))
        }
    }
}
