//! G.722 (wideband, 16 kHz audio) on FFmpeg's codec: what room systems
//! prefer when they cannot do Opus.
//!
//! The RTP clock quirk (RFC 3551 section 4.5.2): SDP says `G722/8000` and
//! timestamps advance 8000 per second although the audio is sampled at
//! 16 kHz, so a 20 ms frame is 320 samples, 160 bytes and 160 timestamp
//! units. This module deals in samples only; the media layer keeps the
//! clock. Owns the encoder/decoder and repeat-and-fade concealment.

use ff::{ChannelLayout, Packet, codec, frame};
use ffmpeg_next as ff;

use crate::{AudioDecoder, AudioEncoder, CodecError, Pcm, Repeat, pcm_format, read_pcm, write_pcm};

/// Audio sample rate of G.722.
pub const SAMPLE_RATE: u32 = 16_000;

/// A G.722 encoder (64 kbit/s mode).
pub struct G722Encoder {
    inner: ff::encoder::Audio,
    frame: frame::Audio,
    packet: Packet,
}

impl std::fmt::Debug for G722Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("G722Encoder").finish_non_exhaustive()
    }
}

impl G722Encoder {
    /// Opens FFmpeg's G.722 encoder.
    pub fn new() -> Result<Self, CodecError> {
        crate::ffmpeg_init();
        let c = ff::encoder::find(codec::Id::ADPCM_G722)
            .ok_or_else(|| CodecError::Unsupported("G722".into()))?;
        let mut enc = codec::context::Context::new_with_codec(c)
            .encoder()
            .audio()
            .map_err(|_| CodecError::InvalidInput)?;
        enc.set_rate(SAMPLE_RATE as i32);
        enc.set_format(pcm_format());
        enc.set_channel_layout(ChannelLayout::MONO);
        enc.set_channels(1);
        let inner = enc.open_as(c).map_err(|_| CodecError::InvalidInput)?;
        Ok(Self {
            inner,
            frame: frame::Audio::empty(),
            packet: Packet::empty(),
        })
    }
}

impl AudioEncoder for G722Encoder {
    fn encode(&mut self, pcm: &Pcm, out: &mut Vec<u8>) -> Result<(), CodecError> {
        // FFmpeg's encoder takes exactly its frame size (20 ms): a shorter
        // frame would be taken as the last of the stream and end the encoder.
        let n = pcm.samples.len();
        if pcm.sample_rate != SAMPLE_RATE
            || pcm.channels != 1
            || n != self.inner.frame_size() as usize
        {
            return Err(CodecError::InvalidInput);
        }
        if self.frame.samples() != n {
            self.frame = frame::Audio::new(pcm_format(), n, ChannelLayout::MONO);
            self.frame.set_rate(SAMPLE_RATE);
        }
        write_pcm(&mut self.frame, &pcm.samples);
        self.inner
            .send_frame(&self.frame)
            .map_err(|_| CodecError::InvalidInput)?;
        out.clear();
        while self.inner.receive_packet(&mut self.packet).is_ok() {
            out.extend_from_slice(self.packet.data().unwrap_or_default());
        }
        Ok(())
    }
}

/// A G.722 decoder with repeat-and-fade concealment.
pub struct G722Decoder {
    inner: ff::decoder::Audio,
    frame: frame::Audio,
    repeat: Repeat,
}

impl std::fmt::Debug for G722Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("G722Decoder").finish_non_exhaustive()
    }
}

impl G722Decoder {
    /// Opens FFmpeg's G.722 decoder.
    pub fn new() -> Result<Self, CodecError> {
        crate::ffmpeg_init();
        let c = ff::decoder::find(codec::Id::ADPCM_G722)
            .ok_or_else(|| CodecError::Unsupported("G722".into()))?;
        // The decoder sets mono S16 itself; G.722 needs no rate to decode.
        let inner = codec::context::Context::new_with_codec(c)
            .decoder()
            .audio()
            .map_err(|_| CodecError::InvalidInput)?;
        Ok(Self {
            inner,
            frame: frame::Audio::empty(),
            repeat: Repeat::default(),
        })
    }
}

impl AudioDecoder for G722Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut Pcm) -> Result<(), CodecError> {
        out.sample_rate = SAMPLE_RATE;
        out.channels = 1;
        out.samples.clear();
        if payload.is_empty() {
            return Err(CodecError::InvalidPayload);
        }
        self.inner
            .send_packet(&Packet::copy(payload))
            .map_err(|_| CodecError::InvalidPayload)?;
        while self.inner.receive_frame(&mut self.frame).is_ok() {
            read_pcm(&self.frame, &mut out.samples);
        }
        self.repeat.remember(&out.samples);
        Ok(())
    }

    fn conceal(
        &mut self,
        _next: Option<&[u8]>,
        samples: usize,
        out: &mut Pcm,
    ) -> Result<(), CodecError> {
        self.repeat.conceal(SAMPLE_RATE, samples, out);
        Ok(())
    }
}
