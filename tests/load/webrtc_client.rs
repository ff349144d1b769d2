//! A WebRTC load client: many str0m peers, each on its own loopback UDP
//! socket, that call an alias (`echo`, or one the dialplan sends to a SIP
//! endpoint) through the client API of a running gateway, send real Opus
//! frames (a 440 Hz tone, 20 ms each) and count what comes back; at the end
//! they hang up through the client API. Shared by
//! `tests/interop_webrtc_scale.rs`, `bench/webrtc.rs` and
//! `bench/transcode.rs`.
//!
//! One thread drives every peer (sans-IO str0m, non-blocking sockets), so
//! the client costs one core at most and the gateway keeps the other.

// A load harness, not the gateway: when a step fails (the gateway refuses a
// call, a socket cannot be bound) there is nothing left to measure or test,
// so it stops at once with the reason. Each user (test or bench) takes only
// some of these helpers.
#![allow(dead_code, clippy::expect_used)]

use causeway_codecs::analysis::tone;
use causeway_codecs::opus::{OpusConfig, OpusDecoder, OpusEncoder};
use causeway_codecs::{AudioDecoder, AudioEncoder, Pcm};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::DtlsCert;
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
    /// Frames each peer received (the echo's, or the far end's).
    pub received: Vec<u64>,
    /// From a peer's first frame sent to its first frame received.
    pub first_media: Vec<Duration>,
    /// Wall time of the setup phase (all offers posted until all connected).
    pub setup_wall: Duration,
    /// Calls still up at the end, that the client hung up.
    pub still_up: usize,
    /// Frames each peer received during the media phase (every call up
    /// and the far end sending throughout).
    pub media_received: Vec<u64>,
    /// Each peer's longest wait between two frames during the media phase
    /// (as this client's loop saw them: its own lag is in it too).
    pub media_max_gap: Vec<Duration>,
    /// How long the media phase lasted.
    pub media_wall: Duration,
    /// What the first peer received, decoded (48 kHz mono): whether the far
    /// end's audio really came through.
    pub first_peer_heard: Vec<i16>,
}

/// Where a load run is: the caller reads the gateway's CPU time at each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Every peer is connected; media starts.
    Connected,
    /// The media phase is over; the calls are still up.
    MediaDone,
}

struct Peer {
    /// The client API's call id (to hang up).
    call: String,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Option<Mid>,
    connected: bool,
    sent: u64,
    received: u64,
    first_write: Option<Instant>,
    first_media: Option<Duration>,
    samples: u64,
    /// When str0m next wants time.
    next: Instant,
    /// Decodes what arrives (the first peer only: decoding costs the client).
    listen: Option<(OpusDecoder, Vec<i16>)>,
    /// The answer's `maxplaybackrate` for Opus: how wide a stream to send.
    max_playback_rate: Option<u32>,
    /// Whether the media phase is on (what arrives is counted below).
    in_media: bool,
    media_received: u64,
    last_arrival: Option<Instant>,
    max_gap: Duration,
}

/// Minimal HTTP/1.1 POST of JSON on loopback; returns status and body.
pub fn post_json(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    http(port, "POST", path, headers, body)
}

/// Minimal HTTP/1.1 request on loopback; returns the status and the JSON
/// of the body (object or array).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a non-zero timeout is accepted");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())
        .expect("the gateway reads the request");
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .expect("the gateway answers within the timeout");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // The body may be chunked: take the JSON.
    let start = body.find(['{', '[']).unwrap_or(0);
    let end = body.rfind(['}', ']']).map_or(body.len(), |e| e + 1);
    (status, body[start..end.max(start)].to_string())
}

/// A new client peer. Every peer presents `cert` and uses the gateway's
/// crypto provider (DTLS configuration built once), as a browser reuses one
/// certificate: the client's own setup cost stays out of the way of the
/// gateway it measures.
fn new_peer(now: Instant, cert: &DtlsCert) -> (Peer, String, SdpPendingOffer) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a free loopback UDP port");
    socket
        .set_nonblocking(true)
        .expect("a UDP socket can be non-blocking");
    let local = socket.local_addr().expect("a bound socket has an address");
    let mut rtc = RtcConfig::new()
        .set_crypto_provider(causeway::webrtc::crypto_provider())
        .set_dtls_cert(cert.clone())
        .clear_codecs()
        .enable_opus(true, false)
        .build(now);
    rtc.add_local_candidate(
        Candidate::host(local, "udp").expect("a UDP host candidate on an address"),
    );
    let mut api = rtc.sdp_api();
    let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().expect("one audio section was added");
    let peer = Peer {
        rtc,
        socket,
        local,
        mid: Some(mid),
        connected: false,
        sent: 0,
        received: 0,
        first_write: None,
        first_media: None,
        samples: 0,
        next: now,
        call: String::new(),
        listen: None,
        max_playback_rate: None,
        in_media: false,
        media_received: 0,
        last_arrival: None,
        max_gap: Duration::ZERO,
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
                Event::MediaData(data) => {
                    p.received += 1;
                    if p.in_media {
                        let now = Instant::now();
                        if let Some(last) = p.last_arrival {
                            p.max_gap = p.max_gap.max(now - last);
                        }
                        p.last_arrival = Some(now);
                        p.media_received += 1;
                    }
                    if let Some((decoder, heard)) = &mut p.listen {
                        let mut pcm = Pcm {
                            sample_rate: 48_000,
                            channels: 1,
                            samples: Vec::new(),
                        };
                        if decoder.decode(&data.data, &mut pcm).is_ok() {
                            heard.extend_from_slice(&pcm.samples);
                        }
                    }
                    if let Some(w) = p.first_write {
                        p.first_media.get_or_insert_with(|| w.elapsed());
                    }
                }
                _ => {}
            },
        }
    }
}

