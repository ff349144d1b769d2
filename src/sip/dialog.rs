//! Dialogs this gateway answered as a UAS (RFC 3261 section 12 and 13.3),
//! sans-IO.
//!
//! Owns what the transaction layer leaves to the call layer: the local tag,
//! matching in-dialog requests (ACK, BYE, re-INVITE), retransmitting the
//! 2xx until the ACK comes (RFC 6026: T1 doubling up to T2, for 64*T1 over
//! unreliable transports; the INVITE's own retransmissions are absorbed by
//! the transaction layer), a reliable provisional response until its PRACK
//! (RFC 3262, the same schedule), and our BYE. It must not decide what to answer
//! or touch media: that is the caller's job.

use super::Flow;
use super::msg::{Message, NameAddr, random_token};
use super::transaction::{T1, T2};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Identifies a dialog inside the gateway (also names its media).
pub type DialogId = u64;

/// A response of ours resent until the caller acknowledges it: T1
/// doubling up to T2 over unreliable transports, given up 64*T1 after the
/// first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resend {
    /// The response as sent.
    pub bytes: Bytes,
    /// Next retransmission.
    pub next: Instant,
    /// Current interval.
    pub interval: Duration,
    /// When to give up.
    pub deadline: Instant,
}

impl Resend {
    /// `bytes`, just sent at `now`.
    pub fn new(now: Instant, bytes: Bytes, reliable_transport: bool) -> Self {
        // Over TCP/TLS/WS only the acknowledgement is awaited.
        let first = if reliable_transport { 64 * T1 } else { T1 };
        Self {
            bytes,
            next: now + first,
            interval: first,
            deadline: now + 64 * T1,
        }
    }

    /// When [`Self::poll`] next has work.
    pub fn due(&self) -> Instant {
        self.next.min(self.deadline)
    }

    /// What to do at `now` (a retransmission doubles the interval, up to
    /// T2).
    pub fn poll(&mut self, now: Instant) -> ResendStep {
        if now >= self.deadline {
            return ResendStep::GiveUp;
        }
        if now < self.next {
            return ResendStep::Wait;
        }
        self.interval = (self.interval * 2).min(T2);
        self.next = now + self.interval;
        ResendStep::Send(self.bytes.clone())
    }
}

/// What a [`Resend`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResendStep {
    /// Nothing yet.
    Wait,
    /// Send these bytes again.
    Send(Bytes),
    /// No acknowledgement within 64*T1: stop, the peer is gone.
    GiveUp,
}

/// Where a dialog is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogState {
    /// The INVITE is being answered (no final response yet).
    Early,
    /// A reliable provisional response (RFC 3262) sent, resent until its
    /// PRACK (its RSeq is the dialog's `rseq`).
    Provisional(Resend),
    /// 2xx sent, waiting for ACK; retransmitted over unreliable transports.
    Accepted(Resend),
    /// ACK received: the call is up.
    Confirmed,
}

/// One UAS dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// The id.
    pub id: DialogId,
    /// Call-ID.
    pub call_id: String,
    /// Our tag (To tag of our responses).
    pub local_tag: String,
    /// The caller's tag (From tag).
    pub remote_tag: String,
    /// The flow the INVITE came on.
    pub flow: Flow,
    /// The initial INVITE.
    pub invite: Message,
    /// State.
    pub state: DialogState,
    /// CSeq of our last request in the dialog.
    pub local_cseq: u32,
    /// RSeq of our last reliable provisional response (RFC 3262).
    pub rseq: u32,
}

/// What [`Dialogs::handle_timeout`] wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum DialogOutput {
    /// Resend bytes (a 2xx) along a flow.
    Retransmit(Flow, Bytes),
    /// No ACK arrived in 64*T1: the caller should end the dialog with
    /// [`Dialogs::bye`] (RFC 3261 13.3.1.4).
    AckTimeout(DialogId),
    /// No PRACK for a reliable provisional response in 64*T1: the INVITE
    /// should be refused with a 5xx (RFC 3262 section 3).
    PrackTimeout(DialogId),
}

