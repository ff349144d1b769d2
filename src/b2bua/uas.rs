//! The SIP side of calls as a UAS: our responses to a SIP caller's INVITE
//! (and its PRACKs of our reliable 180), our SDP answers to its offers, and re-INVITEs and UPDATEs from either
//! SIP side of a connected call (hold and resume, answered here and passed
//! on as a re-INVITE; a bodiless UPDATE only refreshes the session).
//! Must not touch forks' transactions beyond asking their legs for a
//! re-INVITE.

use super::refresh::{caller_request, stamp_request};
use super::{ALLOW, B2bua, CallOutput, Caller, Leg, Notice, Party, SipCaller, State, Winner};
use crate::dialplan::DtmfMode;
use crate::media::srtp::MasterKey;
use crate::sdp::{Agreed, AnswerConfig, Negotiated, Offer, SessionDesc};
use crate::sip::Flow;
use crate::sip::dialog::Dialogs;
use crate::sip::msg::{Message, response_to};
use crate::sip::timer::LegTimer;
use bytes::Bytes;
use causeway_codecs::registry::AudioCodec;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

impl SipCaller {
    /// The video of our re-offers to the caller: on our video port, or
    /// refused (port 0) where its offer had video we did not take; `None`
    /// when its offer had none. Where the section goes, and the refused
    /// ones beside it, follows our last SDP ([`Offer::laid_out_like`]);
    /// the port-0 video serves when that SDP cannot be read.
    fn video_section(&self) -> Option<u16> {
        let offered = self.caller_offer.as_ref().is_some_and(|o| {
            o.media
                .iter()
                .any(|m| m.kind == crate::sdp::MediaKind::Video)
        });
        let port = self.video_offer.as_ref().map(|(port, _)| *port);
        offered.then_some(port.unwrap_or(0))
    }
}

impl B2bua {
    /// A re-INVITE or an UPDATE with an offer from a SIP side: one that
    /// repeats the side's last SDP word for word only refreshes the session
    /// and is answered with ours, unchanged and not passed on; any other is
    /// a [`Self::reoffer`]. (RFC 3264 section 8 would let the `o=` version
    /// alone tell, but phones that forget to raise it on hold exist.)
    pub(super) fn reoffer_unless_unchanged(
        &mut self,
        call_id: &str,
        leg: Leg,
        msg: &Message,
        flow: Flow,
    ) -> Result<Message, String> {
        if self
            .side_session(call_id, leg)
            .is_some_and(|s| s.theirs == msg.body)
        {
            return Ok(self.refreshed(call_id, leg, msg, flow));
        }
        self.reoffer(call_id, leg, msg)
    }

    /// The session of a connected call's SIP side: the caller's, or the
    /// answering fork's.
    fn side_session(&self, call_id: &str, leg: Leg) -> Option<&super::Session> {
        let call = self.calls.get(call_id)?;
        match leg {
            Leg::Fork(i) if call.winner != Some(Winner::Sip(i)) => None,
            _ => call.session(leg.party()),
        }
    }

