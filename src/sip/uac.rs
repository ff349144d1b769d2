//! Calls this gateway places as a UAC (RFC 3261 sections 12.1.2, 13.2 and
//! 9.1), sans-IO: the INVITE, its CANCEL, the ACK for a 2xx, and the
//! requests of the dialog a 2xx creates (BYE), built from the dialog state
//! the responses establish (remote tag, remote target, route set).
//!
//! Owns only message construction and dialog state; the transaction layer
//! retransmits and the call layer (`b2bua`) decides when to send what. It
//! must not touch sockets, clocks or media.

use super::Flow;
use super::dialog::tag_of;
use super::msg::{Message, NameAddr, random_token};
use bytes::Bytes;
use std::net::IpAddr;

/// What an INVITE needs.
#[derive(Debug, Clone)]
pub struct InviteParams {
    /// Request-URI (a registered contact, or a trunk URI).
    pub request_uri: String,
    /// To URI (the called address of record).
    pub to: String,
    /// From URI (who calls).
    pub from: String,
    /// From display name.
    pub display_name: String,
    /// Where requests go (a registration's flow keeps NAT bindings).
    pub flow: Flow,
    /// Our `host:port` for Via and Contact.
    pub via_host: String,
    /// User-Agent header.
    pub user_agent: String,
    /// The SDP offer.
    pub sdp: String,
    /// Where `sdp` puts our media, kept so that the answer's session need
    /// not read our own offer back.
    pub offered: OfferedAt,
    /// The session timer to ask for (RFC 4028 `Session-Expires`), if any.
    pub session_expires: Option<u32>,
    /// Max-Forwards: the caller's less one for a bridged call (RFC 7332
    /// section 3: a loop through B2BUAs ends), 70 for a call we start.
    pub max_forwards: u8,
}

/// Where an SDP offer we sent put our media: its `c=` address, the audio
/// and video ports, and its `o=` session id and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferedAt {
    /// The connection address.
    pub ip: IpAddr,
    /// The audio section's port.
    pub port: u16,
    /// The video section's port, when the offer had one.
    pub video_port: Option<u16>,
    /// The `o=` line's session id and version.
    pub origin: (u64, u64),
}

/// One outgoing call leg and, once answered, its dialog.
#[derive(Debug, Clone)]
pub struct UacLeg {
    /// Call-ID (fresh per leg).
    pub call_id: String,
    /// Our From tag.
    pub local_tag: String,
    /// The callee's To tag, from the first response carrying one.
    pub remote_tag: Option<String>,
    /// The flow requests take.
    pub flow: Flow,
    invite: Message,
    offered: OfferedAt,
    request_uri: String,
    from: String,
    to: String,
    via_host: String,
    user_agent: String,
    /// Contact of the 2xx: where in-dialog requests go.
    remote_target: Option<String>,
    /// Record-Route of the 2xx, reversed (RFC 3261 12.1.2).
    route_set: Vec<String>,
    cseq: u32,
    /// The highest RSeq acknowledged per early dialog (To tag), RFC 3262.
    acked_rseq: Vec<(String, u32)>,
    /// The SDP answer of a reliable provisional response, by To tag: the
    /// answer of the offer exchange, which the 2xx need not repeat.
    early_answer: Option<(String, Bytes)>,
}

/// A display name as a quoted-string body (RFC 3261 25.1): quotes and
/// backslashes escaped, control characters dropped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Our Contact on a flow (`via_host` is our advertised `host:port`).
fn contact(via_host: &str, flow: Flow) -> String {
    format!(
        "<sip:causeway@{via_host};transport={}>",
        flow.transport.as_str()
    )
}

