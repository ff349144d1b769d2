//! Golden audio chains: a tone through real codecs keeps its frequency and
//! level. These are the media engine's proof that transcoding is transparent.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use causeway_codecs::analysis::{dominant_frequency, level_db, tone};
use causeway_codecs::g711::{G711, Law};
use causeway_codecs::opus::{OpusConfig, OpusDecoder, OpusEncoder};
use causeway_codecs::{AudioDecoder, AudioEncoder, Pcm};

fn pcm(rate: u32, samples: &[i16]) -> Pcm {
    Pcm {
        sample_rate: rate,
        channels: 1,
        samples: samples.to_vec(),
    }
}

/// Runs `input` through encoder then decoder in 20 ms frames.
fn through(
    enc: &mut dyn AudioEncoder,
    dec: &mut dyn AudioDecoder,
    rate: u32,
    input: &[i16],
) -> Vec<i16> {
    let frame = rate as usize / 50;
    let mut out = Vec::new();
    let (mut payload, mut decoded) = (Vec::new(), pcm(rate, &[]));
    for chunk in input.chunks_exact(frame) {
        enc.encode(&pcm(rate, chunk), &mut payload).unwrap();
        assert!(
            !payload.is_empty(),
            "a tone is never DTX silence (frame {})",
            out.len() / frame
        );
        dec.decode(&payload, &mut decoded).unwrap();
        assert_eq!(decoded.sample_rate, rate);
        out.extend_from_slice(&decoded.samples);
    }
    out
}

#[test]
fn tone_through_pcmu_opus_pcmu_keeps_frequency_and_level() {
    let input = tone(1000.0, -10.0, 8000, 8000 * 2);
    let mut pcmu = G711::new(Law::Ulaw);
    let a = through(&mut pcmu.clone(), &mut pcmu, 8000, &input);
    // DTX off here: libopus's voice activity detection treats a steady tone
    // as inactive and stops sending it (see the DTX test below).
    let mut opus_enc = OpusEncoder::new(OpusConfig {
        dtx: false,
        ..OpusConfig::narrowband()
    })
    .unwrap();
    let mut opus_dec = OpusDecoder::new(8000, 1).unwrap();
    let b = through(&mut opus_enc, &mut opus_dec, 8000, &a);
    let c = through(
        &mut G711::new(Law::Ulaw),
        &mut G711::new(Law::Ulaw),
        8000,
        &b,
    );
    assert_eq!(c.len(), input.len());
    // Skip the codec's start-up (lookahead and ramp): measure the last second.
    let steady = &c[8000..];
    let f = dominant_frequency(steady, 8000);
    let level = level_db(steady);
    eprintln!("PCMU->Opus(8k, complexity 5)->PCMU: {f:.2} Hz, {level:.2} dB (input -10 dB)");
    assert!((f - 1000.0).abs() / 1000.0 < 0.01, "frequency {f}");
    assert!(
        (level - level_db(&input[8000..])).abs() < 1.0,
        "level {level}"
    );
}

#[test]
fn opus_at_48k_round_trips_a_440_hz_tone() {
    let input = tone(440.0, -20.0, 48000, 48000);
    // DTX off, as above.
    let mut enc = OpusEncoder::new(OpusConfig {
        dtx: false,
        ..OpusConfig::webrtc()
    })
    .unwrap();
    let mut dec = OpusDecoder::new(48000, 1).unwrap();
    let out = through(&mut enc, &mut dec, 48000, &input);
    let steady = &out[24000..];
    assert!((dominant_frequency(steady, 48000) - 440.0).abs() < 4.4);
    assert!((level_db(steady) + 20.0).abs() < 1.0);
}

#[test]
fn opus_dtx_skips_silence_and_decoder_conceals_loss() {
    let mut enc = OpusEncoder::new(OpusConfig::webrtc()).unwrap();
    let silence = pcm(48000, &[0; 960]);
    let mut payload = Vec::new();
    let mut empty = 0;
    for _ in 0..50 {
        enc.encode(&silence, &mut payload).unwrap();
        empty += usize::from(payload.is_empty());
    }
    assert!(
        empty > 30,
        "DTX should suppress most silent frames, got {empty}/50"
    );

    let mut dec = OpusDecoder::new(48000, 1).unwrap();
    let mut out = pcm(48000, &[]);
    let t = tone(440.0, -20.0, 48000, 960 * 10);
    let mut enc = OpusEncoder::new(OpusConfig::webrtc()).unwrap();
    let mut packets = Vec::new();
    for chunk in t.chunks_exact(960) {
        enc.encode(&pcm(48000, chunk), &mut payload).unwrap();
        packets.push(payload.clone());
    }
    for p in &packets[..8] {
        dec.decode(p, &mut out).unwrap();
    }
    // Packet 8 lost: PLC, then FEC from packet 9 both give a full frame of sound.
    dec.conceal(None, 960, &mut out).unwrap();
    assert_eq!(out.samples.len(), 960);
    assert!(level_db(&out.samples) > -40.0);
    dec.conceal(Some(&packets[9]), 960, &mut out).unwrap();
    assert_eq!(out.samples.len(), 960);
    // Garbage is an error, not a crash.
    assert!(dec.decode(&[0xff; 3], &mut out).is_err() || !out.samples.is_empty());
    assert!(
        OpusEncoder::new(OpusConfig {
            sample_rate: 44100,
            ..OpusConfig::webrtc()
        })
        .is_err()
    );
    assert!(
        OpusEncoder::new(OpusConfig {
            complexity: 11,
            ..OpusConfig::webrtc()
        })
        .is_err()
    );
}

