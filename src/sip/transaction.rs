//! The SIP transaction layer (RFC 3261 section 17, with RFC 6026's fix left to
//! the call layer), sans-IO.
//!
//! Owns retransmission and absorption: server transactions answer request
//! retransmissions with the last response and retransmit final INVITE
//! responses until ACK (timers G, H, I, J); client transactions retransmit
//! requests over UDP and time out (timers A, B, D, E, F, K). Time is passed in;
//! bytes and events come out of [`TransactionLayer::poll_output`]. It must not
//! decide what to answer: that is the caller's job.

use super::Flow;
use super::msg::{Message, Method, StartLine};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// RFC 3261 T1: RTT estimate.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: maximum retransmit interval for non-INVITE requests and INVITE responses.
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 T4: maximum time a message stays in the network.
pub const T4: Duration = Duration::from_secs(5);

/// Identifies a transaction: branch, sent-by and method (ACK and CANCEL
/// are matched to the INVITE they concern by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey {
    branch: String,
    sent_by: String,
    method: Method,
}

impl TxKey {
    /// The same branch and sent-by for another method: the INVITE a CANCEL concerns.
    pub fn for_method(&self, method: Method) -> TxKey {
        TxKey {
            method,
            ..self.clone()
        }
    }

    /// The server-side key of a request (RFC 3261 17.2.3); ACK maps to its INVITE.
    pub fn server(req: &Message) -> Option<TxKey> {
        let via = req.top_via()?;
        let mut method = req.method()?;
        if method == Method::Ack {
            method = Method::Invite;
        }
        let branch = match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
            // RFC 2543 peers: fall back on Call-ID and CSeq number.
            _ => format!("{}/{}", req.call_id(), req.cseq()?.seq),
        };
        let sent_by = format!(
            "{}:{}",
            via.host.to_ascii_lowercase(),
            via.port.unwrap_or(0)
        );
        Some(TxKey {
            branch,
            sent_by,
            method,
        })
    }

    /// The client-side key of a response (RFC 3261 17.1.3).
    fn client(resp: &Message) -> Option<TxKey> {
        let via = resp.top_via()?;
        Some(TxKey {
            branch: via.branch()?.to_string(),
            sent_by: String::new(),
            method: resp.cseq()?.method,
        })
    }

    /// The branch parameter.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The method (INVITE for an ACK).
    pub fn method(&self) -> &Method {
        &self.method
    }
}

/// RFC 3261 state names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Client: request sent, nothing back (non-INVITE).
    Trying,
    /// INVITE client: request sent.
    Calling,
    /// Provisional response seen or sent.
    Proceeding,
    /// Final response seen or sent; absorbing retransmissions.
    Completed,
    /// INVITE server: ACK received.
    Confirmed,
    /// INVITE server after a 2xx (RFC 6026): retransmitted INVITEs are
    /// absorbed, ACKs go up to the call layer, which retransmits the 2xx.
    Accepted,
    /// Done; removed.
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// INVITE client retransmit.
    A,
    /// INVITE client timeout.
    B,
    /// INVITE client wait for response retransmits.
    D,
    /// Non-INVITE client retransmit.
    E,
    /// Non-INVITE client timeout.
    F,
    /// INVITE server response retransmit.
    G,
    /// INVITE server wait for ACK.
    H,
    /// INVITE server wait for ACK retransmits.
    I,
    /// Non-INVITE server wait for request retransmits.
    J,
    /// Non-INVITE client wait for response retransmits.
    K,
    /// INVITE server in Accepted: wait for INVITE retransmissions (RFC 6026).
    L,
    /// INVITE client, RFC 6026: how long 2xx retransmissions are passed up.
    M,
}

#[derive(Debug)]
struct ServerTx {
    invite: bool,
    state: State,
    flow: Flow,
    last_response: Option<Bytes>,
    g_interval: Duration,
}

#[derive(Debug)]
struct ClientTx {
    invite: bool,
    state: State,
    flow: Flow,
    request: Bytes,
    interval: Duration,
    /// INVITE: the ACK sent for a non-2xx final response (resent when the
    /// response is retransmitted).
    ack: Option<Bytes>,
}

