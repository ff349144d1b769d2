//! The WebRTC leg: str0m peers behind one UDP socket.
//!
//! Owns the peer table ([`Hub`]): one str0m [`Rtc`] per browser or WHIP
//! client, ICE-lite with a host candidate per advertised address, DTLS-SRTP
//! with one ECDSA P-256 certificate and one DTLS configuration shared by
//! every peer (`dtls`: str0m's provider built it per peer), BUNDLE and
//! rtcp-mux (str0m's only mode), and the codec set browsers may negotiate
//! ([`codec_config`]). Datagrams are demultiplexed here: STUN by the ICE
//! username (our ufrag is unique per peer), everything else by the source
//! address that STUN proved. Peers that stop answering ICE consent are
//! reaped, as are peers that never connect.
//!
//! str0m runs in RTP mode: a peer's application sees whole RTP packets, so a
//! relay can pass them on untouched. Two applications: the echo service
//! ([`PeerApp::Echo`]) loops each stream back on its own mid; a bridged
//! peer ([`PeerApp::Bridge`]) hands its RTP to the call layer
//! ([`HubOutput::Rtp`]) and sends what the call layer writes
//! ([`Hub::write_rtp`]).
//!
//! Sans-IO: time and datagrams come in, datagrams and [`PeerEvent`]s go out.
//! The runtime (`runtime::webrtc`) owns the socket and the clock. This module
//! must not route calls, read clocks, touch sockets or speak HTTP.

mod dtls;
#[cfg(test)]
mod tests;

pub use dtls::crypto_provider;

use crate::media::dtmf;
use causeway_codecs::registry::AudioCodec;
use causeway_codecs::video::VideoCodec;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, CodecConfig, FormatParams};
use str0m::media::{Direction as SdpDirection, Frequency, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};

/// A peer that has not completed ICE and DTLS this long after its answer
/// was sent is dropped (the browser gave up, or never had the answer).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an offer to a browser (an incoming call) waits for its
/// answer: longer than a call may ring ([`crate::b2bua::NO_ANSWER`]).
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(90);

/// How often a connected peer reports its media counters.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// The most peers one hub serves; offers beyond it are refused (503).
pub const MAX_PEERS: usize = 2000;

/// Source addresses remembered per peer (ICE may prove a few pairs).
const MAX_ADDRS: usize = 8;

/// Identifies a peer within its [`Hub`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// What a peer's media does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerApp {
    /// Loop every stream back to the sender (the `echo` target).
    Echo,
    /// Media goes to and comes from another leg of a call (the B2BUA).
    Bridge,
}

/// Audio or video, for a bridged peer's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// The audio section.
    Audio,
    /// The video section.
    Video,
}

/// A payload format a peer negotiated: payload type and codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFormat {
    /// Audio or video.
    pub kind: StreamKind,
    /// Payload type.
    pub pt: u8,
    /// Encoding name, clock and channels as in SDP (`opus/48000/2`).
    pub codec: causeway_codecs::CodecKey,
    /// In the browser's SDP (its offer, or its answer to ours): it takes
    /// this format. False for a format of our offer its answer left out,
    /// which it may still send: Chromium sends the first codec of the
    /// offer it supports whatever its answer lists.
    pub answered: bool,
}

/// Why an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebrtcError {
    /// The offer is not SDP str0m can read.
    #[error("the offer is not valid SDP: {0}")]
    BadSdp(String),
    /// The offer parsed but cannot be answered (no ICE credentials, no
    /// fingerprint, inconsistent BUNDLE...).
    #[error("the offer cannot be answered: {0}")]
    Unanswerable(String),
    /// No audio or video section shares a codec with the gateway.
    #[error(
        "no media section shares a codec with the gateway (audio: Opus, G.722, PCMU, PCMA; video: VP8, H.264 packetization-mode 1)"
    )]
    NoCommonCodec,
    /// The hub is full.
    #[error("too many WebRTC peers ({0})")]
    Full(usize),
}

/// Why a peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Closed on request (hang-up, WHIP DELETE, token release).
    Local,
    /// ICE consent was lost: the peer vanished.
    IceTimeout,
    /// ICE and DTLS never completed: no usable candidate pair, or not
    /// within [`CONNECT_TIMEOUT`].
    NeverConnected,
    /// The peer sent a DTLS close or str0m failed it.
    Failed,
}

impl CloseReason {
    /// A short machine-readable name (SSE and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Local => "hangup",
            CloseReason::IceTimeout => "ice_timeout",
            CloseReason::NeverConnected => "connect_timeout",
            CloseReason::Failed => "failed",
        }
    }
}

