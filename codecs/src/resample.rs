//! Sample-rate conversion on libswresample, for the audio paths whose two
//! codecs share no PCM rate (G.711 at 8 kHz <-> G.722 at 16 kHz). Paths
//! with Opus never come here: Opus runs at the other side's rate.
//!
//! Owns the resampler and [`Resampled`], a decoder wrapper that hands out
//! PCM at the rate the encoder takes. Every call converts one frame into
//! exactly `len * to / from` samples: the filter's delay is paid once, as
//! leading silence in the first frame, so frames stay 20 ms long and the
//! output line has no gaps.

use ff::software::resampling;
use ff::{ChannelLayout, frame};
use ffmpeg_next as ff;

use crate::{AudioDecoder, CodecError, Pcm, pcm_format, read_pcm, write_pcm};

struct SendResampler(resampling::Context);

// SAFETY: an SwrContext holds no thread-local state and is only used through
// `&mut self` of the one `Resampler` that owns it, so moving it to another
// thread between calls is sound (FFmpeg contexts may be used from any thread,
// just not concurrently).
unsafe impl Send for SendResampler {}

/// Mono 16-bit PCM from one rate to another.
pub struct Resampler {
    ctx: SendResampler,
    from: u32,
    to: u32,
    /// Frames reused from call to call (grown when the input grows), and
    /// the input length they were allocated for.
    capacity: usize,
    src: frame::Audio,
    dst: frame::Audio,
    /// Converted samples not yet handed out.
    pending: Vec<i16>,
    primed: bool,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// A converter from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Self, CodecError> {
        crate::ffmpeg_init();
        let ctx = resampling::Context::get(
            pcm_format(),
            ChannelLayout::MONO,
            from,
            pcm_format(),
            ChannelLayout::MONO,
            to,
        )
        .map_err(|_| CodecError::InvalidInput)?;
        Ok(Self {
            ctx: SendResampler(ctx),
            from,
            to,
            capacity: 0,
            src: frame::Audio::empty(),
            dst: frame::Audio::empty(),
            pending: Vec::new(),
            primed: false,
        })
    }

    /// Converts one frame, replacing `out` with exactly
    /// `input.len() * to / from` samples.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), CodecError> {
        let want = input.len() * self.to as usize / self.from as usize;
        // Output room: this frame plus whatever the filter still holds.
        if self.capacity < input.len() {
            self.capacity = input.len();
            self.src = frame::Audio::new(pcm_format(), input.len(), ChannelLayout::MONO);
            self.src.set_rate(self.from);
            let room = self.capacity * self.to as usize / self.from as usize + 64;
            self.dst = frame::Audio::new(pcm_format(), room, ChannelLayout::MONO);
        }
        let room = want + 64;
        // swr_convert_frame reads nb_samples as the input length and the
        // output capacity, and leaves the produced count in the output.
        self.src.set_samples(input.len());
        write_pcm(&mut self.src, input);
        self.dst.set_samples(room);
        self.ctx
            .0
            .run(&self.src, &mut self.dst)
            .map_err(|_| CodecError::InvalidInput)?;
        read_pcm(&self.dst, &mut self.pending);
        if !self.primed {
            // The filter's delay: lead with silence once instead of a short frame.
            self.primed = true;
            let short = want.saturating_sub(self.pending.len());
            self.pending.splice(0..0, std::iter::repeat_n(0, short));
        }
        out.clear();
        let take = want.min(self.pending.len());
        out.extend(self.pending.drain(..take));
        out.resize(want, 0);
        Ok(())
    }
}

/// A decoder whose PCM is converted to another rate.
pub struct Resampled {
    inner: Box<dyn AudioDecoder>,
    resampler: Resampler,
    native: Pcm,
}

impl std::fmt::Debug for Resampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampled")
            .field("resampler", &self.resampler)
            .finish_non_exhaustive()
    }
}

impl Resampled {
    /// `inner` decodes at `native` Hz; this hands out PCM at `rate` Hz.
    pub fn new(inner: Box<dyn AudioDecoder>, native: u32, rate: u32) -> Result<Self, CodecError> {
        Ok(Self {
            inner,
            resampler: Resampler::new(native, rate)?,
            native: Pcm {
                sample_rate: native,
                channels: 1,
                samples: Vec::new(),
            },
        })
    }

    fn convert(&mut self, out: &mut Pcm) -> Result<(), CodecError> {
        out.sample_rate = self.resampler.to;
        out.channels = 1;
        self.resampler
            .process(&self.native.samples, &mut out.samples)
    }
}

impl AudioDecoder for Resampled {
    fn decode(&mut self, payload: &[u8], out: &mut Pcm) -> Result<(), CodecError> {
        self.inner.decode(payload, &mut self.native)?;
        self.convert(out)
    }

    fn conceal(
        &mut self,
        next: Option<&[u8]>,
        samples: usize,
        out: &mut Pcm,
    ) -> Result<(), CodecError> {
        let native = samples * self.resampler.from as usize / self.resampler.to as usize;
        self.inner.conceal(next, native, &mut self.native)?;
        self.convert(out)
    }

    fn bandwidth(&self, payload: &[u8]) -> Option<u32> {
        self.inner.bandwidth(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{dominant_frequency, level_db, tone};

    #[test]
    fn a_tone_keeps_its_frequency_and_level_both_ways() {
        for (from, to) in [(8000, 16000), (16000, 8000)] {
            let input = tone(1000.0, -10.0, from, from as usize);
            let mut r = Resampler::new(from, to).unwrap();
            let mut all = Vec::new();
            let mut out = Vec::new();
            for frame in input.chunks_exact(from as usize / 50) {
                r.process(frame, &mut out).unwrap();
                assert_eq!(out.len(), to as usize / 50, "20 ms in, 20 ms out");
                all.extend_from_slice(&out);
            }
            // Skip the first frame (the filter's lead-in).
            let steady = &all[to as usize / 50..];
            let f = dominant_frequency(steady, to);
            let level = level_db(steady);
            assert!((f - 1000.0).abs() < 10.0, "{from}->{to}: {f} Hz");
            assert!((level + 10.0).abs() < 1.0, "{from}->{to}: {level} dB");
        }
    }
}
