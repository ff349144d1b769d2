//! Session timers (RFC 4028) on the SIP sides of connected calls. Each
//! SIP side keeps its own timer, as its INVITE transaction set it: a
//! refresh from that side (a re-INVITE or an UPDATE) restarts it, and our
//! 2xx says what was granted. Where we refresh, an UPDATE goes out at half
//! the interval (a re-INVITE with our SDP unchanged to a side that does not
//! take UPDATE). A side that stops refreshing, or leaves our refresh
//! unanswered, ends the call: BYE to both sides before the session would
//! expire anyway.
//!
//! A side whose media went silent ([`B2bua::media_silent`]) ends the call
//! the same way. Also reports each side's session for the admin API
//! ([`B2bua::legs`]).
//! The header rules are [`crate::sip::timer`]'s. Must not touch media or
//! forks still ringing.

use super::*;
use crate::cdr::LegState;
use crate::sip::timer::{self, Due, Grant, SessionTimers};
use std::time::Duration;

/// Whether a message's Allow lists UPDATE (it takes our refreshes).
pub(super) fn allows_update(msg: &Message) -> bool {
    msg.header_list("Allow")
        .any(|m| m.eq_ignore_ascii_case("UPDATE"))
}

impl Call {
    /// A SIP side's session: the caller's, or the answering callee's.
    pub(super) fn session(&self, party: Party) -> Option<&Session> {
        match party {
            Party::Caller => match &self.caller {
                Caller::Sip(sc) => Some(&sc.session),
                Caller::Browser(_) => None,
            },
            Party::Callee => self.callee.as_ref().map(|c| &c.session),
        }
    }

    /// [`Self::session`], to change.
    pub(super) fn session_mut(&mut self, party: Party) -> Option<&mut Session> {
        match party {
            Party::Caller => match &mut self.caller {
                Caller::Sip(sc) => Some(&mut sc.session),
                Caller::Browser(_) => None,
            },
            Party::Callee => self.callee.as_mut().map(|c| &mut c.session),
        }
    }

    /// When `party`'s session timer falls due, if it has one.
    fn session_due(&self, party: Party) -> Option<Instant> {
        self.session(party)?.timer.map(|t| t.due)
    }

    /// When [`B2bua::handle_timeout`] next has work for this call: its
    /// no-answer (or settling) deadline until connected, then its session
    /// timers; and any 2xx resent to a callee.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let resends = self.forks.iter().filter_map(|f| f.unacked.as_ref());
        let due = if self.state == State::Connected {
            [
                self.session_due(Party::Caller),
                self.session_due(Party::Callee),
            ]
        } else {
            [Some(self.give_up), None]
        };
        due.into_iter()
            .flatten()
            .chain(resends.map(crate::sip::dialog::Resend::due))
            .min()
    }
}

/// A request of ours in a SIP caller's dialog; a target-refresh request
/// (re-INVITE, UPDATE) carries our Contact (RFC 3261 12.2.1.1, RFC 3311)
/// and, while the caller's session has a timer, its `Session-Expires`.
pub(super) fn caller_request(
    dialogs: &mut Dialogs,
    sc: &SipCaller,
    method: &str,
    body: Option<(&str, &str)>,
) -> Option<(Message, Flow)> {
    let (mut req, flow) = dialogs.request(sc.dialog, method, &sc.via_host, &sc.user_agent, body)?;
    if matches!(method, "INVITE" | "UPDATE") {
        req.push_header("Contact", sc.contact.clone());
        stamp_request(&mut req, &sc.session);
    }
    Some((req, flow))
}

/// A re-INVITE or UPDATE we send a side whose session has a timer keeps
/// it running: without `Session-Expires`, the peer's 2xx would switch it
/// off (RFC 4028 section 7.4).
pub(super) fn stamp_request(req: &mut Message, s: &Session) {
    if let Some(t) = &s.timer {
        req.push_header("Supported", crate::sip::SUPPORTED);
        req.push_header("Session-Expires", t.as_uac().value());
    }
}

