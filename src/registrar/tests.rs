//! Registrar behaviour on simulated time: a scripted client against the
//! sans-IO registrar, no sockets.

use super::*;
use crate::sip::digest::{Algorithm, Credentials};

const CONFIG: &str = r#"
[sip]
domain = "example.com"
[registrar]
min_expires = 60
max_expires = 3600
nonce_lifetime = 300
max_failures = 3
failure_window = 60
block_duration = 600
digest_algorithms = ["MD5", "SHA-256"]
[[users]]
name = "alice"
password = "secret"
[[users]]
name = "bob"
ha1 = "a12787ba78bece5b857ffe9599f9aa87"
"#;

fn registrar() -> Registrar {
    let cfg = Config::parse(CONFIG, "test").unwrap();
    Registrar::new(&cfg)
}

fn flow() -> Flow {
    Flow {
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse().unwrap(),
        remote: "127.0.0.1:5062".parse().unwrap(),
        conn: None,
    }
}

/// A device: builds REGISTERs and answers challenges.
struct Ua {
    user: &'static str,
    password: &'static str,
    cseq: u32,
    nc: u32,
    nonce: Option<(String, Algorithm)>,
}

impl Ua {
    fn new(user: &'static str, password: &'static str) -> Self {
        Ua {
            user,
            password,
            cseq: 0,
            nc: 0,
            nonce: None,
        }
    }

    fn register(&mut self, contact: &str, extra: &str) -> Message {
        self.cseq += 1;
        let auth = match &self.nonce {
            Some((nonce, alg)) => {
                self.nc += 1;
                let mut c = Credentials {
                    username: self.user.into(),
                    realm: "example.com".into(),
                    nonce: nonce.clone(),
                    uri: "sip:example.com".into(),
                    qop: Some("auth".into()),
                    nc: Some(format!("{:08x}", self.nc)),
                    cnonce: Some("c0ffee".into()),
                    ..Default::default()
                };
                let ha1 = alg.ha1(self.user, "example.com", self.password);
                c.response = c.expected_response(*alg, &ha1, "REGISTER");
                format!(
                    "Authorization: Digest username=\"{}\", realm=\"example.com\", nonce=\"{}\", \
                     uri=\"sip:example.com\", response=\"{}\", algorithm={}, qop=auth, nc={}, cnonce=\"c0ffee\"\r\n",
                    c.username,
                    c.nonce,
                    c.response,
                    alg.as_str(),
                    c.nc.unwrap()
                )
            }
            None => String::new(),
        };
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{}\r\n\
             From: <sip:{u}@example.com>;tag=f1\r\nTo: <sip:{u}@example.com>\r\n\
             Call-ID: reg-{u}\r\nCSeq: {} REGISTER\r\nContact: {contact}\r\n{extra}{auth}\
             User-Agent: test-ua\r\nContent-Length: 0\r\n\r\n",
            self.cseq,
            self.cseq,
            u = self.user
        );
        Message::parse_checked(text.as_bytes()).unwrap()
    }

    /// Learns the nonce from a 401 (first challenge of the wanted algorithm).
    fn learn(&mut self, resp: &Message, alg: Algorithm) {
        let v = resp
            .headers_named("WWW-Authenticate")
            .find(|v| v.contains(&format!("algorithm={}", alg.as_str())))
            .unwrap();
        let nonce = v
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        self.nonce = Some((nonce.to_string(), alg));
        self.nc = 0;
    }
}

/// REGISTER, answer the challenge, return the final response.
fn register_ok(r: &mut Registrar, ua: &mut Ua, now: u64, contact: &str, extra: &str) -> Outcome {
    if ua.nonce.is_none() {
        let first = r.handle(now, &ua.register(contact, extra), &flow());
        assert_eq!(first.response.status(), Some(401));
        ua.learn(&first.response, Algorithm::Md5);
    }
    r.handle(now, &ua.register(contact, extra), &flow())
}

#[test]
fn challenge_then_register_with_md5_and_sha256() {
    let mut r = registrar();
    let mut ua = Ua::new("alice", "secret");
    let first = r.handle(
        1000,
        &ua.register("<sip:alice@127.0.0.1:5062>", ""),
        &flow(),
    );
    assert_eq!(first.response.status(), Some(401));
    let challenges: Vec<_> = first.response.headers_named("WWW-Authenticate").collect();
    assert_eq!(challenges.len(), 2);
    assert!(challenges[0].contains("algorithm=MD5") && challenges[1].contains("algorithm=SHA-256"));
    assert!(first.ops.is_empty());

    ua.learn(&first.response, Algorithm::Sha256);
    let ok = r.handle(
        1000,
        &ua.register("<sip:alice@127.0.0.1:5062>", ""),
        &flow(),
    );
    assert_eq!(ok.response.status(), Some(200));
    assert_eq!(
        ok.response.header("Contact"),
        Some("<sip:alice@127.0.0.1:5062>;expires=3600")
    );
    assert!(ok.response.header("Date").is_some());
    assert_eq!(ok.ops.len(), 1);
    assert_eq!(r.lookup("sip:alice@example.com", 1000).len(), 1);
}

