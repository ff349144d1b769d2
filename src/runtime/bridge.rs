//! Media of bridged calls: the SIP side's RTP socket (bound before the
//! INVITE, so the offer can name it) and, once the SIP side answers, one
//! task per call that moves audio between a SIP endpoint and the other
//! side: a browser's peer in the WebRTC task (SIP RTP -> [`RtpSession`] ->
//! [`Direction`] -> hub, and back; the browser may have called or been
//! called), or a SIP caller's own RTP socket (the gateway anchors media
//! between the two SIP endpoints). Each direction relays or transcodes on
//! its own ([`audio_direction`]), and is planned anew when a SIP side's
//! answer changes (early media moved to the 2xx, a re-INVITE's new codec or
//! address). Video between a browser and a SIP endpoint runs beside the
//! audio (`runtime::video`), whichever side called; between two SIP
//! endpoints it is relayed (`runtime::sip_video`). A task reports its
//! counters when it stops (for the call's record).
//!
//! Owns sockets, the task and its timers; what to relay or transcode is
//! decided by the sans-IO [`crate::media`] and [`crate::sdp`] code, and when
//! a call starts or ends by [`crate::b2bua`].

use super::alarm::Alarm;
use super::media::{MediaCalls, Ports};
use super::relay::Relay;
pub use super::rtp_end::Silence;
use super::rtp_end::{Got, RtpEnd};
use super::video::{AskSip, FromBrowser, VideoLegs};
use super::webrtc::{FromPeer, WebrtcHandle};
use crate::b2bua::{CalleeMedia, CallerMedia, Party};
use crate::cdr::{MediaPlan, MediaTotals};
use crate::gateway::SipPorts;
use crate::media::bridge::{AudioEnd, Direction, audio_direction};
use crate::media::dtmf::Digit;
use crate::media::session::RtpSession;
use crate::sdp::{Agreed, Negotiated};
use crate::webrtc::{PeerFormat, PeerId, StreamKind};
use causeway_codecs::registry::AudioCodec;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long each digit from the client API plays.
pub const DIGIT_MS: u32 = 120;

/// What the signalling loop asks of a running call's media.
#[derive(Debug)]
pub(super) enum Control {
    /// Play digits as RFC 4733 events toward side `to`, each for `ms`.
    Digits { to: Party, digits: String, ms: u32 },
    /// A SIP side asked for a keyframe by SIP INFO.
    Keyframe(Party),
    /// A SIP side's media changed: the callee's answer (early media moved
    /// to the 2xx), or either side's re-INVITE or UPDATE.
    Renegotiate(Party, Box<Negotiated>),
    /// A side put the call on hold (true) or took it off.
    Hold(Party, bool),
}

/// How far from its due time a transcoded frame may be played out so that
/// it shares a wakeup with other work: a loop plays the frames due up to
/// this much after it wakes, and wakes for a frame up to this much late.
/// A direction's playout clock runs about one frame behind its own
/// arrivals, so a frame due and the next packet of the same stream mostly
/// fall within this of each other: measured at 150 transcoded calls, a
/// call's loop woke 108 times a second instead of 131, for at most this
/// much jitter added to the packets sent (receivers buffer far more).
pub(super) const PLAYOUT_SLACK: std::time::Duration = std::time::Duration::from_millis(2);

/// When a loop must wake for `dir`'s next transcoded frame.
pub(super) fn playout_due(dir: &Direction) -> Option<Instant> {
    dir.next_due().map(|t| t + PLAYOUT_SLACK)
}

/// A bridged call's media: sockets waiting for the answer, then a task.
enum Slot {
    Reserved {
        /// Toward the SIP callee.
        ports: Ports,
        /// Video toward the SIP callee (callers with video).
        video: Option<Ports>,
        caller: CallerPorts,
    },
    Running {
        task: JoinHandle<()>,
        stop: tokio::sync::oneshot::Sender<()>,
        control: mpsc::UnboundedSender<Control>,
    },
}

/// What is reserved for the caller's side.
enum CallerPorts {
    /// A browser, with the formats its peer negotiated.
    Browser(Vec<PeerFormat>),
    /// A SIP endpoint: our sockets toward it, for audio and video.
    Sip(Ports, Option<Ports>),
}

