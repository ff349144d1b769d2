//! Media for SIP legs: RTP and RTCP, SRTP, RTP payload formats, DTMF, the
//! jitter buffer of transcoding paths, and the bridge direction that relays
//! or transcodes between two legs.
//!
//! ```text
//! socket bytes -> srtp::Context::unprotect_* -> rtp::RtpHeader / rtcp::packets
//!   bridge::Direction (switchable while the call runs; one OutStream line):
//!     Passthrough: SSRC, seq, ts, PT rewritten -> srtp protect -> other leg
//!     Transcode:   jitter -> codecs decode (or conceal) -> encode -> RTP
//!   video:     h264/vp8 Depacketizer -> codecs (causeway-codecs::video) -> Packetizer
//!   events:    dtmf (RFC 4733 remap, SIP INFO bodies), keyframe (PLI/FIR/INFO)
//! ```
//!
//! Everything here is sans-IO and pure: buffers in, buffers out, time as a
//! parameter. Sockets belong to the runtime; codecs to `causeway-codecs`;
//! SDP negotiation to the call layer.

pub mod bridge;
pub mod dtmf;
pub mod h264;
pub mod jitter;
pub mod keyframe;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod srtp;
pub mod video;
pub mod vp8;

use std::fmt;

/// A reassembled video frame (an Annex B access unit for H.264).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Encoded bytes.
    pub data: Vec<u8>,
    /// RTP timestamp shared by the frame's packets.
    pub timestamp: u32,
    /// Decodable on its own (IDR/SPS for H.264, key frame for VP8).
    pub keyframe: bool,
}

/// Frame boundaries and loss, shared by the video depacketizers: which RTP
/// timestamp is being assembled and whether a packet of it went missing.
#[derive(Debug, Default)]
struct Assembly {
    timestamp: Option<u32>,
    last_seq: Option<u16>,
    /// A packet of the current frame was lost or malformed.
    broken: bool,
    frames_lost: u64,
}

impl Assembly {
    /// Notes a packet. Returns true when it starts a new frame (the caller
    /// then clears its buffer); `pending` says the previous frame had data,
    /// which is lost when its marker never came.
    fn packet(&mut self, sequence: u16, timestamp: u32, pending: bool) -> bool {
        let new = self.timestamp != Some(timestamp);
        if new {
            if self.timestamp.is_some() && (pending || self.broken) {
                self.frames_lost += 1;
            }
            self.timestamp = Some(timestamp);
            self.broken = false;
        } else if self.last_seq.is_some_and(|s| s.wrapping_add(1) != sequence) {
            self.broken = true;
        }
        self.last_seq = Some(sequence);
        new
    }

    /// The marker packet ended the frame; `usable` says whether it is whole.
    /// Returns whether to hand it out.
    fn end(&mut self, usable: bool) -> bool {
        self.timestamp = None;
        let ok = usable && !self.broken;
        if !ok {
            self.frames_lost += 1;
        }
        ok
    }
}

/// Why a video payload could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepacketizeError {
    /// Shorter than its structure says, or a fragment out of place.
    Truncated,
    /// A NAL or packet type outside the negotiated mode.
    Unsupported(u8),
}

impl fmt::Display for DepacketizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("video payload truncated or out of order"),
            Self::Unsupported(t) => write!(f, "unsupported payload structure (type {t})"),
        }
    }
}

impl std::error::Error for DepacketizeError {}
