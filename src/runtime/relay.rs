//! The media of a call between two SIP endpoints, anchored here: one task
//! per call that relays or transcodes audio between the caller's and the
//! callee's RTP sockets ([`audio_direction`] per direction, planned anew
//! when a side's answer changes), plays digits, reports silence, and runs
//! the call's video relay beside it (`sip_video`).
//!
//! Owns the task; what to relay or transcode comes from [`crate::media`],
//! when the call starts and ends from [`crate::b2bua`] through `bridge`.

use super::alarm::Alarm;
use super::bridge::{
    Control, Ends, MediaReport, PLAYOUT_SLACK, PROGRESS_EVERY, from_sip, log_plan, log_stop, maybe,
    plan, play, playout_due, renegotiate, replanned, report_keyframe_wanted, sip_audio, totals,
};
use super::media::Ports;
use super::rtp_end::{Got, RtpEnd};
use super::sip_video::SipVideo;
use crate::b2bua::Party;
use crate::cdr::{MediaPlan, MediaTotals};
use crate::media::bridge::{AudioEnd, Direction, audio_direction};
use crate::sdp::Agreed;
use std::time::Instant;
use tokio::task::JoinHandle;

/// The running media of a call between two SIP endpoints, anchored here.
pub(super) struct Relay {
    caller: RtpEnd,
    /// What the SIP caller sends and takes.
    caller_end: AudioEnd,
    callee: RtpEnd,
    /// What the SIP callee sends and takes.
    callee_end: AudioEnd,
    to_callee: Direction,
    to_caller: Direction,
    /// Video, when both sides have it.
    video: Option<SipVideo>,
}

impl Relay {
    /// Starts the task between a SIP caller's media as our answer
    /// `agreed` it (on our ports toward it, audio and video) and a SIP
    /// callee's as its answer `n` did (on ours toward it). Video runs
    /// where both answers took it: the sides share the caller's format,
    /// else there is none (the audio goes on). Returns the task and what
    /// runs, for the call's record.
    pub(super) fn spawn(
        call: &str,
        (caller, caller_video): (Ports, Option<Ports>),
        (callee, callee_video): (Ports, Option<Ports>),
        (agreed, n): (&Agreed, &Agreed),
        ends: Ends,
    ) -> Result<(JoinHandle<()>, MediaPlan), String> {
        let caller_end = sip_audio(&agreed.audio)?;
        let callee_end = sip_audio(&n.audio)?;
        let complexity = ends.opus_complexity;
        let to_callee =
            audio_direction(caller_end, callee_end, complexity).map_err(|e| e.to_string())?;
        let to_caller =
            audio_direction(callee_end, caller_end, complexity).map_err(|e| e.to_string())?;
        let video = match (&agreed.video, &n.video, caller_video, callee_video) {
            (Some(a), Some(b), Some(pa), Some(pb)) => RtpEnd::open(pa, a, call)
                .and_then(|ea| Ok((ea, RtpEnd::open(pb, b, call)?)))
                .and_then(|(ea, eb)| SipVideo::new((ea, a), (eb, b)))
                .map_err(|e| tracing::warn!(call, error = %e, "video not bridged"))
                .ok(),
            _ => None,
        };
        let relay = Relay {
            caller: RtpEnd::open(caller, &agreed.audio, call)?,
            caller_end,
            callee: RtpEnd::open(callee, &n.audio, call)?,
            callee_end,
            to_callee,
            to_caller,
            video,
        };
        let plan = relay.plan();
        log_plan(call, &plan);
        let call = call.to_string();
        let task = tokio::spawn(async move { relay.run(&call, ends).await });
        Ok((task, plan))
    }