/// How often a running call reports its counters (the admin API's list).
pub(super) const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// What media tasks report to the signalling loop.
#[derive(Debug)]
pub enum MediaReport {
    /// A running call's audio counters so far (every 2 s
    /// while packets flow).
    Progress(String, MediaTotals),
    /// A call's media stopped; its counters.
    Stopped(String, MediaTotals),
    /// A running call's media was planned anew (a SIP side changed codec,
    /// or the browser sent video in another codec): the codecs each side
    /// now uses, relayed or transcoded.
    Replanned(String, MediaPlan),
    /// Side `from` of a call sent nothing (no RTP, no RTCP) for the media
    /// timeout: it is gone without a BYE. Reported once.
    Silent {
        /// The call.
        call: String,
        /// The silent SIP side.
        from: Party,
    },
    /// A call's video wants a keyframe from SIP side `of`, which takes no
    /// RTCP feedback: the call layer asks by SIP INFO.
    KeyframeWanted {
        /// The call.
        call: String,
        /// The side to ask.
        of: Party,
    },
    /// A digit (RFC 4733) recognised on side `from`'s RTP, for the call
    /// layer (the browser's event stream, SIP INFO).
    Digit {
        /// The call.
        call: String,
        /// Whose RTP carried it.
        from: Party,
        /// The digit.
        digit: Digit,
    },
}

/// Where media tasks report.
pub type Reports = mpsc::UnboundedSender<MediaReport>;

/// Reports that side `of` of `call` is to be asked for a keyframe by
/// SIP INFO (it takes no RTCP feedback).
pub(super) fn report_keyframe_wanted(done: &Reports, call: &str, of: Party) {
    let _ = done.send(MediaReport::KeyframeWanted {
        call: call.to_string(),
        of,
    });
}

/// Reports the `digits` the side `from` of `call` sent (logged).
pub(super) fn report_digits(done: &Reports, call: &str, from: Party, digits: Vec<Digit>) {
    for digit in digits {
        tracing::info!(call, ?from, digit = %digit.digit, ms = digit.duration_ms, "DTMF");
        let _ = done.send(MediaReport::Digit {
            call: call.to_string(),
            from,
            digit,
        });
    }
}

/// Takes the RTP packet a SIP side just received (`sip.buf`) through
/// `dir` into `out`, and reports the digits it ended as `from`'s.
pub(super) fn from_sip(
    sip: &RtpEnd,
    dir: &mut Direction,
    out: &mut Vec<Vec<u8>>,
    done: &Reports,
    (call, from): (&str, Party),
) {
    dir.on_packet(sip.heard, &sip.buf, out);
    report_digits(done, call, from, dir.take_digits());
}

/// The media of every bridged call.
pub struct Bridges {
    calls: HashMap<String, Slot>,
    done: Reports,
    /// How long a SIP side may send nothing before it counts as gone.
    silence: Silence,
    /// The complexity of transcoded calls' Opus encoders.
    opus_complexity: u8,
}

impl std::fmt::Debug for Bridges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridges")
            .field("calls", &self.calls.len())
            .field("opus_complexity", &self.opus_complexity)
            .finish_non_exhaustive()
    }
}

impl Bridges {
    /// No calls yet; each call's task reports to `done` (digits and
    /// counters while it runs, a SIP side silent past `silence`, its
    /// counters when it stops); transcoded calls encode Opus at
    /// `opus_complexity`.
    pub fn new(done: Reports, silence: Silence, opus_complexity: u8) -> Self {
        Self {
            calls: HashMap::new(),
            done,
            silence,
            opus_complexity,
        }
    }

