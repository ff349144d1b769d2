//! RTCP compound parsing: any bytes give packets or an error, never a panic;
//! what parses writes back to the same values.
#![no_main]

use causeway::media::rtcp::{self, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for packet in rtcp::packets(data) {
        let Ok(packet) = packet else { break };
        let mut out = Vec::new();
        match packet {
            Packet::SenderReport { ssrc, info, reports } => {
                let blocks: Vec<_> = reports.collect();
                rtcp::write_sr(&mut out, ssrc, &info, &blocks);
                match rtcp::packets(&out).next() {
                    Some(Ok(Packet::SenderReport { ssrc: s, info: i, reports: r })) => {
                        assert_eq!((s, i), (ssrc, info));
                        assert_eq!(r.collect::<Vec<_>>(), blocks);
                    }
                    other => panic!("SR did not round-trip: {other:?}"),
                }
            }
            Packet::ReceiverReport { ssrc, reports } => {
                let blocks: Vec<_> = reports.collect();
                rtcp::write_rr(&mut out, ssrc, &blocks);
                match rtcp::packets(&out).next() {
                    Some(Ok(Packet::ReceiverReport { ssrc: s, reports: r })) => {
                        assert_eq!(s, ssrc);
                        assert_eq!(r.collect::<Vec<_>>(), blocks);
                    }
                    other => panic!("RR did not round-trip: {other:?}"),
                }
            }
            Packet::Pli { sender, media } => {
                rtcp::write_pli(&mut out, sender, media);
                assert_eq!(rtcp::packets(&out).next(), Some(Ok(packet)));
            }
            Packet::Fir { sender, target, seq } => {
                rtcp::write_fir(&mut out, sender, target, seq);
                assert_eq!(rtcp::packets(&out).next(), Some(Ok(packet)));
            }
            _ => {}
        }
    }
});