impl UacLeg {
    /// A new leg and the INVITE that starts it. `None` only if the pieces
    /// given do not form a parseable request (a URI with spaces, say).
    pub fn invite(p: InviteParams) -> Option<(Self, Message)> {
        let call_id = format!("{}@causeway", random_token(20));
        let local_tag = random_token(10);
        let from = if p.display_name.is_empty() {
            format!("<{}>", p.from)
        } else {
            format!("\"{}\" <{}>", quote(&p.display_name), p.from)
        };
        let to = format!("<{}>", p.to);
        let transport = p.flow.transport.via_name();
        let timer = p
            .session_expires
            .map(|s| format!("Session-Expires: {s}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "INVITE {} SIP/2.0\r\nVia: SIP/2.0/{transport} {};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: {max_forwards}\r\nFrom: {from};tag={local_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: {}\r\n\
             Allow: {allow}\r\nSupported: {supported}\r\n{timer}User-Agent: {}\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
            p.request_uri,
            p.via_host,
            random_token(16),
            contact(&p.via_host, p.flow),
            p.user_agent,
            p.sdp.len(),
            p.sdp,
            max_forwards = p.max_forwards,
            allow = super::ALLOW_IN_DIALOG,
            supported = super::SUPPORTED,
        );
        let invite = Message::parse(text.as_bytes()).ok()?;
        Some((
            Self {
                call_id,
                local_tag,
                remote_tag: None,
                flow: p.flow,
                invite: invite.clone(),
                offered: p.offered,
                request_uri: p.request_uri,
                from,
                to,
                via_host: p.via_host,
                user_agent: p.user_agent,
                remote_target: None,
                route_set: Vec::new(),
                cseq: 1,
                acked_rseq: Vec::new(),
                early_answer: None,
            },
            invite,
        ))
    }

    /// Records what a response to an INVITE establishes: the To tag of
    /// the first response with one, and for a 2xx the remote target (a
    /// re-INVITE's 2xx refreshes it) and, for the first 2xx only, the route
    /// set (fixed once the dialog exists, RFC 3261 12.2.1.2). A 2xx from
    /// another fork (a different tag) after the first is not recorded; the
    /// caller ACKs and BYEs it.
    pub fn on_response(&mut self, resp: &Message) -> bool {
        let tag = tag_of(resp, "To");
        let is_2xx = resp.status().is_some_and(|c| (200..300).contains(&c));
        match (&self.remote_tag, tag) {
            (Some(ours), Some(t)) if *ours != t && self.remote_target.is_some() => return false,
            (_, Some(t)) => self.remote_tag = Some(t),
            (_, None) => {}
        }
        if !is_2xx {
            return true;
        }
        let target = resp
            .header("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|n| n.uri.to_string());
        if self.remote_target.is_some() {
            // A target refresh: the route set stays.
            if target.is_some() {
                self.remote_target = target;
            }
        } else {
            self.remote_target = target;
            self.route_set = resp
                .headers_named("Record-Route")
                .flat_map(super::msg::split_list)
                .map(str::to_string)
                .collect();
            self.route_set.reverse();
        }
        true
    }

    /// Whether CSeq number `seq` is one of our dialog-forming INVITE's
    /// (a 422 retry numbers it 2), not a later request in the dialog.
    pub fn is_initial(&self, seq: u32) -> bool {
        self.invite.cseq().is_some_and(|c| seq <= c.seq)
    }

    /// The INVITE again, asking for a `Session-Expires` of `interval`
    /// (with that `Min-SE`) after a 422 (RFC 4028 section 7.3): same
    /// Call-ID and tags, a new branch and the next CSeq. `None` when the
    /// INVITE asked for that much already (a retry would loop).
    pub fn retry_with_interval(&mut self, interval: u32) -> Option<Message> {
        let asked = super::timer::SessionExpires::of(&self.invite);
        if asked.is_some_and(|a| a.interval >= interval) {
            return None;
        }
        self.cseq += 1;
        let mut inv = self.invite.clone();
        inv.headers
            .retain(|h| !h.is("Min-SE") && !h.is("Session-Expires"));
        for h in &mut inv.headers {
            if h.is("Via") {
                h.value = format!(
                    "SIP/2.0/{} {};branch=z9hG4bK{};rport",
                    self.flow.transport.via_name(),
                    self.via_host,
                    random_token(16)
                );
            } else if h.is("CSeq") {
                h.value = format!("{} INVITE", self.cseq);
            }
        }
        inv.push_header("Session-Expires", interval.to_string());
        inv.push_header("Min-SE", interval.to_string());
        self.invite = inv.clone();
        Some(inv)
    }

    /// CANCEL for the INVITE (RFC 3261 9.1): same Request-URI, top Via,
    /// From, To and Call-ID, CSeq number with method CANCEL.
    pub fn cancel(&self) -> Option<Message> {
        let inv = &self.invite;
        let super::msg::StartLine::Request { uri, .. } = &inv.start else {
            return None;
        };
        let text = format!(
            "CANCEL {uri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {} CANCEL\r\nUser-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            inv.header("Via")?,
            inv.header("From")?,
            inv.header("To")?,
            self.call_id,
            inv.cseq()?.seq,
            self.user_agent,
        );
        Message::parse(text.as_bytes()).ok()
    }

    /// A request within the dialog (to the remote target, along the route
    /// set, with a To tag), with a fresh branch; `body` is its content type
    /// and text.
    fn in_dialog(
        &self,
        method: &str,
        cseq: u32,
        remote_tag: &str,
        body: Option<(&str, &str)>,
    ) -> Option<Message> {
        let target = self.remote_target.as_ref().unwrap_or(&self.request_uri);
        self.request_to(method, cseq, remote_tag, (target, &self.route_set), body)
    }

    /// A request of ours to `target` along `routes`, in the dialog with
    /// `remote_tag` (confirmed or early).
    fn request_to(
        &self,
        method: &str,
        cseq: u32,
        remote_tag: &str,
        (target, routes): (&str, &[String]),
        body: Option<(&str, &str)>,
    ) -> Option<Message> {
        let mut text = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\nFrom: {};tag={}\r\nTo: {};tag={remote_tag}\r\nCall-ID: {}\r\n\
             CSeq: {cseq} {method}\r\nUser-Agent: {}\r\n",
            self.flow.transport.via_name(),
            self.via_host,
            random_token(16),
            self.from,
            self.local_tag,
            self.to,
            self.call_id,
            self.user_agent,
        );
        for r in routes {
            text.push_str(&format!("Route: {r}\r\n"));
        }
        // Target-refresh requests carry our Contact (RFC 3261 12.2.1.1).
        if matches!(method, "INVITE" | "UPDATE") {
            text.push_str(&format!("Contact: {}\r\n", self.contact()));
        }
        match body {
            Some((content_type, body)) => text.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => text.push_str("Content-Length: 0\r\n\r\n"),
        }
        Message::parse(text.as_bytes()).ok()
    }

    /// The ACK for a 2xx (a transaction of its own, RFC 3261 13.2.2.4), to
    /// the tag that 2xx carries (another fork's 2xx gets its own ACK).
    pub fn ack(&self, ok: &Message) -> Option<Bytes> {
        let tag = tag_of(ok, "To")?;
        // The CSeq of the INVITE it answers (the first, or a re-INVITE).
        let cseq = ok.cseq().map_or(1, |c| c.seq);
        Some(self.in_dialog("ACK", cseq, &tag, None)?.to_bytes())
    }

    /// The PRACK a reliable provisional response asks for (RFC 3262: it
    /// requires `100rel` and carries an RSeq), in its early dialog (the
    /// response's tag, Contact and Record-Route); `None` for unreliable
    /// ones and for retransmissions (the PRACK's own transaction
    /// retransmits it).
    pub fn prack(&mut self, resp: &Message) -> Option<Message> {
        if !super::requires(resp, "100rel") {
            return None;
        }
        let rseq: u32 = resp.header("RSeq")?.trim().parse().ok()?;
        let tag = tag_of(resp, "To")?;
        let invite_cseq = resp.cseq()?.seq;
        // Only the next in sequence; a retransmission or one out of order
        // is not acknowledged (RFC 3262 section 4).
        match self.acked_rseq.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, last)) if rseq != *last + 1 => return None,
            Some((_, last)) => *last = rseq,
            None => self.acked_rseq.push((tag.clone(), rseq)),
        }
        if !resp.body.is_empty() && self.early_answer.is_none() {
            self.early_answer = Some((tag.clone(), resp.body.clone()));
        }
        let target = resp
            .header("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map_or_else(|| self.request_uri.clone(), |n| n.uri.to_string());
        let mut routes: Vec<String> = resp
            .headers_named("Record-Route")
            .flat_map(super::msg::split_list)
            .map(str::to_string)
            .collect();
        routes.reverse();
        self.cseq += 1;
        let mut prack = self.request_to("PRACK", self.cseq, &tag, (&target, &routes), None)?;
        prack.push_header("RAck", format!("{rseq} {invite_cseq} INVITE"));
        Some(prack)
    }

