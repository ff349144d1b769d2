//! The signalling core, sans-IO: bytes from any SIP transport in, bytes and
//! store changes out.
//!
//! Owns the transaction layer and the registrar and decides what every request
//! gets: REGISTER goes to the registrar, OPTIONS is answered 200 (room systems
//! use it as a keepalive), other methods get 405 with Allow, and malformed
//! messages get 400 (or 416/505/513) when a response can be formed at all,
//! else they are dropped. It also sends OPTIONS keepalives to registered
//! contacts over the flow they registered on.
//!
//! Trunks with `register = true` are registered to (the client state
//! machine is [`crate::trunks`]); their REGISTERs go through the same
//! transaction layer.
//!
//! An INVITE gets 100 Trying and a [`GwOutput::Route`] asking the shell to
//! run the dialplan (and any policy query); the [`Decision`] comes back
//! through [`Gateway::routed`]. Rejections go out with the dialplan's status;
//! a target with no registrations falls through its fallback list. CANCEL of
//! a call still being routed gets 200 and the INVITE 487.
//!
//! The echo service is answered here as a UAS (module `echo`). Browser calls
//! to registered SIP contacts are placed with [`Gateway::dial`]; SIP calls
//! routed to registered contacts, SIP URIs or trunks ask the shell for media
//! ports ([`GwOutput::BridgeMedia`], [`Gateway::bridge_ready`]) and are then
//! placed with the caller's offer re-offered. Both kinds are run by
//! [`crate::b2bua`]: SIP responses, in-dialog requests, ACKs and CANCELs of
//! its calls are handed there by Call-ID, and what it decides for media and
//! the browser leaves as [`GwOutput::Call`]. Time comes in as parameters; it
//! must not touch sockets, clocks or disk.

mod bridge;
mod echo;

pub use bridge::{BrowserDial, SipPorts};

use crate::b2bua::{B2bua, CallOutput, Notice};
use crate::config::Config;
use crate::dialplan::{CallInfo, Protocol, Reach};
use crate::policy::Decision;
use crate::registrar::auth::AuthResult;
use crate::registrar::store::StoreOp;
use crate::registrar::{Binding, Registrar};
use crate::sdp::Answer;
use crate::sip::dialog::{DialogId, DialogOutput, Dialogs};
use crate::sip::msg::{Message, Method, NameAddr, StartLine, Uri, random_token, response_to};
use crate::sip::timer::Grant;
use crate::sip::transaction::{Output, TransactionLayer, TxEvent, TxKey};
use crate::sip::{ConnId, Flow};
use crate::trunks::{OutboundRegistration, TrunkStatus, TrunkTarget};
use bytes::Bytes;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// An INVITE body we can read: none, SDP, or multipart holding SDP.
fn acceptable_body(msg: &Message) -> bool {
    if msg.body.is_empty() {
        return true;
    }
    let ct = msg.header("Content-Type").unwrap_or("application/sdp");
    let mime = ct.split(';').next().unwrap_or_default().trim();
    mime.eq_ignore_ascii_case("application/sdp") || mime.eq_ignore_ascii_case("multipart/mixed")
}

/// Whether the sender accepts an SDP answer (no Accept header means yes).
fn accepts_sdp(msg: &Message) -> bool {
    let mut accept = msg.header_list("Accept").peekable();
    if accept.peek().is_none() {
        return true;
    }
    accept.any(|a| {
        let mime = a.split(';').next().unwrap_or_default().trim();
        ["application/sdp", "application/*", "*/*"]
            .iter()
            .any(|m| mime.eq_ignore_ascii_case(m))
    })
}

/// Methods the gateway handles, for Allow headers.
pub const ALLOW: &str = concat!(crate::allow_in_dialog!(), ", REGISTER");

/// Signalling counters, readable from any thread.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    /// SIP messages received.
    pub messages_in: AtomicU64,
    /// SIP messages sent (including retransmissions).
    pub messages_out: AtomicU64,
    /// Messages refused as malformed.
    pub malformed: AtomicU64,
    /// REGISTERs answered 200.
    pub registrations: AtomicU64,
    /// REGISTERs answered 401 (challenges).
    pub challenges: AtomicU64,
    /// REGISTERs answered 403.
    pub auth_failures: AtomicU64,
    /// Keepalive OPTIONS that got no answer.
    pub keepalive_timeouts: AtomicU64,
    /// INVITEs handed to the dialplan.
    pub calls_routed: AtomicU64,
    /// INVITEs refused by the dialplan or the policy server (4xx-6xx).
    pub calls_rejected: AtomicU64,
    /// Calls answered by the gateway itself (the echo service).
    pub calls_answered: AtomicU64,
}

