//! Media negotiated outside the plain offer-in-INVITE, answer-in-2xx
//! exchange: early media (a callee's 180/183 with SDP, bridged to the
//! caller before the answer, a browser or a SIP endpoint that gets our
//! 183 with SDP; the 2xx keeps or moves it) and late
//! offers (a SIP caller's INVITE without SDP: our 2xx carries the offer,
//! its ACK the answer, and the media waits for it).
//!
//! Owns when a call's media starts, moves or waits; what an answer agrees
//! is read by [`crate::sdp`], and media is moved by the runtime.

use super::uas::early_answer;
use super::{B2bua, CallOutput, CalleeMedia, Caller, CallerMedia, Notice, Party, Side, State};
use crate::sdp::{Agreed, Negotiated};
use crate::sip::msg::Message;
use std::time::Instant;

impl B2bua {
    /// An 18x with an SDP answer from a callee: its media (ringback,
    /// announcements) is bridged at once, from the first fork that sends
    /// one, to a browser caller, or to a SIP caller with our 183 and
    /// answer ([`early_answer`]; not while browsers ring too, whose answer
    /// would need the caller's media moved off this relay). The 2xx then
    /// keeps it or moves it.
    pub(super) fn early_media(&mut self, call_id: &str, i: usize, msg: &Message) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if msg.body.is_empty() || call.early.is_some() || call.state == State::Ended {
            return;
        }
        let body = String::from_utf8_lossy(&msg.body);
        let agreed = match crate::sdp::parse(&body).and_then(|sd| call.offer.read_answer(&sd)) {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(call = %call_id, error = %e, "early media refused");
                return;
            }
        };
        let caller = match &mut call.caller {
            Caller::Browser(peer) => CallerMedia::Browser(*peer),
            Caller::Sip(_) if !call.browsers.is_empty() => {
                tracing::info!(call = %call_id, "no early media to the SIP caller while browsers ring");
                return;
            }
            Caller::Sip(sc) => {
                let prefer = agreed.audio.format.codec.as_ref();
                let video = agreed.video.as_ref().and_then(|v| v.format.codec.as_ref());
                match early_answer(&self.dialogs, sc, (prefer, video), call.dtmf) {
                    Ok((progress, ours)) => {
                        self.out
                            .push_back(CallOutput::Respond(sc.key.clone(), progress));
                        CallerMedia::Sip(Box::new(ours))
                    }
                    Err(e) => {
                        tracing::info!(call = %call_id, reason = %e, "no early media to the SIP caller");
                        return;
                    }
                }
            }
        };
        if let CallerMedia::Sip(ours) = &caller {
            call.agreed_by(Party::Caller, &ours.audio);
        }
        tracing::info!(call = %call_id, fork = i, "early media from the SIP side");
        call.early = Some((i, agreed.clone()));
        self.notify(Notice::StartMedia {
            call: call_id.to_string(),
            caller,
            callee: CalleeMedia::Sip(Box::new(agreed)),
        });
    }

    /// A SIP callee answered (`n`; fork `i`): its media starts, or the
    /// early media stays or moves to it. Toward a SIP `caller` that made no
    /// offer (None), it waits for the caller's answer in its ACK.
    pub(super) fn answered_media(
        &mut self,
        call_id: &str,
        i: usize,
        caller: Option<CallerMedia>,
        n: Agreed,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        match (call.early.take(), caller) {
            // Early media runs: it stays, or moves to this answer.
            (Some((j, early)), _) => {
                if j != i || !same_media(&early.audio, &n.audio) {
                    tracing::info!(call = %call_id, "the answer moves the early media");
                    self.notify(Notice::UpdateMedia {
                        call: call_id.to_string(),
                        party: Party::Callee,
                        media: Box::new(n.audio),
                    });
                }
            }
            (None, Some(caller)) => self.notify(Notice::StartMedia {
                call: call_id.to_string(),
                caller,
                callee: CalleeMedia::Sip(Box::new(n)),
            }),
            (None, None) => call.held = Some(CalleeMedia::Sip(Box::new(n))),
        }
    }

    /// The ACK of a SIP caller that made no offer: its answer to ours
    /// starts the media held for it; without a usable one the call ends
    /// (BYE both ways).
    pub(super) fn late_answer(&mut self, now: Instant, ack: &Message) {
        let Some((call_id, _)) = self.by_call_id.get(ack.call_id()).cloned() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Caller::Sip(sc) = &mut call.caller else {
            return;
        };
        let (Some(ours), None) = (&sc.late, &sc.agreed) else {
            return;
        };
        let body = String::from_utf8_lossy(&ack.body);
        sc.session.theirs = ack.body.clone();
        match crate::sdp::parse(&body).and_then(|sd| ours.read_answer(&sd)) {
            Ok(a) => {
                tracing::info!(call = %call_id, "the caller answered our offer in its ACK");
                sc.agreed = Some(a.clone());
                call.agreed_by(Party::Caller, &a.audio);
                if let Some(callee) = call.held.take() {
                    self.notify(Notice::StartMedia {
                        call: call_id,
                        caller: CallerMedia::Sip(Box::new(a)),
                        callee,
                    });
                }
            }
            Err(e) => {
                tracing::info!(call = %call_id, error = %e, "no usable answer in the caller's ACK; hanging up");
                self.finish(now, &call_id, Side::Gateway, Some(488), &e.to_string());
            }
        }
    }
}

/// Whether two answers agree the same codec and payload types at the same
/// addresses with the same SRTP keys (the media path needs no change).
pub(super) fn same_media(a: &Negotiated, b: &Negotiated) -> bool {
    let key = |n: &Negotiated| {
        (
            n.format.clone(),
            n.dtmf.as_ref().map(|f| f.pt),
            n.remote_rtp,
            n.remote_rtcp,
            n.rtcp_mux,
            n.srtp.as_ref().map(crate::sdp::Srtp::keys),
        )
    };
    key(a) == key(b)
}
