//! Video codecs on the system FFmpeg (`ffmpeg-next`): H.264 decoded by
//! libavcodec and encoded by libx264 (constrained baseline, zerolatency,
//! superfast), VP8 encoded by libvpx in realtime mode (cpu-used 16) and
//! decoded by libavcodec; scaling by libswscale when sizes differ.
//!
//! Owns [`VideoFrame`] (tightly packed I420), the encoder and decoder
//! settings a real-time gateway needs (one thread, no frame delay, forced
//! keyframes, slice size for packetization-mode 0), and one of the crate's
//! two `unsafe` lines: declaring a scaler `Send` (the other is the
//! resampler's). It must not know about RTP.

use ff::codec::{self, threading};
use ff::format::Pixel;
use ff::software::scaling;
use ff::{Dictionary, Packet, Rational, frame, picture};
use ffmpeg_next as ff;

use crate::CodecError;

/// A decoded picture, I420 (YUV 4:2:0, 8-bit), planes without padding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VideoFrame {
    /// Luma width in pixels (even).
    pub width: u32,
    /// Luma height in pixels (even).
    pub height: u32,
    /// Y plane, `width * height` bytes.
    pub y: Vec<u8>,
    /// U plane, `width/2 * height/2` bytes.
    pub u: Vec<u8>,
    /// V plane, same size as U.
    pub v: Vec<u8>,
}

impl VideoFrame {
    /// A black frame of the given size.
    pub fn black(width: u32, height: u32) -> Self {
        let (w, h) = (width as usize, height as usize);
        Self {
            width,
            height,
            y: vec![16; w * h],
            u: vec![128; w.div_ceil(2) * h.div_ceil(2)],
            v: vec![128; w.div_ceil(2) * h.div_ceil(2)],
        }
    }

    fn check(&self) -> Result<(), CodecError> {
        let (w, h) = (self.width as usize, self.height as usize);
        let c = w.div_ceil(2) * h.div_ceil(2);
        if w == 0 || h == 0 || self.y.len() != w * h || self.u.len() != c || self.v.len() != c {
            return Err(CodecError::InvalidInput);
        }
        Ok(())
    }

    /// Copies into an FFmpeg frame of the same size (respecting its strides).
    fn write_to(&self, f: &mut frame::Video) {
        let (w, h) = (self.width as usize, self.height as usize);
        for (i, (plane, pw, ph)) in [
            (&self.y, w, h),
            (&self.u, w.div_ceil(2), h.div_ceil(2)),
            (&self.v, w.div_ceil(2), h.div_ceil(2)),
        ]
        .into_iter()
        .enumerate()
        {
            let stride = f.stride(i);
            let data = f.data_mut(i);
            for row in 0..ph {
                data[row * stride..row * stride + pw]
                    .copy_from_slice(&plane[row * pw..(row + 1) * pw]);
            }
        }
    }

    /// Copies out of an FFmpeg I420 frame.
    fn read_from(&mut self, f: &frame::Video) {
        self.width = f.width();
        self.height = f.height();
        let (w, h) = (self.width as usize, self.height as usize);
        for (i, plane) in [&mut self.y, &mut self.u, &mut self.v]
            .into_iter()
            .enumerate()
        {
            let (pw, ph) = if i == 0 {
                (w, h)
            } else {
                (w.div_ceil(2), h.div_ceil(2))
            };
            let stride = f.stride(i);
            let data = f.data(i);
            plane.clear();
            for row in 0..ph {
                plane.extend_from_slice(&data[row * stride..row * stride + pw]);
            }
        }
    }
}