/// What the layer hands to its user.
#[derive(Debug)]
pub enum TxEvent {
    /// A new request (not a retransmission). Answer it with [`TransactionLayer::respond`];
    /// ACK for a 2xx and stray requests come with `key: None`.
    Request {
        /// The transaction to answer, or `None` for ACK.
        key: Option<TxKey>,
        /// The request.
        msg: Message,
        /// Where it came from.
        flow: Flow,
    },
    /// A response to one of our requests (retransmissions absorbed).
    Response {
        /// The client transaction.
        key: TxKey,
        /// The response.
        msg: Message,
    },
    /// A client transaction got no final response in time (timer B or F):
    /// treat as 408.
    Timeout {
        /// The client transaction.
        key: TxKey,
    },
}

/// Something to do.
#[derive(Debug)]
pub enum Output {
    /// Bytes to send.
    Transmit {
        /// Where to.
        flow: Flow,
        /// The whole message.
        data: Bytes,
    },
    /// Something for the transaction user.
    Event(TxEvent),
}

/// All server and client transactions of one endpoint.
#[derive(Debug, Default)]
pub struct TransactionLayer {
    server: HashMap<TxKey, ServerTx>,
    client: HashMap<TxKey, ClientTx>,
    timers: BinaryHeap<Reverse<(Instant, TimerKind, u64)>>,
    timer_keys: HashMap<u64, (TxKey, bool)>,
    next_timer: u64,
    out: VecDeque<Output>,
}

impl TransactionLayer {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live server and client transactions (for metrics).
    pub fn len(&self) -> (usize, usize) {
        (self.server.len(), self.client.len())
    }

    fn schedule(&mut self, at: Instant, kind: TimerKind, key: &TxKey, server: bool) {
        let id = self.next_timer;
        self.next_timer += 1;
        self.timers.push(Reverse((at, kind, id)));
        self.timer_keys.insert(id, (key.clone(), server));
    }

    /// Feeds a message that arrived on `flow`.
    pub fn handle_message(&mut self, now: Instant, msg: Message, flow: Flow) {
        match msg.start {
            StartLine::Request { .. } => self.handle_request(now, msg, flow),
            StartLine::Response { .. } => self.handle_response(now, msg),
        }
    }

    fn handle_request(&mut self, now: Instant, msg: Message, flow: Flow) {
        let Some(key) = TxKey::server(&msg) else {
            self.out.push_back(Output::Event(TxEvent::Request {
                key: None,
                msg,
                flow,
            }));
            return;
        };
        let is_ack = msg.method() == Some(Method::Ack);
        if let Some(tx) = self.server.get_mut(&key) {
            if is_ack && tx.state == State::Accepted {
                // The ACK of a 2xx that reused the INVITE's branch: the call layer's.
                self.out.push_back(Output::Event(TxEvent::Request {
                    key: None,
                    msg,
                    flow,
                }));
                return;
            }
            if is_ack {
                if tx.invite && tx.state == State::Completed {
                    tx.state = State::Confirmed;
                    let wait = if flow.transport.is_reliable() {
                        Duration::ZERO
                    } else {
                        T4
                    };
                    self.schedule(now + wait, TimerKind::I, &key, true);
                }
                return;
            }
            // A retransmission: repeat the last response, if any.
            if let Some(data) = tx.last_response.clone()
                && matches!(
                    tx.state,
                    State::Proceeding | State::Completed | State::Accepted
                )
            {
                self.out.push_back(Output::Transmit {
                    flow: tx.flow,
                    data,
                });
            }
            return;
        }
        if is_ack {
            // ACK for a 2xx (a separate transaction) or for nothing we know.
            self.out.push_back(Output::Event(TxEvent::Request {
                key: None,
                msg,
                flow,
            }));
            return;
        }
        let invite = key.method == Method::Invite;
        let state = if invite {
            State::Proceeding
        } else {
            State::Trying
        };
        self.server.insert(
            key.clone(),
            ServerTx {
                invite,
                state,
                flow,
                last_response: None,
                g_interval: T1,
            },
        );
        self.out.push_back(Output::Event(TxEvent::Request {
            key: Some(key),
            msg,
            flow,
        }));
    }

