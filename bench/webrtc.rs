//! WebRTC leg costs: `cargo bench --bench webrtc -- [setup|load|all] [PEERS]`.
//!
//! - setup: the hub alone, sans-IO, against str0m client peers in the same
//!   thread: offer -> answer -> ICE -> DTLS -> first echoed audio frame.
//!   Only the time spent inside the hub's calls is counted, as thread CPU
//!   time (`CLOCK_THREAD_CPUTIME_ID`), so the clients' own work is not
//!   charged to the gateway. Then the
//!   heap held per idle connected peer, from a counting allocator, with the
//!   clients dropped.
//! - load: the release gateway binary on loopback, and the load client of
//!   `tests/load/webrtc_client.rs` opening PEERS (default 200) concurrent
//!   echo calls through the client API with 5 s of audio; the gateway's CPU
//!   time (`/proc/PID/stat`) and resident memory per peer.

// A measuring harness, not the gateway: when its setup fails (no
// certificate, a peer refusing our offer, the gateway binary not starting)
// there is nothing to measure, so it stops at once with the reason.
#![allow(clippy::expect_used)]

#[path = "../tests/load/webrtc_client.rs"]
mod load;

use causeway::webrtc::{Hub, HubOutput, PeerApp, PeerEvent, codec_config, generate_certificate};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// CPU time of the calling thread, from `CLOCK_THREAD_CPUTIME_ID`: cheap
/// enough (no system call) to bracket every hub call without charging the
/// measurement to the hub, which reading /proc per call did.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

const HUB: &str = "10.0.0.1:10000";

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    mid: str0m::media::Mid,
    connected: bool,
    echoed: bool,
}

/// The hub plus the CPU time spent inside it.
struct Timed {
    hub: Hub,
    cpu: Duration,
}

impl Timed {
    fn call<T>(&mut self, f: impl FnOnce(&mut Hub) -> T) -> T {
        let t0 = thread_cpu();
        let r = f(&mut self.hub);
        self.cpu += thread_cpu() - t0;
        r
    }
}

fn client(i: usize, now: Instant) -> (Client, String, str0m::change::SdpPendingOffer) {
    let addr: SocketAddr = format!("10.1.{}.{}:5000", i / 250, i % 250 + 1)
        .parse()
        .expect("an IPv4 literal and a port");
    let mut cfg = RtcConfig::new();
    *cfg.codec_config() = codec_config();
    let mut rtc = cfg.build(now);
    rtc.add_local_candidate(
        Candidate::host(addr, "udp").expect("a UDP host candidate on an address"),
    );
    let mut api = rtc.sdp_api();
    let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().expect("one audio section was added");
    let c = Client {
        rtc,
        addr,
        mid,
        connected: false,
        echoed: false,
    };
    (c, offer.to_sdp_string(), pending)
}

/// Drains a client to its timeout (str0m's rule after every mutation),
/// handing its datagrams to the hub.
fn drain_client(hub: &mut Timed, c: &mut Client, now: Instant) {
    loop {
        match c.rtc.poll_output().expect("a bench client peer failed") {
            Output::Timeout(_) => break,
            Output::Transmit(t) => {
                hub.call(|h| h.handle_receive(now, t.source, t.destination, &t.contents));
            }
            Output::Event(Event::Connected) => c.connected = true,
            Output::Event(Event::MediaData(_)) => c.echoed = true,
            Output::Event(_) => {}
        }
    }
}

/// Moves datagrams between the hub and the clients until `done`.
fn pump(
    hub: &mut Timed,
    clients: &mut [Client],
    now: &mut Instant,
    done: impl Fn(&[Client]) -> bool,
) {
    let hub_addr: SocketAddr = HUB.parse().expect("HUB is an address literal");
    let deadline = *now + Duration::from_secs(30);
    while !done(clients) && *now < deadline {
        for c in clients.iter_mut() {
            drain_client(hub, c, *now);
        }
        while let Some(o) = hub.call(Hub::poll_output) {
            if let HubOutput::Transmit(d) = o
                && let Some(c) = clients.iter_mut().find(|c| c.addr == d.destination)
            {
                let contents = d
                    .contents
                    .as_slice()
                    .try_into()
                    .expect("the hub sends datagrams under str0m's size limit");
                c.rtc
                    .handle_input(Input::Receive(
                        *now,
                        Receive {
                            proto: Protocol::Udp,
                            source: hub_addr,
                            destination: c.addr,
                            contents,
                        },
                    ))
                    .expect("a bench client refused the hub's datagram");
                drain_client(hub, c, *now);
            }
        }
        *now += Duration::from_millis(1);
        for c in clients.iter_mut() {
            c.rtc
                .handle_input(Input::Timeout(*now))
                .expect("a bench client failed on its timer");
            drain_client(hub, c, *now);
        }
        let t = *now;
        hub.call(|h| h.handle_timeout(t));
    }
}