/// PSNR of the luma planes in dB (infinite for identical frames). Frames
/// must have the same size.
pub fn psnr(a: &VideoFrame, b: &VideoFrame) -> f64 {
    if a.y.len() != b.y.len() || a.y.is_empty() {
        return 0.0;
    }
    let se: u64 =
        a.y.iter()
            .zip(&b.y)
            .map(|(&x, &y)| u64::from(x.abs_diff(y)).pow(2))
            .sum();
    if se == 0 {
        return f64::INFINITY;
    }
    let mse = se as f64 / a.y.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Which video codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264 / AVC.
    H264,
    /// VP8.
    Vp8,
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoConfig {
    /// Codec to produce.
    pub codec: VideoCodec,
    /// Target bitrate in bits per second.
    pub bitrate: u32,
    /// Nominal frame rate (rate control assumes it).
    pub fps: u32,
    /// Encoder threads (1 unless told otherwise: many calls share the cores).
    pub threads: u32,
    /// H.264 only: cap NAL units at this many bytes (packetization-mode=0).
    pub max_slice_bytes: Option<u32>,
    /// Frames between periodic keyframes.
    pub keyframe_interval: u32,
}

impl VideoConfig {
    /// Defaults for a codec: 1 Mbit/s, 30 fps, one thread, keyframe every 10 s.
    pub fn new(codec: VideoCodec) -> Self {
        Self {
            codec,
            bitrate: 1_000_000,
            fps: 30,
            threads: 1,
            max_slice_bytes: None,
            keyframe_interval: 300,
        }
    }
}

/// One encoded picture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncodedFrame {
    /// Annex B access unit (H.264) or VP8 frame.
    pub data: Vec<u8>,
    /// Whether it decodes on its own.
    pub keyframe: bool,
}

/// Encodes [`VideoFrame`]s, reopening itself when the input size changes.
pub struct VideoEncoder {
    config: VideoConfig,
    inner: Option<(ff::encoder::Video, u32, u32)>,
    frame: frame::Video,
    packet: Packet,
    pts: i64,
}

impl std::fmt::Debug for VideoEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoEncoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl VideoEncoder {
    /// An encoder; the codec library is opened on the first frame.
    pub fn new(config: VideoConfig) -> Result<Self, CodecError> {
        crate::ffmpeg_init();
        let name = encoder_name(config.codec);
        if ff::encoder::find_by_name(name).is_none() {
            return Err(CodecError::Unsupported(name.into()));
        }
        Ok(Self {
            config,
            inner: None,
            frame: frame::Video::empty(),
            packet: Packet::empty(),
            pts: 0,
        })
    }

    fn open(&self, width: u32, height: u32) -> Result<ff::encoder::Video, CodecError> {
        let c = &self.config;
        let name = encoder_name(c.codec);
        let codec =
            ff::encoder::find_by_name(name).ok_or_else(|| CodecError::Unsupported(name.into()))?;
        let mut ctx = codec::context::Context::new_with_codec(codec);
        ctx.set_threading(threading::Config {
            kind: threading::Type::Slice,
            count: c.threads.max(1) as usize,
            ..Default::default()
        });
        let mut enc = ctx
            .encoder()
            .video()
            .map_err(|_| CodecError::InvalidInput)?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(Rational::new(1, c.fps.max(1) as i32));
        enc.set_frame_rate(Some(Rational::new(c.fps.max(1) as i32, 1)));
        enc.set_bit_rate(c.bitrate as usize);
        enc.set_max_bit_rate(c.bitrate as usize);
        enc.set_gop(c.keyframe_interval.max(1));
        enc.set_max_b_frames(0);
        let mut opts = Dictionary::new();
        match c.codec {
            VideoCodec::H264 => {
                // superfast: VP8 -> H.264 at 640x360 1.15x cheaper than veryfast, 1 dB lower PSNR.
                opts.set("preset", "superfast");
                opts.set("tune", "zerolatency");
                // x264's "baseline" is constrained baseline (42e0xx).
                opts.set("profile", "baseline");
                opts.set("forced-idr", "1");
                let mut params = format!("repeat-headers=1:vbv-bufsize={}", c.bitrate / 1000);
                if let Some(max) = c.max_slice_bytes {
                    params.push_str(&format!(":slice-max-size={max}"));
                }
                opts.set("x264-params", &params);
            }
            VideoCodec::Vp8 => {
                // cpu-used 16 is libvpx's fastest realtime speed: measured here
                // 1.8x cheaper than 8 for 2 dB of PSNR (bench/RESULTS.md).
                opts.set("deadline", "realtime");
                opts.set("cpu-used", "16");
                opts.set("lag-in-frames", "0");
                opts.set("auto-alt-ref", "0");
                opts.set("error-resilient", "1");
                opts.set("static-thresh", "0");
            }
        }
        enc.open_with(opts).map_err(|_| CodecError::InvalidInput)
    }

