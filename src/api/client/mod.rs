//! The client API (browsers, modelled on Pexip's) and WHIP (RFC 9725).
//!
//! Owns tokens (`tokens`: HMAC-signed, short-lived, bound to one alias
//! and one participant), the calls browsers hold, browser registrations
//! and the calls offered to them (`incoming`), and the per-participant
//! event streams (Server-Sent Events). Calls are routed through the dialplan and
//! the policy server like SIP calls; the peers themselves live in the
//! WebRTC task, reached through [`WebrtcHandle`]. Replies are
//! `{"status": "success", "result": ...}` or `{"status": "failed", "reason": ...}`.
//!
//! Must not touch sockets or str0m: media is the WebRTC task's.

mod incoming;
mod tokens;

pub use tokens::{Claims, TokenError, TokenKey, uuid};

use super::ApiError;
use crate::b2bua::CallEvent;
use crate::config::{Config, IceServerConfig};
use crate::dialplan::{CallInfo, Protocol, Reach, Route, Routing, Target};
use crate::policy::{Decision, PolicyClient};
use crate::runtime::unix_now;
use crate::runtime::webrtc::{HandleError, WebrtcHandle};
use crate::sip::digest::constant_time_eq;
use crate::webrtc::{PeerApp, PeerEvent, PeerFormat, PeerId, WebrtcError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use causeway_codecs::registry::AudioCodec;
use causeway_codecs::video::VideoCodec;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc};

/// One server-sent event: its type and JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientEvent {
    /// SSE `event:` name.
    pub name: &'static str,
    /// SSE `data:` (JSON).
    pub data: Value,
}

/// What the client API asks of the call layer (the signalling task).
#[derive(Debug)]
pub enum CallCmd {
    /// Bridge a browser's call to the SIP contacts registered for `alias`.
    Dial {
        /// The call UUID.
        id: String,
        /// The browser's peer (already answered).
        peer: PeerId,
        /// The called alias (after the dialplan's transforms).
        alias: String,
        /// Where the rule sends it (registered contacts, a SIP URI, a
        /// trunk).
        target: Target,
        /// The rule that routed it.
        rule: String,
        /// The caller's display name.
        display_name: String,
        /// Audio codecs to offer the SIP side, first preferred.
        codecs: Vec<AudioCodec>,
        /// Video codecs to offer the SIP side, first preferred (none: no
        /// video).
        video: Vec<VideoCodec>,
        /// What the browser negotiated.
        formats: Vec<PeerFormat>,
        /// How digits reach the SIP side (the rule's `media.dtmf`).
        dtmf: crate::dialplan::DtmfMode,
        /// Whether the SIP side must be offered SDES-SRTP (`media.srtp`).
        srtp: crate::dialplan::Srtp,
    },
    /// Digits to play toward the far side of a bridged call.
    Dtmf {
        /// The call UUID.
        id: String,
        /// Checked digits.
        digits: String,
    },
    /// A browser registered an alias (or refreshed its token): SIP calls
    /// to the alias ring it until `until` (unix seconds).
    Register {
        /// The alias.
        alias: String,
        /// The registration's participant.
        participant: String,
        /// Expiry, unix seconds.
        until: u64,
    },
    /// A browser's registration ended (token released).
    Unregister {
        /// The registration's participant.
        participant: String,
    },
    /// What became of ringing a browser for an incoming call: its peer,
    /// or the SIP status its fork failed with.
    Offered {
        /// The browser's call UUID.
        fork: String,
        /// The peer, or 480 (nobody listening), 503 (no peer free)...
        result: Result<PeerId, u16>,
    },
    /// A browser answered an incoming call; its peer negotiated `formats`.
    Answered {
        /// The browser's call UUID.
        fork: String,
        /// What the peer negotiated.
        formats: Vec<PeerFormat>,
    },
    /// The browser side of a bridged call ended.
    Gone {
        /// The call UUID.
        id: String,
        /// Why (`hangup`, `ice_timeout`...).
        reason: &'static str,
    },
}

#[derive(Debug, Clone)]
struct CallEntry {
    alias: String,
    /// None for WHIP sessions.
    participant: Option<String>,
    peer: PeerId,
    app: PeerApp,
    /// The latest media counters (and ICE and DTLS state).
    counters: crate::webrtc::MediaCounters,
    /// Our SDP and the browser's (the offer and the answer).
    local_sdp: String,
    remote_sdp: String,
    /// For a call to the browser: whether it answered.
    incoming: Option<bool>,
    /// Hung up through the API: gone for every later request, though the
    /// entry stays until the peer's close is reported.
    hung_up: bool,
}

