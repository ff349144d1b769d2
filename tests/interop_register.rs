//! Interop: real SIPp and baresip against the real gateway binary on loopback.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn sipp_registers_with_digest_and_the_admin_api_lists_it() {
    let gw = Gw::start("");
    let run = sipp(&gw, "register.xml", "alice", "secret", &[]);
    assert_eq!(
        run.status,
        0,
        "SIPp failed:\n{}\n{}",
        run.messages,
        gw.log_text()
    );
    let regs = gw.registrations();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["aor"], "sip:alice@test.local");
    assert_eq!(regs[0]["user_agent"], "SIPp");
    assert_eq!(regs[0]["transport"], "udp");
    assert!(regs[0]["expires_in"].as_u64().unwrap() > 290);
    // Without the token the API refuses, with a JSON reason.
    let (status, body) = http_get(gw.http_port, "/api/admin/v1/registrations", None);
    assert_eq!(status, 401);
    assert_eq!(body["status"], "failed");
}

#[test]
fn wrong_password_is_refused_and_unknown_user_looks_the_same() {
    let gw = Gw::start("");
    let wrong = sipp(&gw, "register.xml", "alice", "not-it", &[]);
    assert_eq!(
        wrong.status, 1,
        "SIPp must fail on a wrong password:\n{}",
        wrong.messages
    );
    let ghost = sipp(&gw, "register.xml", "nobody", "not-it", &[]);
    assert_eq!(
        ghost.status, 1,
        "SIPp must fail for an unknown user:\n{}",
        ghost.messages
    );

    // SIPp may retransmit its REGISTER before giving up; each copy gets the same 403.
    let mut a = received_shapes(&wrong.messages);
    let mut b = received_shapes(&ghost.messages);
    a.dedup();
    b.dedup();
    assert_eq!(a.len(), 2, "a challenge, then a final answer: {a:?}");
    assert!(a[0].0.starts_with("SIP/2.0 401"), "{a:?}");
    assert!(a[1].0.starts_with("SIP/2.0 403"), "{a:?}");
    assert_eq!(
        a, b,
        "an unknown user must be indistinguishable from a wrong password"
    );
    assert!(gw.registrations().is_empty());
}

#[test]
fn registration_survives_a_restart() {
    let mut gw = Gw::start("");
    let run = sipp(&gw, "register.xml", "bob", "hunter2", &[]);
    assert_eq!(run.status, 0, "{}", run.messages);
    gw.restart();
    let regs = gw.registrations();
    assert_eq!(
        regs.len(),
        1,
        "binding lost across restart:\n{}",
        gw.log_text()
    );
    assert_eq!(regs[0]["aor"], "sip:bob@test.local");
    assert!(
        gw.log_text().contains("location store opened bindings=1"),
        "{}",
        gw.log_text()
    );
}

#[test]
fn tcp_registered_endpoint_gets_options_over_its_own_connection() {
    let gw = Gw::start("[registrar]\nkeepalive_interval = 1\n");
    // -t t1: one TCP connection, SIPp's only socket toward the gateway; the
    // Contact names port 9, where nothing listens. -aa answers the OPTIONS.
    let run = sipp(
        &gw,
        "register_tcp_options.xml",
        "alice",
        "secret",
        &["-t", "t1", "-aa"],
    );
    assert_eq!(run.status, 0, "{}\n{}", run.messages, gw.log_text());
    let options = run
        .messages
        .split("-----------------------------------------------")
        .filter(|m| m.contains("TCP message received"))
        .filter(|m| m.contains("OPTIONS sip:alice@127.0.0.1:9;transport=tcp SIP/2.0"))
        .count();
    assert!(
        options >= 1,
        "no OPTIONS arrived over the registered connection:\n{}",
        run.messages
    );
}

#[test]
fn options_keepalive_and_unsupported_methods_over_udp() {
    let gw = Gw::start("");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let ask = |method: &str| {
        let req = format!(
            "{method} sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{method}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@{DOMAIN}>;tag=1\r\nTo: <sip:{DOMAIN}>\r\n\
             Call-ID: {method}-probe\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(req.as_bytes(), gw.sip_target()).unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(ask("OPTIONS").starts_with("SIP/2.0 200 OK\r\n"));
    let r = ask("PUBLISH");
    assert!(r.starts_with("SIP/2.0 405 "), "{r}");
    assert!(
        r.contains("\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER\r\n"),
        "{r}"
    );
    // An INVITE is routed by the default dialplan: nobody has that alias.
    assert!(ask("INVITE").starts_with("SIP/2.0 100 Trying\r\n"));
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    let r = String::from_utf8_lossy(&buf[..n]);
    assert!(r.starts_with("SIP/2.0 404 Not Found\r\n"), "{r}");
    // Garbage is dropped without an answer, and the gateway keeps serving.
    sock.send_to(b"\x00\xffnot sip at all\r\n\r\n", gw.sip_target())
        .unwrap();
    assert!(ask("OPTIONS").starts_with("SIP/2.0 200 OK\r\n"));
    let (_, health) = gw.admin_get("/api/admin/v1/health");
    assert_eq!(health["result"]["sip"]["malformed"], 1, "{health}");
}

/// netstring-framed JSON for baresip's ctrl_tcp.
fn baresip_command(port: u16, command: &str) {
    let body = format!("{{\"command\":\"{command}\",\"params\":\"\",\"token\":\"t\"}}");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "{}:{},", body.len(), body).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 512];
    let _ = s.read(&mut buf);
}