/// Media counters of one peer, summed over its streams.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MediaCounters {
    /// RTP packets received from the peer.
    pub packets_in: u64,
    /// RTP packets sent to the peer.
    pub packets_out: u64,
    /// Bytes of RTP payload received.
    pub bytes_in: u64,
    /// Bytes of RTP payload sent.
    pub bytes_out: u64,
    /// Highest ingress loss fraction str0m reported (0-1).
    pub loss_in: f32,
    /// Round-trip time from RTCP, milliseconds.
    pub rtt_ms: Option<u32>,
    /// ICE state (RFC 8445 terms as str0m reports them): `new`,
    /// `checking`, `connected`, `completed`, `disconnected`.
    pub ice: &'static str,
    /// DTLS state: `connecting` until the handshake is done, then
    /// `connected`.
    pub dtls: &'static str,
}

/// Something a peer did that the call layer cares about.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// A DTMF digit arrived as an RFC 4733 telephone-event.
    Dtmf(char),
    /// Periodic counters (every [`STATS_INTERVAL`]).
    Stats(MediaCounters),
    /// The peer is gone; its id is no longer valid.
    Closed(CloseReason),
}

/// A datagram to send from the hub's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Where to.
    pub destination: SocketAddr,
    /// What.
    pub contents: Vec<u8>,
}

/// What the hub hands to its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum HubOutput {
    /// Send this.
    Transmit(Datagram),
    /// Tell the call layer.
    Event(PeerId, PeerEvent),
    /// An RTP packet from a bridged peer, rebuilt as bytes (str0m's SSRC,
    /// the browser's payload type, sequence number and timestamp).
    Rtp(PeerId, StreamKind, Vec<u8>),
    /// A bridged peer asked for a keyframe of the video we send it (PLI or
    /// FIR): the call layer gets one from the other leg.
    KeyframeRequest(PeerId),
}

/// The codecs browsers may negotiate with the gateway: Opus (no RED),
/// G.722, PCMU, PCMA and telephone-event at 48 and 8 kHz for audio; VP8 and
/// H.264 (baseline, constrained baseline, main, high and constrained high,
/// all packetization-mode 1) with RTX for video. RED and ULPFEC are not offered
/// or accepted: the relay forwards payloads as they are, and a SIP peer
/// cannot read RED.
pub fn codec_config() -> CodecConfig {
    let mut c = CodecConfig::empty();
    c.enable_opus(true, false);
    c.enable_g722(true, false);
    c.enable_pcmu(true, false);
    c.enable_pcma(true, false);
    add_telephone_events(&mut c);
    c.enable_vp8(true);
    add_h264(&mut c, &H264_PROFILES);
    c
}

/// The H.264 we negotiate with browsers, packetization-mode 1 and RTX
/// each: (payload type, RTX payload type, profile-level-id).
const H264_PROFILES: [(u8, u8, u32); 5] = [
    (127, 121, 0x42001f),
    (108, 109, 0x42e01f),
    (123, 119, 0x4d001f),
    (114, 115, 0x64001f),
    // Constrained High: what Safari (and newer Chromium) prefer.
    (112, 113, 0x640c1f),
];

/// The H.264 of our offers to browsers: constrained baseline first (what
/// SIP room systems and phones decode), then baseline.
const H264_OFFERED: [(u8, u8, u32); 2] = [H264_PROFILES[1], H264_PROFILES[0]];

fn add_h264(c: &mut CodecConfig, profiles: &[(u8, u8, u32)]) {
    for &(pt, rtx, profile) in profiles {
        c.add_h264(pt.into(), Some(rtx.into()), true, profile);
    }
}

/// The RTP header extensions a peer negotiates: str0m's standard set
/// (Chrome's), less transport-wide congestion control for a peer without
/// video ([`Hub::new_rtc`] also drops its `rtcp-fb` there).
///
/// The gateway runs no bandwidth estimation of its own, so TWCC feedback
/// serves only the browser's, and only video needs it (without it, a
/// browser's video stays at its start bitrate). On an audio-only call it
/// is pure cost: str0m reports every 50 ms (a browser about as often), so
/// each direction adds some 20 SRTCP packets a second to a call's 50 RTP
/// packets, and on the transcoding bench that was about a tenth of the
/// gateway's CPU per call (`bench/RESULTS.md`). A browser that gets no
/// TWCC sends its audio at the bitrate its encoder was given.
fn extensions(video: bool) -> ExtensionMap {
    let standard = ExtensionMap::standard();
    let mut exts = ExtensionMap::empty();
    for (id, ext) in standard.iter() {
        if video || *ext != Extension::TransportSequenceNumber {
            exts.set(id, ext.clone());
        }
    }
    exts
}

