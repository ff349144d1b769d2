//! Media sockets and tasks for calls the gateway answers itself (the echo
//! service): binds RTP (and RTCP, without rtcp-mux) ports from the
//! configured range, then runs one task per stream that drives a
//! [`RtpSession`] and loops the caller's media back through a passthrough
//! [`Direction`] (new SSRC, continuous sequence, telephone-events kept).
//!
//! Owns sockets and timers only; SDP, latching, SRTP and RTCP decisions
//! live in the sans-IO [`crate::sdp`] and [`crate::media`] modules.

use crate::media::bridge::{Direction, DtmfRoute, Mode, Passthrough};
use crate::media::keyframe::{KeyframeAction, KeyframeRequests, VideoPath};
use crate::media::session::{Feedback, Inbound, RtpSession, SessionConfig, ntp_time};
use crate::sdp::{Answer, Negotiated};
use crate::sip::dialog::DialogId;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdp};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// When any stream of a call last heard from the caller, shared by the
/// call's stream tasks (a silent stream alone does not end the call); a
/// call whose streams all hear nothing (no RTP, no RTCP) for `timeout`
/// ends: the caller is gone without a BYE.
#[derive(Debug)]
struct Heard {
    base: Instant,
    ms: AtomicU64,
    timeout: Duration,
}

impl Heard {
    fn new(timeout: Duration) -> Self {
        Self {
            base: Instant::now(),
            ms: AtomicU64::new(0),
            timeout,
        }
    }

    fn now(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.base).as_millis() as u64;
        self.ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the call counts as silent.
    fn silent_at(&self) -> Instant {
        self.base + Duration::from_millis(self.ms.load(Ordering::Relaxed)) + self.timeout
    }
}

/// Media of the calls answered here.
#[derive(Debug)]
pub struct MediaCalls {
    range: (u16, u16),
    next: u16,
    calls: HashMap<DialogId, Vec<JoinHandle<()>>>,
    /// Where silent calls are reported.
    timeouts: mpsc::UnboundedSender<DialogId>,
    /// How long a silent call lasts.
    silence: Duration,
}

/// Sockets of one stream.
pub(super) struct Ports {
    pub(super) rtp: StdUdp,
    pub(super) rtcp: Option<StdUdp>,
}

impl MediaCalls {
    /// Ports are taken from `min..=max` (even RTP ports, RTCP one above);
    /// calls whose media stays silent for `silence` are reported on
    /// `timeouts`.
    pub fn new(
        min: u16,
        max: u16,
        timeouts: mpsc::UnboundedSender<DialogId>,
        silence: Duration,
    ) -> Self {
        let span = (max.saturating_sub(min) / 2).max(1);
        Self {
            range: (min, max),
            next: min + 2 * (rand::random::<u16>() % span),
            calls: HashMap::new(),
            timeouts,
            silence,
        }
    }

    /// Binds an even port (and the odd one above when `pair`) on `ip`'s family.
    pub(super) fn bind(&mut self, ip: IpAddr, pair: bool) -> std::io::Result<Ports> {
        let any = match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let (min, max) = self.range;
        let slots = (max.saturating_sub(min) / 2).max(1);
        for _ in 0..slots {
            let port = self.next;
            self.next = if port.saturating_add(3) > max {
                min
            } else {
                port + 2
            };
            let Ok(rtp) = StdUdp::bind((any, port)) else {
                continue;
            };
            let rtcp = if pair {
                match StdUdp::bind((any, port + 1)) {
                    Ok(s) => Some(s),
                    Err(_) => continue,
                }
            } else {
                None
            };
            return Ok(Ports { rtp, rtcp });
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("every media port in {min}-{max} is in use"),
        ))
    }

    /// Binds ports for every accepted stream of `answer` and starts looping
    /// media back; returns the RTP port per stream (0 for rejected ones).
    pub fn open_echo(
        &mut self,
        dialog: DialogId,
        answer: &Answer,
        ip: IpAddr,
    ) -> Result<Vec<u16>, String> {
        let mut bound = Vec::new();
        for n in &answer.streams {
            match n {
                Some(n) => bound.push(Some((
                    self.bind(ip, !n.rtcp_mux).map_err(|e| e.to_string())?,
                    n.clone(),
                ))),
                None => bound.push(None),
            }
        }
        let mut ports = Vec::new();
        let mut tasks = Vec::new();
        let heard = Arc::new(Heard::new(self.silence));
        for b in bound {
            let Some((sockets, n)) = b else {
                ports.push(0);
                continue;
            };
            ports.push(sockets.rtp.local_addr().map_err(|e| e.to_string())?.port());
            let task = echo_stream(sockets, n, format!("causeway-{dialog}"), heard.clone())?;
            let timeouts = self.timeouts.clone();
            tasks.push(tokio::spawn(async move {
                task.await;
                let _ = timeouts.send(dialog);
            }));
        }
        self.calls.insert(dialog, tasks);
        Ok(ports)
    }

    /// Stops a call's media.
    pub fn close(&mut self, dialog: DialogId) {
        for t in self.calls.remove(&dialog).unwrap_or_default() {
            t.abort();
        }
    }

    /// Stops every call's media (shutdown).
    pub fn close_all(&mut self) {
        let ids: Vec<_> = self.calls.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }
}

