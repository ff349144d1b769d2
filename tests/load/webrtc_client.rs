//! A WebRTC load client: many str0m peers, each on its own loopback UDP
//! socket, that call `echo` through the client API of a running gateway,
//! send Opus-sized audio frames every 20 ms and count what comes back.
//! Shared by `tests/interop_webrtc_scale.rs` and `bench/webrtc.rs`.
//!
//! One thread drives every peer (sans-IO str0m, non-blocking sockets), so
//! the client costs one core at most and the gateway keeps the other.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

/// What the load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Peers whose ICE and DTLS completed.
    pub connected: usize,
    /// Frames each peer sent.
    pub sent: Vec<u64>,
    /// Frames each peer got back from the echo.
    pub echoed: Vec<u64>,
    /// From a peer's first frame sent to its first frame echoed back.
    pub first_media: Vec<Duration>,
    /// Wall time of the setup phase (all offers posted until all connected).
    pub setup_wall: Duration,
}

struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Option<Mid>,
    connected: bool,
    sent: u64,
    echoed: u64,
    first_write: Option<Instant>,
    first_media: Option<Duration>,
    samples: u64,
    /// When str0m next wants time.
    next: Instant,
}

/// Minimal HTTP/1.1 POST of JSON on loopback; returns status and body.
pub fn post_json(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // The body may be chunked: take the JSON object.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    (status, body[start..end.max(start)].to_string())
}

fn new_peer(now: Instant) -> (Peer, String, SdpPendingOffer) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let local = socket.local_addr().unwrap();
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let peer = Peer {
        rtc,
        socket,
        local,
        mid: Some(mid),
        connected: false,
        sent: 0,
        echoed: 0,
        first_write: None,
        first_media: None,
        samples: 0,
        next: now,
    };
    (peer, offer.to_sdp_string(), pending)
}

/// Feeds a peer what its socket holds and any due timeout; returns
/// whether anything arrived.
fn drive(p: &mut Peer, buf: &mut [u8]) -> bool {
    let mut busy = false;
    while let Ok((n, source)) = p.socket.recv_from(buf) {
        busy = true;
        let Ok(contents) = buf[..n].try_into() else {
            continue;
        };
        let _ = p.rtc.handle_input(Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: p.local,
                contents,
            },
        ));
        // Drain after every mutation.
        drive_outputs(p);
    }
    let now = Instant::now();
    if now >= p.next {
        let _ = p.rtc.handle_input(Input::Timeout(now));
        drive_outputs(p);
    }
    busy
}

/// Drains a peer's output until str0m asks for time.
fn drive_outputs(p: &mut Peer) {
    loop {
        match p.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                p.next = t;
                break;
            }
            Err(_) => break,
            Ok(Output::Transmit(t)) => {
                let _ = p.socket.send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(e)) => match e {
                Event::Connected => p.connected = true,
                Event::MediaData(_) => {
                    p.echoed += 1;
                    if let Some(w) = p.first_write {
                        p.first_media.get_or_insert_with(|| w.elapsed());
                    }
                }
                _ => {}
            },
        }
    }
}

/// Opens `n` echo calls against the gateway's HTTP port, sends `media`
/// worth of 20 ms frames on each, and reports. `connected` runs once every
/// peer is connected, before media starts (to read the gateway's CPU time).
pub fn run(http_port: u16, n: usize, media: Duration, connected: impl FnOnce()) -> LoadReport {
    let (status, body) = post_json(
        http_port,
        "/api/client/v1/aliases/echo/request_token",
        &[],
        r#"{"display_name":"load"}"#,
    );
    assert_eq!(status, 200, "request_token: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = v["result"]["token"].as_str().unwrap().to_string();

    let mut peers = Vec::with_capacity(n);
    let mut buf = vec![0u8; 2048];
    let setup_start = Instant::now();
    for _ in 0..n {
        let (mut peer, offer, pending) = new_peer(Instant::now());
        let body = serde_json::json!({ "sdp": offer }).to_string();
        let (status, resp) = post_json(
            http_port,
            "/api/client/v1/aliases/echo/calls",
            &[("token", &token)],
            &body,
        );
        assert_eq!(status, 200, "calls: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        let answer = SdpAnswer::from_sdp_string(v["result"]["sdp"].as_str().unwrap()).unwrap();
        peer.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        drive_outputs(&mut peer);
        peers.push(peer);
        // Keep the earlier peers' handshakes moving while posting.
        for p in &mut peers {
            drive(p, &mut buf);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while peers.iter().any(|p| !p.connected) && Instant::now() < deadline {
        let mut busy = false;
        for p in &mut peers {
            busy |= drive(p, &mut buf);
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let setup_wall = setup_start.elapsed();
    connected();

    // Media: one 60-byte Opus-sized frame per peer every 20 ms.
    let frame = vec![0xf8u8; 60];
    let end = Instant::now() + media;
    let mut next = Instant::now();
    while Instant::now() < end {
        while Instant::now() >= next {
            next += Duration::from_millis(20);
            for p in peers.iter_mut().filter(|p| p.connected) {
                let Some(mid) = p.mid else { continue };
                let now = Instant::now();
                let Some(w) = p.rtc.writer(mid) else { continue };
                let Some(pt) = w.payload_params().next().map(|pp| pp.pt()) else {
                    continue;
                };
                let time = MediaTime::new(p.samples, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                if w.write(pt, now, time, frame.clone()).is_ok() {
                    p.sent += 1;
                    p.first_write.get_or_insert(now);
                }
                p.samples += 960;
                drive_outputs(p);
            }
        }
        let mut busy = false;
        for p in &mut peers {
            busy |= drive(p, &mut buf);
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    // Let the last echoes arrive: until nothing comes for 500 ms (a
    // loaded gateway may be behind), at most 5 s.
    let give_up = Instant::now() + Duration::from_secs(5);
    let mut quiet_since = Instant::now();
    while Instant::now() < give_up && quiet_since.elapsed() < Duration::from_millis(500) {
        let mut busy = false;
        for p in &mut peers {
            busy |= drive(p, &mut buf);
        }
        if busy {
            quiet_since = Instant::now();
        } else {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    LoadReport {
        connected: peers.iter().filter(|p| p.connected).count(),
        sent: peers.iter().map(|p| p.sent).collect(),
        echoed: peers.iter().map(|p| p.echoed).collect(),
        first_media: peers.iter().filter_map(|p| p.first_media).collect(),
        setup_wall,
    }
}

/// CPU time (user + system) a process has used, from /proc.
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // rest[0] is field 3 (state), so utime is rest[11] and stime rest[12].
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Resident memory of a process, bytes.
pub fn process_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