    /// A re-INVITE or an UPDATE with an offer from a SIP side of a connected
    /// call (hold, resume, a new codec or address): answered here in the
    /// codec already agreed when offered again, else in any we can
    /// transcode to; its direction mirrored (a hold is never answered
    /// sendrecv), and the same direction offered to the other side when
    /// that is SIP too, in that side's codec. A new codec or address moves
    /// the side's media (relayed or transcoded anew); the other side is not
    /// disturbed. Returns our 200, or why the offer cannot be taken (488;
    /// the session goes on unchanged).
    pub(super) fn reoffer(
        &mut self,
        call_id: &str,
        leg: Leg,
        msg: &Message,
    ) -> Result<Message, String> {
        let call = self.calls.get_mut(call_id).ok_or("no such call")?;
        if call.state != State::Connected {
            return Err("the call is not connected".into());
        }
        let offer = crate::sdp::parse(std::str::from_utf8(&msg.body).unwrap_or_default())
            .map_err(|e| format!("a re-INVITE needs an SDP offer ({e})"))?;
        let m = offer.active_audio().ok_or("the offer has no audio")?;
        // c=0.0.0.0 is the old way to put a call on hold (RFC 2543).
        let held = if offer.rtp_addr(m).is_some_and(|a| a.ip().is_unspecified()) {
            crate::sdp::Direction::Inactive
        } else {
            m.direction
        };
        let winner = call.winner.ok_or("no callee")?;
        // The side's media, when the offer moved its codec or address.
        let moved;
        let (ok, forward) = match (leg, &mut call.caller) {
            (Leg::Caller, Caller::Sip(sc)) => {
                let agreed = sc.agreed.clone().ok_or("no caller media")?;
                let video = agreed.video.as_ref().and_then(|v| v.format.codec.as_ref());
                let (body, Agreed { audio: now, .. }) = answer_caller(
                    sc,
                    &offer,
                    agreed.audio.format.codec.as_ref(),
                    video,
                    call.dtmf,
                )?;
                let ok = caller_ok(&self.dialogs, sc, Some(msg), body.clone())
                    .ok_or("the dialog is gone")?;
                moved = media_moved(&agreed.audio, now);
                if let (Some(n), Some(a)) = (&moved, sc.agreed.as_mut()) {
                    a.audio.clone_from(n);
                }
                sc.session.sdp = body;
                sc.session.theirs = msg.body.clone();
                // A browser callee is not told (its media keeps flowing).
                let forward = match (winner, call.callee.as_mut()) {
                    (Winner::Sip(w), Some(c)) => {
                        c.origin.1 += 1;
                        let sdp = Offer::agreed(&c.agreed, c.video_port)
                            .laid_out_like(&c.session.sdp)
                            .to_sdp_with(c.ip, c.port, c.origin, held);
                        let fork = &mut call.forks[w];
                        let req = fork.leg.reinvite(&sdp).map(|mut r| {
                            stamp_request(&mut r, &c.session);
                            (r, fork.leg.flow)
                        });
                        c.session.sdp = sdp;
                        req
                    }
                    _ => None,
                };
                (ok, forward)
            }
            (Leg::Fork(i), caller) if winner == Winner::Sip(i) => {
                let c = call.callee.as_mut().ok_or("no callee media")?;
                c.origin.1 += 1;
                let video = c
                    .agreed
                    .video
                    .as_ref()
                    .and_then(|v| v.format.codec.as_ref())
                    .zip(c.video_port);
                let (body, Agreed { audio: now, .. }) = answer_audio(
                    &offer,
                    c.agreed.audio.format.codec.as_ref(),
                    (
                        our_key(Some(&c.agreed.audio)),
                        our_key(c.agreed.video.as_ref()),
                    ),
                    (c.ip, c.port),
                    c.origin,
                    video,
                    call.dtmf != DtmfMode::Info,
                )
                .map_err(|e| e.to_string())?;
                moved = media_moved(&c.agreed.audio, now);
                if let Some(n) = &moved {
                    c.agreed.audio = n.clone();
                }
                let mut ok = fork_ok(&call.forks[i], msg);
                ok.push_header("Content-Type", "application/sdp");
                ok.body = Bytes::from(body.clone());
                c.session.sdp = body;
                c.session.theirs = msg.body.clone();
                let forward = match caller {
                    Caller::Sip(sc) => {
                        let session = sc.agreed.as_ref().ok_or("no caller media")?;
                        sc.origin.1 += 1;
                        let sdp = Offer::agreed(session, sc.video_section())
                            .laid_out_like(&sc.session.sdp)
                            .to_sdp_with(sc.media.0, sc.media.1, sc.origin, held);
                        let req = caller_request(
                            &mut self.dialogs,
                            sc,
                            "INVITE",
                            Some(("application/sdp", &sdp)),
                        );
                        sc.session.sdp = sdp;
                        req
                    }
                    // The browser side is not told (its media keeps flowing).
                    Caller::Browser(_) => None,
                };
                (ok, forward)
            }
            _ => return Err("not a leg of this call".into()),
        };
        tracing::info!(call = %call_id, direction = held.name(), "session renegotiated");
        if let Some((req, flow)) = forward {
            self.out.push_back(CallOutput::Request(req, flow));
        }
        let held = held != crate::sdp::Direction::SendRecv;
        self.side_changed(call_id, leg.party(), moved, held);
        Ok(ok)
    }

