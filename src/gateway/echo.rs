//! The built-in echo service, answered by the gateway itself as a UAS: the
//! offer is negotiated ([`crate::sdp`]), [`GwOutput::OpenMedia`] asks the
//! shell for ports, [`Gateway::media_ready`] sends the 200 (retransmitted
//! by [`crate::sip::dialog`] until the ACK), and the call ends on BYE or
//! when its media goes silent ([`Gateway::media_timeout`]; a caller that
//! refreshes is granted its session timer, but refreshes by re-INVITE get
//! 488 like any re-INVITE here, and the media timeout is what ends a
//! vanished caller's call). Signalling only:
//! the looping of media is the runtime's ([`crate::runtime::media`]).

use super::{ALLOW, Gateway, GwOutput};
use crate::sdp::{self, AnswerConfig};
use crate::sip::Flow;
use crate::sip::dialog::{Dialog, DialogId};
use crate::sip::msg::{Message, response_to};
use crate::sip::transaction::TxKey;
use bytes::Bytes;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

impl Gateway {
    /// Negotiates the echo service's answer and asks the shell for media
    /// ports; the 200 goes out from [`Self::media_ready`]. Offers we cannot
    /// read get 400, offers we cannot take 488, both with a Warning.
    pub(super) fn answer_echo(
        &mut self,
        now: Instant,
        key: &TxKey,
        msg: &Message,
        flow: Flow,
        rule: &str,
    ) {
        // The Warning names the rule, so an admin sees how the call got here.
        let refuse = |this: &mut Self, code, reason: &str, warning: String| {
            let warning = warning.replacen(
                " causeway \"",
                &format!(" causeway \"rule {rule} routes to echo; "),
                1,
            );
            tracing::info!(code, warning, "echo call refused");
            this.respond(
                now,
                key,
                msg,
                flow,
                code,
                reason,
                vec![("Warning", warning)],
            );
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
        let transport = d.flow.transport.uri_param();
        ok.push_header(
            "Contact",
            format!("<sip:echo@{}{transport}>", self.advertised(&d.flow)),
        );
        ok.push_header("Allow", ALLOW);
        ok.push_header("Supported", crate::sip::SUPPORTED);
        // A caller that refreshes gets its session timer; we refresh none
        // here (the media timeout ends calls whose caller vanished), so a
        // timer we would have to refresh is not granted.
        if let crate::sip::timer::Grant::On(se) = self.timers.grant(&d.invite)
            && se.refresher == Some(crate::sip::timer::Refresher::Uac)
        {
            crate::sip::timer::stamp_response(&mut ok, se);
        }
        ok.push_header("Content-Type", "application/sdp");
        ok.body = Bytes::from(body);
        self.counters.calls_answered.fetch_add(1, Relaxed);
        tracing::info!(dialog, "echo call answered");
        if let Some(sent) = self.tx.respond(now, &key, &ok) {
            self.dialogs.accepted(now, dialog, sent);
        }
        self.pump(now, wall);
    }

    /// The media of a call went silent (the caller vanished without BYE):
    /// hang up with a BYE and release the media.
    pub fn media_timeout(&mut self, now: Instant, wall: u64, dialog: DialogId) {
        self.hang_up(now, dialog, "no media from the caller");
        self.pump(now, wall);
    }

    /// Ends a dialog from our side: BYE to the caller, media released.
    pub(super) fn hang_up(&mut self, now: Instant, dialog: DialogId, why: &str) {
        self.opening.remove(&dialog);
        let Some(flow) = self.dialogs.get(dialog).map(|d| d.flow) else {
            return;
        };
        let via = self.advertised(&flow);
        if let Some((bye, flow)) = self.dialogs.bye(dialog, &via, &self.user_agent) {
            tracing::info!(dialog, why, "call ended with BYE");
            self.tx.send_request(now, &bye, flow);
        }
        self.out.push_back(GwOutput::CloseMedia { dialog });
    }

    /// A final response to a dialog's INVITE, with our tag and Server.
    pub(super) fn dialog_response(&self, d: &Dialog, code: u16, reason: &str) -> Message {
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
        keep_key: None,
        keep_video_key: None,
    }
}

/// The SDP of a request: the body when it is `application/sdp` (the
/// default), or the `application/sdp` part of a `multipart/mixed` body.
pub(super) fn sdp_body(msg: &Message) -> Option<&str> {
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
