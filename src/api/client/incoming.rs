//! Calls to browsers: a browser registers an alias with a user's
//! credentials (`POST /api/client/v1/registrations`), SIP calls to that
//! alias arrive on its event stream as `incoming_call` with our offer, and
//! it answers (`POST .../calls/{id}/answer`) or declines
//! (`POST .../calls/{id}/disconnect`).
//!
//! Owns the registration endpoint and the incoming-call entries of the
//! call table; the call itself is the B2BUA's (through [`CallCmd`]), the
//! peer the WebRTC task's. Must not touch sockets or str0m.

use super::{CallCmd, CallEntry, ClientApi, ClientEvent, Shared, body, ok, uuid};
use crate::api::ApiError;
use crate::registrar::auth::AuthResult;
use crate::runtime::unix_now;
use crate::runtime::webrtc::HandleError;
use crate::webrtc::{PeerApp, PeerId, WebrtcError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use causeway_codecs::registry::AudioCodec;
use causeway_codecs::video::VideoCodec;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

impl ClientApi {
    /// Rings a registered browser for a SIP call: makes its peer and our
    /// offer of `audio` and `video`, sends `incoming_call`, and reports to
    /// the call layer ([`CallCmd::Offered`]).
    pub fn ring(
        self: &Arc<Self>,
        fork: String,
        participant: String,
        from: String,
        (audio, video): (Vec<AudioCodec>, Vec<VideoCodec>),
    ) {
        let s = self.clone();
        tokio::spawn(async move {
            let result = match s.webrtc.offer_to(audio, video).await {
                Ok((peer, sdp)) => {
                    if s.incoming_call(&participant, &fork, peer, &from, &sdp) {
                        Ok(peer)
                    } else {
                        s.webrtc.close(peer).await;
                        Err(480)
                    }
                }
                Err(HandleError::Refused(WebrtcError::NoCommonCodec)) => Err(488),
                Err(e) => {
                    tracing::warn!(call = %fork, error = %e, "cannot offer a call to a browser");
                    Err(503)
                }
            };
            let _ = s.calls.send(CallCmd::Offered { fork, result });
        });
    }

    /// Offers a call to a registered browser: `true` when its event stream
    /// is open and the `incoming_call` event was sent (the call is then
    /// known as `call_uuid`, held by `participant`).
    pub fn incoming_call(
        &self,
        participant: &str,
        call_uuid: &str,
        peer: PeerId,
        from: &str,
        sdp: &str,
    ) -> bool {
        let mut t = self.tables();
        let Some(p) = t.participants.get(participant) else {
            return false;
        };
        let (Some(alias), Some(tx)) = (p.registered.clone(), p.events.clone()) else {
            return false;
        };
        if tx.receiver_count() == 0 {
            return false;
        }
        t.by_peer.insert(peer, call_uuid.to_string());
        t.calls.insert(
            call_uuid.to_string(),
            CallEntry {
                alias: alias.clone(),
                participant: Some(participant.to_string()),
                peer,
                app: PeerApp::Bridge,
                counters: Default::default(),
                local_sdp: sdp.to_string(),
                remote_sdp: String::new(),
                incoming: Some(false),
                hung_up: false,
            },
        );
        drop(t);
        tracing::info!(call = %call_uuid, alias, from, "incoming call offered to a browser");
        tx.send(ClientEvent {
            name: "incoming_call",
            data: json!({
                "call_uuid": call_uuid,
                "alias": alias,
                "remote_display_name": from,
                "sdp": sdp,
            }),
        })
        .is_ok()
    }
}

#[derive(Debug, Default, Deserialize)]
struct RegistrationRequest {
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

/// `username:password` of an `Authorization: Basic` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, cred) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(cred.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// `POST /api/client/v1/registrations`: `{alias?, username, password,
/// display_name?}` (or Basic credentials). The user's SIP credentials let
/// the browser be reached as the alias (the user's own name unless given)
/// while its token lives.
pub(super) async fn register(
    State(s): Shared,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: RegistrationRequest = body(&raw)?;
    let (user, password) = match (basic(&headers), req.username, req.password) {
        (_, Some(u), Some(p)) => (u, p),
        (Some((u, p)), _, _) => (u, p),
        (None, None, Some(p)) => (req.alias.clone().unwrap_or_default(), p),
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "credentials are required: username and password (or Basic)",
            ));
        }
    };
    let alias = req.alias.unwrap_or_else(|| user.clone());
    if alias.trim().is_empty() || user.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "an alias (or username) is required",
        ));
    }
    let verdict = s
        .auth()
        .check_password(unix_now(), &user, &password, source.ip());
    if verdict != AuthResult::Ok(user.clone()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "wrong credentials"));
    }
    if !alias.eq_ignore_ascii_case(&user) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("user {user:?} may register only its own alias"),
        ));
    }
    let display_name = req
        .display_name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| alias.clone());
    let (token, claims) = s.issue(&alias, uuid(), display_name);
    s.set_registered(&claims.participant, &alias, claims.expires);
    tracing::info!(alias, participant = %claims.participant, "browser registered");
    ok(json!({
        "token": token,
        "expires": s.ttl,
        "participant_uuid": claims.participant,
        "alias": alias,
        "display_name": claims.display_name,
        "ice_servers": s.ice_servers,
    }))
}

#[derive(Debug, Default, Deserialize)]
struct AnswerRequest {
    #[serde(default)]
    sdp: String,
}

/// `POST .../calls/{id}/answer` `{sdp}`: the browser's answer to an
/// incoming call's offer.
pub(super) async fn answer(
    State(s): Shared,
    Path((alias, call)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let claims = s.claims(&headers, None, &alias)?;
    let req: AnswerRequest = body(&raw)?;
    let entry = s.call_of(&call, &claims)?;
    match entry.incoming {
        Some(false) => {}
        Some(true) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the call is answered already",
            ));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no incoming call {call:?}"),
            ));
        }
    }
    if req.sdp.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body needs an \"sdp\" answer",
        ));
    }
    let theirs = req.sdp.clone();
    let formats = s
        .webrtc
        .answer(entry.peer, req.sdp)
        .await
        .map_err(|e| match e {
            HandleError::Stopped => ApiError::unavailable(),
            HandleError::Refused(e) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
        })?;
    if let Some(c) = s.tables().calls.get_mut(&call) {
        c.incoming = Some(true);
        c.remote_sdp = theirs;
    }
    let _ = s.calls.send(CallCmd::Answered {
        fork: call.clone(),
        formats,
    });
    ok(json!({"call_uuid": call}))
}