    /// Side `party` of a call agreed new SDP: its media `moved` (when it
    /// did) and whether it now `held` the call. The call's INFO and the
    /// media follow.
    fn side_changed(&mut self, call_id: &str, party: Party, moved: Option<Negotiated>, held: bool) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if let Some(n) = &moved {
            call.agreed_by(party, n);
        }
        let hold_changed = call
            .session_mut(party)
            .is_some_and(|s| std::mem::replace(&mut s.held, held) != held);
        if let Some(media) = moved {
            let codec = media.format.codec.as_ref().map(|c| c.name.clone());
            tracing::info!(call = %call_id, side = ?party, codec, "the side's media moved");
            self.notify(Notice::UpdateMedia {
                call: call_id.to_string(),
                party,
                media: Box::new(media),
            });
        }
        if hold_changed {
            self.notify(Notice::Hold {
                call: call_id.to_string(),
                party,
                held,
            });
        }
    }

    /// A SIP side's answer in a 2xx to our in-dialog re-INVITE or UPDATE
    /// (a hold or resume passed on, a refresh): where it moved the side's
    /// audio (another address, port or SDES key), the media follows, as
    /// with the side's own re-offer, and its direction says whether the
    /// side holds the call. An answer we cannot read changes nothing.
    pub(super) fn reanswered(&mut self, call_id: &str, leg: Leg, msg: &Message) {
        let Some(call) = self
            .calls
            .get_mut(call_id)
            .filter(|c| c.state == State::Connected)
        else {
            return;
        };
        let Ok(answer) = crate::sdp::parse(std::str::from_utf8(&msg.body).unwrap_or_default())
        else {
            return;
        };
        let (agreed, session) = match (leg, &mut call.caller) {
            (Leg::Caller, Caller::Sip(sc)) => {
                let Some(a) = sc.agreed.as_mut() else {
                    return;
                };
                (&mut a.audio, &mut sc.session)
            }
            (Leg::Fork(i), _) if call.winner == Some(Winner::Sip(i)) => {
                let Some(c) = call.callee.as_mut() else {
                    return;
                };
                (&mut c.agreed.audio, &mut c.session)
            }
            _ => return,
        };
        let ours = crate::sdp::Agreed {
            audio: agreed.clone(),
            video: None,
        };
        // Our re-offer's layout says where the answer's audio is.
        let ours = Offer::agreed(&ours, None).laid_out_like(&session.sdp);
        let now = match ours.read_answer(&answer) {
            Ok(now) => now.audio,
            Err(e) => {
                tracing::info!(call = %call_id, error = %e, "an answer to our re-offer ignored");
                return;
            }
        };
        session.theirs = msg.body.clone();
        // An answer that is not sendrecv holds the call too (or keeps it
        // held); a sendrecv one takes the side's hold off.
        let held = now.direction != crate::sdp::Direction::SendRecv || now.remote_rtp.is_none();
        let moved = media_moved(agreed, now);
        if let Some(n) = &moved {
            agreed.clone_from(n);
        }
        self.side_changed(call_id, leg.party(), moved, held);
    }

    /// A SIP caller's PRACK: 200 when it acknowledges our reliable 180
    /// (which is then no longer resent), else 481 (RFC 3262 section 3).
    pub(super) fn on_prack(
        &mut self,
        call_id: &str,
        leg: Leg,
        msg: &Message,
        flow: Flow,
    ) -> Message {
        let rack = msg.header("RAck").unwrap_or_default();
        let ok = match self.calls.get(call_id).map(|c| &c.caller) {
            Some(Caller::Sip(sc))
                if leg == Leg::Caller && self.dialogs.on_prack(sc.dialog, rack) =>
            {
                caller_response_to(&self.dialogs, sc, Some(msg), 200, "OK")
            }
            _ => None,
        };
        ok.unwrap_or_else(|| no_dialog(msg, flow))
    }

    /// Our 200 to a request of a SIP side's dialog that changes nothing (a
    /// session refresh): a bodiless UPDATE gets none, a re-INVITE or an
    /// offer repeating the last one gets our SDP unchanged (as the offer or
    /// the answer).
    pub(super) fn refreshed(&self, call_id: &str, leg: Leg, msg: &Message, flow: Flow) -> Message {
        let call = self.calls.get(call_id);
        let ours = match (leg, call.map(|c| &c.caller)) {
            (Leg::Caller, Some(Caller::Sip(sc))) => {
                caller_response_to(&self.dialogs, sc, Some(msg), 200, "OK")
            }
            (Leg::Fork(i), _) => call.and_then(|c| c.forks.get(i)).map(|f| fork_ok(f, msg)),
            _ => None,
        };
        let with_sdp =
            msg.method() == Some(crate::sip::msg::Method::Invite) || !msg.body.is_empty();
        let sdp = self
            .side_session(call_id, leg)
            .map(|s| s.sdp.clone())
            .filter(|sdp| with_sdp && !sdp.is_empty());
        let ours = ours.map(|mut ok| {
            if let Some(sdp) = sdp {
                ok.push_header("Content-Type", "application/sdp");
                ok.body = Bytes::from(sdp);
            }
            ok
        });
        ours.unwrap_or_else(|| no_dialog(msg, flow))
    }
}

