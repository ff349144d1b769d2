//! Media of bridged calls: the SIP side's RTP socket (bound before the
//! INVITE, so the offer can name it) and, once the SIP side answers, one
//! task per call that moves audio between that socket and the browser's
//! peer in the WebRTC task: SIP RTP -> [`RtpSession`] -> [`Direction`] ->
//! hub, and hub -> [`Direction`] -> [`RtpSession`] -> SIP RTP. Each
//! direction relays or transcodes on its own ([`audio_direction`]).
//!
//! Owns sockets, the task and its timers; what to relay or transcode is
//! decided by the sans-IO [`crate::media`] and [`crate::sdp`] code, and when
//! a call starts or ends by [`crate::b2bua`]. Video is not bridged yet.

use super::media::{MediaCalls, Ports, ntp_now, recv_opt, tokio_socket};
use super::webrtc::WebrtcHandle;
use crate::media::bridge::{AudioEnd, Direction, audio_direction};
use crate::media::session::{Inbound, RtpSession, SessionConfig};
use crate::sdp::Negotiated;
use crate::webrtc::{PeerFormat, PeerId, StreamKind};
use causeway_codecs::registry::AudioCodec;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long each digit from the client API plays.
const DIGIT_MS: u32 = 120;

/// A bridged call's media: sockets waiting for the answer, then a task.
enum Slot {
    Reserved {
        ports: Ports,
        browser: Vec<PeerFormat>,
    },
    Running {
        task: JoinHandle<()>,
        stop: tokio::sync::oneshot::Sender<()>,
        digits: mpsc::UnboundedSender<String>,
    },
}

/// The media of every bridged call.
#[derive(Default)]
pub struct Bridges {
    calls: HashMap<String, Slot>,
}

impl std::fmt::Debug for Bridges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridges")
            .field("calls", &self.calls.len())
            .finish()
    }
}

impl Bridges {
    /// Binds the SIP-side RTP port for a call (and RTCP above it, in case
    /// the answer declines rtcp-mux); returns the RTP port.
    pub fn reserve(
        &mut self,
        media: &mut MediaCalls,
        call: &str,
        ip: IpAddr,
        browser: Vec<PeerFormat>,
    ) -> std::io::Result<u16> {
        let ports = media.bind(ip, true)?;
        let port = ports.rtp.local_addr()?.port();
        self.calls
            .insert(call.to_string(), Slot::Reserved { ports, browser });
        Ok(port)
    }

    /// Starts moving media once the SIP side answered.
    pub fn start(
        &mut self,
        call: &str,
        peer: PeerId,
        sip: &Negotiated,
        webrtc: &WebrtcHandle,
    ) -> Result<(), String> {
        let Some(Slot::Reserved { ports, browser }) = self.calls.remove(call) else {
            return Err("no media reserved for the call".into());
        };
        let browser =
            crate::b2bua::browser_audio(&browser).ok_or("the browser has no audio codec")?;
        let sip_end = AudioEnd {
            pt: sip.format.pt,
            codec: sip
                .format
                .codec
                .as_ref()
                .and_then(AudioCodec::from_key)
                .ok_or("the SIP side's codec cannot be bridged")?,
            dtmf: sip.dtmf.as_ref().map(|f| f.pt),
        };
        let to_sip = audio_direction(browser, sip_end).map_err(|e| e.to_string())?;
        let to_browser = audio_direction(sip_end, browser).map_err(|e| e.to_string())?;
        tracing::info!(
            call,
            browser = ?browser.codec,
            sip = ?sip_end.codec,
            audio = if browser.codec == sip_end.codec { "passthrough" } else { "transcoded" },
            "bridging media"
        );
        let session = RtpSession::new(
            Instant::now(),
            SessionConfig {
                remote_rtp: sip.remote_rtp,
                remote_rtcp: sip.remote_rtcp,
                rtcp_mux: sip.rtcp_mux,
                srtp: None,
                clock_rate: sip_end.codec.key().clock_rate,
                cname: format!("causeway-{call}"),
            },
        )
        .map_err(|e| e.to_string())?;
        let rtp = tokio_socket(ports.rtp)?;
        let rtcp = match (sip.rtcp_mux, ports.rtcp) {
            (false, Some(s)) => Some(tokio_socket(s)?),
            _ => None,
        };
        let (sink, from_browser) = mpsc::channel(256);
        let (stop_tx, stop) = tokio::sync::oneshot::channel();
        let (digits_tx, digits) = mpsc::unbounded_channel();
        let webrtc = webrtc.clone();
        let call_id = call.to_string();
        let task = tokio::spawn(async move {
            webrtc.attach(peer, sink).await;
            let legs = Legs {
                rtp,
                rtcp,
                session,
                to_sip,
                to_browser,
                webrtc,
                peer,
            };
            legs.run(&call_id, from_browser, digits, stop).await;
        });
        self.calls.insert(
            call.to_string(),
            Slot::Running {
                task,
                stop: stop_tx,
                digits: digits_tx,
            },
        );
        Ok(())
    }