#[test]
fn g711_conceals_by_repeating_and_fading() {
    let mut g = G711::new(Law::Alaw);
    let mut out = pcm(8000, &[]);
    g.conceal(None, 160, &mut out).unwrap();
    assert_eq!(out.samples, vec![0; 160], "nothing decoded yet: silence");
    let t = tone(1000.0, -10.0, 8000, 160);
    let mut payload = Vec::new();
    g.clone().encode(&pcm(8000, &t), &mut payload).unwrap();
    g.decode(&payload, &mut out).unwrap();
    let first = out.samples.clone();
    g.conceal(None, 160, &mut out).unwrap();
    assert_eq!(out.samples, first);
    g.conceal(None, 160, &mut out).unwrap();
    assert!((level_db(&out.samples) - (level_db(&first) - 6.02)).abs() < 0.2);
}

#[test]
fn g722_round_trips_a_wideband_tone_and_opus_at_16k_bridges_it() {
    use causeway_codecs::g722::{G722Decoder, G722Encoder};
    // 5 kHz: only a wideband codec carries it.
    let input = tone(5000.0, -12.0, 16000, 16000 * 2);
    let mut enc = G722Encoder::new().unwrap();
    let mut dec = G722Decoder::new().unwrap();
    let mut payload = Vec::new();
    let mut back = Vec::new();
    let mut pcm16 = Pcm {
        sample_rate: 16000,
        channels: 1,
        samples: vec![],
    };
    for chunk in input.chunks_exact(320) {
        enc.encode(
            &Pcm {
                sample_rate: 16000,
                channels: 1,
                samples: chunk.to_vec(),
            },
            &mut payload,
        )
        .unwrap();
        assert_eq!(payload.len(), 160, "64 kbit/s: 160 bytes per 20 ms");
        dec.decode(&payload, &mut pcm16).unwrap();
        back.extend_from_slice(&pcm16.samples);
    }
    assert_eq!(back.len(), input.len());
    let steady = &back[16000..];
    let f = dominant_frequency(steady, 16000);
    assert!((f - 5000.0).abs() < 50.0, "{f} Hz");
    assert!(
        (level_db(steady) + 12.0).abs() < 1.0,
        "{} dB",
        level_db(steady)
    );
    // G.722 <-> Opus without a resampler: Opus runs at 16 kHz.
    let mut opus_enc = OpusEncoder::new(OpusConfig {
        sample_rate: 16000,
        dtx: false,
        ..OpusConfig::webrtc()
    })
    .unwrap();
    let mut opus_dec = OpusDecoder::new(16000, 1).unwrap();
    let out = through(&mut opus_enc, &mut opus_dec, 16000, &back);
    let f = dominant_frequency(&out[16000..], 16000);
    assert!((f - 5000.0).abs() < 50.0, "through Opus: {f} Hz");
    // Concealment repeats the last frame.
    dec.conceal(None, 320, &mut pcm16).unwrap();
    assert_eq!(pcm16.samples.len(), 320);
    assert!(dec.decode(&[], &mut pcm16).is_err());
    assert!(
        enc.encode(
            &Pcm {
                sample_rate: 8000,
                channels: 1,
                samples: vec![0; 160]
            },
            &mut payload
        )
        .is_err()
    );
}

#[test]
fn an_opus_packet_tells_its_bandwidth() {
    // An encoder fed at 8 kHz makes narrowband packets; one at 48 kHz with
    // a browser's 32 kbit/s codes more than 8 kHz of audio.
    let mut frames = Vec::new();
    for (rate, bitrate) in [(8000, 12_000), (48_000, 32_000)] {
        let mut enc = OpusEncoder::new(OpusConfig {
            sample_rate: rate,
            bitrate,
            dtx: false,
            ..OpusConfig::webrtc()
        })
        .unwrap();
        let input = tone(440.0, -12.0, rate, rate as usize / 5);
        let mut payload = Vec::new();
        for chunk in input.chunks_exact(rate as usize / 50) {
            enc.encode(&pcm(rate, chunk), &mut payload).unwrap();
        }
        frames.push(payload);
    }
    let dec = OpusDecoder::new(8000, 1).unwrap();
    assert_eq!(dec.bandwidth(&frames[0]), Some(8000));
    assert!(dec.bandwidth(&frames[1]).unwrap() > 8000);
    // The TOC byte alone decides: config 0 is SILK narrowband, 31 CELT full band.
    assert_eq!(causeway_codecs::opus::packet_bandwidth(&[0x00]), Some(8000));
    assert_eq!(
        causeway_codecs::opus::packet_bandwidth(&[0x48]),
        Some(16000)
    );
    assert_eq!(
        causeway_codecs::opus::packet_bandwidth(&[0xf8]),
        Some(48000)
    );
    assert_eq!(causeway_codecs::opus::packet_bandwidth(&[]), None);
    assert_eq!(G711::new(Law::Ulaw).bandwidth(&[0x00]), None);
}
