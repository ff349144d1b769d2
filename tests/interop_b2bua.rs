//! Interop through the B2BUA: headless Chromium (the built-in page) calls
//! `alice`, registered by a real baresip that auto-answers and sends a
//! 1 kHz tone while Chromium sends 440 Hz. Each side's received audio is
//! checked by its dominant frequency: what the browser heard (WebAudio FFT
//! in the page) and what baresip recorded (its sndfile module). One test
//! hangs up from the browser, one from baresip. The other way round,
//! baresip calls `bob`, registered by the page through the client API: the
//! page answers from its `incoming_call` event, or declines. With video,
//! baresip takes H.264 only (its avcodec module, a fakevideo camera):
//! the page's VP8 is transcoded both ways, and the page's H.264 relayed
//! untouched; each side must decode the other's pictures. With a rule
//! that sends digits by SIP INFO, the page's keypad reaches a SIPp callee
//! as an INFO and SIPp's INFO reaches the page as an SSE `dtmf` event.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use causeway_codecs::analysis::{dominant_frequency, tone};
use common::{Guard, Gw, free_port, free_port_and_next, require, run_bounded, sipp_command, write};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// A 16-bit WAV file, the same samples on every channel.
fn write_wav(path: &Path, samples: &[i16], rate: u32, channels: u16) {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.to_le_bytes(), channels as usize).flatten())
        .collect();
    let mut f = Vec::new();
    f.extend_from_slice(b"RIFF");
    f.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    f.extend_from_slice(b"WAVEfmt ");
    f.extend_from_slice(&16u32.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&channels.to_le_bytes());
    f.extend_from_slice(&rate.to_le_bytes());
    f.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
    f.extend_from_slice(&(2 * channels).to_le_bytes());
    f.extend_from_slice(&16u16.to_le_bytes());
    f.extend_from_slice(b"data");
    f.extend_from_slice(&(data.len() as u32).to_le_bytes());
    f.extend_from_slice(&data);
    std::fs::write(path, f).unwrap();
}

/// Reads a 16-bit PCM WAV: the first channel's samples and the rate;
/// None where the file is missing or not (yet) a WAV with a data chunk.
fn read_wav(path: &Path) -> Option<(Vec<i16>, u32)> {
    let b = std::fs::read(path).ok()?;
    if b.get(..4)? != b"RIFF" {
        return None;
    }
    let (mut i, mut rate, mut channels) = (12, 0u32, 1usize);
    while let Some(header) = b.get(i..i + 8) {
        let id = &header[..4];
        let len = u32::from_le_bytes(header[4..].try_into().ok()?) as usize;
        let body = &b[i + 8..(i + 8 + len).min(b.len())];
        if id == b"fmt " {
            channels = usize::from(u16::from_le_bytes(body.get(2..4)?.try_into().ok()?)).max(1);
            rate = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?);
        } else if id == b"data" {
            let samples = body
                .chunks_exact(2 * channels)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Some((samples, rate));
        }
        i += 8 + len + (len & 1);
    }
    None
}

