//! SIP parsing: any bytes either parse or give an error; what parses prints
//! and re-parses to the same message; typed header views never panic, nor
//! does reading a body as an INFO digit (what it reads prints and reads
//! back the same).
#![no_main]

use causeway::media::dtmf::{format_info, parse_info};
use causeway::sip::digest::Credentials;
use causeway::sip::framing::Framer;
use causeway::sip::msg::{Message, NameAddr, Uri, Via};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::parse(data) {
        let _ = msg.check();
        let again = Message::parse(&msg.to_bytes()).expect("printed message must parse");
        assert_eq!(again.start, msg.start);
        // Every header survives, except that Content-Length is written once,
        // from the body (a message with conflicting ones never passes check()).
        let not_length = |m: &Message| m.headers.iter().filter(|h| !h.is("Content-Length")).count();
        assert_eq!(not_length(&again), not_length(&msg));
        assert_eq!(again.body, msg.body);
        for h in &msg.headers {
            let _ = NameAddr::parse(&h.value);
            let _ = Via::parse(&h.value);
            let _ = Uri::parse(&h.value);
            let _ = Credentials::parse(&h.value);
        }
        let _ = msg.cseq();
        let _ = msg.header_list("Contact").count();
        let ct = msg.header("Content-Type").unwrap_or("application/dtmf-relay");
        if let Ok(d) = parse_info(ct, &String::from_utf8_lossy(&msg.body)) {
            let again = parse_info("application/dtmf-relay", &format_info(&d));
            assert_eq!(again.ok(), Some(d), "an INFO digit must print and read back");
        }
    }
    let mut f = Framer::default();
    f.push(data);
    while let Ok(Some(_)) = f.next_frame() {}
});
