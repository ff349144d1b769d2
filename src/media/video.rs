//! Video transcoding for one call direction: RTP payloads are reassembled
//! into frames (H.264 access units or VP8 frames), decoded, re-encoded in
//! the other leg's codec and packetized for it (H.264 packetization-mode 0
//! or 1, VP8).
//!
//! Owns the chain's state: a forced keyframe when the receiving side asks
//! (PLI, FIR, SIP INFO), and a flag telling the call layer to ask the
//! sending side for one when frames were lost upstream. No jitter buffer:
//! a frame is decoded as soon as its marker packet completes it, and the
//! output keeps the input's 90 kHz timing. Sans-IO like the rest of
//! `media`; the codecs live in `causeway-codecs`.

use std::time::Instant;

use causeway_codecs::CodecError;
use causeway_codecs::video::{VideoCodec, VideoConfig, VideoDecoder, VideoEncoder, VideoFrame};

use super::bridge::{DirectionStats, OutStream};
use super::rtp::RtpHeader;
use super::{DepacketizeError, Frame, h264, vp8};

/// What the outgoing side wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoOutput {
    /// Codec and encoder settings.
    pub config: VideoConfig,
    /// H.264 packetization mode (ignored for VP8). Mode 0 caps slices at the MTU.
    pub h264_mode: h264::Mode,
    /// Largest RTP payload to send.
    pub mtu: usize,
    /// Payload type to send.
    pub pt: u8,
}

enum Depacketizer {
    H264(h264::Depacketizer),
    Vp8(vp8::Depacketizer),
}

impl Depacketizer {
    fn push(&mut self, h: &RtpHeader, payload: &[u8]) -> Result<Option<Frame>, DepacketizeError> {
        match self {
            Self::H264(d) => d.push(h.sequence, h.timestamp, h.marker, payload),
            Self::Vp8(d) => d.push(h.sequence, h.timestamp, h.marker, payload),
        }
    }

    fn frames_lost(&self) -> u64 {
        match self {
            Self::H264(d) => d.frames_lost(),
            Self::Vp8(d) => d.frames_lost(),
        }
    }
}

enum Packetizer {
    H264(h264::Packetizer),
    Vp8(vp8::Packetizer),
}

/// Decode and re-encode one direction's video.
pub struct VideoTranscoder {
    depacketizer: Depacketizer,
    decoder: VideoDecoder,
    encoder: VideoEncoder,
    packetizer: Packetizer,
    out_pt: u8,
    picture: VideoFrame,
    payloads: Vec<Vec<u8>>,
    /// Input timestamp -> output timestamp offset, set on the first frame.
    ts_offset: Option<u32>,
    force_keyframe: bool,
    lost_seen: u64,
    upstream_keyframe: bool,
}

impl std::fmt::Debug for VideoTranscoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoTranscoder")
            .field("out_pt", &self.out_pt)
            .finish_non_exhaustive()
    }
}

impl VideoTranscoder {
    /// A chain from `from` (the incoming codec) to `to`.
    pub fn new(from: VideoCodec, to: VideoOutput) -> Result<Self, CodecError> {
        let mut config = to.config;
        let packetizer = match config.codec {
            VideoCodec::H264 => {
                if to.h264_mode == h264::Mode::SingleNal {
                    // Each slice must fit one packet: leave room for nothing else.
                    config.max_slice_bytes = Some(to.mtu as u32);
                }
                Packetizer::H264(h264::Packetizer::new(to.h264_mode, to.mtu))
            }
            VideoCodec::Vp8 => Packetizer::Vp8(vp8::Packetizer::new(to.mtu, rand::random())),
        };
        Ok(Self {
            depacketizer: match from {
                VideoCodec::H264 => Depacketizer::H264(h264::Depacketizer::default()),
                VideoCodec::Vp8 => Depacketizer::Vp8(vp8::Depacketizer::default()),
            },
            decoder: VideoDecoder::new(from)?,
            encoder: VideoEncoder::new(config)?,
            packetizer,
            out_pt: to.pt,
            picture: VideoFrame::default(),
            payloads: Vec::new(),
            ts_offset: None,
            // The receiver has nothing to decode from yet.
            force_keyframe: true,
            lost_seen: 0,
            upstream_keyframe: false,
        })
    }