/// Polls `done` every 100 ms for up to `secs`; fails with `context()`.
fn wait_for(what: &str, secs: u64, done: impl Fn() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A baresip registered as alice with one audio codec (`PCMU` or `opus`):
/// auto-answers, sends `tone.wav`, records what it receives into its
/// directory. With video, it sends and decodes H.264 (avcodec: the only
/// video module it loads, so the only video codec it takes; its account's
/// `video_codecs=H264` made it refuse the video section altogether).
struct Baresip {
    dir: tempfile::TempDir,
    ctrl: u16,
    _child: Guard,
}

impl Baresip {
    fn start(gw: &Gw, codecs: &str) -> Baresip {
        Self::start_with_video(gw, codecs, false)
    }

    fn start_with_video(gw: &Gw, codecs: &str, video: bool) -> Baresip {
        Self::start_with(gw, codecs, video, None)
    }

    /// With `mediaenc` (`srtp-mand`: SDES over RTP/SAVP, nothing else).
    fn start_with(gw: &Gw, codecs: &str, video: bool, mediaenc: Option<&str>) -> Baresip {
        let size = video.then_some("352x288");
        Self::launch(gw, ("alice", "secret"), codecs, size, mediaenc)
    }

    /// baresip registered as `user` (with its password), sending
    /// `codecs` and, when `video` names a size, fake H.264 video of that
    /// size.
    fn launch(
        gw: &Gw,
        (user, password): (&str, &str),
        codecs: &str,
        video: Option<&str>,
        mediaenc: Option<&str>,
    ) -> Baresip {
        let dir = tempfile::tempdir().unwrap();
        let sip_port = free_port_and_next();
        let ctrl = free_port();
        // aufile insists on the codec's own rate and channels.
        let (rate, channels) = if codecs == "opus" {
            (48000, 2)
        } else {
            (8000, 1)
        };
        let wav = dir.path().join("tone.wav");
        write_wav(
            &wav,
            &tone(1000.0, -12.0, rate, rate as usize * 30),
            rate,
            channels,
        );
        write(
            dir.path(),
            "config",
            &format!(
                "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nnet_interface 127.0.0.1\n\
                 module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule opus.so\n\
                 module aufile.so\nmodule alsa.so\nmodule sndfile.so\nsnd_path {}\n\
                 module_app account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n\
                 audio_source aufile,{}\naudio_player alsa,null\naudio_alert alsa,null\n{}{}",
                dir.path().display(),
                wav.display(),
                if mediaenc.is_some() {
                    "module srtp.so\n"
                } else {
                    ""
                },
                video.map_or(String::new(), |size| format!(
                    "module avcodec.so\nmodule fakevideo.so\nmodule snapshot.so\n\
                     video_source fakevideo,nil\nvideo_display fakevideo,nil\n\
                     video_size {size}\nvideo_fps 15\nvideo_bitrate 500000\n\
                     avcodec_h264enc libx264\navcodec_h264dec h264\n"
                )),
            ),
        );
        write(
            dir.path(),
            "accounts",
            &format!(
                "<sip:{user}@127.0.0.1:{};transport=udp>;auth_pass={password};answermode=auto;regint=300;audio_codecs={}{}\n",
                gw.sip_port,
                // baresip names Opus by its rate and channels.
                if codecs == "opus" {
                    "opus/48000/2"
                } else {
                    codecs
                },
                mediaenc
                    .map(|m| format!(";mediaenc={m}"))
                    .unwrap_or_default(),
            ),
        );
        let log = std::fs::File::create(dir.path().join("baresip.log")).unwrap();
        let child = Guard(
            Command::new("baresip")
                .current_dir(dir.path())
                .arg("-f")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let b = Baresip {
            dir,
            ctrl,
            _child: child,
        };
        wait_for(
            "baresip to register",
            15,
            || {
                let aor = format!("sip:{user}@");
                gw.registrations()
                    .iter()
                    .any(|r| r["aor"].as_str().is_some_and(|a| a.starts_with(&aor)))
            },
            || format!("{}\n{}", b.log(), gw.log_text()),
        );
        b
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// A ctrl_tcp command (netstring-framed JSON).
    fn command(&self, command: &str, params: &str) {
        let body = format!("{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"t\"}}");
        let mut s = TcpStream::connect(("127.0.0.1", self.ctrl)).unwrap();
        write!(s, "{}:{},", body.len(), body).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
    }

    /// Saves the next picture baresip decodes (snapshot module) and
    /// returns its width and height, read from the PNG header.
    fn decoded_picture(&self) -> (u32, u32) {
        let path = self.dir.path().join("recv.png");
        self.command("snapshot_recv", &path.display().to_string());
        let png = || {
            std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "png"))
                .and_then(|p| std::fs::read(p).ok())
                .filter(|b| b.len() > 24)
        };
        wait_for(
            "baresip's snapshot of a decoded picture",
            10,
            || png().is_some(),
            || self.log(),
        );
        let b = png().unwrap();
        let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        // IHDR follows the 8-byte signature and the chunk's length and type.
        (be(16), be(20))
    }

    /// Checks baresip heard `hz`, once its call closed: sndfile writes
    /// the length of its `-dec` dump (what baresip received and decoded)
    /// into the header only when the call's audio stops, so this waits
    /// for the dump to hold more than the second [`assert_heard`] skips.
    fn heard(&self, hz: f64, context: impl Fn() -> String) {
        let recorded = || {
            let dump = std::fs::read_dir(self.dir.path())
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.to_string_lossy().ends_with("-dec.wav"))?;
            read_wav(&dump).filter(|(samples, rate)| samples.len() > *rate as usize * 3 / 2)
        };
        wait_for(
            "baresip to close the call's recording",
            10,
            || recorded().is_some(),
            context,
        );
        let (samples, rate) = recorded().unwrap();
        assert_heard("baresip", &samples, rate, hz);
    }
}

fn node_call(gw: &Gw, seconds: u32, hangup: &str, wav: &Path) -> Command {
    let mut cmd = Command::new("node");
    cmd.env_remove("VIDEO_CODEC");
    cmd.current_dir(browser_dir()).args([
        "call.mjs",
        &format!("http://127.0.0.1:{}", gw.http_port),
        "alice",
        &seconds.to_string(),
        hangup,
        &wav.display().to_string(),
    ]);
    cmd
}

fn parse_result(out: &std::process::Output, gw: &Gw, baresip: &Baresip) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "no JSON from call.mjs ({e}):\n{stdout}\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            gw.log_text(),
            baresip.log()
        )
    })
}

fn prerequisites() {
    require("baresip");
    require("chromium");
    require("node");
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/browser (cargo xtask test does)"
    );
}

fn browser_tone(dir: &Path) -> PathBuf {
    let wav = dir.join("browser-440.wav");
    write_wav(&wav, &tone(440.0, -12.0, 48000, 48000 * 30), 48000, 1);
    wav
}

fn assert_heard(what: &str, samples: &[i16], rate: u32, want: f64) {
    // Skip the first second (answer, jitter buffer fill).
    let start = (rate as usize).min(samples.len());
    let f = dominant_frequency(&samples[start..], rate);
    assert!(
        (f - want).abs() < want * 0.03,
        "{what}: dominant frequency {f:.0} Hz, expected {want} Hz ({} samples)",
        samples.len()
    );
}

/// The page's call went through and it heard baresip's 1 kHz tone.
fn assert_page_heard_baresip(r: &Value, context: &dyn Fn() -> String) {
    assert!(r["errors"].as_array().unwrap().is_empty(), "{}", context());
    assert_eq!(r["connected"], true, "{}", context());
    let f = r["frequency"].as_f64().unwrap();
    assert!(
        (f - 1000.0).abs() < 30.0,
        "the browser heard {f} Hz\n{}",
        context()
    );
}

