//! RTP fixed header (RFC 3550 section 5.1) read and rewritten in place.
//!
//! Owns the zero-copy view the relay path uses: a packet is parsed once into
//! [`RtpHeader`] (offsets, no allocation) and its SSRC, sequence number,
//! timestamp, payload type and marker are rewritten in the caller's buffer.
//! It also tells RTP from RTCP on a muxed port (RFC 5761 section 4). It must
//! not know about codecs, crypto or sockets.

use std::fmt;

/// Length of the fixed RTP header, without CSRCs or extensions.
pub const FIXED_HEADER_LEN: usize = 12;

/// Why a datagram is not an RTP packet we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the header it announces.
    Truncated,
    /// Version field is not 2.
    BadVersion(u8),
    /// Padding count larger than the payload.
    BadPadding,
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("RTP packet shorter than its header"),
            Self::BadVersion(v) => write!(f, "RTP version {v}, expected 2"),
            Self::BadPadding => f.write_str("RTP padding longer than the payload"),
        }
    }
}

impl std::error::Error for RtpError {}

/// What the fixed header says, plus where the payload lies in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit (end of a video frame, start of a talkspurt).
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp in RTP clock units.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Bytes before the payload: fixed header, CSRCs and header extension.
    pub header_len: usize,
    /// Bytes of padding at the end (0 when the P bit is clear).
    pub padding: usize,
}

impl RtpHeader {
    /// Parses the header of `buf`, checking every length it announces.
    pub fn parse(buf: &[u8]) -> Result<Self, RtpError> {
        let mut h = Self::parse_header(buf)?;
        if buf[0] & 0x20 != 0 {
            let count = usize::from(buf[buf.len() - 1]);
            if count == 0 || h.header_len + count > buf.len() {
                return Err(RtpError::BadPadding);
            }
            h.padding = count;
        }
        Ok(h)
    }

    /// Parses the header only, without the padding count (which sits at the
    /// end of the payload and is still encrypted in an SRTP packet):
    /// `padding` is 0.
    pub fn parse_header(buf: &[u8]) -> Result<Self, RtpError> {
        if buf.len() < FIXED_HEADER_LEN {
            return Err(RtpError::Truncated);
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let csrc_count = usize::from(buf[0] & 0x0f);
        let mut header_len = FIXED_HEADER_LEN + 4 * csrc_count;
        if buf[0] & 0x10 != 0 {
            // Extension: 16-bit profile, 16-bit length in 32-bit words.
            let ext = buf
                .get(header_len..header_len + 4)
                .ok_or(RtpError::Truncated)?;
            header_len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        if buf.len() < header_len {
            return Err(RtpError::Truncated);
        }
        Ok(Self {
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7f,
            sequence: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            header_len,
            padding: 0,
        })
    }

    /// The payload of the packet this header was parsed from.
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.header_len..buf.len().saturating_sub(self.padding))
            .unwrap_or_default()
    }
}