#[test]
fn ha1_only_user_registers_with_md5() {
    let mut r = registrar();
    // bob's ha1 is MD5("bob:example.com:hunter2").
    assert_eq!(
        Algorithm::Md5.ha1("bob", "example.com", "hunter2"),
        "a12787ba78bece5b857ffe9599f9aa87"
    );
    let mut ua = Ua::new("bob", "hunter2");
    let out = register_ok(&mut r, &mut ua, 0, "<sip:bob@10.0.0.2>", "");
    assert_eq!(out.response.status(), Some(200));
}

#[test]
fn wrong_password_and_unknown_user_look_the_same() {
    let mut r = registrar();
    let mut wrong = Ua::new("alice", "guess");
    let mut ghost = Ua::new("mallory", "guess");
    let a = register_ok(&mut r, &mut wrong, 0, "<sip:alice@10.0.0.9>", "");
    let b = register_ok(&mut r, &mut ghost, 0, "<sip:mallory@10.0.0.9>", "");
    assert_eq!(a.response.start, b.response.start);
    assert_eq!(a.response.status(), Some(403));
    let names = |m: &Message| m.headers.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a.response), names(&b.response));
    assert!(r.lookup("sip:alice@example.com", 0).is_empty());
}

#[test]
fn failures_block_the_source_then_release() {
    let mut r = registrar();
    let mut bad = Ua::new("alice", "guess");
    for _ in 0..3 {
        assert_eq!(
            register_ok(&mut r, &mut bad, 0, "<sip:a@1.2.3.4>", "")
                .response
                .status(),
            Some(403)
        );
    }
    // Now even the right password is refused from that address, without a challenge.
    let mut good = Ua::new("alice", "secret");
    let first = r.handle(10, &good.register("<sip:a@1.2.3.4>", ""), &flow());
    assert_eq!(first.response.status(), Some(403));
    // After the block, it works again.
    let mut good = Ua::new("alice", "secret");
    assert_eq!(
        register_ok(&mut r, &mut good, 700, "<sip:a@1.2.3.4>", "")
            .response
            .status(),
        Some(200)
    );
}

#[test]
fn expiry_refresh_and_unregister() {
    let mut r = registrar();
    let mut ua = Ua::new("alice", "secret");
    let c = "<sip:alice@127.0.0.1:5062>;expires=120";
    assert_eq!(
        register_ok(&mut r, &mut ua, 0, c, "").response.status(),
        Some(200)
    );
    assert_eq!(r.lookup("sip:alice@example.com", 119).len(), 1);
    // Refresh at 100 for another 120 s.
    let out = r.handle(100, &ua.register(c, ""), &flow());
    assert_eq!(
        out.response.header("Contact"),
        Some("<sip:alice@127.0.0.1:5062>;expires=120")
    );
    assert_eq!(r.lookup("sip:alice@example.com", 219).len(), 1);
    assert!(r.lookup("sip:alice@example.com", 220).is_empty());
    r.expire(220);
    assert_eq!(r.all(220).count(), 0);

    // Register two contacts, unregister one with expires=0, then all with `*`
    // (a new nonce: the first one is stale by now).
    ua.nonce = None;
    let out = register_ok(
        &mut r,
        &mut ua,
        300,
        "<sip:alice@10.0.0.1>, <sip:alice@10.0.0.2>;q=0.5",
        "",
    );
    assert_eq!(out.response.headers_named("Contact").count(), 2);
    let best = r.lookup("sip:alice@example.com", 300);
    assert_eq!((best[0].q, best[1].q), (1000, 500));
    let out = r.handle(
        301,
        &ua.register("<sip:alice@10.0.0.2>;expires=0", ""),
        &flow(),
    );
    assert_eq!(out.response.headers_named("Contact").count(), 1);
    assert!(matches!(out.ops[0], StoreOp::Remove { .. }));
    let out = r.handle(302, &ua.register("*", "Expires: 0\r\n"), &flow());
    assert_eq!(out.response.status(), Some(200));
    assert_eq!(out.response.headers_named("Contact").count(), 0);
    assert!(matches!(out.ops[0], StoreOp::RemoveAll { .. }));
    // `*` without Expires: 0 is malformed.
    assert_eq!(
        r.handle(303, &ua.register("*", ""), &flow())
            .response
            .status(),
        Some(400)
    );
}

#[test]
fn too_brief_gets_423_with_min_expires() {
    let mut r = registrar();
    let mut ua = Ua::new("alice", "secret");
    let out = register_ok(
        &mut r,
        &mut ua,
        0,
        "<sip:alice@10.0.0.1>",
        "Expires: 30\r\n",
    );
    assert_eq!(out.response.status(), Some(423));
    assert_eq!(out.response.header("Min-Expires"), Some("60"));
    // Over the maximum is shortened, not refused.
    let out = r.handle(
        0,
        &ua.register("<sip:alice@10.0.0.1>", "Expires: 99999\r\n"),
        &flow(),
    );
    assert_eq!(
        out.response.header("Contact"),
        Some("<sip:alice@10.0.0.1>;expires=3600")
    );
}