    /// Encodes one picture; `force_keyframe` makes it an IDR / key frame
    /// (answering a PLI/FIR or a SIP INFO picture_fast_update). Returns
    /// `None` when the encoder produced nothing for this input.
    pub fn encode(
        &mut self,
        input: &VideoFrame,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, CodecError> {
        input.check()?;
        let reopen =
            !matches!(&self.inner, Some((_, w, h)) if *w == input.width && *h == input.height);
        if reopen {
            let enc = self.open(input.width, input.height)?;
            self.inner = Some((enc, input.width, input.height));
            self.frame = frame::Video::new(Pixel::YUV420P, input.width, input.height);
        }
        let Some((enc, _, _)) = self.inner.as_mut() else {
            return Err(CodecError::InvalidInput);
        };
        input.write_to(&mut self.frame);
        self.frame.set_pts(Some(self.pts));
        self.pts += 1;
        self.frame.set_kind(if force_keyframe || reopen {
            picture::Type::I
        } else {
            picture::Type::None
        });
        enc.send_frame(&self.frame)
            .map_err(|_| CodecError::InvalidInput)?;
        let mut out: Option<EncodedFrame> = None;
        while enc.receive_packet(&mut self.packet).is_ok() {
            let e = out.get_or_insert_with(EncodedFrame::default);
            e.data
                .extend_from_slice(self.packet.data().unwrap_or_default());
            e.keyframe |= self.packet.is_key();
        }
        Ok(out)
    }
}

fn encoder_name(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::H264 => "libx264",
        VideoCodec::Vp8 => "libvpx",
    }
}

/// Decodes H.264 access units or VP8 frames into [`VideoFrame`]s.
pub struct VideoDecoder {
    inner: ff::decoder::Video,
    frame: frame::Video,
    scaler: Option<Scaler>,
}

impl std::fmt::Debug for VideoDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoDecoder").finish_non_exhaustive()
    }
}

impl VideoDecoder {
    /// A single-threaded decoder with no frame delay.
    pub fn new(codec: VideoCodec) -> Result<Self, CodecError> {
        crate::ffmpeg_init();
        let id = match codec {
            VideoCodec::H264 => codec::Id::H264,
            VideoCodec::Vp8 => codec::Id::VP8,
        };
        let c = ff::decoder::find(id)
            .ok_or_else(|| CodecError::Unsupported(format!("{id:?} decoder")))?;
        let mut ctx = codec::context::Context::new_with_codec(c);
        ctx.set_threading(threading::Config {
            kind: threading::Type::None,
            count: 1,
            ..Default::default()
        });
        ctx.set_flags(codec::Flags::LOW_DELAY);
        let inner = ctx
            .decoder()
            .video()
            .map_err(|_| CodecError::InvalidInput)?;
        Ok(Self {
            inner,
            frame: frame::Video::empty(),
            scaler: None,
        })
    }

    /// Decodes one access unit / frame. `Ok(false)` means the decoder had
    /// nothing to show yet (e.g. waiting for a keyframe).
    pub fn decode(&mut self, data: &[u8], out: &mut VideoFrame) -> Result<bool, CodecError> {
        self.inner
            .send_packet(&Packet::copy(data))
            .map_err(|_| CodecError::InvalidPayload)?;
        let mut got = false;
        while self.inner.receive_frame(&mut self.frame).is_ok() {
            if self.frame.format() == Pixel::YUV420P {
                out.read_from(&self.frame);
            } else {
                // Other layouts (4:2:2 from some room systems, full-range
                // YUVJ from MJPEG-era encoders): convert to limited-range I420.
                let (w, h) = (self.frame.width(), self.frame.height());
                let scaler = match &mut self.scaler {
                    Some(s) if s.matches(self.frame.format(), w, h, w, h) => s,
                    slot => slot.insert(Scaler::new(self.frame.format(), w, h, w, h)?),
                };
                scaler.run(&self.frame, out)?;
            }
            got = true;
        }
        Ok(got)
    }
}

/// libswscale context converting to I420 at a target size.
pub struct Scaler {
    ctx: SendScaler,
    key: (Pixel, u32, u32, u32, u32),
    /// Input frame for [`Scaler::scale`], allocated once.
    input: Option<frame::Video>,
    out: frame::Video,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler").finish_non_exhaustive()
    }
}

struct SendScaler(scaling::Context);

