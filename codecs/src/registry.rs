//! Picks codecs by what SDP says: encoding name (case-insensitive), clock
//! rate, channels and format parameters, and opens encoders and decoders for
//! a transcoding chain at a PCM rate both sides share (no resampler), or,
//! for G.711 <-> G.722, at the encoder's rate with the decoder resampled.
//!
//! Owns the mapping from SDP to implementations and the H.264 fmtp subset a
//! gateway must honour (packetization-mode, profile-level-id). It must not
//! negotiate (the call layer picks the codec; this only says what it is).

use crate::g711::{G711, Law};
use crate::g722::{G722Decoder, G722Encoder};
use crate::opus::{OpusConfig, OpusDecoder, OpusEncoder};
use crate::resample::Resampled;
use crate::video::VideoCodec;
use crate::{AudioDecoder, AudioEncoder, CodecError, CodecKey};

/// The audio codecs this gateway can decode and encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 (16 kHz audio, 8 kHz RTP clock).
    G722,
    /// Opus (48 kHz RTP clock, any internal rate).
    Opus,
}

impl AudioCodec {
    /// Every codec, in the order the gateway prefers them.
    pub const ALL: [AudioCodec; 4] = [Self::Opus, Self::G722, Self::Pcmu, Self::Pcma];

    /// Identifies an `a=rtpmap` entry; `None` for codecs we do not implement
    /// (telephone-event is not a codec and is handled by the media layer).
    pub fn from_key(key: &CodecKey) -> Option<Self> {
        let name = key.name.to_ascii_lowercase();
        match (name.as_str(), key.clock_rate, key.channels) {
            ("pcmu", 8000, 1) => Some(Self::Pcmu),
            ("pcma", 8000, 1) => Some(Self::Pcma),
            ("g722", 8000, 1) => Some(Self::G722),
            ("opus", 48000, 2) => Some(Self::Opus),
            _ => None,
        }
    }

    /// The SDP key.
    pub fn key(self) -> CodecKey {
        let (name, clock_rate, channels) = match self {
            Self::Pcmu => ("PCMU", 8000, 1),
            Self::Pcma => ("PCMA", 8000, 1),
            Self::G722 => ("G722", 8000, 1),
            Self::Opus => ("opus", 48000, 2),
        };
        CodecKey {
            name: name.into(),
            clock_rate,
            channels,
        }
    }

    /// Static payload type, where RFC 3551 assigns one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Self::Pcmu => Some(0),
            Self::Pcma => Some(8),
            Self::G722 => Some(9),
            Self::Opus => None,
        }
    }

    /// The highest audio sample rate the codec carries (G.722: 16 kHz on
    /// an 8 kHz RTP clock).
    pub fn audio_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma => 8000,
            Self::G722 => 16000,
            Self::Opus => 48000,
        }
    }

    /// Sample rates the codec can work at natively.
    fn rates(self) -> &'static [u32] {
        match self {
            Self::Pcmu | Self::Pcma => &[8000],
            Self::G722 => &[16000],
            Self::Opus => &[8000, 16000, 48000, 12000, 24000],
        }
    }
}

/// The highest PCM rate at which `a` decodes and `b` encodes (or the
/// reverse) without a resampler: Opus adapts to the other side. `None` when
/// the two share no rate (G.711 <-> G.722).
pub fn shared_pcm_rate(a: AudioCodec, b: AudioCodec) -> Option<u32> {
    a.rates()
        .iter()
        .copied()
        .filter(|r| b.rates().contains(r))
        .max()
}

/// The PCM rate for a chain decoding `from` and encoding `to`: the shared
/// rate when there is one, else the encoder's (the decoder side resamples,
/// see [`audio_decoder`]).
pub fn pcm_rate(from: AudioCodec, to: AudioCodec) -> u32 {
    shared_pcm_rate(from, to).unwrap_or(to.rates()[0])
}

/// A decoder producing PCM at `pcm_rate`; a rate the codec does not work
/// at natively goes through libswresample.
pub fn audio_decoder(
    codec: AudioCodec,
    pcm_rate: u32,
) -> Result<Box<dyn AudioDecoder>, CodecError> {
    if !codec.rates().contains(&pcm_rate) {
        let native = codec.rates()[0];
        return Ok(Box::new(Resampled::new(
            audio_decoder(codec, native)?,
            native,
            pcm_rate,
        )?));
    }
    Ok(match codec {
        AudioCodec::Pcmu => Box::new(G711::new(Law::Ulaw)),
        AudioCodec::Pcma => Box::new(G711::new(Law::Alaw)),
        AudioCodec::G722 => Box::new(G722Decoder::new()?),
        AudioCodec::Opus => Box::new(OpusDecoder::new(pcm_rate, 1)?),
    })
}

