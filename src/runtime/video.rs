//! Video of a bridged call between a browser and a SIP endpoint: the SIP
//! side's video RTP socket, one path per direction (relayed in the call's
//! task, or transcoded on a thread of its own so an encoder never stalls
//! the runtime) and keyframe requests across the legs.
//!
//! Keyframes: a request from the side that receives (the browser's PLI or
//! FIR, RTCP PLI/FIR from the SIP endpoint) forces our encoder when that
//! direction is transcoded, else goes on to the side that sends (PLI to the
//! browser, PLI + FIR to the SIP endpoint, or a SIP INFO
//! `picture_fast_update` where the SIP endpoint's answer had no `a=rtcp-fb`
//! for PLI or FIR). A transcoder that lost frames asks its sender the same
//! way. The browser is also asked at its first video packet: a keyframe it
//! sent before the call's media was bridged is lost, and not every SIP
//! endpoint asks for one. Requests are rate-limited per side
//! ([`KeyframeRequests`]).
//!
//! What the browser sends is read from its packets: a browser we offered
//! several codecs may send the first of our offer it supports, which its
//! answer need not list (Chromium does); the path toward the SIP side
//! follows it.
//!
//! Owns sockets, threads and channels; what to relay or transcode comes
//! from [`crate::media`], what was agreed from [`crate::sdp`].

use super::rtp_end::{Got, RtpEnd};
use super::webrtc::WebrtcHandle;
use crate::cdr::VideoPlan;
use crate::media::bridge::{Direction, DirectionStats, Mode, Passthrough};
use crate::media::h264;
use crate::media::keyframe::{KeyframeAction, KeyframeRequests, VideoPath};
use crate::media::video::{VideoOutput, VideoTranscoder};
use crate::sdp::{Format, Negotiated};
use crate::webrtc::{PeerFormat, PeerId, StreamKind};
use causeway_codecs::registry::video_codec;
use causeway_codecs::video::{VideoCodec, VideoConfig};
use std::sync::mpsc as sync_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Largest RTP payload we packetize video into (room for SRTP and a
/// tunnel's headers under a 1,500-byte MTU).
const VIDEO_MTU: usize = 1200;

/// Packets a transcoding thread may have queued before new ones are
/// dropped (it is behind; the loss makes it ask for a keyframe).
const WORKER_QUEUE: usize = 256;

/// Bitrate of the video we encode.
const VIDEO_BITRATE: u32 = 1_000_000;

/// Keyframe requests closer together than this are one request.
pub(super) const KEYFRAME_INTERVAL: Duration = Duration::from_millis(250);

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Toward {
    Sip,
    Browser,
}

/// What woke a call's video up.
pub(super) enum VideoIn {
    /// A datagram on the SIP video socket.
    Sip(Got),
    /// Output of a transcoding thread.
    Work(Toward, Work),
}

/// How a keyframe is asked of the SIP side.
#[derive(Debug)]
pub(super) enum AskSip {
    /// RTCP PLI + FIR, to send to this address.
    Rtcp((std::net::SocketAddr, Vec<u8>)),
    /// A SIP INFO `picture_fast_update` (it takes no RTCP feedback).
    Info,
}

/// What a video packet from the browser changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FromBrowser {
    /// Nothing: it went its way.
    Relayed,
    /// It was the first: ask the browser for a keyframe.
    First,
    /// It came in another codec: the path toward the SIP side was made
    /// anew for it, and wants a keyframe; the call's plan changed.
    Replanned,
}

/// What a transcoding thread reports.
pub(super) enum Work {
    /// A packet for the other side.
    Packet(Vec<u8>),
    /// It lost frames: ask the sending side for a keyframe.
    AskUpstream,
    /// It stopped; its counters.
    Stopped(DirectionStats),
}

/// What a transcoding thread takes.
enum WorkIn {
    Packet(Vec<u8>),
    Keyframe,
}

/// One direction's path.
enum Path {
    /// Relayed in the call's task.
    Relay(Box<Direction>),
    /// Transcoded on a thread (dropping the sender ends it).
    Worker(sync_mpsc::SyncSender<WorkIn>),
}