    /// The SDP answer a 2xx settles on: its own body, or, when it has none,
    /// the answer an acknowledged reliable 18x of the same dialog carried.
    pub fn answer_in(&self, ok: &Message) -> Bytes {
        if !ok.body.is_empty() {
            return ok.body.clone();
        }
        let tag = tag_of(ok, "To");
        match &self.early_answer {
            Some((t, sdp)) if tag.as_deref() == Some(t.as_str()) => sdp.clone(),
            _ => Bytes::new(),
        }
    }

    /// BYE ending the dialog.
    pub fn bye(&mut self) -> Option<Message> {
        let tag = self.remote_tag.clone()?;
        self.cseq += 1;
        self.in_dialog("BYE", self.cseq, &tag, None)
    }

    /// A re-INVITE carrying an SDP offer (hold, resume, a session refresh).
    pub fn reinvite(&mut self, sdp: &str) -> Option<Message> {
        self.request("INVITE", Some(("application/sdp", sdp)))
    }

    /// A request in the dialog with the next CSeq and, if any, a body
    /// (`content_type`, text): a re-INVITE, an INFO, an UPDATE.
    pub fn request(&mut self, method: &str, body: Option<(&str, &str)>) -> Option<Message> {
        let tag = self.remote_tag.clone()?;
        self.cseq += 1;
        self.in_dialog(method, self.cseq, &tag, body)
    }