/// A side's media after a re-offer's answer `now`, when it differs from
/// what was agreed (`old`) in codec, payload types or address; an answer
/// to a hold by `c=0.0.0.0` moves nothing.
fn media_moved(old: &Negotiated, now: Negotiated) -> Option<Negotiated> {
    // The SDP layer leaves out a 0.0.0.0 address.
    (now.remote_rtp.is_some() && !super::early::same_media(old, &now)).then_some(now)
}

/// Our SDES key in a side's agreed media, for a re-answer to keep.
fn our_key(agreed: Option<&Negotiated>) -> Option<&MasterKey> {
    agreed?.srtp.as_ref().map(|s| &s.local)
}

/// 481: a request for a dialog (or a response) we do not have.
fn no_dialog(msg: &Message, flow: Flow) -> Message {
    let no = "Call/Transaction Does Not Exist";
    response_to(msg, 481, no, None, Some(flow.remote))
}

/// Our 200 to a request from a callee, in its dialog (with our Contact).
fn fork_ok(fork: &super::Fork, msg: &Message) -> Message {
    let mut ok = response_to(msg, 200, "OK", None, Some(fork.leg.flow.remote));
    ok.push_header("Contact", fork.leg.contact());
    ok
}

/// A response of ours to a SIP caller's INVITE: our tag, and for 1xx/2xx
/// our Contact (it makes a dialog). `None` when the dialog is gone.
pub(super) fn caller_response(
    dialogs: &Dialogs,
    sc: &SipCaller,
    code: u16,
    reason: &str,
) -> Option<Message> {
    caller_response_to(dialogs, sc, None, code, reason)
}

/// [`caller_response`] to a request of the caller's dialog (a re-INVITE,
/// an UPDATE); `None`: its INVITE.
fn caller_response_to(
    dialogs: &Dialogs,
    sc: &SipCaller,
    request: Option<&Message>,
    code: u16,
    reason: &str,
) -> Option<Message> {
    let d = dialogs.get(sc.dialog)?;
    let mut r = response_to(
        request.unwrap_or(&d.invite),
        code,
        reason,
        Some(&d.local_tag),
        Some(d.flow.remote),
    );
    if code < 300 {
        r.push_header("Contact", sc.contact.clone());
        // Responses that make the dialog (a 1xx with our tag, the 2xx) keep
        // the INVITE's route set (RFC 3261 12.1.1); in-dialog ones need not.
        if request.is_none() {
            for rr in d.invite.headers_named("Record-Route") {
                r.push_header("Record-Route", rr.to_string());
            }
        }
    }
    r.push_header("Server", sc.user_agent.clone());
    Some(r)
}

