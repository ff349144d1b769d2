//! One RTP session of a SIP leg (one `m=` stream): SRTP on the way in and
//! out, symmetric RTP latching, RTCP demultiplexing (rtcp-mux), receive
//! statistics (RFC 3550 A.3 and A.8) and periodic SR/RR with SDES CNAME.
//!
//! Owns the transport-facing side of a stream; it does not decide what
//! happens to the media (that is the bridge's job) and never touches a
//! socket: datagrams and time come in, datagrams and destinations go out.

use super::rtcp::{self, Packet, ReportBlock, SenderInfo};
use super::rtp::{self, RtpHeader, SeqTracker};
use super::srtp::{Context, MasterKey};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RTCP report interval (RFC 3550's 5 s minimum; randomised 0.5x-1.5x).
const RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// How a session is set up, from the negotiated SDP.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where the remote asked for RTP (None: learn it from the first packet).
    pub remote_rtp: Option<SocketAddr>,
    /// Where the remote asked for RTCP.
    pub remote_rtcp: Option<SocketAddr>,
    /// RTP and RTCP share one port.
    pub rtcp_mux: bool,
    /// SDES keys: the remote's (to unprotect) and ours (to protect).
    pub srtp: Option<(MasterKey, MasterKey)>,
    /// RTP clock rate of the stream (for jitter in timestamp units).
    pub clock_rate: u32,
    /// Our RTCP CNAME.
    pub cname: String,
}

/// What a received datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// An RTP packet, now plain (in the caller's buffer).
    Rtp,
    /// RTCP handled here; feedback for the media path is returned.
    Rtcp(Vec<Feedback>),
    /// Dropped (the reason is counted in [`SessionStats`]).
    Dropped,
}

/// RTCP feedback the media path must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Picture loss indication for `media` SSRC.
    Pli {
        /// Media source the request is about.
        media: u32,
    },
    /// Full intra request for `target` SSRC.
    Fir {
        /// Media source the request is about.
        target: u32,
    },
    /// The remote source left.
    Bye,
}

impl Feedback {
    /// A keyframe request (PLI or FIR).
    pub fn asks_keyframe(&self) -> bool {
        matches!(self, Feedback::Pli { .. } | Feedback::Fir { .. })
    }
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// RTP packets accepted.
    pub rtp_in: u64,
    /// RTP packets sent.
    pub rtp_out: u64,
    /// RTCP compounds accepted.
    pub rtcp_in: u64,
    /// RTCP compounds sent.
    pub rtcp_out: u64,
    /// Datagrams that failed SRTP/SRTCP authentication or replay checks.
    pub auth_failures: u64,
    /// Datagrams that are neither RTP nor RTCP.
    pub malformed: u64,
    /// Datagrams from a source other than the latched one.
    pub foreign: u64,
    /// Packets lost upstream (RFC 3550 cumulative).
    pub lost: i64,
    /// Interarrival jitter, in RTP timestamp units.
    pub jitter: u32,
}

/// Receive state for the remote source (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone)]
struct Source {
    ssrc: u32,
    seq: SeqTracker,
    base: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Last transit time (arrival - RTP timestamp), in clock units.
    transit: Option<i64>,
    /// Jitter estimate scaled by 16 (A.8's integer form).
    jitter16: u64,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

/// The RTP session of one stream.
#[derive(Debug)]
pub struct RtpSession {
    cfg: SessionConfig,
    inbound: Option<Context>,
    outbound: Option<Context>,
    /// The source address RTP is latched to (symmetric RTP).
    latched: Option<SocketAddr>,
    /// The source address RTCP is latched to (without rtcp-mux).
    latched_rtcp: Option<SocketAddr>,
    source: Option<Source>,
    /// Our SSRC as last sent, packets, octets, and the last timestamp and when.
    sent: Option<(u32, u32, u32, u32, Instant)>,
    /// Our SSRC in receiver reports before we send anything.
    receiver_ssrc: u32,
    /// FIR command sequence number.
    fir_seq: u8,
    epoch: Instant,
    next_report: Option<Instant>,
    /// Counters.
    pub stats: SessionStats,
}

/// A direction's SRTP context for key `new` (None: plain RTP), or `None`
/// when the key is `old` and the current context stays.
fn context_for(
    new: Option<&MasterKey>,
    old: Option<&MasterKey>,
) -> Result<Option<Option<Context>>, super::srtp::SrtpError> {
    if new == old {
        return Ok(None);
    }
    new.map(Context::new).transpose().map(Some)
}

fn randomised(interval: Duration) -> Duration {
    interval.mul_f64(0.5 + rand::random::<f64>())
}

impl RtpSession {
    /// A session; fails only when an SRTP key cannot make a context.
    pub fn new(now: Instant, mut cfg: SessionConfig) -> Result<Self, super::srtp::SrtpError> {
        let srtp = cfg.srtp.take();
        let mut session = Self {
            cfg,
            inbound: None,
            outbound: None,
            latched: None,
            latched_rtcp: None,
            source: None,
            sent: None,
            receiver_ssrc: rand::random(),
            fir_seq: 0,
            epoch: now,
            // The first report goes out after half an interval (RFC 3550 6.2).
            next_report: Some(now + randomised(RTCP_INTERVAL / 2)),
            stats: SessionStats::default(),
        };
        session.rekey(srtp)?;
        Ok(session)
    }