/// The codecs of an offer to a browser: `audio` in that order, then
/// telephone-event at 48 and 8 kHz; and `video` in that order (VP8, or
/// H.264 as [`H264_OFFERED`]).
fn offer_codecs(audio: &[AudioCodec], video: &[VideoCodec]) -> CodecConfig {
    let mut c = CodecConfig::empty();
    for codec in audio {
        match codec {
            AudioCodec::Opus => c.enable_opus(true, false),
            AudioCodec::G722 => c.enable_g722(true, false),
            AudioCodec::Pcmu => c.enable_pcmu(true, false),
            AudioCodec::Pcma => c.enable_pcma(true, false),
        }
    }
    add_telephone_events(&mut c);
    for codec in video {
        match codec {
            VideoCodec::Vp8 => c.enable_vp8(true),
            VideoCodec::H264 => add_h264(&mut c, &H264_OFFERED),
        }
    }
    c
}

/// telephone-event at 48 kHz (with Opus) and 8 kHz (with G.711 and G.722).
fn add_telephone_events(c: &mut CodecConfig) {
    for (pt, rate) in [
        (110, Frequency::FORTY_EIGHT_KHZ),
        (126, Frequency::EIGHT_KHZ),
    ] {
        c.add_config(
            pt.into(),
            None,
            Codec::Tele,
            rate,
            None,
            FormatParams::parse_line("0-16"),
        );
    }
}

/// Adds `maxplaybackrate` and `sprop-maxcapturerate` at `rate` (RFC 7587
/// section 6.1) to the format parameters of Opus payload type `pt` in
/// `sdp`, str0m's SDP for a browser (which has no way to say it). The
/// browser's encoder then spends no bits on audio the far end cannot play,
/// and decoding its narrower stream costs us less; ours is no wider either.
/// A payload type without an `a=fmtp` line gets one after its `a=rtpmap`;
/// an fmtp that already limits the rate is left alone. Lines end in CRLF,
/// as SDP's grammar has them.
pub fn limit_opus_rate(sdp: &str, pt: u8, rate: u32) -> String {
    let params = format!("maxplaybackrate={rate};sprop-maxcapturerate={rate}");
    let fmtp = format!("a=fmtp:{pt} ");
    let rtpmap = format!("a=rtpmap:{pt} ");
    let has_fmtp = sdp.lines().any(|l| l.starts_with(&fmtp));
    let mut out = String::with_capacity(sdp.len() + 2 * params.len());
    for line in sdp.lines() {
        out.push_str(line);
        if line.starts_with(&fmtp) && !line.contains("maxplaybackrate=") {
            out.push(';');
            out.push_str(&params);
        }
        out.push_str("\r\n");
        if !has_fmtp && line.starts_with(&rtpmap) {
            out.push_str(&fmtp);
            out.push_str(&params);
            out.push_str("\r\n");
        }
    }
    out
}

/// Generates the DTLS certificate every peer of a hub presents (ECDSA P-256,
/// self-signed: WebRTC authenticates it by the fingerprint in the SDP).
pub fn generate_certificate() -> Option<DtlsCert> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
}

struct Peer {
    rtc: Rtc,
    app: PeerApp,
    ufrag: String,
    /// Source addresses STUN has proved for this peer.
    addrs: Vec<SocketAddr>,
    /// When str0m next wants time.
    next: Instant,
    /// This peer's key in [`Hub::timers`] (its [`Peer::deadline`] when the
    /// hub last looked).
    scheduled: Instant,
    /// Dropped if not connected by then.
    connect_by: Instant,
    /// Our offer, until the browser's answer comes (a call to a browser).
    pending: Option<SdpPendingOffer>,
    /// We made the offer (a call to a browser).
    offered: bool,
    connected: bool,
    counters: MediaCounters,
    next_stats: Instant,
    dtmf: dtmf::Receiver,
    /// Telephone-event payload types and their clock rates.
    tele: Vec<(u8, u32)>,
    /// The answer's enabled sections.
    mids: Vec<(Mid, StreamKind)>,
    /// Extended sequence numbers last written per kind (bridged peers).
    written: HashMap<StreamKind, u64>,
    closed: Option<CloseReason>,
}

