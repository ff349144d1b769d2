//! Media engine costs, in CPU time per unit of work (the honest figure on a
//! small, shared machine): `cargo bench --bench media [audio|relay|video|all]`,
//! and `cargo bench --bench media quality` (not part of `all`).
//!
//! - audio: a G.711 <-> Opus transcoded call, both directions, per 20 ms,
//!   at Opus complexity 1 (the default), 5, 3 and 8 (8 kHz, no
//!   resampler), on two mixed tones, and the one-way delay the
//!   chain adds (processing p99 plus the Opus encoder's lookahead).
//! - relay: RTP passthrough over loopback UDP (receive, parse, rewrite SSRC/
//!   sequence/timestamp/PT, send), plain and with SRTP unprotect + protect;
//!   packets per CPU-second of the relay thread and p99 latency added.
//! - quality: the cost and the quality of each Opus encoder complexity on
//!   G.711 speech, as the gateway transcodes it toward a browser: the A-law
//!   speech of a pcap (`QUALITY_PCAP`, default SIPp's
//!   `/usr/share/sip-tester/g711a.pcap`) decoded to the reference, then
//!   encoded at 8 kHz (20 kbit/s, no DTX) at complexity 0 to 10 and
//!   decoded again; CPU per frame of the encoder, and the WAVs written to
//!   `QUALITY_DIR` (default `target/opus-quality`) for `bench/opus_quality.py`,
//!   which scores them (ITU-T P.862 narrowband MOS-LQO).
//! - video: H.264 -> VP8 and VP8 -> H.264 (decode + encode) frames per
//!   CPU-second at 640x360 and 1280x720, and the bidirectional 30 fps calls
//!   per core that implies.
//!
//! CPU time is read from `/proc/thread-self/schedstat` (nanoseconds).

use std::hint::black_box;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use causeway::media::bridge::{Direction, Mode, Passthrough};
use causeway::media::rtp::{self, RtpHeader};
use causeway::media::srtp::{Context, MasterKey, Suite};
use causeway_codecs::analysis::tone;
use causeway_codecs::g711::{G711, Law};
use causeway_codecs::opus::{OpusConfig, OpusDecoder, OpusEncoder};
use causeway_codecs::video::{
    Scaler, VideoCodec, VideoConfig, VideoDecoder, VideoEncoder, VideoFrame, h264_access_units,
};
use causeway_codecs::{AudioDecoder, AudioEncoder, Pcm};
use std::collections::HashMap;

type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() * 99 / 100).copied().unwrap_or_default()
}

fn audio() -> R<()> {
    let pcm = |s: &[i16]| Pcm {
        sample_rate: 8000,
        channels: 1,
        samples: s.to_vec(),
    };
    // Speech-like input: two tones, so neither codec sees silence.
    let a = tone(440.0, -15.0, 8000, 8000 * 10);
    let b = tone(1000.0, -20.0, 8000, 8000 * 10);
    let mix: Vec<i16> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| x.saturating_add(*y))
        .collect();
    let mut ulaw_frames = Vec::new();
    let mut g = G711::new(Law::Ulaw);
    for chunk in mix.chunks_exact(160) {
        let mut p = Vec::new();
        g.encode(&pcm(chunk), &mut p)?;
        ulaw_frames.push(p);
    }
    for complexity in [1u8, 5, 3, 8] {
        let cfg = OpusConfig {
            complexity,
            dtx: false,
            ..OpusConfig::narrowband()
        };
        let mut to_opus = OpusEncoder::new(cfg)?;
        let mut from_opus = OpusDecoder::new(8000, 1)?;
        let (mut dec_g, mut enc_g) = (G711::new(Law::Ulaw), G711::new(Law::Ulaw));
        // The browser side's packets, made beforehand with a 48 kHz-capable encoder.
        let mut far = OpusEncoder::new(cfg)?;
        let mut opus_frames = Vec::new();
        for chunk in mix.chunks_exact(160) {
            let mut p = Vec::new();
            far.encode(&pcm(chunk), &mut p)?;
            opus_frames.push(p);
        }
        let (mut work, mut payload) = (pcm(&[]), Vec::new());
        let mut per_frame = Vec::new();
        let start = thread_cpu();
        let rounds = 5;
        for _ in 0..rounds {
            for (u, o) in ulaw_frames.iter().zip(&opus_frames) {
                let t = Instant::now();
                // SIP -> browser.
                dec_g.decode(u, &mut work)?;
                to_opus.encode(&work, &mut payload)?;
                black_box(&payload);
                // Browser -> SIP.
                from_opus.decode(o, &mut work)?;
                enc_g.encode(&work, &mut payload)?;
                black_box(&payload);
                per_frame.push(t.elapsed());
            }
        }
        let cpu = thread_cpu() - start;
        let frames = (ulaw_frames.len() * rounds) as f64;
        let us = cpu.as_secs_f64() * 1e6 / frames;
        println!(
            "audio: G.711<->Opus 8 kHz complexity {complexity}, both directions: {us:.1} us CPU per 20 ms \
             ({:.0} calls per core); processing p99 {:.0} us",
            20_000.0 / us,
            p99(&mut per_frame).as_secs_f64() * 1e6
        );
    }
    let lookahead = OpusEncoder::new(OpusConfig::narrowband())?.lookahead()?;
    println!(
        "audio: Opus encoder lookahead at 8 kHz: {lookahead} samples = {:.1} ms (the only algorithmic delay added; \
         both legs use 20 ms frames, so no re-framing)",
        f64::from(lookahead) / 8.0
    );
    Ok(())
}

