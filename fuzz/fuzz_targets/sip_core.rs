//! The signalling core: any datagram is answered or dropped, never a panic,
//! and whatever it sends parses.
#![no_main]

use causeway::config::Config;
use causeway::gateway::{Gateway, GwOutput};
use causeway::sip::msg::Message;
use causeway::sip::{Flow, Transport};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Instant;

fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        Config::parse("[[users]]\nname = \"alice\"\npassword = \"secret\"\n", "fuzz")
            .expect("fixed config is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut gw = Gateway::new(config(), Default::default());
    let flow = Flow {
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse().expect("literal"),
        remote: "127.0.0.1:5062".parse().expect("literal"),
        conn: None,
    };
    gw.handle_datagram(Instant::now(), 1_000_000, flow, data);
    while let Some(o) = gw.poll_output() {
        if let GwOutput::Transmit { data, .. } = o {
            Message::parse(&data).expect("our output parses");
        }
    }
});