    /// Sends a response within a server transaction and returns the bytes
    /// sent. Ignored (None) when the transaction is gone or already
    /// answered finally.
    pub fn respond(&mut self, now: Instant, key: &TxKey, resp: &Message) -> Option<Bytes> {
        let code = resp.status()?;
        let tx = self.server.get_mut(key)?;
        if matches!(
            tx.state,
            State::Completed | State::Confirmed | State::Accepted | State::Terminated
        ) {
            return None;
        }
        let data = resp.to_bytes();
        self.out.push_back(Output::Transmit {
            flow: tx.flow,
            data: data.clone(),
        });
        tx.last_response = Some(data.clone());
        let reliable = tx.flow.transport.is_reliable();
        if code < 200 {
            tx.state = State::Proceeding;
            return Some(data);
        }
        if tx.invite {
            if code < 300 {
                // 2xx retransmission belongs to the call layer (RFC 6026);
                // the transaction stays to absorb INVITE retransmissions.
                tx.state = State::Accepted;
                self.schedule(now + 64 * T1, TimerKind::L, key, true);
                return Some(data);
            }
            tx.state = State::Completed;
            if !reliable {
                self.schedule(now + T1, TimerKind::G, key, true);
            }
            self.schedule(now + 64 * T1, TimerKind::H, key, true);
        } else {
            tx.state = State::Completed;
            let wait = if reliable { Duration::ZERO } else { 64 * T1 };
            self.schedule(now + wait, TimerKind::J, key, true);
        }
        Some(data)
    }

    /// Starts a client transaction for `req` (its top Via must carry a fresh
    /// `z9hG4bK` branch) toward `flow`.
    pub fn send_request(&mut self, now: Instant, req: &Message, flow: Flow) -> Option<TxKey> {
        let via = req.top_via()?;
        let method = req.method()?;
        let key = TxKey {
            branch: via.branch()?.to_string(),
            sent_by: String::new(),
            method: method.clone(),
        };
        let data = req.to_bytes();
        self.out.push_back(Output::Transmit {
            flow,
            data: data.clone(),
        });
        if method == Method::Ack {
            return None;
        }
        let invite = method == Method::Invite;
        let reliable = flow.transport.is_reliable();
        if !reliable {
            self.schedule(
                now + T1,
                if invite { TimerKind::A } else { TimerKind::E },
                &key,
                false,
            );
        }
        self.schedule(
            now + 64 * T1,
            if invite { TimerKind::B } else { TimerKind::F },
            &key,
            false,
        );
        let state = if invite {
            State::Calling
        } else {
            State::Trying
        };
        self.client.insert(
            key.clone(),
            ClientTx {
                invite,
                state,
                flow,
                request: data,
                interval: T1,
                ack: None,
            },
        );
        Some(key)
    }