/// A counter from the gateway's "bridge media stopped" log line.
fn counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rfind(|l| l.contains("bridge media stopped"))
        .unwrap_or_default();
    let key = format!(" {name}=");
    line.split(&key)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn chromium_calls_baresip_through_pcmu_transcoding_and_hangs_up() {
    prerequisites();
    // The rule names the SIP side's codec, as an admin does for a G.711
    // phone: the call is sure to be transcoded, so the browser is asked for
    // no wider Opus than the phone plays (maxplaybackrate=8000).
    let plan_dir = tempfile::tempdir().unwrap();
    let plan = plan_dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "[[rule]]\nname = \"alice-pcmu\"\npriority = 10\nmatch.to = 'alice'\n\
         target = { type = \"registered\" }\nmedia = { codecs = [\"pcmu\"] }\n",
    )
    .unwrap();
    let gw = Gw::start(&format!("[dialplan]\npath = \"{}\"\n", plan.display()));
    let baresip = Baresip::start(&gw, "PCMU");
    let wav = browser_tone(baresip.dir.path());
    let mut cmd = node_call(&gw, 4, "browser", &wav);
    let page = std::thread::spawn(move || run_bounded(&mut cmd, Duration::from_secs(90)));
    // While it runs, the admin API lists both sides: the browser's ICE and
    // DTLS state and SDPs, baresip's SDPs, and counters that move.
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let c = gw.admin_get("/api/admin/v1/calls").1["result"][0].clone();
        if c["legs"][0]["dtls"] == "connected"
            && c["totals"]["to_callee_in"].as_u64().unwrap_or(0) > 0
        {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the call never showed up connected with counters: {c}\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = page.join().unwrap();
    let r = parse_result(&out, &gw, &baresip);
    let context = || format!("{r}\n{listed}\n{}\n{}", gw.log_text(), baresip.log());
    let (browser, sip) = (&listed["legs"][0], &listed["legs"][1]);
    assert_eq!(
        (&browser["side"], &browser["leg"]),
        (&"caller".into(), &"webrtc".into()),
        "{}",
        context()
    );
    assert!(
        matches!(browser["ice"].as_str(), Some("connected" | "completed")),
        "{}",
        context()
    );
    let sdp = |leg: &Value, which: &str| leg[which].as_str().unwrap_or_default().to_string();
    assert!(
        sdp(browser, "local_sdp").contains("a=fingerprint:sha-256"),
        "{}",
        context()
    );
    assert!(
        sdp(browser, "remote_sdp").contains("a=ice-ufrag"),
        "{}",
        context()
    );
    assert!(
        sdp(browser, "local_sdp").contains("maxplaybackrate=8000;sprop-maxcapturerate=8000"),
        "{}",
        context()
    );
    assert_eq!(
        (&sip["side"], &sip["leg"]),
        (&"callee".into(), &"sip".into()),
        "{}",
        context()
    );
    assert!(sdp(sip, "local_sdp").contains("PCMU/8000"), "{}", context());
    assert!(sdp(sip, "remote_sdp").contains("m=audio "), "{}", context());
    assert_page_heard_baresip(&r, &context);
    assert_eq!(
        r["stats"]["audioIn"]["codec"],
        "audio/opus",
        "{}",
        context()
    );
    assert!(
        r["stats"]["audioIn"]["packets"].as_u64().unwrap() > 150,
        "{}",
        context()
    );
    assert!(r["stats"]["audioIn"]["audioEnergy"].as_f64().unwrap() > 0.0);
    assert_eq!(r["ended"]["state"], "disconnected", "{}", context());
    assert!(gw.log_text().contains("PCMU/8000"), "{}", context());
    assert!(
        gw.log_text().contains("audio=\"transcoded\""),
        "{}",
        context()
    );
    // Chromium honoured it: every Opus packet it sent was narrowband.
    assert_eq!(
        counter(&gw.log_text(), "to_sip_bandwidth_in"),
        8000,
        "{}",
        context()
    );
    // baresip got the BYE and heard the browser's 440 Hz.
    baresip.heard(440.0, context);
    // Transcoding kept (nearly) every frame in both directions: jitter
    // buffer drops and concealment stay under 10%.
    wait_for(
        "the bridge to log its counters",
        10,
        || gw.log_text().contains("bridge media stopped"),
        context,
    );
    let log = gw.log_text();
    for side in ["to_sip", "to_caller"] {
        let (n_in, n_out) = (
            counter(&log, &format!("{side}_in")),
            counter(&log, &format!("{side}_out")),
        );
        assert!(
            n_in > 150 && n_out * 10 >= n_in * 9,
            "{side}: {n_out} out for {n_in} in\n{}",
            context()
        );
    }
    // The keypad's 5 reached baresip as an RFC 4733 telephone-event.
    assert!(
        baresip.log().contains("received event: '5' (end=1)"),
        "{}",
        context()
    );
    // The call record says the browser hung up, and what was bridged.
    let cdr = gw.only_cdr();
    assert_eq!(
        (&cdr["caller_leg"], &cdr["to"], &cdr["ended_by"]),
        (&"webrtc".into(), &"alice".into(), &"browser".into()),
        "{cdr}"
    );
    assert_eq!(cdr["media"]["callee_leg"], "sip", "{cdr}");
    assert_eq!(cdr["media"]["audio"], "transcoded", "{cdr}");
    assert_eq!(cdr["media"]["caller_codec"], "opus/48000", "{cdr}");
    assert_eq!(cdr["media"]["callee_codec"], "PCMU/8000", "{cdr}");
    assert!(
        cdr["totals"]["to_caller_out"].as_u64().unwrap() > 150,
        "{cdr}"
    );
}

