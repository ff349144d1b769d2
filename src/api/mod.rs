//! The HTTP side: the admin API (read side for now) on axum.
//!
//! Owns routing, bearer-token checks and JSON shapes. It reads gateway state
//! only by asking the signalling core over a channel ([`Query`]), so it never
//! holds a lock the SIP path needs. It must not decide anything about calls or
//! registrations.

use crate::gateway::Counters;
use crate::registrar::Binding;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// A question for the signalling core.
#[derive(Debug)]
pub enum Query {
    /// Every live registration binding.
    Registrations(oneshot::Sender<Vec<Binding>>),
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
}

/// An API error as JSON: `{"status": "failed", "reason": ...}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"status": "failed", "reason": self.1}))).into_response()
    }
}

/// The router for all HTTP endpoints.
pub fn router(state: ApiState) -> Router {
    let admin = Router::new()
        .route("/api/admin/v1/health", get(health))
        .route("/api/admin/v1/registrations", get(registrations))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    admin.fallback(not_found).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint")
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
            let mut r =
                ApiError(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
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
    let unavailable = ApiError(StatusCode::SERVICE_UNAVAILABLE, "gateway is shutting down");
    s.queries
        .send(Query::Registrations(tx))
        .await
        .map_err(|_| ApiError(unavailable.0, unavailable.1))?;
    let mut bindings = rx.await.map_err(|_| unavailable)?;
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
