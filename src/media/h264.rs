//! H.264 RTP payload format (RFC 6184): packetization modes 0 and 1.
//!
//! Owns splitting an Annex B access unit into RTP payloads (single NAL unit,
//! STAP-A aggregation of small NALs such as SPS/PPS, FU-A fragmentation) and
//! reassembling payloads into Annex B access units, with loss detection. It
//! must not decode video or know about SSRCs and sockets.
//!
//! Written here rather than on rtc-rtp 0.21: its depacketizer indexes past
//! the end of a STAP-A with an odd trailing byte (a panic on network input),
//! appends FU-A fragments without checking start bits or sequence gaps, and
//! its payloader silently drops SPS/PPS when their STAP-A exceeds the MTU and
//! has no packetization-mode=0.

pub use causeway_codecs::video::nal_units;

use super::{Assembly, DepacketizeError, Frame};

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const AUD: u8 = 9;
const FILLER: u8 = 12;
const IDR: u8 = 5;
const SPS: u8 = 7;

/// Four-byte Annex B start code written before every NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Packetization mode from SDP fmtp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Single NAL unit mode: one NAL per packet, nothing larger than the MTU.
    SingleNal,
    /// Non-interleaved: single NAL, STAP-A and FU-A.
    NonInterleaved,
}

/// Why an access unit could not be packetized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketizeError {
    /// Mode 0 and a NAL larger than the MTU: the encoder must cap slice size.
    NalTooLarge(usize),
    /// MTU too small to carry even an FU-A header and one byte.
    MtuTooSmall,
}

/// Splits Annex B access units into RTP payloads.
#[derive(Debug, Clone)]
pub struct Packetizer {
    mode: Mode,
    mtu: usize,
}

impl Packetizer {
    /// `mtu` is the largest RTP payload (not datagram) to produce.
    pub fn new(mode: Mode, mtu: usize) -> Self {
        Self { mode, mtu }
    }

    /// Appends the payloads of one access unit to `out`; the last one gets
    /// the RTP marker bit. AUD and filler NALs are dropped.
    pub fn packetize(
        &self,
        access_unit: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), PacketizeError> {
        if self.mtu < 3 {
            return Err(PacketizeError::MtuTooSmall);
        }
        let nals: Vec<&[u8]> = nal_units(access_unit)
            .filter(|n| !matches!(n[0] & 0x1f, AUD | FILLER))
            .collect();
        let mut i = 0;
        while i < nals.len() {
            let nal = nals[i];
            if self.mode == Mode::SingleNal {
                if nal.len() > self.mtu {
                    return Err(PacketizeError::NalTooLarge(nal.len()));
                }
                out.push(nal.to_vec());
                i += 1;
                continue;
            }
            // Aggregate this and following NALs while the STAP-A fits.
            let mut size = 1 + 2 + nal.len();
            let mut j = i + 1;
            while j < nals.len() && size + 2 + nals[j].len() <= self.mtu {
                size += 2 + nals[j].len();
                j += 1;
            }
            if j > i + 1 {
                let mut stap = Vec::with_capacity(size);
                // F is the OR of the aggregated F bits, NRI their maximum.
                let f = nals[i..j].iter().fold(0, |acc, n| acc | (n[0] & 0x80));
                let nri = nals[i..j].iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
                stap.push(f | nri | STAP_A);
                for n in &nals[i..j] {
                    stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
                    stap.extend_from_slice(n);
                }
                out.push(stap);
                i = j;
                continue;
            }
            if nal.len() <= self.mtu {
                out.push(nal.to_vec());
            } else {
                let header = nal[0];
                let chunk = self.mtu - 2;
                let body = &nal[1..];
                let count = body.len().div_ceil(chunk);
                for (k, piece) in body.chunks(chunk).enumerate() {
                    let mut fu = Vec::with_capacity(2 + piece.len());
                    fu.push((header & 0xe0) | FU_A);
                    let start = if k == 0 { 0x80 } else { 0 };
                    let end = if k + 1 == count { 0x40 } else { 0 };
                    fu.push(start | end | (header & 0x1f));
                    fu.extend_from_slice(piece);
                    out.push(fu);
                }
            }
            i += 1;
        }
        Ok(())
    }
}

/// Reassembles RTP payloads into Annex B access units.
#[derive(Debug, Default)]
pub struct Depacketizer {
    frame: Vec<u8>,
    assembly: Assembly,
    in_fu: bool,
    keyframe: bool,
}