/// The gateway's UAS dialogs.
#[derive(Debug, Default)]
pub struct Dialogs {
    map: HashMap<DialogId, Dialog>,
    /// (Call-ID, remote tag) -> dialog, for matching requests.
    index: HashMap<(String, String), DialogId>,
    /// Dialogs whose 2xx awaits its ACK, or a reliable provisional its
    /// PRACK (the only ones with timers).
    unacked: HashSet<DialogId>,
    next_id: DialogId,
}

/// The `tag` parameter of a name-addr header (`From`, `To`).
pub(crate) fn tag_of(msg: &Message, header: &str) -> Option<String> {
    let value = msg.header(header)?;
    NameAddr::parse(value).ok()?.tag().map(str::to_string)
}

impl Dialogs {
    /// A dialog for an INVITE about to be answered; `None` when the INVITE
    /// has no From tag (RFC 2543 peers cannot be told apart; refuse them).
    pub fn create(&mut self, invite: &Message, flow: Flow) -> Option<DialogId> {
        let remote_tag = tag_of(invite, "From")?;
        self.next_id += 1;
        let id = self.next_id;
        self.index
            .insert((invite.call_id().to_string(), remote_tag.clone()), id);
        self.map.insert(
            id,
            Dialog {
                id,
                call_id: invite.call_id().to_string(),
                local_tag: random_token(10),
                remote_tag,
                flow,
                invite: invite.clone(),
                state: DialogState::Early,
                local_cseq: 0,
                rseq: 0,
            },
        );
        Some(id)
    }

    /// A dialog by id.
    pub fn get(&self, id: DialogId) -> Option<&Dialog> {
        self.map.get(&id)
    }

