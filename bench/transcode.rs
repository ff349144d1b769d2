//! Concurrent G.711 <-> Opus transcoded calls through the B2BUA:
//! `cargo bench --bench transcode [CALLS] [SECONDS]` (defaults 200 and 10;
//! `OPUS_COMPLEXITY=N` runs the gateway with `media.opus_complexity = N`;
//! `GATEWAY_CPU=N` confines the gateway to CPU N, and this process and
//! SIPp to the other CPUs: the gateway's runtime then starts one worker,
//! and the run measures what one core carries).
//!
//! The WebRTC side is the load client of `tests/load/webrtc_client.rs`:
//! CALLS str0m peers offer Opus only and call `bob` through the client API,
//! each sending a 440 Hz tone as 20 ms Opus frames. The dialplan sends `bob`
//! to a SIPp UAS (`bench/sipp/uas_tone_stream.xml`) that answers G.711
//! A-law only and streams a raw A-law file in a loop until the BYE: 10 s of
//! a 1 kHz tone, one packet every 20 ms without gaps (written by this
//! bench; Debian's speech pcap has silence gaps, 33 packets/s, which would
//! flatter the figure). So every
//! call is transcoded both ways: Opus decode + A-law encode toward SIPp,
//! A-law decode + Opus encode toward the browser, with SRTP and str0m on
//! the WebRTC leg and plain RTP on the SIP leg.
//!
//! The figure is the gateway's CPU time (user + system, `/proc/PID/stat`)
//! over the media phase, while every call is up and carrying audio both
//! ways: calls per core = CALLS x SECONDS / CPU-seconds. The call records
//! afterwards say whether each call was really transcoded and how many
//! packets went each way, and the first browser's decoded audio must be the
//! 1 kHz tone. Requires `sipp` (`cargo xtask deps`).

// A measuring harness, not the gateway: when its setup fails (no SIPp, the
// gateway binary not starting) there is nothing to measure, so it stops at
// once with the reason.
#![allow(clippy::expect_used)]

