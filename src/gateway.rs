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
//! a target with no registrations falls through its fallback list; a target
//! that would need the B2BUA gets 480 with a Warning naming the rule until
//! that layer exists. CANCEL of a call still being routed gets 200 and the
//! INVITE 487.
//!
//! The echo service is answered here as a UAS ([`crate::sip::dialog`]): the
//! offer is negotiated ([`crate::sdp`]), [`GwOutput::OpenMedia`] asks the
//! shell for ports, [`Gateway::media_ready`] sends the 200, which is
//! retransmitted until the ACK; BYE ends the call with
//! [`GwOutput::CloseMedia`]. Time comes in as parameters; it must not touch
//! sockets, clocks or disk.

use crate::config::Config;
use crate::dialplan::{CallInfo, Protocol, Target};
use crate::policy::Decision;
use crate::registrar::store::StoreOp;
use crate::registrar::{Binding, Registrar};
use crate::sdp::{self, Answer, AnswerConfig};
use crate::sip::dialog::{DialogId, DialogOutput, Dialogs};
use crate::sip::msg::{Message, Method, NameAddr, StartLine, Uri, random_token, response_to};
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
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER";

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
    routing: HashMap<TxKey, (Message, Flow)>,
    /// Registrations to trunks.
    trunks: Vec<OutboundRegistration>,
    /// Dialogs answered here.
    dialogs: Dialogs,
    /// Answered calls waiting for media ports: INVITE transaction and answer.
    opening: HashMap<DialogId, (TxKey, Answer)>,
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
                DialogOutput::AckTimeout(dialog) => {
                    tracing::info!(dialog, "no ACK for the 200; call dropped");
                    self.out.push_back(GwOutput::CloseMedia { dialog });
                }
            }
        }
        self.send_due_registers(now);
        self.pump(now, wall);
    }

    /// Once a second or so: drop expired bindings and stale auth state.
    pub fn tick(&mut self, wall: u64) {
        self.registrar.expire(wall);
    }

    /// When [`Gateway::handle_timeout`] next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.trunks
            .iter()
            .filter_map(OutboundRegistration::next_send)
            .chain(self.tx.poll_timeout())
            .chain(self.dialogs.poll_timeout())
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

    /// Drains the transaction layer, deciding each new request.
    fn pump(&mut self, now: Instant, wall: u64) {
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
                    }
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
                        None => tracing::trace!(status = ?msg.status(), "keepalive answered"),
                    }
                }
                Output::Event(TxEvent::Timeout { key }) => {
                    match self.trunks.iter_mut().find(|t| t.owns_branch(key.branch())) {
                        Some(t) => t.on_timeout(now),
                        None => {
                            self.counters.keepalive_timeouts.fetch_add(1, Relaxed);
                            tracing::debug!(branch = key.branch(), "keepalive OPTIONS timed out");
                        }
                    }
                }
            }
        }
    }

    fn on_request(&mut self, now: Instant, wall: u64, key: TxKey, msg: Message, flow: Flow) {
        let method = msg.method().unwrap_or(Method::Other(String::new()));
        let tag = self.tag.clone();
        let reply =
            |code, reason: &str| response_to(&msg, code, reason, Some(&tag), Some(flow.remote));
        let with = |mut r: Message, name: &str, value: &str| {
            r.push_header(name, value);
            r
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
            // We support no extension a request could require (RFC 3261 8.2.2.3).
            Method::Options | Method::Invite if msg.header("Require").is_some() => with(
                reply(420, "Bad Extension"),
                "Unsupported",
                msg.header("Require").unwrap_or_default(),
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
            // The INVITE again after our 2xx (its transaction is gone): the 2xx again.
            Method::Invite if self.dialogs.retransmission_of(&msg).is_some() => {
                if let Some((f, ok)) = self
                    .dialogs
                    .retransmission_of(&msg)
                    .and_then(|id| self.dialogs.last_ok(id))
                {
                    self.emit(f, ok);
                }
                return;
            }
            Method::Invite if has_to_tag(&msg) => match self.dialogs.matching(&msg) {
                // Session changes are the call layer's; the session goes on unchanged.
                Some(_) => with(
                    reply(488, "Not Acceptable Here"),
                    "Warning",
                    "399 causeway \"the echo service does not renegotiate\"",
                ),
                None => reply(481, "Call/Transaction Does Not Exist"),
            },
            Method::Invite => {
                let mut trying = reply(100, "Trying");
                trying.push_header("Server", self.user_agent.clone());
                self.tx.respond(now, &key, &trying);
                let call = self.call_info(&msg, &flow, wall);
                self.counters.calls_routed.fetch_add(1, Relaxed);
                self.routing.insert(key.clone(), (msg, flow));
                self.out.push_back(GwOutput::Route { key, call });
                return;
            }
            Method::Cancel => {
                let invite = key.for_method(Method::Invite);
                if let Some((inv, inv_flow)) = self.routing.remove(&invite) {
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
        let Some((msg, flow)) = self.routing.remove(key) else {
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
                Reached::Respond(status, reason, None)
            }
            Decision::Route(route) => {
                let targets = match &route.target {
                    Target::Fallback { targets } => targets.clone(),
                    t => vec![t.clone()],
                };
                self.first_reachable(&route.rule, &route.to, &targets, wall)
            }
        };
        match reached {
            Reached::Echo(rule) => self.answer_echo(now, key, &msg, flow, &rule),
            Reached::Respond(code, reason, warning) => {
                self.respond(now, key, &msg, flow, code, &reason, warning)
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
        warning: Option<String>,
    ) {
        if code >= 400 {
            self.counters.calls_rejected.fetch_add(1, Relaxed);
        }
        let mut resp = response_to(msg, code, reason, Some(&self.tag), Some(flow.remote));
        if let Some(w) = warning {
            resp.push_header("Warning", w);
        }
        resp.push_header("Server", self.user_agent.clone());
        self.tx.respond(now, key, &resp);
    }

    /// Negotiates the echo service's answer and asks the shell for media
    /// ports; the 200 goes out from [`Self::media_ready`]. Offers we cannot
    /// read get 400, offers we cannot take 488, both with a Warning.
    fn answer_echo(&mut self, now: Instant, key: &TxKey, msg: &Message, flow: Flow, rule: &str) {
        // The Warning names the rule, so an admin sees how the call got here.
        let refuse = |this: &mut Self, code, reason: &str, warning: String| {
            let warning = warning.replacen(
                " causeway \"",
                &format!(" causeway \"rule {rule} routes to echo; "),
                1,
            );
            tracing::info!(code, warning, "echo call refused");
            this.respond(now, key, msg, flow, code, reason, Some(warning));
        };
        let Some(body) = sdp_body(msg) else {
            // A late offer would need our offer in the 200 and the answer in the ACK.
            return refuse(
                self,
                488,
                "Not Acceptable Here",
                "399 causeway \"the echo service needs an SDP offer in the INVITE\"".into(),
            );
        };
        let answer = sdp::parse(body).and_then(|offer| sdp::answer(&offer, &echo_codecs()));
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let (code, reason, warning) = e.status();
                return refuse(self, code, reason, warning);
            }
        };
        let Some(dialog) = self.dialogs.create(msg, flow) else {
            return refuse(
                self,
                400,
                "Bad Request",
                "399 causeway \"the INVITE has no From tag\"".into(),
            );
        };
        self.opening.insert(dialog, (key.clone(), answer.clone()));
        self.out.push_back(GwOutput::OpenMedia { dialog, answer });
    }

    /// The shell bound media for a call announced by [`GwOutput::OpenMedia`]:
    /// `ports[i]` for stream `i` (0 for rejected streams), or why it could not
    /// (503). Sends the 200 with the SDP answer.
    pub fn media_ready(
        &mut self,
        now: Instant,
        wall: u64,
        dialog: DialogId,
        ports: Result<Vec<u16>, String>,
    ) {
        let Some((key, answer)) = self.opening.remove(&dialog) else {
            // Cancelled or ended meanwhile.
            self.out.push_back(GwOutput::CloseMedia { dialog });
            return;
        };
        let Some(d) = self.dialogs.get(dialog).cloned() else {
            self.out.push_back(GwOutput::CloseMedia { dialog });
            return;
        };
        let ports = match ports {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "no media ports for a call");
                self.dialogs.remove(dialog);
                let mut busy = self.dialog_response(&d, 503, "Service Unavailable");
                busy.push_header("Retry-After", "5");
                busy.push_header("Warning", "399 causeway \"no media ports available\"");
                self.tx.respond(now, &key, &busy);
                self.pump(now, wall);
                return;
            }
        };
        let ip = self.advertised_ip(&d.flow);
        let body = answer.to_sdp(ip, &ports, u64::from(rand::random::<u32>()), 1);
        let mut ok = self.dialog_response(&d, 200, "OK");
        // A UAS keeps the route set (RFC 3261 12.1.1).
        for rr in d.invite.headers_named("Record-Route") {
            ok.push_header("Record-Route", rr.to_string());
        }
        let transport = match d.flow.transport {
            crate::sip::Transport::Udp => String::new(),
            t => format!(";transport={}", t.via_name().to_ascii_lowercase()),
        };
        ok.push_header(
            "Contact",
            format!("<sip:echo@{}{transport}>", self.advertised(&d.flow)),
        );
        ok.push_header("Allow", ALLOW);
        ok.push_header("Content-Type", "application/sdp");
        ok.body = Bytes::from(body);
        self.counters.calls_answered.fetch_add(1, Relaxed);
        tracing::info!(dialog, "echo call answered");
        self.tx.respond(now, &key, &ok);
        self.dialogs.accepted(now, dialog, ok.to_bytes());
        self.pump(now, wall);
    }

    /// The media of a call went silent (the caller vanished without BYE):
    /// hang up with a BYE and release the media.
    pub fn media_timeout(&mut self, now: Instant, wall: u64, dialog: DialogId) {
        self.opening.remove(&dialog);
        let Some(flow) = self.dialogs.get(dialog).map(|d| d.flow) else {
            return;
        };
        let via = self.advertised(&flow);
        if let Some((bye, flow)) = self.dialogs.bye(dialog, &via, &self.user_agent) {
            tracing::info!(dialog, "no media from the caller; call ended with BYE");
            self.tx.send_request(now, &bye, flow);
        }
        self.out.push_back(GwOutput::CloseMedia { dialog });
        self.pump(now, wall);
    }

    /// A final response to a dialog's INVITE, with our tag and Server.
    fn dialog_response(&self, d: &crate::sip::dialog::Dialog, code: u16, reason: &str) -> Message {
        let mut r = response_to(
            &d.invite,
            code,
            reason,
            Some(&d.local_tag),
            Some(d.flow.remote),
        );
        r.push_header("Server", self.user_agent.clone());
        r
    }

    /// The address a dialog's SDP advertises (the shell binds media on its family).
    pub fn media_address(&self, dialog: DialogId) -> Option<IpAddr> {
        self.dialogs
            .get(dialog)
            .map(|d| self.advertised_ip(&d.flow))
    }

    /// Walks a target list: targets with nobody registered are skipped, a
    /// reject answers, `echo` is answered here, and the first target that
    /// would need the B2BUA gets 480 (calls are not bridged yet).
    fn first_reachable(&self, rule: &str, alias: &str, targets: &[Target], wall: u64) -> Reached {
        for t in targets {
            let pending = match t {
                Target::Reject { .. } => {
                    let (status, reason) = t.rejection().unwrap_or((403, "Forbidden".into()));
                    return Reached::Respond(status, reason, None);
                }
                Target::Echo => {
                    tracing::info!(rule, "call routed to the echo service");
                    return Reached::Echo(rule.to_string());
                }
                Target::Registered => {
                    let aor = if alias.contains('@') {
                        format!("sip:{alias}")
                    } else {
                        self.registrar.aor_of(alias)
                    };
                    !self.registrar.lookup(&aor, wall).is_empty()
                }
                // Nothing registers over H.323 or the client API yet.
                Target::Webrtc | Target::H323 => false,
                Target::Sip { .. } | Target::Policy { .. } | Target::Fallback { .. } => true,
            };
            if pending {
                tracing::info!(
                    rule,
                    target = t.kind(),
                    "call routed; bridging is not available yet"
                );
                let warning = format!(
                    "399 causeway \"rule {rule} routes to {}; calls are not bridged yet\"",
                    t.kind()
                );
                return Reached::Respond(480, "Temporarily Unavailable".into(), Some(warning));
            }
        }
        tracing::info!(rule, "no target of the route is reachable");
        Reached::Respond(480, "Temporarily Unavailable".into(), None)
    }

    /// Next output. Everything the transaction layer queued has already been
    /// moved here by the private `pump`, events included.
    pub fn poll_output(&mut self) -> Option<GwOutput> {
        self.out.pop_front()
    }
}