impl Depacketizer {
    /// Feeds one payload. Returns the access unit when its marker packet
    /// arrives; frames with missing packets are dropped and counted (the
    /// caller should then ask for a keyframe).
    pub fn push(
        &mut self,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<Frame>, DepacketizeError> {
        let Some(new) = self
            .assembly
            .packet(sequence, timestamp, !self.frame.is_empty())
        else {
            return Ok(None);
        };
        if new {
            self.frame.clear();
            self.in_fu = false;
            self.keyframe = false;
        }
        if let Err(e) = self.add(payload) {
            self.assembly.broken = true;
            return Err(e);
        }
        if !self.assembly.within_cap(self.frame.len()) {
            self.frame.clear();
        }
        if !marker {
            return Ok(None);
        }
        let whole = !self.in_fu && !self.frame.is_empty();
        let done = self.assembly.end(whole).then(|| Frame {
            data: std::mem::take(&mut self.frame),
            timestamp,
            keyframe: self.keyframe,
        });
        self.frame.clear();
        Ok(done)
    }

    /// Frames dropped because a packet was missing or malformed.
    pub fn frames_lost(&self) -> u64 {
        self.assembly.frames_lost
    }

    fn nal(&mut self, nal: &[u8]) {
        if matches!(nal[0] & 0x1f, IDR | SPS) {
            self.keyframe = true;
        }
        self.frame.extend_from_slice(&START_CODE);
        self.frame.extend_from_slice(nal);
    }

    fn add(&mut self, payload: &[u8]) -> Result<(), DepacketizeError> {
        let Some(&first) = payload.first() else {
            return Err(DepacketizeError::Truncated);
        };
        match first & 0x1f {
            0 => Err(DepacketizeError::Unsupported(0)),
            1..=23 => {
                if self.in_fu {
                    return Err(DepacketizeError::Truncated);
                }
                self.nal(payload);
                Ok(())
            }
            STAP_A => {
                let mut rest = &payload[1..];
                while !rest.is_empty() {
                    let [hi, lo, tail @ ..] = rest else {
                        return Err(DepacketizeError::Truncated);
                    };
                    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                    if len == 0 || tail.len() < len {
                        return Err(DepacketizeError::Truncated);
                    }
                    // Only plain NAL units may be aggregated (RFC 6184 5.7.1).
                    let inner = tail[0] & 0x1f;
                    if !(1..=23).contains(&inner) {
                        return Err(DepacketizeError::Unsupported(inner));
                    }
                    self.nal(&tail[..len]);
                    rest = &tail[len..];
                }
                Ok(())
            }
            FU_A => {
                let Some(&fu) = payload.get(1) else {
                    return Err(DepacketizeError::Truncated);
                };
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if start {
                    if self.in_fu {
                        return Err(DepacketizeError::Truncated);
                    }
                    let header = (first & 0xe0) | (fu & 0x1f);
                    self.nal(&[header]);
                    self.in_fu = true;
                } else if !self.in_fu {
                    // Lost the start fragment.
                    return Err(DepacketizeError::Truncated);
                }
                self.frame.extend_from_slice(&payload[2..]);
                if end {
                    self.in_fu = false;
                }
                Ok(())
            }
            other => Err(DepacketizeError::Unsupported(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MAX_FRAME_BYTES;

    /// SPS, PPS, SEI, an IDR slice of `idr` bytes and an AUD, Annex B.
    fn access_unit(idr: usize) -> Vec<u8> {
        let mut au = Vec::new();
        au.extend_from_slice(&[0, 0, 0, 1, 0x09, 0xf0]); // AUD
        au.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02]);
        au.extend_from_slice(&[0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
        au.extend_from_slice(&[0, 0, 0, 1, 0x06, 0x05, 0x01, 0x02, 0x80]);
        au.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        // Slice data never contains 00 00 0x (emulation prevention).
        au.extend((0..idr).map(|i| (i % 251) as u8 | 1));
        au
    }

    /// What a round trip must give back: 4-byte start codes, no AUD/filler.
    fn normalized(au: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nal_units(au).filter(|n| !matches!(n[0] & 0x1f, AUD | FILLER)) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        out
    }

    fn round_trip(mode: Mode, mtu: usize, au: &[u8]) -> (Vec<Vec<u8>>, Frame) {
        let mut payloads = Vec::new();
        Packetizer::new(mode, mtu)
            .packetize(au, &mut payloads)
            .unwrap();
        let mut d = Depacketizer::default();
        let mut got = None;
        for (i, p) in payloads.iter().enumerate() {
            assert!(p.len() <= mtu);
            let last = i + 1 == payloads.len();
            let r = d.push(100 + i as u16, 9000, last, p).unwrap();
            assert_eq!(r.is_some(), last);
            got = r;
        }
        (payloads, got.unwrap())
    }

    #[test]
    fn splits_annex_b_with_both_start_code_lengths() {
        let au = access_unit(3);
        let nals: Vec<_> = nal_units(&au).map(|n| n[0]).collect();
        assert_eq!(nals, [0x09, 0x67, 0x68, 0x06, 0x65]);
        assert_eq!(nal_units(b"no start code").count(), 0);
    }

    #[test]
    fn mode1_aggregates_parameter_sets_and_fragments_large_slices() {
        let au = access_unit(4000);
        let (payloads, frame) = round_trip(Mode::NonInterleaved, 1200, &au);
        assert_eq!(frame.data, normalized(&au));
        assert!(frame.keyframe);
        // STAP-A of SPS+PPS+SEI, then 4 FU-A fragments of the 4001-byte IDR.
        assert_eq!(payloads[0][0] & 0x1f, STAP_A);
        assert_eq!(payloads.len(), 5);
        assert!(payloads[1..].iter().all(|p| p[0] & 0x1f == FU_A));
        assert_eq!(payloads[1][1] & 0xc0, 0x80);
        assert_eq!(payloads.last().unwrap()[1] & 0xc0, 0x40);
    }

    #[test]
    fn mode1_sends_single_nals_that_fit() {
        // A P slice alone fits: one single-NAL packet.
        let au = [0, 0, 0, 1, 0x41, 0x9a, 0x11, 0x22];
        let (payloads, frame) = round_trip(Mode::NonInterleaved, 1200, &au);
        assert_eq!(payloads, [vec![0x41, 0x9a, 0x11, 0x22]]);
        assert_eq!(frame.data, au);
        assert!(!frame.keyframe);
    }

    #[test]
    fn mode0_sends_one_nal_per_packet_and_refuses_oversize() {
        let au = access_unit(1000);
        let (payloads, frame) = round_trip(Mode::SingleNal, 1200, &au);
        assert_eq!(payloads.len(), 4);
        assert!(
            payloads
                .iter()
                .all(|p| !matches!(p[0] & 0x1f, STAP_A | FU_A))
        );
        assert_eq!(frame.data, normalized(&au));
        let mut out = Vec::new();
        assert_eq!(
            Packetizer::new(Mode::SingleNal, 500).packetize(&au, &mut out),
            Err(PacketizeError::NalTooLarge(1001))
        );
    }

    #[test]
    fn lost_fragment_drops_the_frame_and_the_next_one_decodes() {
        let au = access_unit(4000);
        let mut payloads = Vec::new();
        Packetizer::new(Mode::NonInterleaved, 1200)
            .packetize(&au, &mut payloads)
            .unwrap();
        let mut d = Depacketizer::default();
        let n = payloads.len();
        for (i, p) in payloads.iter().enumerate() {
            if i == 2 {
                continue; // lost
            }
            assert_eq!(d.push(i as u16, 1, i + 1 == n, p).unwrap(), None);
        }
        assert_eq!(d.frames_lost(), 1);
        // Next frame intact (sequence numbers continue).
        let base = n as u16;
        for (i, p) in payloads.iter().enumerate() {
            let r = d.push(base + i as u16, 2, i + 1 == n, p).unwrap();
            assert_eq!(r.is_some(), i + 1 == n);
        }
        // A frame whose marker never came counts as lost when the next starts.
        d.push(2 * base, 3, false, &payloads[0]).unwrap();
        d.push(2 * base + 1, 4, true, &[0x41, 1]).unwrap();
        assert_eq!(d.frames_lost(), 2);
    }

    #[test]
    fn a_whole_missing_frame_counts_and_late_packets_are_dropped() {
        let mut d = Depacketizer::default();
        assert!(d.push(10, 1, true, &[0x65, 1]).unwrap().is_some());
        // Seq 11 (frame 2) never arrives; frame 3 is whole.
        assert!(d.push(12, 3, true, &[0x41, 2]).unwrap().is_some());
        assert_eq!(d.frames_lost(), 1, "the missing frame is noticed");
        // A copy of 12, and 11 arriving late, start no fake frame.
        assert_eq!(d.push(12, 3, true, &[0x41, 2]).unwrap(), None);
        assert_eq!(d.push(11, 2, true, &[0x41, 3]).unwrap(), None);
        assert_eq!(d.frames_lost(), 1);
        // An endless frame is capped, not grown without bound.
        let big = [0x41; 1200];
        for i in 0..4000u16 {
            let _ = d.push(13 + i, 4, false, &big);
        }
        assert!(d.frame.len() <= MAX_FRAME_BYTES);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let mut d = Depacketizer::default();
        assert_eq!(d.push(1, 1, true, &[]), Err(DepacketizeError::Truncated));
        // STAP-A with an odd trailing byte and with a length past the end.
        assert_eq!(
            d.push(2, 2, true, &[0x18, 0, 2, 0x67, 1, 0]),
            Err(DepacketizeError::Truncated)
        );
        assert_eq!(
            d.push(3, 3, true, &[0x18, 0, 9, 0x67]),
            Err(DepacketizeError::Truncated)
        );
        // FU-A continuation without a start, FU-A without its header.
        assert_eq!(
            d.push(4, 4, true, &[0x1c, 0x45, 1]),
            Err(DepacketizeError::Truncated)
        );
        assert_eq!(
            d.push(5, 5, true, &[0x1c]),
            Err(DepacketizeError::Truncated)
        );
        // STAP-B, MTAP, FU-B are mode 2.
        assert_eq!(
            d.push(6, 6, true, &[0x19, 0]),
            Err(DepacketizeError::Unsupported(25))
        );
    }
}
