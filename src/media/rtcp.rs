//! RTCP compound packets (RFC 3550 section 6, RFC 4585, RFC 5104): the parts
//! a gateway acts on, read without allocating and written into a caller's
//! buffer.
//!
//! Owns: sender and receiver reports with their report blocks, PLI, FIR,
//! generic NACK and BYE; everything else is surfaced as [`Packet::Other`] so a
//! relay can skip it. It must not keep statistics (see `stats`) or touch
//! crypto. Written here rather than on rtc-rtcp because that crate boxes every
//! packet of a compound into a trait object; this parser is fuzzed
//! (`fuzz_targets/rtcp.rs`).

use std::fmt;

/// Packet types (RFC 3550, RFC 4585).
const SR: u8 = 200;
const RR: u8 = 201;
const BYE: u8 = 203;
const RTPFB: u8 = 205;
const PSFB: u8 = 206;

/// Why a compound packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpError {
    /// A packet's length field runs past the datagram or is too small for its type.
    Truncated,
    /// Version field is not 2.
    BadVersion(u8),
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("RTCP packet shorter than its length field says"),
            Self::BadVersion(v) => write!(f, "RTCP version {v}, expected 2"),
        }
    }
}

impl std::error::Error for RtcpError {}

/// One reception report block (RFC 3550 section 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// Source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in RTP clock units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// NTP timestamp (seconds since 1900 in the high 32 bits).
    pub ntp: u64,
    /// RTP timestamp matching `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// One packet of a compound, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Sender report.
    SenderReport {
        /// Sender SSRC.
        ssrc: u32,
        /// Timing and counts.
        info: SenderInfo,
        /// Reception report blocks.
        reports: Reports<'a>,
    },
    /// Receiver report.
    ReceiverReport {
        /// Reporter SSRC.
        ssrc: u32,
        /// Reception report blocks.
        reports: Reports<'a>,
    },
    /// Picture loss indication (RFC 4585 section 6.3.1).
    Pli {
        /// Who asks.
        sender: u32,
        /// Whose picture is lost.
        media: u32,
    },
    /// Full intra request (RFC 5104 section 4.3.1): first entry only, which is
    /// all a point-to-point call carries.
    Fir {
        /// Who asks.
        sender: u32,
        /// Whose stream should send a keyframe.
        target: u32,
        /// Command sequence number (repeats are the same request).
        seq: u8,
    },
    /// Generic NACK (RFC 4585 section 6.2.1).
    Nack {
        /// Who asks.
        sender: u32,
        /// Whose packets are missing.
        media: u32,
    },
    /// Goodbye.
    Bye {
        /// First SSRC leaving (0 if none listed).
        ssrc: u32,
    },
    /// Any other type (SDES, APP, XR, REMB, TWCC...), with its type and FMT.
    Other {
        /// Packet type.
        packet_type: u8,
        /// Count / FMT field.
        count: u8,
    },
}

/// Report blocks of an SR or RR, decoded on iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reports<'a>(&'a [u8]);

impl Iterator for Reports<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let (block, rest) = self.0.split_first_chunk::<24>()?;
        self.0 = rest;
        let word =
            |i: usize| u32::from_be_bytes([block[i], block[i + 1], block[i + 2], block[i + 3]]);
        // 24-bit two's complement.
        let lost = (word(4) << 8) as i32 >> 8;
        Some(ReportBlock {
            ssrc: word(0),
            fraction_lost: block[4],
            cumulative_lost: lost,
            highest_seq: word(8),
            jitter: word(12),
            last_sr: word(16),
            delay_since_last_sr: word(20),
        })
    }
}

/// Iterates the packets of a compound datagram. Stops at the first error.
pub fn packets(buf: &[u8]) -> Compound<'_> {
    Compound { rest: buf }
}