/// Answers an offer's first audio section we can take, with the codecs in
/// `prefer` if the offer has one, else any we can transcode to; and, when
/// `video` names a codec and our port for it, the first video section
/// offering that codec. Every other section is declined; telephone-events
/// are accepted when `events`; an SDES offer keeps our keys `keep_keys`
/// (audio, video) where the suite allows. Returns our SDP (at `addr`:`port`, with
/// `origin` in `o=`) and what it agreed for audio and video.
pub(super) fn answer_audio(
    offer: &SessionDesc,
    prefer: Option<&causeway_codecs::CodecKey>,
    keep_keys: (Option<&MasterKey>, Option<&MasterKey>),
    (addr, port): (IpAddr, u16),
    origin: (u64, u64),
    video: Option<(&causeway_codecs::CodecKey, u16)>,
    events: bool,
) -> Result<(String, Agreed), crate::sdp::SdpError> {
    use crate::sdp::MediaKind;
    let answer_with = |mut codecs: Vec<causeway_codecs::CodecKey>| {
        codecs.extend(video.map(|(c, _)| c.clone()));
        crate::sdp::answer(
            offer,
            &AnswerConfig {
                codecs,
                dtmf: events,
                keep_key: keep_keys.0.cloned(),
                keep_video_key: keep_keys.1.cloned(),
            },
        )
    };
    let mut answer = answer_with(prefer.into_iter().cloned().collect());
    let has_audio = |a: &crate::sdp::Answer| {
        a.streams
            .iter()
            .any(|n| n.as_ref().is_some_and(|n| n.kind == MediaKind::Audio))
    };
    if !answer.as_ref().is_ok_and(has_audio) {
        answer = answer_with(AudioCodec::ALL.iter().map(|c| c.key()).collect());
    }
    let mut answer = answer?;
    let first_of = |a: &crate::sdp::Answer, kind| {
        a.streams
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.kind == kind))
    };
    let no_audio = crate::sdp::SdpError::NoCommonMedia("no audio codec in common");
    let first = first_of(&answer, MediaKind::Audio).ok_or(no_audio.clone())?;
    let first_video = video.and_then(|_| first_of(&answer, MediaKind::Video));
    let mut ports = vec![0; answer.streams.len()];
    for (i, n) in answer.streams.iter_mut().enumerate() {
        if i == first {
            ports[i] = port;
        } else if Some(i) == first_video {
            ports[i] = video.map_or(0, |(_, p)| p);
        } else {
            *n = None;
        }
    }
    let audio = answer.streams[first].clone().ok_or(no_audio)?;
    let video = first_video.and_then(|i| answer.streams[i].clone());
    let sdp = answer.to_sdp(addr, &ports, origin.0, origin.1);
    Ok((sdp, Agreed { audio, video }))
}

/// Our 200 to a SIP caller's offer, in its INVITE (`request` None) or in
/// a later request (a re-INVITE, an UPDATE): `body` is our SDP.
pub(super) fn caller_ok(
    dialogs: &Dialogs,
    sc: &SipCaller,
    request: Option<&Message>,
    body: String,
) -> Option<Message> {
    let mut ok = caller_response_to(dialogs, sc, request, 200, "OK")?;
    ok.push_header("Allow", ALLOW);
    ok.push_header("Supported", crate::sip::SUPPORTED);
    ok.push_header("Content-Type", "application/sdp");
    ok.body = Bytes::from(body);
    Some(ok)
}

/// Our answer to a SIP caller's offer `theirs`, in the `prefer`red codec
/// when it offered it (relayed), else any we can transcode to, with
/// telephone-events unless digits go by SIP INFO only (`dtmf`), and video
/// in codec `video` on our video port when both are there: the SDP (a new
/// `o=` version) and what it agreed.
fn answer_caller(
    sc: &mut SipCaller,
    theirs: &SessionDesc,
    prefer: Option<&causeway_codecs::CodecKey>,
    video: Option<&causeway_codecs::CodecKey>,
    dtmf: DtmfMode,
) -> Result<(String, Agreed), String> {
    sc.origin.1 += 1;
    let port = sc.video_offer.as_ref().map(|(port, _)| *port);
    answer_audio(
        theirs,
        prefer,
        (
            our_key(sc.agreed.as_ref().map(|a| &a.audio)),
            our_key(sc.agreed.as_ref().and_then(|a| a.video.as_ref())),
        ),
        sc.media,
        sc.origin,
        video.zip(port),
        dtmf != DtmfMode::Info,
    )
    .map_err(|e| e.to_string())
}

