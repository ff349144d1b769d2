//! Interop with a real browser: headless Chromium (Debian's, driven by
//! Playwright from `tests/browser/`) opens the built-in web client, calls
//! `echo`, and reads its own getStats; then does the same through WHIP from
//! a page script. Without a browser: the client API's and WHIP's error
//! answers (401, 404, 400, 415) are JSON and the gateway keeps serving.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use base64::Engine;
use common::{Gw, http_raw, require, run_bounded};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn browser_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Asserts what Chromium's getStats saw of the echoed call.
fn assert_media_came_back(what: &str, stats: &Value) {
    let audio = &stats["audioIn"];
    let video = &stats["videoIn"];
    // About 4 s of 20 ms Opus frames and 30 fps video were sent.
    assert!(
        audio["packets"].as_u64().unwrap_or(0) > 100,
        "{what}: audio in {stats}"
    );
    assert!(
        audio["audioEnergy"].as_f64().unwrap_or(0.0) > 0.0,
        "{what}: the echoed audio is silent: {stats}"
    );
    assert!(
        video["packets"].as_u64().unwrap_or(0) > 50,
        "{what}: video in {stats}"
    );
    assert!(
        video["framesDecoded"].as_u64().unwrap_or(0) > 30,
        "{what}: too few echoed frames decoded: {stats}"
    );
    // The echo returns what was sent: same codec each way.
    assert_eq!(
        stats["audioIn"]["codec"], stats["audioOut"]["codec"],
        "{what}"
    );
    assert_eq!(
        stats["videoIn"]["codec"], stats["videoOut"]["codec"],
        "{what}"
    );
    assert_eq!(stats["pair"]["state"], "succeeded", "{what}: {stats}");
}

#[test]
fn chromium_calls_echo_from_the_web_client_and_over_whip() {
    require("chromium");
    require("node");
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/browser (cargo xtask test does)"
    );
    let gw = Gw::start("");
    let base = format!("http://127.0.0.1:{}", gw.http_port);
    let out = run_bounded(
        Command::new("node")
            .arg("echo.mjs")
            .arg(&base)
            .arg("4")
            .current_dir(browser_dir()),
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no result from the browser script\nstdout: {stdout}\nstderr: {}\ngateway:\n{}",
                String::from_utf8_lossy(&out.stderr),
                gw.log_text()
            )
        });
    assert_eq!(
        result["errors"],
        Value::Array(vec![]),
        "browser errors: {result}\ngateway:\n{}",
        gw.log_text()
    );

    let page = &result["page"];
    assert_media_came_back("web client", &page["stats"]);
    // The page shows live stats, and the call's life came over SSE.
    let shown = page["statsShown"].as_str().unwrap_or_default();
    assert!(shown.contains("kbit/s"), "stats panel shows {shown:?}");
    let events: Vec<&str> = page["events"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for want in [
        "call_state:trying",
        "call_state:connected",
        "dtmf:5",
        "call_state:disconnected",
    ] {
        assert!(events.contains(&want), "SSE events {events:?} lack {want}");
    }
    assert_eq!(page["disconnected"], true);

    let whip = &result["whip"];
    assert_eq!(whip["status"], 201, "{whip}");
    assert_eq!(whip["contentType"], "application/sdp");
    assert!(
        whip["location"]
            .as_str()
            .unwrap_or_default()
            .starts_with("/whip/echo/"),
        "{whip}"
    );
    assert_eq!(whip["connection"], "connected");
    assert_media_came_back("WHIP", &whip["stats"]);
    assert_eq!(whip["deleteStatus"], 200, "DELETE ends the session");
    assert_eq!(whip["deleteAgainStatus"], 404, "and then it is gone");

    let log = gw.log_text();
    assert_eq!(log.matches("browser call connected").count(), 2, "{log}");
    assert_eq!(log.matches("browser call ended").count(), 2, "{log}");
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn failed(status: u16, body: &str, want_status: u16, want_reason: &str) {
    assert_eq!(status, want_status, "{body}");
    let v = json(body);
    assert_eq!(v["status"], "failed", "{body}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(want_reason),
        "reason {reason:?} lacks {want_reason:?}"
    );
}

fn request_token(port: u16, alias: &str) -> (u16, Value) {
    let (status, _, body) = http_raw(
        port,
        "POST",
        &format!("/api/client/v1/aliases/{alias}/request_token"),
        &[("Content-Type", "application/json")],
        r#"{"display_name":"Tester"}"#,
    );
    (status, json(&body))
}

#[test]
fn client_api_and_whip_errors_are_json_and_the_gateway_keeps_serving() {
    let gw = Gw::start_full("", "token_ttl = 1\nwhip_token = \"whip-secret\"", "");
    let port = gw.http_port;

    // A wrong alias: 404.
    let (status, body) = request_token(port, "nobody-here");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["status"], "failed");

    let (status, body) = request_token(port, "echo");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    let token = body["result"]["token"].as_str().unwrap().to_string();
    assert_eq!(body["result"]["expires"], 1);
    assert!(body["result"]["participant_uuid"].as_str().unwrap().len() == 36);

    // A malformed SDP: 400, with the token accepted.
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/api/client/v1/aliases/echo/calls",
        &[("Content-Type", "application/json"), ("token", &token)],
        r#"{"sdp":"v=0\r\nthis is not SDP\r\n"}"#,
    );
    failed(status, &body, 400, "SDP");
    // Not JSON at all: 400.
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/api/client/v1/aliases/echo/calls",
        &[("Content-Type", "application/json"), ("token", &token)],
        "{nope",
    );
    failed(status, &body, 400, "JSON");
    // No token, a forged one, one for another alias (Bearer form): 401.
    let (status, _, body) = http_raw(port, "POST", "/api/client/v1/aliases/echo/calls", &[], "{}");
    failed(status, &body, 401, "token is required");
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/api/client/v1/aliases/echo/calls",
        &[("token", "eyJhIjoiZWNobyJ9.AAAA")],
        "{}",
    );
    failed(status, &body, 401, "invalid token");
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/api/client/v1/aliases/room1/calls",
        &[("Authorization", &format!("Bearer {token}"))],
        "{}",
    );
    failed(status, &body, 401, "another alias");
    // A call that does not exist: 404.
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/api/client/v1/aliases/echo/calls/00000000-0000-4000-8000-000000000000/disconnect",
        &[("token", &token)],
        "",
    );
    failed(status, &body, 404, "no such call");
    // The token expires after its one second.
    std::thread::sleep(Duration::from_millis(2100));
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/api/client/v1/aliases/echo/refresh_token",
        &[("token", &token)],
        "",
    );
    failed(status, &body, 401, "expired");

    // WHIP: the bearer token is required here, the body must be SDP.
    let sdp_type = ("Content-Type", "application/sdp");
    let (status, head, body) = http_raw(port, "POST", "/whip/echo", &[sdp_type], "v=0\r\n");
    failed(status, &body, 401, "bearer");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let auth = ("Authorization", "Bearer whip-secret");
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/whip/echo",
        &[auth, ("Content-Type", "text/plain")],
        "v=0\r\n",
    );
    failed(status, &body, 415, "application/sdp");
    let (status, _, body) = http_raw(port, "POST", "/whip/echo", &[auth, sdp_type], "garbage");
    failed(status, &body, 400, "SDP");
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/whip/nobody-here",
        &[auth, sdp_type],
        "v=0\r\n",
    );
    failed(status, &body, 404, "Not Found");
    let (status, _, body) = http_raw(port, "DELETE", "/whip/echo/unknown", &[], "");
    failed(status, &body, 404, "no such WHIP session");

    // A PIN-protected alias: the client API wants the PIN, WHIP cannot give one.
    let (status, body) = gw.admin(
        "POST",
        "/api/admin/v1/aliases",
        Some(r#"{"alias":"secret-room","target":{"type":"echo"},"valid_until":"2099-01-01T00:00:00Z","pin":"4321"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = request_token(port, "secret-room");
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/api/client/v1/aliases/secret-room/request_token",
        &[("Content-Type", "application/json")],
        r#"{"display_name":"Tester","pin":"4321"}"#,
    );
    assert_eq!(status, 200, "the right PIN: {body}");
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/whip/secret-room",
        &[auth, sdp_type],
        "v=0\r\n",
    );
    failed(status, &body, 403, "needs a PIN");

    // Still serving: a fresh token, and the web client.
    let (status, body) = request_token(port, "echo");
    assert_eq!(status, 200, "{body}");
    let (status, head, page) = http_raw(port, "GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(page.contains("<script src=\"/app.js\">"));
    for asset in ["/app.js", "/style.css"] {
        assert_eq!(http_raw(port, "GET", asset, &[], "").0, 200, "{asset}");
    }
}

