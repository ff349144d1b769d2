//! H.264 and VP8 depacketizers on arbitrary packet sequences: never a panic;
//! every frame that comes out packetizes and reassembles to itself.
//!
//! Input: a sequence of records `[flags, len, payload...]` where flags bit 0
//! is the marker, bit 1 a sequence gap, bit 2 a new timestamp.
#![no_main]

use causeway::media::{h264, vp8};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut h = h264::Depacketizer::default();
    let mut v = vp8::Depacketizer::default();
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut rest = data;
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let payload = &tail[..n];
        rest = &tail[n..];
        seq = seq.wrapping_add(if flags & 2 != 0 { 2 } else { 1 });
        if flags & 4 != 0 {
            ts = ts.wrapping_add(3000);
        }
        let marker = flags & 1 != 0;
        let h264_frame = h.push(seq, ts, marker, payload);
        // Random bytes may hold start codes that split a NAL into pieces with
        // reserved types; real encoders never emit those (emulation prevention).
        if let Ok(Some(frame)) = h264_frame.as_ref().map(|f| f.as_ref())
            && h264::nal_units(&frame.data).all(|n| (1..=23).contains(&(n[0] & 0x1f)))
        {
            let mut payloads = Vec::new();
            h264::Packetizer::new(h264::Mode::NonInterleaved, 1200)
                .packetize(&frame.data, &mut payloads)
                .expect("mode 1 packetizes anything");
            let mut d = h264::Depacketizer::default();
            let mut got = None;
            for (i, p) in payloads.iter().enumerate() {
                got = d.push(i as u16, 1, i + 1 == payloads.len(), p).expect("own payloads");
            }
            // AUD and filler NALs are dropped on the way out; nothing else changes.
            let kept: Vec<&[u8]> = h264::nal_units(&frame.data)
                .filter(|n| !matches!(n[0] & 0x1f, 9 | 12))
                .collect();
            let back: Vec<&[u8]> = got.as_ref().map(|f| h264::nal_units(&f.data).collect()).unwrap_or_default();
            assert_eq!(back, kept);
        }
        if let Ok(Some(frame)) = v.push(seq, ts, marker, payload) {
            let mut payloads = Vec::new();
            vp8::Packetizer::new(1200, 0).packetize(&frame.data, &mut payloads);
            let mut d = vp8::Depacketizer::default();
            let mut got = None;
            for (i, p) in payloads.iter().enumerate() {
                got = d.push(i as u16, 1, i + 1 == payloads.len(), p).expect("own payloads");
            }
            assert_eq!(got.map(|f| f.data), Some(frame.data));
        }
    }
});