    /// Where RTP goes: the latched source, else the signalled address.
    pub fn rtp_destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.cfg.remote_rtp)
    }

    /// Where RTCP goes.
    pub fn rtcp_destination(&self) -> Option<SocketAddr> {
        if self.cfg.rtcp_mux {
            return self.rtp_destination();
        }
        self.latched_rtcp.or(self.cfg.remote_rtcp)
    }

    /// The remote source's SSRC, once media arrived.
    pub fn remote_ssrc(&self) -> Option<u32> {
        self.source.as_ref().map(|s| s.ssrc)
    }

    /// Forgets the latched addresses (after a re-INVITE moved the remote).
    pub fn relatch(&mut self, remote_rtp: Option<SocketAddr>, remote_rtcp: Option<SocketAddr>) {
        self.cfg.remote_rtp = remote_rtp;
        self.cfg.remote_rtcp = remote_rtcp;
        self.latched = None;
        self.latched_rtcp = None;
    }

    /// Takes the SRTP keys (remote's, ours) a re-offer agreed; `None` for
    /// plain RTP. A direction whose key did not change keeps its context:
    /// a new one would restart its SRTP and SRTCP indices under the same
    /// key (keystream reuse, and replays the peer drops). Fails, keeping
    /// the old contexts, when a key cannot make one.
    pub fn rekey(
        &mut self,
        srtp: Option<(MasterKey, MasterKey)>,
    ) -> Result<(), super::srtp::SrtpError> {
        let old = self.cfg.srtp.as_ref();
        let new = srtp.as_ref();
        let inbound = context_for(new.map(|k| &k.0), old.map(|k| &k.0))?;
        let outbound = context_for(new.map(|k| &k.1), old.map(|k| &k.1))?;
        if let Some(c) = inbound {
            self.inbound = c;
        }
        if let Some(c) = outbound {
            self.outbound = c;
        }
        self.cfg.srtp = srtp;
        Ok(())
    }

    /// A datagram on the RTP port. With rtcp-mux it may be RTCP. The
    /// buffer is unprotected in place.
    pub fn on_rtp_port(&mut self, now: Instant, from: SocketAddr, buf: &mut Vec<u8>) -> Inbound {
        if rtp::is_rtcp(buf) {
            if !self.cfg.rtcp_mux {
                self.stats.malformed += 1;
                return Inbound::Dropped;
            }
            return self.on_rtcp(now, from, buf, false);
        }
        if self.latched.is_some_and(|l| l != from) {
            self.stats.foreign += 1;
            return Inbound::Dropped;
        }
        if let Some(ctx) = self.inbound.as_mut()
            && ctx.unprotect_rtp(buf).is_err()
        {
            self.stats.auth_failures += 1;
            return Inbound::Dropped;
        }
        let Ok(h) = RtpHeader::parse(buf) else {
            self.stats.malformed += 1;
            return Inbound::Dropped;
        };
        // Symmetric RTP: the first packet that authenticates fixes the source.
        if self.latched.is_none() {
            tracing::debug!(%from, "RTP latched");
            self.latched = Some(from);
        }
        self.receive(now, &h);
        self.stats.rtp_in += 1;
        Inbound::Rtp
    }

    /// A datagram on the separate RTCP port (no rtcp-mux).
    pub fn on_rtcp_port(&mut self, now: Instant, from: SocketAddr, buf: &mut Vec<u8>) -> Inbound {
        self.on_rtcp(now, from, buf, true)
    }

    fn on_rtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut Vec<u8>,
        own_port: bool,
    ) -> Inbound {
        let latched = if own_port {
            self.latched_rtcp
        } else {
            self.latched
        };
        if latched.is_some_and(|l| l != from) {
            self.stats.foreign += 1;
            return Inbound::Dropped;
        }
        if let Some(ctx) = self.inbound.as_mut()
            && ctx.unprotect_rtcp(buf).is_err()
        {
            self.stats.auth_failures += 1;
            return Inbound::Dropped;
        }
        let mut feedback = Vec::new();
        let mut any = false;
        for p in rtcp::packets(buf) {
            let Ok(p) = p else { break };
            any = true;
            match p {
                Packet::SenderReport { ssrc, info, .. } => {
                    if let Some(s) = self.source.as_mut().filter(|s| s.ssrc == ssrc) {
                        s.last_sr = Some(((info.ntp >> 16) as u32, now));
                    }
                }
                Packet::Pli { media, .. } => feedback.push(Feedback::Pli { media }),
                Packet::Fir { target, .. } => feedback.push(Feedback::Fir { target }),
                Packet::Bye { .. } => feedback.push(Feedback::Bye),
                _ => {}
            }
        }
        if !any {
            self.stats.malformed += 1;
            return Inbound::Dropped;
        }
        if own_port && self.latched_rtcp.is_none() {
            self.latched_rtcp = Some(from);
        }
        self.stats.rtcp_in += 1;
        Inbound::Rtcp(feedback)
    }

    fn receive(&mut self, now: Instant, h: &RtpHeader) {
        let clock = u64::from(self.cfg.clock_rate);
        let arrival = (now.saturating_duration_since(self.epoch).as_micros() as u64 * clock
            / 1_000_000) as i64;
        if self.source.as_ref().is_none_or(|s| s.ssrc != h.ssrc) {
            // A new source (or the first): statistics restart.
            let mut seq = SeqTracker::default();
            seq.accept(seq.estimate(h.sequence));
            self.source = Some(Source {
                ssrc: h.ssrc,
                seq,
                base: u64::from(h.sequence),
                received: 0,
                expected_prior: 0,
                received_prior: 0,
                transit: None,
                jitter16: 0,
                last_sr: None,
            });
        }
        let Some(s) = self.source.as_mut() else {
            return;
        };
        let index = s.seq.estimate(h.sequence);
        s.seq.accept(index);
        s.received += 1;
        let transit = arrival - i64::from(h.timestamp);
        if let Some(prev) = s.transit {
            // Wrapping difference of 32-bit timestamps.
            let d = i64::from((transit - prev) as i32).unsigned_abs();
            s.jitter16 = s.jitter16 + d - ((s.jitter16 + 8) >> 4);
        }
        s.transit = Some(transit);
        let expected = s.seq.max().map_or(0, |m| m + 1 - s.base);
        self.stats.lost = expected as i64 - s.received as i64;
        self.stats.jitter = (s.jitter16 >> 4) as u32;
    }

    /// Protects an outgoing RTP packet in place and returns where it goes
    /// (None: no destination known yet, or protection failed).
    pub fn send_rtp(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let dest = self.rtp_destination()?;
        let h = RtpHeader::parse(buf).ok()?;
        let payload = h.payload(buf).len() as u32;
        let (packets, octets) = match self.sent {
            Some((ssrc, p, o, ..)) if ssrc == h.ssrc => (p, o),
            _ => (0, 0),
        };
        if let Some(ctx) = self.outbound.as_mut() {
            ctx.protect_rtp(buf).ok()?;
        }
        self.sent = Some((
            h.ssrc,
            packets.wrapping_add(1),
            octets.wrapping_add(payload),
            h.timestamp,
            now,
        ));
        self.stats.rtp_out += 1;
        Some(dest)
    }

    /// When [`Self::poll_rtcp`] next has something.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.next_report
    }

    /// A compound report when one is due: SR when we have sent media since
    /// (else RR), a report block on the remote source, SDES CNAME. `ntp` is
    /// the wall clock in NTP format (seconds since 1900 << 32 | fraction).
    pub fn poll_rtcp(&mut self, now: Instant, ntp: u64) -> Option<(SocketAddr, Vec<u8>)> {
        let due = self.next_report?;
        if now < due {
            return None;
        }
        self.next_report = Some(now + randomised(RTCP_INTERVAL));
        let dest = self.rtcp_destination()?;
        let block = self.report_block(now);
        let mut out = Vec::with_capacity(128);
        let ssrc = match self.sent {
            Some((ssrc, packets, octets, ts, at)) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let info = SenderInfo {
                    ntp,
                    rtp_timestamp: ts
                        .wrapping_add((elapsed * f64::from(self.cfg.clock_rate)) as u32),
                    packets,
                    octets,
                };
                rtcp::write_sr(&mut out, ssrc, &info, block.as_slice());
                ssrc
            }
            None => {
                // Not sending (yet): a receiver report under our own SSRC.
                rtcp::write_rr(&mut out, self.receiver_ssrc, block.as_slice());
                self.receiver_ssrc
            }
        };
        rtcp::write_sdes_cname(&mut out, ssrc, &self.cfg.cname);
        if let Some(ctx) = self.outbound.as_mut() {
            ctx.protect_rtcp(&mut out).ok()?;
        }
        self.stats.rtcp_out += 1;
        Some((dest, out))
    }

    /// RTCP asking the remote for a keyframe of its stream: PLI (RFC 4585)
    /// and FIR (RFC 5104) together, as peers honour one or the other.
    pub fn request_keyframe(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let media = self.remote_ssrc()?;
        let sender = self.sent.map_or(self.receiver_ssrc, |s| s.0);
        let dest = self.rtcp_destination()?;
        let mut out = Vec::with_capacity(64);
        rtcp::write_rr(&mut out, sender, &[]);
        rtcp::write_pli(&mut out, sender, media);
        self.fir_seq = self.fir_seq.wrapping_add(1);
        rtcp::write_fir(&mut out, sender, media, self.fir_seq);
        if let Some(ctx) = self.outbound.as_mut() {
            ctx.protect_rtcp(&mut out).ok()?;
        }
        self.stats.rtcp_out += 1;
        Some((dest, out))
    }

    fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let s = self.source.as_mut()?;
        let max = s.seq.max()?;
        let expected = max + 1 - s.base;
        let expected_interval = expected - s.expected_prior;
        let received_interval = s.received - s.received_prior;
        s.expected_prior = expected;
        s.received_prior = s.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        let (last_sr, delay) = s.last_sr.map_or((0, 0), |(mid, at)| {
            let d = now.saturating_duration_since(at).as_secs_f64() * 65536.0;
            (mid, d as u32)
        });
        let cumulative = (expected as i64 - s.received as i64).clamp(-0x80_0000, 0x7f_ffff);
        Some(ReportBlock {
            ssrc: s.ssrc,
            fraction_lost,
            cumulative_lost: cumulative as i32,
            highest_seq: max as u32,
            jitter: (s.jitter16 >> 4) as u32,
            last_sr,
            delay_since_last_sr: delay,
        })
    }
}