    /// Binds the SIP-side RTP port for a browser's call (and RTCP above
    /// it, in case the answer declines rtcp-mux), and another pair for
    /// video when `video`; returns the RTP ports.
    pub fn reserve(
        &mut self,
        media: &mut MediaCalls,
        call: &str,
        ip: IpAddr,
        browser: Vec<PeerFormat>,
        video: bool,
    ) -> std::io::Result<(u16, Option<u16>)> {
        let ports = media.bind(ip, true)?;
        let port = ports.rtp.local_addr()?.port();
        let video = video.then(|| media.bind(ip, true)).transpose()?;
        let video_port = video
            .as_ref()
            .map(|v| v.rtp.local_addr().map(|a| a.port()))
            .transpose()?;
        self.calls.insert(
            call.to_string(),
            Slot::Reserved {
                ports,
                video,
                caller: CallerPorts::Browser(browser),
            },
        );
        Ok((port, video_port))
    }

    /// Binds RTP ports (and RTCP above each) toward a SIP caller and toward
    /// its callees; for video toward the caller when its video is offered
    /// to any callee (`caller_video`), and toward the callees when SIP
    /// callees are offered it (`callee_video`: browsers take theirs over
    /// WebRTC).
    pub fn reserve_sip(
        &mut self,
        media: &mut MediaCalls,
        call: &str,
        ip: IpAddr,
        (caller_video, callee_video): (bool, bool),
    ) -> std::io::Result<SipPorts> {
        let caller = media.bind(ip, true)?;
        let ports = media.bind(ip, true)?;
        let caller_video = caller_video.then(|| media.bind(ip, true)).transpose()?;
        let callee_video = callee_video.then(|| media.bind(ip, true)).transpose()?;
        let port_of = |p: &Option<Ports>| {
            p.as_ref()
                .map(|v| v.rtp.local_addr().map(|a| a.port()))
                .transpose()
        };
        let bound = SipPorts {
            caller: caller.rtp.local_addr()?.port(),
            callee: ports.rtp.local_addr()?.port(),
            caller_video: port_of(&caller_video)?,
            callee_video: port_of(&callee_video)?,
        };
        self.calls.insert(
            call.to_string(),
            Slot::Reserved {
                ports,
                video: callee_video,
                caller: CallerPorts::Sip(caller, caller_video),
            },
        );
        Ok(bound)
    }

    /// Starts moving media once a callee answered: between a browser and
    /// a SIP endpoint (either may have called), or between two SIP
    /// endpoints. Returns what runs, for the call's record.
    pub fn start(
        &mut self,
        call: &str,
        caller: CallerMedia,
        callee: CalleeMedia,
        webrtc: &WebrtcHandle,
    ) -> Result<MediaPlan, String> {
        let Some(Slot::Reserved {
            ports,
            video,
            caller: reserved,
        }) = self.calls.remove(call)
        else {
            return Err("no media reserved for the call".into());
        };
        let (stop_tx, stop) = tokio::sync::oneshot::channel();
        let (control_tx, control) = mpsc::unbounded_channel();
        let ends = Ends {
            control,
            stop,
            done: self.done.clone(),
            silence: self.silence,
            opus_complexity: self.opus_complexity,
        };
        let (task, plan) = match (caller, callee, reserved) {
            (CallerMedia::Browser(peer), CalleeMedia::Sip(a), CallerPorts::Browser(formats)) => {
                let browser = (peer, formats.as_slice(), webrtc);
                Legs::spawn(call, (ports, video), &a, browser, ends, true)?
            }
            (
                CallerMedia::Sip(agreed),
                CalleeMedia::Browser(peer, formats),
                CallerPorts::Sip(caller, video),
            ) => {
                // The ports reserved toward SIP callees go unused.
                let browser = (peer, formats.as_slice(), webrtc);
                Legs::spawn(call, (caller, video), &agreed, browser, ends, false)?
            }
            (
                CallerMedia::Sip(agreed),
                CalleeMedia::Sip(n),
                CallerPorts::Sip(caller, caller_video),
            ) => Relay::spawn(
                call,
                (caller, caller_video),
                (ports, video),
                (&agreed, &n),
                ends,
            )?,
            _ => return Err("the call's media does not match what was reserved".into()),
        };
        self.calls.insert(
            call.to_string(),
            Slot::Running {
                task,
                stop: stop_tx,
                control: control_tx,
            },
        );
        Ok(plan)
    }