    /// Forgets a dialog.
    pub fn remove(&mut self, id: DialogId) -> Option<Dialog> {
        let d = self.map.remove(&id)?;
        self.index
            .remove(&(d.call_id.clone(), d.remote_tag.clone()));
        self.unacked.remove(&id);
        Some(d)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The dialog an in-dialog request from the caller belongs to (Call-ID,
    /// its From tag and our To tag).
    pub fn matching(&self, req: &Message) -> Option<DialogId> {
        let from = tag_of(req, "From")?;
        let id = *self.index.get(&(req.call_id().to_string(), from))?;
        let to = tag_of(req, "To")?;
        (self.map.get(&id)?.local_tag == to).then_some(id)
    }

    /// Records the 2xx just sent; it is retransmitted until [`Self::on_ack`].
    pub fn accepted(&mut self, now: Instant, id: DialogId, ok: Bytes) {
        let Some(d) = self.map.get_mut(&id) else {
            return;
        };
        self.unacked.insert(id);
        d.state = DialogState::Accepted(Resend::new(now, ok, d.flow.transport.is_reliable()));
    }

    /// The ACK arrived.
    pub fn on_ack(&mut self, id: DialogId) {
        if let Some(d) = self.map.get_mut(&id)
            && matches!(d.state, DialogState::Accepted { .. })
        {
            d.state = DialogState::Confirmed;
            self.unacked.remove(&id);
        }
    }

    /// Records a reliable provisional response just sent (RFC 3262, with
    /// `rseq`): resent until [`Self::on_prack`] or a final response.
    pub fn sent_reliably(&mut self, now: Instant, id: DialogId, rseq: u32, resp: Bytes) {
        let Some(d) = self.map.get_mut(&id) else {
            return;
        };
        if matches!(d.state, DialogState::Early | DialogState::Provisional(_)) {
            self.unacked.insert(id);
            let resend = Resend::new(now, resp, d.flow.transport.is_reliable());
            d.state = DialogState::Provisional(resend);
            d.rseq = rseq;
        }
    }

    /// The next RSeq for a reliable provisional response in a dialog.
    pub fn next_rseq(&self, id: DialogId) -> u32 {
        self.map.get(&id).map_or(1, |d| d.rseq + 1)
    }

    /// A PRACK with `rack` (`RAck: <rseq> <cseq> INVITE`): whether it
    /// acknowledges the reliable provisional response sent last, which is
    /// then no longer resent. One that crosses our 2xx still acknowledges
    /// it (RFC 3262 section 3: it gets a 2xx).
    pub fn on_prack(&mut self, id: DialogId, rack: &str) -> bool {
        let Some(d) = self.map.get_mut(&id) else {
            return false;
        };
        let mut parts = rack.split_whitespace();
        let acked = d.rseq > 0
            && parts.next().and_then(|r| r.parse::<u32>().ok()) == Some(d.rseq)
            && parts.next().and_then(|c| c.parse::<u32>().ok()) == d.invite.cseq().map(|c| c.seq)
            && parts
                .next()
                .is_some_and(|m| m.eq_ignore_ascii_case("INVITE"));
        if acked && matches!(d.state, DialogState::Provisional(_)) {
            d.state = DialogState::Early;
            self.unacked.remove(&id);
        }
        acked
    }

    /// Ends a dialog from our side: removes it and returns the BYE to send
    /// (to the caller's Contact, along its Record-Route set) and its flow.
    /// `via_host` is our advertised `host:port`.
    pub fn bye(
        &mut self,
        id: DialogId,
        via_host: &str,
        user_agent: &str,
    ) -> Option<(Message, Flow)> {
        let bye = self.request(id, "BYE", via_host, user_agent, None);
        self.remove(id);
        bye
    }

    /// A request of ours within a dialog (BYE, a re-INVITE or an INFO with
    /// a `body`: content type and text), to the caller's Contact along its
    /// Record-Route set, with the next CSeq; and its flow.
    pub fn request(
        &mut self,
        id: DialogId,
        method: &str,
        via_host: &str,
        user_agent: &str,
        body: Option<(&str, &str)>,
    ) -> Option<(Message, Flow)> {
        let d = self.map.get_mut(&id)?;
        d.local_cseq += 1;
        let text = in_dialog_request(d, method, d.local_cseq, via_host, user_agent, body)?;
        Some((Message::parse(text.as_bytes()).ok()?, d.flow))
    }

    /// The ACK for a 2xx to our re-INVITE (`cseq` is its CSeq number).
    pub fn ack(&self, id: DialogId, cseq: u32, via_host: &str, user_agent: &str) -> Option<Bytes> {
        let d = self.map.get(&id)?;
        let text = in_dialog_request(d, "ACK", cseq, via_host, user_agent, None)?;
        Some(Bytes::from(text))
    }

    /// When [`Self::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.unacked
            .iter()
            .filter_map(|id| match &self.map.get(id)?.state {
                DialogState::Accepted(r) | DialogState::Provisional(r) => Some(r.due()),
                _ => None,
            })
            .min()
    }

    /// Retransmits due 2xx responses and reliable provisional ones, and
    /// reports dialogs whose 2xx was never ACKed (the caller ends them with
    /// [`Self::bye`]) or whose provisional response was never PRACKed (the
    /// caller refuses the INVITE); either stops retransmitting.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<DialogOutput> {
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for id in &self.unacked {
            let Some(d) = self.map.get_mut(id) else {
                continue;
            };
            let (r, timeout) = match &mut d.state {
                DialogState::Accepted(r) => (r, DialogOutput::AckTimeout(*id)),
                DialogState::Provisional(resend) => (resend, DialogOutput::PrackTimeout(*id)),
                _ => continue,
            };
            match r.poll(now) {
                ResendStep::GiveUp => expired.push(timeout),
                ResendStep::Send(bytes) => out.push(DialogOutput::Retransmit(d.flow, bytes)),
                ResendStep::Wait => {}
            }
        }
        for timeout in expired {
            if let DialogOutput::AckTimeout(id) | DialogOutput::PrackTimeout(id) = &timeout {
                self.unacked.remove(id);
            }
            out.push(timeout);
        }
        out
    }
}

