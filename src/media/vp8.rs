//! VP8 RTP payload format (RFC 7741).
//!
//! Owns the payload descriptor: written with a 15-bit picture ID (browsers
//! use it to tell which frame a loss hit), read in every legal shape, and
//! frames reassembled from partitions with loss detection. It must not
//! decode video. Written here for the same reasons as `h264` (rtc-rtp's
//! depacketizer has no sequence or start checks).

use super::{Assembly, DepacketizeError, Frame};

/// Splits VP8 frames into RTP payloads.
#[derive(Debug, Clone)]
pub struct Packetizer {
    mtu: usize,
    picture_id: u16,
}

/// Descriptor we write: X, then I with a 15-bit picture ID.
const DESCRIPTOR_LEN: usize = 4;

impl Packetizer {
    /// `mtu` is the largest RTP payload to produce; `picture_id` the first
    /// picture ID (random per stream is customary).
    pub fn new(mtu: usize, picture_id: u16) -> Self {
        Self {
            mtu: mtu.max(DESCRIPTOR_LEN + 1),
            picture_id: picture_id & 0x7fff,
        }
    }

    /// Appends the payloads of one frame to `out`; the last carries the marker.
    pub fn packetize(&mut self, frame: &[u8], out: &mut Vec<Vec<u8>>) {
        let chunk = self.mtu - DESCRIPTOR_LEN;
        let pid = self.picture_id.to_be_bytes();
        for (k, piece) in frame.chunks(chunk).enumerate() {
            let mut p = Vec::with_capacity(DESCRIPTOR_LEN + piece.len());
            // X=1, N=0, S on the first packet, PID=0.
            p.push(0x80 | if k == 0 { 0x10 } else { 0 });
            p.push(0x80); // I
            p.push(0x80 | pid[0]); // M=1: 15-bit picture ID
            p.push(pid[1]);
            p.extend_from_slice(piece);
            out.push(p);
        }
        self.picture_id = (self.picture_id + 1) & 0x7fff;
    }
}

/// The parts of a payload descriptor the receiver needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Start of a VP8 partition.
    pub start: bool,
    /// Partition index.
    pub partition: u8,
    /// Picture ID, if present.
    pub picture_id: Option<u16>,
    /// Descriptor length: where the VP8 data starts.
    pub len: usize,
}

impl Descriptor {
    /// Reads the descriptor at the head of a payload.
    pub fn parse(payload: &[u8]) -> Result<Self, DepacketizeError> {
        let first = *payload.first().ok_or(DepacketizeError::Truncated)?;
        let mut len = 1;
        let mut picture_id = None;
        if first & 0x80 != 0 {
            let ext = *payload.get(len).ok_or(DepacketizeError::Truncated)?;
            len += 1;
            if ext & 0x80 != 0 {
                let b = *payload.get(len).ok_or(DepacketizeError::Truncated)?;
                if b & 0x80 != 0 {
                    let lo = *payload.get(len + 1).ok_or(DepacketizeError::Truncated)?;
                    picture_id = Some(u16::from_be_bytes([b & 0x7f, lo]));
                    len += 2;
                } else {
                    picture_id = Some(u16::from(b));
                    len += 1;
                }
            }
            if ext & 0x40 != 0 {
                len += 1; // TL0PICIDX
            }
            if ext & 0x30 != 0 {
                len += 1; // TID/Y/KEYIDX
            }
        }
        if payload.len() <= len {
            return Err(DepacketizeError::Truncated);
        }
        Ok(Self {
            start: first & 0x10 != 0,
            partition: first & 0x07,
            picture_id,
            len,
        })
    }
}

/// Reassembles VP8 frames from payloads.
#[derive(Debug, Default)]
pub struct Depacketizer {
    frame: Vec<u8>,
    assembly: Assembly,
    started: bool,
}

