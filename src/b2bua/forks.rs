//! The callee side as a UAC: what our forks' responses mean for a call.
//! A 1xx rings (and may bring early media; a reliable one gets its PRACK,
//! RFC 3262), a 2xx wins the call (the others are cancelled, a late one is
//! ACKed and sent a BYE) and answers the caller, failures of every callee end the call with the most telling
//! status, and a fork that never answers is unreachable (408).
//!
//! Owns fork states and the answer's consequences; INVITEs, CANCELs,
//! PRACKs and ACKs are built by [`crate::sip::uac`], and the transaction
//! layer retransmits them.

use super::*;

impl B2bua {
    /// The transaction key the layer gave a request we sent (so a
    /// timeout can be matched to its fork or INFO).
    pub fn sent(&mut self, msg: &Message, key: TxKey) {
        let call_id = msg.call_id();
        if msg.method() == Some(Method::Info) {
            self.info_sent(call_id, key);
            return;
        }
        if let Some((call, Leg::Fork(i))) = self.by_call_id.get(call_id)
            && msg.method() == Some(Method::Invite)
            && let Some(f) = self.calls.get_mut(call).and_then(|c| c.forks.get_mut(*i))
            && f.key.is_none()
        {
            f.key = Some(key);
        }
    }

    /// A response to one of our requests (responses to CANCEL and BYE
    /// need nothing).
    pub fn on_response(&mut self, now: Instant, msg: &Message) {
        let Some((call_id, leg)) = self.by_call_id.get(msg.call_id()).cloned() else {
            return;
        };
        let Some(code) = msg.status() else { return };
        let Some(cseq) = msg.cseq() else { return };
        if cseq.method == Method::Info && code >= 200 {
            self.info_answered(&call_id, leg.party(), Some(code));
            return;
        }
        let in_dialog = match leg {
            Leg::Caller => true,
            Leg::Fork(i) => self
                .calls
                .get(&call_id)
                .and_then(|c| c.forks.get(i))
                .is_some_and(|f| !f.leg.is_initial(cseq.seq)),
        };
        if in_dialog && code >= 200 && matches!(cseq.method, Method::Invite | Method::Update) {
            self.refresh_answered(now, &call_id, leg, msg);
            if (200..300).contains(&code) {
                self.reanswered(&call_id, leg, msg);
            }
        }
        if cseq.method != Method::Invite {
            return;
        }
        let Leg::Fork(i) = leg else {
            // Our re-INVITE to the SIP caller: a 2xx gets its ACK.
            if (200..300).contains(&code)
                && let Some(Caller::Sip(sc)) = self.calls.get(&call_id).map(|c| &c.caller)
                && let Some(flow) = self.dialogs.get(sc.dialog).map(|d| d.flow)
                && let Some(ack) =
                    self.dialogs
                        .ack(sc.dialog, cseq.seq, &sc.via_host, &sc.user_agent)
            {
                self.out.push_back(CallOutput::Transmit(flow, ack));
            }
            return;
        };
        match code {
            100 => {}
            _ if in_dialog => self.in_dialog_response(&call_id, i, code, msg),
            101..=199 => self.on_provisional(now, &call_id, i, code, msg),
            200..=299 => self.on_answer(now, &call_id, i, msg),
            422 if self.retry_fork(&call_id, i, msg) => {}
            _ => self.on_failure(now, &call_id, i, code, msg.reason().unwrap_or_default()),
        }
        self.reap(&call_id);
    }

    /// A response to one of our re-INVITEs in a fork's dialog (its outcome
    /// went to `refresh_answered`): a 2xx refreshes the remote target and
    /// gets its ACK, a reliable 18x its PRACK; nothing rings, answers or
    /// fails the call.
    fn in_dialog_response(&mut self, call_id: &str, i: usize, code: u16, msg: &Message) {
        let Some(fork) = self.calls.get_mut(call_id).and_then(|c| c.forks.get_mut(i)) else {
            return;
        };
        if (200..300).contains(&code) {
            fork.leg.on_response(msg);
            if let Some(ack) = fork.leg.ack(msg) {
                self.out.push_back(CallOutput::Transmit(fork.leg.flow, ack));
            }
        } else if code < 200
            && let Some(prack) = fork.leg.prack(msg)
        {
            self.out
                .push_back(CallOutput::Request(prack, fork.leg.flow));
        }
    }