    /// Plays digits as RFC 4733 events toward side `to` (between a
    /// browser and a SIP endpoint, always the SIP side), each for `ms`;
    /// false when the call has no media running.
    pub fn play_digits(&self, call: &str, to: Party, digits: String, ms: u32) -> bool {
        self.control(call, Control::Digits { to, digits, ms })
    }

    /// Moves side `party` of a call's media to its new answer (another
    /// codec, another address); false when the call has no media running.
    pub fn update(&self, call: &str, party: Party, media: Negotiated) -> bool {
        self.control(call, Control::Renegotiate(party, Box::new(media)))
    }

    /// Side `party` of a call put it on hold (`held`) or took it off: the
    /// hold timeout stands for the media timeout while any side holds.
    pub fn hold(&self, call: &str, party: Party, held: bool) -> bool {
        self.control(call, Control::Hold(party, held))
    }

    /// SIP side `from` of a call asked for a keyframe by SIP INFO; false
    /// when the call has no media running.
    pub fn keyframe_wanted(&self, call: &str, from: Party) -> bool {
        self.control(call, Control::Keyframe(from))
    }

    fn control(&self, call: &str, c: Control) -> bool {
        match self.calls.get(call) {
            Some(Slot::Running { control, .. }) => control.send(c).is_ok(),
            _ => false,
        }
    }

    /// Stops a call's media (it logs its counters) and frees its ports.
    pub fn close(&mut self, call: &str) {
        if let Some(Slot::Running { stop, .. }) = self.calls.remove(call) {
            let _ = stop.send(());
        }
    }

    /// Stops everything (shutdown).
    pub fn close_all(&mut self) {
        for (_, slot) in self.calls.drain() {
            if let Slot::Running { task, .. } = slot {
                task.abort();
            }
        }
    }
}

/// A call's media for its record: the callee's leg, and each side's codec.
pub(super) fn plan(callee_leg: &str, caller: AudioEnd, callee: AudioEnd) -> MediaPlan {
    let name = |e: AudioEnd| {
        let k = e.codec.key();
        format!("{}/{}", k.name, k.clock_rate)
    };
    MediaPlan {
        callee_leg: callee_leg.into(),
        caller_codec: name(caller),
        callee_codec: name(callee),
        audio: if caller.codec == callee.codec {
            "passthrough"
        } else {
            "transcoded"
        }
        .into(),
        video: None,
        sip_video: None,
    }
}

/// What a SIP side sends and wants, as the media layer names it.
pub(super) fn sip_audio(n: &Negotiated) -> Result<AudioEnd, String> {
    Ok(AudioEnd {
        pt: n.format.pt,
        codec: n
            .format
            .codec
            .as_ref()
            .and_then(AudioCodec::from_key)
            .ok_or("the SIP side's codec cannot be bridged")?,
        dtmf: n
            .dtmf
            .as_ref()
            .map(|f| (f.pt, f.codec.as_ref().map_or(8000, |c| c.clock_rate))),
    })
}

pub(super) fn log_plan(call: &str, plan: &MediaPlan) {
    tracing::info!(
        call,
        caller = plan.caller_codec.as_str(),
        callee = plan.callee_codec.as_str(),
        audio = plan.audio.as_str(),
        "bridging media"
    );
}

/// A call's media after a SIP side's renegotiation `moved` it (or the
/// browser's video codec changed): logged and reported for the call's
/// record; a failure leaves the old plan.
pub(super) fn replanned(call: &str, moved: Result<MediaPlan, String>, done: &Reports) {
    match moved {
        Ok(plan) => {
            log_plan(call, &plan);
            let _ = done.send(MediaReport::Replanned(call.to_string(), plan));
        }
        Err(e) => {
            tracing::warn!(call, error = %e, "the new answer cannot be bridged; media unchanged")
        }
    }
}

/// What every media task deals with besides its sockets: orders from the
/// signalling loop (digits, keyframes), the order to stop, and where it
/// reports.
pub(super) struct Ends {
    pub control: mpsc::UnboundedReceiver<Control>,
    pub stop: tokio::sync::oneshot::Receiver<()>,
    pub done: Reports,
    /// The media timeout of a SIP side.
    pub silence: Silence,
    /// The complexity of the call's Opus encoders, if it transcodes.
    pub opus_complexity: u8,
}