/// Rewrites the fields a relay changes, in place. `buf` must hold at least
/// [`FIXED_HEADER_LEN`] bytes (true for anything [`RtpHeader::parse`] took).
pub fn rewrite(buf: &mut [u8], payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32) {
    if buf.len() < FIXED_HEADER_LEN {
        return;
    }
    buf[1] = (buf[1] & 0x80) | (payload_type & 0x7f);
    buf[2..4].copy_from_slice(&sequence.to_be_bytes());
    buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Writes a 12-byte header (no CSRCs, no extension) followed by `payload`.
pub fn write(out: &mut Vec<u8>, header: &RtpHeader, payload: &[u8]) {
    out.clear();
    out.push(0x80);
    out.push(u8::from(header.marker) << 7 | (header.payload_type & 0x7f));
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

impl RtpHeader {
    /// A header for a packet this gateway originates (no CSRCs, no extension).
    pub fn new(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32, marker: bool) -> Self {
        Self {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            header_len: FIXED_HEADER_LEN,
            padding: 0,
        }
    }
}

/// RFC 5761 section 4: on a muxed port, a second byte in 192..=223 (RTCP
/// packet types 192-223, i.e. RTP payload types 64-95 with the marker set)
/// means RTCP. Also requires version 2.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// Extended sequence number tracking (RFC 3550 appendix A.1), shared by
/// receive statistics and SRTP's rollover counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// Highest extended sequence number seen (cycles << 16 | seq).
    max: Option<u64>,
}

impl SeqTracker {
    /// Extended index `seq` most likely belongs to, without accepting it.
    pub fn estimate(&self, seq: u16) -> u64 {
        let Some(max) = self.max else {
            return u64::from(seq);
        };
        let roc = max >> 16;
        let max_seq = (max & 0xffff) as u16;
        let candidate = |roc: u64| (roc << 16) | u64::from(seq);
        // Choose the rollover count that puts seq nearest to max_seq.
        if max_seq < 0x8000 {
            if seq > max_seq && seq - max_seq > 0x8000 && roc > 0 {
                candidate(roc - 1)
            } else {
                candidate(roc)
            }
        } else if max_seq - 0x8000 > seq {
            candidate(roc + 1)
        } else {
            candidate(roc)
        }
    }

    /// Records `index` (from [`Self::estimate`]) as received.
    pub fn accept(&mut self, index: u64) {
        if self.max.is_none_or(|max| index > max) {
            self.max = Some(index);
        }
    }

    /// Highest extended index accepted so far.
    pub fn max(&self) -> Option<u64> {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(first: u8, extra: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            first,
            0x80 | 96,
            0x12,
            0x34,
            0,
            0,
            0x03,
            0xe8,
            0xde,
            0xad,
            0xbe,
            0xef,
        ];
        p.extend_from_slice(extra);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_fixed_header_and_payload() {
        let p = packet(0x80, &[], b"abc");
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                marker: true,
                payload_type: 96,
                sequence: 0x1234,
                timestamp: 1000,
                ssrc: 0xdead_beef,
                header_len: 12,
                padding: 0
            }
        );
        assert_eq!(h.payload(&p), b"abc");
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        // Two CSRCs, a one-word extension, payload "xy" and 2 bytes of padding.
        let extra = [1, 1, 1, 1, 2, 2, 2, 2, 0xbe, 0xde, 0, 1, 9, 9, 9, 9];
        let p = packet(0x80 | 0x20 | 0x10 | 2, &extra, b"xy\0\x02");
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.header_len, 28);
        assert_eq!(h.payload(&p), b"xy");
    }

    #[test]
    fn rejects_lies() {
        assert_eq!(RtpHeader::parse(&[0x80; 11]), Err(RtpError::Truncated));
        assert_eq!(
            RtpHeader::parse(&packet(0x40, &[], b"")),
            Err(RtpError::BadVersion(1))
        );
        // Claims 3 CSRCs, has one.
        assert_eq!(
            RtpHeader::parse(&packet(0x83, &[0; 4], b"")),
            Err(RtpError::Truncated)
        );
        // Extension length past the end.
        assert_eq!(
            RtpHeader::parse(&packet(0x90, &[0, 0, 0, 5], b"")),
            Err(RtpError::Truncated)
        );
        assert_eq!(
            RtpHeader::parse(&packet(0xa0, &[], b"a\x09")),
            Err(RtpError::BadPadding)
        );
        assert_eq!(
            RtpHeader::parse(&packet(0xa0, &[], b"a\x00")),
            Err(RtpError::BadPadding)
        );
    }

    #[test]
    fn rewrite_keeps_marker_and_payload() {
        let mut p = packet(0x80, &[], b"abc");
        rewrite(&mut p, 0, 7, 8, 9);
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            (h.marker, h.payload_type, h.sequence, h.timestamp, h.ssrc),
            (true, 0, 7, 8, 9)
        );
        assert_eq!(h.payload(&p), b"abc");
        let mut out = Vec::new();
        write(&mut out, &h, b"abc");
        assert_eq!(out, p);
    }

    #[test]
    fn demuxes_rtcp_from_rtp() {
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
        assert!(is_rtcp(&[0x81, 206, 0, 2, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0, 0, 6, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0x80 | 96, 0, 6, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 200, 0]));
    }

    #[test]
    fn sequence_tracker_follows_wraps_and_reordering() {
        let mut t = SeqTracker::default();
        for seq in [65_530u16, 65_535, 2, 65_534, 10] {
            let i = t.estimate(seq);
            t.accept(i);
        }
        assert_eq!(t.max(), Some(0x1_000a));
        // A late packet from before the wrap maps to the old cycle.
        assert_eq!(t.estimate(65_533), 65_533);
        // Far ahead maps to the current cycle.
        assert_eq!(t.estimate(30_000), 0x1_0000 + 30_000);
    }
}
