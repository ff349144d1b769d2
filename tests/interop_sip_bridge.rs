//! SIP <-> SIP through the B2BUA against real peers on loopback: a SIPp UAC
//! calls `bob`, the dialplan sends `bob` to a SIPp UAS at a SIP URI, and the
//! gateway bridges the two dialogs and anchors their media. Both SIPps play
//! Debian's G.711 A-law speech pcap; tshark captures both media legs and
//! decodes them independently of our code: every packet each side sent must
//! reach the other side with its payload untouched (relayed, not
//! transcoded). Failures (busy, no common codec), CANCEL and BYE from either
//! side are checked on the wire.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use causeway_codecs::analysis::dominant_frequency;
use causeway_codecs::g711::alaw_decode;
use common::pcap::tone_pcap;
use common::{
    Guard, Gw, Row, capture, free_port, require, run_bounded, sipp_command, stop, tshark_rows,
};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

const PCAPS: &str = "/usr/share/sip-tester";

/// A gateway routing `bob` to a SIPp UAS on `uas_port`, with its own media
/// port range.
fn gateway(uas_port: u16) -> Gw {
    gateway_with(uas_port, "")
}

/// [`gateway`], with more of the rule's TOML (`media.dtmf = "info"`).
fn gateway_with(uas_port: u16, rule: &str) -> Gw {
    gateway_configured(uas_port, rule, "")
}

/// [`gateway_with`], with more of the `[media]` configuration.
fn gateway_configured(uas_port: u16, rule: &str, media: &str) -> Gw {
    let plan_dir = tempfile::tempdir().unwrap();
    let plan = common::write(
        plan_dir.path(),
        "plan.toml",
        &format!(
            r#"
[[rule]]
name = "to-uas"
priority = 10
match.to = 'bob'
target = {{ type = "sip", uri = "sip:127.0.0.1:{uas_port}" }}
{rule}
"#
        ),
    );
    let base = 43000 + 2 * (std::process::id() as u16 % 1000);
    let gw = Gw::start(&format!(
        "[dialplan]\npath = \"{}\"\n[media]\nport_min = {base}\nport_max = {}\n{media}\n",
        plan.display(),
        base + 40
    ));
    // The plan was read at start.
    drop(plan_dir);
    gw
}

/// One SIPp side: its directory (pcap, message trace) and media port.
struct Side {
    dir: tempfile::TempDir,
    media: u16,
}

impl Side {
    fn new() -> Side {
        let dir = tempfile::tempdir().unwrap();
        for pcap in ["g711a.pcap", "dtmf_2833_1.pcap"] {
            std::fs::copy(Path::new(PCAPS).join(pcap), dir.path().join(pcap)).unwrap();
        }
        // 2 s of a 1 kHz tone in µ-law.
        std::fs::write(dir.path().join("tone_pcmu.pcap"), tone_pcap(0, 100)).unwrap();
        Side {
            dir,
            media: free_port() & !1,
        }
    }

    fn messages(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("messages.log")).unwrap_or_default()
    }
}