#[test]
fn browser_registrations_check_credentials_and_answers_need_an_incoming_call() {
    let gw = Gw::start("");
    let port = gw.http_port;
    let register = |body: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        let (status, _, body) = http_raw(port, "POST", "/api/client/v1/registrations", &h, body);
        (status, body)
    };
    // No credentials: 401; a wrong password or an unknown user: 403, alike.
    let (status, body) = register(r#"{"alias":"bob"}"#, &[]);
    failed(status, &body, 401, "credentials");
    let (status, body) = register(r#"{"alias":"bob","password":"guess"}"#, &[]);
    failed(status, &body, 403, "wrong credentials");
    let (status, body) = register(r#"{"alias":"mallory","password":"hunter2"}"#, &[]);
    failed(status, &body, 403, "wrong credentials");
    // alice's credentials do not register bob.
    let (status, body) = register(
        r#"{"alias":"bob","username":"alice","password":"secret"}"#,
        &[],
    );
    failed(status, &body, 403, "only its own alias");
    // Malformed JSON: 400.
    let (status, body) = register("{nope", &[]);
    failed(status, &body, 400, "JSON");

    // The right password, as JSON or as Basic credentials.
    let (status, body) = register(r#"{"alias":"bob","password":"hunter2"}"#, &[]);
    assert_eq!(status, 200, "{body}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bob:hunter2")
    );
    let (status, body) = register("", &[("Authorization", &basic)]);
    assert_eq!(status, 200, "{body}");
    let r = json(&body);
    assert_eq!(r["result"]["alias"], "bob");
    let token = r["result"]["token"].as_str().unwrap().to_string();

    // Answering a call that is not ringing here: 404.
    let answer = "/api/client/v1/aliases/bob/calls/nope/answer";
    let (status, _, body) = http_raw(
        port,
        "POST",
        answer,
        &[("token", &token)],
        r#"{"sdp":"v=0"}"#,
    );
    failed(status, &body, 404, "no such call");
    // Releasing the token ends the registration; the gateway keeps serving.
    let (status, _, body) = http_raw(
        port,
        "POST",
        "/api/client/v1/aliases/bob/release_token",
        &[("token", &token)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    // A SIP call to bob now rings nobody.
    let answer = common::sip_invite(&gw, "bob", Duration::from_secs(10));
    assert!(
        matches!(answer.status, 404 | 480),
        "{} {}\n{}",
        answer.status,
        answer.reason,
        gw.log_text()
    );
    let (status, body) = request_token(port, "echo");
    assert_eq!(status, 200, "{body}");
}