// SAFETY: an SwsContext holds no thread-local state and is only used through
// `&mut self` of the one `Scaler` that owns it, so moving it to another thread
// between calls is sound (FFmpeg documents contexts as usable from any thread,
// just not concurrently).
unsafe impl Send for SendScaler {}

impl Scaler {
    fn new(from: Pixel, w: u32, h: u32, to_w: u32, to_h: u32) -> Result<Self, CodecError> {
        let ctx = scaling::Context::get(
            from,
            w,
            h,
            Pixel::YUV420P,
            to_w,
            to_h,
            scaling::Flags::BILINEAR,
        )
        .map_err(|_| CodecError::InvalidInput)?;
        Ok(Self {
            ctx: SendScaler(ctx),
            key: (from, w, h, to_w, to_h),
            input: None,
            out: frame::Video::new(Pixel::YUV420P, to_w, to_h),
        })
    }

    /// An I420 scaler between two sizes.
    pub fn i420(w: u32, h: u32, to_w: u32, to_h: u32) -> Result<Self, CodecError> {
        crate::ffmpeg_init();
        Self::new(Pixel::YUV420P, w, h, to_w, to_h)
    }

    fn matches(&self, from: Pixel, w: u32, h: u32, to_w: u32, to_h: u32) -> bool {
        self.key == (from, w, h, to_w, to_h)
    }

    fn run(&mut self, input: &frame::Video, out: &mut VideoFrame) -> Result<(), CodecError> {
        self.ctx
            .0
            .run(input, &mut self.out)
            .map_err(|_| CodecError::InvalidInput)?;
        out.read_from(&self.out);
        Ok(())
    }

    /// Scales an I420 frame (sizes as given to [`Scaler::i420`]).
    pub fn scale(&mut self, input: &VideoFrame, out: &mut VideoFrame) -> Result<(), CodecError> {
        input.check()?;
        let (_, w, h, _, _) = self.key;
        if (input.width, input.height) != (w, h) {
            return Err(CodecError::InvalidInput);
        }
        let mut f = self
            .input
            .take()
            .unwrap_or_else(|| frame::Video::new(Pixel::YUV420P, w, h));
        input.write_to(&mut f);
        let result = self.run(&f, out);
        self.input = Some(f);
        result
    }
}

/// Splits an Annex B byte stream into NAL units (start codes removed).
pub fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = stream;
    // Skip to the first start code.
    match find_start(rest) {
        Some((at, len)) => rest = &rest[at + len..],
        None => rest = &[],
    }
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (nal, next) = match find_start(rest) {
            Some((at, len)) => (&rest[..at], &rest[at + len..]),
            None => (rest, &[][..]),
        };
        rest = next;
        Some(nal)
    })
    .filter(|nal| !nal.is_empty())
}

/// Position and length (3 or 4) of the next start code.
fn find_start(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 3 <= buf.len() {
        if buf[i + 2] > 1 {
            i += 3;
        } else if buf[i] == 0 && buf[i + 1] == 0 && buf[i + 2] == 1 {
            return Some(if i > 0 && buf[i - 1] == 0 {
                (i - 1, 4)
            } else {
                (i, 3)
            });
        } else {
            i += 1;
        }
    }
    None
}

/// Splits an Annex B H.264 stream into access units (what a decoder packet
/// or an RTP frame carries): a new unit starts at an AUD, SPS, PPS or SEI
/// after a slice, or at a slice whose `first_mb_in_slice` is 0. Every NAL
/// unit is written with a 4-byte start code.
pub fn h264_access_units(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut units: Vec<Vec<u8>> = Vec::new();
    let mut current = Vec::new();
    let mut seen_slice = false;
    for nal in nal_units(stream) {
        let kind = nal[0] & 0x1f;
        let first_mb_zero = nal.get(1).is_some_and(|b| b & 0x80 != 0);
        let boundary = match kind {
            6..=9 => seen_slice,
            1 | 5 => seen_slice && first_mb_zero,
            _ => false,
        };
        if boundary && !current.is_empty() {
            units.push(std::mem::take(&mut current));
            seen_slice = false;
        }
        seen_slice |= matches!(kind, 1 | 5);
        current.extend_from_slice(&[0, 0, 0, 1]);
        current.extend_from_slice(nal);
    }
    if !current.is_empty() {
        units.push(current);
    }
    units
}