impl Depacketizer {
    /// Feeds one payload; returns the frame when its marker packet arrives.
    pub fn push(
        &mut self,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<Frame>, DepacketizeError> {
        let Some(new) = self.assembly.packet(sequence, timestamp, self.started) else {
            return Ok(None);
        };
        if new {
            self.frame.clear();
            self.started = false;
        }
        let d = match Descriptor::parse(payload) {
            Ok(d) => d,
            Err(e) => {
                self.assembly.broken = true;
                return Err(e);
            }
        };
        if d.start && d.partition == 0 {
            if self.started {
                self.assembly.broken = true;
            }
            self.started = true;
        } else if !self.started {
            // The frame's first packet was lost.
            self.assembly.broken = true;
        }
        self.frame.extend_from_slice(&payload[d.len..]);
        if !self.assembly.within_cap(self.frame.len()) {
            self.frame.clear();
        }
        if !marker {
            return Ok(None);
        }
        let whole = self.started;
        self.started = false;
        if !self.assembly.end(whole) {
            return Ok(None);
        }
        let data = std::mem::take(&mut self.frame);
        // VP8 frame tag: P bit (bit 0 of the first byte) clear on keyframes.
        let keyframe = data.first().is_some_and(|b| b & 1 == 0);
        Ok(Some(Frame {
            data,
            timestamp,
            keyframe,
        }))
    }

    /// Frames dropped because a packet was missing or malformed.
    pub fn frames_lost(&self) -> u64 {
        self.assembly.frames_lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, key: bool) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        f[0] = if key { 0x10 } else { 0x11 };
        f
    }

    #[test]
    fn round_trip_is_bit_exact_across_packets() {
        let mut p = Packetizer::new(1200, 0x7ffe);
        let mut d = Depacketizer::default();
        for (n, (len, key)) in [(5000, true), (300, false), (1196, false)]
            .into_iter()
            .enumerate()
        {
            let f = frame(len, key);
            let mut out = Vec::new();
            p.packetize(&f, &mut out);
            assert_eq!(out.len(), len.div_ceil(1196));
            let mut got = None;
            for (i, pl) in out.iter().enumerate() {
                assert!(pl.len() <= 1200);
                let desc = Descriptor::parse(pl).unwrap();
                assert_eq!(desc.start, i == 0);
                // Picture IDs wrap at 15 bits.
                assert_eq!(desc.picture_id, Some(((0x7ffe + n) & 0x7fff) as u16));
                got = d
                    .push(i as u16 + 10 * n as u16, n as u32, i + 1 == out.len(), pl)
                    .unwrap();
            }
            let got = got.unwrap();
            assert_eq!(got.data, f);
            assert_eq!(got.keyframe, key);
        }
    }

    #[test]
    fn reads_every_descriptor_shape() {
        // No extension.
        assert_eq!(
            Descriptor::parse(&[0x10, 0xaa]).unwrap(),
            Descriptor {
                start: true,
                partition: 0,
                picture_id: None,
                len: 1
            }
        );
        // X with 7-bit picture ID, TL0PICIDX and TID: 5 bytes.
        let d = Descriptor::parse(&[0x90, 0xe0, 0x05, 0x01, 0x40, 0xaa]).unwrap();
        assert_eq!((d.picture_id, d.len), (Some(5), 5));
        // K only.
        assert_eq!(Descriptor::parse(&[0x80, 0x10, 0x00, 0xaa]).unwrap().len, 3);
        // Truncated in each place.
        for bad in [
            &[][..],
            &[0x80],
            &[0x80, 0x80],
            &[0x80, 0x80, 0x80, 1],
            &[0x10],
        ] {
            assert_eq!(Descriptor::parse(bad), Err(DepacketizeError::Truncated));
        }
    }

    #[test]
    fn losses_drop_the_frame() {
        let mut p = Packetizer::new(500, 1);
        let mut out = Vec::new();
        p.packetize(&frame(1400, true), &mut out);
        assert_eq!(out.len(), 3);
        // Middle packet lost.
        let mut d = Depacketizer::default();
        assert_eq!(d.push(1, 7, false, &out[0]).unwrap(), None);
        assert_eq!(d.push(3, 7, true, &out[2]).unwrap(), None);
        assert_eq!(d.frames_lost(), 1);
        // First packet lost.
        assert_eq!(d.push(5, 8, false, &out[1]).unwrap(), None);
        assert_eq!(d.push(6, 8, true, &out[2]).unwrap(), None);
        assert_eq!(d.frames_lost(), 2);
        // Intact frame still comes out.
        for (i, pl) in out.iter().enumerate() {
            let r = d.push(10 + i as u16, 9, i == 2, pl).unwrap();
            assert_eq!(r.is_some(), i == 2);
        }
    }
}
