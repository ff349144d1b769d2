//! Golden video chains on the system FFmpeg: the fixture H.264 clip
//! transcoded to VP8 (and back) keeps its picture, keyframes come on
//! request, and packetization-mode=0 slices stay under the MTU.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use causeway_codecs::video::{
    EncodedFrame, VideoCodec, VideoConfig, VideoDecoder, VideoEncoder, VideoFrame,
    h264_access_units, psnr,
};

fn fixture() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/video/testsrc2-640x360.h264"
    );
    h264_access_units(&std::fs::read(path).unwrap())
}

/// Decodes the fixture into source pictures.
fn source_frames() -> Vec<VideoFrame> {
    let mut dec = VideoDecoder::new(VideoCodec::H264).unwrap();
    let mut frames = Vec::new();
    for au in fixture() {
        let mut f = VideoFrame::default();
        if dec.decode(&au, &mut f).unwrap() {
            frames.push(f);
        }
    }
    frames
}

/// Encodes `frames` with `to`, decodes them again, and returns the mean
/// luma PSNR against the input.
fn transcode_psnr(frames: &[VideoFrame], to: VideoCodec) -> f64 {
    let mut enc = VideoEncoder::new(VideoConfig {
        bitrate: 1_000_000,
        ..VideoConfig::new(to)
    })
    .unwrap();
    let mut dec = VideoDecoder::new(to).unwrap();
    let mut total = 0.0;
    for (i, src) in frames.iter().enumerate() {
        let EncodedFrame { data, keyframe } = enc
            .encode(src, false)
            .unwrap()
            .expect("zero latency: one out per frame in");
        assert_eq!(keyframe, i == 0, "frame {i}");
        let mut out = VideoFrame::default();
        assert!(
            dec.decode(&data, &mut out).unwrap(),
            "frame {i} decodes at once"
        );
        assert_eq!((out.width, out.height), (640, 360));
        total += psnr(src, &out);
    }
    total / frames.len() as f64
}

#[test]
fn h264_clip_to_vp8_and_back_keeps_psnr_above_30_db() {
    let frames = source_frames();
    assert_eq!(frames.len(), 60, "2 s at 30 fps");
    assert_eq!((frames[0].width, frames[0].height), (640, 360));
    let vp8 = transcode_psnr(&frames, VideoCodec::Vp8);
    eprintln!("H.264 fixture -> VP8 1 Mbit/s -> decoded: mean luma PSNR {vp8:.2} dB");
    assert!(vp8 >= 30.0, "VP8 PSNR {vp8:.2} dB");
    let h264 = transcode_psnr(&frames, VideoCodec::H264);
    eprintln!(
        "H.264 fixture -> H.264 (x264 baseline) 1 Mbit/s -> decoded: mean luma PSNR {h264:.2} dB"
    );
    assert!(h264 >= 30.0, "H.264 PSNR {h264:.2} dB");
}

#[test]
fn keyframes_come_on_request() {
    let frames = source_frames();
    for codec in [VideoCodec::H264, VideoCodec::Vp8] {
        let mut enc = VideoEncoder::new(VideoConfig::new(codec)).unwrap();
        let keys: Vec<bool> = frames[..6]
            .iter()
            .enumerate()
            .map(|(i, f)| enc.encode(f, i == 4).unwrap().unwrap().keyframe)
            .collect();
        assert_eq!(keys, [true, false, false, false, true, false], "{codec:?}");
        // A size change reopens the encoder with a keyframe.
        let small = VideoFrame::black(320, 180);
        assert!(enc.encode(&small, false).unwrap().unwrap().keyframe);
    }
}

#[test]
fn single_nal_mode_caps_slice_size() {
    let frames = source_frames();
    let mut enc = VideoEncoder::new(VideoConfig {
        max_slice_bytes: Some(1100),
        bitrate: 2_000_000,
        ..VideoConfig::new(VideoCodec::H264)
    })
    .unwrap();
    let mut nals = 0;
    for f in &frames[..10] {
        let au = enc.encode(f, false).unwrap().unwrap().data;
        // Every NAL between start codes is at most 1100 bytes.
        let mut starts: Vec<usize> = au
            .windows(3)
            .enumerate()
            .filter(|(_, w)| w == &[0, 0, 1])
            .map(|(i, _)| i + 3)
            .collect();
        starts.push(au.len() + 3);
        for pair in starts.windows(2) {
            let len = pair[1] - 3 - pair[0];
            assert!(len <= 1100 + 1, "NAL of {len} bytes");
            nals += 1;
        }
    }
    assert!(
        nals > 30,
        "keyframe at 2 Mbit/s must need several slices, got {nals} NALs"
    );
}

#[test]
fn garbage_is_an_error_or_nothing_never_a_crash() {
    for codec in [VideoCodec::H264, VideoCodec::Vp8] {
        let mut dec = VideoDecoder::new(codec).unwrap();
        let mut out = VideoFrame::default();
        for junk in [&[0u8; 0][..], &[0, 0, 0, 1, 0x65, 0xff, 0xff], &[0x9d; 64]] {
            let _ = dec.decode(junk, &mut out);
        }
    }
    let mut enc = VideoEncoder::new(VideoConfig::new(VideoCodec::Vp8)).unwrap();
    let bad = VideoFrame {
        width: 8,
        height: 8,
        ..VideoFrame::default()
    };
    assert!(enc.encode(&bad, false).is_err());
}
