//! The WebRTC socket: one UDP port shared by every browser and WHIP peer,
//! and the task that drives the sans-IO [`Hub`] with it.
//!
//! Owns the socket, the clock and the choice of advertised addresses. The
//! hub decides everything about peers; this task only moves datagrams,
//! commands and time. Commands come from the HTTP handlers
//! ([`WebrtcHandle`]); peer events go out on a channel to the client API.

use super::alarm::Alarm;
use crate::config::Config;
use crate::webrtc::{
    Hub, HubOutput, PeerApp, PeerEvent, PeerFormat, PeerId, StreamKind, WebrtcError,
};
use causeway_codecs::registry::AudioCodec;
use causeway_codecs::video::VideoCodec;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// A peer the hub answered: its id, the answer SDP and what it negotiated.
pub type Answered = (PeerId, String, Vec<PeerFormat>);

/// What a bridged peer hands to its call's media task.
#[derive(Debug)]
pub enum FromPeer {
    /// An RTP packet of one of its sections.
    Rtp(StreamKind, Vec<u8>),
    /// It wants a keyframe of the video we send it.
    Keyframe,
}

/// Where a bridged peer's RTP and keyframe requests go.
pub type RtpSink = mpsc::Sender<FromPeer>;

enum Cmd {
    Offer {
        sdp: String,
        app: PeerApp,
        reply: oneshot::Sender<Result<Answered, WebrtcError>>,
    },
    /// An offer to a browser (an incoming call).
    OfferTo {
        audio: Vec<AudioCodec>,
        video: Vec<VideoCodec>,
        reply: oneshot::Sender<Result<(PeerId, String), WebrtcError>>,
    },
    /// The browser's answer to an [`Cmd::OfferTo`].
    Answer {
        peer: PeerId,
        sdp: String,
        reply: oneshot::Sender<Result<Vec<PeerFormat>, WebrtcError>>,
    },
    Close(PeerId),
    Attach(PeerId, RtpSink),
    Keyframe(PeerId),
}

/// How the HTTP side and the call media ask for peers.
#[derive(Debug, Clone)]
pub struct WebrtcHandle {
    cmds: mpsc::Sender<Cmd>,
    rtp: mpsc::Sender<(PeerId, StreamKind, Vec<u8>)>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Offer { app, .. } => write!(f, "Offer({app:?})"),
            Cmd::OfferTo { audio, video, .. } => write!(f, "OfferTo({audio:?}, {video:?})"),
            Cmd::Answer { peer, .. } => write!(f, "Answer({peer:?})"),
            Cmd::Close(p) => write!(f, "Close({p:?})"),
            Cmd::Attach(p, _) => write!(f, "Attach({p:?})"),
            Cmd::Keyframe(p) => write!(f, "Keyframe({p:?})"),
        }
    }
}

/// Why the WebRTC side could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The hub refused the offer.
    #[error(transparent)]
    Refused(#[from] WebrtcError),
    /// The WebRTC task has stopped (shutdown).
    #[error("the WebRTC service is stopping")]
    Stopped,
}

impl WebrtcHandle {
    /// Answers `sdp` with a new peer running `app`.
    pub async fn offer(&self, sdp: String, app: PeerApp) -> Result<Answered, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Offer { sdp, app, reply })
            .await
            .map_err(|_| HandleError::Stopped)?;
        Ok(rx.await.map_err(|_| HandleError::Stopped)??)
    }

    /// A new bridged peer offering `audio` and `video` (each first
    /// preferred; no video section when empty) to a browser: its id and
    /// our offer.
    pub async fn offer_to(
        &self,
        audio: Vec<AudioCodec>,
        video: Vec<VideoCodec>,
    ) -> Result<(PeerId, String), HandleError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::OfferTo {
                audio,
                video,
                reply,
            })
            .await
            .map_err(|_| HandleError::Stopped)?;
        Ok(rx.await.map_err(|_| HandleError::Stopped)??)
    }

    /// Applies a browser's answer to [`Self::offer_to`]'s offer: what it
    /// negotiated.
    pub async fn answer(&self, peer: PeerId, sdp: String) -> Result<Vec<PeerFormat>, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Answer { peer, sdp, reply })
            .await
            .map_err(|_| HandleError::Stopped)?;
        Ok(rx.await.map_err(|_| HandleError::Stopped)??)
    }

    /// Ends a peer.
    pub async fn close(&self, peer: PeerId) {
        let _ = self.cmds.send(Cmd::Close(peer)).await;
    }

    /// Sends a bridged peer's RTP to `sink` from now on (until it closes).
    pub async fn attach(&self, peer: PeerId, sink: RtpSink) {
        let _ = self.cmds.send(Cmd::Attach(peer, sink)).await;
    }

    /// Asks a bridged peer for a keyframe of its video (dropped when the
    /// WebRTC task is that far behind: the next request will do).
    pub fn request_keyframe(&self, peer: PeerId) {
        let _ = self.cmds.try_send(Cmd::Keyframe(peer));
    }

    /// Queues an RTP packet for a bridged peer; dropped when the WebRTC
    /// task is that far behind (media is better late-dropped than queued).
    pub fn send_rtp(&self, peer: PeerId, kind: StreamKind, packet: Vec<u8>) {
        let _ = self.rtp.try_send((peer, kind, packet));
    }
}