    fn handle_response(&mut self, now: Instant, msg: Message) {
        let Some(key) = TxKey::client(&msg) else {
            return;
        };
        let Some(code) = msg.status() else { return };
        let Some(tx) = self.client.get_mut(&key) else {
            return;
        };
        match tx.state {
            State::Trying | State::Calling | State::Proceeding => {}
            // RFC 6026: every 2xx (retransmitted, or from another fork)
            // goes to the call layer, which ACKs it.
            State::Accepted if (200..300).contains(&code) => {
                self.out
                    .push_back(Output::Event(TxEvent::Response { key, msg }));
                return;
            }
            // A retransmitted non-2xx final response: the ACK again.
            State::Completed if code >= 300 => {
                if let Some(ack) = tx.ack.clone() {
                    self.out.push_back(Output::Transmit {
                        flow: tx.flow,
                        data: ack,
                    });
                }
                return;
            }
            _ => return,
        }
        if code < 200 {
            tx.state = State::Proceeding;
        } else {
            let reliable = tx.flow.transport.is_reliable();
            if tx.invite {
                if code < 300 {
                    tx.state = State::Accepted;
                    self.schedule(now + 64 * T1, TimerKind::M, &key, false);
                } else {
                    tx.state = State::Completed;
                    // RFC 3261 17.1.1.3: the transaction ACKs a failure itself.
                    if let Some(ack) = Message::parse(&tx.request)
                        .ok()
                        .and_then(|req| ack_for_failure(&req, &msg))
                    {
                        let data = ack.to_bytes();
                        self.out.push_back(Output::Transmit {
                            flow: tx.flow,
                            data: data.clone(),
                        });
                        tx.ack = Some(data);
                    }
                    let wait = if reliable {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32)
                    };
                    self.schedule(now + wait, TimerKind::D, &key, false);
                }
            } else {
                tx.state = State::Completed;
                let wait = if reliable { Duration::ZERO } else { T4 };
                self.schedule(now + wait, TimerKind::K, &key, false);
            }
        }
        self.out
            .push_back(Output::Event(TxEvent::Response { key, msg }));
    }

    /// When [`TransactionLayer::handle_timeout`] next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, kind, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some((key, server)) = self.timer_keys.remove(&id) else {
                continue;
            };
            if server {
                self.fire_server(now, kind, key);
            } else {
                self.fire_client(now, kind, key);
            }
        }
    }

    fn fire_server(&mut self, now: Instant, kind: TimerKind, key: TxKey) {
        let Some(tx) = self.server.get_mut(&key) else {
            return;
        };
        match kind {
            TimerKind::G if tx.state == State::Completed => {
                if let Some(data) = tx.last_response.clone() {
                    self.out.push_back(Output::Transmit {
                        flow: tx.flow,
                        data,
                    });
                }
                tx.g_interval = (tx.g_interval * 2).min(T2);
                let next = now + tx.g_interval;
                self.schedule(next, TimerKind::G, &key, true);
            }
            TimerKind::H | TimerKind::I | TimerKind::J | TimerKind::L => {
                self.server.remove(&key);
            }
            _ => {}
        }
    }

    fn fire_client(&mut self, now: Instant, kind: TimerKind, key: TxKey) {
        let Some(tx) = self.client.get_mut(&key) else {
            return;
        };
        match kind {
            TimerKind::A if tx.state == State::Calling => {
                self.out.push_back(Output::Transmit {
                    flow: tx.flow,
                    data: tx.request.clone(),
                });
                tx.interval *= 2;
                let next = now + tx.interval;
                self.schedule(next, TimerKind::A, &key, false);
            }
            TimerKind::E if matches!(tx.state, State::Trying | State::Proceeding) => {
                self.out.push_back(Output::Transmit {
                    flow: tx.flow,
                    data: tx.request.clone(),
                });
                tx.interval = if tx.state == State::Proceeding {
                    T2
                } else {
                    (tx.interval * 2).min(T2)
                };
                let next = now + tx.interval;
                self.schedule(next, TimerKind::E, &key, false);
            }
            // Timer B covers only the wait for a first response: a ringing
            // INVITE is the call layer's to give up on (RFC 3261 17.1.1.2).
            TimerKind::B if tx.state == State::Calling => {
                self.client.remove(&key);
                self.out.push_back(Output::Event(TxEvent::Timeout { key }));
            }
            TimerKind::F if matches!(tx.state, State::Trying | State::Proceeding) => {
                self.client.remove(&key);
                self.out.push_back(Output::Event(TxEvent::Timeout { key }));
            }
            TimerKind::D | TimerKind::K | TimerKind::M => {
                self.client.remove(&key);
            }
            _ => {}
        }
    }

    /// Forgets a client transaction the call layer gave up on (a
    /// cancelled INVITE that never got its final response).
    pub fn abandon(&mut self, key: &TxKey) {
        self.client.remove(key);
    }

    /// Next thing to send or report.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
}

