//! The echo service against real peers on loopback: SIPp calls `echo` with a
//! G.711 A-law offer, plays Debian's speech pcap and an RFC 4733 digit into
//! the gateway's media session, and hangs up; tshark captures both
//! directions and decodes them independently of our code.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{
    Gw, Row, capture, free_port, require, run_bounded, sipp_command, stop, tshark_rows,
    tshark_stream,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PCAPS: &str = "/usr/share/sip-tester";

#[test]
fn sipp_pcap_comes_back_from_the_echo_service_untouched() {
    require("sipp");
    require("tshark");
    // The gateway's media ports: a small range of its own.
    let base = 41000 + 2 * (std::process::id() as u16 % 2000);
    let mut gw = Gw::start(&format!(
        "[media]\nport_min = {base}\nport_max = {}\n",
        base + 20
    ));
    let dir = tempfile::tempdir().unwrap();
    for pcap in ["g711a.pcap", "dtmf_2833_1.pcap"] {
        std::fs::copy(Path::new(PCAPS).join(pcap), dir.path().join(pcap)).unwrap();
    }
    let media_port = free_port() & !1;
    let tshark = capture(
        dir.path(),
        &format!("udp portrange {media_port}-{}", media_port + 1),
    );

    let mut cmd = sipp_command(dir.path(), "echo_pcap.xml", free_port());
    cmd.args(["-mp", &media_port.to_string(), "-mi", "127.0.0.1"])
        .arg(gw.sip_target());
    let out = run_bounded(&mut cmd, Duration::from_secs(40));
    stop(tshark);
    let messages = std::fs::read_to_string(dir.path().join("messages.log")).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "SIPp failed:\n{}\n{messages}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The SDP answer names the port the echo came from.
    let ok = messages.find("SIP/2.0 200 OK").expect("a 200 OK");
    let answer_port: u16 = messages[ok..]
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in the 200:\n{messages}"));
    assert!((base..=base + 20).contains(&answer_port));

    let capture = dir.path().join("capture.pcap");
    let rows = tshark_rows(&capture, media_port);
    let sent: Vec<&Row> = rows.iter().filter(|r| r.src != answer_port).collect();
    let back: Vec<&Row> = rows.iter().filter(|r| r.src == answer_port).collect();
    let audio = |rows: &[&Row]| -> Vec<String> {
        rows.iter()
            .filter(|r| r.pt == 8)
            .map(|r| r.payload.clone())
            .collect()
    };
    // Every A-law packet came back, in order, payload untouched.
    assert_eq!(audio(&sent).len(), 236, "the pcap holds 236 packets");
    assert_eq!(audio(&back), audio(&sent), "echoed audio differs");
    // Telephone-events came back with their payload type (10 packets:
    // 7 updates and the end three times).
    let events = back.iter().filter(|r| r.pt == 101).count();
    assert_eq!(events, 10, "telephone-events echoed");
    // One SSRC of ours, sequence numbers without gaps across both pcaps.
    assert!(back.iter().all(|r| r.ssrc == back[0].ssrc));
    assert!(
        sent.iter().all(|r| r.ssrc != back[0].ssrc),
        "the echo is a new source"
    );
    let audio_back: Vec<u16> = back.iter().filter(|r| r.pt == 8).map(|r| r.seq).collect();
    for w in audio_back.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1), "a gap in the echoed audio");
    }
    // tshark's own stream analysis agrees: one stream carrying both payload
    // types, every packet there. Its loss figure counts duplicates as
    // negative: RFC 4733 sends an event's end three times with one sequence
    // number, so the echo shows the same -2 as the digit SIPp sent.
    let (payloads, packets, lost) = tshark_stream(&capture, media_port, answer_port);
    assert_eq!(payloads, "g711A, rtpevent");
    assert_eq!(packets, 246);
    assert_eq!(lost, -2, "packets lost in the returned stream");

    // RTCP sender reports went to SIPp's RTCP port.
    let rtcp = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args(["-n", "-d", &format!("udp.port=={},rtcp", media_port + 1)])
        .args([
            "-Y",
            "rtcp.pt == 200",
            "-T",
            "fields",
            "-e",
            "rtcp.senderssrc",
        ])
        .output()
        .unwrap();
    let reports = String::from_utf8_lossy(&rtcp.stdout).lines().count();
    assert!(reports >= 1, "no RTCP SR from the gateway");

    // The gateway saw the digit and the call ended cleanly.
    gw.stop();
    let log = gw.log_text();
    assert!(
        log.contains("DTMF received by the echo service") && log.contains("digit=1"),
        "{log}"
    );
    assert!(log.contains("call ended by BYE"), "{log}");
}