/// Where a routed call goes.
enum Reached {
    /// A final response: status, reason, Warning.
    Respond(u16, String, Option<String>),
    /// The built-in echo service answers (the rule that sent it there).
    Echo(String),
}

/// What the echo service answers with: every codec it can loop back
/// untouched (it relays, so any codec we can name will do).
fn echo_codecs() -> AnswerConfig {
    use causeway_codecs::registry::AudioCodec;
    let video = ["H264", "VP8"].map(|name| causeway_codecs::CodecKey {
        name: name.into(),
        clock_rate: 90000,
        channels: 1,
    });
    AnswerConfig {
        codecs: [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::G722,
            AudioCodec::Opus,
        ]
        .map(AudioCodec::key)
        .into_iter()
        .chain(video)
        .collect(),
        dtmf: true,
    }
}

/// Whether a request carries a To tag (is in a dialog).
fn has_to_tag(msg: &Message) -> bool {
    msg.header("To")
        .and_then(|t| NameAddr::parse(t).ok())
        .is_some_and(|n| n.tag().is_some())
}

/// The SDP of a request: the body when it is `application/sdp` (the
/// default), or the `application/sdp` part of a `multipart/mixed` body.
fn sdp_body(msg: &Message) -> Option<&str> {
    if msg.body.is_empty() {
        return None;
    }
    let body = std::str::from_utf8(&msg.body).ok()?;
    let ct = msg.header("Content-Type").unwrap_or("application/sdp");
    let mut params = ct.split(';');
    let mime = params.next().unwrap_or_default().trim();
    if mime.eq_ignore_ascii_case("application/sdp") {
        return Some(body);
    }
    let boundary = params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
    })?;
    let delimiter = format!("--{boundary}");
    body.split(delimiter.as_str()).find_map(|part| {
        let (headers, content) = part
            .split_once("\r\n\r\n")
            .or_else(|| part.split_once("\n\n"))?;
        headers
            .to_ascii_lowercase()
            .contains("application/sdp")
            .then(|| content.trim_end_matches(['\r', '\n']))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    fn gw() -> Gateway {
        Gateway::new(&Config::parse("", "t").unwrap(), Arc::default())
    }

    fn flow() -> Flow {
        Flow {
            transport: Transport::Udp,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "127.0.0.1:5099".parse().unwrap(),
            conn: None,
        }
    }

    fn answers(g: &mut Gateway, text: &str) -> Vec<Message> {
        g.handle_datagram(Instant::now(), 0, flow(), text.as_bytes());
        sent(g)
    }

    fn request(method: &str, cseq_method: &str) -> String {
        format!(
            "{method} sip:causeway.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{method}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=x\r\nTo: <sip:c@d>\r\nCall-ID: k\r\nCSeq: 7 {cseq_method}\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn options_gets_200_with_allow() {
        let r = answers(&mut gw(), &request("OPTIONS", "OPTIONS"));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status(), Some(200));
        assert_eq!(r[0].header("Allow"), Some(ALLOW));
        assert!(r[0].header("To").unwrap().contains(";tag="));
    }

    #[test]
    fn unknown_and_unsupported_methods_get_405() {
        for (m, code) in [("SUBSCRIBE", 405), ("FROBNICATE", 501)] {
            let r = answers(&mut gw(), &request(m, m));
            assert_eq!(r[0].status(), Some(code), "{m}");
            assert_eq!(r[0].header("Allow"), Some(ALLOW));
        }
    }

    /// Sends an INVITE; returns the responses so far and the route request.
    fn invite(g: &mut Gateway, branch: &str, uri: &str) -> (Vec<Message>, TxKey, CallInfo) {
        let text = request("INVITE", "INVITE")
            .replacen("sip:causeway.local", uri, 1)
            .replace("z9hG4bKINVITE", branch);
        g.handle_datagram(Instant::now(), 1000, flow(), text.as_bytes());
        let (mut sent, mut route) = (vec![], None);
        while let Some(o) = g.poll_output() {
            match o {
                GwOutput::Transmit { data, .. } => sent.push(Message::parse(&data).unwrap()),
                GwOutput::Route { key, call } => route = Some((key, call)),
                _ => {}
            }
        }
        let (key, call) = route.expect("a route request");
        (sent, key, call)
    }

    fn sent(g: &mut Gateway) -> Vec<Message> {
        let mut v = vec![];
        while let Some(o) = g.poll_output() {
            if let GwOutput::Transmit { data, .. } = o {
                v.push(Message::parse(&data).unwrap());
            }
        }
        v
    }

    /// A 404 decision arriving for a call already answered or cancelled.
    fn late_404(g: &mut Gateway, key: &TxKey) {
        let reject = Decision::Reject {
            status: 404,
            reason: "x".into(),
            rule: None,
        };
        g.routed(Instant::now(), 1000, key, reject);
    }

    #[test]
    fn invite_is_routed_and_answered_with_the_decision() {
        let mut g = gw();
        let (first, key, call) = invite(&mut g, "z9hG4bKa", "sip:echo@127.0.0.1:5060");
        assert_eq!(first[0].status(), Some(100));
        assert_eq!(call.to, "echo");
        assert_eq!(call.from, "a@b", "a foreign domain stays in the alias");
        assert_eq!(call.protocol, Protocol::Sip);
        assert!(!call.registered);
        g.routed(
            Instant::now(),
            1000,
            &key,
            Decision::Reject {
                status: 486,
                reason: "Busy Here".into(),
                rule: Some("busy".into()),
            },
        );
        let r = sent(&mut g);
        assert_eq!(r[0].status(), Some(486));
        assert!(r[0].header("To").unwrap().contains(";tag="));
        assert_eq!(g.counters.calls_rejected.load(Relaxed), 1);
        // A second decision for the same call is ignored.
        late_404(&mut g, &key);
        assert!(sent(&mut g).is_empty());
    }

    #[test]
    fn fallback_skips_targets_nobody_registered_for() {
        let plan = crate::dialplan::Dialplan::embedded_default().unwrap();
        let mut g = gw();
        let (_, key, call) = invite(&mut g, "z9hG4bKb", "sip:bob@causeway.local");
        let crate::dialplan::Verdict::Route(route) = plan.route(&call) else {
            panic!()
        };
        g.routed(Instant::now(), 1000, &key, Decision::Route(route));
        let r = sent(&mut g);
        assert_eq!(
            r[0].status(),
            Some(404),
            "nobody registered: the plan's 404"
        );

        // The plan's echo rule reaches the echo service, which needs an offer.
        let (_, key, call) = invite(&mut g, "z9hG4bKc", "sip:echo@causeway.local");
        let crate::dialplan::Verdict::Route(route) = plan.route(&call) else {
            panic!()
        };
        g.routed(Instant::now(), 1000, &key, Decision::Route(route));
        let r = sent(&mut g);
        assert_eq!(r[0].status(), Some(488));
        assert!(
            r[0].header("Warning")
                .unwrap()
                .contains("needs an SDP offer")
        );
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn echo_invite(g: &mut Gateway, t: Instant, branch: &str, body: &str) -> TxKey {
        let text = request("INVITE", "INVITE")
            .replacen("sip:causeway.local", "sip:echo@127.0.0.1", 1)
            .replace("z9hG4bKINVITE", branch)
            .replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            );
        g.handle_datagram(t, 1000, flow(), text.as_bytes());
        let mut routed = None;
        while let Some(o) = g.poll_output() {
            if let GwOutput::Route { key, call } = o {
                routed = Some((key, call));
            }
        }
        let (key, call) = routed.expect("routed");
        let plan = crate::dialplan::Dialplan::embedded_default().unwrap();
        let crate::dialplan::Verdict::Route(route) = plan.route(&call) else {
            panic!()
        };
        assert_eq!(route.target, Target::Echo);
        g.routed(t, 1000, &key, Decision::Route(route));
        key
    }

    /// Outputs split into messages and media requests.
    fn outputs(g: &mut Gateway) -> (Vec<Message>, Vec<GwOutput>) {
        let (mut msgs, mut other) = (vec![], vec![]);
        while let Some(o) = g.poll_output() {
            match o {
                GwOutput::Transmit { data, .. } => msgs.push(Message::parse(&data).unwrap()),
                o => other.push(o),
            }
        }
        (msgs, other)
    }

    fn in_dialog(method: &str, ok: &Message, cseq: u32) -> String {
        request(method, method)
            .replace("CSeq: 7", &format!("CSeq: {cseq}"))
            .replace(
                &format!("z9hG4bK{method}"),
                &format!("z9hG4bK{method}{cseq}"),
            )
            .replace(
                "To: <sip:c@d>",
                &format!("To: {}", ok.header("To").unwrap()),
            )
    }

    #[test]
    fn echo_answers_with_sdp_retransmits_until_ack_and_ends_on_bye() {
        let t0 = Instant::now();
        let mut g = gw();
        echo_invite(&mut g, t0, "z9hG4bKe1", OFFER);
        let (msgs, media) = outputs(&mut g);
        assert!(msgs.is_empty(), "no answer before media is bound");
        let [GwOutput::OpenMedia { dialog, answer }] = media.as_slice() else {
            panic!("{media:?}")
        };
        assert_eq!(answer.streams[0].as_ref().unwrap().format.pt, 8);
        g.media_ready(t0, 1000, *dialog, Ok(vec![20000]));
        let (msgs, _) = outputs(&mut g);
        let ok = &msgs[0];
        assert_eq!(ok.status(), Some(200));
        assert!(
            ok.header("Contact")
                .unwrap()
                .starts_with("<sip:echo@127.0.0.1:5060")
        );
        let body = std::str::from_utf8(&ok.body).unwrap();
        assert!(body.contains("m=audio 20000 RTP/AVP 8 101\r\n"), "{body}");
        assert!(body.contains("c=IN IP4 127.0.0.1\r\n"), "{body}");
        // No ACK yet: the 200 comes again after T1.
        g.handle_timeout(t0 + crate::sip::transaction::T1, 1000);
        assert_eq!(outputs(&mut g).0[0].status(), Some(200));
        // A retransmitted INVITE gets the 200 too, and is not routed again.
        g.handle_datagram(
            t0,
            1000,
            flow(),
            request("INVITE", "INVITE")
                .replace("z9hG4bKINVITE", "z9hG4bKe1")
                .as_bytes(),
        );
        let (msgs, other) = outputs(&mut g);
        assert_eq!(
            (msgs.len(), msgs[0].status(), other.len()),
            (1, Some(200), 0)
        );
        // ACK stops retransmissions.
        g.handle_datagram(t0, 1000, flow(), in_dialog("ACK", ok, 7).as_bytes());
        assert_eq!(g.poll_timeout(), None);
        // A re-INVITE is refused without ending the call.
        let (msgs, _) = answers_all(&mut g, &in_dialog("INVITE", ok, 8));
        assert_eq!(msgs.last().unwrap().status(), Some(488));
        // BYE: 200 and the media goes.
        let (msgs, media) = answers_all(&mut g, &in_dialog("BYE", ok, 9));
        assert_eq!(msgs[0].status(), Some(200));
        assert!(matches!(media.as_slice(), [GwOutput::CloseMedia { dialog: d }] if d == dialog));
        let (msgs, _) = answers_all(&mut g, &in_dialog("BYE", ok, 10));
        assert_eq!(msgs[0].status(), Some(481));
        assert_eq!(g.counters.calls_answered.load(Relaxed), 1);

        // A caller that vanishes: the media times out and we send BYE.
        echo_invite(&mut g, t0, "z9hG4bKe2", OFFER);
        let (_, media) = outputs(&mut g);
        let [GwOutput::OpenMedia { dialog, .. }] = media.as_slice() else {
            panic!()
        };
        g.media_ready(t0, 1000, *dialog, Ok(vec![20002]));
        outputs(&mut g);
        g.media_timeout(t0, 1000, *dialog);
        let (msgs, media) = outputs(&mut g);
        assert_eq!(msgs[0].method(), Some(Method::Bye));
        assert!(matches!(media.as_slice(), [GwOutput::CloseMedia { .. }]));
    }

    fn answers_all(g: &mut Gateway, text: &str) -> (Vec<Message>, Vec<GwOutput>) {
        g.handle_datagram(Instant::now(), 1000, flow(), text.as_bytes());
        outputs(g)
    }

    #[test]
    fn echo_refusals_carry_the_right_status() {
        let t0 = Instant::now();
        let mut g = gw();
        // No codec in common: 488 with a 305 Warning.
        echo_invite(
            &mut g,
            t0,
            "z9hG4bKr1",
            &OFFER
                .replace("8 101", "18")
                .replace("a=rtpmap:8 PCMA", "a=rtpmap:18 G729"),
        );
        let (msgs, media) = outputs(&mut g);
        assert_eq!(msgs[0].status(), Some(488));
        assert!(msgs[0].header("Warning").unwrap().starts_with("305 "));
        assert!(media.is_empty());
        // Not SDP at all: 400.
        echo_invite(&mut g, t0, "z9hG4bKr2", "hello");
        assert_eq!(outputs(&mut g).0[0].status(), Some(400));
        // No ports: 503 with Retry-After.
        echo_invite(&mut g, t0, "z9hG4bKr3", OFFER);
        let (_, media) = outputs(&mut g);
        let [GwOutput::OpenMedia { dialog, .. }] = media.as_slice() else {
            panic!()
        };
        g.media_ready(t0, 1000, *dialog, Err("full".into()));
        let (msgs, _) = outputs(&mut g);
        assert_eq!(msgs[0].status(), Some(503));
        assert_eq!(msgs[0].header("Retry-After"), Some("5"));
        // CANCEL while ports are being bound: 487, and late ports are released.
        echo_invite(&mut g, t0, "z9hG4bKr4", OFFER);
        let (_, media) = outputs(&mut g);
        let [GwOutput::OpenMedia { dialog, .. }] = media.as_slice() else {
            panic!()
        };
        let cancel = request("CANCEL", "CANCEL").replace("z9hG4bKCANCEL", "z9hG4bKr4");
        let (msgs, media) = answers_all(&mut g, &cancel);
        let codes: Vec<_> = msgs.iter().map(|m| m.status().unwrap()).collect();
        assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
        assert!(matches!(media.as_slice(), [GwOutput::CloseMedia { .. }]));
        g.media_ready(t0, 1000, *dialog, Ok(vec![20000]));
        let (msgs, media) = outputs(&mut g);
        assert!(msgs.is_empty());
        assert!(matches!(media.as_slice(), [GwOutput::CloseMedia { .. }]));
    }

    #[test]
    fn cancel_while_routing_gets_200_and_the_invite_487() {
        let mut g = gw();
        let (_, key, _) = invite(&mut g, "z9hG4bKd", "sip:x@causeway.local");
        let cancel = request("CANCEL", "CANCEL").replace("z9hG4bKCANCEL", "z9hG4bKd");
        let r = answers(&mut g, &cancel);
        let codes: Vec<_> = r.iter().map(|m| m.status().unwrap()).collect();
        assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
        late_404(&mut g, &key);
        assert!(
            sent(&mut g).is_empty(),
            "the cancelled call is not answered again"
        );
        assert_eq!(
            answers(&mut g, &request("CANCEL", "CANCEL"))[0].status(),
            Some(481)
        );
    }

    #[test]
    fn malformed_gets_400_when_answerable_and_is_counted() {
        let mut g = gw();
        let r = answers(&mut g, &request("OPTIONS", "INVITE"));
        assert_eq!(r[0].status(), Some(400));
        assert_eq!(
            r[0].start,
            StartLine::Response {
                code: 400,
                reason: "CSeq Method Does Not Match".into()
            }
        );
        assert!(answers(&mut g, "\u{1}\u{2}garbage\r\n\r\n").is_empty());
        assert!(
            answers(&mut g, &request("ACK", "INVITE")).is_empty(),
            "never answer an ACK"
        );
        assert_eq!(g.counters.malformed.load(Relaxed), 3);
    }
}