impl Path {
    /// How a keyframe of this direction's output is had; `sender_fb`: its
    /// sender takes RTCP keyframe requests (else SIP INFO).
    fn video_path(&self, sender_fb: bool) -> VideoPath {
        match self {
            Path::Relay(_) => VideoPath::relayed(sender_fb),
            Path::Worker(_) => VideoPath::Transcoded,
        }
    }

    /// A relayed direction's counters (a thread reports its own when it
    /// stops).
    fn stats(&self) -> DirectionStats {
        match self {
            Path::Relay(d) => d.stats,
            Path::Worker(_) => DirectionStats::default(),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Path::Relay(_) => "passthrough",
            Path::Worker(_) => "transcoded",
        }
    }
}

/// One side's video format, as the media layer takes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct VideoEnd {
    pub pt: u8,
    codec: VideoCodec,
    /// H.264 packetization mode 1 (FU-A, STAP-A) allowed.
    fu_a: bool,
}

impl VideoEnd {
    pub(super) fn of_sip(f: &Format) -> Option<Self> {
        Some(Self {
            pt: f.pt,
            codec: video_codec(f.codec.as_ref()?)?,
            fu_a: f.fu_a(),
        })
    }

    /// A browser's format (the hub negotiates H.264 in packetization-mode
    /// 1 only).
    fn of_browser(f: &PeerFormat) -> Option<Self> {
        (f.kind == StreamKind::Video).then_some(())?;
        Some(Self {
            pt: f.pt,
            codec: video_codec(&f.codec)?,
            fu_a: true,
        })
    }

    /// Whether a stream in `self` is relayed as it is to one in `other`.
    pub(super) fn same(self, other: Self) -> bool {
        self.codec == other.codec && (self.codec == VideoCodec::Vp8 || self.fu_a == other.fu_a)
    }

    pub(super) fn name(self) -> String {
        match self.codec {
            VideoCodec::H264 => "H264/90000",
            VideoCodec::Vp8 => "VP8/90000",
        }
        .into()
    }
}

/// The running video of a call.
pub(super) struct VideoLegs {
    call: String,
    /// The SIP endpoint's video socket and session.
    pub sip: RtpEnd,
    /// The SIP side's format.
    theirs: VideoEnd,
    /// Every format the browser may send; `to_sip` takes `sends`.
    browser: Vec<VideoEnd>,
    sends: VideoEnd,
    /// What `to_browser` sends it.
    takes: VideoEnd,
    to_sip: Path,
    to_browser: Path,
    /// Requests about the video each side receives.
    sip_asks: KeyframeRequests,
    browser_asks: KeyframeRequests,
    /// Requests our transcoders make of each sending side.
    ask_browser: KeyframeRequests,
    ask_sip: KeyframeRequests,
    work: mpsc::UnboundedReceiver<(Toward, Work)>,
    work_tx: mpsc::UnboundedSender<(Toward, Work)>,
    /// Relayed packets for the browser, reused.
    scratch: Vec<Vec<u8>>,
    /// Packets dropped because a transcoding thread was behind.
    overruns: u64,
    /// A video packet came from the browser.
    browser_seen: bool,
    peer: PeerId,
}

