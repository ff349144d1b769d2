//! Pcaps SIPp's `play_pcap_audio` and `play_pcap_video` read, written by
//! tests and benches: a 1 kHz tone in G.711, so what arrives can be
//! checked by frequency, or any RTP.

use causeway_codecs::analysis::tone;
use causeway_codecs::g711::{alaw_encode, ulaw_encode};

/// A pcap (Ethernet, IPv4, UDP, RTP) of `packets` G.711 packets of a
/// 1 kHz tone at -12 dBFS, 20 ms apart, with payload type `pt`: 8 for
/// A-law, 0 for µ-law.
pub fn tone_pcap(pt: u8, packets: u32) -> Vec<u8> {
    let encode = if pt == 0 { ulaw_encode } else { alaw_encode };
    let pcm = tone(1000.0, -12.0, 8000, 160 * packets as usize);
    rtp_pcap(pcm.chunks(160).enumerate().map(|(i, samples)| {
        let i = i as u32;
        let mut rtp = vec![0x80, pt];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&(i * 160).to_be_bytes());
        rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        rtp.extend(samples.iter().map(|&x| encode(x)));
        (i * 20_000, rtp)
    }))
}

/// A pcap (Ethernet, IPv4, UDP) of RTP `packets`, each with the time in
/// microseconds SIPp sends it at.
pub fn rtp_pcap(packets: impl IntoIterator<Item = (u32, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone, sigfigs, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65_535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (micros, rtp) in packets {
        let udp_len = 8 + rtp.len() as u16;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        // IPv4 (SIPp reads the UDP payload; the checksums are not checked).
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(20 + udp_len).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        for v in [
            micros / 1_000_000,
            micros % 1_000_000,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    out
}
