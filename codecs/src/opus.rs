//! Opus (RFC 6716, RTP per RFC 7587) on the system libopus through the
//! `opus` crate's safe API.
//!
//! The RTP clock of Opus is always 48 kHz, but the codec can run at 8, 12,
//! 16, 24 or 48 kHz internally. When the other leg is G.711, run both ends at
//! 8 kHz: libopus resamples inside its own band-limited analysis, so no
//! separate resampler is needed on that path, it costs less, and no
//! resampler delay is added. Owns encoder settings (complexity, bitrate,
//! FEC, DTX) and decoder concealment (PLC, in-band FEC recovery); must not
//! know about RTP timestamps.

use opus::{Application, Bitrate, Channels};

use crate::{AudioDecoder, AudioEncoder, CodecError, Pcm};

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// Internal sample rate: 8000, 12000, 16000, 24000 or 48000.
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u8,
    /// 0 (cheapest) to 10 (best).
    pub complexity: u8,
    /// Target bitrate in bits per second.
    pub bitrate: u32,
    /// In-band forward error correction (helps the far end over loss).
    pub fec: bool,
    /// Discontinuous transmission: near-silent frames are not sent.
    pub dtx: bool,
}

impl OpusConfig {
    /// Base settings for browsers: 48 kHz mono voice, FEC and DTX on,
    /// complexity 5. The gateway's transcoding turns DTX off and takes the
    /// complexity from its `media.opus_complexity`.
    pub fn webrtc() -> Self {
        Self {
            sample_rate: 48_000,
            channels: 1,
            complexity: 5,
            bitrate: 32_000,
            fec: true,
            dtx: true,
        }
    }

    /// Base settings for bridging G.711: as [`Self::webrtc`], narrowband
    /// at 8 kHz (no resampler on the path) and 20 kbit/s.
    pub fn narrowband() -> Self {
        Self {
            sample_rate: 8_000,
            bitrate: 20_000,
            ..Self::webrtc()
        }
    }
}

fn channels(n: u8) -> Result<Channels, CodecError> {
    match n {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        _ => Err(CodecError::InvalidInput),
    }
}

fn check_rate(rate: u32) -> Result<(), CodecError> {
    if matches!(rate, 8000 | 12000 | 16000 | 24000 | 48000) {
        Ok(())
    } else {
        Err(CodecError::InvalidInput)
    }
}

fn opus_err(_: opus::Error) -> CodecError {
    CodecError::InvalidPayload
}

/// An Opus encoder.
pub struct OpusEncoder {
    inner: opus::Encoder,
    config: OpusConfig,
    buf: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("config", &self.config)
            .finish()
    }
}

impl OpusEncoder {
    /// Opens an encoder; settings out of range are an [`CodecError::InvalidInput`].
    pub fn new(config: OpusConfig) -> Result<Self, CodecError> {
        check_rate(config.sample_rate)?;
        if config.complexity > 10 || !(6_000..=510_000).contains(&config.bitrate) {
            return Err(CodecError::InvalidInput);
        }
        let mut inner = opus::Encoder::new(
            config.sample_rate,
            channels(config.channels)?,
            Application::Voip,
        )
        .map_err(|_| CodecError::InvalidInput)?;
        let setup = |e: &mut opus::Encoder| -> Result<(), opus::Error> {
            e.set_complexity(i32::from(config.complexity))?;
            e.set_bitrate(Bitrate::Bits(config.bitrate as i32))?;
            e.set_inband_fec(config.fec)?;
            // FEC only engages when the encoder expects loss.
            e.set_packet_loss_perc(if config.fec { 10 } else { 0 })?;
            e.set_dtx(config.dtx)
        };
        setup(&mut inner).map_err(|_| CodecError::InvalidInput)?;
        Ok(Self {
            inner,
            config,
            buf: vec![0; 1500],
        })
    }

    /// The settings this encoder was opened with.
    pub fn config(&self) -> OpusConfig {
        self.config
    }