#[test]
fn baresip_hangs_up_an_opus_call_from_chromium() {
    prerequisites();
    let gw = Gw::start("");
    let baresip = Baresip::start(&gw, "opus");
    let wav = browser_tone(baresip.dir.path());
    let mut cmd = node_call(&gw, 3, "remote", &wav);
    let node = std::thread::spawn(move || run_bounded(&mut cmd, Duration::from_secs(90)));
    // Hang up from baresip once the call has run a few seconds.
    wait_for(
        "the answer",
        40,
        || gw.log_text().contains("SIP side answered"),
        || format!("{}\n{}", gw.log_text(), baresip.log()),
    );
    std::thread::sleep(Duration::from_secs(5));
    // A key pressed on baresip reaches the page as an SSE `dtmf` event.
    baresip.command("sndcode", "7");
    std::thread::sleep(Duration::from_secs(1));
    baresip.command("hangup", "");
    let out = node.join().unwrap();
    let r = parse_result(&out, &gw, &baresip);
    let context = || format!("{r}\n{}\n{}", gw.log_text(), baresip.log());
    assert_page_heard_baresip(&r, &context);
    assert_eq!(r["dtmf"], serde_json::json!(["7"]), "{}", context());
    assert_eq!(r["ended"]["state"], "disconnected", "{}", context());
    assert_eq!(r["ended"]["by"], "sip", "{}", context());
    assert!(gw.log_text().contains("opus/48000"), "{}", context());
    // Both sides speak Opus: relayed, not transcoded.
    assert!(
        gw.log_text().contains("audio=\"passthrough\""),
        "{}",
        context()
    );
    baresip.heard(440.0, context);
    // The call record says the SIP side hung up.
    let cdr = gw.only_cdr();
    assert_eq!(cdr["ended_by"], "sip", "{cdr}");
    assert_eq!(cdr["media"]["audio"], "passthrough", "{cdr}");
}

/// The page registers `bob` and answers (or declines, `mode`) the call
/// baresip places to it; returns the page's result.
fn baresip_calls_the_page(
    gw: &Gw,
    baresip: &Baresip,
    mode: &str,
    hangup_from_baresip: bool,
) -> Value {
    let node = page_answers_baresip(gw, baresip, mode, 4, None);
    if hangup_from_baresip {
        wait_for(
            "the browser to answer",
            40,
            || gw.log_text().contains("browser answered"),
            || format!("{}\n{}", gw.log_text(), baresip.log()),
        );
        std::thread::sleep(Duration::from_secs(6));
        baresip.command("hangup", "");
    }
    let out = node.join().unwrap();
    parse_result(&out, gw, baresip)
}

/// Starts the page (registering `bob`, then answering as `mode` says and
/// listening for `seconds`, video only in `video_codec` when given), and
/// has baresip call it once it registered. Returns the page's run.
fn page_answers_baresip(
    gw: &Gw,
    baresip: &Baresip,
    mode: &str,
    seconds: u32,
    video_codec: Option<&str>,
) -> std::thread::JoinHandle<std::process::Output> {
    let wav = browser_tone(baresip.dir.path());
    let ready = baresip.dir.path().join(format!("page-ready-{mode}"));
    let mut cmd = Command::new("node");
    cmd.current_dir(browser_dir()).args([
        "answer.mjs",
        &format!("http://127.0.0.1:{}", gw.http_port),
        "bob",
        "hunter2",
        &seconds.to_string(),
        mode,
        &ready.display().to_string(),
        &wav.display().to_string(),
    ]);
    if let Some(codec) = video_codec {
        cmd.env("VIDEO_CODEC", codec);
    }
    let node = std::thread::spawn(move || run_bounded(&mut cmd, Duration::from_secs(90)));
    wait_for(
        "the page to register",
        40,
        || ready.exists() || node.is_finished(),
        || gw.log_text(),
    );
    baresip.command("dial", &format!("sip:bob@127.0.0.1:{}", gw.sip_port));
    node
}

#[test]
fn baresip_calls_a_browser_registered_through_the_client_api_which_answers() {
    prerequisites();
    let gw = Gw::start("");
    let baresip = Baresip::start(&gw, "PCMU");
    let r = baresip_calls_the_page(&gw, &baresip, "browser", false);
    let context = || format!("{r}\n{}\n{}", gw.log_text(), baresip.log());
    assert!(r["errors"].as_array().unwrap().is_empty(), "{}", context());
    assert_eq!(r["registered"], true, "{}", context());
    assert_eq!(
        r["incoming"]["remote_display_name"],
        "alice",
        "{}",
        context()
    );
    assert_eq!(r["incoming"]["offer_has_audio"], true, "{}", context());
    // The browser hears baresip's 1 kHz, in PCMU: the caller's codec was
    // offered first, so the audio is relayed untouched.
    assert_page_heard_baresip(&r, &context);
    assert_eq!(
        r["stats"]["audioIn"]["codec"],
        "audio/PCMU",
        "{}",
        context()
    );
    assert!(
        r["stats"]["audioIn"]["packets"].as_u64().unwrap() > 150,
        "{}",
        context()
    );
    assert!(
        gw.log_text().contains("audio=\"passthrough\""),
        "{}",
        context()
    );
    // The page hung up: baresip got the BYE and heard the browser's 440 Hz.
    assert_eq!(r["ended"]["state"], "disconnected", "{}", context());
    assert_eq!(r["ended"]["by"], "browser", "{}", context());
    baresip.heard(440.0, context);
    // The keypad's 5 reached the caller as an RFC 4733 telephone-event.
    assert!(
        baresip.log().contains("received event: '5' (end=1)"),
        "{}",
        context()
    );
    let cdr = gw.only_cdr();
    assert_eq!(
        (&cdr["caller_leg"], &cdr["to"], &cdr["ended_by"]),
        (&"sip".into(), &"bob".into(), &"browser".into()),
        "{cdr}"
    );
    assert_eq!(cdr["media"]["callee_leg"], "webrtc", "{cdr}");
}