/// The session timer an in-dialog re-INVITE or UPDATE asks for. The
/// interval the dialog already runs at is not ours to shorten: with no
/// interval of ours, only a `Session-Expires` grants one (or, below our
/// `min_se`, gets 422).
pub(super) fn in_dialog_grant(req: &Message, min_se: u32) -> Grant {
    let rules = SessionTimers {
        expires: 0,
        min_se: min_se.max(timer::MIN_SE),
    };
    rules.grant(req)
}

impl B2bua {
    /// `party` sent a session-refresh request (a re-INVITE, an UPDATE) and
    /// we answer it `resp`: a 2xx restarts that side's timer (at the
    /// interval the request asks for, when it asks for one we can take)
    /// and tells it what holds; a side that does not support timers
    /// cannot refresh, so we do (RFC 4028 section 9). Refreshes need no
    /// answer from the other side.
    pub(super) fn session_refreshed(
        &mut self,
        now: Instant,
        call_id: &str,
        party: Party,
        (req, grant): (&Message, Grant),
        resp: &mut Message,
    ) {
        if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
            return;
        }
        let Some(s) = self
            .calls
            .get_mut(call_id)
            .and_then(|c| c.session_mut(party))
        else {
            return;
        };
        match grant {
            Grant::On(se) => s.timer = Some(LegTimer::new(now, se, true)),
            _ => {
                if let Some(t) = &mut s.timer {
                    t.we_refresh |= !crate::sip::supports(req, "timer");
                    t.refreshed(now);
                }
            }
        }
        if let Some(t) = &s.timer {
            if resp.header("Supported").is_none() {
                resp.push_header("Supported", crate::sip::SUPPORTED);
            }
            timer::stamp_response(resp, t.as_uas());
        }
    }

    /// A final response to a re-INVITE or UPDATE we sent `leg`'s side of a
    /// connected call (a refresh, or a hold passed on): a 2xx refreshes
    /// its session (one without `Session-Expires` from a side that was to
    /// refresh ends its timer, RFC 4028 section 7.2); 408 or 481 say the dialog is gone, which ends the call
    /// (section 10); a side that turns out not to take UPDATE is refreshed
    /// by re-INVITE at once, and glare or a passing failure (491, 5xx) is
    /// retried 2 s on.
    pub(super) fn refresh_answered(
        &mut self,
        now: Instant,
        call_id: &str,
        leg: Leg,
        resp: &Message,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.state != State::Connected
            || matches!(leg, Leg::Fork(i) if call.winner != Some(Winner::Sip(i)))
        {
            return;
        }
        let party = leg.party();
        let Some(s) = call.session_mut(party) else {
            return;
        };
        let update = resp.cseq().is_some_and(|c| c.method == Method::Update);
        match resp.status().unwrap_or_default() {
            // The UAS of our request may set another interval. A 2xx without
            // one from a side that was to refresh switches its timer off
            // (we could only hang up on a live peer); where we refresh, it
            // answered, which is all a refresh asks.
            200..=299 => match timer::SessionExpires::of(resp) {
                Some(se) => s.timer = Some(LegTimer::new(now, se, false)),
                None => match &mut s.timer {
                    Some(t) if t.we_refresh => t.refreshed(now),
                    _ => s.timer = None,
                },
            },
            code @ (408 | 481) => {
                tracing::info!(call = %call_id, code, side = ?party, "session refresh failed");
                let reason = format!("session refresh failed ({code})");
                self.finish(now, call_id, Side::Gateway, None, &reason);
            }
            405 | 501 if update => {
                s.update = false;
                if let Some(t) = &mut s.timer {
                    t.retry(now);
                }
            }
            491 | 500..=599 => {
                if let Some(t) = &mut s.timer {
                    t.retry(now + Duration::from_secs(2));
                }
            }
            _ => {}
        }
    }

    /// Runs the session timers that fell due: sends our refreshes and ends
    /// calls whose sessions expired.
    pub(super) fn session_timers_due(&mut self, now: Instant) {
        let due: Vec<(String, Party)> = self
            .calls
            .iter()
            .filter(|(_, c)| c.state == State::Connected)
            .flat_map(|(id, c)| {
                [Party::Caller, Party::Callee]
                    .into_iter()
                    .filter(|p| c.session_due(*p).is_some_and(|d| d <= now))
                    .map(|p| (id.clone(), p))
            })
            .collect();
        for (id, party) in due {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            let Some(t) = call.session_mut(party).and_then(|s| s.timer.as_mut()) else {
                continue;
            };
            match t.on_due(now) {
                Due::Refresh => self.send_refresh(&id, party),
                Due::Expired => {
                    let who = party.name();
                    tracing::info!(call = %id, side = who, "session expired");
                    let reason = format!("session expired: no refresh from {who}");
                    self.finish(now, &id, Side::Gateway, None, &reason);
                }
            }
        }
    }

    /// Our refresh of `party`'s session: an UPDATE, or a re-INVITE with
    /// our SDP unchanged to a side that does not take UPDATE.
    fn send_refresh(&mut self, call_id: &str, party: Party) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let winner = call.winner;
        let Some(s) = call.session_mut(party) else {
            return;
        };
        if s.timer.is_none() {
            return;
        }
        let (method, body) = if s.update {
            ("UPDATE", None)
        } else {
            ("INVITE", Some(s.sdp.clone()))
        };
        let body = body.as_deref().map(|b| ("application/sdp", b));
        let req = match (party, &call.caller, winner) {
            (Party::Caller, Caller::Sip(sc), _) => {
                caller_request(&mut self.dialogs, sc, method, body)
            }
            (Party::Callee, _, Some(Winner::Sip(w))) => {
                let (fork, callee) = (call.forks.get_mut(w), call.callee.as_ref());
                fork.zip(callee).and_then(|(f, c)| {
                    let mut req = f.leg.request(method, body)?;
                    stamp_request(&mut req, &c.session);
                    Some((req, f.leg.flow))
                })
            }
            _ => None,
        };
        if let Some((req, flow)) = req {
            tracing::debug!(call = %call_id, side = ?party, method, "refreshing the session");
            self.out.push_back(CallOutput::Request(req, flow));
        }
    }

    /// A SIP side of a connected call sent nothing (no RTP, no RTCP) for
    /// the media timeout: it is gone without a BYE, so both sides are
    /// hung up (the silent one gets its BYE too, in case it is only mute).
    pub fn media_silent(&mut self, now: Instant, call_id: &str, from: Party) {
        if !self
            .calls
            .get(call_id)
            .is_some_and(|c| c.state == State::Connected)
        {
            return;
        }
        let who = from.name();
        tracing::info!(call = %call_id, side = who, "no media; hanging up");
        let reason = format!("no media from {who}");
        self.finish(now, call_id, Side::Gateway, None, &reason);
    }
}

