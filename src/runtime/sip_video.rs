//! Video between two SIP endpoints, anchored here: each side's video RTP
//! socket and one relay per direction, and keyframe requests passed across.
//!
//! The callee was offered the caller's own formats and our answer to the
//! caller took the one the callee picked ([`crate::b2bua::caller_video_formats`]),
//! so both sides send the same codec: the video is relayed untouched
//! (payload types mapped), never transcoded. A side that wants a keyframe
//! (its RTCP PLI or FIR, or a SIP INFO `picture_fast_update`) has the other
//! asked the way it takes (RTCP PLI + FIR where its SDP had `a=rtcp-fb`,
//! else SIP INFO); so does each side's first packet (a keyframe sent
//! before the relay started is lost, and not every endpoint asks again).
//!
//! Owns the two video sockets' use within the call's task; what the SDP
//! agreed comes from [`crate::sdp`], the relay from [`crate::media`].

use super::rtp_end::{Got, RtpEnd};
use super::video::{KEYFRAME_INTERVAL, VideoEnd, relay_direction};
use crate::b2bua::Party;
use crate::cdr::SipVideoPlan;
use crate::media::bridge::{Direction, DirectionStats};
use crate::media::keyframe::{KeyframeAction, KeyframeRequests, VideoPath};
use crate::sdp::Negotiated;
use std::time::Instant;

/// The running video between a SIP caller and a SIP callee.
pub(super) struct SipVideo {
    /// Each side's socket and session, [`Party`] order.
    ends: [RtpEnd; 2],
    /// Toward each side ([`Party`] order), from the other.
    toward: [Direction; 2],
    /// Requests of each side ([`Party`] order), made of the other.
    asks: [KeyframeRequests; 2],
    /// Each side sent a packet.
    heard: [bool; 2],
    /// Packets ready for each side, flushed once per wakeup.
    out: [Vec<Vec<u8>>; 2],
    codec: String,
}

impl SipVideo {
    /// The relay between the caller's video (as our answer agreed, on
    /// `caller`) and the callee's (as its answer agreed, on `callee`).
    /// Fails when the two do not share a format we relay.
    pub fn new(
        caller: (RtpEnd, &Negotiated),
        callee: (RtpEnd, &Negotiated),
    ) -> Result<Self, String> {
        let end = |n: &Negotiated| {
            VideoEnd::of_sip(&n.format).ok_or("a SIP side's video codec cannot be bridged")
        };
        let (a, b) = (end(caller.1)?, end(callee.1)?);
        if !a.same(b) {
            return Err(format!(
                "the SIP sides' video formats differ ({} and {})",
                a.name(),
                b.name()
            ));
        }
        // A side's requests are made of the other, as that one takes them.
        let asks = |sender: &Negotiated| {
            KeyframeRequests::new(VideoPath::relayed(sender.keyframe_fb), KEYFRAME_INTERVAL)
        };
        Ok(Self {
            asks: [asks(callee.1), asks(caller.1)],
            ends: [caller.0, callee.0],
            // The callee may send on the payload type we offered it (the
            // caller's) rather than the one it answered (RFC 3264 only
            // says it should be the same).
            toward: [
                relay_direction(&[b.pt, a.pt], a.pt),
                relay_direction(&[a.pt], b.pt),
            ],
            heard: [false; 2],
            out: [Vec::new(), Vec::new()],
            codec: a.name(),
        })
    }

    /// What runs, for the call's record.
    pub fn plan(&self) -> SipVideoPlan {
        SipVideoPlan {
            codec: self.codec.clone(),
            video: "passthrough".into(),
        }
    }

    /// When either side's session next has something to do (RTCP).
    pub fn next_timeout(&self) -> Option<Instant> {
        self.ends
            .iter()
            .filter_map(|e| e.session.next_timeout())
            .min()
    }

    /// Waits for a datagram from either side.
    pub async fn next(&mut self) -> (Party, Got) {
        let [caller, callee] = &mut self.ends;
        tokio::select! {
            got = caller.recv() => (Party::Caller, got),
            got = callee.recv() => (Party::Callee, got),
        }
    }

    /// Acts on what [`Self::next`] returned: RTP is relayed to the other
    /// side (sent at [`Self::flush`]); a keyframe request (RTCP), or a
    /// side's first packet, asks the other side (or this one) for a
    /// keyframe. Returns the side to ask by SIP INFO, if any.
    pub async fn handle(&mut self, (from, got): (Party, Got)) -> Option<Party> {
        // When the datagram arrived (no clock read per packet).
        let now = self.ends[from.index()].heard;
        match got {
            Got::Rtp => {
                let to = from.other().index();
                let (end, out) = (&self.ends[from.index()], &mut self.out[to]);
                self.toward[to].on_packet(now, &end.buf, out);
                if !std::mem::replace(&mut self.heard[from.index()], true) {
                    // The receiving side starts from a keyframe.
                    return self.asked(now, from.other()).await;
                }
                None
            }
            Got::KeyframeAsked => self.asked(now, from).await,
            Got::Nothing => None,
        }
    }

    /// Side `by` wants a keyframe of the video it receives: the other side
    /// is asked over RTCP (sent here), or the side to ask by SIP INFO is
    /// returned. Rate-limited per side.
    pub async fn asked(&mut self, now: Instant, by: Party) -> Option<Party> {
        let sender = by.other();
        match self.asks[by.index()].on_request(now)? {
            KeyframeAction::SendSipInfo => Some(sender),
            _ => {
                let end = &mut self.ends[sender.index()];
                if let Some(rtcp) = end.session.request_keyframe() {
                    end.send_rtcp(rtcp).await;
                }
                None
            }
        }
    }

