//! Interop: FFmpeg (a third-party RTP receiver) decodes the RTP streams our
//! packetizers produce, from an SDP file, for H.264 in packetization modes 1
//! and 0 and for VP8. Every picture FFmpeg decodes must equal the picture
//! decoded from the same encoded frames without RTP in between: nothing was
//! lost or altered on the wire.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use causeway::media::rtp::{self, RtpHeader};
use causeway::media::{h264, vp8};
use causeway_codecs::video::{
    VideoCodec, VideoConfig, VideoDecoder, VideoEncoder, VideoFrame, h264_access_units,
};
use common::{require, run_bounded};

const MTU: usize = 1200;

fn fixture_units() -> Vec<Vec<u8>> {
    h264_access_units(
        &std::fs::read(common::root().join("fixtures/video/testsrc2-640x360.h264")).unwrap(),
    )
}

fn decode_all(codec: VideoCodec, frames: &[Vec<u8>]) -> Vec<VideoFrame> {
    let mut dec = VideoDecoder::new(codec).unwrap();
    let mut out = Vec::new();
    for f in frames {
        let mut pic = VideoFrame::default();
        if dec.decode(f, &mut pic).unwrap() {
            out.push(pic);
        }
    }
    out
}

/// A free even port whose odd neighbour (RTCP) is free too.
fn rtp_port() -> u16 {
    loop {
        let p = common::free_port();
        if p.is_multiple_of(2) && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

fn listening(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| t.contains(&needle))
}

/// Sends `frames` as RTP to an FFmpeg reading `sdp_media`, and returns the
/// pictures FFmpeg decoded (640x360 I420).
fn ffmpeg_receives(
    sdp_media: &str,
    payloads: &[Vec<Vec<u8>>],
    expect_frames: usize,
) -> Vec<Vec<u8>> {
    require("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let port = rtp_port();
    let sdp = format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=causeway\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {port} RTP/AVP 96\r\n{sdp_media}"
    );
    let sdp_path = common::write(dir.path(), "stream.sdp", &sdp);
    let out_path = dir.path().join("out.yuv");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-protocol_whitelist", "file,udp,rtp"])
        // Parameters come from the SDP and the first keyframe: no long probe.
        .args(["-analyzeduration", "500000"])
        // One decoder thread: frame threads would hold the last pictures back.
        .args(["-threads", "1"])
        .arg("-i")
        .arg(&sdp_path)
        .args(["-frames:v", &expect_frames.to_string()])
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-y"])
        .arg(&out_path);
    let sender = std::thread::spawn(move || {
        for _ in 0..250 {
            if listening(port) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        (port, ())
    });
    let child_out = {
        // Spawn FFmpeg first, then send once it listens.
        let handle = std::thread::spawn(move || run_bounded(&mut cmd, Duration::from_secs(30)));
        let (port, ()) = sender.join().unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut seq: u16 = 40_000;
        let mut packet = Vec::new();
        for (n, frame) in payloads.iter().enumerate() {
            for (i, p) in frame.iter().enumerate() {
                let header = RtpHeader::new(
                    96,
                    seq,
                    90_000 / 30 * n as u32,
                    0x1234_5678,
                    i + 1 == frame.len(),
                );
                rtp::write(&mut packet, &header, p);
                sock.send_to(&packet, ("127.0.0.1", port)).unwrap();
                seq = seq.wrapping_add(1);
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        handle.join().unwrap()
    };
    assert!(
        child_out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&child_out.stderr)
    );
    let raw = std::fs::read(&out_path).unwrap();
    let size = 640 * 360 * 3 / 2;
    assert_eq!(raw.len() % size, 0);
    raw.chunks(size).map(<[u8]>::to_vec).collect()
}

/// Each frame's RTP payloads, from `packetize`.
fn payloads_of(
    frames: &[Vec<u8>],
    mut packetize: impl FnMut(&[u8], &mut Vec<Vec<u8>>),
) -> Vec<Vec<Vec<u8>>> {
    frames
        .iter()
        .map(|f| {
            let mut out = Vec::new();
            packetize(f, &mut out);
            out
        })
        .collect()
}

/// The first 30 source pictures, re-encoded by our encoder with `config`.
fn encode_source(config: VideoConfig) -> Vec<Vec<u8>> {
    let source = decode_all(VideoCodec::H264, &fixture_units());
    let mut enc = VideoEncoder::new(config).unwrap();
    source[..30]
        .iter()
        .map(|f| enc.encode(f, false).unwrap().unwrap().data)
        .collect()
}

fn i420(f: &VideoFrame) -> Vec<u8> {
    [f.y.as_slice(), &f.u, &f.v].concat()
}

/// FFmpeg's pictures equal ours, frame for frame.
fn assert_same_pictures(theirs: &[Vec<u8>], ours: &[VideoFrame]) {
    assert!(!theirs.is_empty());
    for (i, t) in theirs.iter().enumerate() {
        assert!(t == &i420(&ours[i]), "picture {i} differs");
    }
}

#[test]
fn ffmpeg_decodes_h264_mode1_rtp_bit_exact() {
    let units = fixture_units();
    let pk = h264::Packetizer::new(h264::Mode::NonInterleaved, MTU);
    let payloads = payloads_of(&units, |au, out| pk.packetize(au, out).unwrap());
    // The fixture's keyframe needs FU-A, its parameter sets STAP-A.
    assert!(payloads[0].iter().any(|p| p[0] & 0x1f == 28));
    assert!(payloads[0].iter().any(|p| p[0] & 0x1f == 24));
    // The last access unit ends only when FFmpeg's parser sees the next one.
    let want = units.len() - 1;
    let theirs = ffmpeg_receives(
        "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n",
        &payloads,
        want,
    );
    assert_eq!(theirs.len(), want);
    assert_same_pictures(&theirs, &decode_all(VideoCodec::H264, &units));
}

#[test]
fn ffmpeg_decodes_h264_mode0_rtp_from_our_encoder() {
    let units = encode_source(VideoConfig {
        max_slice_bytes: Some(MTU as u32),
        ..VideoConfig::new(VideoCodec::H264)
    });
    let pk = h264::Packetizer::new(h264::Mode::SingleNal, MTU);
    let payloads = payloads_of(&units, |au, out| pk.packetize(au, out).unwrap());
    assert!(
        payloads
            .iter()
            .flatten()
            .all(|p| !matches!(p[0] & 0x1f, 24 | 28))
    );
    let want = units.len() - 1;
    let theirs = ffmpeg_receives(
        "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=0\r\n",
        &payloads,
        want,
    );
    assert_eq!(theirs.len(), want);
    assert_same_pictures(&theirs, &decode_all(VideoCodec::H264, &units));
}

#[test]
fn ffmpeg_decodes_vp8_rtp_from_our_encoder() {
    let frames = encode_source(VideoConfig::new(VideoCodec::Vp8));
    let mut pk = vp8::Packetizer::new(MTU, 1000);
    let payloads = payloads_of(&frames, |f, out| pk.packetize(f, out));
    assert!(payloads[0].len() > 1, "the keyframe spans packets");
    let want = frames.len() - 1;
    let theirs = ffmpeg_receives("a=rtpmap:96 VP8/90000\r\n", &payloads, want);
    assert_eq!(theirs.len(), want);
    assert_same_pictures(&theirs, &decode_all(VideoCodec::Vp8, &frames));
}