/// The running media between a browser and a SIP endpoint.
struct Legs {
    sip: RtpEnd,
    /// What the SIP side sends and takes.
    sip_end: AudioEnd,
    /// What the browser sends and takes.
    browser_end: AudioEnd,
    to_sip: Direction,
    to_browser: Direction,
    webrtc: WebrtcHandle,
    peer: PeerId,
    /// Whether the browser placed the call (else the SIP side did).
    browser_called: bool,
    /// Video, when both sides have it.
    video: Option<VideoLegs>,
}

impl Legs {
    /// What runs (audio, and video where there is some), for the call's
    /// record.
    fn plan(&self) -> MediaPlan {
        let mut plan = if self.browser_called {
            plan("sip", self.browser_end, self.sip_end)
        } else {
            plan("webrtc", self.sip_end, self.browser_end)
        };
        plan.video = self.video.as_ref().map(VideoLegs::plan);
        plan
    }

    /// The audio counters so far, caller's side first.
    fn totals(&self) -> MediaTotals {
        if self.browser_called {
            totals(&self.to_sip, &self.to_browser, &self.sip.session)
        } else {
            totals(&self.to_browser, &self.to_sip, &self.sip.session)
        }
    }

    /// Starts the task between a browser's `peer` (with the `formats` it
    /// negotiated, on `webrtc`) and a SIP endpoint's media as `agreed`, on
    /// our `ports` toward it (audio, and video where both sides have it).
    /// Returns the task and what runs, for the call's record.
    fn spawn(
        call: &str,
        (audio, video): (Ports, Option<Ports>),
        agreed: &Agreed,
        (peer, formats, webrtc): (PeerId, &[PeerFormat], &WebrtcHandle),
        ends: Ends,
        browser_called: bool,
    ) -> Result<(JoinHandle<()>, MediaPlan), String> {
        let sip_end = sip_audio(&agreed.audio)?;
        let browser =
            crate::b2bua::browser_audio(formats).ok_or("the browser has no audio codec")?;
        let complexity = ends.opus_complexity;
        let to_sip = audio_direction(browser, sip_end, complexity).map_err(|e| e.to_string())?;
        let to_browser =
            audio_direction(sip_end, browser, complexity).map_err(|e| e.to_string())?;
        let sip = RtpEnd::open(audio, &agreed.audio, call)?;
        let video = match (&agreed.video, video) {
            (Some(v), Some(ports)) => {
                VideoLegs::new(call, RtpEnd::open(ports, v, call)?, v, peer, formats)?
            }
            _ => None,
        };
        let legs = Legs {
            sip,
            sip_end,
            browser_end: browser,
            to_sip,
            to_browser,
            webrtc: webrtc.clone(),
            peer,
            browser_called,
            video,
        };
        let plan = legs.plan();
        log_plan(call, &plan);
        let (sink, from_browser) = mpsc::channel(256);
        let call = call.to_string();
        let task = tokio::spawn(async move {
            legs.webrtc.attach(peer, sink).await;
            legs.run(&call, from_browser, ends).await;
        });
        Ok((task, plan))
    }