/// The `maxplaybackrate` an SDP answer sets on Opus (RFC 7587), if any.
pub fn max_playback_rate(sdp: &str) -> Option<u32> {
    let pt = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=rtpmap:")?.strip_suffix(" opus/48000/2"))?;
    let fmtp = sdp
        .lines()
        .find_map(|l| l.strip_prefix(&format!("a=fmtp:{pt} ")))?;
    fmtp.split(';')
        .find_map(|p| p.trim().strip_prefix("maxplaybackrate="))?
        .parse()
        .ok()
}

/// One second of a 440 Hz tone as 20 ms Opus frames, as a browser sends
/// it, sent in a loop. Chromium's Opus encoder honours the answer's
/// `maxplaybackrate`: at most 8 kHz it encodes narrowband at 12 kbit/s, at
/// most 16 kHz wideband at 20 kbit/s, else full band at 32 kbit/s
/// (WebRTC's `audio_encoder_opus`); the client does the same, feeding the
/// encoder at that rate (the packets are what a 48 kHz encoder limited to
/// that bandwidth makes).
fn tone_frames(max_playback_rate: Option<u32>) -> Vec<Vec<u8>> {
    let (rate, bitrate) = match max_playback_rate.unwrap_or(48_000) {
        0..=8_000 => (8_000, 12_000),
        8_001..=16_000 => (16_000, 20_000),
        _ => (48_000, 32_000),
    };
    let mut enc = OpusEncoder::new(OpusConfig {
        dtx: false,
        sample_rate: rate,
        bitrate,
        ..OpusConfig::webrtc()
    })
    .expect("a supported Opus rate and bitrate");
    let pcm = tone(440.0, -12.0, rate, rate as usize);
    pcm.chunks(rate as usize / 50)
        .map(|chunk| {
            let mut out = Vec::new();
            let frame = Pcm {
                sample_rate: rate,
                channels: 1,
                samples: chunk.to_vec(),
            };
            enc.encode(&frame, &mut out)
                .expect("20 ms at the encoder's own rate");
            out
        })
        .collect()
}