/// Iterator returned by [`packets`].
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<Packet<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = parse_one(self.rest);
        match result {
            Ok((packet, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn parse_one(buf: &[u8]) -> Result<(Packet<'_>, usize), RtcpError> {
    if buf.len() < 4 {
        return Err(RtcpError::Truncated);
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtcpError::BadVersion(version));
    }
    let count = buf[0] & 0x1f;
    let packet_type = buf[1];
    let len = 4 * (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1);
    let body = buf.get(4..len).ok_or(RtcpError::Truncated)?;
    let word = |i: usize| -> Result<u32, RtcpError> {
        body.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(RtcpError::Truncated)
    };
    let reports = |from: usize| -> Result<Reports<'_>, RtcpError> {
        let end = from + 24 * usize::from(count);
        body.get(from..end).map(Reports).ok_or(RtcpError::Truncated)
    };
    let packet = match (packet_type, count) {
        (SR, _) => Packet::SenderReport {
            ssrc: word(0)?,
            info: SenderInfo {
                ntp: u64::from(word(4)?) << 32 | u64::from(word(8)?),
                rtp_timestamp: word(12)?,
                packets: word(16)?,
                octets: word(20)?,
            },
            reports: reports(24)?,
        },
        (RR, _) => Packet::ReceiverReport {
            ssrc: word(0)?,
            reports: reports(4)?,
        },
        (PSFB, 1) => Packet::Pli {
            sender: word(0)?,
            media: word(4)?,
        },
        (PSFB, 4) => Packet::Fir {
            sender: word(0)?,
            target: word(8)?,
            seq: body.get(12).copied().ok_or(RtcpError::Truncated)?,
        },
        (RTPFB, 1) => Packet::Nack {
            sender: word(0)?,
            media: word(4)?,
        },
        (BYE, 0) => Packet::Bye { ssrc: 0 },
        (BYE, _) => Packet::Bye { ssrc: word(0)? },
        _ => Packet::Other { packet_type, count },
    };
    Ok((packet, len))
}

fn header(out: &mut Vec<u8>, count: u8, packet_type: u8, words_after_header: usize) {
    out.push(0x80 | (count & 0x1f));
    out.push(packet_type);
    out.extend_from_slice(&(words_after_header as u16).to_be_bytes());
}

fn block(out: &mut Vec<u8>, r: &ReportBlock) {
    out.extend_from_slice(&r.ssrc.to_be_bytes());
    out.push(r.fraction_lost);
    out.extend_from_slice(&r.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff).to_be_bytes()[1..]);
    for w in [r.highest_seq, r.jitter, r.last_sr, r.delay_since_last_sr] {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

/// Appends a sender report with up to 31 report blocks.
pub fn write_sr(out: &mut Vec<u8>, ssrc: u32, info: &SenderInfo, reports: &[ReportBlock]) {
    let reports = &reports[..reports.len().min(31)];
    header(out, reports.len() as u8, SR, 6 + 6 * reports.len());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&info.ntp.to_be_bytes());
    for w in [info.rtp_timestamp, info.packets, info.octets] {
        out.extend_from_slice(&w.to_be_bytes());
    }
    reports.iter().for_each(|r| block(out, r));
}

/// Appends a receiver report with up to 31 report blocks.
pub fn write_rr(out: &mut Vec<u8>, ssrc: u32, reports: &[ReportBlock]) {
    let reports = &reports[..reports.len().min(31)];
    header(out, reports.len() as u8, RR, 1 + 6 * reports.len());
    out.extend_from_slice(&ssrc.to_be_bytes());
    reports.iter().for_each(|r| block(out, r));
}

/// Appends an SDES packet with one CNAME chunk (required in every compound).
pub fn write_sdes_cname(out: &mut Vec<u8>, ssrc: u32, cname: &str) {
    let name = &cname.as_bytes()[..cname.len().min(255)];
    // SSRC, type, length, text, then at least one zero octet, padded to 32 bits.
    let chunk = 4 + 2 + name.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    header(out, 1, 202, padded / 4);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(out.len() + padded - chunk + 1, 0);
}

/// Appends a picture loss indication.
pub fn write_pli(out: &mut Vec<u8>, sender: u32, media: u32) {
    header(out, 1, PSFB, 2);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&media.to_be_bytes());
}

/// Appends a full intra request for `target` with command sequence `seq`.
pub fn write_fir(out: &mut Vec<u8>, sender: u32, target: u32, seq: u8) {
    header(out, 4, PSFB, 4);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&target.to_be_bytes());
    out.extend_from_slice(&[seq, 0, 0, 0]);
}

/// Appends a BYE for `ssrc`.
pub fn write_bye(out: &mut Vec<u8>, ssrc: u32) {
    header(out, 1, BYE, 1);
    out.extend_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sr_round_trips_with_blocks() {
        let info = SenderInfo {
            ntp: 0xe000_0000_8000_0000,
            rtp_timestamp: 160,
            packets: 50,
            octets: 8000,
        };
        let rb = ReportBlock {
            ssrc: 7,
            fraction_lost: 64,
            cumulative_lost: -3,
            highest_seq: 0x1_0005,
            jitter: 12,
            last_sr: 0xabcd,
            delay_since_last_sr: 65536,
        };
        let mut out = Vec::new();
        write_sr(&mut out, 42, &info, &[rb]);
        write_sdes_cname(&mut out, 42, "causeway");
        assert_eq!(out.len(), 52 + 20);
        let mut it = packets(&out);
        match it.next() {
            Some(Ok(Packet::SenderReport {
                ssrc: 42,
                info: i,
                reports,
            })) => {
                assert_eq!(i, info);
                assert_eq!(reports.collect::<Vec<_>>(), vec![rb]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            it.next(),
            Some(Ok(Packet::Other {
                packet_type: 202,
                count: 1
            }))
        );
        assert_eq!(it.next(), None);
    }

    #[test]
    fn feedback_round_trips() {
        let mut out = Vec::new();
        write_rr(&mut out, 1, &[]);
        write_pli(&mut out, 1, 2);
        write_fir(&mut out, 1, 3, 9);
        write_bye(&mut out, 1);
        let got: Vec<_> = packets(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got[1..],
            [
                Packet::Pli {
                    sender: 1,
                    media: 2
                },
                Packet::Fir {
                    sender: 1,
                    target: 3,
                    seq: 9
                },
                Packet::Bye { ssrc: 1 }
            ]
        );
        assert!(matches!(got[0], Packet::ReceiverReport { ssrc: 1, .. }));
    }

    #[test]
    fn lies_are_errors_not_panics() {
        // RR claiming two blocks with none present.
        let mut out = Vec::new();
        write_rr(&mut out, 1, &[]);
        out[0] |= 2;
        assert_eq!(packets(&out).next(), Some(Err(RtcpError::Truncated)));
        // Length past the end.
        assert_eq!(
            packets(&[0x80, 201, 0, 9, 0, 0, 0, 1]).next(),
            Some(Err(RtcpError::Truncated))
        );
        assert_eq!(
            packets(&[0x40, 201, 0, 1, 0, 0, 0, 1]).next(),
            Some(Err(RtcpError::BadVersion(1)))
        );
        // FIR too short for its entry.
        assert_eq!(
            packets(&[0x84, 206, 0, 1, 0, 0, 0, 1]).next(),
            Some(Err(RtcpError::Truncated))
        );
    }
}