impl VideoLegs {
    /// The paths between a browser's video (`formats`: the first video one
    /// it takes is what it is sent and, until its packets say otherwise,
    /// what it sends) and the SIP side's (`n`, on `sip`). `None` when the
    /// browser takes no video format we bridge.
    pub fn new(
        call: &str,
        sip: RtpEnd,
        n: &Negotiated,
        peer: PeerId,
        formats: &[PeerFormat],
    ) -> Result<Option<Self>, String> {
        let theirs =
            VideoEnd::of_sip(&n.format).ok_or("the SIP side's video codec cannot be bridged")?;
        let takes: Vec<VideoEnd> = formats
            .iter()
            .filter(|f| f.answered)
            .filter_map(VideoEnd::of_browser)
            .collect();
        let Some(&sends) = takes.first() else {
            return Ok(None);
        };
        // Toward the browser: relayed when it takes the SIP side's codec,
        // else transcoded to what it would rather take.
        let to_browser_end = takes
            .iter()
            .find(|b| b.codec == theirs.codec)
            .copied()
            .unwrap_or(sends);
        let browser: Vec<VideoEnd> = formats.iter().filter_map(VideoEnd::of_browser).collect();
        let (work_tx, work) = mpsc::unbounded_channel();
        let to_sip = path(
            call,
            (sends, &pts_of(&browser, sends)),
            theirs,
            Toward::Sip,
            &work_tx,
        )?;
        let to_browser = path(
            call,
            (theirs, &[theirs.pt]),
            to_browser_end,
            Toward::Browser,
            &work_tx,
        )?;
        let legs = Self {
            call: call.to_string(),
            sip,
            theirs,
            browser,
            sends,
            takes: to_browser_end,
            sip_asks: KeyframeRequests::new(to_sip.video_path(true), KEYFRAME_INTERVAL),
            browser_asks: KeyframeRequests::new(
                to_browser.video_path(n.keyframe_fb),
                KEYFRAME_INTERVAL,
            ),
            ask_browser: KeyframeRequests::new(VideoPath::relayed(true), KEYFRAME_INTERVAL),
            ask_sip: KeyframeRequests::new(VideoPath::relayed(n.keyframe_fb), KEYFRAME_INTERVAL),
            to_sip,
            to_browser,
            work,
            work_tx,
            scratch: Vec::new(),
            overruns: 0,
            browser_seen: false,
            peer,
        };
        let plan = legs.plan();
        tracing::info!(
            call,
            browser = %plan.browser_codec,
            browser_receives = %plan.browser_receives,
            sip = %plan.sip_codec,
            to_sip = %plan.to_sip,
            to_browser = %plan.to_browser,
            "bridging video"
        );
        Ok(Some(legs))
    }

    /// What runs, for the call's record.
    pub fn plan(&self) -> VideoPlan {
        VideoPlan {
            browser_codec: self.sends.name(),
            browser_receives: self.takes.name(),
            sip_codec: self.theirs.name(),
            to_sip: self.to_sip.label().into(),
            to_browser: self.to_browser.label().into(),
        }
    }

    /// A video packet from the browser, relayed (into `out`) or handed to
    /// its thread. Says whether the browser is to be asked for a
    /// keyframe: at its first packet (so the SIP side starts from a
    /// keyframe even if the first went out before the call's media was
    /// bridged; not every SIP endpoint asks for one) and when the packet
    /// came in another codec than the browser sent so far (the path
    /// toward the SIP side followed it and starts anew; the call's plan
    /// changed).
    pub fn on_browser_packet(
        &mut self,
        now: Instant,
        packet: Vec<u8>,
        out: &mut Vec<Vec<u8>>,
    ) -> FromBrowser {
        let followed = packet.get(1).is_some_and(|b| self.follow_browser(b & 0x7f));
        let first = !self.browser_seen;
        self.browser_seen = true;
        match &mut self.to_sip {
            Path::Relay(d) => d.on_packet(now, &packet, out),
            Path::Worker(tx) => {
                if tx.try_send(WorkIn::Packet(packet)).is_err() {
                    self.overruns += 1;
                }
            }
        }
        if followed {
            FromBrowser::Replanned
        } else if first {
            FromBrowser::First
        } else {
            FromBrowser::Relayed
        }
    }

    /// A browser packet on payload type `pt`: where that is a format of
    /// another codec than `to_sip` takes (a browser we offered several
    /// codecs sends the first it supports, which its answer need not
    /// list), the path toward the SIP side is made anew for it. Returns
    /// true when it was.
    fn follow_browser(&mut self, pt: u8) -> bool {
        if pt == self.sends.pt {
            return false;
        }
        let Some(&end) = self.browser.iter().find(|b| b.pt == pt) else {
            return false;
        };
        if end.same(self.sends) {
            // Another payload type of the same codec: the relay takes it.
            self.sends = end;
            return false;
        }
        let pts = pts_of(&self.browser, end);
        match path(
            &self.call,
            (end, &pts),
            self.theirs,
            Toward::Sip,
            &self.work_tx,
        ) {
            Ok(p) => {
                // A thread for the old codec ends with its sender.
                self.to_sip = p;
                self.sends = end;
                self.sip_asks =
                    KeyframeRequests::new(self.to_sip.video_path(true), KEYFRAME_INTERVAL);
                tracing::info!(
                    call = %self.call,
                    browser = %end.name(),
                    to_sip = self.to_sip.label(),
                    "the browser sends another video codec"
                );
                true
            }
            Err(e) => {
                // Not tried again for every packet.
                self.browser.retain(|b| !b.same(end));
                tracing::warn!(call = %self.call, error = %e, "cannot follow the browser's video codec");
                false
            }
        }
    }

