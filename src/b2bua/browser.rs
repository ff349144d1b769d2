//! Browsers as callees: a SIP call to an alias that browsers registered
//! through the client API rings them beside the SIP contacts.
//!
//! Each browser is a fork like a SIP one. The runtime makes its peer and
//! our offer and tells the browser ([`Notice::RingBrowser`]), then reports
//! back ([`B2bua::browser_offered`]): the call rings, or that fork failed
//! (480 when nobody listens, 503 when the hub is full). The browser's
//! answer ([`B2bua::browser_answered`]) wins the call like a 2xx: the other
//! forks stop, the SIP caller gets our 200 in the browser's codec when it
//! offered it (relayed), else transcoded. A browser that hangs up before
//! answering declines (603); one that goes away (its peer times out, its
//! event stream closes) is unavailable (480).

use super::codecs::{browser_video, caller_video_answer};
use super::{
    B2bua, BrowserFork, BrowserState, CallEvent, CallOutput, CalleeMedia, Caller, CallerMedia,
    Notice, Party, Side, State, Winner, accept_caller, browser_audio, cancel_fork,
};
use crate::sip::msg::{Message, NameAddr};
use crate::webrtc::{PeerFormat, PeerId};
use causeway_codecs::registry::AudioCodec;
use std::collections::VecDeque;
use std::time::Instant;

impl B2bua {
    /// The call a browser fork belongs to (its media runs under the
    /// call's id).
    pub fn call_of_fork(&self, fork: &str) -> Option<&str> {
        self.by_fork.get(fork).map(|(call, _)| call.as_str())
    }