#[test]
fn baresip_calls_a_browser_over_sdes_srtp_and_each_hears_the_other() {
    prerequisites();
    let gw = Gw::start("");
    // baresip offers RTP/SAVP with an SDES key and takes nothing else.
    let baresip = Baresip::start_with(&gw, "PCMU", false, Some("srtp-mand"));
    let r = baresip_calls_the_page(&gw, &baresip, "browser", false);
    let context = || format!("{r}\n{}\n{}", gw.log_text(), baresip.log());
    assert!(r["errors"].as_array().unwrap().is_empty(), "{}", context());
    // The page heard baresip's 1 kHz: we decrypted its SRTP.
    assert_page_heard_baresip(&r, &context);
    // baresip heard the page's 440 Hz: it decrypted ours.
    baresip.heard(440.0, context);
    assert!(baresip.log().contains("srtp"), "{}", context());
}

#[test]
fn chromium_calls_baresip_over_sdes_srtp_where_the_rule_requires_it() {
    prerequisites();
    let plan_dir = tempfile::tempdir().unwrap();
    let plan = write(
        plan_dir.path(),
        "plan.toml",
        "[[rule]]\nname = \"alice-srtp\"\npriority = 10\nmatch.to = 'alice'\n\
         target = { type = \"registered\" }\nmedia = { srtp = \"required\" }\n",
    );
    let gw = Gw::start(&format!("[dialplan]\npath = \"{}\"\n", plan.display()));
    // baresip takes RTP/SAVP with an SDES key and nothing else.
    let baresip = Baresip::start_with(&gw, "PCMU", false, Some("srtp-mand"));
    let wav = browser_tone(baresip.dir.path());
    let mut cmd = node_call(&gw, 4, "browser", &wav);
    let out = run_bounded(&mut cmd, Duration::from_secs(90));
    let r = parse_result(&out, &gw, &baresip);
    let context = || format!("{r}\n{}\n{}", gw.log_text(), baresip.log());
    // Each side heard the other through SRTP on the SIP leg.
    assert_page_heard_baresip(&r, &context);
    baresip.heard(440.0, context);
    let cdr = gw.only_cdr();
    assert_eq!(cdr["rule"], "alice-srtp", "{cdr}");
}

#[test]
fn baresip_hangs_up_an_opus_call_to_a_browser_a_declined_call_gets_603_and_a_vanished_one_480() {
    prerequisites();
    let gw = Gw::start("");
    let baresip = Baresip::start(&gw, "opus");
    let r = baresip_calls_the_page(&gw, &baresip, "remote", true);
    let context = || format!("{r}\n{}\n{}", gw.log_text(), baresip.log());
    assert_page_heard_baresip(&r, &context);
    assert_eq!(
        r["stats"]["audioIn"]["codec"],
        "audio/opus",
        "{}",
        context()
    );
    assert_eq!(r["ended"]["state"], "disconnected", "{}", context());
    assert_eq!(r["ended"]["by"], "caller", "{}", context());
    baresip.heard(440.0, context);

    // A second page declines: baresip's call fails with 603 Decline (in
    // what baresip logs from this call on).
    let from = baresip.log().len();
    let r = baresip_calls_the_page(&gw, &baresip, "decline", false);
    let context = || format!("{r}\n{}\n{}", gw.log_text(), baresip.log());
    assert!(r["errors"].as_array().unwrap().is_empty(), "{}", context());
    assert!(!r["incoming"].is_null(), "{}", context());
    wait_for(
        "baresip to hear 603",
        15,
        || baresip.log()[from..].contains("603 Decline"),
        context,
    );
    assert!(gw.log_text().contains("browser declined"), "{}", context());

    // A third page goes away while it rings: its closed event stream
    // fails the call with 480 long before the 60 s no-answer timeout.
    let from = baresip.log().len();
    let r = baresip_calls_the_page(&gw, &baresip, "vanish", false);
    let context = || format!("{r}\n{}\n{}", gw.log_text(), baresip.log());
    assert!(!r["incoming"].is_null(), "{}", context());
    wait_for(
        "baresip to hear 480",
        25,
        || baresip.log()[from..].contains("480 Temporarily Unavailable"),
        context,
    );
    assert!(
        gw.log_text().contains("browser went away while ringing"),
        "{}",
        context()
    );
}

