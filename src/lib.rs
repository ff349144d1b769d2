//! # Causeway
//!
//! A SIP/H.323-to-WebRTC interop gateway. Room systems and phones register
//! over SIP; browsers call their aliases over WebRTC; a back-to-back user
//! agent bridges each call, relaying media where both sides share a codec and
//! transcoding where they do not.
//!
//! ```text
//!  room system --SIP (UDP/TCP/TLS/WS)--> sip::transport --> gateway (sans-IO)
//!                                                            |-- sip::transaction
//!                                                            |-- registrar --> store (SQLite, db)
//!                                                            |-- INVITE --> GwOutput::Route
//!                                                            |-- echo: sip::dialog + sdp answer
//!                                                            `-- bridged calls: b2bua (sip::dialog caller, sip::uac forks)
//!  GwOutput::OpenMedia --runtime::media--> sockets + media::session + media::bridge (loop back)
//!  GwOutput::Route --runtime--> policy::decide_local --> dialplan::route (pure)
//!                                `-- a task: policy server (HTTP), when a rule says so
//!  decision --> Gateway::routed --> reject / echo / GwOutput::BridgeMedia --> Gateway::bridge_ready --> b2bua
//!  browser --api::client (CallCmd::Dial)--> webrtc hub (PeerApp::Bridge) + Gateway::dial --> b2bua
//!  b2bua StartMedia --runtime::bridge--> SIP RTP <-> media::bridge (relay | transcode) <-> hub peer
//!                                        or SIP RTP (callee) <-> media::bridge <-> SIP RTP (caller)
//!  b2bua RingBrowser --api::client (incoming_call on SSE)--> browser answer --> Gateway::browser_answered
//!  GwOutput::CallStarted + notices + bridge counters --> cdr::Records --> cdr::store (SQLite) <-- api (cdrs)
//!  dialplans/*.toml --runtime::routing (watch, reload)--> dialplan::Routing <-- api (aliases)
//!  operator --HTTP--> api (axum) --query--> gateway
//! ```
//!
//! Protocol cores ([`sip::msg`], [`sip::transaction`], [`sip::dialog`],
//! [`sip::uac`], [`registrar`], [`gateway`], [`b2bua`], [`cdr`], [`dialplan`], [`sdp`], [`media`],
//! [`webrtc`]) are sans-IO: time is a parameter, bytes come
//! out of `poll_output`. [`runtime`] is the one thin tokio shell that drives
//! them.
//! `../shared/DESIGN.md` (in the workplace) or `docs/` hold the wider map.

#![forbid(unsafe_code)]

pub mod api;
pub mod b2bua;
pub mod cdr;
pub mod config;
pub mod db;
pub mod dialplan;
pub mod gateway;
pub mod media;
pub mod policy;
pub mod registrar;
pub mod runtime;
pub mod sdp;
pub mod sip;
pub mod trunks;
pub mod webrtc;