    /// Asks the runtime to ring the browser forks of a new call.
    pub(super) fn ring_browsers(&mut self, call_id: &str, from: &str) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let audio: Vec<AudioCodec> = call
            .offer
            .audio
            .iter()
            .filter_map(|f| f.codec.as_ref().and_then(AudioCodec::from_key))
            .collect();
        let video = match &call.caller {
            Caller::Sip(sc) => sc
                .video_offer
                .as_ref()
                .map(|(_, codecs)| codecs.clone())
                .unwrap_or_default(),
            Caller::Browser(_) => Vec::new(),
        };
        for b in call
            .browsers
            .iter()
            .filter(|b| b.state == BrowserState::Offering)
        {
            self.out.push_back(CallOutput::Notice(Notice::RingBrowser {
                fork: b.id.clone(),
                participant: b.participant.clone(),
                from: from.to_string(),
                audio: audio.clone(),
                video: video.clone(),
            }));
        }
    }

    /// What became of ringing a browser: its peer (the browser was told),
    /// or the status that fork failed with. A peer for a call that ended
    /// meanwhile is released.
    pub fn browser_offered(&mut self, now: Instant, fork: &str, result: Result<PeerId, u16>) {
        let call_id = self.by_fork.get(fork).map(|(call, _)| call.clone());
        let b = self.by_fork.get(fork).and_then(|(call, j)| {
            self.calls
                .get_mut(call)
                .and_then(|c| c.browsers.get_mut(*j))
        });
        let (Some(call_id), Some(b)) = (call_id, b.filter(|b| b.state == BrowserState::Offering))
        else {
            // The call ended (or this fork stopped) while the peer was made.
            if let Ok(peer) = result {
                self.release_peer(fork, peer);
            }
            return;
        };
        match result {
            Ok(peer) => {
                b.peer = Some(peer);
                b.state = BrowserState::Ringing;
                tracing::info!(call = %call_id, fork, "browser ringing");
                self.ringing(now, &call_id);
            }
            Err(code) => {
                b.state = BrowserState::Done;
                b.failure = Some(code);
                tracing::info!(call = %call_id, fork, code, "browser unreachable");
                self.all_failed(now, &call_id, Side::Browser, code, "");
            }
        }
        self.reap(&call_id);
    }

    /// A browser answered our offer (its peer has the answer applied and
    /// negotiated `formats`): it wins the call unless another callee did,
    /// or the call is over (then its peer is released).
    pub fn browser_answered(&mut self, now: Instant, fork: &str, formats: Vec<PeerFormat>) {
        let Some((call_id, j)) = self.by_fork.get(fork).cloned() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(b) = call.browsers.get_mut(j) else {
            return;
        };
        let Some(peer) = b.peer else { return };
        let live = matches!(call.state, State::Calling | State::Ringing);
        if !live || b.state != BrowserState::Ringing {
            b.state = BrowserState::Done;
            self.release_peer(fork, peer);
            return;
        }
        let Some(theirs) = browser_audio(&formats) else {
            b.state = BrowserState::Done;
            b.failure = Some(488);
            self.release_peer(fork, peer);
            self.all_failed(now, &call_id, Side::Browser, 488, "Not Acceptable Here");
            return;
        };
        b.state = BrowserState::Answered;
        call.winner = Some(Winner::Browser(j));
        for f in &mut call.forks {
            cancel_fork(f, &mut self.out);
        }
        stop_browsers(&mut call.browsers, &mut self.out, "answered elsewhere");
        let answered = match &mut call.caller {
            Caller::Sip(sc) => {
                // The browser's video codec where the caller offered it
                // (relayed), else one the caller offered (transcoded).
                let video = browser_video(&formats)
                    .zip(sc.caller_offer.as_ref())
                    .and_then(|(b, offer)| caller_video_answer(offer, b))
                    .and_then(|c| crate::sdp::video_format(c).codec);
                accept_caller(
                    &mut self.dialogs,
                    &mut self.out,
                    now,
                    sc,
                    Some(&theirs.codec.key()),
                    video.as_ref(),
                    (&call.offer, call.dtmf),
                )
            }
            Caller::Browser(_) => Err("browsers do not call browsers".to_string()),
        };
        match answered {
            Ok(agreed) => {
                call.state = State::Connected;
                // The caller's codec (else, until its ACK answers our
                // offer, the browser's).
                let key = agreed.as_ref().and_then(|a| a.audio.format.codec.clone());
                let key = key.unwrap_or_else(|| theirs.codec.key());
                let codec = format!("{}/{}", key.name, key.clock_rate);
                tracing::info!(call = %call_id, fork, %codec, "browser answered");
                let callee = CalleeMedia::Browser(peer, formats);
                match agreed {
                    Some(agreed) => {
                        call.agreed_by(Party::Caller, &agreed.audio);
                        self.notify(Notice::StartMedia {
                            call: call_id.clone(),
                            caller: CallerMedia::Sip(Box::new(agreed)),
                            callee,
                        });
                    }
                    None => call.held = Some(callee),
                }
                for id in [call_id.as_str(), fork] {
                    self.notify(Notice::Event(
                        id.to_string(),
                        CallEvent::Connected {
                            codec: codec.clone(),
                        },
                    ));
                }
            }
            Err(e) => {
                tracing::info!(call = %call_id, error = %e, "browser answer unusable; hanging up");
                self.end(now, &call_id, Side::Gateway, Some(488), &e);
            }
        }
    }

    /// A browser fork's peer closed or its browser hung up: before it
    /// answered, it declined (603 for a `hangup`; 480 when it went away);
    /// after, the call is over. Returns false when `fork` is no browser
    /// fork.
    pub(super) fn browser_fork_gone(&mut self, now: Instant, fork: &str, reason: &str) -> bool {
        let Some((call_id, j)) = self.by_fork.get(fork).cloned() else {
            return false;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return true;
        };
        let Some(b) = call.browsers.get_mut(j) else {
            return true;
        };
        match b.state {
            BrowserState::Offering | BrowserState::Ringing => {
                // Only a hang-up is a refusal; a browser that went away
                // (its peer timed out, its event stream closed) is not
                // available.
                let (code, phrase) = if reason == crate::webrtc::CloseReason::Local.as_str() {
                    tracing::info!(call = %call_id, fork, "browser declined");
                    (603, "Decline")
                } else {
                    tracing::info!(call = %call_id, fork, reason, "browser went away while ringing");
                    (480, "Temporarily Unavailable")
                };
                b.state = BrowserState::Done;
                b.failure = Some(code);
                self.all_failed(now, &call_id, Side::Browser, code, phrase);
                self.reap(&call_id);
            }
            BrowserState::Answered => {
                tracing::info!(call = %call_id, fork, reason, "browser side hung up");
                self.end(now, &call_id, Side::Browser, None, reason);
            }
            BrowserState::Done => {}
        }
        true
    }

    /// Closes a browser fork's peer that no call needs.
    fn release_peer(&mut self, fork: &str, peer: PeerId) {
        self.notify(Notice::Release {
            call: fork.to_string(),
            peer: Some(peer),
        });
    }
}

/// Stops every browser fork still ringing (another callee answered): each
/// is told the call ended and its peer is released.
pub(super) fn stop_browsers(
    browsers: &mut [BrowserFork],
    out: &mut VecDeque<CallOutput>,
    reason: &str,
) {
    for b in browsers
        .iter_mut()
        .filter(|b| matches!(b.state, BrowserState::Offering | BrowserState::Ringing))
    {
        b.state = BrowserState::Done;
        out.push_back(CallOutput::Notice(Notice::Event(
            b.id.clone(),
            CallEvent::Ended {
                by: Side::Gateway,
                status: None,
                reason: reason.to_string(),
            },
        )));
        if let Some(peer) = b.peer {
            out.push_back(CallOutput::Notice(Notice::Release {
                call: b.id.clone(),
                peer: Some(peer),
            }));
        }
    }
}

/// Who a SIP caller is, for people: the From display name, else its user
/// (or host).
pub(super) fn caller_name(invite: &Message) -> String {
    let from = invite.header("From").and_then(|f| NameAddr::parse(f).ok());
    match from {
        Some(NameAddr {
            display: Some(d), ..
        }) if !d.trim().is_empty() => d,
        Some(n) => n.uri.user.unwrap_or(n.uri.host),
        None => String::new(),
    }
}