#[derive(Debug, Default)]
struct Tables {
    calls: HashMap<String, CallEntry>,
    by_peer: HashMap<PeerId, String>,
    /// Participants with a live (or released but unexpired) token.
    participants: HashMap<String, Participant>,
}

#[derive(Debug, Default)]
struct Participant {
    /// When the participant's newest token expires, unix seconds.
    until: u64,
    /// Released: its tokens no longer count.
    released: bool,
    /// The event stream, made when someone first listens.
    events: Option<broadcast::Sender<ClientEvent>>,
    /// The alias it registered (a browser reachable by SIP calls).
    registered: Option<String>,
}

/// Shared state of the client API and WHIP handlers.
#[derive(Debug)]
pub struct ClientApi {
    key: TokenKey,
    ttl: u64,
    ice_servers: Vec<IceServerConfig>,
    whip_token: Option<String>,
    webrtc: WebrtcHandle,
    routing: Arc<Routing>,
    policy: Arc<PolicyClient>,
    queries: mpsc::Sender<super::Query>,
    calls: mpsc::UnboundedSender<CallCmd>,
    tables: Mutex<Tables>,
    /// Checks the credentials of browser registrations.
    /// The registrar's, shared: one set of failure counts and blocks.
    auth: Arc<Mutex<crate::registrar::auth::Authenticator>>,
}