/// What the core wants done.
#[derive(Debug)]
pub enum GwOutput {
    /// Send bytes along a flow.
    Transmit {
        /// Where to.
        flow: Flow,
        /// What.
        data: Bytes,
    },
    /// Persist registrar changes.
    Store(Vec<StoreOp>),
    /// Route a new call; answer with [`Gateway::routed`] and the same key.
    Route {
        /// The INVITE's server transaction.
        key: TxKey,
        /// What the dialplan may look at.
        call: CallInfo,
    },
    /// Open media for a call the gateway answers itself: bind a port per
    /// accepted stream and report them with [`Gateway::media_ready`].
    OpenMedia {
        /// The dialog (names the media until [`GwOutput::CloseMedia`]).
        dialog: DialogId,
        /// The negotiated streams.
        answer: Answer,
    },
    /// The call ended: release its media.
    CloseMedia {
        /// The dialog.
        dialog: DialogId,
    },
    /// Something for a bridged call's media or its browser side.
    Call(Notice),
    /// A call from a SIP endpoint is to be bridged: bind RTP ports toward
    /// the caller and toward the callees on `ip`'s family (and for video
    /// toward both when `video`), and report them with
    /// [`Gateway::bridge_ready`].
    BridgeMedia {
        /// The call's id.
        call: String,
        /// Our media address.
        ip: IpAddr,
        /// The caller's video is offered to callees (browsers, SIP).
        video: bool,
        /// It is offered to SIP callees (a video port toward them).
        callee_video: bool,
    },
    /// A bridged call starts (before any notice about it): for its record.
    CallStarted {
        /// The call's id.
        call: String,
        /// Who calls whom, through which rule.
        parties: crate::cdr::CallParties,
    },
}

/// The signalling core.
#[derive(Debug)]
pub struct Gateway {
    tx: TransactionLayer,
    registrar: Registrar,
    user_agent: String,
    domain: String,
    public_ip: Option<IpAddr>,
    tag: String,
    out: VecDeque<GwOutput>,
    counters: Arc<Counters>,
    /// INVITEs waiting for a routing decision.
    routing: HashMap<TxKey, Pending>,
    /// Registrations to trunks.
    trunks: Vec<OutboundRegistration>,
    /// Dialogs answered here.
    dialogs: Dialogs,
    /// Answered calls waiting for media ports: INVITE transaction and answer.
    opening: HashMap<DialogId, (TxKey, Answer)>,
    /// Bridged calls.
    b2bua: B2bua,
    /// Session-timer settings (RFC 4028).
    timers: crate::sip::timer::SessionTimers,
    /// SIP calls to bridge whose media ports are being bound.
    bridging: HashMap<String, bridge::PendingBridge>,
    /// Our listeners (new flows toward SIP URIs and trunks start there).
    listeners: Vec<(crate::sip::Transport, std::net::SocketAddr)>,
    /// Trunks by name, resolved.
    trunk_peers: HashMap<String, TrunkTarget>,
    /// Browsers registered through the client API: alias (lower case) ->
    /// (participant, until unix seconds).
    browsers: HashMap<String, Vec<(String, u64)>>,
}

impl Gateway {
    /// A core with an empty registrar.
    pub fn new(cfg: &Config, counters: Arc<Counters>) -> Self {
        Self {
            tx: TransactionLayer::new(),
            registrar: Registrar::new(cfg),
            user_agent: cfg.sip.user_agent.clone(),
            domain: cfg.sip.domain.clone(),
            public_ip: cfg.sip.public_address,
            tag: random_token(10),
            out: VecDeque::new(),
            counters,
            routing: HashMap::new(),
            trunks: Vec::new(),
            dialogs: Dialogs::default(),
            opening: HashMap::new(),
            b2bua: B2bua::new(cfg.sip.session_timers().min_se),
            timers: cfg.sip.session_timers(),
            bridging: HashMap::new(),
            listeners: Vec::new(),
            trunk_peers: HashMap::new(),
            browsers: HashMap::new(),
        }
    }