/// The ACK for a non-2xx final response to `invite` (RFC 3261 17.1.1.3):
/// the INVITE's Request-URI, top Via, From, Call-ID, CSeq number and Route
/// headers, with the response's To (carrying its tag).
fn ack_for_failure(invite: &Message, resp: &Message) -> Option<Message> {
    let StartLine::Request { uri, .. } = &invite.start else {
        return None;
    };
    let mut ack = Message {
        start: StartLine::Request {
            method: Method::Ack,
            uri: uri.clone(),
        },
        headers: Vec::new(),
        body: Bytes::new(),
    };
    ack.push_header("Via", invite.header("Via")?);
    ack.push_header("Max-Forwards", "70");
    ack.push_header("From", invite.header("From")?);
    ack.push_header("To", resp.header("To")?);
    ack.push_header("Call-ID", invite.call_id());
    ack.push_header("CSeq", format!("{} ACK", invite.cseq()?.seq));
    for r in invite.headers_named("Route") {
        ack.push_header("Route", r);
    }
    ack.push_header("Content-Length", "0");
    Some(ack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;
    use crate::sip::msg::response_to;

    fn flow(t: Transport) -> Flow {
        Flow {
            transport: t,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "127.0.0.1:5062".parse().unwrap(),
            conn: None,
        }
    }

    fn req(method: &str, branch: &str) -> Message {
        let s = format!(
            "{method} sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch={branch}\r\n\
             From: <sip:a@y>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c1\r\nCSeq: 1 {}\r\nContent-Length: 0\r\n\r\n",
            if method == "ACK" { "ACK" } else { method }
        );
        Message::parse(s.as_bytes()).unwrap()
    }

    fn drain(l: &mut TransactionLayer) -> (usize, Vec<TxEvent>) {
        let (mut tx, mut ev) = (0, vec![]);
        while let Some(o) = l.poll_output() {
            match o {
                Output::Transmit { .. } => tx += 1,
                Output::Event(e) => ev.push(e),
            }
        }
        (tx, ev)
    }

    #[test]
    fn non_invite_server_absorbs_retransmissions_until_timer_j() {
        let mut l = TransactionLayer::new();
        let t0 = Instant::now();
        let r = req("OPTIONS", "z9hG4bKa");
        l.handle_message(t0, r.clone(), flow(Transport::Udp));
        let (_, ev) = drain(&mut l);
        let Some(TxEvent::Request { key: Some(key), .. }) = ev.into_iter().next() else {
            panic!()
        };
        l.respond(t0, &key, &response_to(&r, 200, "OK", Some("t"), None));
        assert_eq!(drain(&mut l).0, 1);
        // Retransmission: answered from the transaction, not passed up.
        l.handle_message(t0 + T1, r.clone(), flow(Transport::Udp));
        let (tx, ev) = drain(&mut l);
        assert_eq!((tx, ev.len()), (1, 0));
        // After timer J (64*T1) the transaction is gone: a copy is new again.
        l.handle_timeout(t0 + 64 * T1);
        assert_eq!(l.len(), (0, 0));
        l.handle_message(t0 + 65 * T1, r, flow(Transport::Udp));
        assert_eq!(drain(&mut l).1.len(), 1);
    }

    #[test]
    fn invite_server_retransmits_final_until_ack() {
        let mut l = TransactionLayer::new();
        let t0 = Instant::now();
        let r = req("INVITE", "z9hG4bKi");
        l.handle_message(t0, r.clone(), flow(Transport::Udp));
        let (_, ev) = drain(&mut l);
        let Some(TxEvent::Request { key: Some(key), .. }) = ev.into_iter().next() else {
            panic!()
        };
        l.respond(
            t0,
            &key,
            &response_to(&r, 480, "Temporarily Unavailable", Some("t"), None),
        );
        assert_eq!(drain(&mut l).0, 1);
        // Timer G: 500 ms, then 1 s later.
        l.handle_timeout(t0 + T1);
        assert_eq!(drain(&mut l).0, 1);
        l.handle_timeout(t0 + T1 + 2 * T1);
        assert_eq!(drain(&mut l).0, 1);
        // ACK stops it and is absorbed.
        l.handle_message(t0 + 4 * T1, req("ACK", "z9hG4bKi"), flow(Transport::Udp));
        let (tx, ev) = drain(&mut l);
        assert_eq!((tx, ev.len()), (0, 0));
        l.handle_timeout(t0 + 20 * T1);
        assert_eq!(drain(&mut l).0, 0);
        assert_eq!(l.len(), (0, 0), "timer I ended it");
    }

    #[test]
    fn invite_server_absorbs_retransmissions_after_a_2xx() {
        let mut l = TransactionLayer::new();
        let t0 = Instant::now();
        let r = req("INVITE", "z9hG4bKok");
        l.handle_message(t0, r.clone(), flow(Transport::Udp));
        let (_, ev) = drain(&mut l);
        let Some(TxEvent::Request { key: Some(key), .. }) = ev.into_iter().next() else {
            panic!()
        };
        l.respond(t0, &key, &response_to(&r, 200, "OK", Some("t"), None));
        assert_eq!(drain(&mut l).0, 1);
        // No timer G for a 2xx: that is the call layer's.
        l.handle_timeout(t0 + T1);
        assert_eq!(drain(&mut l).0, 0);
        // The INVITE again: the 2xx again, nothing new for the call layer.
        l.handle_message(t0 + T1, r.clone(), flow(Transport::Udp));
        let (tx, ev) = drain(&mut l);
        assert_eq!((tx, ev.len()), (1, 0));
        // An ACK reusing the branch goes up as a 2xx ACK.
        l.handle_message(t0 + T1, req("ACK", "z9hG4bKok"), flow(Transport::Udp));
        let (_, ev) = drain(&mut l);
        assert!(matches!(
            ev.as_slice(),
            [TxEvent::Request { key: None, .. }]
        ));
        // Timer L ends it.
        l.handle_timeout(t0 + 64 * T1);
        assert_eq!(l.len(), (0, 0));
    }

    #[test]
    fn client_retransmits_then_times_out() {
        let mut l = TransactionLayer::new();
        let t0 = Instant::now();
        let key = l
            .send_request(t0, &req("OPTIONS", "z9hG4bKc"), flow(Transport::Udp))
            .unwrap();
        assert_eq!(drain(&mut l).0, 1);
        let mut sent = 0;
        let mut now = t0;
        while let Some(at) = l.poll_timeout() {
            now = at;
            l.handle_timeout(now);
            let (tx, ev) = drain(&mut l);
            sent += tx;
            if let Some(TxEvent::Timeout { key: k }) = ev.into_iter().next() {
                assert_eq!(k, key);
                break;
            }
        }
        assert_eq!(now - t0, 64 * T1);
        // E fires at 0.5, 1.5, 3.5, 7.5, then every 4 s until 32 s: 10 retransmissions.
        assert_eq!(sent, 10);
    }

    #[test]
    fn client_reports_response_once() {
        let mut l = TransactionLayer::new();
        let t0 = Instant::now();
        let r = req("OPTIONS", "z9hG4bKd");
        l.send_request(t0, &r, flow(Transport::Tcp)).unwrap();
        drain(&mut l);
        let resp = Message::parse(&response_to(&r, 200, "OK", Some("x"), None).to_bytes()).unwrap();
        l.handle_message(t0, resp.clone(), flow(Transport::Tcp));
        l.handle_message(t0, resp, flow(Transport::Tcp));
        let (_, ev) = drain(&mut l);
        assert_eq!(ev.len(), 1);
        l.handle_timeout(t0);
        assert_eq!(l.len(), (0, 0));
    }

    #[test]
    fn invite_client_acks_failures_and_passes_every_2xx_up() {
        let mut l = TransactionLayer::new();
        let t0 = Instant::now();
        let inv = req("INVITE", "z9hG4bKc1");
        l.send_request(t0, &inv, flow(Transport::Udp)).unwrap();
        drain(&mut l);
        // Ringing: timer B no longer applies (the call layer gives up).
        l.handle_message(
            t0,
            response_to(&inv, 180, "Ringing", Some("t"), None),
            flow(Transport::Udp),
        );
        assert_eq!(drain(&mut l).1.len(), 1);
        l.handle_timeout(t0 + 65 * T1);
        assert!(drain(&mut l).1.is_empty(), "no timeout while ringing");
        // A failure is ACKed by the transaction, with the response's To tag.
        let busy = response_to(&inv, 486, "Busy Here", Some("t"), None);
        l.handle_message(t0 + 66 * T1, busy.clone(), flow(Transport::Udp));
        let mut acks = Vec::new();
        let mut events = 0;
        while let Some(o) = l.poll_output() {
            match o {
                Output::Transmit { data, .. } => acks.push(Message::parse(&data).unwrap()),
                Output::Event(_) => events += 1,
            }
        }
        assert_eq!((acks.len(), events), (1, 1));
        let ack = &acks[0];
        assert_eq!(ack.method(), Some(Method::Ack));
        assert_eq!(ack.header("Via"), inv.header("Via"));
        assert!(ack.header("To").unwrap().ends_with("tag=t"));
        assert_eq!(ack.cseq().unwrap().seq, 1);
        // The 486 again: the same ACK, nothing for the call layer.
        l.handle_message(t0 + 67 * T1, busy, flow(Transport::Udp));
        let (tx, ev) = drain(&mut l);
        assert_eq!((tx, ev.len()), (1, 0));

        // A 2xx and its retransmission both reach the call layer (it ACKs).
        let inv = req("INVITE", "z9hG4bKc2");
        l.send_request(t0, &inv, flow(Transport::Udp)).unwrap();
        drain(&mut l);
        let ok = response_to(&inv, 200, "OK", Some("u"), None);
        l.handle_message(t0, ok.clone(), flow(Transport::Udp));
        assert_eq!(drain(&mut l).1.len(), 1);
        l.handle_message(t0 + T1, ok.clone(), flow(Transport::Udp));
        let (tx, ev) = drain(&mut l);
        assert_eq!(
            (tx, ev.len()),
            (0, 1),
            "no ACK from the transaction for a 2xx"
        );
        // Timer M ends it.
        l.handle_timeout(t0 + 64 * T1);
        l.handle_message(t0 + 65 * T1, ok, flow(Transport::Udp));
        assert!(drain(&mut l).1.is_empty());
    }
}