impl ClientApi {
    /// State for the handlers; `webrtc` reaches the peers.
    pub fn new(
        cfg: &Config,
        webrtc: WebrtcHandle,
        routing: Arc<Routing>,
        policy: Arc<PolicyClient>,
        queries: mpsc::Sender<super::Query>,
        calls: mpsc::UnboundedSender<CallCmd>,
        auth: Arc<Mutex<crate::registrar::auth::Authenticator>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            key: TokenKey::random(),
            ttl: u64::from(cfg.webrtc.token_ttl),
            ice_servers: cfg.webrtc.ice_servers.clone(),
            whip_token: cfg.webrtc.whip_token.clone(),
            webrtc,
            routing,
            policy,
            queries,
            calls,
            tables: Mutex::new(Tables::default()),
            auth,
        })
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn auth(&self) -> MutexGuard<'_, crate::registrar::auth::Authenticator> {
        self.auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A browser side of a call in progress, for the admin API: `leg` (its
    /// side, with `browser_call` its id here) completed with its SDPs, ICE
    /// and DTLS state and counters. Unchanged when the call is not known.
    pub fn browser_leg(&self, leg: &mut crate::cdr::LegState) {
        let t = self.tables();
        let Some(c) = leg.browser_call.as_ref().and_then(|id| t.calls.get(id)) else {
            return;
        };
        leg.local_sdp.clone_from(&c.local_sdp);
        leg.remote_sdp.clone_from(&c.remote_sdp);
        leg.ice = Some(c.counters.ice.to_string());
        leg.dtls = Some(c.counters.dtls.to_string());
        leg.packets_in = Some(c.counters.packets_in);
        leg.packets_out = Some(c.counters.packets_out);
        leg.loss_in = Some(c.counters.loss_in);
        leg.rtt_ms = c.counters.rtt_ms;
    }

    /// Marks a participant as registered for `alias` until `until`, and
    /// tells the call layer.
    fn set_registered(&self, participant: &str, alias: &str, until: u64) {
        if let Some(p) = self.tables().participants.get_mut(participant) {
            p.registered = Some(alias.to_string());
        }
        let _ = self.calls.send(CallCmd::Register {
            alias: alias.to_string(),
            participant: participant.to_string(),
            until,
        });
    }

    /// Delivers WebRTC peer events to the participants' streams until the
    /// channel closes.
    pub async fn dispatch(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<(PeerId, PeerEvent)>,
    ) {
        while let Some((peer, ev)) = events.recv().await {
            self.on_peer_event(peer, ev);
        }
    }

    fn on_peer_event(&self, peer: PeerId, ev: PeerEvent) {
        let mut t = self.tables();
        let Some(call_uuid) = t.by_peer.get(&peer).cloned() else {
            return;
        };
        let participant = t.calls.get(&call_uuid).and_then(|c| c.participant.clone());
        let bridged = t
            .calls
            .get(&call_uuid)
            .is_some_and(|c| c.app == PeerApp::Bridge);
        let event = match ev {
            // A bridged call is connected when the far side answers.
            PeerEvent::Connected if bridged => {
                tracing::debug!(call = %call_uuid, "browser media connected");
                if let Some(call) = t.calls.get_mut(&call_uuid) {
                    call.counters.ice = "connected";
                    call.counters.dtls = "connected";
                }
                return;
            }
            PeerEvent::Connected => {
                tracing::info!(call = %call_uuid, "browser call connected");
                ClientEvent {
                    name: "call_state",
                    data: json!({"call_uuid": call_uuid, "state": "connected"}),
                }
            }
            PeerEvent::Dtmf(d) => {
                tracing::info!(call = %call_uuid, digit = %d, "DTMF received from a browser");
                dtmf_event(&call_uuid, d, None)
            }
            PeerEvent::Stats(c) => {
                if let Some(call) = t.calls.get_mut(&call_uuid) {
                    call.counters = c;
                }
                ClientEvent {
                    name: "stats",
                    data: json!({
                        "call_uuid": call_uuid,
                        "packets_in": c.packets_in,
                        "packets_out": c.packets_out,
                        "bytes_in": c.bytes_in,
                        "bytes_out": c.bytes_out,
                        "loss_in": c.loss_in,
                        "rtt_ms": c.rtt_ms,
                    }),
                }
            }
            PeerEvent::Closed(reason) => {
                if bridged {
                    let _ = self.calls.send(CallCmd::Gone {
                        id: call_uuid.clone(),
                        reason: reason.as_str(),
                    });
                }
                t.by_peer.remove(&peer);
                let c = t
                    .calls
                    .remove(&call_uuid)
                    .map(|c| c.counters)
                    .unwrap_or_default();
                tracing::info!(
                    call = %call_uuid,
                    reason = reason.as_str(),
                    packets_in = c.packets_in,
                    packets_out = c.packets_out,
                    "browser call ended"
                );
                ClientEvent {
                    name: "call_state",
                    // The call layer reports calls it ends itself; this one
                    // ended on the browser's side (hang-up, ICE timeout).
                    data: json!({
                        "call_uuid": call_uuid,
                        "state": "disconnected",
                        "reason": reason.as_str(),
                        "by": "browser",
                    }),
                }
            }
        };
        drop(t);
        if let Some(p) = participant {
            self.publish(&p, event);
        }
    }

    /// A digit the far end of a browser's bridged call sent (RFC 4733 from
    /// a SIP endpoint): an SSE `dtmf` event for the browser.
    pub fn far_end_dtmf(&self, peer: PeerId, d: crate::media::dtmf::Digit) {
        let t = self.tables();
        let Some(call_uuid) = t.by_peer.get(&peer).cloned() else {
            return;
        };
        let Some(participant) = t.calls.get(&call_uuid).and_then(|c| c.participant.clone()) else {
            return;
        };
        drop(t);
        self.publish(
            &participant,
            dtmf_event(&call_uuid, d.digit, Some(d.duration_ms)),
        );
    }

    /// What the call layer reports about a bridged call.
    pub fn call_event(&self, call_uuid: &str, ev: &CallEvent) {
        let mut t = self.tables();
        let Some(participant) = t.calls.get(call_uuid).and_then(|c| c.participant.clone()) else {
            return;
        };
        let data = match ev {
            CallEvent::Ringing => json!({"call_uuid": call_uuid, "state": "ringing"}),
            CallEvent::Connected { codec } => {
                json!({"call_uuid": call_uuid, "state": "connected", "remote_codec": codec})
            }
            CallEvent::Ended { by, status, reason } => {
                // The peer closes next; its event must not report the call again.
                if let Some(c) = t.calls.remove(call_uuid) {
                    t.by_peer.remove(&c.peer);
                }
                json!({
                    "call_uuid": call_uuid,
                    "state": if status.is_some() { "failed" } else { "disconnected" },
                    "reason": reason,
                    "by": by.as_str(),
                    "status": status,
                })
            }
        };
        drop(t);
        self.publish(
            &participant,
            ClientEvent {
                name: "call_state",
                data,
            },
        );
    }

    fn publish(&self, participant: &str, event: ClientEvent) {
        if let Some(tx) = self
            .tables()
            .participants
            .get(participant)
            .and_then(|p| p.events.as_ref())
        {
            let _ = tx.send(event);
        }
    }

    /// The token of a request: `token` header, `Authorization: Bearer`, or
    /// (for EventSource, which cannot set headers) the `token` query parameter.
    fn claims(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        alias: &str,
    ) -> Result<Claims, ApiError> {
        let token = headers
            .get("token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| bearer(headers))
            .or(query)
            .map(str::trim)
            .ok_or(TokenError::Missing)?;
        let claims = self.key.verify(token, alias, unix_now())?;
        if self
            .tables()
            .participants
            .get(&claims.participant)
            .is_none_or(|p| p.released)
        {
            return Err(TokenError::Released.into());
        }
        Ok(claims)
    }

    fn issue(&self, alias: &str, participant: String, display_name: String) -> (String, Claims) {
        let claims = Claims {
            alias: alias.to_string(),
            participant,
            display_name,
            expires: unix_now() + self.ttl,
        };
        let mut t = self.tables();
        let now = unix_now();
        t.participants.retain(|_, p| p.until > now);
        t.participants
            .entry(claims.participant.clone())
            .or_default()
            .until = claims.expires;
        (self.key.sign(&claims), claims)
    }

    async fn route(&self, alias: &str, from: &str) -> Decision {
        let call = CallInfo {
            to: alias.to_string(),
            from: from.to_string(),
            protocol: Protocol::Webrtc,
            source_ip: None,
            transport: None,
            registered: false,
            at: crate::runtime::wall_i64(),
        };
        crate::policy::decide(&self.routing, &self.policy, &call).await
    }

    async fn registered(&self, alias: &str) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self
            .queries
            .send(super::Query::Registered(alias.to_string(), tx))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Routes a call or token request for `alias` to where it would go:
    /// the route, and the target when it needs the call bridge (`None`:
    /// the echo service).
    async fn resolve(
        &self,
        alias: &str,
        from: &str,
    ) -> Result<(Box<Route>, Option<Target>), ApiError> {
        let route = match self.route(alias, from).await {
            Decision::Route(r) => r,
            Decision::Reject { status, reason, .. } => return Err(rejected(status, reason)),
        };
        // The registrar lives in the signalling task: ask it only if needed.
        let registered = route.has_registered_target() && self.registered(&route.to).await;
        match route.reach(|| registered) {
            Reach::Echo => Ok((route, None)),
            Reach::Bridge(target) => Ok((route, Some(target))),
            Reach::Reject(status, reason) => Err(rejected(status, reason)),
            Reach::Nobody => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("nobody is reachable as {alias:?}"),
            )),
        }
    }

    /// Places a call from a browser or WHIP client: routes it, then opens
    /// the peer the target needs.
    async fn place(
        &self,
        alias: &str,
        from: &str,
        participant: Option<String>,
        sdp: String,
    ) -> Result<(String, String), ApiError> {
        let (route, bridge) = self.resolve(alias, from).await?;
        // The client API checks the PIN when it issues the token; WHIP has
        // no way to give one.
        if route.pin.is_some() && participant.is_none() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this alias needs a PIN: join through the client API",
            ));
        }
        match &bridge {
            None | Some(Target::Registered | Target::Sip { .. }) => {}
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "rule {:?} routes to a {} target; browser calls reach SIP endpoints (registered, by URI or through a trunk) and the echo service so far",
                        route.rule,
                        other.kind(),
                    ),
                ));
            }
        }
        let app = if bridge.is_some() {
            PeerApp::Bridge
        } else {
            PeerApp::Echo
        };
        let offer = sdp.clone();
        let (peer, answer, formats) = self.webrtc.offer(sdp, app).await.map_err(|e| match e {
            HandleError::Refused(WebrtcError::Full(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            HandleError::Refused(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            HandleError::Stopped => ApiError::unavailable(),
        })?;
        let call_uuid = uuid();
        let codecs = if app == PeerApp::Bridge {
            let codecs = crate::b2bua::sip_offer_codecs(
                &formats,
                &route.media.codecs,
                route.media.transcode,
            );
            if codecs.is_empty() {
                self.webrtc.close(peer).await;
                return Err(ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "no audio codec of the offer may be used on this route",
                ));
            }
            codecs
        } else {
            Vec::new()
        };
        // A call sure to be transcoded needs no wider Opus than the SIP side plays.
        let answer = match crate::b2bua::opus_rate_limit(&formats, &codecs) {
            Some((pt, rate)) => crate::webrtc::limit_opus_rate(&answer, pt, rate),
            None => answer,
        };
        let video = if route.media.video {
            crate::b2bua::browser_video_codecs(&formats, route.media.transcode)
        } else {
            Vec::new()
        };
        tracing::info!(call = %call_uuid, alias, from, rule = %route.rule, "browser call answered");
        let mut t = self.tables();
        t.by_peer.insert(peer, call_uuid.clone());
        t.calls.insert(
            call_uuid.clone(),
            CallEntry {
                alias: alias.to_string(),
                participant,
                peer,
                app,
                counters: Default::default(),
                local_sdp: answer.clone(),
                remote_sdp: offer,
                incoming: None,
                hung_up: false,
            },
        );
        drop(t);
        if let Some(target) = bridge {
            let _ = self.calls.send(CallCmd::Dial {
                id: call_uuid.clone(),
                peer,
                alias: route.to.clone(),
                target,
                rule: route.rule.clone(),
                display_name: from.to_string(),
                codecs,
                video,
                formats,
                dtmf: route.media.dtmf,
                srtp: route.media.srtp,
            });
        }
        Ok((call_uuid, answer))
    }

    fn call_of(&self, call_uuid: &str, claims: &Claims) -> Result<CallEntry, ApiError> {
        self.tables()
            .calls
            .get(call_uuid)
            .filter(|c| !c.hung_up && c.participant.as_deref() == Some(claims.participant.as_str()))
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such call"))
    }

    async fn hang_up(&self, call_uuid: &str) {
        self.hang_up_if(call_uuid, |_| true).await;
    }

    /// Hangs up a call not hung up yet for which `ok` holds; whether it did
    /// (checked and marked under one lock: of two racing requests, one wins).
    async fn hang_up_if(&self, call_uuid: &str, ok: impl Fn(&CallEntry) -> bool) -> bool {
        let peer = self
            .tables()
            .calls
            .get_mut(call_uuid)
            .filter(|c| !c.hung_up && ok(c))
            .map(|c| {
                c.hung_up = true;
                c.peer
            });
        if let Some(peer) = peer {
            self.webrtc.close(peer).await;
        }
        peer.is_some()
    }
}