    /// Starts registering to a trunk (the runtime resolved its address).
    pub fn add_trunk(&mut self, now: Instant, wall: u64, target: TrunkTarget) {
        self.trunks.push(OutboundRegistration::new(target, now));
        self.send_due_registers(now);
        self.pump(now, wall);
    }

    /// Trunk registration states.
    pub fn trunk_status(&self) -> Vec<TrunkStatus> {
        self.trunks.iter().map(|t| t.status().clone()).collect()
    }

    fn send_due_registers(&mut self, now: Instant) {
        for i in 0..self.trunks.len() {
            let flow = self.trunks[i].flow();
            let via_host = self.advertised(&flow);
            if let Some(req) = self.trunks[i].poll_register(now, &via_host, &self.user_agent) {
                self.tx.send_request(now, &req, flow);
            }
        }
    }

    /// The registrar (to restore bindings or read them).
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Mutable registrar access (restore at start, tests).
    pub fn registrar_mut(&mut self) -> &mut Registrar {
        &mut self.registrar
    }

    /// Handles one message from the wire.
    pub fn handle_datagram(&mut self, now: Instant, wall: u64, flow: Flow, data: &[u8]) {
        self.counters.messages_in.fetch_add(1, Relaxed);
        match Message::parse_checked(data) {
            Ok(msg) => {
                self.tx.handle_message(now, msg, flow);
                self.pump(now, wall);
            }
            Err(e) => {
                self.counters.malformed.fetch_add(1, Relaxed);
                tracing::debug!(remote = %flow.remote, error = %e, "malformed SIP message");
                self.reject_malformed(data, flow, e);
            }
        }
    }

    /// Answers a malformed request when it carries enough to route a response.
    fn reject_malformed(&mut self, data: &[u8], flow: Flow, e: crate::sip::msg::ParseError) {
        let Some(msg) = Message::parse_lenient(data) else {
            return;
        };
        let StartLine::Request { method, .. } = &msg.start else {
            return;
        };
        // The response goes back to the source address, so a Via that does
        // not parse can still be echoed; without these headers it cannot.
        let routable = msg.header("Via").is_some()
            && ["From", "To", "Call-ID", "CSeq"]
                .iter()
                .all(|h| msg.header(h).is_some());
        if *method == Method::Ack || !routable {
            return;
        }
        let (code, reason) = e.status();
        let mut resp = response_to(&msg, code, reason, Some(&self.tag), Some(flow.remote));
        resp.push_header("Server", self.user_agent.clone());
        self.emit(flow, resp.to_bytes());
    }

    /// Fires due timers and trunk registrations.
    pub fn handle_timeout(&mut self, now: Instant, wall: u64) {
        self.tx.handle_timeout(now);
        for o in self.dialogs.handle_timeout(now) {
            match o {
                DialogOutput::Retransmit(flow, data) => self.emit(flow, data),
                // RFC 3261 13.3.1.4: no ACK, so end the session with a BYE.
                DialogOutput::AckTimeout(dialog) => self.hang_up(now, dialog, "no ACK for the 200"),
                // The echo service sends no provisional response to acknowledge.
                DialogOutput::PrackTimeout(_) => {}
            }
        }
        self.b2bua.handle_timeout(now);
        self.send_due_registers(now);
        self.pump(now, wall);
    }

    /// Once a second or so: drop expired bindings and stale auth state.
    pub fn tick(&mut self, wall: u64) {
        self.registrar.expire(wall);
        // Browsers whose token lapsed without a release (a closed tab).
        for regs in self.browsers.values_mut() {
            regs.retain(|(_, until)| *until > wall);
        }
        self.browsers.retain(|_, regs| !regs.is_empty());
    }