/// NTP time (RFC 5905 format) for a Unix time given as a duration.
pub fn ntp_time(since_unix: Duration) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let secs = since_unix.as_secs() + UNIX_TO_NTP;
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::srtp::Suite;

    fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut out = Vec::new();
        rtp::write(
            &mut out,
            &RtpHeader::new(8, seq, ts, ssrc, false),
            &[0xd5; 160],
        );
        out
    }

    fn cfg() -> SessionConfig {
        SessionConfig {
            remote_rtp: Some("127.0.0.1:6000".parse().unwrap()),
            remote_rtcp: Some("127.0.0.1:6001".parse().unwrap()),
            rtcp_mux: false,
            srtp: None,
            clock_rate: 8000,
            cname: "causeway".into(),
        }
    }

    #[test]
    fn latches_on_the_first_source_and_drops_others() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(t0, cfg()).unwrap();
        assert_eq!(s.rtp_destination(), Some("127.0.0.1:6000".parse().unwrap()));
        // Behind a NAT the packets come from elsewhere: that wins.
        let nat: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        assert_eq!(s.on_rtp_port(t0, nat, &mut packet(1, 0, 7)), Inbound::Rtp);
        assert_eq!(s.rtp_destination(), Some(nat));
        let other: SocketAddr = "192.0.2.8:40000".parse().unwrap();
        assert_eq!(
            s.on_rtp_port(t0, other, &mut packet(2, 160, 7)),
            Inbound::Dropped
        );
        assert_eq!((s.stats.rtp_in, s.stats.foreign), (1, 1));
        s.relatch(None, None);
        assert_eq!(
            s.on_rtp_port(t0, other, &mut packet(3, 320, 7)),
            Inbound::Rtp
        );
        assert_eq!(s.rtp_destination(), Some(other));
    }

    #[test]
    fn srtp_latches_only_on_authenticated_packets() {
        let t0 = Instant::now();
        let (theirs, ours) = (
            MasterKey::generate(Suite::AesCm128HmacSha1_80),
            MasterKey::generate(Suite::AesCm128HmacSha1_80),
        );
        let mut c = cfg();
        c.srtp = Some((theirs.clone(), ours.clone()));
        c.rtcp_mux = true;
        let mut s = RtpSession::new(t0, c).unwrap();
        let attacker: SocketAddr = "192.0.2.66:1".parse().unwrap();
        let mut forged = packet(1, 0, 7);
        forged.extend_from_slice(&[0; 10]);
        assert_eq!(s.on_rtp_port(t0, attacker, &mut forged), Inbound::Dropped);
        assert_eq!(s.stats.auth_failures, 1);
        let mut remote = Context::new(&theirs).unwrap();
        let mut p = packet(1, 0, 7);
        remote.protect_rtp(&mut p).unwrap();
        let peer: SocketAddr = "192.0.2.5:5000".parse().unwrap();
        assert_eq!(s.on_rtp_port(t0, peer, &mut p), Inbound::Rtp);
        assert_eq!(p, packet(1, 0, 7), "unprotected in place");
        assert_eq!(s.rtp_destination(), Some(peer));
        // What we send, the remote can unprotect with our key.
        let mut out = packet(100, 0, 99);
        assert_eq!(s.send_rtp(t0, &mut out), Some(peer));
        let mut remote_rx = Context::new(&ours).unwrap();
        remote_rx.unprotect_rtp(&mut out).unwrap();
        assert_eq!(out, packet(100, 0, 99));
        // Muxed SRTCP reports go to the latched RTP address.
        let (dest, mut sr) = s.poll_rtcp(t0 + Duration::from_secs(4), 0).unwrap();
        assert_eq!(dest, peer);
        remote_rx.unprotect_rtcp(&mut sr).unwrap();
        assert!(matches!(
            rtcp::packets(&sr).next(),
            Some(Ok(Packet::SenderReport { ssrc: 99, .. }))
        ));
    }

    #[test]
    fn new_keys_from_a_re_offer_replace_the_old_ones() {
        let t0 = Instant::now();
        let key = || MasterKey::generate(Suite::AesCm128HmacSha1_80);
        let (old, ours) = (key(), key());
        let mut c = cfg();
        c.srtp = Some((old.clone(), ours));
        let mut s = RtpSession::new(t0, c).unwrap();
        let (new, ours) = (key(), key());
        s.rekey(Some((new.clone(), ours.clone()))).unwrap();
        let peer: SocketAddr = "192.0.2.5:5000".parse().unwrap();
        // The old key no longer authenticates; the new one does.
        let mut p = packet(1, 0, 7);
        Context::new(&old).unwrap().protect_rtp(&mut p).unwrap();
        assert_eq!(s.on_rtp_port(t0, peer, &mut p), Inbound::Dropped);
        let mut p = packet(2, 160, 7);
        Context::new(&new).unwrap().protect_rtp(&mut p).unwrap();
        assert_eq!(s.on_rtp_port(t0, peer, &mut p), Inbound::Rtp);
        // We protect with our new key; plain RTP again without keys.
        let mut out = packet(100, 0, 99);
        s.send_rtp(t0, &mut out).unwrap();
        Context::new(&ours)
            .unwrap()
            .unprotect_rtp(&mut out)
            .unwrap();
        // The same keys again keep the contexts: a replay stays a replay.
        s.rekey(Some((new.clone(), ours.clone()))).unwrap();
        let mut p = packet(2, 160, 7);
        Context::new(&new).unwrap().protect_rtp(&mut p).unwrap();
        assert_eq!(s.on_rtp_port(t0, peer, &mut p), Inbound::Dropped);
        s.rekey(None).unwrap();
        let mut out = packet(101, 160, 99);
        s.send_rtp(t0, &mut out).unwrap();
        assert_eq!(out, packet(101, 160, 99));
    }

    #[test]
    fn reports_loss_jitter_and_sender_info() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(t0, cfg()).unwrap();
        let from: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        // 50 packets at 20 ms, every 10th lost, arrival alternating +-2 ms.
        for i in 0..50u16 {
            if i % 10 == 5 {
                continue;
            }
            let skew = if i % 2 == 0 { 2 } else { 0 };
            let at = t0 + Duration::from_millis(u64::from(i) * 20 + skew);
            s.on_rtp_port(
                at,
                from,
                &mut packet(65530u16.wrapping_add(i), u32::from(i) * 160, 42),
            );
        }
        assert_eq!(s.stats.lost, 5);
        // 2 ms of alternating skew at 8 kHz settles near 16 units.
        assert!(
            (10..=16).contains(&s.stats.jitter),
            "jitter {}",
            s.stats.jitter
        );
        for i in 0..10u16 {
            s.send_rtp(t0, &mut packet(i, u32::from(i) * 160, 77))
                .unwrap();
        }
        let now = t0 + Duration::from_secs(4);
        let (dest, report) = s.poll_rtcp(now, ntp_time(Duration::from_secs(1))).unwrap();
        assert_eq!(dest, "127.0.0.1:6001".parse().unwrap());
        let mut packets = rtcp::packets(&report);
        match packets.next() {
            Some(Ok(Packet::SenderReport {
                ssrc,
                info,
                mut reports,
            })) => {
                assert_eq!(ssrc, 77);
                assert_eq!((info.packets, info.octets), (10, 1600));
                assert_eq!(info.ntp >> 32, 2_208_988_801);
                let block = reports.next().unwrap();
                assert_eq!(block.ssrc, 42);
                assert_eq!(block.cumulative_lost, 5);
                assert_eq!(block.fraction_lost, (5 * 256 / 50) as u8);
                // Extended highest sequence wrapped once.
                assert_eq!(
                    block.highest_seq,
                    (1 << 16) | u32::from(65530u16.wrapping_add(49))
                );
            }
            other => panic!("expected SR, got {other:?}"),
        }
        assert!(matches!(
            packets.next(),
            Some(Ok(Packet::Other {
                packet_type: 202,
                ..
            }))
        ));
        // Not due again for at least 2.5 s.
        assert!(s.poll_rtcp(now + Duration::from_secs(2), 0).is_none());
        assert!(s.poll_rtcp(now + Duration::from_secs(8), 0).is_some());
    }

    #[test]
    fn keyframe_requests_carry_pli_and_fir() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(t0, cfg()).unwrap();
        assert!(s.request_keyframe().is_none(), "no source yet");
        s.on_rtp_port(t0, "127.0.0.1:6000".parse().unwrap(), &mut packet(1, 0, 2));
        s.send_rtp(t0, &mut packet(1, 0, 1)).unwrap();
        let (dest, p) = s.request_keyframe().unwrap();
        assert_eq!(dest, "127.0.0.1:6001".parse().unwrap());
        let got: Vec<_> = rtcp::packets(&p).collect::<Result<_, _>>().unwrap();
        assert!(got.contains(&Packet::Pli {
            sender: 1,
            media: 2
        }));
        assert!(got.contains(&Packet::Fir {
            sender: 1,
            target: 2,
            seq: 1
        }));
    }

    #[test]
    fn a_receive_only_session_keeps_sending_receiver_reports() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(t0, cfg()).unwrap();
        let from: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        s.on_rtp_port(t0, from, &mut packet(1, 0, 42));
        for k in 1..4u64 {
            let (_, report) = s.poll_rtcp(t0 + Duration::from_secs(8 * k), 0).unwrap();
            assert!(matches!(
                rtcp::packets(&report).next(),
                Some(Ok(Packet::ReceiverReport { .. }))
            ));
        }
    }

    #[test]
    fn rtcp_feedback_reaches_the_media_path() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(t0, cfg()).unwrap();
        let mut fb = Vec::new();
        rtcp::write_rr(&mut fb, 5, &[]);
        rtcp::write_pli(&mut fb, 5, 42);
        rtcp::write_fir(&mut fb, 5, 42, 1);
        rtcp::write_bye(&mut fb, 5);
        let from: SocketAddr = "127.0.0.1:6001".parse().unwrap();
        assert_eq!(
            s.on_rtcp_port(t0, from, &mut fb),
            Inbound::Rtcp(vec![
                Feedback::Pli { media: 42 },
                Feedback::Fir { target: 42 },
                Feedback::Bye
            ])
        );
        // RTCP on the RTP port without rtcp-mux is refused, garbage too.
        assert_eq!(s.on_rtp_port(t0, from, &mut fb.clone()), Inbound::Dropped);
        assert_eq!(
            s.on_rtcp_port(t0, from, &mut vec![0x80, 200, 0]),
            Inbound::Dropped
        );
        assert_eq!(s.stats.malformed, 2);
    }
}