/// An encoder taking PCM at `pcm_rate`; `opus` sets Opus's options (its
/// sample rate is overridden by `pcm_rate`).
pub fn audio_encoder(
    codec: AudioCodec,
    pcm_rate: u32,
    opus: OpusConfig,
) -> Result<Box<dyn AudioEncoder>, CodecError> {
    if !codec.rates().contains(&pcm_rate) {
        return Err(CodecError::InvalidInput);
    }
    Ok(match codec {
        AudioCodec::Pcmu => Box::new(G711::new(Law::Ulaw)),
        AudioCodec::Pcma => Box::new(G711::new(Law::Alaw)),
        AudioCodec::G722 => Box::new(G722Encoder::new()?),
        AudioCodec::Opus => Box::new(OpusEncoder::new(OpusConfig {
            sample_rate: pcm_rate,
            ..opus
        })?),
    })
}

/// H.264 format parameters that decide compatibility (RFC 6184 section 8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct H264Params {
    /// 0 (single NAL) or 1 (non-interleaved). Mode 2 is not supported.
    pub packetization_mode: u8,
    /// profile_idc, profile-iop, level_idc (default 42 00 0a, baseline 1.0).
    pub profile_level_id: [u8; 3],
}

impl H264Params {
    /// What our encoder produces: constrained baseline, level 3.1.
    pub const OURS: Self = Self {
        packetization_mode: 1,
        profile_level_id: [0x42, 0xe0, 0x1f],
    };

