//! SIP INFO in a call's dialogs (RFC 6086, legacy use without Info
//! packages, as phones and MCUs do it): digits received as
//! `application/dtmf-relay` or `application/dtmf` are passed to the other
//! side; `application/media_control+xml` `picture_fast_update` asks for a
//! keyframe; digits for a SIP side that takes them by INFO (the rule's
//! `media.dtmf`: always with `info`, when it agreed no telephone-event with
//! `auto`) are sent as `application/dtmf-relay`, and keyframe requests
//! toward a SIP side that takes no RTCP feedback as `picture_fast_update`
//! (RFC 5168), one INFO at a time per side so they arrive in order.
//!
//! Owns the INFO queues of each call and what digits mean for each side;
//! the RTP media path recognises and plays RFC 4733 events, the runtime
//! tells browsers. Must not touch media or sockets.

use super::{B2bua, Call, CallOutput, Caller, Leg, Notice, Party, Winner};
use crate::dialplan::DtmfMode;
use crate::media::dtmf::{Digit, format_info, parse_info};
use crate::media::keyframe::{MEDIA_CONTROL_TYPE, PICTURE_FAST_UPDATE, is_picture_fast_update};
use crate::sdp::Negotiated;
use crate::sip::Flow;
use crate::sip::msg::{Message, response_to};
use crate::sip::transaction::TxKey;
use std::collections::VecDeque;

/// What INFO bodies we read (the `Accept` of a 415).
const ACCEPT: &str = "application/dtmf-relay, application/dtmf, application/media_control+xml";

/// Whether a Content-Type header names `media_type` (parameters aside).
fn content_type_is(content_type: &str, media_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(media_type))
}

/// SIP INFO toward one SIP side of a call.
#[derive(Debug, Default)]
pub(super) struct InfoLeg {
    /// The side takes digits by INFO (decided when the call connects).
    pub on: bool,
    /// An INFO is in flight: what it carries, and its transaction once
    /// known.
    pending: Option<(Outgoing, Option<TxKey>)>,
    /// What waits for it.
    queue: VecDeque<Outgoing>,
    /// The side refused a `picture_fast_update` INFO: it gets no more
    /// (RFC 5168 section 7).
    no_keyframes: bool,
}

/// What an INFO of ours carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    Digit(Digit),
    /// `picture_fast_update`.
    Keyframe,
}

/// Whether a SIP side that agreed `n` takes digits by INFO under `mode`.
fn takes_info(mode: DtmfMode, n: &Negotiated) -> bool {
    match mode {
        DtmfMode::Info => true,
        DtmfMode::Rfc4733 => false,
        DtmfMode::Auto => n.dtmf.is_none(),
    }
}

impl Call {
    /// INFO toward side `p`.
    fn info(&mut self, p: Party) -> &mut InfoLeg {
        &mut self.info[p.index()]
    }

    /// Side `p` (SIP) agreed `n`: whether it takes digits by INFO follows.
    pub(super) fn agreed_by(&mut self, p: Party, n: &Negotiated) {
        self.info(p).on = takes_info(self.dtmf, n);
    }

    /// The browser on side `p`, if a browser is there.
    fn browser_at(&self, p: Party) -> Option<crate::webrtc::PeerId> {
        match (p, &self.caller, self.winner) {
            (Party::Caller, Caller::Browser(peer), _) => Some(*peer),
            (Party::Callee, _, Some(Winner::Browser(j))) => self.browsers.get(j)?.peer,
            _ => None,
        }
    }
}

impl B2bua {
    /// A digit recognised on side `from`'s RTP. The media path already
    /// relayed it as an event where the other side agreed events; here it
    /// goes to a browser's event stream, or by INFO to a SIP side that
    /// takes INFO.
    pub fn media_digit(&mut self, call_id: &str, from: Party, digit: Digit) {
        self.deliver(call_id, from.other(), digit, true);
    }