impl Peer {
    /// Records the sections the SDP exchange enabled (`mids`, from the
    /// answer) and the telephone-event payload types.
    fn settle_media(&mut self, mids: impl Iterator<Item = Mid>) {
        self.mids = mids
            .filter_map(|mid| self.rtc.media(mid).map(|m| (mid, kind_of(m.kind()))))
            .collect();
        self.tele = self
            .rtc
            .codec_config()
            .params()
            .iter()
            .filter(|p| p.spec().codec == Codec::Tele)
            .map(|p| (*p.pt(), p.spec().clock_rate.get()))
            .collect();
    }

    /// When this peer next needs [`Hub::handle_timeout`]: str0m's timer, the
    /// stats report, or giving up on a connection that never came.
    fn deadline(&self) -> Instant {
        if self.connected {
            self.next.min(self.next_stats)
        } else {
            self.next.min(self.connect_by + Duration::from_millis(1))
        }
    }
}

/// Every WebRTC peer of the gateway, behind one socket.
pub struct Hub {
    cert: DtlsCert,
    candidates: Vec<SocketAddr>,
    peers: HashMap<PeerId, Peer>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    /// Every peer by when it next needs [`Hub::handle_timeout`]: the hub
    /// runs one loop for hundreds of peers, and a scan of them all at
    /// every wakeup cost more than the peers' own timers.
    timers: BTreeSet<(Instant, PeerId)>,
    next_id: u64,
    out: VecDeque<HubOutput>,
    /// Scratch list of peers whose timers are due (kept to avoid an
    /// allocation per wakeup).
    due: Vec<PeerId>,
    /// Datagrams that matched no peer.
    pub unmatched: u64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("candidates", &self.candidates)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub advertising `candidates` (the socket's port on each address a
    /// browser may reach) and presenting `cert`.
    pub fn new(cert: DtlsCert, candidates: Vec<SocketAddr>) -> Self {
        Self {
            cert,
            candidates,
            peers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BTreeSet::new(),
            next_id: 1,
            out: VecDeque::new(),
            due: Vec::new(),
            unmatched: 0,
        }
    }

    /// Live peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is live.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// A str0m peer as the hub runs them (ICE-lite, RTP mode, our
    /// certificate and candidates), with fresh ICE credentials, and
    /// transport-wide congestion control feedback only if the peer carries
    /// `video` (see [`extensions`]).
    fn new_rtc(&self, now: Instant, codecs: CodecConfig, video: bool) -> (Rtc, IceCreds) {
        let creds = IceCreds::new();
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_crypto_provider(crypto_provider())
            .set_dtls_cert(self.cert.clone())
            .set_local_ice_credentials(creds.clone())
            .set_stats_interval(Some(STATS_INTERVAL))
            .set_extension_map(extensions(video));
        *config.codec_config() = if video {
            codecs
        } else {
            // Nor do its payload types offer the feedback.
            let params = codecs.params().iter().cloned().map(|mut p| {
                p.set_fb_transport_cc(false);
                p
            });
            CodecConfig::new_from_payload_params(params.collect())
        };
        let mut rtc = config.build(now);
        for addr in &self.candidates {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        (rtc, creds)
    }

    fn new_peer(rtc: Rtc, app: PeerApp, ufrag: String, now: Instant, connect_by: Instant) -> Peer {
        Peer {
            rtc,
            app,
            ufrag,
            addrs: Vec::new(),
            next: now,
            scheduled: now,
            connect_by,
            pending: None,
            offered: false,
            connected: false,
            counters: MediaCounters {
                ice: "new",
                dtls: "connecting",
                ..MediaCounters::default()
            },
            next_stats: now + STATS_INTERVAL,
            dtmf: dtmf::Receiver::default(),
            tele: Vec::new(),
            written: HashMap::new(),
            mids: Vec::new(),
            closed: None,
        }
    }

    /// Answers a browser's offer with a new peer running `app`.
    pub fn accept_offer(
        &mut self,
        now: Instant,
        offer: &str,
        app: PeerApp,
    ) -> Result<(PeerId, String), WebrtcError> {
        if self.peers.len() >= MAX_PEERS {
            return Err(WebrtcError::Full(MAX_PEERS));
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| WebrtcError::BadSdp(e.to_string()))?;
        // Any video section (Firefox offers it on port 0 with bundle-only).
        let video = offer
            .media_lines
            .iter()
            .any(|m| m.typ.to_string() == "video");
        let (mut rtc, creds) = self.new_rtc(now, codec_config(), video);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebrtcError::Unanswerable(e.to_string()))?;
        let id = PeerId(self.next_id);
        self.next_id += 1;
        let mut peer = Self::new_peer(rtc, app, creds.ufrag.clone(), now, now + CONNECT_TIMEOUT);
        drain(id, &mut peer, &mut self.out);
        // str0m answers codecs it lacks with a disabled section.
        let usable = answer
            .media_lines
            .iter()
            .any(|m| !m.disabled && !m.pts.is_empty());
        if !usable || peer.closed.is_some() {
            // Nothing was sent yet: forget the peer and its queued events.
            self.out
                .retain(|o| !matches!(o, HubOutput::Event(p, _) if *p == id));
            return Err(WebrtcError::NoCommonCodec);
        }
        peer.settle_media(
            answer
                .media_lines
                .iter()
                .filter(|m| !m.disabled)
                .map(|m| m.mid()),
        );
        self.by_ufrag.insert(creds.ufrag, id);
        self.admit(id, peer);
        Ok((id, answer.to_sdp_string()))
    }

    /// Offers a browser a new bridged peer with an audio section (`audio`
    /// in that order, the first what we would rather get, and
    /// telephone-event) and, unless `video` is empty, a video section
    /// (`video` in that order). The peer waits up to [`OFFER_TIMEOUT`] for
    /// [`Self::accept_answer`].
    pub fn create_offer(
        &mut self,
        now: Instant,
        audio: &[AudioCodec],
        video: &[VideoCodec],
    ) -> Result<(PeerId, String), WebrtcError> {
        if self.peers.len() >= MAX_PEERS {
            return Err(WebrtcError::Full(MAX_PEERS));
        }
        if audio.is_empty() {
            return Err(WebrtcError::NoCommonCodec);
        }
        let (mut rtc, creds) = self.new_rtc(now, offer_codecs(audio, video), !video.is_empty());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, SdpDirection::SendRecv, None, None, None);
        if !video.is_empty() {
            api.add_media(MediaKind::Video, SdpDirection::SendRecv, None, None, None);
        }
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| WebrtcError::Unanswerable("nothing to offer".into()))?;
        let id = PeerId(self.next_id);
        self.next_id += 1;
        let mut peer = Self::new_peer(
            rtc,
            PeerApp::Bridge,
            creds.ufrag.clone(),
            now,
            now + OFFER_TIMEOUT,
        );
        peer.pending = Some(pending);
        peer.offered = true;
        drain(id, &mut peer, &mut self.out);
        self.by_ufrag.insert(creds.ufrag, id);
        self.admit(id, peer);
        Ok((id, offer.to_sdp_string()))
    }

    /// Applies a browser's answer to our offer ([`Self::create_offer`]).
    /// A peer whose answer is unusable is left as it was (the caller
    /// closes it).
    pub fn accept_answer(
        &mut self,
        now: Instant,
        id: PeerId,
        answer: &str,
    ) -> Result<(), WebrtcError> {
        let peer = self
            .peers
            .get_mut(&id)
            .ok_or_else(|| WebrtcError::Unanswerable("no such offer".into()))?;
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| WebrtcError::BadSdp(e.to_string()))?;
        let pending = peer
            .pending
            .take()
            .ok_or_else(|| WebrtcError::Unanswerable("the offer was answered already".into()))?;
        let enabled: Vec<Mid> = answer
            .media_lines
            .iter()
            .filter(|m| !m.disabled && !m.pts.is_empty())
            .map(|m| m.mid())
            .collect();
        if enabled.is_empty() {
            peer.pending = Some(pending);
            return Err(WebrtcError::NoCommonCodec);
        }
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| WebrtcError::Unanswerable(e.to_string()))?;
        peer.connect_by = now + CONNECT_TIMEOUT;
        peer.settle_media(enabled.into_iter());
        drain(id, peer, &mut self.out);
        self.settle(id);
        Ok(())
    }

    /// Feeds a datagram that arrived at `destination` (our socket address
    /// as the browser sees it) from `source`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        let Some((id, stun)) = self.peer_for(source, data) else {
            self.unmatched += 1;
            return;
        };
        let Ok(contents) = data.try_into() else {
            self.unmatched += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if peer.rtc.handle_input(input).is_err() {
            peer.closed.get_or_insert(CloseReason::Failed);
        }
        let queued = self.out.len();
        drain(id, peer, &mut self.out);
        // An ICE-lite agent answers only binding requests whose
        // MESSAGE-INTEGRITY checks out: an answer to `source` proves it.
        let answered = stun
            && self
                .out
                .iter()
                .skip(queued)
                .any(|o| matches!(o, HubOutput::Transmit(d) if d.destination == source));
        if answered {
            self.learn(id, source);
        }
        self.settle(id);
    }

    /// Routes non-STUN traffic from `source` to `id` from now on. A source
    /// belongs to one peer (the newest proof wins); a peer keeps at most
    /// [`MAX_ADDRS`] sources, the oldest forgotten first.
    fn learn(&mut self, id: PeerId, source: SocketAddr) {
        if self.by_addr.get(&source) == Some(&id) {
            return;
        }
        if let Some(old) = self.by_addr.insert(source, id)
            && let Some(p) = self.peers.get_mut(&old)
        {
            p.addrs.retain(|a| *a != source);
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.addrs.push(source);
        if peer.addrs.len() > MAX_ADDRS {
            let gone = peer.addrs.remove(0);
            if self.by_addr.get(&gone) == Some(&id) {
                self.by_addr.remove(&gone);
            }
        }
    }

    /// Which peer a datagram belongs to, and whether it is STUN. STUN
    /// binding requests name our ufrag; other traffic is known by a source
    /// address an earlier binding request proved.
    fn peer_for(&self, source: SocketAddr, data: &[u8]) -> Option<(PeerId, bool)> {
        if data.first().is_some_and(|b| *b < 2)
            && let Ok(msg) = str0m::ice::StunMessage::parse(data)
            && let Some((local, _)) = msg.split_username()
        {
            return self.by_ufrag.get(local).map(|id| (*id, true));
        }
        self.by_addr.get(&source).map(|id| (*id, false))
    }

    /// Drives every peer whose timer is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        due.extend(
            self.timers
                .range(..=(now, PeerId(u64::MAX)))
                .map(|(_, id)| *id),
        );
        for id in due.drain(..) {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if !peer.connected && now > peer.connect_by {
                peer.closed.get_or_insert(CloseReason::NeverConnected);
            } else if peer.rtc.handle_input(Input::Timeout(now)).is_err() {
                peer.closed.get_or_insert(CloseReason::Failed);
            }
            if peer.connected && peer.next_stats <= now {
                peer.next_stats = now + STATS_INTERVAL;
                self.out
                    .push_back(HubOutput::Event(id, PeerEvent::Stats(peer.counters)));
            }
            drain(id, peer, &mut self.out);
            self.settle(id);
        }
        self.due = due;
    }

    /// The earliest time any peer wants [`Hub::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Ends a peer (hang-up). Unknown ids are ignored.
    pub fn close(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.rtc.disconnect();
            peer.closed.get_or_insert(CloseReason::Local);
            drain(id, peer, &mut self.out);
            self.settle(id);
        }
    }

    /// The formats a peer negotiated, per section, in the order of the
    /// browser's SDP (the first of a kind is what it would rather receive
    /// and, in its own offer, what it sends); then, for a peer we made
    /// the offer to, the formats of our offer its answer left out
    /// ([`PeerFormat::answered`] false).
    pub fn formats(&self, id: PeerId) -> Vec<PeerFormat> {
        let Some(peer) = self.peers.get(&id) else {
            return Vec::new();
        };
        let params = peer.rtc.codec_config().params();
        let format = |kind, p: &str0m::format::PayloadParams, answered| {
            let spec = p.spec();
            PeerFormat {
                kind,
                pt: *p.pt(),
                codec: causeway_codecs::CodecKey {
                    name: codec_name(spec.codec).into(),
                    clock_rate: spec.clock_rate.get(),
                    channels: spec.channels.unwrap_or(1),
                },
                answered,
            }
        };
        let mut out = Vec::new();
        for (mid, kind) in &peer.mids {
            let Some(m) = peer.rtc.media(*mid) else {
                continue;
            };
            let theirs = m.remote_pts();
            for pt in theirs {
                if let Some(p) = params.iter().find(|p| p.pt() == *pt) {
                    out.push(format(*kind, p, true));
                }
            }
            if peer.offered {
                let is_kind = |c: Codec| match kind {
                    StreamKind::Audio => c.is_audio(),
                    StreamKind::Video => c.is_video(),
                };
                out.extend(
                    params
                        .iter()
                        .filter(|p| is_kind(p.spec().codec) && !theirs.contains(&p.pt()))
                        .map(|p| format(*kind, p, false)),
                );
            }
        }
        out
    }

    /// Sends an RTP packet (bytes, as [`crate::media::rtp`] writes them) to
    /// a bridged peer on its section of `kind`; str0m puts its own SSRC on
    /// it. Packets for unknown peers or sections are dropped.
    pub fn write_rtp(&mut self, now: Instant, id: PeerId, kind: StreamKind, packet: &[u8]) {
        let Ok(h) = crate::media::rtp::RtpHeader::parse(packet) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some((mid, _)) = peer.mids.iter().find(|(_, k)| *k == kind).copied() else {
            return;
        };
        let payload = h.payload(packet).to_vec();
        let len = payload.len() as u64;
        let last = peer.written.get(&kind).copied();
        let seq = extend_seq(last, h.sequence);
        peer.written.insert(kind, seq);
        let mut api = peer.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        tx.write_rtp(
            RtpWrite::new(h.payload_type.into(), seq.into(), h.timestamp, now, payload)
                .marker(h.marker)
                .nackable(kind == StreamKind::Video),
        );
        peer.counters.packets_out += 1;
        peer.counters.bytes_out += len;
        drain(id, peer, &mut self.out);
        self.settle(id);
    }

    /// Asks a bridged peer for a keyframe of the video it sends (PLI).
    pub fn request_keyframe(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some((mid, _)) = peer
            .mids
            .iter()
            .find(|(_, k)| *k == StreamKind::Video)
            .copied()
        else {
            return;
        };
        if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        drain(id, peer, &mut self.out);
        self.settle(id);
    }

    /// Counters of a live peer.
    pub fn counters(&self, id: PeerId) -> Option<MediaCounters> {
        self.peers.get(&id).map(|p| p.counters)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<HubOutput> {
        self.out.pop_front()
    }

    /// Whether [`Self::timers`] holds every peer once, at its deadline
    /// (what a scan of the peers would find).
    #[cfg(test)]
    pub(crate) fn timers_agree(&self) -> bool {
        let scanned: BTreeSet<_> = self
            .peers
            .iter()
            .map(|(id, p)| (p.deadline(), *id))
            .collect();
        scanned == self.timers
    }

    /// Adds a new peer (drained) and schedules it.
    fn admit(&mut self, id: PeerId, mut peer: Peer) {
        peer.scheduled = peer.deadline();
        self.timers.insert((peer.scheduled, id));
        self.peers.insert(id, peer);
    }

    /// After a peer was driven and drained: forgets it if it closed,
    /// otherwise moves it in [`Self::timers`] to its new deadline.
    fn settle(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(reason) = peer.closed else {
            let deadline = peer.deadline();
            if deadline != peer.scheduled {
                self.timers.remove(&(peer.scheduled, id));
                self.timers.insert((deadline, id));
                peer.scheduled = deadline;
            }
            return;
        };
        if let Some(peer) = self.peers.remove(&id) {
            self.timers.remove(&(peer.scheduled, id));
            self.by_ufrag.remove(&peer.ufrag);
            for a in &peer.addrs {
                if self.by_addr.get(a) == Some(&id) {
                    self.by_addr.remove(a);
                }
            }
            self.out
                .push_back(HubOutput::Event(id, PeerEvent::Closed(reason)));
        }
    }
}

