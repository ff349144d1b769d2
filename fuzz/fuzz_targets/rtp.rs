//! RTP header parsing and SRTP unprotection: any bytes give a header or an
//! error, never a panic; a parsed header writes back to the same fields.
#![no_main]

use causeway::media::rtp::{self, RtpHeader, SeqTracker};
use causeway::media::srtp::{Context, MasterKey, Suite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rtp::is_rtcp(data);
    if let Ok(h) = RtpHeader::parse(data) {
        let payload = h.payload(data);
        assert!(h.header_len + payload.len() + h.padding == data.len());
        let mut out = Vec::new();
        rtp::write(&mut out, &h, payload);
        let again = RtpHeader::parse(&out).expect("written header parses");
        assert_eq!(
            (again.marker, again.payload_type, again.sequence, again.timestamp, again.ssrc),
            (h.marker, h.payload_type, h.sequence, h.timestamp, h.ssrc)
        );
        assert_eq!(again.payload(&out), payload);
        let mut t = SeqTracker::default();
        for pair in data.chunks_exact(2) {
            let i = t.estimate(u16::from_be_bytes([pair[0], pair[1]]));
            t.accept(i);
        }
    }
    for suite in Suite::ALL {
        let key = MasterKey::new(suite, &[7; 16], &[9; 14][..suite.salt_len()])
            .expect("a 16-byte key and the suite's own salt length are valid");
        let mut ctx = Context::new(&key).expect("a valid master key makes a context");
        let _ = ctx.unprotect_rtp(&mut data.to_vec());
        let _ = ctx.unprotect_rtcp(&mut data.to_vec());
    }
});