    async fn run(
        mut self,
        call: &str,
        mut from_browser: mpsc::Receiver<FromPeer>,
        Ends {
            mut control,
            mut stop,
            done,
            mut silence,
            opus_complexity,
        }: Ends,
    ) {
        let (browser, sip) = if self.browser_called {
            (Party::Caller, Party::Callee)
        } else {
            (Party::Callee, Party::Caller)
        };
        // Packets ready for each side, flushed once per wakeup.
        let (mut to_browser, mut to_sip) = (Vec::new(), Vec::new());
        let mut video_to_sip = Vec::new();
        // When the last wakeup's work was done (the deadlines below are
        // computed from it: one clock read per wakeup).
        let mut now = Instant::now();
        let mut next_progress = now + PROGRESS_EVERY;
        let mut alarm = Alarm::new();
        loop {
            let due = [
                self.sip.session.next_timeout(),
                self.video
                    .as_ref()
                    .and_then(|v| v.sip.session.next_timeout()),
                playout_due(&self.to_sip),
                self.to_sip.next_event_due(now),
                playout_due(&self.to_browser),
                self.sip.silent_at(silence.limit()),
            ]
            .into_iter()
            .flatten()
            .min();
            // A keyframe request for the SIP side's video.
            let mut video_ask = None;
            tokio::select! {
                got = self.sip.recv() => {
                    if got == Got::Rtp {
                        from_sip(&self.sip, &mut self.to_browser, &mut to_browser, &done, (call, sip));
                    }
                }
                input = maybe(self.video.as_mut().map(VideoLegs::next)) => {
                    if let Some(v) = self.video.as_mut() {
                        video_ask = v.handle(input, &self.webrtc, &mut video_to_sip);
                    }
                }
                _ = &mut stop => break,
                Some(c) = control.recv() => match c {
                    Control::Digits { digits, ms, .. } => play(call, &mut self.to_sip, &digits, ms),
                    Control::Keyframe(_) => {
                        if let Some(v) = self.video.as_mut() {
                            v.sip_asked(&self.webrtc);
                        }
                    }
                    Control::Renegotiate(party, n) if party == sip => {
                        let moved = renegotiate(&mut self.sip, &mut self.sip_end, &n, self.browser_end, opus_complexity, (&mut self.to_sip, &mut self.to_browser));
                        replanned(call, moved.map(|()| self.plan()), &done);
                    }
                    Control::Renegotiate(..) => {
                        tracing::warn!(call, "a browser's media cannot be renegotiated by SIP");
                    }
                    Control::Hold(party, held) => {
                        if silence.hold(party, held) {
                            self.sip.heard = Instant::now();
                        }
                    }
                },
                m = from_browser.recv() => match m {
                    None => break,
                    Some(FromPeer::Rtp(StreamKind::Audio, p)) => {
                        self.to_sip.on_packet(Instant::now(), &p, &mut to_sip);
                        report_digits(&done, call, browser, self.to_sip.take_digits());
                    }
                    Some(FromPeer::Rtp(StreamKind::Video, p)) => {
                        let got = self.video.as_mut().map(|v| {
                            v.on_browser_packet(Instant::now(), p, &mut video_to_sip)
                        });
                        if matches!(got, Some(FromBrowser::First | FromBrowser::Replanned)) {
                            // The SIP side starts from a keyframe of its own.
                            self.webrtc.request_keyframe(self.peer);
                        }
                        if got == Some(FromBrowser::Replanned) {
                            replanned(call, Ok(self.plan()), &done);
                        }
                    }
                    Some(FromPeer::Keyframe) => {
                        video_ask = self.video.as_mut().and_then(VideoLegs::browser_asked);
                    }
                },
                () = alarm.at(due) => {}
            }
            now = Instant::now();
            self.to_browser.poll(now + PLAYOUT_SLACK, &mut to_browser);
            for p in to_browser.drain(..) {
                self.webrtc.send_rtp(self.peer, StreamKind::Audio, p);
            }
            self.to_sip.poll(now + PLAYOUT_SLACK, &mut to_sip);
            self.sip.flush(now, &mut to_sip).await;
            if let Some(v) = self.video.as_mut() {
                match video_ask {
                    Some(AskSip::Rtcp(rtcp)) => v.sip.send_rtcp(rtcp).await,
                    Some(AskSip::Info) => report_keyframe_wanted(&done, call, sip),
                    None => {}
                }
                v.sip.flush(now, &mut video_to_sip).await;
            }
            if now >= next_progress {
                next_progress = now + PROGRESS_EVERY;
                let _ = done.send(MediaReport::Progress(call.to_string(), self.totals()));
            }
            self.sip
                .report_silence(now, silence.limit(), (call, sip), &done);
        }
        log_stop(call, &self.to_sip, &self.to_browser, &self.sip.session);
        let mut totals = self.totals();
        if let Some(v) = self.video.take() {
            let (to_sip, to_browser, overruns) = v.stop().await;
            tracing::info!(
                call,
                to_sip_in = to_sip.packets_in,
                to_sip_out = to_sip.packets_out,
                to_sip_dropped = to_sip.dropped_pt,
                to_sip_lost = to_sip.lost,
                to_browser_in = to_browser.packets_in,
                to_browser_out = to_browser.packets_out,
                to_browser_dropped = to_browser.dropped_pt,
                to_browser_lost = to_browser.lost,
                overruns,
                "bridge video stopped"
            );
            totals.video_to_sip_in = to_sip.packets_in;
            totals.video_to_sip_out = to_sip.packets_out;
            totals.video_to_browser_in = to_browser.packets_in;
            totals.video_to_browser_out = to_browser.packets_out;
        }
        let _ = done.send(MediaReport::Stopped(call.to_string(), totals));
    }
}