fn kind_of(k: MediaKind) -> StreamKind {
    match k {
        MediaKind::Audio => StreamKind::Audio,
        MediaKind::Video => StreamKind::Video,
    }
}

/// The SDP encoding name of a str0m codec.
fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Opus => "opus",
        Codec::PCMU => "PCMU",
        Codec::PCMA => "PCMA",
        Codec::G722 => "G722",
        Codec::Tele => "telephone-event",
        Codec::H264 => "H264",
        Codec::Vp8 => "VP8",
        Codec::Rtx => "rtx",
        _ => "unknown",
    }
}

/// Extends a 16-bit sequence number past the last extended one written
/// (RFC 3550 A.1's rollover: within half the space of the last).
fn extend_seq(last: Option<u64>, seq: u16) -> u64 {
    let Some(last) = last else {
        return u64::from(seq);
    };
    let base = last & !0xffff;
    let candidates = [base.wrapping_sub(0x1_0000), base, base + 0x1_0000];
    candidates
        .iter()
        .map(|b| b.wrapping_add(u64::from(seq)))
        .filter(|c| *c < u64::MAX / 2)
        .min_by_key(|c| c.abs_diff(last))
        .unwrap_or(u64::from(seq))
}

/// Drains a peer's output until str0m asks for time (the single-mutation
/// rule: every mutation is followed by a full drain). Media applications run
/// here, inside the drain, as str0m allows.
fn drain(id: PeerId, peer: &mut Peer, out: &mut VecDeque<HubOutput>) {
    loop {
        match peer.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                peer.next = t;
                break;
            }
            Ok(Output::Transmit(t)) => out.push_back(HubOutput::Transmit(Datagram {
                destination: t.destination,
                contents: t.contents.into(),
            })),
            Ok(Output::Event(e)) => on_event(id, peer, e, out),
            Err(e) => {
                tracing::debug!(peer = id.0, error = %e, "WebRTC peer failed");
                peer.closed.get_or_insert(CloseReason::Failed);
                break;
            }
        }
    }
    if !peer.rtc.is_alive() {
        peer.closed.get_or_insert(CloseReason::Failed);
    }
}

