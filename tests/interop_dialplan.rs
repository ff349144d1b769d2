//! Routing end to end on loopback: SIP INVITEs answered by the dialplan,
//! a real HTTP policy server (accept, reject, slow, garbage, down), hot reload
//! of the plan file, and ephemeral aliases through the admin API across a
//! restart.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Gw, sip_invite};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);

/// A policy server on loopback. The called alias picks its behaviour:
/// `accept*` routes to echo, `reject*` refuses with 403, `slow*` answers after
/// 3 s, `garbage*` sends non-JSON, `error*` answers HTTP 500.
struct PolicyServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl PolicyServer {
    fn start() -> PolicyServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if conn.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or("").to_string();
                    seen.lock().unwrap().push(target.clone());
                    let alias = target
                        .split(['?', '&'])
                        .find_map(|p| p.strip_prefix("local_alias="))
                        .unwrap_or("")
                        .split_once('.')
                        .map_or("", |(_, rest)| rest)
                        .to_string();
                    let (code, body) = if alias.starts_with("accept") {
                        (
                            200,
                            r#"{"status":"success","action":"continue","result":{"type":"echo"}}"#,
                        )
                    } else if alias.starts_with("reject") {
                        (
                            200,
                            r#"{"status":"success","action":"reject","result":{"status":403,"reason":"Not Booked"}}"#,
                        )
                    } else if alias.starts_with("slow") {
                        std::thread::sleep(Duration::from_secs(3));
                        (
                            200,
                            r#"{"status":"success","action":"continue","result":{"type":"echo"}}"#,
                        )
                    } else if alias.starts_with("garbage") {
                        (200, "<html>this is not json</html>")
                    } else {
                        (500, r#"{"status":"failed"}"#)
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        PolicyServer { port, requests }
    }

    fn count(&self, needle: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains(needle))
            .count()
    }
}

#[test]
fn policy_server_accepts_rejects_and_fails_per_rule() {
    let server = PolicyServer::start();
    let closed = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write(
        dir.path(),
        "plan.toml",
        &format!(
            r#"
[[rule]]
name = "meet-strict"
priority = 10
match.to = 'meet\..*'
target = {{ type = "policy" }}

[[rule]]
name = "room-lenient"
priority = 20
match.to = 'room\..*'
target = {{ type = "policy", on_failure = "continue" }}

[[rule]]
name = "down"
priority = 30
match.to = 'down\..*'
target = {{ type = "policy", url = "http://127.0.0.1:{closed}" }}

[[rule]]
name = "after"
priority = 40
target = {{ type = "reject", status = 404, reason = "After Policy" }}
"#
        ),
    );
    let gw = Gw::start(&format!(
        "[dialplan]\npath = \"{}\"\n[policy]\nurl = \"http://127.0.0.1:{}\"\ntimeout_ms = 500\ncache_ttl = 60\n",
        plan.display(),
        server.port
    ));

    let a = sip_invite(&gw, "meet.accept-1", LIMIT);
    assert_eq!(a.status, 488, "{}", a.text);
    assert!(
        a.header("Warning")
            .unwrap()
            .contains("rule meet-strict routes to echo"),
        "{}",
        a.text
    );
    let q = server.requests.lock().unwrap()[0].clone();
    assert!(
        q.starts_with("/policy/v1/service/configuration?local_alias=meet.accept-1&remote_alias=tester&protocol=sip&remote_address=127.0.0.1&call_direction=dial_in&rule=meet-strict"),
        "{q}"
    );

    let a = sip_invite(&gw, "meet.reject-1", LIMIT);
    assert_eq!((a.status, a.reason.as_str()), (403, "Not Booked"));

    // Failures with on_failure = "reject" (the default): 503, and in time.
    for alias in ["meet.slow-1", "meet.garbage-1", "meet.error-1"] {
        let started = Instant::now();
        let a = sip_invite(&gw, alias, LIMIT);
        assert_eq!(a.status, 503, "{alias}: {}", a.text);
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{alias}: {:?}",
            started.elapsed()
        );
    }
    let a = sip_invite(&gw, "down.anything", LIMIT);
    assert_eq!(a.status, 503, "server down: {}", a.text);

    // on_failure = "continue": the next rule decides.
    for alias in ["room.slow-2", "room.garbage-2", "room.error-2"] {
        let a = sip_invite(&gw, alias, LIMIT);
        assert_eq!(
            (a.status, a.reason.as_str()),
            (404, "After Policy"),
            "{alias}"
        );
    }
    let a = sip_invite(&gw, "room.accept-2", LIMIT);
    assert_eq!(a.status, 488);
    assert!(
        a.header("Warning")
            .unwrap()
            .contains("rule room-lenient routes to echo")
    );

    // Answers are cached for cache_ttl: the same call asks once.
    let before = server.count("local_alias=meet.accept-1&");
    let a = sip_invite(&gw, "meet.accept-1", LIMIT);
    assert_eq!(a.status, 488);
    assert_eq!(server.count("local_alias=meet.accept-1&"), before);

    // Still serving after all that.
    let (status, health) = gw.admin_get("/api/admin/v1/health");
    assert_eq!(status, 200);
    assert!(
        health["result"]["sip"]["calls_rejected"].as_u64().unwrap() >= 11,
        "{health}"
    );
}

