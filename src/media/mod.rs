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

/// Largest reassembled video frame (a 4K keyframe is well under this).
const MAX_FRAME_BYTES: usize = 4 << 20;

/// Frame boundaries and loss, shared by the video depacketizers: which RTP
/// timestamp is being assembled and whether a packet of it went missing.
#[derive(Debug, Default)]
struct Assembly {
    timestamp: Option<u32>,
    last_seq: Option<u16>,
    /// A packet of the current frame was lost or malformed.
    broken: bool,
    /// Packets went missing just before the current frame began: its own
    /// head, or a whole frame in between (told apart when it ends).
    gap_before: bool,
    frames_lost: u64,
}

impl Assembly {
    /// Notes a packet. Returns `Some(true)` when it starts a new frame (the
    /// caller then clears its buffer), `Some(false)` when it continues the
    /// current one, and `None` for a packet older than the last one seen
    /// (reordered behind a finished frame: drop it). `pending` says the
    /// previous frame had data, which is lost when its marker never came.
    fn packet(&mut self, sequence: u16, timestamp: u32, pending: bool) -> Option<bool> {
        let gap = self.last_seq.map(|s| sequence.wrapping_sub(s));
        if gap.is_some_and(|g| g == 0 || g >= 0x8000) {
            return None;
        }
        // A packet went missing just before this one.
        let missed = gap.is_some_and(|g| g != 1);
        let new = self.timestamp != Some(timestamp);
        if new {
            if self.timestamp.is_some() && (pending || self.broken || self.gap_before) {
                self.frames_lost += 1;
            }
            self.timestamp = Some(timestamp);
            self.broken = false;
            self.gap_before = missed;
        } else if missed {
            self.broken = true;
        }
        self.last_seq = Some(sequence);
        Some(new)
    }

    /// Notes bytes added to the frame buffer: a frame that never ends must
    /// not grow without bound. Returns false (frame broken) past the cap.
    fn within_cap(&mut self, len: usize) -> bool {
        if len > MAX_FRAME_BYTES {
            self.broken = true;
            return false;
        }
        true
    }

    /// The marker packet ended the frame; `usable` says whether it is whole.
    /// Returns whether to hand it out.
    fn end(&mut self, usable: bool) -> bool {
        self.timestamp = None;
        let ok = usable && !self.broken;
        // A broken frame counts once; a whole one after a gap means a whole
        // frame went missing before it (its payloads would show a lost head).
        if !ok || self.gap_before {
            self.frames_lost += 1;
        }
        self.gap_before = false;
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