/// The text of a request of ours in a UAS dialog.
fn in_dialog_request(
    d: &Dialog,
    method: &str,
    cseq: u32,
    via_host: &str,
    user_agent: &str,
    body: Option<(&str, &str)>,
) -> Option<String> {
    let inv = &d.invite;
    let target = inv
        .header("Contact")
        .or(inv.header("From"))
        .and_then(|c| NameAddr::parse(c).ok())?
        .uri;
    let mut text = format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/{} {via_host};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nFrom: {};tag={}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {cseq} {method}\r\nUser-Agent: {user_agent}\r\n",
        d.flow.transport.via_name(),
        random_token(16),
        inv.header("To")?,
        d.local_tag,
        inv.header("From")?,
        d.call_id,
    );
    for route in inv.headers_named("Record-Route") {
        text.push_str(&format!("Route: {route}\r\n"));
    }
    match body {
        Some((content_type, body)) => text.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None => text.push_str("Content-Length: 0\r\n\r\n"),
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    fn flow(transport: Transport) -> Flow {
        Flow {
            transport,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "127.0.0.1:5099".parse().unwrap(),
            conn: None,
        }
    }

    fn msg(method: &str, to_tag: Option<&str>, cseq: u32) -> Message {
        let to = to_tag.map_or(String::new(), |t| format!(";tag={t}"));
        Message::parse(
            format!(
                "{method} sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{cseq}\r\n\
                 From: <sip:a@b>;tag=caller\r\nTo: <sip:echo@127.0.0.1>{to}\r\nCall-ID: c1\r\n\
                 CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn matches_in_dialog_requests() {
        let mut d = Dialogs::default();
        let invite = msg("INVITE", None, 1);
        let id = d.create(&invite, flow(Transport::Udp)).unwrap();
        let tag = d.get(id).unwrap().local_tag.clone();
        // (Retransmitted INVITEs never get here: the transaction layer absorbs them.)
        assert_eq!(d.matching(&msg("BYE", Some(&tag), 2)), Some(id));
        assert_eq!(d.matching(&msg("BYE", Some("other"), 2)), None);
        // No From tag: refused.
        let mut untagged = invite.clone();
        untagged.headers.retain(|h| !h.is("From"));
        untagged.push_header("From", "<sip:a@b>");
        assert_eq!(d.create(&untagged, flow(Transport::Udp)), None);
    }

    #[test]
    fn retransmits_2xx_with_backoff_until_ack_or_64_t1() {
        let t0 = Instant::now();
        let mut d = Dialogs::default();
        let id = d
            .create(&msg("INVITE", None, 1), flow(Transport::Udp))
            .unwrap();
        d.accepted(t0, id, Bytes::from_static(b"200"));
        let mut sent = Vec::new();
        let mut now = t0;
        while let Some(next) = d.poll_timeout() {
            now = next;
            for o in d.handle_timeout(now) {
                match o {
                    DialogOutput::Retransmit(_, b) => sent.push((now - t0, b)),
                    DialogOutput::AckTimeout(gone) => {
                        assert_eq!(gone, id);
                        assert!(d.bye(gone, "127.0.0.1:5060", "causeway").is_some());
                    }
                    DialogOutput::PrackTimeout(_) => panic!("no provisional was sent"),
                }
            }
        }
        let at: Vec<u64> = sent.iter().map(|(t, _)| t.as_millis() as u64).collect();
        // 0.5, 1.5, 3.5, 7.5, then every 4 s until 32 s.
        assert_eq!(
            at,
            [
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(now - t0, 64 * T1);
        assert!(d.is_empty());

        let id = d
            .create(&msg("INVITE", None, 1), flow(Transport::Udp))
            .unwrap();
        d.accepted(t0, id, Bytes::from_static(b"200"));
        d.on_ack(id);
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.get(id).unwrap().state, DialogState::Confirmed);
    }

    #[test]
    fn bye_from_our_side_swaps_the_tags_and_targets_the_contact() {
        let mut d = Dialogs::default();
        let mut invite = msg("INVITE", None, 1);
        invite.push_header("Contact", "<sip:caller@192.0.2.9:5070>");
        invite.push_header("Record-Route", "<sip:proxy.example;lr>");
        let id = d.create(&invite, flow(Transport::Udp)).unwrap();
        let tag = d.get(id).unwrap().local_tag.clone();
        let (bye, _) = d.bye(id, "127.0.0.1:5060", "causeway").unwrap();
        assert!(
            bye.to_bytes()
                .starts_with(b"BYE sip:caller@192.0.2.9:5070 SIP/2.0")
        );
        assert_eq!(
            bye.header("From"),
            Some(format!("<sip:echo@127.0.0.1>;tag={tag}").as_str())
        );
        assert_eq!(bye.header("To"), Some("<sip:a@b>;tag=caller"));
        assert_eq!(bye.header("Route"), Some("<sip:proxy.example;lr>"));
        assert!(d.is_empty());
        assert!(d.bye(id, "127.0.0.1:5060", "causeway").is_none());
    }

    #[test]
    fn reliable_transports_do_not_retransmit() {
        let t0 = Instant::now();
        let mut d = Dialogs::default();
        let id = d
            .create(&msg("INVITE", None, 1), flow(Transport::Tcp))
            .unwrap();
        d.accepted(t0, id, Bytes::from_static(b"200"));
        assert_eq!(d.poll_timeout(), Some(t0 + 64 * T1));
        assert_eq!(
            d.handle_timeout(t0 + 64 * T1),
            [DialogOutput::AckTimeout(id)]
        );
    }

    #[test]
    fn a_reliable_provisional_is_resent_until_its_prack_and_given_up_without() {
        let t0 = Instant::now();
        let mut d = Dialogs::default();
        let id = d
            .create(&msg("INVITE", None, 1), flow(Transport::Udp))
            .unwrap();
        assert_eq!(d.next_rseq(id), 1);
        d.sent_reliably(t0, id, 1, Bytes::from_static(b"180"));
        assert_eq!(d.next_rseq(id), 2);
        assert_eq!(d.poll_timeout(), Some(t0 + T1));
        assert_eq!(
            d.handle_timeout(t0 + T1),
            [DialogOutput::Retransmit(
                flow(Transport::Udp),
                Bytes::from_static(b"180")
            )]
        );
        // A PRACK for another response or request changes nothing.
        assert!(!d.on_prack(id, "2 1 INVITE"));
        assert!(!d.on_prack(id, "1 7 INVITE"));
        assert!(d.on_prack(id, "1 1 INVITE"));
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.next_rseq(id), 2, "RSeq goes on after a PRACK");
        // Unacknowledged for 64*T1: given up.
        d.sent_reliably(t0, id, 2, Bytes::from_static(b"180"));
        let out = d.handle_timeout(t0 + 64 * T1);
        assert_eq!(out, [DialogOutput::PrackTimeout(id)]);
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn a_prack_that_crosses_our_2xx_is_still_acknowledged() {
        let t0 = Instant::now();
        let mut d = Dialogs::default();
        let id = d
            .create(&msg("INVITE", None, 1), flow(Transport::Udp))
            .unwrap();
        assert!(!d.on_prack(id, "0 1 INVITE"), "nothing was sent reliably");
        d.sent_reliably(t0, id, 1, Bytes::from_static(b"180"));
        d.accepted(t0, id, Bytes::from_static(b"200"));
        assert!(d.on_prack(id, "1 1 INVITE"));
        assert!(!d.on_prack(id, "2 1 INVITE"));
        // The 2xx is still resent until the ACK.
        assert_eq!(d.poll_timeout(), Some(t0 + T1));
    }
}
