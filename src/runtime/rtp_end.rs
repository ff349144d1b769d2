//! One SIP endpoint's media as a bridged call's task sees it: its RTP
//! (and RTCP) socket and [`RtpSession`] (keys, latching, reports), and
//! when a silent side counts as gone ([`Silence`]). Audio and video
//! sockets alike; the tasks in `bridge`, `relay`, `video` and `sip_video`
//! decide what to do with the packets.
//!
//! Owns the sockets' reads and writes; must not decide relaying or
//! transcoding.

use super::bridge::{MediaReport, Reports};
use super::media::{Ports, ntp_now, recv_opt, tokio_socket};
use crate::b2bua::Party;
use crate::media::session::{Feedback, Inbound, RtpSession, SessionConfig};
use crate::sdp::Negotiated;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// What one datagram on a SIP endpoint's sockets was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Got {
    /// An RTP packet, left in [`RtpEnd::buf`].
    Rtp,
    /// RTCP asking for a keyframe (PLI or FIR).
    KeyframeAsked,
    /// Nothing for the media path.
    Nothing,
}

/// One SIP endpoint's media: its RTP (and RTCP) socket and session.
pub(super) struct RtpEnd {
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
    pub session: RtpSession,
    /// Receive buffers for RTP and RTCP, reused.
    pub buf: Vec<u8>,
    rbuf: Vec<u8>,
    /// When its last RTP or RTCP came (or the media started).
    pub heard: Instant,
    /// Its silence was reported.
    silent: bool,
}

/// When a SIP side that sends nothing counts as gone: after the media
/// timeout, or the hold timeout while a side holds the call (a held phone
/// may rightly send nothing, RTCP included; its peer, answering
/// recvonly, too).
#[derive(Debug, Clone, Copy)]
pub struct Silence {
    active: Duration,
    held: Duration,
    /// Which sides (caller, callee) hold the call.
    holding: [bool; 2],
}

impl Silence {
    /// The media timeout `active`, and `held` on hold.
    pub fn new(active: Duration, held: Duration) -> Self {
        Self {
            active,
            held,
            holding: [false; 2],
        }
    }

    /// The timeout that applies now.
    pub(super) fn limit(&self) -> Duration {
        if self.on_hold() {
            self.held
        } else {
            self.active
        }
    }

    fn on_hold(&self) -> bool {
        self.holding.contains(&true)
    }

    /// Side `party` held the call (`held`) or took it off. True when that
    /// put the call on or off hold: each side's silence starts anew.
    pub(super) fn hold(&mut self, party: Party, held: bool) -> bool {
        let was = self.on_hold();
        self.holding[party.index()] = held;
        was != self.on_hold()
    }
}

impl RtpEnd {
    pub fn open(ports: Ports, n: &Negotiated, call: &str) -> Result<Self, String> {
        let session = RtpSession::new(
            Instant::now(),
            SessionConfig {
                remote_rtp: n.remote_rtp,
                remote_rtcp: n.remote_rtcp,
                rtcp_mux: n.rtcp_mux,
                // SDES keys when the side's profile is RTP/SAVP.
                srtp: n.srtp.as_ref().map(crate::sdp::Srtp::keys),
                clock_rate: n.format.codec.as_ref().map_or(8000, |c| c.clock_rate),
                cname: format!("causeway-{call}"),
            },
        )
        .map_err(|e| e.to_string())?;
        let rtp = tokio_socket(ports.rtp)?;
        let rtcp = match (n.rtcp_mux, ports.rtcp) {
            (false, Some(s)) => Some(tokio_socket(s)?),
            _ => None,
        };
        Ok(Self {
            rtp,
            rtcp,
            session,
            buf: Vec::with_capacity(2048),
            rbuf: Vec::with_capacity(2048),
            heard: Instant::now(),
            silent: false,
        })
    }

    /// When this side counts as gone if it stays silent (`None` once
    /// reported).
    pub(super) fn silent_at(&self, limit: Duration) -> Option<Instant> {
        (!self.silent).then(|| self.heard + limit)
    }

    /// Tells the signalling loop, once, that this side (`from`) has been
    /// silent for `limit`: the call is to be hung up.
    pub(super) fn report_silence(
        &mut self,
        now: Instant,
        limit: Duration,
        (call, from): (&str, Party),
        done: &Reports,
    ) {
        if self.silent_at(limit).is_some_and(|t| now >= t) {
            self.silent = true;
            tracing::info!(call, side = ?from, secs = limit.as_secs(), "no media from a SIP side");
            let _ = done.send(MediaReport::Silent {
                call: call.to_string(),
                from,
            });
        }
    }

    /// Waits for the next datagram on either socket; an RTP packet is left
    /// in `buf` (decrypted, checked), its arrival time in `heard`.
    pub async fn recv(&mut self) -> Got {
        self.buf.clear();
        self.rbuf.clear();
        let (now, inbound) = tokio::select! {
            r = self.rtp.recv_buf_from(&mut self.buf) => {
                let Ok((_, from)) = r else { return Got::Nothing };
                let now = Instant::now();
                (now, self.session.on_rtp_port(now, from, &mut self.buf))
            }
            r = recv_opt(self.rtcp.as_ref(), &mut self.rbuf) => {
                let Ok((_, from)) = r else { return Got::Nothing };
                let now = Instant::now();
                (now, self.session.on_rtcp_port(now, from, &mut self.rbuf))
            }
        };
        if inbound != Inbound::Dropped {
            self.heard = now;
        }
        match inbound {
            Inbound::Rtp => Got::Rtp,
            Inbound::Rtcp(fb) if fb.iter().any(Feedback::asks_keyframe) => Got::KeyframeAsked,
            _ => Got::Nothing,
        }
    }

    /// Sends RTCP (a keyframe request) on the RTCP socket, or the RTP one
    /// with rtcp-mux.
    pub async fn send_rtcp(&self, (dest, p): (std::net::SocketAddr, Vec<u8>)) {
        let _ = self
            .rtcp
            .as_ref()
            .unwrap_or(&self.rtp)
            .send_to(&p, dest)
            .await;
    }

    /// Sends `packets` (emptied) and any RTCP report due.
    pub(super) async fn flush(&mut self, now: Instant, packets: &mut Vec<Vec<u8>>) {
        for mut p in packets.drain(..) {
            if let Some(dest) = self.session.send_rtp(now, &mut p) {
                let _ = self.rtp.send_to(&p, dest).await;
            }
        }
        // The wall clock is read only when a report is due (this runs at
        // every wakeup of the call's task).
        if self.session.next_timeout().is_some_and(|t| now >= t)
            && let Some(report) = self.session.poll_rtcp(now, ntp_now())
        {
            self.send_rtcp(report).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hold_timeout_stands_while_either_side_holds_the_call() {
        let (active, held) = (Duration::from_secs(60), Duration::from_secs(3600));
        let mut s = Silence::new(active, held);
        assert_eq!(s.limit(), active);
        // The caller holds: the limit changes, silence starts anew.
        assert!(s.hold(Party::Caller, true));
        assert_eq!(s.limit(), held);
        // The callee holds too, then the caller resumes: still on hold.
        assert!(!s.hold(Party::Callee, true));
        assert!(!s.hold(Party::Caller, false));
        assert_eq!(s.limit(), held);
        // A repeated offer changes nothing.
        assert!(!s.hold(Party::Caller, false));
        // The callee resumes: off hold.
        assert!(s.hold(Party::Callee, false));
        assert_eq!(s.limit(), active);
    }
}