#[test]
fn baresip_registers_refreshes_and_unregisters() {
    require("baresip");
    let gw = Gw::start("[registrar]\nmin_expires = 5\n");
    let dir = tempfile::tempdir().unwrap();
    let sip_port = free_port_and_next();
    let ctrl_port = free_port();
    write(
        dir.path(),
        "config",
        &format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nnet_interface 127.0.0.1\n\
             module_path /usr/lib/baresip/modules\nmodule_app account.so\nmodule_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\naudio_player none\naudio_source none\n"
        ),
    );
    write(
        dir.path(),
        "accounts",
        &format!(
            "<sip:alice@127.0.0.1:{};transport=udp>;auth_pass=secret;regint=8\n",
            gw.sip_port
        ),
    );
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let log = std::fs::File::create(dir.path().join("baresip.log")).unwrap();
    let mut child = Kill(
        Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // Registered.
    let wait_for = |what: &str, f: &dyn Fn(&[serde_json::Value]) -> bool, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let regs = gw.registrations();
            if f(&regs) {
                return regs;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}\n--- baresip\n{}",
                gw.log_text(),
                std::fs::read_to_string(dir.path().join("baresip.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Generous: baresip starts beside Chromium-driven tests on 2 cores.
    let first = wait_for("baresip to register", &|r| r.len() == 1, 30);
    assert_eq!(first[0]["aor"], "sip:alice@test.local");
    assert!(
        first[0]["user_agent"].as_str().unwrap().contains("baresip"),
        "{first:?}"
    );
    let first_expiry = first[0]["expires_at"].as_u64().unwrap();

    // Refreshed before it lapses (regint=8).
    wait_for(
        "a refresh",
        &|r| r.len() == 1 && r[0]["expires_at"].as_u64().unwrap() > first_expiry,
        15,
    );

    // Quit: baresip un-registers on the way out.
    baresip_command(ctrl_port, "quit");
    wait_for("the un-REGISTER", &|r| r.is_empty(), 15);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn websocket_client_registers_over_sip_subprotocol() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_port = free_port();
    let gw = Gw::start_with_sip(&format!("ws = [\"127.0.0.1:{ws_port}\"]\n"), "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = format!("ws://127.0.0.1:{ws_port}/").into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", ws_port)).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "sip");
        let register = |cseq: u32, auth: &str| {
            format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKws{cseq}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=ws1\r\nTo: <sip:alice@{DOMAIN}>\r\n\
                 Call-ID: ws-reg-1\r\nCSeq: {cseq} REGISTER\r\n\
                 Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>;expires=600\r\n{auth}\
                 User-Agent: ws-test\r\nContent-Length: 0\r\n\r\n"
            )
        };
        ws.send(Ws::text(register(1, ""))).await.unwrap();
        let challenge = ws.next().await.unwrap().unwrap().into_text().unwrap().to_string();
        assert!(challenge.starts_with("SIP/2.0 401 "), "{challenge}");
        let nonce = challenge.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap();
        let mut c = causeway::sip::digest::Credentials {
            username: "alice".into(),
            realm: DOMAIN.into(),
            nonce: nonce.into(),
            uri: format!("sip:{DOMAIN}"),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("abc".into()),
            ..Default::default()
        };
        let alg = causeway::sip::digest::Algorithm::Md5;
        c.response = c.expected_response(alg, &alg.ha1("alice", DOMAIN, "secret"), "REGISTER");
        let auth = format!(
            "Authorization: Digest username=\"alice\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", \
             uri=\"sip:{DOMAIN}\", response=\"{}\", qop=auth, nc=00000001, cnonce=\"abc\"\r\n",
            c.response
        );
        ws.send(Ws::text(register(2, &auth))).await.unwrap();
        let ok = ws.next().await.unwrap().unwrap().into_text().unwrap().to_string();
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
        let regs = gw.registrations();
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0]["transport"], "ws");
        assert_eq!(regs[0]["connected"], true);
    });
}

#[test]
fn tls_listener_answers_openssl_s_client() {
    require("openssl");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let keygen = run_bounded(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=test.local", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(20),
    );
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let tls_port = free_port();
    let gw = Gw::start_with_sip(
        &format!(
            "tls = [\"127.0.0.1:{tls_port}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        "",
    );
    let options = format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{DOMAIN}>;tag=1\r\nTo: <sip:{DOMAIN}>\r\n\
         Call-ID: tls-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let input = write(dir.path(), "options.txt", &options);
    // s_client sends the file, then keeps the connection open briefly for the answer.
    let out = run_bounded(
        Command::new("sh").arg("-c").arg(format!(
            "(cat {}; sleep 2) | timeout 15 openssl s_client -connect 127.0.0.1:{tls_port} -quiet -no_ign_eof -verify_quiet",
            input.display()
        )),
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("SIP/2.0 200 OK\r\n"),
        "stdout: {stdout}\nstderr: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    assert!(
        stdout.contains("Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1"),
        "{stdout}"
    );
}