    /// Waits for the SIP video socket or a transcoding thread.
    pub async fn next(&mut self) -> VideoIn {
        tokio::select! {
            got = self.sip.recv() => VideoIn::Sip(got),
            Some((toward, work)) = self.work.recv() => VideoIn::Work(toward, work),
        }
    }

    /// Acts on what [`Self::next`] returned: packets for the browser are
    /// sent, packets for the SIP side appended to `to_sip`; a keyframe
    /// request for the SIP side is returned, to make.
    pub fn handle(
        &mut self,
        input: VideoIn,
        webrtc: &WebrtcHandle,
        to_sip: &mut Vec<Vec<u8>>,
    ) -> Option<AskSip> {
        match input {
            VideoIn::Sip(got) => {
                self.on_sip(got, webrtc);
                for p in self.scratch.drain(..) {
                    webrtc.send_rtp(self.peer, StreamKind::Video, p);
                }
                None
            }
            VideoIn::Work(toward, work) => self.on_worker(toward, work, webrtc, to_sip),
        }
    }

    /// What arrived on the SIP video socket: RTP is relayed (into
    /// `scratch`) or handed to its thread; RTCP keyframe requests are acted
    /// on.
    fn on_sip(&mut self, got: Got, webrtc: &WebrtcHandle) {
        match got {
            Got::Rtp => match &mut self.to_browser {
                Path::Relay(d) => d.on_packet(self.sip.heard, &self.sip.buf, &mut self.scratch),
                Path::Worker(tx) => {
                    if tx.try_send(WorkIn::Packet(self.sip.buf.clone())).is_err() {
                        self.overruns += 1;
                    }
                }
            },
            Got::KeyframeAsked => self.sip_asked(webrtc),
            Got::Nothing => {}
        }
    }

    /// The SIP endpoint wants a keyframe of the video we send it (RTCP,
    /// or SIP INFO).
    pub fn sip_asked(&mut self, webrtc: &WebrtcHandle) {
        match self.sip_asks.on_request(Instant::now()) {
            Some(KeyframeAction::ForceKeyframe) => {
                if let Path::Worker(tx) = &self.to_sip {
                    let _ = tx.try_send(WorkIn::Keyframe);
                }
            }
            Some(_) => webrtc.request_keyframe(self.peer),
            None => {}
        }
    }

    /// The browser wants a keyframe of the video we send it; a request
    /// for the SIP side is returned, to make.
    pub fn browser_asked(&mut self) -> Option<AskSip> {
        match self.browser_asks.on_request(Instant::now())? {
            KeyframeAction::ForceKeyframe => {
                if let Path::Worker(tx) = &self.to_browser {
                    let _ = tx.try_send(WorkIn::Keyframe);
                }
                None
            }
            action => self.ask_sip_side(action),
        }
    }

    /// A keyframe request of the SIP side: RTCP, or SIP INFO.
    fn ask_sip_side(&mut self, action: KeyframeAction) -> Option<AskSip> {
        match action {
            KeyframeAction::SendSipInfo => Some(AskSip::Info),
            _ => self.sip.session.request_keyframe().map(AskSip::Rtcp),
        }
    }

