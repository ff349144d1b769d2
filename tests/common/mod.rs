//! Harness for interop tests: starts the real `causeway` binary on free
//! loopback ports with a temporary data directory, talks to its admin API
//! over plain HTTP/1.1, and runs third-party peers (SIPp, baresip) with
//! bounded time. Everything stays on 127.0.0.1; every process is killed on drop.

#![allow(dead_code)]
// unwrap/expect here are allowed by each test crate that includes this
// module (`#![allow(clippy::unwrap_used)]`): a harness stops at the first
// step that fails, and the panic names it.

pub mod pcap;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Ports this test process has handed out: a port is free only until
/// whoever asked binds it, so two calls in a row could otherwise get the
/// same one (a gateway given its callee's port calls itself in a loop).
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Takes `port` unless this process handed it out already.
fn hand_out(port: u16) -> bool {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    if handed.contains(&port) {
        return false;
    }
    handed.push(port);
    true
}

/// A port free for both UDP and TCP on 127.0.0.1 (at the time of asking),
/// never one this process handed out before.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && hand_out(port) {
            return port;
        }
    }
    panic!("no free port");
}

/// A port free on loopback (UDP and TCP) whose next port is free too:
/// baresip listens for SIP over TLS on its SIP port + 1, and cannot be
/// told not to, so a taken next port fails its start.
pub fn free_port_and_next() -> u16 {
    for _ in 0..100 {
        let port = free_port();
        let next = port.checked_add(1).unwrap_or(0);
        if next != 0
            && UdpSocket::bind(("127.0.0.1", next)).is_ok()
            && TcpListener::bind(("127.0.0.1", next)).is_ok()
            && hand_out(next)
        {
            return port;
        }
    }
    panic!("no free pair of ports");
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails with a clear message when a peer binary is missing.
pub fn require(bin: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{bin}` is not installed: run `cargo xtask test`, which installs the test peers"
    );
}

/// A running gateway.
pub struct Gw {
    child: Option<Child>,
    pub sip_port: u16,
    pub http_port: u16,
    pub data: tempfile::TempDir,
    pub config: PathBuf,
    pub token: String,
    log: PathBuf,
}

pub const DOMAIN: &str = "test.local";

impl Gw {
    /// Starts a gateway with users alice/secret and bob/hunter2 plus `extra` TOML.
    pub fn start(extra: &str) -> Gw {
        Self::start_with_sip("", extra)
    }

    /// Like [`Gw::start`], with `sip_extra` lines added to the `[sip]` table.
    pub fn start_with_sip(sip_extra: &str, extra: &str) -> Gw {
        Self::start_full(sip_extra, "", extra)
    }

    /// Like [`Gw::start_with_sip`], with `webrtc_extra` lines added to the
    /// `[webrtc]` table (whose socket is on a free loopback port).
    pub fn start_full(sip_extra: &str, webrtc_extra: &str, extra: &str) -> Gw {
        let data = tempfile::tempdir().unwrap();
        let sip_port = free_port();
        let http_port = free_port();
        let webrtc_port = free_port();
        let config = data.path().join("causeway.toml");
        let token = "interop-token".to_string();
        let text = format!(
            r#"
[sip]
domain = "{DOMAIN}"
udp = ["127.0.0.1:{sip_port}"]
tcp = ["127.0.0.1:{sip_port}"]
{sip_extra}
[webrtc]
bind = "127.0.0.1:{webrtc_port}"
{webrtc_extra}
[storage]
data_dir = "{data}"
[http]
bind = "127.0.0.1:{http_port}"
[admin]
token = "{token}"
[log]
level = "debug,str0m=info,is=info,dimpl=info"
{extra}
[[users]]
name = "alice"
password = "secret"
[[users]]
name = "bob"
password = "hunter2"
"#,
            data = data.path().join("state").display(),
        );
        std::fs::write(&config, text).unwrap();
        let log = data.path().join("gateway.log");
        let mut gw = Gw {
            child: None,
            sip_port,
            http_port,
            data,
            config,
            token,
            log,
        };
        gw.spawn();
        gw
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_causeway"))
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.http_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "gateway did not start:\n{}",
                self.log_text()
            );
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("gateway exited with {status}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and wait for a clean exit (asserted).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(st) = c.try_wait().unwrap() {
                    assert!(
                        st.success(),
                        "gateway exit status {st}:\n{}",
                        self.log_text()
                    );
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("gateway did not stop on SIGTERM:\n{}", self.log_text());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops and starts again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The gateway's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET with the admin token; returns (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, serde_json::Value) {
        http_get(self.http_port, path, Some(&self.token))
    }

    /// The one call record the gateway kept, once written (within 10 s).
    pub fn only_cdr(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.admin_get("/api/admin/v1/cdrs");
            assert_eq!(status, 200, "{body}");
            if let Some([r]) = body["result"].as_array().map(Vec::as_slice) {
                return r.clone();
            }
            assert!(Instant::now() < deadline, "no single record: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Any admin API request with the token; returns (status, body).
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        http_request(self.http_port, method, path, Some(&self.token), body)
    }

    /// The admin API's registration list.
    pub fn registrations(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.admin_get("/api/admin/v1/registrations");
        assert_eq!(status, 200, "{body}");
        body["result"].as_array().cloned().unwrap_or_default()
    }

    pub fn sip_target(&self) -> String {
        format!("127.0.0.1:{}", self.sip_port)
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Minimal HTTP/1.1 GET on loopback; returns the status and the JSON body.
pub fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    http_request(port, "GET", path, token, None)
}

/// Minimal HTTP/1.1 request with an optional JSON body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let content = body
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{content}Connection: close\r\n\r\n{}",
        body.unwrap_or("")
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked bodies: take the JSON between the first '{' or '[' and the last '}' or ']'.
    let start = body.find(['{', '[']).unwrap_or(0);
    let end = body.rfind(['}', ']']).map_or(body.len(), |e| e + 1);
    let json =
        serde_json::from_str(&body[start..end.max(start)]).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A raw HTTP/1.1 exchange on loopback: any headers, any body. Returns the
/// status, the response head (lowercase) and the body.
pub fn http_raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Runs a command with a time limit; kills it when over.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} ran past {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One SIPp run: a scenario from `tests/sipp/`, credentials, extra args.
pub struct Sipp {
    pub status: i32,
    pub messages: String,
    pub dir: tempfile::TempDir,
}

/// SIPp running one call of `tests/sipp/<scenario>` on 127.0.0.1:`port`,
/// in `dir`, tracing messages to `dir/messages.log`, giving up after 15 s.
pub fn sipp_command(dir: &Path, scenario: &str, port: u16) -> Command {
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(root().join("tests/sipp").join(scenario))
        .args(["-m", "1", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-timeout", "15", "-timeout_error"])
        .args(["-trace_msg", "-message_file", "messages.log", "-nostdin"]);
    cmd
}

/// Kills a child process when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sipp(gw: &Gw, scenario: &str, user: &str, password: &str, extra: &[&str]) -> Sipp {
    require("sipp");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    std::fs::write(
        &csv,
        format!(
            "SEQUENTIAL\n{user};{DOMAIN};[authentication username={user} password={password}]\n"
        ),
    )
    .unwrap();
    let mut cmd = sipp_command(dir.path(), scenario, free_port());
    cmd.arg("-inf").arg(&csv).args(extra).arg(gw.sip_target());
    let out = run_bounded(&mut cmd, Duration::from_secs(30));
    let messages = std::fs::read_to_string(dir.path().join("messages.log")).unwrap_or_default();
    Sipp {
        status: out.status.code().unwrap_or(-1),
        messages,
        dir,
    }
}

/// Status lines and header names of every response SIPp received, in order
/// (values differ by nonce and tag; the shape must not differ by user).
pub fn received_shapes(messages: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for block in messages.split("message received") {
        let Some(start) = block.find("SIP/2.0 ") else {
            continue;
        };
        let msg = &block[start..];
        let mut lines = msg.lines();
        let status = lines.next().unwrap_or_default().to_string();
        let names = lines
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_string())
            .collect();
        out.push((status, names));
    }
    out
}

/// Writes a file and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The final answer to an INVITE.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends an INVITE for `sip:{user}@{DOMAIN}` over UDP, waits (up to
/// `limit`) for the final response, ACKs it and returns it.
pub fn sip_invite(gw: &Gw, user: &str, limit: Duration) -> Answer {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let branch = format!("z9hG4bK{}", rand_token());
    let call_id = rand_token();
    let head = |method: &str, to_tag: &str| {
        format!(
            "{method} sip:{user}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:tester@{DOMAIN}>;tag=t1\r\nTo: <sip:{user}@{DOMAIN}>{to_tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    sock.send_to(head("INVITE", "").as_bytes(), gw.sip_target())
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no final answer to INVITE {user} within {limit:?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let mut words = text.split(' ');
        let status: u16 = words.nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        if status >= 200 {
            let reason = text
                .lines()
                .next()
                .unwrap_or("")
                .splitn(3, ' ')
                .nth(2)
                .unwrap_or("")
                .to_string();
            let to_tag = text
                .lines()
                .find(|l| l.starts_with("To:"))
                .and_then(|l| l.find(";tag=").map(|i| l[i..].to_string()))
                .unwrap_or_default();
            sock.send_to(head("ACK", &to_tag).as_bytes(), gw.sip_target())
                .unwrap();
            return Answer {
                status,
                reason,
                text,
            };
        }
    }
}

fn rand_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{t:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// One RTP packet as tshark decoded it.
#[derive(Debug)]
pub struct Row {
    pub src: u16,
    pub pt: u8,
    pub seq: u16,
    pub ssrc: String,
    pub payload: String,
    /// Seconds since the capture's first packet.
    pub time: f64,
}

pub fn tshark_rows(capture: &Path, rtp_port: u16) -> Vec<Row> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args([
            "-n",
            "-d",
            &format!("udp.port=={rtp_port},rtp"),
            "-Y",
            "rtp",
        ])
        .args(["-T", "fields", "-e", "udp.srcport", "-e", "rtp.p_type"])
        .args(["-e", "rtp.seq", "-e", "rtp.ssrc", "-e", "rtp.payload"])
        .args(["-e", "frame.time_relative"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                src: f[0].parse().unwrap(),
                pt: f[1].parse().unwrap(),
                seq: f[2].parse().unwrap(),
                ssrc: f[3].to_string(),
                payload: f[4].to_string(),
                time: f[5].parse().unwrap(),
            }
        })
        .collect()
}

/// Starts tshark on loopback and waits until it captures.
pub fn capture(dir: &Path, filter: &str) -> Guard {
    let err = std::fs::File::create(dir.join("tshark.err")).unwrap();
    let child = Command::new("tshark")
        .args(["-i", "lo", "-n", "-f", filter, "-w"])
        .arg(dir.join("capture.pcap"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(dir.join("tshark.err"))
        .unwrap_or_default()
        .contains("Capturing on")
    {
        assert!(Instant::now() < deadline, "tshark did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Guard(child)
}

/// Stops a capture cleanly (SIGINT lets dumpcap finish the file).
pub fn stop(mut g: Guard) {
    let _ = Command::new("kill")
        .args(["-INT", &g.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// tshark's own stream analysis of the stream sent from `src_port`:
/// (payload types, packets, lost). Lost is negative for duplicates.
pub fn tshark_stream(capture: &Path, rtp_port: u16, src_port: u16) -> (String, u32, i32) {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args([
            "-n",
            "-q",
            "-d",
            &format!("udp.port=={rtp_port},rtp"),
            "-z",
            "rtp,streams",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some(src_port.to_string().as_str()))
        .unwrap_or_else(|| panic!("no stream from port {src_port}:\n{text}"));
    // ... SSRC payload[, payload] pkts lost (pct%) deltas and jitters
    let f: Vec<&str> = line.split_whitespace().collect();
    let pct = f.iter().position(|w| w.ends_with("%)")).unwrap();
    (
        f[7..pct - 2].join(" "),
        f[pct - 2].parse().unwrap(),
        f[pct - 1].parse().unwrap(),
    )
}