fn setup(peers: usize) {
    let mut now = Instant::now();
    let base = LIVE.load(Ordering::Relaxed);
    let mut hub = Timed {
        hub: Hub::new(
            generate_certificate().expect("AWS-LC makes a P-256 certificate"),
            vec![HUB.parse().expect("HUB is an address literal")],
        ),
        cpu: Duration::ZERO,
    };
    let mut clients = Vec::new();
    // In batches of 50: each batch is offered, connected and echoes audio.
    for batch in 0..peers.div_ceil(50) {
        let start = clients.len();
        for i in start..(start + 50).min(peers) {
            let (mut c, offer, pending) = client(i, now);
            let t = now;
            let (_, answer) = hub
                .call(|h| h.accept_offer(t, &offer, PeerApp::Echo))
                .expect("the hub answers a str0m offer with our codecs");
            c.rtc
                .sdp_api()
                .accept_answer(
                    pending,
                    SdpAnswer::from_sdp_string(&answer).expect("the hub's answer parses"),
                )
                .expect("the client takes the hub's answer");
            clients.push(c);
        }
        pump(&mut hub, &mut clients[start..], &mut now, |cs| {
            cs.iter().all(|c| c.connected)
        });
        for c in &mut clients[start..] {
            let w = c
                .rtc
                .writer(c.mid)
                .expect("a connected client has its audio writer");
            let pt = w
                .payload_params()
                .next()
                .expect("the answer kept an audio codec")
                .pt();
            w.write(
                pt,
                now,
                MediaTime::new(0, Frequency::FORTY_EIGHT_KHZ),
                vec![0xf8u8; 60],
            )
            .expect("a connected client writes a frame");
        }
        pump(&mut hub, &mut clients[start..], &mut now, |cs| {
            cs.iter().all(|c| c.echoed)
        });
        assert!(
            clients[start..].iter().all(|c| c.echoed),
            "batch {batch}: not every peer got media back"
        );
    }
    let per_setup = hub.cpu / peers as u32;
    println!(
        "setup: {peers} peers (offer/answer + ICE + DTLS + first echoed frame): hub CPU {:?} in all, \
         {:?} per setup, {:.0} setups per CPU-second",
        hub.cpu,
        per_setup,
        1.0 / per_setup.as_secs_f64()
    );
    // Idle memory: drop the clients, drain, let the peers sit.
    drop(clients);
    while hub.hub.poll_output().is_some() {}
    let held = LIVE.load(Ordering::Relaxed) - base;
    let live = hub.hub.len();
    println!(
        "memory: {live} idle connected peers hold {} KiB of heap, {:.1} KiB per peer",
        held / 1024,
        held as f64 / 1024.0 / live as f64
    );
    // The peers time out on ICE consent; make sure they are reaped.
    let mut closed = 0;
    for _ in 0..200 {
        now += Duration::from_millis(100);
        hub.hub.handle_timeout(now);
        while let Some(o) = hub.hub.poll_output() {
            if let HubOutput::Event(_, PeerEvent::Closed(_)) = o {
                closed += 1;
            }
        }
    }
    println!("reaped after the clients vanished: {closed} of {live}");
}

fn gateway_load(peers: usize) {
    let gw = load::Gateway::start(
        env!("CARGO_BIN_EXE_causeway"),
        "bench-webrtc",
        None,
        "",
        None,
    );
    let pid = gw.pid();
    let (cpu0, rss0) = (load::process_cpu(pid), load::process_rss(pid));
    let mut setup_cpu = Duration::ZERO;
    let (mut cpu1, mut rss1) = (Duration::ZERO, 0);
    let report = load::run(
        gw.http,
        "echo",
        peers,
        Duration::from_secs(5),
        |phase| match phase {
            load::Phase::Connected => setup_cpu = load::process_cpu(pid) - cpu0,
            // Before the hang-ups, which are not part of the figure.
            load::Phase::MediaDone => {
                (cpu1, rss1) = (load::process_cpu(pid), load::process_rss(pid))
            }
        },
    );
    drop(gw);
    let (sent, echoed): (u64, u64) = (report.sent.iter().sum(), report.received.iter().sum());
    let mut first: Vec<Duration> = report.first_media.clone();
    first.sort();
    let cpu = cpu1 - cpu0;
    println!(
        "load: {peers} concurrent echo calls, {}/{peers} connected in {:?}; {sent} audio frames sent, \
         {echoed} echoed; first frame echoed back p50 {:?} p99 {:?}",
        report.connected,
        report.setup_wall,
        first.get(first.len() / 2).copied().unwrap_or_default(),
        first
            .get(first.len() * 99 / 100)
            .copied()
            .unwrap_or_default(),
    );
    println!(
        "load: gateway CPU for the setups (HTTP + offer/answer + ICE + DTLS) {:?}, {:?} per setup, \
         {:.0} setups per CPU-second",
        setup_cpu,
        setup_cpu / peers as u32,
        peers as f64 / setup_cpu.as_secs_f64().max(1e-9)
    );
    println!(
        "load: gateway CPU in all {:?} ({:?} per peer for setup + 5 s of 50 pps audio each way), \
         RSS {} MiB -> {} MiB, +{:.0} KiB per peer",
        cpu,
        cpu / peers as u32,
        rss0 >> 20,
        rss1 >> 20,
        rss1.saturating_sub(rss0) as f64 / 1024.0 / peers as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let what = args.first().map_or("all", String::as_str);
    let peers = args.get(1).and_then(|p| p.parse().ok());
    if matches!(what, "setup" | "all") {
        setup(peers.unwrap_or(500));
    }
    if matches!(what, "load" | "all") {
        gateway_load(peers.unwrap_or(200));
    }
}