#[path = "../tests/load/webrtc_client.rs"]
mod load;
use causeway_codecs::analysis::{dominant_frequency, level_db, tone};
use causeway_codecs::g711::alaw_encode;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Samples in the A-law file SIPp loops (10 s at 8 kHz).
const SAMPLES: usize = 80_000;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let calls: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);

    let work = std::env::temp_dir().join(format!("causeway-bench-sipp-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("the temporary directory is writable");
    // A whole number of the tone's periods, so the loop has no seam.
    let alaw: Vec<u8> = tone(1000.0, -12.0, 8000, SAMPLES)
        .into_iter()
        .map(alaw_encode)
        .collect();
    std::fs::write(work.join("tone.al"), alaw).expect("the A-law file is writable");
    let gateway_cpu = std::env::var("GATEWAY_CPU").ok().map(|c| {
        let cpu: usize = c.parse().expect("GATEWAY_CPU is a CPU number");
        keep_off(cpu);
        cpu
    });
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/sipp/uas_tone_stream.xml");
    let (uas_port, media_port) = (load::free_port(), load::free_port());
    let mut uas = Command::new("sipp")
        .current_dir(&work)
        .arg("-sf")
        .arg(&scenario)
        .args([
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-nostdin",
            "-trace_err",
        ])
        .args(["-p", &uas_port.to_string(), "-mp", &media_port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("sipp runs (cargo xtask deps)");

    // The rule names the SIP side's codecs (CODECS, default `pcma`), as an
    // admin does for a G.711 trunk; `CODECS=any` leaves the list out, so the
    // SIP side is offered Opus first and answers A-law.
    let codecs = std::env::var("CODECS").unwrap_or_else(|_| "pcma".into());
    let media = if codecs == "any" {
        String::new()
    } else {
        let list: Vec<String> = codecs.split(',').map(|c| format!("{c:?}")).collect();
        format!("media = {{ codecs = [{}] }}\n", list.join(", "))
    };
    let plan = format!(
        "[[rule]]\nname = \"bench\"\npriority = 1\nmatch.to = 'bob'\n\
         target = {{ type = \"sip\", uri = \"sip:127.0.0.1:{uas_port}\" }}\n{media}"
    );
    // OPUS_COMPLEXITY sets `media.opus_complexity`; unset, the default.
    let complexity = std::env::var("OPUS_COMPLEXITY").ok();
    let complexity: Option<u8> =
        complexity.map(|c| c.parse().expect("OPUS_COMPLEXITY is a number from 0 to 10"));
    let media_settings = complexity
        .map(|c| format!("opus_complexity = {c}"))
        .unwrap_or_default();
    println!(
        "rule codecs: {codecs}; Opus complexity: {}; gateway on {}",
        complexity.map_or("the default".into(), |c| c.to_string()),
        gateway_cpu.map_or("any CPU".into(), |c| format!("CPU {c} only"))
    );
    let gw = load::Gateway::start(
        env!("CARGO_BIN_EXE_causeway"),
        "bench-transcode",
        Some(&plan),
        &media_settings,
        gateway_cpu,
    );
    let pid = gw.pid();
    let mut media_start = (Duration::ZERO, Instant::now());
    let mut media_end = media_start;
    let report = load::run(
        gw.http,
        "bob",
        calls,
        Duration::from_secs(seconds),
        |phase| {
            let mark = (load::process_cpu(pid), Instant::now());
            match phase {
                load::Phase::Connected => media_start = mark,
                load::Phase::MediaDone => media_end = mark,
            }
        },
    );

    // The records are written when each call's media stops.
    let auth = format!("Bearer {}", load::ADMIN_TOKEN);
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let (status, body) = load::http(
            gw.http,
            "GET",
            "/api/admin/v1/cdrs",
            &[("Authorization", &auth)],
            "",
        );
        assert_eq!(status, 200, "cdrs: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("a 200 carries JSON");
        let rows = v["result"].as_array().cloned().unwrap_or_default();
        let ended = rows.iter().filter(|r| r["totals"].is_object()).count();
        if ended >= calls || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = gw.log();
    drop(gw);
    let _ = uas.kill();
    let _ = uas.wait();
    let _ = std::fs::remove_dir_all(&work);

    if report.still_up < calls {
        println!(
            "{} calls ended before the client hung up; the gateway's log:\n{log}",
            calls - report.still_up
        );
        if let Some(r) = records.first() {
            println!("the first call's record: {r}");
        }
    }
    let transcoded = records
        .iter()
        .filter(|r| r["media"]["audio"] == "transcoded")
        .count();
    let total = |k: &str| -> u64 {
        records
            .iter()
            .map(|r| r["totals"][k].as_u64().unwrap_or(0))
            .sum()
    };
    let cpu = media_end.0 - media_start.0;
    let wall = media_end.1 - media_start.1;
    let call_seconds = calls as f64 * wall.as_secs_f64();
    let (sent, received): (u64, u64) = (report.sent.iter().sum(), report.received.iter().sum());
    let fewest = report.received.iter().min().copied().unwrap_or(0);
    println!(
        "calls: {}/{calls} connected in {:?}; {transcoded} of {} records say transcoded ({})",
        report.connected,
        report.setup_wall,
        records.len(),
        records
            .first()
            .map(|r| format!(
                "{} <-> {}",
                r["media"]["caller_codec"], r["media"]["callee_codec"]
            ))
            .unwrap_or_default()
    );
    println!(
        "packets: browser -> gateway {sent} sent, gateway -> SIPp {} of {} received; \
         SIPp -> gateway {}, gateway -> browser {} sent, {received} received (fewest on one call {fewest}); \
         SIP-side loss {}",
        total("to_callee_out"),
        total("to_callee_in"),
        total("to_caller_in"),
        total("to_caller_out"),
        total("lost"),
    );
    // SIPp streams 50 packets a second on every call throughout the media
    // phase: what the browsers should get, if the gateway keeps up.
    let expected = calls as f64 * report.media_wall.as_secs_f64() * 50.0;
    let in_media: u64 = report.media_received.iter().sum();
    let mut gaps = report.media_max_gap.clone();
    gaps.sort();
    let gap = |q: f64| {
        let i = (gaps.len().saturating_sub(1) as f64 * q) as usize;
        gaps.get(i).map_or(0, Duration::as_millis)
    };
    println!(
        "media phase: the browsers received {in_media} frames of {expected:.0} expected (SIPp's 50 \
         a second on every call: {:.2} %); longest gap between two frames on a call: median {} ms, worst {} ms",
        100.0 * in_media as f64 / expected.max(1.0),
        gap(0.5),
        gap(1.0),
    );
    let heard = &report.first_peer_heard;
    // The last second before the hang-up: the stream has settled.
    let tail = &heard[heard.len().saturating_sub(48_000)..];
    let heard = dominant_frequency(tail, 48_000);
    println!(
        "audio at the first browser: {heard:.0} Hz at {:.1} dBFS (SIPp's 1 kHz tone at -12 dBFS, \
         A-law -> Opus)",
        level_db(tail)
    );
    // A figure for calls that did not carry the tone would be no figure.
    assert!(
        (heard - 1000.0).abs() < 50.0,
        "the first browser heard {heard:.0} Hz, not SIPp's 1 kHz tone"
    );
    println!(
        "gateway CPU over the media phase: {:.2} s in {:.2} s of wall time with {calls} calls up \
         ({:.2} cores); {:.2} ms per call-second; {:.0} calls per core",
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / call_seconds,
        call_seconds / cpu.as_secs_f64().max(1e-9),
    );
}

/// Confines this process (its one thread so far, and so every thread and
/// child it starts later: the load client, SIPp) to every CPU but `cpu`.
fn keep_off(cpu: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let others: Vec<String> = (0..cpus)
        .filter(|c| *c != cpu)
        .map(|c| c.to_string())
        .collect();
    assert!(
        cpu < cpus && !others.is_empty(),
        "GATEWAY_CPU={cpu} leaves no other CPU of {cpus} for the load"
    );
    let status = Command::new("taskset")
        .args(["-p", "-c", &others.join(",")])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .expect("taskset runs (util-linux)");
    assert!(status.success(), "taskset could not confine the bench");
}