    /// Plays digits toward the SIP side as RFC 4733 events; false when the
    /// call has no media running.
    pub fn play_digits(&self, call: &str, digits: String) -> bool {
        match self.calls.get(call) {
            Some(Slot::Running { digits: tx, .. }) => tx.send(digits).is_ok(),
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

/// The running media of one call.
struct Legs {
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
    session: RtpSession,
    to_sip: Direction,
    to_browser: Direction,
    webrtc: WebrtcHandle,
    peer: PeerId,
}

impl Legs {
    async fn run(
        mut self,
        call: &str,
        mut from_browser: mpsc::Receiver<(StreamKind, Vec<u8>)>,
        mut digits: mpsc::UnboundedReceiver<String>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut packet = Vec::with_capacity(2048);
        let mut rpacket = Vec::with_capacity(2048);
        // Packets ready for each side, flushed once per wakeup.
        let (mut to_browser, mut to_sip) = (Vec::new(), Vec::new());
        loop {
            let due = [
                self.session.next_timeout(),
                self.to_sip.next_due(),
                self.to_sip.next_event_due(Instant::now()),
                self.to_browser.next_due(),
            ]
            .into_iter()
            .flatten()
            .min();
            packet.clear();
            rpacket.clear();
            tokio::select! {
                r = self.rtp.recv_buf_from(&mut packet) => {
                    let Ok((_, from)) = r else { continue };
                    let now = Instant::now();
                    if self.session.on_rtp_port(now, from, &mut packet) == Inbound::Rtp {
                        self.to_browser.on_packet(now, &packet, &mut to_browser);
                        // Recognised digits are not reported yet (SSE, SIP INFO).
                        self.to_browser.take_digits();
                    }
                }
                r = recv_opt(self.rtcp.as_ref(), &mut rpacket) => {
                    let Ok((_, from)) = r else { continue };
                    self.session.on_rtcp_port(Instant::now(), from, &mut rpacket);
                }
                _ = &mut stop => break,
                Some(d) = digits.recv() => {
                    if let Err(e) = self.to_sip.play_digits(&d, DIGIT_MS) {
                        tracing::info!(call, error = %e, "digits not sent");
                    }
                }
                m = from_browser.recv() => {
                    let Some((kind, p)) = m else { break };
                    if kind == StreamKind::Audio {
                        self.to_sip.on_packet(Instant::now(), &p, &mut to_sip);
                        self.to_sip.take_digits();
                    }
                }
                () = sleep_until(due) => {}
            }
            let now = Instant::now();
            self.to_browser.poll(now, &mut to_browser);
            for p in to_browser.drain(..) {
                self.webrtc.send_rtp(self.peer, StreamKind::Audio, p);
            }
            self.to_sip.poll(now, &mut to_sip);
            for mut p in to_sip.drain(..) {
                if let Some(dest) = self.session.send_rtp(now, &mut p) {
                    let _ = self.rtp.send_to(&p, dest).await;
                }
            }
            if let Some((dest, report)) = self.session.poll_rtcp(now, ntp_now()) {
                let _ = self
                    .rtcp
                    .as_ref()
                    .unwrap_or(&self.rtp)
                    .send_to(&report, dest)
                    .await;
            }
        }
        let (a, b) = (self.to_sip.stats, self.to_browser.stats);
        tracing::info!(
            call,
            to_sip_in = a.packets_in,
            to_sip_out = a.packets_out,
            to_sip_concealed = a.concealed,
            to_sip_dropped_pt = a.dropped_pt,
            to_sip_lost = a.lost,
            to_sip_late = a.late,
            to_sip_jitter_dropped = a.jitter_dropped,
            to_browser_in = b.packets_in,
            to_browser_out = b.packets_out,
            to_browser_concealed = b.concealed,
            to_browser_late = b.late,
            to_browser_jitter_dropped = b.jitter_dropped,
            sip_in = self.session.stats.rtp_in,
            sip_lost = self.session.stats.lost,
            "bridge media stopped"
        );
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