    /// When [`Gateway::handle_timeout`] next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.trunks
            .iter()
            .filter_map(OutboundRegistration::next_send)
            .chain(self.tx.poll_timeout())
            .chain(self.dialogs.poll_timeout())
            .chain(self.b2bua.poll_timeout())
            .min()
    }

    /// A stream connection closed.
    pub fn connection_closed(&mut self, conn: ConnId) {
        self.registrar.connection_closed(conn);
    }

    /// Sends OPTIONS to every registered contact along its registration flow.
    pub fn send_keepalives(&mut self, now: Instant, wall: u64) {
        let targets: Vec<Binding> = self.registrar.all(wall).cloned().collect();
        for b in targets {
            let flow = b.flow();
            let req = self.options_request(&b.contact, &flow);
            self.tx.send_request(now, &req, flow);
        }
        self.pump(now, wall);
    }

    fn options_request(&self, contact: &str, flow: &Flow) -> Message {
        let host = self.advertised(flow);
        let text = format!(
            "OPTIONS {contact} SIP/2.0\r\n\
             Via: SIP/2.0/{} {host};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:causeway@{}>;tag={}\r\n\
             To: <{contact}>\r\n\
             Call-ID: {}@{}\r\n\
             CSeq: 1 OPTIONS\r\n\
             User-Agent: {}\r\n\
             Content-Length: 0\r\n\r\n",
            flow.transport.via_name(),
            random_token(16),
            self.domain,
            random_token(8),
            random_token(16),
            self.domain,
            self.user_agent,
        );
        // Built from our own parts, so it parses; a contact that breaks it is skipped upstream.
        Message::parse(text.as_bytes()).unwrap_or_else(|_| Message {
            start: StartLine::Request {
                method: Method::Options,
                uri: "sip:invalid".into(),
            },
            headers: vec![],
            body: Bytes::new(),
        })
    }

    /// The host:port to put in our Via for a flow.
    fn advertised(&self, flow: &Flow) -> String {
        match self.advertised_ip(flow) {
            IpAddr::V6(v6) => format!("[{v6}]:{}", flow.local.port()),
            IpAddr::V4(v4) => format!("{v4}:{}", flow.local.port()),
        }
    }

    /// The address to advertise (Via, Contact, SDP) toward a flow's peer.
    fn advertised_ip(&self, flow: &Flow) -> IpAddr {
        match (self.public_ip, flow.local.ip()) {
            (Some(ip), _) => ip,
            (None, ip) if !ip.is_unspecified() => ip,
            // Bound to the wildcard: the peer reached us at the address it sent from, if local.
            (None, _) if flow.remote.ip().is_loopback() => flow.remote.ip(),
            (None, ip) => ip,
        }
    }

    fn emit(&mut self, flow: Flow, data: Bytes) {
        self.counters.messages_out.fetch_add(1, Relaxed);
        self.out.push_back(GwOutput::Transmit { flow, data });
    }

    /// Drains the transaction layer, deciding each new request, and the
    /// call layer, until neither has anything left.
    fn pump(&mut self, now: Instant, wall: u64) {
        loop {
            self.pump_tx(now, wall);
            if !self.pump_calls(now) {
                break;
            }
        }
    }

    /// Carries out what the call layer asked; false when it asked nothing.
    fn pump_calls(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(o) = self.b2bua.poll_output() {
            any = true;
            match o {
                CallOutput::Request(msg, flow) => {
                    if let Some(key) = self.tx.send_request(now, &msg, flow) {
                        self.b2bua.sent(&msg, key);
                    }
                }
                CallOutput::Transmit(flow, data) => self.emit(flow, data),
                CallOutput::Respond(key, msg) => {
                    self.tx.respond(now, &key, &msg);
                }
                CallOutput::Abandon(key) => self.tx.abandon(&key),
                CallOutput::Notice(n) => self.out.push_back(GwOutput::Call(n)),
            }
        }
        any
    }

    fn pump_tx(&mut self, now: Instant, wall: u64) {
        while let Some(o) = self.tx.poll_output() {
            match o {
                Output::Transmit { flow, data } => self.emit(flow, data),
                Output::Event(TxEvent::Request {
                    key: Some(key),
                    msg,
                    flow,
                }) => {
                    self.on_request(now, wall, key, msg, flow);
                }
                // ACK to a 2xx: the call is up.
                Output::Event(TxEvent::Request { key: None, msg, .. }) => {
                    if let Some(id) = self.dialogs.matching(&msg) {
                        self.dialogs.on_ack(id);
                    } else {
                        self.b2bua.on_ack(now, &msg);
                    }
                }
                Output::Event(TxEvent::Response { msg, .. }) if self.b2bua.owns(msg.call_id()) => {
                    self.b2bua.on_response(now, &msg);
                }
                Output::Event(TxEvent::Response { msg, .. }) => {
                    match self
                        .trunks
                        .iter_mut()
                        .find(|t| t.call_id() == msg.call_id())
                    {
                        Some(t) => {
                            t.on_response(now, wall, &msg);
                            self.send_due_registers(now);
                        }
                        None => {
                            tracing::trace!(status = ?msg.status(), "keepalive or BYE answered")
                        }
                    }
                }
                // Our INVITEs (forks) and INFOs (digits, one in flight per
                // side) are the call layer's.
                Output::Event(TxEvent::Timeout { key })
                    if matches!(key.method(), Method::Invite | Method::Info) =>
                {
                    self.b2bua.on_timeout(now, &key);
                }
                Output::Event(TxEvent::Timeout { key }) => {
                    match self.trunks.iter_mut().find(|t| t.owns_branch(key.branch())) {
                        Some(t) => t.on_timeout(now),
                        None if *key.method() == Method::Options => {
                            self.counters.keepalive_timeouts.fetch_add(1, Relaxed);
                            tracing::debug!(branch = key.branch(), "keepalive OPTIONS timed out");
                        }
                        None => tracing::debug!(method = %key.method(), "our request timed out"),
                    }
                }
            }
        }
    }

    fn on_request(&mut self, now: Instant, wall: u64, key: TxKey, msg: Message, flow: Flow) {
        if has_to_tag(&msg)
            && self.b2bua.owns(msg.call_id())
            && self.b2bua.on_request(now, &key, &msg, flow)
        {
            return;
        }
        let method = msg.method().unwrap_or(Method::Other(String::new()));
        let tag = self.tag.clone();
        let reply =
            |code, reason: &str| response_to(&msg, code, reason, Some(&tag), Some(flow.remote));
        let with = |mut r: Message, name: &str, value: &str| {
            r.push_header(name, value);
            r
        };
        let unsupported = crate::sip::unsupported(&msg);
        let too_small = match method {
            Method::Invite if !has_to_tag(&msg) => match self.timers.grant(&msg) {
                Grant::TooSmall(min) => Some(min),
                _ => None,
            },
            _ => None,
        };
        let mut resp = match method {
            Method::Register => {
                let outcome = self.registrar.handle(wall, &msg, &flow);
                match outcome.response.status() {
                    Some(200) => self.counters.registrations.fetch_add(1, Relaxed),
                    Some(401) => self.counters.challenges.fetch_add(1, Relaxed),
                    Some(403) => self.counters.auth_failures.fetch_add(1, Relaxed),
                    _ => 0,
                };
                if !outcome.ops.is_empty() {
                    self.out.push_back(GwOutput::Store(outcome.ops));
                }
                outcome.response
            }
            // Extensions we do not support (RFC 3261 8.2.2.3).
            Method::Options | Method::Invite | Method::Bye if unsupported.is_some() => with(
                reply(420, "Bad Extension"),
                "Unsupported",
                unsupported.as_deref().unwrap_or_default(),
            ),
            // A session timer shorter than we allow (RFC 4028 section 9).
            Method::Invite if too_small.is_some() => with(
                reply(422, "Session Interval Too Small"),
                "Min-SE",
                &too_small.unwrap_or_default().to_string(),
            ),
            Method::Options => with(
                with(reply(200, "OK"), "Allow", ALLOW),
                "Accept",
                "application/sdp",
            ),
            Method::Invite if !acceptable_body(&msg) => with(
                reply(415, "Unsupported Media Type"),
                "Accept",
                "application/sdp",
            ),
            Method::Invite if !accepts_sdp(&msg) => with(
                reply(406, "Not Acceptable"),
                "Warning",
                "399 causeway \"only application/sdp answers\"",
            ),
            Method::Invite if has_to_tag(&msg) => match self.dialogs.matching(&msg) {
                // Session changes are the call layer's; the session goes on unchanged.
                Some(_) => with(
                    reply(488, "Not Acceptable Here"),
                    "Warning",
                    "399 causeway \"the echo service does not renegotiate\"",
                ),
                None => reply(481, "Call/Transaction Does Not Exist"),
            },
            // A loop, or a path too long: we would forward it with 0
            // (RFC 7332 section 3, RFC 3261 16.3).
            Method::Invite if crate::sip::max_forwards(&msg) == 0 => reply(483, "Too Many Hops"),
            Method::Invite => {
                let mut trying = reply(100, "Trying");
                trying.push_header("Server", self.user_agent.clone());
                self.tx.respond(now, &key, &trying);
                let mut call = self.call_info(&msg, &flow, wall);
                let credentials = self.credentials(&msg, &flow, wall, &mut call);
                self.counters.calls_routed.fetch_add(1, Relaxed);
                let pending = Pending {
                    msg,
                    flow,
                    credentials,
                };
                self.routing.insert(key.clone(), pending);
                self.out.push_back(GwOutput::Route { key, call });
                return;
            }
            Method::Cancel => {
                let invite = key.for_method(Method::Invite);
                if let Some(Pending {
                    msg: inv,
                    flow: inv_flow,
                    ..
                }) = self.routing.remove(&invite)
                {
                    let mut terminated = response_to(
                        &inv,
                        487,
                        "Request Terminated",
                        Some(&tag),
                        Some(inv_flow.remote),
                    );
                    terminated.push_header("Server", self.user_agent.clone());
                    self.tx.respond(now, &invite, &terminated);
                    reply(200, "OK")
                } else if let Some(dialog) = self
                    .opening
                    .iter()
                    .find_map(|(id, (k, _))| (*k == invite).then_some(*id))
                {
                    self.opening.remove(&dialog);
                    if let Some(d) = self.dialogs.remove(dialog) {
                        let terminated = self.dialog_response(&d, 487, "Request Terminated");
                        self.tx.respond(now, &invite, &terminated);
                    }
                    self.out.push_back(GwOutput::CloseMedia { dialog });
                    reply(200, "OK")
                } else if self.b2bua.on_cancel(now, msg.call_id(), &invite) {
                    reply(200, "OK")
                } else {
                    reply(481, "Call/Transaction Does Not Exist")
                }
            }
            Method::Bye => match self.dialogs.matching(&msg) {
                Some(dialog) => {
                    self.dialogs.remove(dialog);
                    self.opening.remove(&dialog);
                    self.out.push_back(GwOutput::CloseMedia { dialog });
                    tracing::info!(dialog, "call ended by BYE");
                    reply(200, "OK")
                }
                None => reply(481, "Call/Transaction Does Not Exist"),
            },
            // INFO in an echo call (digits are heard in its RTP); bridged
            // calls took theirs above.
            Method::Info => match self.dialogs.matching(&msg) {
                Some(_) => reply(200, "OK"),
                None => reply(481, "Call/Transaction Does Not Exist"),
            },
            // UPDATE in an echo call: a session refresh is fine, an offer
            // is refused as the echo's re-INVITEs are.
            Method::Update => match self.dialogs.matching(&msg) {
                Some(_) if msg.body.is_empty() => reply(200, "OK"),
                Some(_) => with(
                    reply(488, "Not Acceptable Here"),
                    "Warning",
                    "399 causeway \"the echo service does not renegotiate\"",
                ),
                None => reply(481, "Call/Transaction Does Not Exist"),
            },
            // A method we have never heard of (RFC 3261 21.5.2).
            Method::Other(_) => with(reply(501, "Not Implemented"), "Allow", ALLOW),
            _ => with(reply(405, "Method Not Allowed"), "Allow", ALLOW),
        };
        resp.push_header("Server", self.user_agent.clone());
        self.tx.respond(now, &key, &resp);
    }

    /// What the dialplan may know about an INVITE.
    fn call_info(&self, msg: &Message, flow: &Flow, wall: u64) -> CallInfo {
        let to = match &msg.start {
            StartLine::Request { uri, .. } => {
                Uri::parse(uri).map_or_else(|_| uri.clone(), |u| self.alias_of(&u))
            }
            StartLine::Response { .. } => String::new(),
        };
        let from_uri = msg
            .header("From")
            .and_then(|f| NameAddr::parse(f).ok())
            .map(|n| n.uri);
        let from = from_uri
            .as_ref()
            .map(|u| self.alias_of(u))
            .unwrap_or_default();
        // Registered: the caller's address of record has a binding from this source.
        let registered = from_uri.is_some_and(|u| {
            self.registrar
                .lookup(&u.aor(), wall)
                .iter()
                .any(|b| b.source.ip() == flow.remote.ip())
        });
        CallInfo {
            to,
            from,
            protocol: Protocol::Sip,
            source_ip: Some(flow.remote.ip()),
            transport: Some(flow.transport),
            registered,
            at: i64::try_from(wall).unwrap_or(i64::MAX),
        }
    }

    /// Authenticates an INVITE whose caller is not registered from its
    /// source (`None` when it is): without credentials that is the
    /// challenge to send should its rule want `auth`; an authenticated
    /// caller counts as registered for the dialplan. The From user must be
    /// the user who authenticated.
    fn credentials(
        &mut self,
        msg: &Message,
        flow: &Flow,
        wall: u64,
        call: &mut CallInfo,
    ) -> Option<AuthResult> {
        if call.registered {
            return None;
        }
        let user = msg
            .header("From")
            .and_then(|f| NameAddr::parse(f).ok())
            .and_then(|n| n.uri.user)
            .map(|u| crate::sip::msg::unescape(&u))
            .unwrap_or_default();
        let verdict =
            self.registrar
                .authenticator()
                .authenticate(wall, msg, flow.remote.ip(), &user);
        call.registered = matches!(verdict, AuthResult::Ok(_));
        Some(verdict)
    }

    /// The alias a SIP URI stands for: the user part when the host is this
    /// gateway (its domain, `localhost` or any IP literal: devices dial
    /// `sip:1234@<gateway IP>`), else `user@host`; the host alone without a user.
    fn alias_of(&self, u: &Uri) -> String {
        let host = u.host.to_ascii_lowercase();
        let ours = host == self.domain.to_ascii_lowercase()
            || host == "localhost"
            || host.parse::<IpAddr>().is_ok();
        match &u.user {
            Some(user) if ours => crate::sip::msg::unescape(user),
            Some(user) => format!("{}@{host}", crate::sip::msg::unescape(user)),
            None => host,
        }
    }

    /// The routing decision for an INVITE announced by [`GwOutput::Route`].
    /// A decision for a call cancelled meanwhile is dropped.
    pub fn routed(&mut self, now: Instant, wall: u64, key: &TxKey, decision: Decision) {
        let Some(Pending {
            msg,
            flow,
            credentials,
        }) = self.routing.remove(key)
        else {
            return;
        };
        let reached = match decision {
            Decision::Reject {
                status,
                reason,
                rule,
            } => {
                tracing::info!(
                    rule = rule.as_deref().unwrap_or("-"),
                    status,
                    "call rejected by the dialplan"
                );
                Reached::Respond(status, reason, vec![])
            }
            // PIN entry over SIP (an IVR) does not exist yet: a PIN-protected
            // alias must not be reachable without one.
            Decision::Route(route) if route.pin.is_some() => {
                tracing::info!(rule = route.rule, "PIN-protected alias refused");
                Reached::Respond(
                    403,
                    "Forbidden".into(),
                    vec![(
                        "Warning",
                        format!(
                            "399 causeway \"rule {} needs a PIN; PIN entry over SIP is not supported yet\"",
                            route.rule
                        ),
                    )],
                )
            }
            Decision::Route(route)
                if route.auth
                    && credentials
                        .as_ref()
                        .is_some_and(|c| !matches!(c, AuthResult::Ok(_))) =>
            {
                tracing::info!(rule = route.rule, "the rule wants an authenticated caller");
                match credentials {
                    Some(AuthResult::Challenge(values)) => Reached::Respond(
                        407,
                        "Proxy Authentication Required".into(),
                        values
                            .into_iter()
                            .map(|v| ("Proxy-Authenticate", v))
                            .collect(),
                    ),
                    Some(AuthResult::Malformed) => {
                        Reached::Respond(400, "Malformed Proxy-Authorization".into(), vec![])
                    }
                    _ => Reached::Respond(403, "Forbidden".into(), vec![]),
                }
            }
            Decision::Route(route) => self.reached(&route, wall),
        };
        match reached {
            Reached::Echo(rule) => self.answer_echo(now, key, &msg, flow, &rule),
            Reached::Bridge { route, callees } => self.bridge(now, key, msg, flow, &route, callees),
            Reached::Respond(code, reason, headers) => {
                self.respond(now, key, &msg, flow, code, &reason, headers)
            }
        }
        self.pump(now, wall);
    }

    /// Sends a final response to an INVITE still in its transaction.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        now: Instant,
        key: &TxKey,
        msg: &Message,
        flow: Flow,
        code: u16,
        reason: &str,
        headers: Vec<(&'static str, String)>,
    ) {
        // A challenge is the first half of an authenticated call, not a
        // refusal.
        if code >= 400 && code != 407 {
            self.counters.calls_rejected.fetch_add(1, Relaxed);
        }
        let mut resp = response_to(msg, code, reason, Some(&self.tag), Some(flow.remote));
        for (name, value) in headers {
            resp.push_header(name, value);
        }
        resp.push_header("Server", self.user_agent.clone());
        self.tx.respond(now, key, &resp);
    }

    /// The address of record an alias names (a user part of our domain,
    /// or `user@host`).
    fn aor(&self, alias: &str) -> String {
        if alias.contains('@') {
            format!("sip:{alias}")
        } else {
            self.registrar.aor_of(alias)
        }
    }

    /// Whether anyone is registered under `alias`.
    pub fn is_registered(&self, alias: &str, wall: u64) -> bool {
        !self.registrar.lookup(&self.aor(alias), wall).is_empty()
            || !self.registered_browsers(alias, wall).is_empty()
    }

    /// What a routed call gets: a reject answers, `echo` is answered
    /// here, and registered contacts, SIP URIs and trunks are called
    /// through the B2BUA.
    fn reached(&self, route: &crate::dialplan::Route, wall: u64) -> Reached {
        let rule = route.rule.as_str();
        match route.reach(|| self.is_registered(&route.to, wall)) {
            Reach::Reject(status, reason) => Reached::Respond(status, reason, vec![]),
            Reach::Echo => {
                tracing::info!(rule, "call routed to the echo service");
                Reached::Echo(rule.to_string())
            }
            Reach::Bridge(target) => match self.callees(route, &target, wall) {
                Ok(callees) => {
                    tracing::info!(
                        rule,
                        target = target.kind(),
                        callees = callees.len(),
                        "call routed to the bridge"
                    );
                    Reached::Bridge {
                        route: Box::new(route.clone()),
                        callees,
                    }
                }
                Err(why) => {
                    tracing::info!(
                        rule,
                        target = target.kind(),
                        why,
                        "call routed; cannot bridge it"
                    );
                    let warning = format!("399 causeway \"rule {rule}: {why}\"");
                    Reached::Respond(
                        480,
                        "Temporarily Unavailable".into(),
                        vec![("Warning", warning)],
                    )
                }
            },
            Reach::Nobody => {
                tracing::info!(rule, "no target of the route is reachable");
                Reached::Respond(480, "Temporarily Unavailable".into(), vec![])
            }
        }
    }

    /// Next output. Everything the transaction layer queued has already been
    /// moved here by the private `pump`, events included.
    pub fn poll_output(&mut self) -> Option<GwOutput> {
        self.out.pop_front()
    }
}

/// An INVITE waiting for its routing decision.
#[derive(Debug)]
struct Pending {
    msg: Message,
    flow: Flow,
    /// Its caller's authentication; `None`: registered from this source.
    credentials: Option<AuthResult>,
}

/// Where a routed call goes.
enum Reached {
    /// A final response: status, reason, headers (a Warning, a challenge).
    Respond(u16, String, Vec<(&'static str, String)>),
    /// The built-in echo service answers (the rule that sent it there).
    Echo(String),
    /// The B2BUA calls these callees.
    Bridge {
        route: Box<crate::dialplan::Route>,
        callees: bridge::Callees,
    },
}

/// Whether a request carries a To tag (is in a dialog).
fn has_to_tag(msg: &Message) -> bool {
    crate::sip::dialog::tag_of(msg, "To").is_some()
}

#[cfg(test)]
mod tests;