/// Chromium calls baresip (H.264 only) with its video limited to `codec`;
/// checks that each side decoded the other's pictures and returns the
/// call's record.
fn video_call(codec: &str) -> Value {
    prerequisites();
    let gw = Gw::start("");
    let baresip = Baresip::start_with_video(&gw, "PCMU", true);
    let wav = browser_tone(baresip.dir.path());
    let mut cmd = node_call(&gw, 6, "browser", &wav);
    cmd.env("VIDEO_CODEC", codec);
    let node = std::thread::spawn(move || run_bounded(&mut cmd, Duration::from_secs(90)));
    video_both_ways(&gw, &baresip, node, codec)
}

/// baresip (H.264 only) calls the page, which answers with its camera
/// with video limited to `codec`; checks that each side decoded the
/// other's pictures and returns the call's record.
fn video_call_to_the_page(codec: &str) -> Value {
    prerequisites();
    let gw = Gw::start("");
    let baresip = Baresip::start_with_video(&gw, "PCMU", true);
    let node = page_answers_baresip(&gw, &baresip, "browser", 6, Some(codec));
    let cdr = video_both_ways(&gw, &baresip, node, codec);
    assert_eq!(cdr["media"]["callee_leg"], "webrtc", "{cdr}");
    cdr
}

/// The call between the page (run by `node`, its video limited to
/// `codec`) and baresip once video is bridged: baresip decoded the page's
/// camera, the page baresip's pictures and each heard the other. Returns
/// the call's record.
fn video_both_ways(
    gw: &Gw,
    baresip: &Baresip,
    node: std::thread::JoinHandle<std::process::Output>,
    codec: &str,
) -> Value {
    wait_for(
        "the answer",
        40,
        || gw.log_text().contains("bridging video") || node.is_finished(),
        || format!("{}\n{}", gw.log_text(), baresip.log()),
    );
    // Give the first keyframes time to cross, then keep what baresip decodes.
    std::thread::sleep(Duration::from_secs(3));
    let (width, height) = baresip.decoded_picture();
    let out = node.join().unwrap();
    let r = parse_result(&out, gw, baresip);
    let context = || format!("{r}\n{}\n{}", gw.log_text(), baresip.log());
    assert!(r["errors"].as_array().unwrap().is_empty(), "{}", context());
    assert_page_heard_baresip(&r, &context);
    // baresip decoded the page's camera (640x360, as the page asks).
    assert_eq!((width, height), (640, 360), "{}", context());
    // The page decoded baresip's fakevideo pictures (352x288).
    let v = &r["video"];
    assert_eq!(
        v["videoIn"]["codec"].as_str().map(str::to_lowercase),
        Some(format!("video/{}", codec.to_lowercase())),
        "{}",
        context()
    );
    assert!(
        v["videoIn"]["framesDecoded"].as_u64().unwrap_or(0) > 30,
        "{}",
        context()
    );
    assert_eq!(
        (&v["videoIn"]["width"], &v["videoIn"]["height"]),
        (&352.into(), &288.into()),
        "{}",
        context()
    );
    let cdr = gw.only_cdr();
    for dir in ["video_to_sip_out", "video_to_browser_out"] {
        assert!(
            cdr["totals"][dir].as_u64().unwrap_or(0) > 30,
            "{dir}: {cdr}\n{}",
            context()
        );
    }
    cdr
}

/// The record's whole video plan for a call with baresip's H.264: what
/// the browser sends and receives, and each direction's mode (toward the
/// SIP side, toward the browser).
fn assert_video_plan(
    cdr: &Value,
    (sends, receives): (&str, &str),
    (to_sip, to_browser): (&str, &str),
) {
    assert_eq!(
        cdr["media"]["video"],
        serde_json::json!({
            "browser_codec": sends,
            "browser_receives": receives,
            "sip_codec": "H264/90000",
            "to_sip": to_sip,
            "to_browser": to_browser,
        }),
        "{cdr}"
    );
}

#[test]
fn chromium_vp8_and_baresip_h264_are_transcoded_both_ways() {
    let cdr = video_call("VP8");
    assert_video_plan(
        &cdr,
        ("VP8/90000", "VP8/90000"),
        ("transcoded", "transcoded"),
    );
}

#[test]
fn chromium_h264_and_baresip_h264_are_relayed_untouched() {
    let cdr = video_call("H264");
    assert_video_plan(
        &cdr,
        ("H264/90000", "H264/90000"),
        ("passthrough", "passthrough"),
    );
}

/// The page takes only VP8 (its answer lists nothing else), but Chromium
/// sends the first codec of our offer it supports: baresip's H.264. So
/// the page is sent VP8 (transcoded) and its H.264 is relayed untouched;
/// the gateway learns that from its packets.
#[test]
fn baresips_h264_call_to_a_page_taking_only_vp8_is_transcoded_one_way() {
    let cdr = video_call_to_the_page("VP8");
    assert_video_plan(
        &cdr,
        ("H264/90000", "VP8/90000"),
        ("passthrough", "transcoded"),
    );
}

#[test]
fn baresips_h264_call_to_a_page_answering_h264_is_relayed_untouched() {
    let cdr = video_call_to_the_page("H264");
    assert_video_plan(
        &cdr,
        ("H264/90000", "H264/90000"),
        ("passthrough", "passthrough"),
    );
}