/// Starts the SIPp UAS on `port`.
fn uas(side: &Side, scenario: &str, port: u16) -> Guard {
    let mut cmd = sipp_command(side.dir.path(), scenario, port);
    cmd.args(["-mp", &side.media.to_string(), "-mi", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Guard(cmd.spawn().unwrap())
}

/// Runs the SIPp UAC against the gateway until it exits.
fn uac(side: &Side, scenario: &str, gw: &Gw) -> Output {
    uac_with(side, scenario, gw, &[])
}

/// [`uac`] with more of SIPp's arguments.
fn uac_with(side: &Side, scenario: &str, gw: &Gw, args: &[&str]) -> Output {
    let mut cmd = sipp_command(side.dir.path(), scenario, free_port());
    cmd.args(["-mp", &side.media.to_string(), "-mi", "127.0.0.1"])
        .args(args)
        .arg(gw.sip_target());
    run_bounded(&mut cmd, Duration::from_secs(40))
}

/// Waits for the UAS to finish; its exit status.
fn finish(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(25);
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs a call from a SIPp UAC (`uac_scenario`) through a gateway (with
/// `rule`'s TOML, see [`gateway_with`]) to a SIPp UAS (`uas_scenario`)
/// while tshark captures both sides' media; both SIPps must succeed.
/// Returns the gateway, the caller and the callee.
fn captured_call(rule: &str, uac_scenario: &str, uas_scenario: &str) -> (Gw, Side, Side) {
    require("sipp");
    require("tshark");
    let uas_port = free_port();
    let gw = gateway_with(uas_port, rule);
    let (caller, callee) = (Side::new(), Side::new());
    let tshark = capture(
        caller.dir.path(),
        &format!("udp port {} or udp port {}", caller.media, callee.media),
    );
    let mut server = uas(&callee, uas_scenario, uas_port);
    let out = uac(&caller, uac_scenario, &gw);
    let uas_status = finish(&mut server.0);
    stop(tshark);
    both_done(&gw, &caller, &callee, &out, uas_status);
    (gw, caller, callee)
}

/// Both SIPps finished cleanly: the caller's run `out`, the callee's exit
/// status.
fn both_done(gw: &Gw, caller: &Side, callee: &Side, out: &Output, uas_status: Option<i32>) {
    let ctx = || context(gw, caller, callee);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the caller failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ctx()
    );
    assert_eq!(uas_status, Some(0), "the callee failed\n{}", ctx());
}

/// The messages in a SIPp trace that it received, each from where `start`
/// (a start line) begins.
fn received(trace: &str, start: &str) -> Vec<String> {
    trace
        .split("-----------------------------------------------")
        .filter(|m| m.contains("message received"))
        .filter_map(|m| m.find(start).map(|i| m[i..].to_string()))
        .collect()
}

/// Everything both sides and the gateway said, for failure messages.
fn context(gw: &Gw, caller: &Side, callee: &Side) -> String {
    format!(
        "--- caller\n{}\n--- callee\n{}\n--- gateway\n{}",
        caller.messages(),
        callee.messages(),
        gw.log_text()
    )
}

/// The A-law payloads in `rows` sent from `src` (other than `not_src`
/// when `src` is None).
fn audio(rows: &[Row], from: impl Fn(u16) -> bool) -> Vec<String> {
    rows.iter()
        .filter(|r| r.pt == 8 && from(r.src))
        .map(|r| r.payload.clone())
        .collect()
}

/// A call through the bridge, hung up by `uac_scenario`'s or
/// `uas_scenario`'s side (`ended_by`, as the call record says); asserts
/// both dialogs completed and that the speech each SIPp sent reached the
/// other untouched. Returns what the caller and the callee received.
fn bridged_call(
    uac_scenario: &str,
    uas_scenario: &str,
    hung_up_by: &str,
    ended_by: &str,
) -> (String, String) {
    bridged_call_with("", uac_scenario, uas_scenario, hung_up_by, ended_by)
}

/// [`bridged_call`] with more of the rule's TOML.
fn bridged_call_with(
    rule: &str,
    uac_scenario: &str,
    uas_scenario: &str,
    hung_up_by: &str,
    ended_by: &str,
) -> (String, String) {
    let (mut gw, caller, callee) = captured_call(rule, uac_scenario, uas_scenario);
    let ctx = || context(&gw, &caller, &callee);

    // The caller heard ringing, and the 200 came from the gateway's ports.
    let msgs = caller.messages();
    assert!(msgs.contains("SIP/2.0 180 Ringing"), "{}", ctx());
    // The 200 alone (a late-offer caller's ACK, further on, carries SDP
    // too).
    let ok = received(&msgs, "SIP/2.0 200 OK").swap_remove(0);
    let caller_leg = audio_port(&ok).unwrap();
    // A-law first (an answer to the caller's offer, or our offer to a
    // caller that made none), with telephone-events.
    assert!(ok.contains("RTP/AVP 8 "), "{}", ctx());
    assert!(
        ok.contains("a=rtpmap:101 telephone-event/8000"),
        "{}",
        ctx()
    );

    // tshark's view of both legs.
    let cap = caller.dir.path().join("capture.pcap");
    let at_caller = tshark_rows(&cap, caller.media);
    let at_callee = tshark_rows(&cap, callee.media);
    let sent_by_caller = audio(&at_caller, |src| src == caller.media);
    let relayed_to_caller = audio(&at_caller, |src| src == caller_leg);
    let sent_by_callee = audio(&at_callee, |src| src == callee.media);
    let relayed_to_callee = audio(&at_callee, |src| src != callee.media);
    assert_eq!(sent_by_caller.len(), 236, "the pcap holds 236 packets");
    assert_eq!(sent_by_callee.len(), 236, "the pcap holds 236 packets");
    // Each way, every packet arrived, in order, payload untouched.
    assert_eq!(
        relayed_to_callee,
        sent_by_caller,
        "caller -> callee: {} of {} packets",
        relayed_to_callee.len(),
        sent_by_caller.len()
    );
    assert_eq!(
        relayed_to_caller,
        sent_by_callee,
        "callee -> caller: {} of {} packets",
        relayed_to_caller.len(),
        sent_by_callee.len()
    );

    // The call record says who called whom, who hung up, and what moved.
    let cdr = gw.only_cdr();
    assert_eq!(cdr["to"], "bob", "{cdr}");
    assert_eq!(cdr["rule"], "to-uas", "{cdr}");
    assert_eq!(cdr["caller_leg"], "sip", "{cdr}");
    assert_eq!(cdr["ended_by"], ended_by, "{cdr}");
    assert_eq!(cdr["media"]["audio"], "passthrough", "{cdr}");
    assert_eq!(cdr["media"]["caller_codec"], "PCMA/8000", "{cdr}");
    let at = |k: &str| cdr[k].as_u64().unwrap_or_else(|| panic!("{k}: {cdr}"));
    assert!(at("answered_at") >= at("started_at"), "{cdr}");
    assert!(at("ended_at") >= at("answered_at"), "{cdr}");
    for way in ["to_callee_out", "to_caller_out"] {
        assert_eq!(cdr["totals"][way], 236, "{way}: {cdr}");
    }

    gw.stop();
    let log = gw.log_text();
    assert!(log.contains("audio=\"passthrough\""), "{log}");
    assert!(log.contains(hung_up_by), "{log}");
    (caller.messages(), callee.messages())
}

#[test]
fn sipp_calls_sipp_through_the_bridge_with_relayed_g711_and_the_caller_hangs_up() {
    bridged_call(
        "bridge_uac.xml",
        "bridge_uas.xml",
        "SIP caller hung up",
        "caller",
    );
}

#[test]
fn a_late_offer_is_answered_in_the_ack_and_the_call_bridged() {
    bridged_call(
        "bridge_uac_late.xml",
        "bridge_uas.xml",
        "the caller answered our offer in its ACK",
        "caller",
    );
}

#[test]
fn an_unregistered_caller_authenticates_where_the_rule_says_so_and_a_wrong_password_gets_403() {
    // Alice is not registered: her first INVITE is challenged, the second
    // (digest credentials computed by SIPp) is bridged with its media.
    let (caller, callee) = bridged_call_with(
        "auth = true",
        "bridge_uac_auth.xml",
        "bridge_uas.xml",
        "SIP caller hung up",
        "caller",
    );
    let challenge = caller
        .find("SIP/2.0 407 Proxy Authentication Required")
        .expect("a 407 first");
    assert!(
        caller[challenge..].contains("Proxy-Authenticate: Digest realm=\"test.local\""),
        "{caller}"
    );
    assert!(
        caller.find("SIP/2.0 200 OK").unwrap() > challenge,
        "{caller}"
    );
    // The callee was called once, and never sees the caller's credentials.
    assert_eq!(callee.matches("INVITE sip:").count(), 1, "{callee}");
    assert!(!callee.contains("Proxy-Authorization"), "{callee}");

    // A wrong password: 403, and nobody is called (the B2BUA logs
    // `calling ... forks=N` for every call it places).
    let (caller, _, log) =
        call_outcome_with(("auth = true", ""), "bridge_uac_auth_wrong.xml", None);
    assert!(caller.contains("SIP/2.0 407 "), "{caller}");
    assert!(caller.contains("SIP/2.0 403 Forbidden"), "{caller}");
    assert!(
        log.contains("the rule wants an authenticated caller"),
        "{log}"
    );
    assert!(!log.contains("forks="), "{log}");
}

#[test]
fn the_callees_bye_reaches_the_caller() {
    bridged_call(
        "bridge_uac_wait_bye.xml",
        "bridge_uas_bye.xml",
        "SIP side hung up",
        "sip",
    );
}

#[test]
fn an_administrator_lists_and_hangs_up_a_call_and_both_sides_get_a_bye() {
    require("sipp");
    let uas_port = free_port();
    let gw = gateway(uas_port);
    let (caller, callee) = (Side::new(), Side::new());
    let mut server = uas(&callee, "bridge_uas.xml", uas_port);
    let mut cmd = sipp_command(caller.dir.path(), "bridge_uac_wait_bye.xml", free_port());
    cmd.args(["-mp", &caller.media.to_string(), "-mi", "127.0.0.1"])
        .arg(gw.sip_target());
    let client = std::thread::spawn(move || run_bounded(&mut cmd, Duration::from_secs(40)));
    // The call shows up as connected.
    let deadline = Instant::now() + Duration::from_secs(15);
    let call = loop {
        let (status, body) = gw.admin_get("/api/admin/v1/calls");
        assert_eq!(status, 200, "{body}");
        if let Some(c) = body["result"]
            .as_array()
            .and_then(|a| a.first())
            .filter(|c| c["state"] == "connected")
        {
            assert_eq!(c["to"], "bob", "{c}");
            assert_eq!(c["media"]["audio"], "passthrough", "{c}");
            break c["id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no connected call: {body}\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Each side's SDPs are listed, and the counters move while it runs
    // (the callee plays speech toward the caller).
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = loop {
        let (_, body) = gw.admin_get("/api/admin/v1/calls");
        let c = body["result"][0].clone();
        if c["totals"]["to_caller_out"].as_u64().unwrap_or(0) > 0 {
            break c;
        }
        assert!(Instant::now() < deadline, "no counters: {c}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let legs = c["legs"].as_array().expect("legs");
    assert_eq!(legs.len(), 2, "{c}");
    for (leg, side, theirs) in [
        (&legs[0], "caller", caller.media),
        (&legs[1], "callee", callee.media),
    ] {
        assert_eq!(
            (&leg["side"], &leg["leg"]),
            (&side.into(), &"sip".into()),
            "{c}"
        );
        let remote = leg["remote_sdp"].as_str().unwrap_or_default();
        assert!(
            remote.contains(&format!("m=audio {theirs} ")),
            "{side}: {c}"
        );
        let local = leg["local_sdp"].as_str().unwrap_or_default();
        assert!(
            local.contains("m=audio ") && !local.contains(&format!("m=audio {theirs} ")),
            "{side}: {c}"
        );
        // Neither SIPp asked for a session timer.
        assert!(leg.get("session_expires").is_none(), "{c}");
    }
    let path = format!("/api/admin/v1/calls/{call}");
    let (status, body) = gw.admin("DELETE", &path, None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw.admin("DELETE", &path, None);
    assert_eq!(status, 404, "once: {body}");
    // Both SIPps got their BYE and finished cleanly.
    let out = client.join().unwrap();
    let uas_status = finish(&mut server.0);
    let ctx = || context(&gw, &caller, &callee);
    assert_eq!(out.status.code(), Some(0), "the caller failed\n{}", ctx());
    assert_eq!(uas_status, Some(0), "the callee failed\n{}", ctx());
    let cdr = gw.only_cdr();
    assert_eq!(cdr["ended_by"], "gateway", "{cdr}");
    assert_eq!(cdr["reason"], "hung up by an administrator", "{cdr}");
    let (_, body) = gw.admin_get("/api/admin/v1/calls");
    assert_eq!(body["result"], serde_json::json!([]), "{body}");
}

#[test]
fn a_call_whose_sides_fall_silent_is_hung_up_both_ways() {
    require("sipp");
    let uas_port = free_port();
    let gw = gateway_configured(uas_port, "", "timeout = 4");
    let (caller, callee) = (Side::new(), Side::new());
    let mut server = uas(&callee, "bridge_uas.xml", uas_port);
    let mut cmd = sipp_command(caller.dir.path(), "bridge_uac_wait_bye.xml", free_port());
    cmd.args(["-mp", &caller.media.to_string(), "-mi", "127.0.0.1"])
        .arg(gw.sip_target());
    // Both play 7 s of speech, then send nothing (SIPp sends no RTCP) and
    // wait for a BYE.
    let start = Instant::now();
    let out = run_bounded(&mut cmd, Duration::from_secs(40));
    let lasted = start.elapsed();
    let uas_status = finish(&mut server.0);
    let ctx = || context(&gw, &caller, &callee);
    assert_eq!(out.status.code(), Some(0), "the caller failed\n{}", ctx());
    assert_eq!(uas_status, Some(0), "the callee failed\n{}", ctx());
    // Not while the speech played; soon after it stopped.
    assert!(
        lasted >= Duration::from_secs(9) && lasted < Duration::from_secs(20),
        "the BYEs came after {lasted:?}\n{}",
        ctx()
    );
    let cdr = gw.only_cdr();
    assert_eq!(cdr["ended_by"], "gateway", "{cdr}");
    assert!(
        cdr["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("no media from the ")),
        "{cdr}"
    );
}

/// A call whose outcome is a status: runs the pair of scenarios and
/// returns both message traces.
fn call_outcome(uac_scenario: &str, uas_scenario: Option<&str>) -> (String, String, String) {
    call_outcome_with(("", ""), uac_scenario, uas_scenario)
}

/// [`call_outcome`] with more of the rule's TOML and of `[media]`.
fn call_outcome_with(
    (rule, media): (&str, &str),
    uac_scenario: &str,
    uas_scenario: Option<&str>,
) -> (String, String, String) {
    require("sipp");
    let uas_port = free_port();
    let gw = gateway_configured(uas_port, rule, media);
    let (caller, callee) = (Side::new(), Side::new());
    let mut server = uas_scenario.map(|s| uas(&callee, s, uas_port));
    let out = uac(&caller, uac_scenario, &gw);
    let uas_status = server.as_mut().map(|g| finish(&mut g.0));
    let ctx = context(&gw, &caller, &callee);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the caller failed: {}\n{ctx}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(status) = uas_status {
        assert_eq!(status, Some(0), "the callee failed\n{ctx}");
    }
    (caller.messages(), callee.messages(), gw.log_text())
}

/// The `m=audio` port of a SIP message's SDP.
fn audio_port(msg: &str) -> Option<u16> {
    msg.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
}

/// The `m=audio` port of the first message the caller received that
/// starts with `start`.
fn first_audio_port(msgs: &str, start: &str) -> Option<u16> {
    audio_port(received(msgs, start).first()?)
}

#[test]
fn a_callees_early_media_reaches_a_sip_caller_before_the_answer() {
    // The callee sends 183 with SDP and plays 7 s of speech at once; its
    // 200 comes 5.5 s later. The caller takes only a 183 (with an A-law
    // answer), then the 200.
    let (mut gw, caller, callee) =
        captured_call("", "bridge_uac_early.xml", "bridge_uas_early.xml");
    let ctx = || context(&gw, &caller, &callee);
    let msgs = caller.messages();
    let early = first_audio_port(&msgs, "SIP/2.0 183 Session Progress")
        .unwrap_or_else(|| panic!("{}", ctx()));
    let answered = first_audio_port(&msgs, "SIP/2.0 200 OK").unwrap_or_else(|| panic!("{}", ctx()));
    assert_eq!(
        early,
        answered,
        "the 200 repeats the 183's answer\n{}",
        ctx()
    );

    // Every packet the callee sent reached the caller, untouched, each
    // within half a second: those sent before the 200 too.
    let cap = caller.dir.path().join("capture.pcap");
    let at_caller = tshark_rows(&cap, caller.media);
    let at_callee = tshark_rows(&cap, callee.media);
    let sent: Vec<&Row> = at_callee
        .iter()
        .filter(|r| r.pt == 8 && r.src == callee.media)
        .collect();
    let relayed: Vec<&Row> = at_caller
        .iter()
        .filter(|r| r.pt == 8 && r.src == early)
        .collect();
    assert_eq!(sent.len(), 236, "the pcap holds 236 packets");
    let payloads = |rows: &[&Row]| rows.iter().map(|r| r.payload.clone()).collect::<Vec<_>>();
    assert_eq!(payloads(&relayed), payloads(&sent), "callee -> caller");
    let late = sent
        .iter()
        .zip(&relayed)
        .map(|(s, r)| r.time - s.time)
        .fold(0.0f64, f64::max);
    assert!(late < 0.5, "a packet took {late:.2} s to reach the caller");
    let before_answer = sent.iter().filter(|r| r.time - sent[0].time < 5.0).count();
    assert!(
        before_answer > 150,
        "{before_answer} packets before the 200"
    );
    // And the caller's own speech, after the 200, reached the callee.
    let from_caller = audio(&at_caller, |src| src == caller.media);
    assert_eq!(audio(&at_callee, |src| src != callee.media), from_caller);

    let cdr = gw.only_cdr();
    assert_eq!(cdr["media"]["audio"], "passthrough", "{cdr}");
    assert_eq!(cdr["ended_by"], "caller", "{cdr}");
    gw.stop();
}

#[test]
fn a_re_invite_to_another_codec_switches_the_call_from_relayed_to_transcoded() {
    // Both sides answer A-law (relayed); after 1 s the caller re-INVITEs
    // with µ-law only and plays a 1 kHz µ-law tone; the callee keeps
    // sending A-law speech throughout.
    let (mut gw, caller, callee) =
        captured_call("", "bridge_uac_recodec.xml", "bridge_uas_reinvite.xml");
    let ctx = || context(&gw, &caller, &callee);
    let msgs = caller.messages();
    let reanswer = received(&msgs, "SIP/2.0 200 OK")
        .into_iter()
        .find(|m| m.contains("CSeq: 2 INVITE"))
        .unwrap_or_else(|| panic!("no 200 to the re-INVITE\n{}", ctx()));
    assert!(reanswer.contains("RTP/AVP 0 "), "{reanswer}");
    let leg = first_audio_port(&msgs, "SIP/2.0 200 OK").unwrap();

    let cap = caller.dir.path().join("capture.pcap");
    // The callee got the caller's µ-law tone as A-law (transcoded), all of
    // it (and the few frames concealment plays once the tone stops), still
    // 1 kHz.
    let at_callee = tshark_rows(&cap, callee.media);
    let to_callee: Vec<&Row> = at_callee.iter().filter(|r| r.src != callee.media).collect();
    assert!(to_callee.iter().all(|r| r.pt == 8), "{}", ctx());
    assert!(
        (100..=110).contains(&to_callee.len()),
        "{} packets to the callee",
        to_callee.len()
    );
    let pcm: Vec<i16> = to_callee
        .iter()
        .flat_map(|r| {
            let hex = r.payload.replace(':', "");
            (0..hex.len() / 2)
                .map(|i| alaw_decode(u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    let f = dominant_frequency(&pcm, 8000);
    assert!((f - 1000.0).abs() < 20.0, "the callee heard {f:.0} Hz");

    // The caller got the callee's speech relayed as A-law until its
    // re-INVITE, µ-law (transcoded) after it, and never A-law again.
    let at_caller = tshark_rows(&cap, caller.media);
    let to_caller: Vec<&Row> = at_caller.iter().filter(|r| r.src == leg).collect();
    let (alaw, ulaw): (Vec<&Row>, Vec<&Row>) = to_caller.iter().partition(|r| r.pt == 8);
    assert!(
        alaw.len() > 10 && ulaw.len() > 100,
        "{} A-law, {} µ-law",
        alaw.len(),
        ulaw.len()
    );
    assert!(ulaw.iter().all(|r| r.pt == 0));
    let last_alaw = alaw.iter().map(|r| r.time).fold(0.0, f64::max);
    assert!(
        ulaw.iter().all(|r| r.time > last_alaw),
        "A-law after the switch"
    );

    // The record says how the call ended up: transcoded, µ-law to A-law.
    let cdr = gw.only_cdr();
    assert_eq!(cdr["media"]["audio"], "transcoded", "{cdr}");
    assert_eq!(cdr["media"]["caller_codec"], "PCMU/8000", "{cdr}");
    assert_eq!(cdr["media"]["callee_codec"], "PCMA/8000", "{cdr}");
    gw.stop();
    let log = gw.log_text();
    let relayed = log.find("audio=\"passthrough\"").expect("relayed at first");
    assert!(log[relayed..].contains("audio=\"transcoded\""), "{log}");
}

#[test]
fn a_busy_callee_makes_the_caller_hear_486() {
    let (caller, _, _) = call_outcome("bridge_uac_busy.xml", Some("bridge_uas_busy.xml"));
    assert!(caller.contains("SIP/2.0 486 Busy Here"), "{caller}");
}

#[test]
fn cancel_before_the_answer_reaches_the_callee() {
    let (caller, callee, log) = call_outcome("bridge_uac_cancel.xml", Some("bridge_uas_ring.xml"));
    assert!(
        caller.contains("SIP/2.0 487 Request Terminated"),
        "{caller}"
    );
    assert!(callee.contains("CANCEL sip:"), "{callee}");
    assert!(log.contains("SIP caller cancelled"), "{log}");
}

#[test]
fn an_offer_without_a_codec_the_gateway_handles_gets_488_with_a_warning() {
    // The callee is never called: no UAS runs.
    let (caller, _, _) = call_outcome("bridge_uac_g729.xml", None);
    let at = caller.find("SIP/2.0 488").expect("a 488");
    let resp = &caller[at..];
    assert!(
        resp.lines()
            .take_while(|l| !l.trim().is_empty())
            .any(|l| l.starts_with("Warning: 399 causeway") && l.contains("codec")),
        "{caller}"
    );
}

#[test]
fn an_invite_with_no_hops_left_gets_483_and_is_not_forwarded() {
    require("sipp");
    // The callee is never called: no UAS runs (the callees of the other
    // tests check that a forwarded INVITE carries one hop less).
    let gw = gateway(free_port());
    let caller = Side::new();
    let out = uac_with(&caller, "bridge_uac_spent.xml", &gw, &[]);
    let msgs = caller.messages();
    assert_eq!(out.status.code(), Some(0), "{msgs}");
    assert_eq!(received(&msgs, "SIP/2.0 483").len(), 1, "{msgs}");
    assert!(!gw.log_text().contains("forks="), "{}", gw.log_text());
}

#[test]
fn a_caller_whose_rtp_profile_breaks_the_routes_srtp_policy_gets_488_with_a_warning() {
    require("sipp");
    for (policy, profile, says) in [
        ("required", "RTP/AVP", "requires SRTP"),
        ("off", "RTP/SAVP", "SRTP is off"),
    ] {
        let gw = gateway_with(free_port(), &format!("media.srtp = \"{policy}\""));
        let caller = Side::new();
        let args = ["-set", "profile", profile];
        let out = uac_with(&caller, "bridge_uac_refused.xml", &gw, &args);
        let msgs = caller.messages();
        assert_eq!(out.status.code(), Some(0), "{policy}\n{msgs}");
        let refused = &received(&msgs, "SIP/2.0 488")[0];
        assert!(
            refused.contains("Warning: 399 causeway") && refused.contains(says),
            "{policy}: {refused}"
        );
    }
}

#[test]
fn hold_and_resume_from_the_caller_reach_the_callee_mirrored() {
    // Neither SIPp sends media, and the media timeout is 4 s: the 6 s hold
    // must not end the call (the periods around it are shorter).
    let (_, log) = held_and_resumed("bridge_uac_hold.xml", "timeout = 4");
    assert!(!log.contains("no media from a SIP side"), "{log}");
}

#[test]
fn an_update_refreshes_holds_and_resumes_the_call_and_the_callee_gets_re_invites() {
    let (caller, _) = held_and_resumed("bridge_uac_update.xml", "");
    // The bodiless refresh got a 200 of its own, without SDP.
    let refreshed = received(&caller, "SIP/2.0 200 OK")
        .into_iter()
        .find(|m| m.contains("CSeq: 2 UPDATE"))
        .expect("a 200 to the refresh");
    assert!(refreshed.contains("Content-Length: 0"), "{refreshed}");
}

#[test]
fn reliable_provisionals_are_acknowledged_both_ways_where_required() {
    // The caller requires 100rel of us; the callee requires it of us too.
    let (caller, callee, _) = call_outcome("bridge_uac_100rel.xml", Some("bridge_uas_100rel.xml"));
    // The callee checked our INVITE supports 100rel and answered only after
    // our one PRACK (RAck 1 1 INVITE, checked by the scenario).
    assert_eq!(received(&callee, "PRACK sip:").len(), 1, "{callee}");
    // The caller's 180 was reliable; its PRACK got a 200, then the answer.
    let ringing = &received(&caller, "SIP/2.0 180")[0];
    assert!(
        ringing.contains("Require: 100rel") && ringing.contains("RSeq: 1"),
        "{ringing}"
    );
    let oks = received(&caller, "SIP/2.0 200 OK");
    assert!(oks[0].contains("CSeq: 2 PRACK"), "{caller}");
    assert!(oks[1].contains("CSeq: 1 INVITE"), "{caller}");
}

#[test]
fn session_timers_are_negotiated_on_both_legs_and_a_caller_that_stops_refreshing_is_hung_up() {
    require("sipp");
    let uas_port = free_port();
    // Neither SIPp sends media: no media timeout, so only the session
    // timer can end the call.
    let gw = gateway_configured(uas_port, "", "timeout = 0");
    let (caller, callee) = (Side::new(), Side::new());
    // Both SIPps outlive their usual 15 s limit (the last -timeout wins).
    let long = ["-timeout", "85"];
    let mut server = sipp_command(callee.dir.path(), "bridge_uas_timer.xml", uas_port);
    server
        .args(long)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = Guard(server.spawn().unwrap());
    let start = Instant::now();
    let mut cmd = sipp_command(caller.dir.path(), "bridge_uac_timer.xml", free_port());
    cmd.args(["-mp", &caller.media.to_string(), "-mi", "127.0.0.1"])
        .args(long)
        .arg(gw.sip_target());
    // The caller refreshes once, ~1 s in; its session then lapses 60 s later.
    let out = run_bounded(&mut cmd, Duration::from_secs(90));
    let lasted = start.elapsed();
    let uas_status = finish(&mut server.0);
    both_done(&gw, &caller, &callee, &out, uas_status);
    let ctx = || context(&gw, &caller, &callee);
    // Not before the session's expiry less a third (60 s after the refresh),
    // and not long after.
    assert!(
        lasted >= Duration::from_secs(60) && lasted < Duration::from_secs(75),
        "the BYE came after {lasted:?}\n{}",
        ctx()
    );
    let (caller_trace, callee_trace) = (caller.messages(), callee.messages());
    // The caller's 200 grants its timer and requires it to refresh.
    let ok = &received(&caller_trace, "SIP/2.0 200 OK")[0];
    assert!(
        ok.contains("Session-Expires: 90;refresher=uac") && ok.contains("Require: timer"),
        "{ok}"
    );
    // The callee was asked for ours, and refreshed by UPDATE as it asked.
    let invite = &received(&callee_trace, "INVITE sip:")[0];
    assert!(
        invite.contains("Session-Expires: 1800") && invite.contains("Supported: 100rel, timer"),
        "{invite}"
    );
    let update = received(&callee_trace, "UPDATE sip:");
    assert_eq!(update.len(), 1, "{callee_trace}");
    assert!(
        update[0].contains("Session-Expires: 90;refresher=uac"),
        "{}",
        update[0]
    );
    let cdr = gw.only_cdr();
    assert_eq!(
        (&cdr["ended_by"], &cdr["reason"]),
        (
            &"gateway".into(),
            &"session expired: no refresh from the caller".into()
        ),
        "{cdr}"
    );
}

/// A room system (SIPp) calls with its main video first, then audio,
/// content video (`a=content:slides`) and BFCP; the callee (SIPp, audio
/// and H.264) holds and resumes by re-INVITE. Each re-INVITE the gateway
/// passes on to the room system keeps the session's four sections in
/// their places, the two it refused still refused (RFC 3264 8), and the
/// room system's answers, in that layout, are taken: the call goes on to
/// the room system's BYE.
#[test]
fn re_offers_to_a_room_system_keep_its_content_and_bfcp_sections_in_place() {
    let (caller, callee, log) =
        call_outcome("bridge_uac_content.xml", Some("bridge_uas_holds.xml"));
    let context = || format!("--- caller\n{caller}\n--- callee\n{callee}\n--- gateway\n{log}");
    // Each section's kind, port and profile.
    let sections = |msg: &str| -> Vec<String> {
        msg.lines()
            .filter(|l| l.starts_with("m="))
            .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let ok = received(&caller, "SIP/2.0 200 OK").swap_remove(0);
    let layout = sections(&ok);
    assert_eq!(layout.len(), 4, "{}", context());
    assert!(
        layout[0].starts_with("m=video ") && !layout[0].starts_with("m=video 0 "),
        "{}",
        context()
    );
    assert!(layout[1].starts_with("m=audio "), "{}", context());
    assert_eq!(
        layout[2..],
        ["m=video 0 RTP/AVP", "m=application 0 UDP/BFCP"],
        "{}",
        context()
    );
    let offers = received(&caller, "INVITE sip:");
    assert_eq!(offers.len(), 2, "{}", context());
    for (offer, direction) in offers.iter().zip(["a=sendonly", "a=sendrecv"]) {
        assert_eq!(sections(offer), layout, "{offer}\n{}", context());
        assert_eq!(offer.matches(direction).count(), 2, "{offer}");
    }
    // Both answers were read (in the layout), none ignored.
    assert!(
        !log.contains("an answer to our re-offer ignored"),
        "{}",
        context()
    );
}

/// A call `uac_scenario` holds and resumes (by re-INVITE or UPDATE), to
/// `bridge_uas_hold.xml`, with `media` in `[media]`: the caller's answers
/// and the callee's offers mirror each other. Returns what the caller
/// received and the gateway's log.
fn held_and_resumed(uac_scenario: &str, media: &str) -> (String, String) {
    let (caller, callee, log) =
        call_outcome_with(("", media), uac_scenario, Some("bridge_uas_hold.xml"));
    // What each side got, in order: the caller's 200s (initial, hold,
    // resume) and the callee's INVITEs (initial, hold, resume).
    let sdp_dirs = |trace: &str, start: &str| -> Vec<String> {
        trace
            .split(start)
            .skip(1)
            .map(|m| {
                let m = m.split("message sent").next().unwrap_or(m);
                ["sendrecv", "sendonly", "recvonly", "inactive"]
                    .into_iter()
                    .find(|d| m.contains(&format!("a={d}")))
                    .unwrap_or("none")
                    .to_string()
            })
            .collect()
    };
    let answers: Vec<String> = sdp_dirs(&caller, "SIP/2.0 200 OK")
        .into_iter()
        .filter(|d| d != "none")
        .collect();
    assert_eq!(
        answers,
        ["sendrecv", "recvonly", "sendrecv"],
        "the caller's answers\n{caller}"
    );
    let offers = sdp_dirs(&callee, "INVITE sip:");
    assert_eq!(
        offers,
        ["sendrecv", "sendonly", "sendrecv"],
        "the callee's offers\n{callee}"
    );
    assert!(log.contains("session renegotiated"), "{log}");
    (caller, log)
}

#[test]
fn digits_cross_between_rfc_4733_and_sip_info() {
    // `auto`: INFO toward the callee, which agreed no telephone-event;
    // events toward the caller, which did. The callee checks that the
    // caller's RFC 4733 "1" comes as an INFO (its scenario fails otherwise).
    let (gw, caller, callee) = captured_call(
        "media.dtmf = \"auto\"",
        "bridge_uac_dtmf.xml",
        "bridge_uas_info.xml",
    );
    let ctx = || context(&gw, &caller, &callee);
    let info = callee.messages();
    let at = info.find("INFO sip:").expect("an INFO");
    assert!(info[at..].contains("Signal=1"), "{}", ctx());
    // The callee's INFO "2" reached the caller as telephone-events (PT
    // 101, event 2) from the gateway's port.
    let rows = tshark_rows(&caller.dir.path().join("capture.pcap"), caller.media);
    let events: Vec<&str> = rows
        .iter()
        .filter(|r| r.pt == 101 && r.src != caller.media)
        .map(|r| r.payload.as_str())
        .collect();
    assert!(events.len() >= 3, "{events:?}\n{}", ctx());
    assert!(
        events.iter().all(|p| p.starts_with("02")),
        "{events:?}\n{}",
        ctx()
    );
    // The last packets mark the end of the event (E bit).
    assert!(
        events
            .last()
            .is_some_and(|p| p[2..].trim_start_matches(':').starts_with('8')),
        "{events:?}"
    );
    let log = gw.log_text();
    assert!(log.contains("DTMF sent by SIP INFO"), "{log}");
    assert!(log.contains("DTMF received by SIP INFO"), "{log}");
}