    /// Digits a browser sent through the client API; true when its SIP
    /// side takes them by INFO (queued here), false when the media path
    /// should play them as RFC 4733 events.
    pub fn browser_digits(&mut self, call_id: &str, digits: &str, duration_ms: u32) -> bool {
        let Some(call) = self.calls.get(call_id) else {
            return false;
        };
        let sip = match call.caller {
            Caller::Browser(_) => Party::Callee,
            Caller::Sip(_) => Party::Caller,
        };
        if !call.info[sip.index()].on {
            return false;
        }
        for digit in digits
            .chars()
            .filter(|c| crate::media::dtmf::event_code(*c).is_some())
        {
            let digit = Digit { digit, duration_ms };
            self.deliver(call_id, sip, digit, true);
        }
        true
    }

    /// Sends a digit to side `to`: a browser's event stream, INFO to a SIP
    /// side that takes it, else (unless the media path already `relayed`
    /// it) an RFC 4733 event on the media toward `to`.
    fn deliver(&mut self, call_id: &str, to: Party, digit: Digit, relayed: bool) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if let Some(peer) = call.browser_at(to) {
            self.notify(Notice::DtmfToBrowser { peer, digit });
        } else if call.info(to).on {
            call.info(to).queue.push_back(Outgoing::Digit(digit));
            self.send_next_info(call_id, to);
        } else if !relayed {
            self.notify(Notice::PlayDigit {
                call: call_id.to_string(),
                to,
                digit,
            });
        }
    }

    /// The media asks SIP side `sip` of a call for a keyframe of its
    /// video (it takes no RTCP feedback): an INFO with
    /// `picture_fast_update`, unless one is already waiting or the side
    /// refused one. Asked during early media, it goes once the call is
    /// answered (`send_queued_infos`).
    pub fn ask_keyframe(&mut self, call_id: &str, sip: Party) {
        let Some(call) = self
            .calls
            .get_mut(call_id)
            .filter(|c| c.state != super::State::Ended)
        else {
            return;
        };
        let connected = call.state == super::State::Connected;
        let leg = call.info(sip);
        if leg.no_keyframes {
            return;
        }
        if !leg.queue.contains(&Outgoing::Keyframe) {
            leg.queue.push_back(Outgoing::Keyframe);
        }
        if connected {
            self.send_next_info(call_id, sip);
        }
    }

    /// A call was answered: INFOs queued before (keyframe requests from
    /// early media) go.
    pub(super) fn send_queued_infos(&mut self, call_id: &str) {
        self.send_next_info(call_id, Party::Caller);
        self.send_next_info(call_id, Party::Callee);
    }

    /// Sends side `to`'s next queued INFO, unless one is in flight.
    fn send_next_info(&mut self, call_id: &str, to: Party) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let leg = call.info(to);
        if leg.pending.is_some() {
            return;
        }
        let Some(next) = leg.queue.pop_front() else {
            return;
        };
        let text;
        let body = match next {
            Outgoing::Digit(digit) => {
                text = format_info(&digit);
                ("application/dtmf-relay", text.as_str())
            }
            Outgoing::Keyframe => (MEDIA_CONTROL_TYPE, PICTURE_FAST_UPDATE),
        };
        let request = match (to, &call.caller, call.winner) {
            (Party::Caller, Caller::Sip(sc), _) => {
                self.dialogs
                    .request(sc.dialog, "INFO", &sc.via_host, &sc.user_agent, Some(body))
            }
            (Party::Callee, _, Some(Winner::Sip(i))) => call.forks.get_mut(i).and_then(|f| {
                let flow = f.leg.flow;
                f.leg.request("INFO", Some(body)).map(|m| (m, flow))
            }),
            _ => None,
        };
        if let Some((msg, flow)) = request {
            match next {
                Outgoing::Digit(d) => {
                    tracing::info!(call = %call_id, digit = %d.digit, ms = d.duration_ms, "DTMF sent by SIP INFO");
                }
                Outgoing::Keyframe => {
                    tracing::info!(call = %call_id, "picture_fast_update sent by SIP INFO");
                }
            }
            call.info(to).pending = Some((next, None));
            self.out.push_back(CallOutput::Request(msg, flow));
        }
    }

    /// The transaction of an INFO we sent (on the SIP Call-ID).
    pub(super) fn info_sent(&mut self, sip_call_id: &str, key: TxKey) {
        if let Some((call_id, leg)) = self.by_call_id.get(sip_call_id)
            && let Some(call) = self.calls.get_mut(call_id)
            && let Some((_, pending)) = &mut call.info(leg.party()).pending
        {
            *pending = Some(key);
        }
    }

    /// Our INFO got its final response `code` (None: none came; whatever
    /// it was, nothing is resent): the next one may go. A keyframe request
    /// the side refused (a 4xx-6xx, not for a passing reason: 401, 407,
    /// 408, 480, 481, 491, 5xx but 501) is the last it gets.
    pub(super) fn info_answered(&mut self, call_id: &str, to: Party, code: Option<u16>) {
        if let Some(call) = self.calls.get_mut(call_id) {
            let leg = call.info(to);
            let refused = code.is_some_and(|c| match c {
                501 => true,
                401 | 407 | 408 | 480 | 481 | 491 | 500..=599 => false,
                400..=699 => true,
                _ => false,
            });
            if let Some((Outgoing::Keyframe, _)) = leg.pending
                && refused
            {
                tracing::info!(call = %call_id, code, "picture_fast_update refused by INFO; no more are sent");
                leg.no_keyframes = true;
                leg.queue.retain(|o| *o != Outgoing::Keyframe);
            }
            leg.pending = None;
        }
        self.send_next_info(call_id, to);
    }

    /// An INFO of ours got no final response; true when `key` was one.
    pub(super) fn info_timed_out(&mut self, key: &TxKey) -> bool {
        let found = self.calls.iter().find_map(|(id, c)| {
            let to = [Party::Caller, Party::Callee].into_iter().find(|p| {
                c.info[p.index()]
                    .pending
                    .as_ref()
                    .and_then(|(_, k)| k.as_ref())
                    == Some(key)
            })?;
            Some((id.clone(), to))
        });
        let Some((call_id, to)) = found else {
            return false;
        };
        tracing::info!(call = %call_id, "an INFO got no answer");
        self.info_answered(&call_id, to, None);
        true
    }

    /// An INFO from a SIP side of a call: digits go to the other side, a
    /// keyframe request to the media. Returns our response: 200, 415 for
    /// a body we do not read, 400 for a digit we cannot.
    pub(super) fn on_info(
        &mut self,
        call_id: &str,
        leg: Leg,
        msg: &Message,
        flow: Flow,
    ) -> Message {
        let respond = |code, reason| response_to(msg, code, reason, None, Some(flow.remote));
        if msg.body.is_empty() {
            // A keep-alive probe.
            return respond(200, "OK");
        }
        let content_type = msg.header("Content-Type").unwrap_or_default();
        let body = String::from_utf8_lossy(&msg.body);
        let live = self.calls.get(call_id).is_some_and(|c| match leg {
            Leg::Caller => c.winner.is_some(),
            Leg::Fork(i) => c.winner == Some(Winner::Sip(i)),
        });
        if content_type_is(content_type, MEDIA_CONTROL_TYPE) {
            if live && is_picture_fast_update(content_type, &body) {
                tracing::info!(call = %call_id, "keyframe asked by SIP INFO");
                self.notify(Notice::KeyframeWanted {
                    call: call_id.to_string(),
                    from: leg.party(),
                });
            }
            return respond(200, "OK");
        }
        match parse_info(content_type, &body) {
            Ok(digit) => {
                tracing::info!(call = %call_id, digit = %digit.digit, ms = digit.duration_ms, "DTMF received by SIP INFO");
                if live {
                    self.deliver(call_id, leg.party().other(), digit, false);
                }
                respond(200, "OK")
            }
            Err(e)
                if content_type_is(content_type, "application/dtmf-relay")
                    || content_type_is(content_type, "application/dtmf") =>
            {
                let mut r = respond(400, "Bad Request");
                r.push_header("Warning", format!("399 causeway \"{e}\""));
                r
            }
            Err(_) => {
                let mut r = respond(415, "Unsupported Media Type");
                r.push_header("Accept", ACCEPT);
                r
            }
        }
    }
}