/// What `next` yields (a call's next video input), or never when there is
/// none (no video).
pub(super) async fn maybe<F: std::future::Future>(next: Option<F>) -> F::Output {
    match next {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// A call's counters for its record.
pub(super) fn totals(
    to_callee: &Direction,
    to_caller: &Direction,
    sip: &RtpSession,
) -> MediaTotals {
    MediaTotals {
        to_callee_in: to_callee.stats.packets_in,
        to_callee_out: to_callee.stats.packets_out,
        to_caller_in: to_caller.stats.packets_in,
        to_caller_out: to_caller.stats.packets_out,
        lost: u64::try_from(sip.stats.lost).unwrap_or(0),
        ..MediaTotals::default()
    }
}

/// Logs a call's counters: toward the SIP callee, toward the caller, and
/// what the callee's session saw.
pub(super) fn log_stop(call: &str, to_sip: &Direction, to_caller: &Direction, sip: &RtpSession) {
    let (a, b) = (to_sip.stats, to_caller.stats);
    tracing::info!(
        call,
        to_sip_in = a.packets_in,
        to_sip_out = a.packets_out,
        to_sip_concealed = a.concealed,
        to_sip_dropped_pt = a.dropped_pt,
        to_sip_lost = a.lost,
        to_sip_late = a.late,
        to_sip_jitter_dropped = a.jitter_dropped,
        to_sip_bandwidth_in = a.bandwidth_in,
        to_caller_in = b.packets_in,
        to_caller_out = b.packets_out,
        to_caller_concealed = b.concealed,
        to_caller_late = b.late,
        to_caller_jitter_dropped = b.jitter_dropped,
        sip_in = sip.stats.rtp_in,
        sip_lost = sip.stats.lost,
        "bridge media stopped"
    );
}

/// Moves the SIP side `sip` of a call to its new answer `n`: its keys,
/// the remote's addresses, what it sends and takes (`end`), and each
/// direction between it and `other` (`(to_sip, from_sip)`) re-planned,
/// relayed or transcoded anew (Opus encoded at `opus_complexity`). On an
/// answer the media cannot take, nothing changes.
pub(super) fn renegotiate(
    sip: &mut RtpEnd,
    end: &mut AudioEnd,
    n: &Negotiated,
    other: AudioEnd,
    opus_complexity: u8,
    (to_sip, from_sip): (&mut Direction, &mut Direction),
) -> Result<(), String> {
    let new = sip_audio(n)?;
    let to = audio_direction(other, new, opus_complexity).map_err(|e| e.to_string())?;
    let from = audio_direction(new, other, opus_complexity).map_err(|e| e.to_string())?;
    // New SDES keys (a side may rekey in a re-offer), before anything moves.
    sip.session
        .rekey(n.srtp.as_ref().map(crate::sdp::Srtp::keys))
        .map_err(|e| e.to_string())?;
    to_sip.replace(to);
    from_sip.replace(from);
    sip.session.relatch(n.remote_rtp, n.remote_rtcp);
    *end = new;
    Ok(())
}

/// Plays digits on a direction's output line as RFC 4733 events.
pub(super) fn play(call: &str, direction: &mut Direction, digits: &str, ms: u32) {
    if let Err(e) = direction.play_digits(digits, ms) {
        tracing::info!(call, error = %e, "digits not sent");
    }
}