/// Two room systems over SIP: baresip registered as `bob` (fake H.264
/// video, 320x240) calls `alice`, another baresip (352x288), which
/// answers. The gateway offers alice bob's own video formats and relays
/// the one it picks both ways: each decodes the other's pictures, each
/// hears the other's 1 kHz tone, and the record says passthrough.
#[test]
fn baresip_calls_baresip_with_h264_video_relayed_both_ways() {
    prerequisites();
    let gw = Gw::start("");
    let alice = Baresip::launch(&gw, ("alice", "secret"), "PCMU", Some("352x288"), None);
    let bob = Baresip::launch(&gw, ("bob", "hunter2"), "PCMU", Some("320x240"), None);
    bob.command("dial", &format!("sip:alice@127.0.0.1:{}", gw.sip_port));
    let context = || format!("{}\n{}\n{}", gw.log_text(), alice.log(), bob.log());
    wait_for(
        "the call's media",
        20,
        || gw.log_text().contains("bridging media"),
        context,
    );
    // Give the first keyframes time to cross, then keep what each decodes.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(alice.decoded_picture(), (320, 240), "{}", context());
    assert_eq!(bob.decoded_picture(), (352, 288), "{}", context());
    std::thread::sleep(Duration::from_secs(1));
    bob.command("hangup", "");
    let cdr = gw.only_cdr();
    assert_eq!(cdr["media"]["callee_leg"], "sip", "{cdr}");
    let video = &cdr["media"]["sip_video"];
    assert_eq!(video["codec"], "H264/90000", "{cdr}");
    assert_eq!(video["video"], "passthrough", "{cdr}");
    for dir in ["video_to_callee_out", "video_to_caller_out"] {
        assert!(
            cdr["totals"][dir].as_u64().unwrap_or(0) > 30,
            "{dir}: {cdr}\n{}",
            context()
        );
    }
    alice.heard(1000.0, context);
    bob.heard(1000.0, context);
}

/// The page calls `alice`, which the dialplan sends to a SIPp UAS running
/// `scenario` (with `rule` added to the rule's TOML); the page listens for
/// `seconds`, presses 5 and hangs up.
struct PageToSipp {
    /// The page's result.
    r: Value,
    gw: Gw,
    dir: tempfile::TempDir,
    /// SIPp's exit status (None: still running after 20 s).
    status: Option<i32>,
    stdout: String,
}

impl PageToSipp {
    fn run(scenario: &str, rule: &str, seconds: u32) -> PageToSipp {
        Self::run_with(scenario, rule, seconds, None)
    }

    /// [`Self::run`], the page offering `video` (`H264`, `VP8`) when set,
    /// and SIPp's `h264.pcap` holding [`h264_without_keyframe`].
    fn run_with(scenario: &str, rule: &str, seconds: u32, video: Option<&str>) -> PageToSipp {
        prerequisites();
        require("sipp");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            "/usr/share/sip-tester/g711a.pcap",
            dir.path().join("g711a.pcap"),
        )
        .unwrap();
        if video.is_some() {
            let pcap = h264_without_keyframe(seconds + 3);
            std::fs::write(dir.path().join("h264.pcap"), pcap).unwrap();
        }
        let uas_port = free_port();
        let plan = write(
            dir.path(),
            "plan.toml",
            &format!(
                r#"
[[rule]]
name = "alice-on-sipp"
priority = 10
match.to = 'alice'
target = {{ type = "sip", uri = "sip:127.0.0.1:{uas_port}" }}
{rule}
"#
            ),
        );
        let gw = Gw::start(&format!("[dialplan]\npath = \"{}\"\n", plan.display()));
        let mut uas = sipp_command(dir.path(), scenario, uas_port);
        let media = free_port() & !1;
        uas.args(["-mp", &media.to_string(), "-mi", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut uas = Guard(uas.spawn().unwrap());
        let wav = browser_tone(dir.path());
        let mut page = node_call(&gw, seconds, "browser", &wav);
        if let Some(codec) = video {
            page.env("VIDEO_CODEC", codec);
        }
        let out = run_bounded(&mut page, Duration::from_secs(90));
        let deadline = Instant::now() + Duration::from_secs(20);
        while uas.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = uas.0.try_wait().unwrap().and_then(|s| s.code());
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let r = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or(Value::Null);
        let run = PageToSipp {
            r,
            gw,
            dir,
            status,
            stdout,
        };
        assert_eq!(run.r["connected"], true, "{}", run.context());
        assert_eq!(run.status, Some(0), "SIPp failed\n{}", run.context());
        run
    }

    /// What SIPp sent and received.
    fn messages(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("messages.log")).unwrap_or_default()
    }

    fn context(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.stdout,
            self.messages(),
            self.gw.log_text()
        )
    }
}

#[test]
fn the_pages_keypad_reaches_sipp_by_sip_info_and_sipps_info_reaches_the_page() {
    let run = PageToSipp::run("bridge_uas_info.xml", "media.dtmf = \"info\"", 3);
    let context = || run.context();
    // SIPp's scenario checked the INFO's content type and got a digit; it
    // is the keypad's 5, and there was one.
    let received: Vec<&str> = run
        .messages()
        .split("message received")
        .filter(|m| m.contains("INFO sip:"))
        .map(|m| if m.contains("Signal=5") { "5" } else { "?" })
        .collect();
    assert_eq!(received, ["5"], "{}", context());
    // The offer said nothing of telephone-events: digits go by INFO only.
    assert!(!run.messages().contains("telephone-event"), "{}", context());
    // SIPp's INFO (2) reached the page as one SSE dtmf event.
    assert_eq!(run.r["dtmf"], serde_json::json!(["2"]), "{}", context());
}