/// Our 183 Session Progress to a SIP caller while a callee sends early
/// media in `prefer` (its codec) and `video` (its video codec, one of the
/// caller's formats): it carries our answer, which the 200 repeats (RFC
/// 3261 13.2.1: the answer may not change), and returns what that agreed.
/// The 183 is sent unreliably; a caller that requires 100rel gets no
/// early media (our 2xx could not wait for its PRACK), nor does one that
/// made no offer (the 183 would have to carry ours reliably).
pub(super) fn early_answer(
    dialogs: &Dialogs,
    sc: &mut SipCaller,
    (prefer, video): (
        Option<&causeway_codecs::CodecKey>,
        Option<&causeway_codecs::CodecKey>,
    ),
    dtmf: DtmfMode,
) -> Result<(Message, Agreed), String> {
    if sc.answered || sc.early_answer.is_some() {
        return Err("the caller has its answer already".into());
    }
    if sc.reliable {
        return Err("the caller requires reliable provisional responses".into());
    }
    let theirs = sc.caller_offer.clone().ok_or("the caller made no offer")?;
    let (body, agreed) = answer_caller(sc, &theirs, prefer, video, dtmf)?;
    let mut progress = caller_response(dialogs, sc, 183, "Session Progress")
        .ok_or("the caller's dialog is gone")?;
    progress.push_header("Content-Type", "application/sdp");
    progress.body = Bytes::from(body.clone());
    sc.ringing = true;
    sc.early_answer = Some((body, agreed.clone()));
    Ok((progress, agreed))
}

/// Accepts a SIP caller's call once a callee answered: 200 with our SDP.
/// It repeats the answer of our 183 if early media went before; else, to
/// the caller's offer, we answer in the `prefer`red codec and in `video`
/// ([`answer_caller`]) and return what that agreed. A caller that made no
/// offer gets ours (`offered`, what the callees were offered, the
/// `prefer`red codec first, RTP/SAVP where theirs was); its ACK answers,
/// so nothing is agreed yet (None). Queues the 200 (retransmitted until
/// the ACK).
pub(super) fn accept_caller(
    dialogs: &mut Dialogs,
    out: &mut VecDeque<CallOutput>,
    now: Instant,
    sc: &mut SipCaller,
    prefer: Option<&causeway_codecs::CodecKey>,
    video: Option<&causeway_codecs::CodecKey>,
    (offered, dtmf): (&Offer, DtmfMode),
) -> Result<Option<Agreed>, String> {
    let (body, agreed) = match (sc.early_answer.take(), sc.caller_offer.clone()) {
        (Some((body, agreed)), _) => (body, Some(agreed)),
        (None, Some(theirs)) => {
            let (body, agreed) = answer_caller(sc, &theirs, prefer, video, dtmf)?;
            (body, Some(agreed))
        }
        (None, None) => {
            sc.origin.1 += 1;
            // Audio only; RTP/SAVP (a key of its own) where the callees
            // were offered it, as the rule requires SRTP.
            let mut ours = Offer {
                video: None,
                srtp: offered.srtp.as_ref().map(|k| MasterKey::generate(k.suite)),
                ..offered.clone()
            };
            if let Some(i) = ours.audio.iter().position(|f| f.codec.as_ref() == prefer) {
                let first = ours.audio.remove(i);
                ours.audio.insert(0, first);
            }
            let body = ours.to_sdp(sc.media.0, sc.media.1, sc.origin.0, sc.origin.1);
            sc.late = Some(ours);
            (body, None)
        }
    };
    let mut ok = caller_ok(dialogs, sc, None, body.clone()).ok_or("the caller's dialog is gone")?;
    sc.session.sdp = body;
    if let Some(se) = sc.granted {
        crate::sip::timer::stamp_response(&mut ok, se);
        sc.session.timer = Some(LegTimer::new(now, se, true));
    }
    sc.answered = true;
    sc.agreed.clone_from(&agreed);
    dialogs.accepted(now, sc.dialog, ok.to_bytes());
    out.push_back(CallOutput::Respond(sc.key.clone(), ok));
    Ok(agreed)
}