impl Session {
    /// What the admin API shows of a SIP side.
    fn state(&self, side: &str) -> LegState {
        LegState {
            side: side.into(),
            leg: "sip".into(),
            local_sdp: self.sdp.clone(),
            remote_sdp: String::from_utf8_lossy(&self.theirs).into_owned(),
            session_expires: self.timer.map(|t| t.interval.as_secs() as u32),
            refresher: self
                .timer
                .map(|t| if t.we_refresh { "gateway" } else { "peer" }.into()),
            ..LegState::default()
        }
    }
}

impl B2bua {
    /// Each side of a connected call: a SIP side's SDPs and session timer,
    /// or a browser's call id in the client API (which knows its state).
    /// Empty for calls not connected.
    pub fn legs(&self, call_id: &str) -> Vec<LegState> {
        let Some(call) = self
            .calls
            .get(call_id)
            .filter(|c| c.state == State::Connected)
        else {
            return Vec::new();
        };
        let browser = |side: &str, id: &str| LegState {
            side: side.into(),
            leg: "webrtc".into(),
            browser_call: Some(id.to_string()),
            ..LegState::default()
        };
        let caller = match &call.caller {
            Caller::Sip(sc) => sc.session.state("caller"),
            Caller::Browser(_) => browser("caller", call_id),
        };
        let callee = match call.winner {
            Some(Winner::Sip(_)) => call.callee.as_ref().map(|c| c.session.state("callee")),
            Some(Winner::Browser(j)) => call.browsers.get(j).map(|b| browser("callee", &b.id)),
            None => None,
        };
        std::iter::once(caller).chain(callee).collect()
    }
}