#[test]
fn stale_nonce_gets_stale_true() {
    let mut r = registrar();
    let mut ua = Ua::new("alice", "secret");
    assert_eq!(
        register_ok(&mut r, &mut ua, 0, "<sip:alice@10.0.0.1>", "")
            .response
            .status(),
        Some(200)
    );
    let out = r.handle(301, &ua.register("<sip:alice@10.0.0.1>", ""), &flow());
    assert_eq!(out.response.status(), Some(401));
    assert!(
        out.response
            .headers_named("WWW-Authenticate")
            .all(|v| v.contains("stale=true"))
    );
    ua.learn(&out.response, Algorithm::Md5);
    assert_eq!(
        r.handle(301, &ua.register("<sip:alice@10.0.0.1>", ""), &flow())
            .response
            .status(),
        Some(200)
    );
}

#[test]
fn replayed_nonce_count_is_refused() {
    let mut r = registrar();
    let mut ua = Ua::new("alice", "secret");
    assert_eq!(
        register_ok(&mut r, &mut ua, 0, "<sip:alice@10.0.0.1>", "")
            .response
            .status(),
        Some(200)
    );
    // Same nc again (a captured request replayed with a new CSeq).
    ua.nc -= 1;
    let out = r.handle(1, &ua.register("<sip:alice@10.0.0.1>", ""), &flow());
    assert_eq!(out.response.status(), Some(401));
    // A growing count is fine, even past 255.
    ua.nc = 300;
    assert_eq!(
        r.handle(2, &ua.register("<sip:alice@10.0.0.1>", ""), &flow())
            .response
            .status(),
        Some(200)
    );
}

#[test]
fn out_of_order_cseq_is_refused() {
    let mut r = registrar();
    let mut ua = Ua::new("alice", "secret");
    assert_eq!(
        register_ok(&mut r, &mut ua, 0, "<sip:alice@10.0.0.1>", "")
            .response
            .status(),
        Some(200)
    );
    ua.cseq -= 2;
    assert_eq!(
        r.handle(1, &ua.register("<sip:alice@10.0.0.1>", ""), &flow())
            .response
            .status(),
        Some(400)
    );
}

#[test]
fn a_user_cannot_register_someone_else() {
    let mut r = registrar();
    let mut ua = Ua::new("alice", "secret");
    let first = r.handle(0, &ua.register("<sip:x@10.0.0.1>", ""), &flow());
    ua.learn(&first.response, Algorithm::Md5);
    // Valid alice credentials, but To says bob.
    let req = ua.register("<sip:x@10.0.0.1>", "");
    let text = String::from_utf8(req.to_bytes().to_vec())
        .unwrap()
        .replace("To: <sip:alice@", "To: <sip:bob@");
    let req = Message::parse(text.as_bytes()).unwrap();
    assert_eq!(r.handle(0, &req, &flow()).response.status(), Some(403));
}

#[test]
fn q_values_parse_and_print() {
    assert_eq!(parse_q("0.5"), Some(500));
    assert_eq!(parse_q("1"), Some(1000));
    assert_eq!(parse_q("1.000"), Some(1000));
    assert_eq!(parse_q("0.125"), Some(125));
    assert_eq!(parse_q("1.5"), None);
    assert_eq!(parse_q("0.1234"), None);
    assert_eq!(format_q(500), "0.5");
    assert_eq!(format_q(0), "0");
    assert_eq!(format_q(125), "0.125");
}

#[test]
fn passwords_check_against_either_stored_hash_and_failures_block() {
    let cfg = Config::parse(CONFIG, "test").unwrap();
    let mut a = Authenticator::new(&cfg);
    let ip: std::net::IpAddr = "10.0.0.7".parse().unwrap();
    assert_eq!(
        a.check_password(0, "alice", "secret", ip),
        AuthResult::Ok("alice".into())
    );
    // bob has only an MD5 HA1 on file.
    assert_eq!(
        a.check_password(0, "bob", "hunter2", ip),
        AuthResult::Ok("bob".into())
    );
    assert_eq!(
        a.check_password(0, "bob", "Hunter2", ip),
        AuthResult::Forbidden
    );
    assert_eq!(
        a.check_password(0, "mallory", "secret", ip),
        AuthResult::Forbidden
    );
    assert_eq!(a.check_password(0, "alice", "x", ip), AuthResult::Forbidden);
    // Three failures from that address: even the right password is refused.
    assert_eq!(
        a.check_password(1, "alice", "secret", ip),
        AuthResult::Forbidden
    );
    assert_eq!(
        a.check_password(700, "alice", "secret", ip),
        AuthResult::Ok("alice".into())
    );
}