/// The SSE `dtmf` event: a digit received in a call (with how long it was
/// held, when known).
fn dtmf_event(call_uuid: &str, digit: char, duration_ms: Option<u32>) -> ClientEvent {
    let mut data = json!({"call_uuid": call_uuid, "digit": digit.to_string()});
    if let Some(ms) = duration_ms {
        data["duration_ms"] = ms.into();
    }
    ClientEvent { name: "dtmf", data }
}

/// The credentials of an `Authorization: Bearer` header (the scheme is
/// case-insensitive, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, cred) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| cred.trim())
}

/// A dialplan or policy refusal as an HTTP error.
fn rejected(status: u16, reason: String) -> ApiError {
    let http = match status {
        404 | 604 => StatusCode::NOT_FOUND,
        401 | 407 => StatusCode::UNAUTHORIZED,
        480 | 486 | 503 | 600 => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    };
    ApiError::new(http, format!("{status} {reason}"))
}

type Shared = State<Arc<ClientApi>>;
type ApiResult = Result<Json<Value>, ApiError>;

fn ok(result: Value) -> ApiResult {
    Ok(Json(json!({"status": "success", "result": result})))
}

/// Routes of the client API and WHIP.
pub fn router(state: Arc<ClientApi>) -> Router {
    Router::new()
        .route(
            "/api/client/v1/aliases/{alias}/request_token",
            post(request_token),
        )
        .route(
            "/api/client/v1/aliases/{alias}/refresh_token",
            post(refresh_token),
        )
        .route(
            "/api/client/v1/aliases/{alias}/release_token",
            post(release_token),
        )
        .route("/api/client/v1/aliases/{alias}/events", get(events))
        .route("/api/client/v1/aliases/{alias}/calls", post(new_call))
        .route(
            "/api/client/v1/aliases/{alias}/calls/{call}/dtmf",
            post(send_dtmf),
        )
        .route(
            "/api/client/v1/aliases/{alias}/calls/{call}/disconnect",
            post(disconnect),
        )
        .route(
            "/api/client/v1/aliases/{alias}/calls/{call}/answer",
            post(incoming::answer),
        )
        .route("/api/client/v1/registrations", post(incoming::register))
        .route("/whip/{alias}", post(whip_post))
        .route(
            "/whip/{alias}/{call}",
            delete(whip_delete).patch(whip_patch),
        )
        .with_state(state)
}

