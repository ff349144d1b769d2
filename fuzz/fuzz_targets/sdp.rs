//! SIP-side SDP: any text parses or gives an error, never a panic; what
//! parses can be answered, and the printed answer parses again.
#![no_main]

use causeway::sdp::{self, AnswerConfig};
use causeway_codecs::CodecKey;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(offer) = sdp::parse(text) else { return };
    let cfg = AnswerConfig {
        codecs: vec![
            CodecKey { name: "PCMA".into(), clock_rate: 8000, channels: 1 },
            CodecKey { name: "H264".into(), clock_rate: 90000, channels: 1 },
        ],
        dtmf: true,
    };
    if let Ok(answer) = sdp::answer(&offer, &cfg) {
        let ports = vec![20000; offer.media.len()];
        let printed = answer.to_sdp(Ipv4Addr::LOCALHOST.into(), &ports, 1, 1);
        let back = sdp::parse(&printed).expect("our answer parses");
        assert_eq!(back.media.len(), offer.media.len());
    }
});