    /// Sends what was relayed to each side, and any RTCP report due.
    pub async fn flush(&mut self, now: Instant) {
        for (end, out) in self.ends.iter_mut().zip(&mut self.out) {
            end.flush(now, out).await;
        }
    }

    /// Counters toward the callee and toward the caller.
    pub fn stats(&self) -> (DirectionStats, DirectionStats) {
        (
            self.toward[Party::Callee.index()].stats,
            self.toward[Party::Caller.index()].stats,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::media::Ports;
    use crate::sdp::{Direction as SdpDirection, Format, MediaKind};
    use causeway_codecs::CodecKey;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// H.264 in packetization mode 1 on `pt`, sent to `remote`; keyframes
    /// asked by RTCP when `fb`.
    fn h264(pt: u8, remote: &UdpSocket, fb: bool) -> Negotiated {
        Negotiated {
            kind: MediaKind::Video,
            format: Format {
                pt,
                codec: Some(CodecKey {
                    name: "H264".into(),
                    clock_rate: 90000,
                    channels: 1,
                }),
                fmtp: Some("packetization-mode=1".into()),
            },
            dtmf: None,
            direction: SdpDirection::SendRecv,
            rtcp_mux: true,
            remote_rtp: Some(remote.local_addr().unwrap()),
            remote_rtcp: None,
            srtp: None,
            ptime: None,
            keyframe_fb: fb,
        }
    }

    fn socket() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    /// Our end toward a side, and its port.
    fn end(n: &Negotiated) -> (RtpEnd, std::net::SocketAddr) {
        let rtp = socket();
        let at = rtp.local_addr().unwrap();
        (
            RtpEnd::open(Ports { rtp, rtcp: None }, n, "c1").unwrap(),
            at,
        )
    }

    fn packet(pt: u8, seq: u16, ssrc: u8) -> Vec<u8> {
        let [s0, s1] = seq.to_be_bytes();
        vec![0x80, pt, s0, s1, 0, 0, 0, 1, 0, 0, 0, ssrc, 0x65, 1, 2]
    }

    /// The RTCP packet types of a compound packet.
    fn rtcp_types(p: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        let mut at = 0;
        while at + 4 <= p.len() {
            types.push(p[at + 1]);
            at += (usize::from(u16::from_be_bytes([p[at + 2], p[at + 3]])) + 1) * 4;
        }
        types
    }

    #[tokio::test]
    async fn video_is_relayed_both_ways_and_keyframes_are_asked_as_each_side_takes_them() {
        // The caller takes RTCP feedback, the callee only SIP INFO.
        let (caller, callee) = (socket(), socket());
        let (nc, ne) = (h264(97, &caller, true), h264(98, &callee, false));
        let ((caller_end, to_caller_end), (callee_end, to_callee_end)) = (end(&nc), end(&ne));
        let mut v = SipVideo::new((caller_end, &nc), (callee_end, &ne)).unwrap();
        assert_eq!(v.plan().codec, "H264/90000");
        let mut buf = [0u8; 1500];

        // The caller's first packet reaches the callee on its payload type,
        // and the caller is asked for a keyframe by RTCP (PLI + FIR).
        caller.send_to(&packet(97, 1, 1), to_caller_end).unwrap();
        let got = v.next().await;
        assert_eq!(got, (Party::Caller, Got::Rtp));
        let t0 = Instant::now();
        assert_eq!(v.handle(got).await, None);
        v.flush(t0).await;
        let n = callee.recv(&mut buf).unwrap();
        assert_eq!((buf[1] & 0x7f, &buf[12..n]), (98, &[0x65, 1, 2][..]));
        let n = caller.recv(&mut buf).unwrap();
        let types = rtcp_types(&buf[..n]);
        assert!(types.contains(&206) && types.contains(&201), "{types:?}");

        // The callee's first packet reaches the caller; the callee is to be
        // asked by SIP INFO. Its next packet asks nothing.
        callee.send_to(&packet(98, 1, 2), to_callee_end).unwrap();
        let got = v.next().await;
        assert_eq!(v.handle(got).await, Some(Party::Callee));
        callee.send_to(&packet(98, 2, 2), to_callee_end).unwrap();
        let got = v.next().await;
        assert_eq!(v.handle(got).await, None);
        v.flush(t0).await;
        // Both, in order (the relay numbers its own stream).
        let mut seqs = Vec::new();
        for _ in 0..2 {
            caller.recv(&mut buf).unwrap();
            assert_eq!(buf[1] & 0x7f, 97);
            seqs.push(u16::from_be_bytes([buf[2], buf[3]]));
        }
        assert_eq!(seqs[1], seqs[0].wrapping_add(1));

        // The caller asks by INFO again within 250 ms: one request only;
        // later, another INFO to the callee.
        assert_eq!(v.asked(t0, Party::Caller).await, None);
        let later = t0 + Duration::from_millis(300);
        assert_eq!(v.asked(later, Party::Caller).await, Some(Party::Callee));
        let (to_callee, to_caller) = v.stats();
        assert_eq!((to_callee.packets_out, to_caller.packets_out), (1, 2));
    }
}