/// The A-law payloads of the first RTP stream in a pcap (little-endian,
/// Ethernet, IPv4, UDP) laid out at their RTP timestamps, gaps filled with
/// silence: 8 kHz PCM, at most ten minutes of it.
fn pcap_alaw_speech(pcap: &[u8]) -> R<Vec<i16>> {
    const MAX_SAMPLES: usize = 10 * 60 * 8000;
    let magic = pcap.get(0..4).ok_or("not a pcap")?;
    let link = pcap.get(20..24).ok_or("not a pcap")?;
    if magic != 0xa1b2_c3d4u32.to_le_bytes() || link != 1u32.to_le_bytes() {
        return Err("not a little-endian Ethernet pcap".into());
    }
    let mut at = 24;
    let mut first: Option<(u32, u32)> = None;
    let mut pcm = Vec::new();
    while let Some(header) = pcap.get(at..at + 16) {
        let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let frame = pcap.get(at + 16..at + 16 + len).ok_or("a truncated pcap")?;
        at += 16 + len;
        // Ethernet (14) carrying IPv4 (its header length in words) and UDP (8).
        let ip = match frame.get(12..15) {
            Some([0x08, 0x00, v]) if v >> 4 == 4 && frame.get(23) == Some(&17) => {
                14 + usize::from(v & 0x0f) * 4
            }
            _ => continue,
        };
        let Some(packet) = frame.get(ip + 8..) else {
            continue;
        };
        let Ok(h) = RtpHeader::parse(packet) else {
            continue;
        };
        if h.payload_type != 8 {
            continue;
        }
        let (ssrc, ts0) = *first.get_or_insert((h.ssrc, h.timestamp));
        if h.ssrc != ssrc {
            continue;
        }
        let offset = h.timestamp.wrapping_sub(ts0) as usize;
        if offset > MAX_SAMPLES {
            continue;
        }
        let payload = h.payload(packet);
        if pcm.len() < offset + payload.len() {
            pcm.resize(offset + payload.len(), 0);
        }
        for (i, &a) in payload.iter().enumerate() {
            pcm[offset + i] = causeway_codecs::g711::alaw_decode(a);
        }
    }
    if pcm.is_empty() {
        return Err("no A-law RTP in the pcap".into());
    }
    Ok(pcm)
}