    /// BYE for a 2xx that lost the race to another fork (same leg, other tag).
    pub fn bye_stray(&self, ok: &Message) -> Option<Message> {
        let tag = tag_of(ok, "To")?;
        self.in_dialog("BYE", self.cseq + 1, &tag, None)
    }

    /// The SDP offer of the INVITE.
    pub fn offered(&self) -> &[u8] {
        &self.invite.body
    }

    /// Where that offer put our media.
    pub fn offered_at(&self) -> OfferedAt {
        self.offered
    }

    /// Our Contact in this dialog.
    pub fn contact(&self) -> String {
        contact(&self.via_host, self.flow)
    }

    /// Whether a request from the callee belongs to this dialog.
    pub fn matches(&self, req: &Message) -> bool {
        req.call_id() == self.call_id
            && tag_of(req, "To").as_deref() == Some(self.local_tag.as_str())
            && tag_of(req, "From").is_some_and(|t| self.remote_tag.as_deref() == Some(t.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;
    use crate::sip::msg::{StartLine, response_to};

    fn leg() -> (UacLeg, Message) {
        UacLeg::invite(InviteParams {
            request_uri: "sip:alice@127.0.0.1:5070".into(),
            to: "sip:alice@example.org".into(),
            from: "sip:bob@example.org".into(),
            display_name: "Bob \"B\"".into(),
            flow: Flow {
                transport: Transport::Udp,
                local: "127.0.0.1:5060".parse().unwrap(),
                remote: "127.0.0.1:5070".parse().unwrap(),
                conn: None,
            },
            via_host: "127.0.0.1:5060".into(),
            user_agent: "causeway".into(),
            sdp: "v=0\r\n".into(),
            offered: OfferedAt {
                ip: "127.0.0.1".parse().unwrap(),
                port: 40000,
                video_port: None,
                origin: (1, 1),
            },
            session_expires: Some(1800),
            max_forwards: 70,
        })
        .unwrap()
    }

    fn answered(inv: &Message, code: u16, tag: &str) -> Message {
        let mut r = response_to(inv, code, "OK", Some(tag), None);
        r.push_header("Contact", "<sip:alice@127.0.0.1:5070;transport=udp>");
        r.push_header("Record-Route", "<sip:p1;lr>, <sip:p2;lr>");
        r
    }

    #[test]
    fn invite_cancel_ack_bye_follow_rfc_3261() {
        let (mut leg, inv) = leg();
        assert_eq!(inv.method(), Some(crate::sip::msg::Method::Invite));
        assert_eq!(inv.body.as_ref(), b"v=0\r\n");
        assert_eq!(inv.header("Session-Expires"), Some("1800"));
        assert_eq!(inv.header("Supported"), Some("100rel, timer"));
        assert!(
            inv.header("From")
                .unwrap()
                .starts_with("\"Bob \\\"B\\\"\" <sip:bob")
        );
        let cancel = leg.cancel().unwrap();
        assert_eq!(cancel.header("Via"), inv.header("Via"));
        assert_eq!(cancel.cseq().unwrap().seq, 1);

        let ok = answered(&inv, 200, "t1");
        assert!(leg.on_response(&ok));
        let ack = Message::parse(&leg.ack(&ok).unwrap()).unwrap();
        let StartLine::Request { uri, .. } = &ack.start else {
            panic!()
        };
        assert_eq!(uri, "sip:alice@127.0.0.1:5070;transport=udp");
        assert_ne!(
            ack.header("Via"),
            inv.header("Via"),
            "a 2xx ACK has its own branch"
        );
        let routes: Vec<_> = ack.headers_named("Route").collect();
        assert_eq!(routes, ["<sip:p2;lr>", "<sip:p1;lr>"]);
        let bye = leg.bye().unwrap();
        assert_eq!(bye.cseq().unwrap().seq, 2);
        assert!(bye.header("To").unwrap().ends_with(";tag=t1"));

        // Another fork answering later is not our dialog.
        assert!(leg.acked_rseq.is_empty());
        assert!(!leg.on_response(&answered(&inv, 200, "t2")));
        assert!(
            leg.bye_stray(&answered(&inv, 200, "t2"))
                .unwrap()
                .header("To")
                .unwrap()
                .ends_with("tag=t2")
        );

        // The callee's BYE matches by Call-ID and both tags.
        let theirs = format!(
            "BYE sip:causeway@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n\
             From: <sip:alice@example.org>;tag=t1\r\nTo: <sip:bob@example.org>;tag={}\r\n\
             Call-ID: {}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
            leg.local_tag, leg.call_id
        );
        assert!(leg.matches(&Message::parse(theirs.as_bytes()).unwrap()));
        let other = theirs.replace("tag=t1", "tag=t9");
        assert!(!leg.matches(&Message::parse(other.as_bytes()).unwrap()));
    }

    #[test]
    fn a_re_invites_2xx_refreshes_the_target_but_keeps_the_route_set() {
        let (mut leg, inv) = leg();
        assert!(leg.on_response(&answered(&inv, 200, "t1")));
        let reinvite = leg.reinvite("v=0\r\n").unwrap();
        // The 2xx to it names a new Contact and no Record-Route.
        let mut ok = response_to(&reinvite, 200, "OK", Some("t1"), None);
        ok.push_header("Contact", "<sip:alice@192.0.2.7:5070>");
        assert!(leg.on_response(&ok));
        let bye = leg.bye().unwrap();
        let StartLine::Request { uri, .. } = &bye.start else {
            panic!()
        };
        assert_eq!(uri, "sip:alice@192.0.2.7:5070");
        let routes: Vec<_> = bye.headers_named("Route").collect();
        assert_eq!(routes, ["<sip:p2;lr>", "<sip:p1;lr>"]);
    }

    #[test]
    fn a_422_is_retried_once_with_the_interval_it_asks_for() {
        let (mut leg, inv) = leg();
        let retry = leg.retry_with_interval(3600).unwrap();
        assert_eq!(retry.call_id(), inv.call_id());
        assert_eq!(retry.header("From"), inv.header("From"));
        assert_eq!(retry.cseq().unwrap().seq, 2);
        assert_ne!(
            retry.top_via().unwrap().branch(),
            inv.top_via().unwrap().branch()
        );
        assert_eq!(retry.header("Session-Expires"), Some("3600"));
        assert_eq!(retry.header("Min-SE"), Some("3600"));
        assert_eq!(retry.body, inv.body);
        // Its CANCEL matches it; asking again for no more gets nothing.
        let cancel = leg.cancel().unwrap();
        assert_eq!(cancel.header("Via"), retry.header("Via"));
        assert_eq!(cancel.cseq().unwrap().seq, 2);
        assert!(leg.retry_with_interval(3600).is_none());
    }

    #[test]
    fn a_reliable_provisional_gets_one_prack_in_its_early_dialog() {
        let (mut leg, inv) = leg();
        // Unreliable: nothing to acknowledge.
        let ringing = answered(&inv, 180, "t1");
        assert!(leg.prack(&ringing).is_none());
        let mut reliable = answered(&inv, 183, "t1");
        reliable.push_header("Require", "100rel");
        reliable.push_header("RSeq", "4711");
        let prack = leg.prack(&reliable).unwrap();
        assert_eq!(prack.method(), Some(crate::sip::msg::Method::Prack));
        assert_eq!(prack.header("RAck"), Some("4711 1 INVITE"));
        assert_eq!(prack.cseq().unwrap().seq, 2);
        assert!(prack.header("To").unwrap().ends_with(";tag=t1"));
        let StartLine::Request { uri, .. } = &prack.start else {
            panic!()
        };
        assert_eq!(uri, "sip:alice@127.0.0.1:5070;transport=udp");
        let routes: Vec<_> = prack.headers_named("Route").collect();
        assert_eq!(routes, ["<sip:p2;lr>", "<sip:p1;lr>"]);
        // Its retransmission is not acknowledged again, nor one out of
        // order; the next one is.
        assert!(leg.prack(&reliable).is_none());
        let with_rseq = |n: &str| {
            let mut next = reliable.clone();
            next.headers.retain(|h| !h.is("RSeq"));
            next.push_header("RSeq", n);
            next
        };
        assert!(leg.prack(&with_rseq("4713")).is_none());
        assert_eq!(
            leg.prack(&with_rseq("4712")).unwrap().header("RAck"),
            Some("4712 1 INVITE")
        );
        // Our BYE after the answer follows the PRACKs' CSeqs.
        assert!(leg.on_response(&answered(&inv, 200, "t1")));
        assert_eq!(leg.bye().unwrap().cseq().unwrap().seq, 4);
        // A reliable 18x with an answer: a bodiless 2xx settles on it.
        let (mut other, inv) = self::leg();
        let mut early = answered(&inv, 183, "t1");
        early.push_header("Require", "100rel");
        early.push_header("RSeq", "1");
        early.body = Bytes::from_static(b"v=0\r\n");
        assert!(other.prack(&early).is_some());
        let ok = answered(&inv, 200, "t1");
        assert_eq!(other.answer_in(&ok).as_ref(), b"v=0\r\n");
        assert!(other.answer_in(&answered(&inv, 200, "t2")).is_empty());
    }
}