    async fn run(
        mut self,
        call: &str,
        Ends {
            mut control,
            mut stop,
            done,
            mut silence,
            opus_complexity,
        }: Ends,
    ) {
        let (mut to_caller, mut to_callee) = (Vec::new(), Vec::new());
        // As in `Legs::run`: deadlines from the last wakeup's time.
        let mut now = Instant::now();
        let mut next_progress = now + PROGRESS_EVERY;
        let mut alarm = Alarm::new();
        loop {
            let due = [
                self.caller.session.next_timeout(),
                self.callee.session.next_timeout(),
                playout_due(&self.to_callee),
                self.to_callee.next_event_due(now),
                playout_due(&self.to_caller),
                self.to_caller.next_event_due(now),
                self.caller.silent_at(silence.limit()),
                self.callee.silent_at(silence.limit()),
                self.video.as_ref().and_then(SipVideo::next_timeout),
            ]
            .into_iter()
            .flatten()
            .min();
            // A SIP side to ask for a keyframe by SIP INFO.
            let mut ask_info = None;
            tokio::select! {
                got = self.caller.recv() => {
                    if got == Got::Rtp {
                        from_sip(&self.caller, &mut self.to_callee, &mut to_callee, &done, (call, Party::Caller));
                    }
                }
                got = self.callee.recv() => {
                    if got == Got::Rtp {
                        from_sip(&self.callee, &mut self.to_caller, &mut to_caller, &done, (call, Party::Callee));
                    }
                }
                got = maybe(self.video.as_mut().map(SipVideo::next)) => {
                    if let Some(v) = self.video.as_mut() {
                        ask_info = v.handle(got).await;
                    }
                }
                _ = &mut stop => break,
                Some(c) = control.recv() => match c {
                    Control::Digits { to: Party::Callee, digits, ms } => play(call, &mut self.to_callee, &digits, ms),
                    Control::Digits { to: Party::Caller, digits, ms } => play(call, &mut self.to_caller, &digits, ms),
                    Control::Keyframe(from) => {
                        if let Some(v) = self.video.as_mut() {
                            ask_info = v.asked(Instant::now(), from).await;
                        }
                    }
                    Control::Renegotiate(party, n) => {
                        let moved = match party {
                            Party::Callee => renegotiate(&mut self.callee, &mut self.callee_end, &n, self.caller_end, opus_complexity, (&mut self.to_callee, &mut self.to_caller)),
                            Party::Caller => renegotiate(&mut self.caller, &mut self.caller_end, &n, self.callee_end, opus_complexity, (&mut self.to_caller, &mut self.to_callee)),
                        };
                        replanned(call, moved.map(|()| self.plan()), &done);
                    }
                    Control::Hold(party, held) => {
                        if silence.hold(party, held) {
                            let t = Instant::now();
                            (self.caller.heard, self.callee.heard) = (t, t);
                        }
                    }
                },
                () = alarm.at(due) => {}
            }
            now = Instant::now();
            self.to_caller.poll(now + PLAYOUT_SLACK, &mut to_caller);
            self.caller.flush(now, &mut to_caller).await;
            self.to_callee.poll(now + PLAYOUT_SLACK, &mut to_callee);
            self.callee.flush(now, &mut to_callee).await;
            if let Some(v) = self.video.as_mut() {
                v.flush(now).await;
            }
            if let Some(of) = ask_info {
                report_keyframe_wanted(&done, call, of);
            }
            if now >= next_progress {
                next_progress = now + PROGRESS_EVERY;
                let _ = done.send(MediaReport::Progress(call.to_string(), self.totals()));
            }
            let limit = silence.limit();
            self.caller
                .report_silence(now, limit, (call, Party::Caller), &done);
            self.callee
                .report_silence(now, limit, (call, Party::Callee), &done);
        }
        log_stop(call, &self.to_callee, &self.to_caller, &self.callee.session);
        tracing::info!(
            call,
            caller_in = self.caller.session.stats.rtp_in,
            caller_lost = self.caller.session.stats.lost,
            "caller media"
        );
        if let Some(v) = &self.video {
            let (to_callee, to_caller) = v.stats();
            tracing::info!(
                call,
                to_callee_in = to_callee.packets_in,
                to_callee_out = to_callee.packets_out,
                to_caller_in = to_caller.packets_in,
                to_caller_out = to_caller.packets_out,
                "relayed video stopped"
            );
        }
        let _ = done.send(MediaReport::Stopped(call.to_string(), self.totals()));
    }

    /// What runs, for the call's record.
    fn plan(&self) -> MediaPlan {
        MediaPlan {
            sip_video: self.video.as_ref().map(SipVideo::plan),
            ..plan("sip", self.caller_end, self.callee_end)
        }
    }

    /// The counters so far, caller's side first.
    fn totals(&self) -> MediaTotals {
        let mut t = totals(&self.to_callee, &self.to_caller, &self.callee.session);
        if let Some(v) = &self.video {
            let (to_callee, to_caller) = v.stats();
            t.video_to_callee_in = to_callee.packets_in;
            t.video_to_callee_out = to_callee.packets_out;
            t.video_to_caller_in = to_caller.packets_in;
            t.video_to_caller_out = to_caller.packets_out;
        }
        t
    }
}