/// Parses a JSON body into `T`, with a JSON 400 when it does not fit.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    pin: Option<String>,
}

async fn request_token(State(s): Shared, Path(alias): Path<String>, raw: Bytes) -> ApiResult {
    let req: TokenRequest = body(&raw)?;
    let display_name = match req.display_name.trim() {
        "" => "Guest".to_string(),
        n => n.chars().take(64).collect(),
    };
    let (route, _) = s.resolve(&alias, &display_name).await?;
    if let Some(pin) = &route.pin {
        match &req.pin {
            None => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this alias needs a PIN",
                ));
            }
            Some(p) if !constant_time_eq(p, pin) => {
                return Err(ApiError::new(StatusCode::FORBIDDEN, "invalid PIN"));
            }
            Some(_) => {}
        }
    }
    let (token, claims) = s.issue(&alias, uuid(), display_name);
    ok(json!({
        "token": token,
        "expires": s.ttl,
        "participant_uuid": claims.participant,
        "display_name": claims.display_name,
        "ice_servers": s.ice_servers,
    }))
}

async fn refresh_token(
    State(s): Shared,
    Path(alias): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let claims = s.claims(&headers, None, &alias)?;
    let (token, fresh) = s.issue(&alias, claims.participant, claims.display_name);
    let registered = s
        .tables()
        .participants
        .get(&fresh.participant)
        .and_then(|p| p.registered.clone());
    if let Some(reg) = registered {
        s.set_registered(&fresh.participant, &reg, fresh.expires);
    }
    ok(json!({"token": token, "expires": s.ttl}))
}