/// Opens `n` calls to `alias` against the gateway's HTTP port, sends
/// `media` worth of 20 ms frames on each, hangs them up and reports.
/// `phase` runs when every peer is connected, before media starts, and
/// when the media phase ends, before the hang-ups (to read the gateway's
/// CPU time).
pub fn run(
    http_port: u16,
    alias: &str,
    n: usize,
    media: Duration,
    mut phase: impl FnMut(Phase),
) -> LoadReport {
    let api = format!("/api/client/v1/aliases/{alias}");
    let (status, body) = post_json(
        http_port,
        &format!("{api}/request_token"),
        &[],
        r#"{"display_name":"load"}"#,
    );
    assert_eq!(status, 200, "request_token: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("a 200 carries JSON");
    let token = v["result"]["token"]
        .as_str()
        .expect("request_token returns a token")
        .to_string();

    let mut peers = Vec::with_capacity(n);
    let mut buf = vec![0u8; 2048];
    let cert = causeway::webrtc::generate_certificate().expect("a DTLS certificate");
    let setup_start = Instant::now();
    for _ in 0..n {
        let (mut peer, offer, pending) = new_peer(Instant::now(), &cert);
        let body = serde_json::json!({ "sdp": offer }).to_string();
        let (status, resp) = post_json(
            http_port,
            &format!("{api}/calls"),
            &[("token", &token)],
            &body,
        );
        assert_eq!(status, 200, "calls: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).expect("a 200 carries JSON");
        peer.call = v["result"]["call_uuid"]
            .as_str()
            .expect("a placed call has a call_uuid")
            .to_string();
        if peers.is_empty() {
            peer.listen = Some((
                OpusDecoder::new(48_000, 1).expect("48 kHz mono is an Opus rate"),
                Vec::new(),
            ));
        }
        let answer = v["result"]["sdp"]
            .as_str()
            .expect("a placed call has an answer");
        peer.max_playback_rate = max_playback_rate(answer);
        let answer = SdpAnswer::from_sdp_string(answer).expect("the gateway's answer parses");
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the answer matches our offer");
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
    phase(Phase::Connected);

    // Media: one Opus frame per peer every 20 ms.
    let mut frame_sets: std::collections::HashMap<Option<u32>, Vec<Vec<u8>>> = Default::default();
    for p in &peers {
        frame_sets
            .entry(p.max_playback_rate)
            .or_insert_with(|| tone_frames(p.max_playback_rate));
    }
    for p in &mut peers {
        p.in_media = true;
    }
    let media_start = Instant::now();
    let end = media_start + media;
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
                let frames = &frame_sets[&p.max_playback_rate];
                let frame = frames[(p.sent as usize) % frames.len()].clone();
                if w.write(pt, now, time, frame).is_ok() {
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
    for p in &mut peers {
        p.in_media = false;
    }
    let media_wall = media_start.elapsed();
    phase(Phase::MediaDone);
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
    // A call the far end or the gateway ended first is no longer there.
    let still_up = peers
        .iter()
        .filter(|p| {
            let path = format!("{api}/calls/{}/disconnect", p.call);
            post_json(http_port, &path, &[("token", &token)], "").0 == 200
        })
        .count();
    let first_peer_heard = peers
        .first_mut()
        .and_then(|p| p.listen.take())
        .map(|(_, heard)| heard)
        .unwrap_or_default();
    LoadReport {
        still_up,
        first_peer_heard,
        connected: peers.iter().filter(|p| p.connected).count(),
        sent: peers.iter().map(|p| p.sent).collect(),
        received: peers.iter().map(|p| p.received).collect(),
        first_media: peers.iter().filter_map(|p| p.first_media).collect(),
        setup_wall,
        media_received: peers.iter().map(|p| p.media_received).collect(),
        media_max_gap: peers.iter().map(|p| p.max_gap).collect(),
        media_wall,
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

/// The admin API token of a [`Gateway`].
pub const ADMIN_TOKEN: &str = "bench";

/// A release gateway binary started for a benchmark, on free loopback
/// ports, with a throwaway data directory; killed on drop.
pub struct Gateway {
    child: std::process::Child,
    pub dir: std::path::PathBuf,
    pub http: u16,
    pub sip: u16,
}

/// A loopback port free for both UDP and TCP (the gateway's HTTP port is
/// TCP, its SIP and WebRTC ports UDP).
pub fn free_port() -> u16 {
    (0..100)
        .find_map(|_| {
            let port = UdpSocket::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
            Some(port)
        })
        .expect("a free loopback port")
}

impl Gateway {
    /// Starts `binary` with `dialplan` (TOML; `None`: the embedded default
    /// plan) and `media` (more `[media]` settings, TOML lines), confined to
    /// CPU `cpu` when one is given (through `taskset`, so its runtime sees
    /// one CPU from the start), and waits for its HTTP port.
    pub fn start(
        binary: &str,
        name: &str,
        dialplan: Option<&str>,
        media: &str,
        cpu: Option<usize>,
    ) -> Gateway {
        let dir = std::env::temp_dir().join(format!("causeway-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        let (http, webrtc, sip) = (free_port(), free_port(), free_port());
        let plan = match dialplan {
            Some(text) => {
                let plan = dir.join("plan.toml");
                std::fs::write(&plan, text).expect("the dialplan file is writable");
                format!("[dialplan]\npath = \"{}\"\n", plan.display())
            }
            None => String::new(),
        };
        let cfg = dir.join("causeway.toml");
        std::fs::write(
            &cfg,
            format!(
                "[sip]\nudp = [\"127.0.0.1:{sip}\"]\ntcp = []\n[webrtc]\nbind = \"127.0.0.1:{webrtc}\"\n\
                 [http]\nbind = \"127.0.0.1:{http}\"\n[storage]\ndata_dir = \"{}\"\n[log]\nlevel = \"warn\"\n\
                 [admin]\ntoken = \"{ADMIN_TOKEN}\"\n[media]\nport_min = 30000\nport_max = 60000\n{media}\n{plan}",
                dir.join("data").display(),
            ),
        )
        .expect("the config file is writable");
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", &cpu.to_string(), binary]);
                c
            }
            None => std::process::Command::new(binary),
        };
        let child = command
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(std::fs::File::create(dir.join("gateway.log")).expect("log file"))
            .spawn()
            .expect("the gateway binary cargo built starts");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", http)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "gateway did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Gateway {
            child,
            dir,
            http,
            sip,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the gateway logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