fn status_of_plan(gw: &Gw) -> serde_json::Value {
    let (status, body) = gw.admin_get("/api/admin/v1/dialplan");
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

#[test]
fn hot_reload_keeps_the_old_plan_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |status: u16, reason: &str| {
        format!(
            "[[rule]]\nname = \"room\"\npriority = 1\nmatch.to = 'room'\ntarget = {{ type = \"reject\", status = {status}, reason = \"{reason}\" }}\n"
        )
    };
    let plan = common::write(dir.path(), "plan.toml", &rule(403, "Version One"));
    let gw = Gw::start(&format!("[dialplan]\npath = \"{}\"\n", plan.display()));
    let a = sip_invite(&gw, "room", LIMIT);
    assert_eq!((a.status, a.reason.as_str()), (403, "Version One"));
    assert_eq!(status_of_plan(&gw)["plan"]["rules"], 1);

    // A broken edit: logged, reported, and the old plan keeps routing.
    std::fs::write(
        &plan,
        "[[rule]]\nname = \"room\"\npriority = 1\nmatch.to = '(room'\ntarget = { type = \"echo\" }\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of_plan(&gw)["plan"]["last_errors"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the watcher never saw the edit");
        std::thread::sleep(Duration::from_millis(100));
    }
    let errors = status_of_plan(&gw)["plan"]["last_errors"].clone();
    assert_eq!(
        (errors[0]["line"].as_u64(), errors[0]["column"].as_u64()),
        (Some(4), Some(12)),
        "{errors}"
    );
    assert_eq!(errors[0]["rule"], "room");
    let a = sip_invite(&gw, "room", LIMIT);
    assert_eq!((a.status, a.reason.as_str()), (403, "Version One"));
    assert!(
        gw.log_text()
            .contains("dialplan rejected; the previous plan stays")
    );

    // The same through the API, on demand.
    let (status, body) = gw.admin("POST", "/api/admin/v1/dialplan/reload", None);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["status"], "failed");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("bad regex"),
        "{body}"
    );

    // A good edit takes effect for the next call.
    std::fs::write(&plan, rule(486, "Version Two")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = sip_invite(&gw, "room", LIMIT);
        if a.status == 486 {
            assert_eq!(a.reason, "Version Two");
            break;
        }
        assert_eq!(a.status, 403);
        assert!(Instant::now() < deadline, "the good edit never took effect");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        status_of_plan(&gw)["plan"]["last_errors"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, body) = gw.admin("POST", "/api/admin/v1/dialplan/reload", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["rules"], 1);
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn ephemeral_aliases_route_expire_and_survive_restart() {
    let mut gw = Gw::start("");
    let create = |gw: &Gw, body: serde_json::Value| {
        gw.admin("POST", "/api/admin/v1/aliases", Some(&body.to_string()))
    };
    let (status, _) = common::http_request(
        gw.http_port,
        "POST",
        "/api/admin/v1/aliases",
        None,
        Some("{}"),
    );
    assert_eq!(status, 401);

    // Before it exists, the default plan says 404.
    assert_eq!(sip_invite(&gw, "meet-4f2a", LIMIT).status, 404);
    let valid_from = jiff::Timestamp::from_second(now() - 60)
        .unwrap()
        .to_string();
    let (status, body) = create(
        &gw,
        json!({"alias": "meet-4f2a", "target": {"type": "echo"}, "valid_from": valid_from,
               "valid_until": now() + 3600, "pin": "1234"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["result"]["active"], true);
    assert_eq!(body["result"]["pin_protected"], true);
    assert!(
        body["result"].get("pin").is_none(),
        "the PIN is never echoed"
    );

    // Clear errors for bad requests.
    for (bad, code, reason) in [
        (
            json!({"alias": "meet-4f2a", "target": {"type": "echo"}, "valid_until": now() + 60}),
            409,
            "exists",
        ),
        (
            json!({"alias": "x", "target": {"type": "teleport"}, "valid_until": now() + 60}),
            400,
            "unknown variant",
        ),
        (
            json!({"alias": "x", "target": {"type": "echo"}, "valid_until": now() - 1}),
            400,
            "in the past",
        ),
        (
            json!({"alias": "x", "target": {"type": "echo"}, "valid_until": "tomorrow"}),
            400,
            "bad time",
        ),
        (
            json!({"alias": "has space", "target": {"type": "echo"}, "valid_until": now() + 60}),
            400,
            "without spaces",
        ),
        (
            json!({"alias": "x", "target": {"type": "policy"}, "valid_until": now() + 60}),
            400,
            "concrete target",
        ),
    ] {
        let (status, body) = create(&gw, bad.clone());
        assert_eq!(status, code, "{bad}: {body}");
        assert_eq!(body["status"], "failed");
        assert!(
            body["reason"].as_str().unwrap().contains(reason),
            "{bad}: {body}"
        );
    }

    // The alias matches; its PIN cannot be entered over SIP yet, so 403.
    let a = sip_invite(&gw, "meet-4f2a", LIMIT);
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(
        a.header("Warning")
            .unwrap()
            .contains("rule meet-4f2a needs a PIN")
    );
    let (status, body) = gw.admin(
        "POST",
        "/api/admin/v1/dialplan/route",
        Some(r#"{"to":"meet-4f2a"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["origin"], "ephemeral alias", "{body}");

    // Survives a restart.
    gw.restart();
    let (_, list) = gw.admin_get("/api/admin/v1/aliases");
    assert_eq!(list["result"][0]["alias"], "meet-4f2a", "{list}");
    assert_eq!(sip_invite(&gw, "meet-4f2a", LIMIT).status, 403);

    // A short-lived one matches, then stops at once when it expires.
    let until = now() + 2;
    let (status, body) = create(
        &gw,
        json!({"alias": "visitor-1", "target": {"type": "reject", "status": 486, "reason": "Meeting Full"}, "valid_until": until}),
    );
    assert_eq!(status, 201, "{body}");
    let a = sip_invite(&gw, "visitor-1", LIMIT);
    assert_eq!((a.status, a.reason.as_str()), (486, "Meeting Full"));
    while now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sip_invite(&gw, "visitor-1", LIMIT).status, 404);
    let (_, list) = gw.admin_get("/api/admin/v1/aliases");
    assert_eq!(list["result"].as_array().unwrap().len(), 1, "{list}");

    // Deleted: gone, and a second delete is 404.
    let (status, _) = gw.admin("DELETE", "/api/admin/v1/aliases/meet-4f2a", None);
    assert_eq!(status, 200);
    assert_eq!(sip_invite(&gw, "meet-4f2a", LIMIT).status, 404);
    let (status, body) = gw.admin("DELETE", "/api/admin/v1/aliases/meet-4f2a", None);
    assert_eq!((status, body["status"].as_str()), (404, Some("failed")));
    gw.restart();
    let (_, list) = gw.admin_get("/api/admin/v1/aliases");
    assert!(list["result"].as_array().unwrap().is_empty(), "{list}");
}

/// A trunk with `register = true` registers to a SIPp registrar that
/// challenges, checks the digest and grants 2 s; the gateway refreshes in time.
#[test]
fn trunk_registration_answers_the_challenge_and_refreshes() {
    common::require("sipp");
    let registrar_port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::sipp_command(dir.path(), "trunk_registrar.xml", registrar_port);
    let mut sipp = common::Guard(
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let gw = Gw::start(&format!(
        "[[trunks]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{registrar_port}\"\nusername = \"acct\"\npassword = \"s3cret\"\nregister = true\n"
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = sipp.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "SIPp registrar did not finish:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let messages = std::fs::read_to_string(dir.path().join("messages.log")).unwrap_or_default();
    assert!(
        status.success(),
        "SIPp registrar failed ({status}):\n{messages}"
    );
    let registers = messages.matches("REGISTER sip:127.0.0.1:").count();
    assert!(registers >= 3, "challenge, answer, refresh:\n{messages}");
    let (code, body) = gw.admin_get("/api/admin/v1/trunks");
    assert_eq!(code, 200, "{body}");
    let t = &body["result"][0];
    assert_eq!(
        (t["name"].as_str(), t["state"].as_str()),
        (Some("carrier"), Some("registered")),
        "{body}"
    );
    assert_eq!(t["last_status"], 200);
}