pub(super) fn tokio_socket(s: StdUdp) -> Result<UdpSocket, String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    UdpSocket::from_std(s).map_err(|e| e.to_string())
}

/// Receives on `s` into `buf`'s spare capacity when present, else never.
pub(super) async fn recv_opt(
    s: Option<&UdpSocket>,
    buf: &mut Vec<u8>,
) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_buf_from(buf).await,
        None => std::future::pending().await,
    }
}

pub(super) fn ntp_now() -> u64 {
    ntp_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// The loop of one echoed stream; it returns when the whole call has heard
/// nothing for the media timeout.
fn echo_stream(
    sockets: Ports,
    n: Negotiated,
    cname: String,
    heard: Arc<Heard>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, String> {
    let clock = n.format.codec.as_ref().map_or(8000, |c| c.clock_rate);
    let cfg = SessionConfig {
        remote_rtp: n.remote_rtp,
        remote_rtcp: n.remote_rtcp,
        rtcp_mux: n.rtcp_mux,
        srtp: n.srtp.as_ref().map(crate::sdp::Srtp::keys),
        clock_rate: clock,
        cname,
    };
    let session_name = cfg.cname.clone();
    let mut session = RtpSession::new(Instant::now(), cfg).map_err(|e| e.to_string())?;
    let mut pts = HashMap::from([(n.format.pt, n.format.pt)]);
    if let Some(ev) = &n.dtmf {
        pts.insert(ev.pt, ev.pt);
    }
    let mut direction = Direction::new(Mode::Passthrough(Passthrough::new(pts)), clock);
    direction.dtmf = n
        .dtmf
        .as_ref()
        .map(|ev| DtmfRoute::new(ev.pt, clock, Some(ev.pt), clock));
    let rtp = tokio_socket(sockets.rtp)?;
    let rtcp = sockets.rtcp.map(tokio_socket).transpose()?;
    let sends = n.direction.sends();
    Ok(async move {
        // Datagrams land in these (no zeroing) and are unprotected in place.
        let mut packet = Vec::with_capacity(2048);
        let mut rpacket = Vec::with_capacity(2048);
        let mut out = Vec::new();
        let mut keyframes =
            KeyframeRequests::new(VideoPath::RelayedRtcpFeedback, Duration::from_millis(250));
        loop {
            let silence = heard.silent_at();
            let due = session.next_timeout().map_or(silence, |t| t.min(silence));
            packet.clear();
            rpacket.clear();
            let mut control = Vec::new();
            tokio::select! {
                r = rtp.recv_buf_from(&mut packet) => {
                    let Ok((_, from)) = r else { continue };
                    let now = Instant::now();
                    let inbound = session.on_rtp_port(now, from, &mut packet);
                    if inbound != Inbound::Dropped {
                        heard.now(now);
                    }
                    match inbound {
                        Inbound::Rtp if sends => {
                            direction.on_packet(now, &packet, &mut out);
                            for d in direction.take_digits() {
                                tracing::info!(digit = %d.digit, ms = d.duration_ms, "DTMF received by the echo service");
                            }
                        }
                        Inbound::Rtcp(fb) => control.extend(feedback(&mut session, &mut keyframes, &fb)),
                        _ => {}
                    }
                }
                r = recv_opt(rtcp.as_ref(), &mut rpacket) => {
                    let Ok((_, from)) = r else { continue };
                    let now = Instant::now();
                    if let Inbound::Rtcp(fb) = session.on_rtcp_port(now, from, &mut rpacket) {
                        heard.now(now);
                        control.extend(feedback(&mut session, &mut keyframes, &fb));
                    }
                }
                () = tokio::time::sleep_until(due.into()) => {
                    let now = Instant::now();
                    if now >= heard.silent_at() {
                        tracing::info!(cname = %session_name, "no media for {}s", heard.timeout.as_secs());
                        return;
                    }
                    control.extend(session.poll_rtcp(now, ntp_now()));
                }
            }
            let now = Instant::now();
            for mut p in out.drain(..) {
                if let Some(dest) = session.send_rtp(now, &mut p) {
                    let _ = rtp.send_to(&p, dest).await;
                }
            }
            for (dest, p) in control {
                let _ = rtcp.as_ref().unwrap_or(&rtp).send_to(&p, dest).await;
            }
        }
    })
}

/// A keyframe request about the stream we echo is a request for the
/// caller's own stream: pass it back to the caller (bursts rate-limited).
fn feedback(
    session: &mut RtpSession,
    keyframes: &mut KeyframeRequests,
    fb: &[Feedback],
) -> Option<(SocketAddr, Vec<u8>)> {
    let asked = fb.iter().any(Feedback::asks_keyframe);
    match asked
        .then(|| keyframes.on_request(Instant::now()))
        .flatten()
    {
        Some(KeyframeAction::AskSender) => session.request_keyframe(),
        _ => None,
    }
}