/// A mono 16-bit WAV file.
fn wav(rate: u32, samples: &[i16]) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 0x0001_0001, rate, rate * 2, 0x0010_0002] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// G.711 speech through the gateway's Opus encoder at every complexity:
/// encoder CPU per 20 ms frame, and the decoded speech for `bench/opus_quality.py`.
fn quality() -> R<()> {
    let source =
        std::env::var("QUALITY_PCAP").unwrap_or_else(|_| "/usr/share/sip-tester/g711a.pcap".into());
    let dir = std::path::PathBuf::from(
        std::env::var("QUALITY_DIR").unwrap_or_else(|_| "target/opus-quality".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let mut speech = pcap_alaw_speech(&std::fs::read(&source)?)?;
    speech.resize(speech.len().div_ceil(160) * 160, 0);
    std::fs::write(dir.join("reference.wav"), wav(8000, &speech))?;
    println!(
        "quality: {:.2} s of A-law speech from {source}",
        speech.len() as f64 / 8000.0
    );
    for complexity in 0..=10u8 {
        let cfg = OpusConfig {
            complexity,
            dtx: false,
            ..OpusConfig::narrowband()
        };
        let frame = |chunk: &[i16]| Pcm {
            sample_rate: 8000,
            channels: 1,
            samples: chunk.to_vec(),
        };
        let (mut payload, mut out) = (Vec::new(), frame(&[]));
        let mut decoded = Vec::with_capacity(speech.len());
        let (mut enc, mut dec) = (OpusEncoder::new(cfg)?, OpusDecoder::new(8000, 1)?);
        for chunk in speech.chunks_exact(160) {
            enc.encode(&frame(chunk), &mut payload)?;
            dec.decode(&payload, &mut out)?;
            decoded.extend_from_slice(&out.samples);
        }
        // The encoder's cost alone, over fresh encoders.
        let frames: Vec<Pcm> = speech.chunks_exact(160).map(frame).collect();
        let rounds = 10;
        let start = thread_cpu();
        for _ in 0..rounds {
            let mut enc = OpusEncoder::new(cfg)?;
            for f in &frames {
                enc.encode(f, &mut payload)?;
                black_box(&payload);
            }
        }
        let cpu = thread_cpu() - start;
        // The encoder's lookahead delays the output: align it to the input.
        let delay = OpusEncoder::new(cfg)?.lookahead()? as usize;
        decoded.drain(..delay.min(decoded.len()));
        std::fs::write(
            dir.join(format!("complexity-{complexity}.wav")),
            wav(8000, &decoded),
        )?;
        println!(
            "quality: complexity {complexity:2}: Opus encoder {:.1} us CPU per 20 ms frame",
            cpu.as_secs_f64() * 1e6 / (frames.len() * rounds) as f64
        );
    }
    println!(
        "quality: WAVs in {}; score them with bench/opus_quality.py",
        dir.display()
    );
    Ok(())
}

/// How the sender drives the relay.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// As fast as the relay drains, with at most `WINDOW` packets in flight
    /// (the queue never runs dry, never overflows): CPU per packet under load.
    Saturated,
    /// One packet every 200 us (5,000 packets/s, 50 calls both ways): the
    /// latency a packet sees on a lightly loaded relay.
    Paced,
    /// As `Paced`, straight to the sink with no relay: the loopback baseline
    /// the relay's added latency is measured against.
    Direct,
}

/// Small enough that the sockets' default receive buffers never overflow.
const WINDOW: usize = 64;

/// Relays `count` packets from a sender thread through this thread (the
/// passthrough [`Direction`] of the bridge, rewriting PT/SSRC/sequence/
/// timestamp) to a sink; returns packets per CPU-second of the relay thread
/// and the p99 send-to-receive latency.
fn relay_run(count: usize, batched: bool, load: Load) -> R<(f64, Duration)> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let relay_in = UdpSocket::bind("127.0.0.1:0")?;
    let relay_out = UdpSocket::bind("127.0.0.1:0")?;
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let sink_addr = sink.local_addr()?;
    let in_addr = if load == Load::Direct {
        sink_addr
    } else {
        relay_in.local_addr()?
    };
    relay_in.set_read_timeout(Some(Duration::from_secs(2)))?;
    // Once latched, the far address is fixed: a connected socket skips the
    // per-packet route lookup of send_to.
    relay_out.connect(sink_addr)?;
    sink.set_read_timeout(Some(Duration::from_secs(2)))?;
    let start_at = Instant::now();
    let received = Arc::new(AtomicUsize::new(0));
    // Sender: each payload carries its send time for the latency figure.
    let seen = received.clone();
    let sender = std::thread::spawn(move || -> R<()> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let mut p = Vec::new();
        let mut next = Instant::now();
        for i in 0..count {
            match load {
                Load::Saturated => {
                    // A packet lost on loopback must not stall the run.
                    let stuck = Instant::now() + Duration::from_millis(200);
                    while i >= seen.load(Ordering::Relaxed) + WINDOW {
                        if Instant::now() > stuck {
                            return Ok(());
                        }
                        std::thread::yield_now();
                    }
                }
                Load::Paced | Load::Direct => {
                    next += Duration::from_micros(200);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            let mut payload = [0u8; 172];
            let ns = start_at.elapsed().as_nanos() as u64;
            payload[..8].copy_from_slice(&ns.to_be_bytes());
            p.clear();
            rtp::write(
                &mut p,
                &RtpHeader::new(0, i as u16, (i * 160) as u32, 0xabc, false),
                &payload,
            );
            sock.send_to(&p, in_addr)?;
        }
        Ok(())
    });
    let sink_thread = std::thread::spawn(move || -> Vec<Duration> {
        let mut lat = Vec::with_capacity(count);
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = sink.recv_from(&mut buf) {
            let now = start_at.elapsed().as_nanos() as u64;
            if n >= 20 {
                let sent = u64::from_be_bytes(buf[12..20].try_into().unwrap_or_default());
                lat.push(Duration::from_nanos(now.saturating_sub(sent)));
            }
            received.fetch_add(1, Ordering::Relaxed);
            if lat.len() == count {
                break;
            }
        }
        lat
    });
    let mut direction = Direction::new(
        Mode::Passthrough(Passthrough::new(HashMap::from([(0, 8)]))),
        8000,
    );
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(1);
    let cpu0 = thread_cpu();
    let mut relayed = 0usize;
    if load == Load::Direct {
        relayed = count;
    } else if batched {
        relayed = relay_batched(&relay_in, &relay_out, sink_addr, &mut direction, count)?;
    }
    while relayed < count {
        let Ok((n, _)) = relay_in.recv_from(&mut buf) else {
            break;
        };
        direction.on_packet(Instant::now(), &buf[..n], &mut out);
        for p in out.drain(..) {
            relay_out.send(&p)?;
        }
        relayed += 1;
    }
    let cpu = thread_cpu() - cpu0;
    sender.join().map_err(|_| "sender panicked")??;
    let mut lat = sink_thread.join().map_err(|_| "sink panicked")?;
    Ok((relayed as f64 / cpu.as_secs_f64(), p99(&mut lat)))
}

/// The relay loop with batched system calls: up to 32 datagrams per
/// recvmmsg, and runs of same-size packets sent with one GSO sendmsg.
fn relay_batched(
    input: &UdpSocket,
    output: &UdpSocket,
    to: std::net::SocketAddr,
    direction: &mut Direction,
    count: usize,
) -> R<usize> {
    use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
    use std::io::IoSliceMut;
    const BATCH: usize = 32;
    let (rx_state, tx_state) = (
        UdpSocketState::new(input.into())?,
        UdpSocketState::new(output.into())?,
    );
    let max_segments = tx_state.max_gso_segments().max(1);
    input.set_nonblocking(true)?;
    let mut storage = vec![[0u8; 2048]; BATCH];
    let mut meta = vec![RecvMeta::default(); BATCH];
    let mut out: Vec<u8> = Vec::with_capacity(BATCH * 2048);
    let mut relayed_packets = Vec::with_capacity(1);
    let mut relayed = 0;
    while relayed < count {
        let mut slices: Vec<IoSliceMut<'_>> = storage
            .iter_mut()
            .map(|b| IoSliceMut::new(&mut b[..]))
            .collect();
        // Non-blocking recvmmsg (a blocking one waits for a full batch);
        // when the queue is empty, wait for readability as a runtime would.
        let n = match rx_state.recv(input.into(), &mut slices, &mut meta) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                drop(slices);
                input.set_nonblocking(false)?;
                let ready = input.peek_from(&mut [0u8; 1]);
                input.set_nonblocking(true)?;
                if ready.is_err() {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        drop(slices);
        // Flush runs of equal-size packets as one GSO send.
        let (mut run_len, mut run_size) = (0usize, 0usize);
        let flush = |out: &mut Vec<u8>, run_len: usize, size: usize| -> R<()> {
            if run_len > 0 {
                tx_state.try_send(
                    output.into(),
                    &Transmit {
                        destination: to,
                        ecn: None,
                        contents: out,
                        segment_size: (run_len > 1).then_some(size),
                        src_ip: None,
                    },
                )?;
                out.clear();
            }
            Ok(())
        };
        for (m, buf) in meta[..n].iter().zip(&mut storage) {
            let stride = m.stride.max(1);
            let now = Instant::now();
            for seg in buf[..m.len].chunks(stride) {
                direction.on_packet(now, seg, &mut relayed_packets);
                for p in relayed_packets.drain(..) {
                    if p.len() != run_size || run_len == max_segments {
                        flush(&mut out, run_len, run_size)?;
                        run_len = 0;
                        run_size = p.len();
                    }
                    out.extend_from_slice(&p);
                    run_len += 1;
                }
                relayed += 1;
            }
        }
        flush(&mut out, run_len, run_size)?;
    }
    Ok(relayed)
}

fn relay() -> R<()> {
    for (name, batched) in [
        ("one datagram per system call", false),
        ("batched (recvmmsg + GSO sendmsg)", true),
    ] {
        let (pps, _) = relay_run(300_000, batched, Load::Saturated)?;
        let (_, relayed) = relay_run(20_000, batched, Load::Paced)?;
        let (_, direct) = relay_run(20_000, batched, Load::Direct)?;
        println!(
            "relay, {name}: saturated {pps:.0} packets per CPU-second of the relay thread \
             ({:.2} us per packet); at 5,000 packets/s p99 send-to-receive {:.0} us through the relay, \
             {:.0} us direct: {:.0} us added",
            1e6 / pps,
            relayed.as_secs_f64() * 1e6,
            direct.as_secs_f64() * 1e6,
            relayed.saturating_sub(direct).as_secs_f64() * 1e6,
        );
    }
    // SRTP on both legs: the per-packet crypto cost, measured without sockets.
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
        let key_a = MasterKey::generate(suite);
        let key_b = MasterKey::generate(suite);
        let (mut sender, mut inbound, mut outbound) = (
            Context::new(&key_a)?,
            Context::new(&key_a)?,
            Context::new(&key_b)?,
        );
        let n = 200_000;
        let mut packets = Vec::with_capacity(n);
        for i in 0..n {
            let mut p = Vec::new();
            rtp::write(
                &mut p,
                &RtpHeader::new(0, i as u16, (i * 160) as u32, 0xabc, false),
                &[0x55; 172],
            );
            sender.protect_rtp(&mut p)?;
            packets.push(p);
        }
        let cpu0 = thread_cpu();
        for p in &mut packets {
            inbound.unprotect_rtp(p)?;
            let h = RtpHeader::parse(p)?;
            rtp::rewrite(p, 8, h.sequence, h.timestamp, 0x5151);
            outbound.protect_rtp(p)?;
        }
        let cpu = thread_cpu() - cpu0;
        println!(
            "relay: {} unprotect + rewrite + protect: {:.2} us CPU per packet ({:.0} packets per CPU-second, crypto only)",
            suite.name(),
            cpu.as_secs_f64() * 1e6 / n as f64,
            n as f64 / cpu.as_secs_f64()
        );
    }
    Ok(())
}

fn video() -> R<()> {
    let clip = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/video/testsrc2-640x360.h264"
    ))?;
    let mut dec = VideoDecoder::new(VideoCodec::H264)?;
    let mut source = Vec::new();
    for au in h264_access_units(&clip) {
        let mut f = VideoFrame::default();
        if dec.decode(&au, &mut f)? {
            source.push(f);
        }
    }
    for (w, h) in [(640u32, 360u32), (1280, 720)] {
        let frames: Vec<VideoFrame> = if w == 640 {
            source.clone()
        } else {
            let mut s = Scaler::i420(640, 360, w, h)?;
            source
                .iter()
                .map(|f| {
                    let mut out = VideoFrame::default();
                    s.scale(f, &mut out).map(|_| out)
                })
                .collect::<Result<_, _>>()?
        };
        let bitrate = if w == 640 { 800_000 } else { 1_800_000 };
        let mut rates = Vec::new();
        for (from, to) in [
            (VideoCodec::H264, VideoCodec::Vp8),
            (VideoCodec::Vp8, VideoCodec::H264),
        ] {
            // The incoming stream, as the far end would send it.
            let mut far = VideoEncoder::new(VideoConfig {
                bitrate,
                ..VideoConfig::new(from)
            })?;
            let incoming: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| {
                    far.encode(f, false)
                        .map(|e| e.map(|e| e.data).unwrap_or_default())
                })
                .collect::<Result<_, _>>()?;
            let mut dec = VideoDecoder::new(from)?;
            let mut enc = VideoEncoder::new(VideoConfig {
                bitrate,
                ..VideoConfig::new(to)
            })?;
            let mut pic = VideoFrame::default();
            let rounds = if w == 640 { 3 } else { 2 };
            let cpu0 = thread_cpu();
            let mut n = 0;
            for _ in 0..rounds {
                for data in &incoming {
                    if dec.decode(data, &mut pic)? {
                        black_box(enc.encode(&pic, false)?);
                        n += 1;
                    }
                }
            }
            let cpu = thread_cpu() - cpu0;
            let fps = f64::from(n) / cpu.as_secs_f64();
            rates.push(fps);
            println!("video: {from:?} -> {to:?} at {w}x{h}: {fps:.0} frames per CPU-second");
        }
        let calls = 1.0 / (30.0 / rates[0] + 30.0 / rates[1]);
        println!("video: {w}x{h}: {calls:.2} bidirectional 30 fps transcoded calls per core");
    }
    Ok(())
}

fn main() -> R<()> {
    let what = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "all".into());
    if matches!(what.as_str(), "audio" | "all") {
        audio()?;
    }
    if matches!(what.as_str(), "relay" | "all") {
        relay()?;
    }
    if matches!(what.as_str(), "video" | "all") {
        video()?;
    }
    if what == "quality" {
        quality()?;
    }
    Ok(())
}