    /// Algorithmic delay the encoder adds, in samples at its sample rate.
    pub fn lookahead(&mut self) -> Result<u32, CodecError> {
        let n = self
            .inner
            .get_lookahead()
            .map_err(|_| CodecError::InvalidInput)?;
        Ok(n.max(0) as u32)
    }
}

impl AudioEncoder for OpusEncoder {
    /// Encodes 2.5 to 60 ms of PCM. With DTX, `out` is left empty for frames
    /// that need not be sent.
    fn encode(&mut self, pcm: &Pcm, out: &mut Vec<u8>) -> Result<(), CodecError> {
        if pcm.sample_rate != self.config.sample_rate || pcm.channels != self.config.channels {
            return Err(CodecError::InvalidInput);
        }
        let n = self
            .inner
            .encode(&pcm.samples, &mut self.buf)
            .map_err(|_| CodecError::InvalidInput)?;
        out.clear();
        // libopus signals DTX frames with packets of one or two bytes.
        if !(self.config.dtx && n <= 2) {
            out.extend_from_slice(&self.buf[..n]);
        }
        Ok(())
    }
}

/// An Opus decoder with packet-loss concealment.
pub struct OpusDecoder {
    inner: opus::Decoder,
    sample_rate: u32,
    channels: u8,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("sample_rate", &self.sample_rate)
            .field("channels", &self.channels)
            .finish()
    }
}

impl OpusDecoder {
    /// Opens a decoder producing PCM at `sample_rate` (any Opus rate,
    /// whatever the sender used).
    pub fn new(sample_rate: u32, channels_out: u8) -> Result<Self, CodecError> {
        check_rate(sample_rate)?;
        Ok(Self {
            inner: opus::Decoder::new(sample_rate, channels(channels_out)?)
                .map_err(|_| CodecError::InvalidInput)?,
            sample_rate,
            channels: channels_out,
        })
    }

    fn run(
        &mut self,
        payload: &[u8],
        samples: usize,
        fec: bool,
        out: &mut Pcm,
    ) -> Result<(), CodecError> {
        let ch = usize::from(self.channels);
        out.sample_rate = self.sample_rate;
        out.channels = self.channels;
        out.samples.resize(samples * ch, 0);
        let n = self
            .inner
            .decode(payload, &mut out.samples, fec)
            .map_err(opus_err)?;
        out.samples.truncate(n * ch);
        Ok(())
    }
}

impl AudioDecoder for OpusDecoder {
    fn decode(&mut self, payload: &[u8], out: &mut Pcm) -> Result<(), CodecError> {
        if payload.is_empty() {
            return Err(CodecError::InvalidPayload);
        }
        // Up to 120 ms per packet.
        let max = self.sample_rate as usize * 120 / 1000;
        self.run(payload, max, false, out)
    }

    /// Recovers a lost frame from the next packet's in-band FEC when there is
    /// one, else libopus's packet-loss concealment.
    fn conceal(
        &mut self,
        next: Option<&[u8]>,
        samples: usize,
        out: &mut Pcm,
    ) -> Result<(), CodecError> {
        match next {
            Some(p) if !p.is_empty() => self.run(p, samples, true, out),
            _ => self.run(&[], samples, false, out),
        }
    }

    fn bandwidth(&self, payload: &[u8]) -> Option<u32> {
        packet_bandwidth(payload)
    }
}

/// The audio bandwidth of an Opus packet, from its TOC byte (RFC 6716
/// section 3.1, read by libopus), as the sample rate that holds it:
/// narrowband 8000, medium-band 12000, wideband 16000, super-wideband
/// 24000, full band 48000.
pub fn packet_bandwidth(packet: &[u8]) -> Option<u32> {
    use opus::Bandwidth;
    Some(match opus::packet::get_bandwidth(packet).ok()? {
        Bandwidth::Narrowband => 8000,
        Bandwidth::Mediumband => 12000,
        Bandwidth::Wideband => 16000,
        Bandwidth::Superwideband => 24000,
        Bandwidth::Fullband | Bandwidth::Auto => 48000,
    })
}