    /// The receiving side asked for a keyframe (PLI, FIR or SIP INFO): the
    /// next frame out is one.
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Whether frames were lost or undecodable since the last call: the
    /// call layer should then ask the sending side for a keyframe.
    pub fn take_upstream_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.upstream_keyframe)
    }

    /// Takes one packet; when it completes a frame, the re-encoded frame's
    /// packets are appended to `out`.
    pub fn push(
        &mut self,
        now: Instant,
        h: &RtpHeader,
        payload: &[u8],
        stream: &mut OutStream,
        stats: &mut DirectionStats,
        out: &mut Vec<Vec<u8>>,
    ) {
        let frame = self.depacketizer.push(h, payload);
        let lost = self.depacketizer.frames_lost();
        if lost > self.lost_seen {
            stats.lost += lost - self.lost_seen;
            self.lost_seen = lost;
            self.upstream_keyframe = true;
        }
        let Ok(Some(frame)) = frame else {
            return;
        };
        let started = Instant::now();
        match self.decoder.decode(&frame.data, &mut self.picture) {
            Ok(true) => {}
            // Waiting for a keyframe, or corrupt: ask upstream for one.
            Ok(false) | Err(_) => {
                self.upstream_keyframe = true;
                stats.codec_time += started.elapsed();
                return;
            }
        }
        let force = std::mem::take(&mut self.force_keyframe);
        let encoded = self.encoder.encode(&self.picture, force);
        stats.codec_time += started.elapsed();
        let Ok(Some(encoded)) = encoded else {
            self.force_keyframe |= force;
            return;
        };
        self.payloads.clear();
        match &mut self.packetizer {
            Packetizer::H264(p) => {
                if p.packetize(&encoded.data, &mut self.payloads).is_err() {
                    // A slice over the MTU in mode 0: drop it, start clean.
                    self.force_keyframe = true;
                    return;
                }
            }
            Packetizer::Vp8(p) => p.packetize(&encoded.data, &mut self.payloads),
        }
        let offset = *self
            .ts_offset
            .get_or_insert_with(|| stream.continue_at(now).wrapping_sub(frame.timestamp));
        let ts = frame.timestamp.wrapping_add(offset);
        let last = self.payloads.len().saturating_sub(1);
        for (i, p) in self.payloads.iter().enumerate() {
            let mut packet = Vec::with_capacity(12 + p.len());
            stream.emit(
                now,
                RtpHeader::new(self.out_pt, 0, ts, 0, i == last),
                p,
                &mut packet,
            );
            stats.packets_out += 1;
            stats.bytes_out += p.len() as u64;
            out.push(packet);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::bridge::{Direction, Mode};
    use crate::media::rtp;
    use causeway_codecs::video::{h264_access_units, psnr};
    use std::time::Duration;

    fn source() -> (Vec<Vec<u8>>, Vec<VideoFrame>) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/video/testsrc2-640x360.h264"
        );
        let aus = h264_access_units(&std::fs::read(path).unwrap());
        let mut dec = VideoDecoder::new(VideoCodec::H264).unwrap();
        let frames = aus
            .iter()
            .filter_map(|au| {
                let mut f = VideoFrame::default();
                dec.decode(au, &mut f).unwrap().then_some(f)
            })
            .collect();
        (aus, frames)
    }

    /// The fixture as H.264 mode-1 RTP, 30 fps.
    fn h264_rtp(aus: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let p = h264::Packetizer::new(h264::Mode::NonInterleaved, 1200);
        let mut seq = 0u16;
        let mut packets = Vec::new();
        for (i, au) in aus.iter().enumerate() {
            let mut payloads = Vec::new();
            p.packetize(au, &mut payloads).unwrap();
            let last = payloads.len() - 1;
            for (k, pl) in payloads.iter().enumerate() {
                let mut pkt = Vec::new();
                rtp::write(
                    &mut pkt,
                    &RtpHeader::new(96, seq, 3000 * i as u32, 7, k == last),
                    pl,
                );
                seq = seq.wrapping_add(1);
                packets.push(pkt);
            }
        }
        packets
    }

    fn direction(from: VideoCodec, to: VideoCodec, mode: h264::Mode) -> Direction {
        let t = VideoTranscoder::new(
            from,
            VideoOutput {
                config: VideoConfig::new(to),
                h264_mode: mode,
                mtu: 1100,
                pt: 100,
            },
        )
        .unwrap();
        Direction::new(Mode::Video(Box::new(t)), 90000)
    }

    /// Depacketizes and decodes what a direction produced.
    fn decode_output(codec: VideoCodec, packets: &[Vec<u8>]) -> Vec<(VideoFrame, bool)> {
        let mut dep = match codec {
            VideoCodec::H264 => Depacketizer::H264(h264::Depacketizer::default()),
            VideoCodec::Vp8 => Depacketizer::Vp8(vp8::Depacketizer::default()),
        };
        let mut dec = VideoDecoder::new(codec).unwrap();
        let mut out = Vec::new();
        for p in packets {
            let h = RtpHeader::parse(p).unwrap();
            assert_eq!(h.payload_type, 100);
            assert!(h.payload(p).len() <= 1100, "payload over the MTU");
            if let Some(f) = dep.push(&h, h.payload(p)).unwrap() {
                let mut pic = VideoFrame::default();
                assert!(dec.decode(&f.data, &mut pic).unwrap());
                out.push((pic, f.keyframe));
            }
        }
        out
    }

    #[test]
    fn h264_rtp_to_vp8_rtp_keeps_the_picture() {
        let (aus, frames) = source();
        let mut d = direction(
            VideoCodec::H264,
            VideoCodec::Vp8,
            h264::Mode::NonInterleaved,
        );
        let t0 = Instant::now();
        let mut out = Vec::new();
        for (i, p) in h264_rtp(&aus).iter().enumerate() {
            d.on_packet(t0 + Duration::from_millis(i as u64), p, &mut out);
        }
        let decoded = decode_output(VideoCodec::Vp8, &out);
        assert_eq!(decoded.len(), frames.len(), "one frame out per frame in");
        assert!(decoded[0].1, "the first frame out is a keyframe");
        let mean = decoded
            .iter()
            .zip(&frames)
            .map(|((o, _), s)| psnr(s, o))
            .sum::<f64>()
            / frames.len() as f64;
        assert!(mean >= 30.0, "PSNR {mean:.2} dB");
        // Output timestamps keep the 30 fps spacing.
        let ts: Vec<u32> = out
            .iter()
            .map(|p| RtpHeader::parse(p).unwrap().timestamp)
            .collect();
        assert_eq!(
            ts.last().unwrap().wrapping_sub(ts[0]),
            3000 * (frames.len() as u32 - 1)
        );
        assert!(d.stats.codec_time > Duration::ZERO);
    }

    #[test]
    fn vp8_to_h264_mode_0_fits_the_mtu_and_keyframes_come_on_request() {
        let (_, frames) = source();
        // The source as VP8 RTP.
        let mut enc = VideoEncoder::new(VideoConfig::new(VideoCodec::Vp8)).unwrap();
        let mut pk = vp8::Packetizer::new(1200, 1);
        let mut input = Vec::new();
        let mut seq = 0u16;
        for (i, f) in frames.iter().take(20).enumerate() {
            let e = enc.encode(f, false).unwrap().unwrap();
            let mut payloads = Vec::new();
            pk.packetize(&e.data, &mut payloads);
            let last = payloads.len() - 1;
            for (k, pl) in payloads.iter().enumerate() {
                let mut pkt = Vec::new();
                rtp::write(
                    &mut pkt,
                    &RtpHeader::new(97, seq, 3000 * i as u32, 9, k == last),
                    pl,
                );
                seq = seq.wrapping_add(1);
                input.push(pkt);
            }
        }
        let mut d = direction(VideoCodec::Vp8, VideoCodec::H264, h264::Mode::SingleNal);
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut requested_at = 0;
        for (i, p) in input.iter().enumerate() {
            if i == input.len() / 2 {
                // One packet lost upstream: the call layer is asked for a keyframe.
                continue;
            }
            d.on_packet(t0, p, &mut out);
            if i == input.len() / 4 {
                d.request_keyframe();
                requested_at = decode_output(VideoCodec::H264, &out).len();
            }
        }
        assert!(
            d.take_upstream_keyframe_request(),
            "the lost packet asks upstream for a keyframe"
        );
        assert!(!d.take_upstream_keyframe_request());
        let keys: Vec<usize> = decode_output(VideoCodec::H264, &out)
            .iter()
            .enumerate()
            .filter_map(|(i, (_, k))| k.then_some(i))
            .collect();
        assert_eq!(
            keys,
            [0, requested_at],
            "keyframes: the first, and the one asked for"
        );
        // Every mode-0 packet is a single NAL unit (types 1-23).
        for p in &out {
            let h = RtpHeader::parse(p).unwrap();
            let t = h.payload(p)[0] & 0x1f;
            assert!((1..=23).contains(&t), "NAL type {t} in mode 0");
        }
    }
}