/// `seconds` of H.264 RTP as a room system sends it (payload type 96,
/// packetization mode 1, 30 fps, 320x240, a bar moving across) with its
/// keyframe left out: no receiver can decode it before it asks for one.
fn h264_without_keyframe(seconds: u32) -> Vec<u8> {
    use causeway::media::h264::{Mode, Packetizer};
    use causeway_codecs::video::{VideoCodec, VideoConfig, VideoEncoder, VideoFrame};
    let mut config = VideoConfig::new(VideoCodec::H264);
    config.bitrate = 300_000;
    config.keyframe_interval = 100_000;
    let mut encoder = VideoEncoder::new(config).unwrap();
    let packetizer = Packetizer::new(Mode::NonInterleaved, 1200);
    let mut packets = Vec::new();
    let mut seq = 0u16;
    for i in 0..seconds * 30 {
        let mut frame = VideoFrame::black(320, 240);
        let x = (i as usize * 4) % 304;
        for row in frame.y.chunks_mut(320) {
            row[x..x + 16].fill(235);
        }
        let Some(au) = encoder.encode(&frame, false).unwrap() else {
            continue;
        };
        if au.keyframe {
            continue;
        }
        let mut payloads = Vec::new();
        packetizer.packetize(&au.data, &mut payloads).unwrap();
        let last = payloads.len() - 1;
        for (k, payload) in payloads.into_iter().enumerate() {
            let marker = if k == last { 0x80 } else { 0 };
            let mut rtp = vec![0x80, marker | 96];
            rtp.extend_from_slice(&seq.to_be_bytes());
            rtp.extend_from_slice(&(i * 3000).to_be_bytes());
            rtp.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
            rtp.extend_from_slice(&payload);
            packets.push((i * 33_333, rtp));
            seq = seq.wrapping_add(1);
        }
    }
    common::pcap::rtp_pcap(packets)
}

#[test]
fn the_pages_keyframe_requests_reach_an_h264_callee_without_rtcp_feedback_as_sip_info() {
    // The page cannot decode the relayed H.264 and asks by RTCP.
    let cdr = keyframes_asked_by_info("H264");
    assert_eq!(cdr["media"]["video"]["to_browser"], "passthrough", "{cdr}");
}

#[test]
fn our_transcoder_asks_an_h264_callee_without_rtcp_feedback_for_keyframes_by_sip_info() {
    // Our H.264 decoder (toward the page's VP8) cannot decode it either.
    let cdr = keyframes_asked_by_info("VP8");
    assert_eq!(cdr["media"]["video"]["to_browser"], "transcoded", "{cdr}");
}

/// The page (offering `codec` video) calls a SIPp that answers H.264
/// without a=rtcp-fb and plays H.264 whose keyframe is missing: the
/// keyframe requests this causes reach SIPp as SIP INFO
/// picture_fast_update (its scenario fails without one), at most one per
/// 250 ms. Returns the call's record.
fn keyframes_asked_by_info(codec: &str) -> Value {
    // Digits by events only: the keypad's digit must not become an INFO
    // of another kind.
    let run = PageToSipp::run_with(
        "bridge_uas_video_info.xml",
        "media.dtmf = \"rfc4733\"",
        4,
        Some(codec),
    );
    let context = || run.context();
    let infos: Vec<String> = run
        .messages()
        .split("message received")
        .filter(|m| m.contains("INFO sip:"))
        .map(str::to_string)
        .collect();
    assert!(!infos.is_empty(), "{}", context());
    for info in &infos {
        assert!(
            info.contains("Content-Type: application/media_control+xml")
                && info.contains("<picture_fast_update/>"),
            "{info}"
        );
    }
    let cdr = run.gw.only_cdr();
    // (SIPp logs a retransmitted INFO too; those come 500 ms apart.)
    let ms = |k: &str| cdr[k].as_u64().expect(k);
    let most = ms("ended_at").saturating_sub(ms("answered_at")) / 250 + 1;
    assert!(
        infos.len() as u64 <= most,
        "{} INFOs, at most {most}\n{}",
        infos.len(),
        context()
    );
    assert!(
        cdr["totals"]["video_to_browser_in"].as_u64().unwrap_or(0) > 30,
        "{cdr}"
    );
    cdr
}

#[test]
fn early_media_from_a_183_reaches_the_page_before_the_answer() {
    // SIPp answers 183 with SDP and starts a 7 s speech pcap (236 packets,
    // with pauses), then answers 200 at 5.5 s: at most about 52 packets come
    // after the answer, so more than 150 at the page means early media
    // reached it.
    // (Events only: the keypad's digit must not become an INFO SIPp's
    // scenario does not expect.)
    let run = PageToSipp::run("bridge_uas_early.xml", "media.dtmf = \"rfc4733\"", 2);
    let context = || run.context();
    let log = run.gw.log_text();
    assert!(
        log.contains("early media from the SIP side"),
        "{}",
        context()
    );
    assert!(
        !log.contains("the answer moves the early media"),
        "{}",
        context()
    );
    let packets = run.r["stats"]["audioIn"]["packets"].as_u64().unwrap_or(0);
    assert!(packets > 150, "{packets} packets\n{}", context());
    assert!(
        run.r["stats"]["audioIn"]["audioEnergy"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{}",
        context()
    );
    // The record: answered after the early media, all of it sent on.
    let cdr = run.gw.only_cdr();
    assert!(
        cdr["totals"]["to_caller_out"].as_u64().unwrap() > 150,
        "{cdr}"
    );
}