/// An ICE state's name.
fn ice_state(s: IceConnectionState) -> &'static str {
    match s {
        IceConnectionState::New => "new",
        IceConnectionState::Checking => "checking",
        IceConnectionState::Connected => "connected",
        IceConnectionState::Completed => "completed",
        IceConnectionState::Disconnected => "disconnected",
    }
}

fn on_event(id: PeerId, peer: &mut Peer, e: Event, out: &mut VecDeque<HubOutput>) {
    match e {
        Event::Connected => {
            peer.connected = true;
            peer.counters.dtls = "connected";
            out.push_back(HubOutput::Event(id, PeerEvent::Connected));
        }
        Event::IceConnectionStateChange(state) => {
            peer.counters.ice = ice_state(state);
            if state == IceConnectionState::Disconnected {
                peer.closed.get_or_insert(if peer.connected {
                    CloseReason::IceTimeout
                } else {
                    CloseReason::NeverConnected
                });
            }
        }
        Event::RtpPacket(pkt) => on_rtp(id, peer, pkt, out),
        Event::KeyframeRequest(req) => match peer.app {
            PeerApp::Bridge => out.push_back(HubOutput::KeyframeRequest(id)),
            // The browser wants a keyframe of what we send it, which is its
            // own video: ask it for one.
            PeerApp::Echo => {
                if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(req.mid, req.rid) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                }
            }
        },
        Event::PeerStats(s) => {
            peer.counters.rtt_ms = s
                .rtt
                .map(|r| r.as_millis().min(u128::from(u32::MAX)) as u32);
            if let Some(l) = s.ingress_loss_fraction {
                peer.counters.loss_in = l;
            }
        }
        _ => {}
    }
}