/// The addresses to advertise as host candidates.
pub fn candidate_addresses(cfg: &Config, port: u16) -> Vec<SocketAddr> {
    let w = &cfg.webrtc;
    let ips: Vec<IpAddr> = if !w.addresses.is_empty() {
        w.addresses.clone()
    } else if !w.bind.ip().is_unspecified() {
        vec![w.bind.ip()]
    } else if let Some(ip) = cfg.sip.public_address {
        vec![ip]
    } else {
        let mut v: Vec<IpAddr> = primary_address().into_iter().collect();
        v.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        v
    };
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// The address the host would use toward the Internet: a UDP socket
/// "connected" to a documentation address (no packet is sent).
fn primary_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Which advertised address a datagram from `source` reached (the socket
/// may be bound to the wildcard address, which str0m cannot pair).
fn destination_for(candidates: &[SocketAddr], bound: SocketAddr, source: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let same_family = |c: &&SocketAddr| c.is_ipv4() == source.is_ipv4();
    let loopback = source.ip().is_loopback();
    candidates
        .iter()
        .filter(same_family)
        .find(|c| c.ip().is_loopback() == loopback)
        .or_else(|| candidates.iter().find(same_family))
        .copied()
        .unwrap_or(bound)
}

/// Binds the WebRTC socket and starts its task. Returns the handle, the
/// peer events, and the bound address.
pub async fn start(
    cfg: &Config,
    events: mpsc::UnboundedSender<(PeerId, PeerEvent)>,
) -> Result<(WebrtcHandle, SocketAddr, tokio::task::JoinHandle<()>), String> {
    let socket = crate::sip::transport::bind_udp(cfg.webrtc.bind)
        .map_err(|e| format!("cannot bind the WebRTC socket {}: {e}", cfg.webrtc.bind))?;
    let bound = socket.local_addr().map_err(|e| e.to_string())?;
    let candidates = candidate_addresses(cfg, bound.port());
    let cert = crate::webrtc::generate_certificate()
        .ok_or_else(|| "cannot generate the DTLS certificate".to_string())?;
    tracing::info!(bind = %bound, candidates = ?candidates, "WebRTC socket ready");
    let hub = Hub::new(cert, candidates.clone());
    let (cmds, rx) = mpsc::channel(256);
    let (rtp, rtp_rx) = mpsc::channel(4096);
    let task = tokio::spawn(run(socket, bound, candidates, hub, rx, rtp_rx, events));
    Ok((WebrtcHandle { cmds, rtp }, bound, task))
}

async fn run(
    socket: UdpSocket,
    bound: SocketAddr,
    candidates: Vec<SocketAddr>,
    mut hub: Hub,
    mut cmds: mpsc::Receiver<Cmd>,
    mut rtp: mpsc::Receiver<(PeerId, StreamKind, Vec<u8>)>,
    events: mpsc::UnboundedSender<(PeerId, PeerEvent)>,
) {
    let mut buf = vec![0u8; 4096];
    let mut sinks: HashMap<PeerId, RtpSink> = HashMap::new();
    let mut alarm = Alarm::new();
    loop {
        let deadline = hub.poll_timeout();
        tokio::select! {
            r = socket.readable() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "WebRTC socket failed");
                }
                // Take what is queued (up to 64 datagrams) before flushing.
                for _ in 0..64 {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, source)) => {
                            let dest = destination_for(&candidates, bound, source);
                            hub.handle_receive(Instant::now(), source, dest, &buf[..n]);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // Consumed (an ICMP error, say): go on reading.
                        Err(e) => tracing::debug!(error = %e, "WebRTC socket receive failed"),
                    }
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Offer { sdp, app, reply }) => {
                    let r = hub
                        .accept_offer(Instant::now(), &sdp, app)
                        .map(|(peer, answer)| (peer, answer, hub.formats(peer)));
                    // The HTTP request went away meanwhile: nobody will use the peer.
                    if let Err(Ok((peer, _, _))) = reply.send(r) {
                        hub.close(peer);
                    }
                }
                Some(Cmd::OfferTo { audio, video, reply }) => {
                    let r = hub.create_offer(Instant::now(), &audio, &video);
                    if let Err(Ok((peer, _))) = reply.send(r) {
                        hub.close(peer);
                    }
                }
                Some(Cmd::Answer { peer, sdp, reply }) => {
                    let r = hub
                        .accept_answer(Instant::now(), peer, &sdp)
                        .map(|()| hub.formats(peer));
                    let _ = reply.send(r);
                }
                Some(Cmd::Close(peer)) => hub.close(peer),
                Some(Cmd::Attach(peer, sink)) => {
                    sinks.insert(peer, sink);
                }
                Some(Cmd::Keyframe(peer)) => hub.request_keyframe(peer),
                None => break,
            },
            Some((peer, kind, packet)) = rtp.recv() => {
                let now = Instant::now();
                hub.write_rtp(now, peer, kind, &packet);
                // Take what else is queued before flushing.
                for _ in 0..64 {
                    match rtp.try_recv() {
                        Ok((peer, kind, packet)) => hub.write_rtp(now, peer, kind, &packet),
                        Err(_) => break,
                    }
                }
            }
            () = alarm.at(deadline) => hub.handle_timeout(Instant::now()),
        }
        while let Some(o) = hub.poll_output() {
            match o {
                HubOutput::Transmit(d) => {
                    if let Err(e) = socket.try_send_to(&d.contents, d.destination) {
                        tracing::debug!(to = %d.destination, error = %e, "WebRTC send failed");
                    }
                }
                HubOutput::Event(peer, e) => {
                    if matches!(e, PeerEvent::Closed(_)) {
                        sinks.remove(&peer);
                    }
                    let _ = events.send((peer, e));
                }
                HubOutput::Rtp(peer, kind, packet) => {
                    if let Some(sink) = sinks.get(&peer) {
                        let _ = sink.try_send(FromPeer::Rtp(kind, packet));
                    }
                }
                HubOutput::KeyframeRequest(peer) => {
                    if let Some(sink) = sinks.get(&peer) {
                        let _ = sink.try_send(FromPeer::Keyframe);
                    }
                }
            }
        }
    }
    tracing::debug!(peers = hub.len(), "WebRTC task stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_paired_with_the_candidate_they_could_reach() {
        let any: SocketAddr = "0.0.0.0:10000".parse().unwrap();
        let lan: SocketAddr = "192.168.1.5:10000".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:10000".parse().unwrap();
        let c = [lan, lo];
        assert_eq!(
            destination_for(&c, any, "127.0.0.1:5555".parse().unwrap()),
            lo
        );
        assert_eq!(
            destination_for(&c, any, "192.168.1.9:5555".parse().unwrap()),
            lan
        );
        assert_eq!(
            destination_for(&[lan], any, "127.0.0.1:1".parse().unwrap()),
            lan
        );
        let specific: SocketAddr = "10.1.1.1:10000".parse().unwrap();
        assert_eq!(
            destination_for(&c, specific, "127.0.0.1:1".parse().unwrap()),
            specific
        );
    }

    #[test]
    fn advertised_addresses_follow_the_config() {
        let mut cfg = Config::default();
        cfg.webrtc.addresses = vec!["203.0.113.7".parse().unwrap()];
        assert_eq!(
            candidate_addresses(&cfg, 4000),
            ["203.0.113.7:4000".parse().unwrap()]
        );
        cfg.webrtc.addresses.clear();
        cfg.webrtc.bind = "127.0.0.1:0".parse().unwrap();
        assert_eq!(
            candidate_addresses(&cfg, 4000),
            ["127.0.0.1:4000".parse().unwrap()]
        );
        cfg.webrtc.bind = "0.0.0.0:0".parse().unwrap();
        cfg.sip.public_address = Some("198.51.100.1".parse().unwrap());
        assert_eq!(
            candidate_addresses(&cfg, 4000),
            ["198.51.100.1:4000".parse().unwrap()]
        );
        cfg.sip.public_address = None;
        let auto = candidate_addresses(&cfg, 4000);
        assert!(
            auto.contains(&"127.0.0.1:4000".parse().unwrap()),
            "{auto:?}"
        );
    }
}