    fn on_provisional(&mut self, now: Instant, call_id: &str, i: usize, code: u16, msg: &Message) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(fork) = call.forks.get_mut(i) else {
            return;
        };
        fork.leg.on_response(msg);
        // A reliable 18x is acknowledged whatever becomes of the fork.
        if let Some(prack) = fork.leg.prack(msg) {
            self.out
                .push_back(CallOutput::Request(prack, fork.leg.flow));
        }
        match fork.state {
            ForkState::Calling => fork.state = ForkState::Proceeding,
            ForkState::CancelPending => {
                fork.state = ForkState::Cancelled;
                if let Some(c) = fork.leg.cancel() {
                    self.out.push_back(CallOutput::Request(c, fork.leg.flow));
                }
            }
            _ => {}
        }
        if matches!(code, 180 | 183) {
            // Early media first: a SIP caller that gets it hears our 183
            // with SDP instead of a 180.
            self.early_media(call_id, i, msg);
            self.ringing(now, call_id);
        }
    }

    /// A callee alerts: the call rings (180 to a SIP caller, reliably to
    /// one that requires 100rel, unless a 183 with early media went
    /// instead), once.
    pub(super) fn ringing(&mut self, now: Instant, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.state != State::Calling {
            return;
        }
        call.state = State::Ringing;
        // A reliable 180 to a caller that made no offer would have to carry
        // ours (RFC 3261 13.2.1); such a caller hears no ringing instead.
        if let Caller::Sip(sc) = &mut call.caller
            && !sc.ringing
            && !(sc.reliable && sc.caller_offer.is_none())
        {
            sc.ringing = true;
            let ringing = caller_response(&self.dialogs, sc, 180, "Ringing");
            if let Some(mut r) = ringing {
                if sc.reliable {
                    let rseq = self.dialogs.next_rseq(sc.dialog);
                    r.push_header("Require", "100rel");
                    r.push_header("RSeq", rseq.to_string());
                    self.dialogs
                        .sent_reliably(now, sc.dialog, rseq, r.to_bytes());
                }
                self.out.push_back(CallOutput::Respond(sc.key.clone(), r));
            }
        }
        self.notify(Notice::Event(call_id.to_string(), CallEvent::Ringing));
    }

    /// A callee's 422 (our session timer too short for it): the fork
    /// INVITEs again asking for its `Min-SE` (RFC 4028 section 7.3), once
    /// per larger interval. False when it cannot (no `Min-SE`, no longer
    /// ringing, or asked for that already).
    fn retry_fork(&mut self, call_id: &str, i: usize, resp: &Message) -> bool {
        let min = crate::sip::timer::min_se(resp);
        let Some(fork) = self
            .calls
            .get_mut(call_id)
            .filter(|c| matches!(c.state, State::Calling | State::Ringing))
            .and_then(|c| c.forks.get_mut(i))
            .filter(|f| matches!(f.state, ForkState::Calling | ForkState::Proceeding))
        else {
            return false;
        };
        let Some(invite) = (min > 0)
            .then(|| fork.leg.retry_with_interval(min))
            .flatten()
        else {
            return false;
        };
        tracing::info!(call = %call_id, min_se = min, "callee wants a longer session timer; retrying");
        fork.key = None;
        fork.state = ForkState::Calling;
        self.out
            .push_back(CallOutput::Request(invite, fork.leg.flow));
        true
    }

    fn on_failure(&mut self, now: Instant, call_id: &str, i: usize, code: u16, phrase: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(fork) = call.forks.get_mut(i) else {
            return;
        };
        // A 422 concerns our INVITE's timer, not the caller's (which needs
        // a Min-SE with it): the caller hears 500.
        let code = if code == 422 { 500 } else { code };
        fork.state = ForkState::Done;
        fork.failure = Some(code);
        self.all_failed(now, call_id, Side::Sip, code, phrase);
    }

    /// Ends a ringing call once every callee (SIP or browser) failed, with
    /// the most telling status; `by`, `code` and `phrase` are the latest
    /// failure's.
    pub(super) fn all_failed(
        &mut self,
        now: Instant,
        call_id: &str,
        by: Side,
        code: u16,
        phrase: &str,
    ) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let live = matches!(call.state, State::Calling | State::Ringing);
        let done = call.forks.iter().all(|f| f.state == ForkState::Done)
            && call.browsers.iter().all(|b| b.state == BrowserState::Done);
        if live && done {
            let status = best_failure(
                call.forks
                    .iter()
                    .filter_map(|f| f.failure)
                    .chain(call.browsers.iter().filter_map(|b| b.failure)),
            );
            let reason = if status == code && !phrase.is_empty() {
                format!("{status} {phrase}")
            } else {
                format!("SIP {status}")
            };
            self.end(now, call_id, by, Some(status), &reason);
        }
    }

    fn on_answer(&mut self, now: Instant, call_id: &str, i: usize, ok: &Message) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(fork) = call.forks.get_mut(i) else {
            return;
        };
        let ours = fork.leg.on_response(ok);
        if let Some(ack) = fork.leg.ack(ok) {
            self.out.push_back(CallOutput::Transmit(fork.leg.flow, ack));
        }
        let is_winner = call.winner == Some(Winner::Sip(i)) && ours;
        if is_winner {
            // The winner's 2xx again: the ACK above was all it needed.
            return;
        }
        if call.winner.is_some() || call.state == State::Ended {
            // Another fork, or the call is over: that dialog ends at once.
            fork.state = ForkState::Done;
            if let Some(bye) = fork.leg.bye_stray(ok) {
                self.out.push_back(CallOutput::Request(bye, fork.leg.flow));
            }
            return;
        }
        fork.state = ForkState::Done;
        call.winner = Some(Winner::Sip(i));
        let answer = fork.leg.answer_in(ok);
        let body = String::from_utf8_lossy(&answer);
        tracing::debug!(call = %call_id, sdp = %body, "SIP side's answer");
        let negotiated = crate::sdp::parse(&body).and_then(|sd| call.offer.read_answer(&sd));
        // Everyone else stops ringing.
        for (j, f) in call.forks.iter_mut().enumerate() {
            if j != i {
                cancel_fork(f, &mut self.out);
            }
        }
        stop_browsers(&mut call.browsers, &mut self.out, "answered elsewhere");
        let negotiated = negotiated.map_err(|e| e.to_string()).and_then(|n| {
            let caller = match &mut call.caller {
                Caller::Browser(peer) => Some(CallerMedia::Browser(*peer)),
                Caller::Sip(sc) => {
                    // The callee's codec when the caller has it (relayed),
                    // else any we can transcode to; its video format (the
                    // caller's own, offered as it was: relayed); a caller
                    // that made no offer gets ours and answers in its ACK.
                    let agreed = accept_caller(
                        &mut self.dialogs,
                        &mut self.out,
                        now,
                        sc,
                        n.audio.format.codec.as_ref(),
                        n.video.as_ref().and_then(|v| v.format.codec.as_ref()),
                        (&call.offer, call.dtmf),
                    )?;
                    agreed.map(|a| {
                        call.agreed_by(Party::Caller, &a.audio);
                        CallerMedia::Sip(Box::new(a))
                    })
                }
            };
            call.agreed_by(Party::Callee, &n.audio);
            Ok((n, caller))
        });
        match negotiated {
            Ok((n, caller)) => {
                call.state = State::Connected;
                let leg = &call.forks[i].leg;
                let at = leg.offered_at();
                call.callee = Some(CalleeSession {
                    agreed: n.clone(),
                    ip: at.ip,
                    port: at.port,
                    video_port: at.video_port,
                    origin: at.origin,
                    session: Session {
                        // We sent the INVITE: refresher=uac is us.
                        timer: SessionExpires::of(ok).map(|se| LegTimer::new(now, se, false)),
                        update: refresh::allows_update(ok),
                        sdp: String::from_utf8_lossy(leg.offered()).into_owned(),
                        theirs: answer.clone(),
                        held: false,
                    },
                });
                let codec = n.audio.format.codec.as_ref().map_or_else(
                    || n.audio.format.pt.to_string(),
                    |c| format!("{}/{}", c.name, c.clock_rate),
                );
                let video = n.video.as_ref().and_then(|v| v.format.codec.as_ref());
                tracing::info!(
                    call = %call_id,
                    %codec,
                    video = video.map_or("none", |c| c.name.as_str()),
                    "SIP side answered"
                );
                self.answered_media(call_id, i, caller, n);
                self.notify(Notice::Event(
                    call_id.to_string(),
                    CallEvent::Connected { codec },
                ));
                self.send_queued_infos(call_id);
            }
            Err(e) => {
                tracing::info!(call = %call_id, error = %e, "SIP answer unusable; hanging up");
                self.finish(now, call_id, Side::Gateway, Some(488), &e);
            }
        }
    }

    /// A client transaction got no final response (timer B): that fork is
    /// unreachable (408).
    pub fn on_timeout(&mut self, now: Instant, key: &TxKey) {
        if self.info_timed_out(key) {
            return;
        }
        let found = self.calls.iter().find_map(|(id, c)| {
            let i = c.forks.iter().position(|f| f.key.as_ref() == Some(key))?;
            Some((id.clone(), i))
        });
        if let Some((call_id, i)) = found {
            self.on_failure(now, &call_id, i, 408, "Request Timeout");
            self.reap(&call_id);
        }
    }
}

/// The status that tells a caller most about forks that all failed: a 6xx,
/// else busy, else the first failure (RFC 3261 16.7 in spirit).
pub(super) fn best_failure(codes: impl Iterator<Item = u16>) -> u16 {
    let codes: Vec<u16> = codes.collect();
    codes
        .iter()
        .find(|c| **c >= 600)
        .or_else(|| codes.iter().find(|c| **c == 486))
        .or(codes.first())
        .copied()
        .unwrap_or(480)
}

/// Stops a fork that is still ringing: CANCEL once it has sent a
/// provisional response, else as soon as it does (RFC 3261 9.1).
pub(super) fn cancel_fork(f: &mut Fork, out: &mut VecDeque<CallOutput>) {
    match f.state {
        ForkState::Proceeding => {
            f.state = ForkState::Cancelled;
            if let Some(c) = f.leg.cancel() {
                out.push_back(CallOutput::Request(c, f.leg.flow));
            }
        }
        ForkState::Calling => f.state = ForkState::CancelPending,
        _ => {}
    }
}