    /// What a transcoding thread produced: a packet for the browser (sent
    /// here) or for the SIP side (appended to `to_sip`), or a request for a
    /// keyframe upstream (one for the SIP side is returned, to make).
    fn on_worker(
        &mut self,
        toward: Toward,
        work: Work,
        webrtc: &WebrtcHandle,
        to_sip: &mut Vec<Vec<u8>>,
    ) -> Option<AskSip> {
        match (toward, work) {
            (Toward::Browser, Work::Packet(p)) => {
                webrtc.send_rtp(self.peer, StreamKind::Video, p);
            }
            (Toward::Sip, Work::Packet(p)) => to_sip.push(p),
            // The transcoder toward the SIP side lost frames from the browser.
            (Toward::Sip, Work::AskUpstream) => {
                if self.ask_browser.on_request(Instant::now()).is_some() {
                    webrtc.request_keyframe(self.peer);
                }
            }
            (Toward::Browser, Work::AskUpstream) => {
                let action = self.ask_sip.on_request(Instant::now())?;
                return self.ask_sip_side(action);
            }
            // Threads stop only once `stop` dropped their senders.
            (_, Work::Stopped(_)) => {}
        }
        None
    }

    /// Stops the transcoding threads and waits briefly for their final
    /// counters. Returns the counters toward the SIP side and toward the
    /// browser, and the packets dropped because a thread was behind.
    pub async fn stop(self) -> (DirectionStats, DirectionStats, u64) {
        let Self {
            to_sip,
            to_browser,
            mut work,
            overruns,
            ..
        } = self;
        // Relayed directions keep their counters here; threads report theirs.
        let (mut to_sip_stats, mut to_browser_stats) = (to_sip.stats(), to_browser.stats());
        let workers = [&to_sip, &to_browser]
            .into_iter()
            .filter(|p| matches!(p, Path::Worker(_)))
            .count();
        // Dropping the senders ends the threads.
        drop((to_sip, to_browser));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut stopped = 0;
        while stopped < workers {
            match tokio::time::timeout_at(deadline, work.recv()).await {
                Ok(Some((t, Work::Stopped(s)))) => {
                    stopped += 1;
                    match t {
                        Toward::Sip => to_sip_stats = s,
                        Toward::Browser => to_browser_stats = s,
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        (to_sip_stats, to_browser_stats, overruns)
    }
}

/// A passthrough video direction mapping payload types `from` to `to`.
pub(super) fn relay_direction(from: &[u8], to: u8) -> Direction {
    let pts = from.iter().map(|pt| (*pt, to)).collect();
    Direction::new(Mode::Passthrough(Passthrough::new(pts)), 90000)
}

/// The payload types of `formats` in `end`'s codec: a relay takes them
/// all (Chromium's H.264 profiles each have one).
fn pts_of(formats: &[VideoEnd], end: VideoEnd) -> Vec<u8> {
    let mut pts: Vec<u8> = formats
        .iter()
        .filter(|b| b.same(end))
        .map(|b| b.pt)
        .collect();
    if !pts.contains(&end.pt) {
        pts.push(end.pt);
    }
    pts
}

/// The path from `from` (sent on any of `from_pts`) to `to`: relayed when
/// both use the same codec (for H.264, packetization mode 1 on both),
/// else a transcoding thread.
fn path(
    call: &str,
    (from, from_pts): (VideoEnd, &[u8]),
    to: VideoEnd,
    toward: Toward,
    work: &mpsc::UnboundedSender<(Toward, Work)>,
) -> Result<Path, String> {
    if from.same(to) {
        return Ok(Path::Relay(Box::new(relay_direction(from_pts, to.pt))));
    }
    let mut config = VideoConfig::new(to.codec);
    config.bitrate = VIDEO_BITRATE;
    let transcoder = VideoTranscoder::new(
        from.codec,
        VideoOutput {
            config,
            h264_mode: if to.fu_a {
                h264::Mode::NonInterleaved
            } else {
                h264::Mode::SingleNal
            },
            mtu: VIDEO_MTU,
            pt: to.pt,
        },
    )
    .map_err(|e| format!("no video transcoder: {e}"))?;
    let direction = Direction::new(Mode::Video(Box::new(transcoder)), 90000);
    let (tx, rx) = sync_mpsc::sync_channel(WORKER_QUEUE);
    let work = work.clone();
    std::thread::Builder::new()
        .name(format!("video-{toward:?}-{call}"))
        .spawn(move || transcode(direction, rx, toward, work))
        .map_err(|e| format!("no video thread: {e}"))?;
    Ok(Path::Worker(tx))
}

/// A transcoding thread: runs until its sender is dropped.
fn transcode(
    mut d: Direction,
    rx: sync_mpsc::Receiver<WorkIn>,
    toward: Toward,
    work: mpsc::UnboundedSender<(Toward, Work)>,
) {
    let mut out = Vec::new();
    while let Ok(m) = rx.recv() {
        match m {
            WorkIn::Packet(p) => d.on_packet(Instant::now(), &p, &mut out),
            WorkIn::Keyframe => d.request_keyframe(),
        }
        for p in out.drain(..) {
            let _ = work.send((toward, Work::Packet(p)));
        }
        if d.take_upstream_keyframe_request() {
            let _ = work.send((toward, Work::AskUpstream));
        }
    }
    let _ = work.send((toward, Work::Stopped(d.stats)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::media::Ports;
    use crate::sdp::{Direction as SdpDirection, MediaKind};
    use causeway_codecs::CodecKey;
    use std::net::UdpSocket;

    fn key(name: &str) -> CodecKey {
        CodecKey {
            name: name.into(),
            clock_rate: 90000,
            channels: 1,
        }
    }

    fn browser(pt: u8, name: &str, answered: bool) -> PeerFormat {
        PeerFormat {
            kind: StreamKind::Video,
            pt,
            codec: key(name),
            answered,
        }
    }

    /// An RTP header on `pt` and a byte of payload.
    fn packet(pt: u8, seq: u16) -> Vec<u8> {
        let [s0, s1] = seq.to_be_bytes();
        vec![0x80, pt, s0, s1, 0, 0, 0, 1, 0, 0, 0, 7, 0x65]
    }

    #[tokio::test]
    async fn the_browser_is_asked_for_a_keyframe_at_its_first_packet_and_at_a_codec_switch() {
        let socket = || UdpSocket::bind("127.0.0.1:0").unwrap();
        let n = Negotiated {
            kind: MediaKind::Video,
            format: Format {
                pt: 96,
                codec: Some(key("H264")),
                fmtp: Some("packetization-mode=1".into()),
            },
            dtmf: None,
            direction: SdpDirection::SendRecv,
            rtcp_mux: true,
            remote_rtp: Some(socket().local_addr().unwrap()),
            remote_rtcp: None,
            srtp: None,
            ptime: None,
            keyframe_fb: true,
        };
        let ports = Ports {
            rtp: socket(),
            rtcp: None,
        };
        let sip = RtpEnd::open(ports, &n, "c1").unwrap();
        // The browser answered H.264; our offer's VP8 it may send anyway.
        let formats = [browser(108, "H264", true), browser(100, "VP8", false)];
        let mut legs = VideoLegs::new("c1", sip, &n, PeerId(1), &formats)
            .unwrap()
            .unwrap();
        assert_eq!(legs.plan().to_sip, "passthrough");
        let mut out = Vec::new();
        let now = Instant::now();
        assert_eq!(
            legs.on_browser_packet(now, packet(108, 1), &mut out),
            FromBrowser::First
        );
        assert_eq!(
            legs.on_browser_packet(now, packet(108, 2), &mut out),
            FromBrowser::Relayed
        );
        // Relayed on the SIP side's payload type.
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| p[1] & 0x7f == 96));
        // VP8 now: transcoded toward the SIP side, from a keyframe.
        assert_eq!(
            legs.on_browser_packet(now, packet(100, 3), &mut out),
            FromBrowser::Replanned
        );
        assert_eq!(legs.plan().browser_codec, "VP8/90000");
        assert_eq!(legs.plan().to_sip, "transcoded");
        assert_eq!(
            legs.on_browser_packet(now, packet(100, 4), &mut out),
            FromBrowser::Relayed
        );
        // A payload type nobody negotiated switches nothing.
        assert_eq!(
            legs.on_browser_packet(now, packet(50, 5), &mut out),
            FromBrowser::Relayed
        );
        legs.stop().await;
    }
}