    /// Reads the fmtp of an H264 rtpmap; unknown parameters are ignored.
    pub fn from_fmtp(fmtp: &str) -> Result<Self, CodecError> {
        let mut p = Self {
            packetization_mode: 0,
            profile_level_id: [0x42, 0x00, 0x0a],
        };
        for param in fmtp.split(';') {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "packetization-mode" => {
                    p.packetization_mode = match v.trim() {
                        "0" => 0,
                        "1" => 1,
                        other => {
                            return Err(CodecError::Unsupported(format!(
                                "H264 packetization-mode={other}"
                            )));
                        }
                    };
                }
                "profile-level-id" => {
                    let v = v.trim();
                    let bytes = (v.len() == 6)
                        .then(|| u32::from_str_radix(v, 16).ok())
                        .flatten()
                        .ok_or_else(|| {
                            CodecError::Unsupported(format!("H264 profile-level-id={v}"))
                        })?
                        .to_be_bytes();
                    p.profile_level_id = [bytes[1], bytes[2], bytes[3]];
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// Whether the stream fits constrained baseline (what browsers and our
    /// encoder agree on): profile_idc 66 with constraint_set1, or 77/88 with
    /// the constraint flags that make them baseline-compatible.
    pub fn is_constrained_baseline(&self) -> bool {
        let [idc, iop, _] = self.profile_level_id;
        match idc {
            0x42 => iop & 0x40 != 0,
            0x4d => iop & 0x80 != 0,
            0x58 => iop & 0xc0 == 0xc0,
            _ => false,
        }
    }

    /// Whether a stream sent with `self` can be relayed untouched to a peer
    /// that asked for `other`: same packetization mode, both constrained
    /// baseline (level is asymmetric and not checked here).
    pub fn passthrough_compatible(&self, other: &Self) -> bool {
        self.packetization_mode == other.packetization_mode
            && self.is_constrained_baseline()
            && other.is_constrained_baseline()
    }
}

/// Identifies a video rtpmap (`H264/90000`, `VP8/90000`).
pub fn video_codec(key: &CodecKey) -> Option<VideoCodec> {
    match (key.name.to_ascii_lowercase().as_str(), key.clock_rate) {
        ("h264", 90000) => Some(VideoCodec::H264),
        ("vp8", 90000) => Some(VideoCodec::Vp8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, clock_rate: u32, channels: u8) -> CodecKey {
        CodecKey {
            name: name.into(),
            clock_rate,
            channels,
        }
    }

    #[test]
    fn rtpmaps_map_to_codecs() {
        assert_eq!(
            AudioCodec::from_key(&key("pcmu", 8000, 1)),
            Some(AudioCodec::Pcmu)
        );
        assert_eq!(
            AudioCodec::from_key(&key("OPUS", 48000, 2)),
            Some(AudioCodec::Opus)
        );
        assert_eq!(
            AudioCodec::from_key(&key("G722", 16000, 1)),
            None,
            "G.722's clock is 8000"
        );
        assert_eq!(AudioCodec::from_key(&key("telephone-event", 8000, 1)), None);
        for c in [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::G722,
            AudioCodec::Opus,
        ] {
            assert_eq!(AudioCodec::from_key(&c.key()), Some(c));
        }
        assert_eq!(video_codec(&key("H264", 90000, 1)), Some(VideoCodec::H264));
        assert_eq!(video_codec(&key("vp8", 90000, 1)), Some(VideoCodec::Vp8));
        assert_eq!(video_codec(&key("VP9", 90000, 1)), None);
    }

    #[test]
    fn chains_share_a_rate_without_resampling() {
        assert_eq!(
            shared_pcm_rate(AudioCodec::Pcmu, AudioCodec::Opus),
            Some(8000)
        );
        assert_eq!(
            shared_pcm_rate(AudioCodec::Opus, AudioCodec::G722),
            Some(16000)
        );
        assert_eq!(
            shared_pcm_rate(AudioCodec::Opus, AudioCodec::Opus),
            Some(48000),
            "Opus to Opus stays fullband"
        );
        assert_eq!(shared_pcm_rate(AudioCodec::Pcma, AudioCodec::G722), None);
        for (a, b) in [
            (AudioCodec::Pcmu, AudioCodec::Opus),
            (AudioCodec::G722, AudioCodec::Opus),
        ] {
            let rate = shared_pcm_rate(a, b).unwrap();
            assert!(audio_decoder(a, rate).is_ok());
            assert!(audio_encoder(b, rate, OpusConfig::webrtc()).is_ok());
        }
        assert!(audio_encoder(AudioCodec::Pcmu, 16000, OpusConfig::webrtc()).is_err());
        assert_eq!(pcm_rate(AudioCodec::Pcma, AudioCodec::G722), 16000);
        assert_eq!(pcm_rate(AudioCodec::G722, AudioCodec::Pcmu), 8000);
        assert_eq!(pcm_rate(AudioCodec::Opus, AudioCodec::Pcmu), 8000);
    }

    #[test]
    fn g711_and_g722_meet_through_the_resampler() {
        use crate::Pcm;
        use crate::analysis::{dominant_frequency, level_db, tone};
        // PCMA -> (8k -> 16k) -> G.722 -> (16k -> 8k) -> PCMA, 1 kHz at -10 dB.
        let mut pcma_enc = audio_encoder(AudioCodec::Pcma, 8000, OpusConfig::webrtc()).unwrap();
        let mut up = audio_decoder(
            AudioCodec::Pcma,
            pcm_rate(AudioCodec::Pcma, AudioCodec::G722),
        )
        .unwrap();
        let mut g722_enc = audio_encoder(AudioCodec::G722, 16000, OpusConfig::webrtc()).unwrap();
        let mut down = audio_decoder(
            AudioCodec::G722,
            pcm_rate(AudioCodec::G722, AudioCodec::Pcma),
        )
        .unwrap();
        let mut last = audio_decoder(AudioCodec::Pcma, 8000).unwrap();
        let input = tone(1000.0, -10.0, 8000, 8000);
        let empty = || Pcm {
            sample_rate: 0,
            channels: 1,
            samples: Vec::new(),
        };
        let (mut payload, mut wide, mut narrow, mut out) =
            (Vec::new(), empty(), empty(), Vec::new());
        for frame in input.chunks_exact(160) {
            let pcm = Pcm {
                sample_rate: 8000,
                channels: 1,
                samples: frame.to_vec(),
            };
            pcma_enc.encode(&pcm, &mut payload).unwrap();
            up.decode(&payload, &mut wide).unwrap();
            assert_eq!((wide.sample_rate, wide.samples.len()), (16000, 320));
            g722_enc.encode(&wide, &mut payload).unwrap();
            down.decode(&payload, &mut narrow).unwrap();
            assert_eq!((narrow.sample_rate, narrow.samples.len()), (8000, 160));
            pcma_enc.encode(&narrow, &mut payload).unwrap();
            last.decode(&payload, &mut narrow).unwrap();
            out.extend_from_slice(&narrow.samples);
        }
        let steady = &out[1600..];
        let (f, level) = (dominant_frequency(steady, 8000), level_db(steady));
        assert!((f - 1000.0).abs() < 10.0, "{f} Hz");
        assert!((level + 10.0).abs() < 1.0, "{level} dB");
    }

    #[test]
    fn h264_fmtp_decides_passthrough() {
        let chrome = H264Params::from_fmtp(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        )
        .unwrap();
        assert_eq!(chrome, H264Params::OURS);
        let polycom =
            H264Params::from_fmtp("profile-level-id=428016; packetization-mode=1; max-mbps=245000")
                .unwrap();
        assert!(
            !polycom.is_constrained_baseline(),
            "42 80: baseline without constraint_set1"
        );
        let cisco = H264Params::from_fmtp("profile-level-id=42801f;packetization-mode=0").unwrap();
        assert_eq!(cisco.packetization_mode, 0);
        let defaults = H264Params::from_fmtp("").unwrap();
        assert_eq!(
            (defaults.packetization_mode, defaults.profile_level_id),
            (0, [0x42, 0, 0x0a])
        );
        assert!(chrome.passthrough_compatible(
            &H264Params::from_fmtp("packetization-mode=1;profile-level-id=42c01e").unwrap()
        ));
        assert!(!chrome.passthrough_compatible(
            &H264Params::from_fmtp("packetization-mode=0;profile-level-id=42e01f").unwrap()
        ));
        assert!(H264Params::from_fmtp("packetization-mode=2").is_err());
        assert!(H264Params::from_fmtp("profile-level-id=zz").is_err());
        assert!(
            !H264Params::from_fmtp("profile-level-id=4d401f")
                .unwrap()
                .is_constrained_baseline()
        );
        assert!(
            H264Params::from_fmtp("profile-level-id=4d801f")
                .unwrap()
                .is_constrained_baseline()
        );
    }
}
