//! Scale: a Rust load client (str0m peers) opens 200 concurrent echo calls
//! against the gateway's single WebRTC port, sends audio (a 440 Hz tone in
//! Opus) on all of them and checks every call echoes it back. Prints the gateway's CPU and memory per
//! peer (the release-build figures are in bench/RESULTS.md, from
//! `cargo bench --bench webrtc`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;
#[path = "load/webrtc_client.rs"]
mod load;

use causeway_codecs::analysis::dominant_frequency;
use common::Gw;
use std::time::Duration;

const PEERS: usize = 200;

#[test]
fn two_hundred_concurrent_echo_calls_on_one_port() {
    let gw = Gw::start("");
    let pid = gw.pid().unwrap();
    let (cpu0, rss0) = (load::process_cpu(pid), load::process_rss(pid));
    // Read while every call is still up, before the hang-ups.
    let (mut cpu1, mut rss1) = (cpu0, rss0);
    let report = load::run(
        gw.http_port,
        "echo",
        PEERS,
        Duration::from_secs(3),
        |phase| {
            if phase == load::Phase::MediaDone {
                (cpu1, rss1) = (load::process_cpu(pid), load::process_rss(pid));
            }
        },
    );

    let (sent, echoed): (u64, u64) = (report.sent.iter().sum(), report.received.iter().sum());
    eprintln!("frames: {sent} sent, {echoed} echoed");
    let per_peer_cpu = (cpu1 - cpu0) / PEERS as u32;
    let per_peer_rss = rss1.saturating_sub(rss0) / PEERS as u64;
    eprintln!(
        "{PEERS} peers (debug build): setup {:?} wall; gateway CPU {:?} in all, {:?} per peer \
         (setup + 3 s of audio); RSS +{} KiB per peer",
        report.setup_wall,
        cpu1 - cpu0,
        per_peer_cpu,
        per_peer_rss / 1024
    );
    assert_eq!(
        report.connected,
        PEERS,
        "every peer connects:\n{}",
        gw.log_text()
    );
    assert_eq!(report.still_up, PEERS, "every call lasts until hung up");
    assert!(
        echoed * 100 >= sent * 99,
        "{echoed} of {sent} frames came back"
    );
    // Real Opus went out and came back: the first peer decodes its own tone.
    let heard = &report.first_peer_heard;
    let freq = dominant_frequency(&heard[heard.len().saturating_sub(48_000)..], 48_000);
    assert!(
        (freq - 440.0).abs() < 10.0,
        "the echo carries 440 Hz: {freq}"
    );
    for (i, (&sent, &echoed)) in report.sent.iter().zip(&report.received).enumerate() {
        assert!(sent >= 100, "peer {i} sent only {sent} frames");
        assert!(
            echoed * 10 >= sent * 9,
            "peer {i}: {echoed} of {sent} frames came back"
        );
    }
}
