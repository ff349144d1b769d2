//! Causeway's codec crate: the `Encoder`/`Decoder` traits every audio and video
//! codec implements, and the registry that picks one by SDP encoding name,
//! clock rate and format parameters.
//!
//! This crate is the only place in the workspace allowed to hold FFI (libopus,
//! FFmpeg); every `unsafe` block here must carry a `// SAFETY:` comment. It must
//! not know about RTP, SDP negotiation or sockets: it turns samples or frames
//! into payloads and back, nothing more.
//!
//! Implemented: G.711 ([`g711`]), G.722 ([`g722`], FFmpeg), Opus
//! ([`opus`]), H.264 and VP8 ([`video`], FFmpeg).
//! [`registry`] picks them by SDP name, clock rate and fmtp. [`analysis`]
//! measures tones for tests.

pub mod analysis;
pub mod g711;
pub mod g722;
pub mod opus;
pub mod registry;
pub mod resample;
pub mod video;

use std::fmt;

/// What an SDP `a=rtpmap` line plus its `a=fmtp` names: enough to pick a codec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodecKey {
    /// Encoding name as in SDP, compared case-insensitively (`PCMU`, `opus`).
    pub name: String,
    /// RTP clock rate in Hz (8000 for G.722 despite its 16 kHz audio).
    pub clock_rate: u32,
    /// Channels (1 unless SDP says otherwise; Opus is always 2 in SDP).
    pub channels: u8,
}

/// A block of interleaved 16-bit PCM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcm {
    /// Audio sample rate in Hz (not necessarily the RTP clock rate).
    pub sample_rate: u32,
    /// Interleaved channel count.
    pub channels: u8,
    /// Interleaved samples.
    pub samples: Vec<i16>,
}

/// Why a codec call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The payload could not be decoded (corrupt or truncated).
    InvalidPayload,
    /// The input PCM or frame did not have the shape the codec was opened with.
    InvalidInput,
    /// No implementation is registered for this codec.
    Unsupported(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPayload => f.write_str("invalid payload"),
            Self::InvalidInput => f.write_str("input does not match the codec's configuration"),
            Self::Unsupported(name) => write!(f, "codec {name} is not supported"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Turns PCM into one RTP payload's worth of encoded audio.
pub trait AudioEncoder: Send {
    /// Encodes one frame; `out` is cleared and filled with the payload.
    fn encode(&mut self, pcm: &Pcm, out: &mut Vec<u8>) -> Result<(), CodecError>;
}

/// Turns one RTP payload back into PCM.
pub trait AudioDecoder: Send {
    /// Decodes one payload into `out` (cleared first).
    fn decode(&mut self, payload: &[u8], out: &mut Pcm) -> Result<(), CodecError>;

    /// Fills `out` with `samples` (per channel) standing in for a lost
    /// packet. `next` is the packet after the loss, when it has already
    /// arrived, for codecs that carry redundancy (Opus FEC).
    fn conceal(
        &mut self,
        next: Option<&[u8]>,
        samples: usize,
        out: &mut Pcm,
    ) -> Result<(), CodecError>;

    /// The audio bandwidth `payload` carries, as the sample rate that holds
    /// it, where the codec says so per packet (Opus: narrowband 8000 ...
    /// full band 48000); `None` for codecs of one fixed bandwidth.
    fn bandwidth(&self, _payload: &[u8]) -> Option<u32> {
        None
    }
}

/// Initialises FFmpeg once, with logging quietened: corrupt network input
/// makes decoders complain per frame, and the media layer counts those errors.
pub(crate) fn ffmpeg_init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // Registration cannot fail in FFmpeg 4+; an error here only means
        // the library printed something.
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    });
}

/// The FFmpeg sample format of our PCM: packed (interleaved) 16-bit.
pub(crate) fn pcm_format() -> ffmpeg_next::format::Sample {
    ffmpeg_next::format::Sample::I16(ffmpeg_next::format::sample::Type::Packed)
}

/// Copies mono PCM into a packed 16-bit FFmpeg frame of at least that many samples.
pub(crate) fn write_pcm(frame: &mut ffmpeg_next::frame::Audio, samples: &[i16]) {
    for (d, s) in frame.data_mut(0).chunks_exact_mut(2).zip(samples) {
        d.copy_from_slice(&s.to_ne_bytes());
    }
}

/// Appends the samples of a packed 16-bit mono FFmpeg frame to `out`.
pub(crate) fn read_pcm(frame: &ffmpeg_next::frame::Audio, out: &mut Vec<i16>) {
    let bytes = frame.data(0);
    let n = (frame.samples() * 2).min(bytes.len());
    out.extend(
        bytes[..n]
            .chunks_exact(2)
            .map(|b| i16::from_ne_bytes([b[0], b[1]])),
    );
}

/// Loss concealment by repetition: the last decoded frame again, halved in
/// level for each further lost frame, so a burst fades to silence instead
/// of buzzing. Used by the codecs without their own PLC (G.711, G.722).
#[derive(Debug, Clone, Default)]
pub(crate) struct Repeat {
    last: Vec<i16>,
    concealed: u32,
}

impl Repeat {
    /// Keeps a decoded frame for later concealment.
    pub(crate) fn remember(&mut self, samples: &[i16]) {
        self.last.clear();
        self.last.extend_from_slice(samples);
        self.concealed = 0;
    }

    /// Fills `out` with `samples` of mono concealment at `sample_rate`.
    pub(crate) fn conceal(&mut self, sample_rate: u32, samples: usize, out: &mut Pcm) {
        out.sample_rate = sample_rate;
        out.channels = 1;
        let out = &mut out.samples;
        out.clear();
        let shift = self.concealed.min(15);
        self.concealed += 1;
        if self.last.is_empty() {
            out.resize(samples, 0);
        } else {
            out.extend(self.last.iter().cycle().take(samples).map(|&s| s >> shift));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            CodecError::Unsupported("AMR".into()).to_string(),
            "codec AMR is not supported"
        );
    }
}