async fn release_token(
    State(s): Shared,
    Path(alias): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let claims = s.claims(&headers, None, &alias)?;
    let calls: Vec<String> = {
        let mut t = s.tables();
        if let Some(p) = t.participants.get_mut(&claims.participant) {
            // Ends the event streams too.
            p.released = true;
            p.events = None;
            if p.registered.take().is_some() {
                let _ = s.calls.send(CallCmd::Unregister {
                    participant: claims.participant.clone(),
                });
            }
        }
        t.calls
            .iter()
            .filter(|(_, c)| c.participant.as_deref() == Some(claims.participant.as_str()))
            .map(|(id, _)| id.clone())
            .collect()
    };
    for c in calls {
        s.hang_up(&c).await;
    }
    ok(json!(null))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn events(
    State(s): Shared,
    Path(alias): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = s.claims(&headers, q.token.as_deref(), &alias)?;
    let rx = s
        .tables()
        .participants
        .get_mut(&claims.participant)
        .map(|p| {
            p.events
                .get_or_insert_with(|| broadcast::channel(64).0)
                .subscribe()
        })
        .ok_or(TokenError::Released)?;
    let hello = Event::default()
        .event("hello")
        .json_data(json!({"participant_uuid": claims.participant, "alias": alias}))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Dropped with the stream (the browser went away): after `rx`, so the
    // stream no longer counts as a listener.
    let guard = Listening {
        api: s.clone(),
        participant: claims.participant.clone(),
    };
    let stream = futures_util::stream::unfold(
        (Some(hello), rx, guard),
        |(first, mut rx, guard)| async move {
            if let Some(h) = first {
                return Some((Ok::<_, std::convert::Infallible>(h), (None, rx, guard)));
            }
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let e = Event::default().event(ev.name).data(ev.data.to_string());
                        return Some((Ok(e), (None, rx, guard)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A participant's open event stream; when the last one closes, calls
/// still ringing that participant's browser fail (480): nobody is there to
/// answer them.
struct Listening {
    api: Arc<ClientApi>,
    participant: String,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let t = self.api.tables();
        let listened = t
            .participants
            .get(&self.participant)
            .and_then(|p| p.events.as_ref())
            .is_some_and(|tx| tx.receiver_count() > 0);
        if listened {
            return;
        }
        for (id, call) in &t.calls {
            if call.incoming == Some(false) && call.participant.as_ref() == Some(&self.participant)
            {
                tracing::info!(call = %id, "the browser's event stream closed while its call rang");
                let _ = self.api.calls.send(CallCmd::Gone {
                    id: id.clone(),
                    reason: "event_stream_closed",
                });
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct CallRequest {
    #[serde(default)]
    sdp: String,
}

async fn new_call(
    State(s): Shared,
    Path(alias): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult {
    let claims = s.claims(&headers, None, &alias)?;
    let req: CallRequest = body(&raw)?;
    if req.sdp.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body needs an \"sdp\" offer",
        ));
    }
    s.publish(
        &claims.participant,
        ClientEvent {
            name: "call_state",
            data: json!({"state": "trying", "alias": alias}),
        },
    );
    let (call_uuid, answer) = s
        .place(
            &alias,
            &claims.display_name,
            Some(claims.participant.clone()),
            req.sdp,
        )
        .await?;
    ok(json!({"call_uuid": call_uuid, "sdp": answer}))
}

#[derive(Debug, Default, Deserialize)]
struct DtmfRequest {
    #[serde(default)]
    digits: String,
}

async fn send_dtmf(
    State(s): Shared,
    Path((alias, call)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult {
    let claims = s.claims(&headers, None, &alias)?;
    let entry = s.call_of(&call, &claims)?;
    let req: DtmfRequest = body(&raw)?;
    if req.digits.is_empty() || req.digits.len() > 32 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "digits: 1 to 32 of 0-9 * # A-D",
        ));
    }
    if let Some(bad) = req
        .digits
        .chars()
        .find(|c| crate::media::dtmf::event_code(*c).is_none())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{bad:?} is not a DTMF digit"),
        ));
    }
    if entry.app == PeerApp::Bridge {
        let _ = s.calls.send(CallCmd::Dtmf {
            id: call.clone(),
            digits: req.digits.clone(),
        });
    }
    // The echo service sends digits straight back, as it does with media.
    if entry.app == PeerApp::Echo {
        for d in req.digits.chars() {
            s.publish(&claims.participant, dtmf_event(&call, d, None));
        }
    }
    ok(json!(true))
}

async fn disconnect(
    State(s): Shared,
    Path((alias, call)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let claims = s.claims(&headers, None, &alias)?;
    s.call_of(&call, &claims)?;
    s.hang_up(&call).await;
    ok(json!(true))
}

async fn whip_post(
    State(s): Shared,
    Path(alias): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    if let Some(want) = &s.whip_token {
        let given = bearer(&headers);
        if !given.is_some_and(|g| constant_time_eq(g, want)) {
            let mut r = ApiError::into_response(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token",
            ));
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/sdp"));
    if !is_sdp {
        return ApiError::into_response(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHIP offer is sent as Content-Type: application/sdp",
        ));
    }
    let Ok(sdp) = String::from_utf8(raw.to_vec()) else {
        return ApiError::into_response(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the offer is not UTF-8",
        ));
    };
    match s.place(&alias, "whip", None, sdp).await {
        Err(e) => ApiError::into_response(e),
        Ok((call_uuid, answer)) => {
            let location = format!("/whip/{}/{call_uuid}", urlencode(&alias));
            let mut r = (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_string()),
                    (header::LOCATION, location),
                    (header::ETAG, format!("\"{call_uuid}\"")),
                ],
                answer,
            )
                .into_response();
            for server in &s.ice_servers {
                for url in &server.urls {
                    let mut link = format!("<{url}>; rel=\"ice-server\"");
                    if let (Some(u), Some(c)) = (&server.username, &server.credential) {
                        link.push_str(&format!(
                            "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                        ));
                    }
                    if let Ok(v) = header::HeaderValue::from_str(&link) {
                        r.headers_mut().append(header::LINK, v);
                    }
                }
            }
            r
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn whip_delete(State(s): Shared, Path((alias, call)): Path<(String, String)>) -> Response {
    let whip = |c: &CallEntry| c.participant.is_none() && c.alias == alias;
    if !s.hang_up_if(&call, whip).await {
        return ApiError::into_response(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such WHIP session",
        ));
    }
    StatusCode::OK.into_response()
}

/// Trickle ICE and ICE restarts are not supported: the server is ICE-lite
/// and its candidates are all in the answer (RFC 9725 section 4.3.1).
async fn whip_patch() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "DELETE")]).into_response()
}