fn on_rtp(id: PeerId, peer: &mut Peer, pkt: RtpPacket, out: &mut VecDeque<HubOutput>) {
    let pt = *pkt.header.payload_type;
    peer.counters.packets_in += 1;
    peer.counters.bytes_in += pkt.payload.len() as u64;
    if let Some((_, rate)) = peer.tele.iter().find(|(t, _)| *t == pt)
        && let Some(d) = peer
            .dtmf
            .on_packet(pkt.header.timestamp, &pkt.payload, *rate)
    {
        out.push_back(HubOutput::Event(id, PeerEvent::Dtmf(d.digit)));
    }
    match peer.app {
        PeerApp::Bridge => {
            let Some(kind) = peer
                .rtc
                .direct_api()
                .stream_rx(&pkt.header.ssrc)
                .map(|s| s.mid())
                .and_then(|mid| peer.rtc.media(mid))
                .map(|m| kind_of(m.kind()))
            else {
                return;
            };
            let mut buf = Vec::with_capacity(12 + pkt.payload.len());
            crate::media::rtp::write(
                &mut buf,
                &crate::media::rtp::RtpHeader::new(
                    pt,
                    *pkt.seq_no as u16,
                    pkt.header.timestamp,
                    *pkt.header.ssrc,
                    pkt.header.marker,
                ),
                &pkt.payload,
            );
            out.push_back(HubOutput::Rtp(id, kind, buf));
        }
        PeerApp::Echo => {
            let Some(mid) = peer
                .rtc
                .direct_api()
                .stream_rx(&pkt.header.ssrc)
                .map(|s| s.mid())
            else {
                return;
            };
            let video = peer
                .rtc
                .media(mid)
                .is_some_and(|m| m.kind() == MediaKind::Video);
            let mut api = peer.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                return;
            };
            let len = pkt.payload.len() as u64;
            tx.write_rtp(
                RtpWrite::new(
                    pkt.header.payload_type,
                    pkt.seq_no,
                    pkt.header.timestamp,
                    pkt.timestamp,
                    pkt.payload,
                )
                .marker(pkt.header.marker)
                .nackable(video),
            );
            peer.counters.packets_out += 1;
            peer.counters.bytes_out += len;
        }
    }
}
