use super::*;
use crate::sip::Transport;

fn gw() -> Gateway {
    Gateway::new(&Config::parse("", "t").unwrap(), Arc::default())
}

fn flow() -> Flow {
    Flow {
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse().unwrap(),
        remote: "127.0.0.1:5099".parse().unwrap(),
        conn: None,
    }
}

fn answers(g: &mut Gateway, text: &str) -> Vec<Message> {
    g.handle_datagram(Instant::now(), 0, flow(), text.as_bytes());
    sent(g)
}

fn request(method: &str, cseq_method: &str) -> String {
    format!(
        "{method} sip:causeway.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{method}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=x\r\nTo: <sip:c@d>\r\nCall-ID: k\r\nCSeq: 7 {cseq_method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn options_gets_200_with_allow() {
    let r = answers(&mut gw(), &request("OPTIONS", "OPTIONS"));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status(), Some(200));
    assert_eq!(r[0].header("Allow"), Some(ALLOW));
    assert!(r[0].header("To").unwrap().contains(";tag="));
}

#[test]
fn unknown_and_unsupported_methods_get_405() {
    for (m, code) in [("SUBSCRIBE", 405), ("FROBNICATE", 501)] {
        let r = answers(&mut gw(), &request(m, m));
        assert_eq!(r[0].status(), Some(code), "{m}");
        assert_eq!(r[0].header("Allow"), Some(ALLOW));
    }
}

/// Sends an INVITE; returns the responses so far and the route request.
fn invite(g: &mut Gateway, branch: &str, uri: &str) -> (Vec<Message>, TxKey, CallInfo) {
    let text = request("INVITE", "INVITE")
        .replacen("sip:causeway.local", uri, 1)
        .replace("z9hG4bKINVITE", branch);
    g.handle_datagram(Instant::now(), 1000, flow(), text.as_bytes());
    let (mut sent, mut route) = (vec![], None);
    while let Some(o) = g.poll_output() {
        match o {
            GwOutput::Transmit { data, .. } => sent.push(Message::parse(&data).unwrap()),
            GwOutput::Route { key, call } => route = Some((key, call)),
            _ => {}
        }
    }
    let (key, call) = route.expect("a route request");
    (sent, key, call)
}

fn sent(g: &mut Gateway) -> Vec<Message> {
    let mut v = vec![];
    while let Some(o) = g.poll_output() {
        if let GwOutput::Transmit { data, .. } = o {
            v.push(Message::parse(&data).unwrap());
        }
    }
    v
}

/// A 404 decision arriving for a call already answered or cancelled.
fn late_404(g: &mut Gateway, key: &TxKey) {
    let reject = Decision::Reject {
        status: 404,
        reason: "x".into(),
        rule: None,
    };
    g.routed(Instant::now(), 1000, key, reject);
}

#[test]
fn invite_is_routed_and_answered_with_the_decision() {
    let mut g = gw();
    let (first, key, call) = invite(&mut g, "z9hG4bKa", "sip:echo@127.0.0.1:5060");
    assert_eq!(first[0].status(), Some(100));
    assert_eq!(call.to, "echo");
    assert_eq!(call.from, "a@b", "a foreign domain stays in the alias");
    assert_eq!(call.protocol, Protocol::Sip);
    assert!(!call.registered);
    g.routed(
        Instant::now(),
        1000,
        &key,
        Decision::Reject {
            status: 486,
            reason: "Busy Here".into(),
            rule: Some("busy".into()),
        },
    );
    let r = sent(&mut g);
    assert_eq!(r[0].status(), Some(486));
    assert!(r[0].header("To").unwrap().contains(";tag="));
    assert_eq!(g.counters.calls_rejected.load(Relaxed), 1);
    // A second decision for the same call is ignored.
    late_404(&mut g, &key);
    assert!(sent(&mut g).is_empty());
}

#[test]
fn fallback_skips_targets_nobody_registered_for() {
    let plan = crate::dialplan::Dialplan::embedded_default().unwrap();
    let mut g = gw();
    let (_, key, call) = invite(&mut g, "z9hG4bKb", "sip:bob@causeway.local");
    let crate::dialplan::Verdict::Route(route) = plan.route(&call) else {
        panic!()
    };
    g.routed(Instant::now(), 1000, &key, Decision::Route(route));
    let r = sent(&mut g);
    assert_eq!(
        r[0].status(),
        Some(404),
        "nobody registered: the plan's 404"
    );

    // The plan's echo rule reaches the echo service, which needs an offer.
    let (_, key, call) = invite(&mut g, "z9hG4bKc", "sip:echo@causeway.local");
    let crate::dialplan::Verdict::Route(route) = plan.route(&call) else {
        panic!()
    };
    g.routed(Instant::now(), 1000, &key, Decision::Route(route));
    let r = sent(&mut g);
    assert_eq!(r[0].status(), Some(488));
    assert!(
        r[0].header("Warning")
            .unwrap()
            .contains("needs an SDP offer")
    );
}

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
    m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn echo_invite(g: &mut Gateway, t: Instant, branch: &str, body: &str) -> TxKey {
    echo_invite_with(g, t, branch, body, "")
}

/// [`echo_invite`] with `extra` header lines.
fn echo_invite_with(g: &mut Gateway, t: Instant, branch: &str, body: &str, extra: &str) -> TxKey {
    let text = request("INVITE", "INVITE")
        .replacen("sip:causeway.local", "sip:echo@127.0.0.1", 1)
        .replace("z9hG4bKINVITE", branch)
        .replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
    g.handle_datagram(t, 1000, flow(), text.as_bytes());
    let mut routed = None;
    while let Some(o) = g.poll_output() {
        if let GwOutput::Route { key, call } = o {
            routed = Some((key, call));
        }
    }
    let (key, call) = routed.expect("routed");
    let plan = crate::dialplan::Dialplan::embedded_default().unwrap();
    let crate::dialplan::Verdict::Route(route) = plan.route(&call) else {
        panic!()
    };
    assert_eq!(route.target, crate::dialplan::Target::Echo);
    g.routed(t, 1000, &key, Decision::Route(route));
    key
}

/// Outputs split into messages and media requests.
fn outputs(g: &mut Gateway) -> (Vec<Message>, Vec<GwOutput>) {
    let (mut msgs, mut other) = (vec![], vec![]);
    while let Some(o) = g.poll_output() {
        match o {
            GwOutput::Transmit { data, .. } => msgs.push(Message::parse(&data).unwrap()),
            o => other.push(o),
        }
    }
    (msgs, other)
}

fn in_dialog(method: &str, ok: &Message, cseq: u32) -> String {
    request(method, method)
        .replace("CSeq: 7", &format!("CSeq: {cseq}"))
        .replace(
            &format!("z9hG4bK{method}"),
            &format!("z9hG4bK{method}{cseq}"),
        )
        .replace(
            "To: <sip:c@d>",
            &format!("To: {}", ok.header("To").unwrap()),
        )
}

#[test]
fn echo_answers_with_sdp_retransmits_until_ack_and_ends_on_bye() {
    let t0 = Instant::now();
    let mut g = gw();
    echo_invite(&mut g, t0, "z9hG4bKe1", OFFER);
    let (msgs, media) = outputs(&mut g);
    assert!(msgs.is_empty(), "no answer before media is bound");
    let [GwOutput::OpenMedia { dialog, answer }] = media.as_slice() else {
        panic!("{media:?}")
    };
    assert_eq!(answer.streams[0].as_ref().unwrap().format.pt, 8);
    g.media_ready(t0, 1000, *dialog, Ok(vec![20000]));
    let (msgs, _) = outputs(&mut g);
    let ok = &msgs[0];
    assert_eq!(ok.status(), Some(200));
    assert!(
        ok.header("Contact")
            .unwrap()
            .starts_with("<sip:echo@127.0.0.1:5060")
    );
    let body = std::str::from_utf8(&ok.body).unwrap();
    assert!(body.contains("m=audio 20000 RTP/AVP 8 101\r\n"), "{body}");
    assert!(body.contains("c=IN IP4 127.0.0.1\r\n"), "{body}");
    // No ACK yet: the 200 comes again after T1.
    g.handle_timeout(t0 + crate::sip::transaction::T1, 1000);
    assert_eq!(outputs(&mut g).0[0].status(), Some(200));
    // A retransmitted INVITE gets the 200 too, and is not routed again.
    g.handle_datagram(
        t0,
        1000,
        flow(),
        request("INVITE", "INVITE")
            .replace("z9hG4bKINVITE", "z9hG4bKe1")
            .as_bytes(),
    );
    let (msgs, other) = outputs(&mut g);
    assert_eq!(
        (msgs.len(), msgs[0].status(), other.len()),
        (1, Some(200), 0)
    );
    // ACK stops retransmissions (only the transaction's Timer L is left).
    g.handle_datagram(t0, 1000, flow(), in_dialog("ACK", ok, 7).as_bytes());
    assert_eq!(
        g.poll_timeout(),
        Some(t0 + 64 * crate::sip::transaction::T1)
    );
    g.handle_timeout(t0 + 64 * crate::sip::transaction::T1, 1000);
    assert!(outputs(&mut g).0.is_empty(), "nothing resent after the ACK");
    assert_eq!(g.poll_timeout(), None);
    // A re-INVITE is refused without ending the call.
    let (msgs, _) = answers_all(&mut g, &in_dialog("INVITE", ok, 8));
    assert_eq!(msgs.last().unwrap().status(), Some(488));
    // BYE: 200 and the media goes.
    let (msgs, media) = answers_all(&mut g, &in_dialog("BYE", ok, 9));
    assert_eq!(msgs[0].status(), Some(200));
    assert!(matches!(media.as_slice(), [GwOutput::CloseMedia { dialog: d }] if d == dialog));
    let (msgs, _) = answers_all(&mut g, &in_dialog("BYE", ok, 10));
    assert_eq!(msgs[0].status(), Some(481));
    assert_eq!(g.counters.calls_answered.load(Relaxed), 1);

    // A caller that vanishes: the media times out and we send BYE.
    echo_invite(&mut g, t0, "z9hG4bKe2", OFFER);
    let (_, media) = outputs(&mut g);
    let [GwOutput::OpenMedia { dialog, .. }] = media.as_slice() else {
        panic!()
    };
    g.media_ready(t0, 1000, *dialog, Ok(vec![20002]));
    outputs(&mut g);
    g.media_timeout(t0, 1000, *dialog);
    let (msgs, media) = outputs(&mut g);
    assert_eq!(msgs[0].method(), Some(Method::Bye));
    assert!(matches!(media.as_slice(), [GwOutput::CloseMedia { .. }]));
}

fn answers_all(g: &mut Gateway, text: &str) -> (Vec<Message>, Vec<GwOutput>) {
    g.handle_datagram(Instant::now(), 1000, flow(), text.as_bytes());
    outputs(g)
}

#[test]
fn echo_refusals_carry_the_right_status() {
    let t0 = Instant::now();
    let mut g = gw();
    // No codec in common: 488 with a 305 Warning.
    echo_invite(
        &mut g,
        t0,
        "z9hG4bKr1",
        &OFFER
            .replace("8 101", "18")
            .replace("a=rtpmap:8 PCMA", "a=rtpmap:18 G729"),
    );
    let (msgs, media) = outputs(&mut g);
    assert_eq!(msgs[0].status(), Some(488));
    assert!(msgs[0].header("Warning").unwrap().starts_with("305 "));
    assert!(media.is_empty());
    // Not SDP at all: 400.
    echo_invite(&mut g, t0, "z9hG4bKr2", "hello");
    assert_eq!(outputs(&mut g).0[0].status(), Some(400));
    // No ports: 503 with Retry-After.
    echo_invite(&mut g, t0, "z9hG4bKr3", OFFER);
    let (_, media) = outputs(&mut g);
    let [GwOutput::OpenMedia { dialog, .. }] = media.as_slice() else {
        panic!()
    };
    g.media_ready(t0, 1000, *dialog, Err("full".into()));
    let (msgs, _) = outputs(&mut g);
    assert_eq!(msgs[0].status(), Some(503));
    assert_eq!(msgs[0].header("Retry-After"), Some("5"));
    // CANCEL while ports are being bound: 487, and late ports are released.
    echo_invite(&mut g, t0, "z9hG4bKr4", OFFER);
    let (_, media) = outputs(&mut g);
    let [GwOutput::OpenMedia { dialog, .. }] = media.as_slice() else {
        panic!()
    };
    let cancel = request("CANCEL", "CANCEL").replace("z9hG4bKCANCEL", "z9hG4bKr4");
    let (msgs, media) = answers_all(&mut g, &cancel);
    let codes: Vec<_> = msgs.iter().map(|m| m.status().unwrap()).collect();
    assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
    assert!(matches!(media.as_slice(), [GwOutput::CloseMedia { .. }]));
    g.media_ready(t0, 1000, *dialog, Ok(vec![20000]));
    let (msgs, media) = outputs(&mut g);
    assert!(msgs.is_empty());
    assert!(matches!(media.as_slice(), [GwOutput::CloseMedia { .. }]));
}

#[test]
fn cancel_while_routing_gets_200_and_the_invite_487() {
    let mut g = gw();
    let (_, key, _) = invite(&mut g, "z9hG4bKd", "sip:x@causeway.local");
    let cancel = request("CANCEL", "CANCEL").replace("z9hG4bKCANCEL", "z9hG4bKd");
    let r = answers(&mut g, &cancel);
    let codes: Vec<_> = r.iter().map(|m| m.status().unwrap()).collect();
    assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
    late_404(&mut g, &key);
    assert!(
        sent(&mut g).is_empty(),
        "the cancelled call is not answered again"
    );
    assert_eq!(
        answers(&mut g, &request("CANCEL", "CANCEL"))[0].status(),
        Some(481)
    );
}

#[test]
fn malformed_gets_400_when_answerable_and_is_counted() {
    let mut g = gw();
    let r = answers(&mut g, &request("OPTIONS", "INVITE"));
    assert_eq!(r[0].status(), Some(400));
    assert_eq!(
        r[0].start,
        StartLine::Response {
            code: 400,
            reason: "CSeq Method Does Not Match".into()
        }
    );
    assert!(answers(&mut g, "\u{1}\u{2}garbage\r\n\r\n").is_empty());
    assert!(
        answers(&mut g, &request("ACK", "INVITE")).is_empty(),
        "never answer an ACK"
    );
    assert_eq!(g.counters.malformed.load(Relaxed), 3);
}

#[test]
fn browser_registrations_reach_an_alias_until_they_lapse_or_are_released() {
    let mut g = gw();
    g.register_browser("Bob", "p-1", 100);
    g.register_browser("bob", "p-2", 200);
    assert!(g.is_registered("bob", 50), "case does not matter");
    assert_eq!(g.registered_browsers("bob", 150).len(), 1, "p-1 lapsed");
    // A refresh moves the expiry, it does not add a second entry.
    g.register_browser("bob", "p-2", 300);
    assert_eq!(g.registered_browsers("bob", 250).len(), 1);
    g.unregister_browser("p-2");
    assert!(!g.is_registered("bob", 150));
    // Closed tabs' registrations are dropped once their tokens lapse.
    g.register_browser("carol", "p-3", 10);
    g.tick(11);
    assert!(!g.browsers.contains_key("carol"));
    g.tick(101);
    assert!(g.browsers.is_empty(), "bob's p-1 lapsed at 100");
}

/// An INVITE from alice (not registered) with optional extra headers.
fn alice_invite(g: &mut Gateway, branch: &str, cseq: u32, extra: &str) -> Vec<GwOutput> {
    let text = format!(
        "INVITE sip:9000@causeway.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@causeway.local>;tag=x\r\nTo: <sip:9000@causeway.local>\r\n\
         Call-ID: auth-1\r\nCSeq: {cseq} INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    g.handle_datagram(Instant::now(), 1000, flow(), text.as_bytes());
    std::iter::from_fn(|| g.poll_output()).collect()
}

#[test]
fn a_rule_with_auth_challenges_unregistered_callers_and_routes_authenticated_ones() {
    let cfg = "[[users]]\nname = \"alice\"\npassword = \"secret\"\n";
    let mut g = Gateway::new(&Config::parse(cfg, "t").unwrap(), Arc::default());
    let plan = crate::dialplan::load::from_sources(
        &[(
            "p.toml".into(),
            "[[rule]]\nname = \"out\"\npriority = 1\nmatch.to = '9.*'\nauth = true\n\
             target = { type = \"reject\", status = 486 }\n"
                .into(),
        )],
        &Default::default(),
    )
    .unwrap();
    let route = |g: &mut Gateway, out: Vec<GwOutput>| -> Vec<Message> {
        let (key, call) = out
            .into_iter()
            .find_map(|o| match o {
                GwOutput::Route { key, call } => Some((key, call)),
                _ => None,
            })
            .expect("routed");
        let decision = match plan.route(&call) {
            crate::dialplan::Verdict::Route(r) => Decision::Route(r),
            v => panic!("{v:?}"),
        };
        g.routed(Instant::now(), 1000, &key, decision);
        sent(g)
    };

    // No credentials: 407 with a fresh digest challenge.
    let out = alice_invite(&mut g, "z9hG4bKa1", 1, "");
    let r = route(&mut g, out);
    assert_eq!(r[0].status(), Some(407));
    let challenge = r[0].header("Proxy-Authenticate").expect("a challenge");
    let c = crate::sip::digest::Challenge::parse(challenge).unwrap();
    assert_eq!(c.realm, "causeway.local");

    // The right password: routed, as a registered caller (the rule's own
    // target decides: 486 here).
    let uri = "sip:9000@causeway.local";
    let good = c.authorize("INVITE", uri, "alice", "secret", 1, "abc");
    let out = alice_invite(
        &mut g,
        "z9hG4bKa2",
        2,
        &format!("Proxy-Authorization: {good}\r\n"),
    );
    let r = route(&mut g, out);
    assert_eq!(r[0].status(), Some(486), "{:?}", r[0]);

    // A wrong password: 403, no new challenge.
    let bad = c.authorize("INVITE", uri, "alice", "guess", 2, "abc");
    let out = alice_invite(
        &mut g,
        "z9hG4bKa3",
        3,
        &format!("Proxy-Authorization: {bad}\r\n"),
    );
    assert_eq!(route(&mut g, out)[0].status(), Some(403));

    // Credentials of another user than the From user: 403 as well.
    let mallory = c.authorize("INVITE", uri, "bob", "secret", 3, "abc");
    let out = alice_invite(
        &mut g,
        "z9hG4bKa4",
        4,
        &format!("Proxy-Authorization: {mallory}\r\n"),
    );
    assert_eq!(route(&mut g, out)[0].status(), Some(403));
}

#[test]
fn session_timers_too_short_get_422_and_unknown_extensions_420() {
    let mut g = gw();
    let with = |extra: &str, branch: &str| {
        request("INVITE", "INVITE")
            .replacen("sip:causeway.local", "sip:echo@127.0.0.1", 1)
            .replace("z9hG4bKINVITE", branch)
            .replace("Content-Length: 0", &format!("{extra}Content-Length: 0"))
    };
    // Shorter than Min-SE from a UAC that can retry: 422 saying our minimum.
    let r = answers(
        &mut g,
        &with("Supported: timer\r\nSession-Expires: 60\r\n", "z9hG4bKs1"),
    );
    assert_eq!(r[0].status(), Some(422));
    assert_eq!(r[0].header("Min-SE"), Some("90"));
    // Requiring an extension we lack: 420 naming it (timer is ours).
    let r = answers(
        &mut g,
        &with("Require: timer, precondition\r\n", "z9hG4bKs2"),
    );
    assert_eq!(r[0].status(), Some(420));
    assert_eq!(r[0].header("Unsupported"), Some("precondition"));
    // Requiring timers alone is fine: routed (100 Trying).
    let r = answers(
        &mut g,
        &with("Require: timer\r\nSession-Expires: 600\r\n", "z9hG4bKs3"),
    );
    assert_eq!(r[0].status(), Some(100));
}

#[test]
fn the_echo_service_grants_a_caller_that_refreshes_its_session_timer() {
    let t0 = Instant::now();
    let mut g = gw();
    for (branch, extra, granted) in [
        ("z9hG4bKst1", "", None),
        (
            "z9hG4bKst2",
            "Supported: timer\r\nSession-Expires: 600\r\n",
            Some("600;refresher=uac"),
        ),
    ] {
        echo_invite_with(&mut g, t0, branch, OFFER, extra);
        let (_, media) = outputs(&mut g);
        let [GwOutput::OpenMedia { dialog, .. }] = media.as_slice() else {
            panic!()
        };
        g.media_ready(t0, 1000, *dialog, Ok(vec![20000]));
        let (msgs, _) = outputs(&mut g);
        assert_eq!(msgs[0].status(), Some(200));
        assert_eq!(msgs[0].header("Supported"), Some("100rel, timer"));
        assert_eq!(msgs[0].header("Session-Expires"), granted, "{extra}");
        assert_eq!(
            msgs[0].header("Require"),
            granted.map(|_| "timer"),
            "{extra}"
        );
    }
}

#[test]
fn a_bridged_invite_carries_one_hop_less_and_a_spent_one_gets_483() {
    let t = Instant::now();
    let mut g = gw();
    g.set_listeners(vec![(Transport::Udp, flow().local)]);
    let with_hops = |branch: &str, hops: u8| {
        request("INVITE", "INVITE")
            .replacen("sip:causeway.local", "sip:bob@127.0.0.1", 1)
            .replace("z9hG4bKINVITE", branch)
            .replace("Max-Forwards: 70", &format!("Max-Forwards: {hops}"))
            .replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
                    OFFER.len()
                ),
            )
    };
    // No hops left: refused before routing.
    let (msgs, media) = answers_all(&mut g, &with_hops("z9hG4bKmf0", 0));
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].status(), Some(483));
    assert!(media.is_empty(), "not routed");

    // Five hops left: the callee's INVITE gets four.
    g.handle_datagram(t, 1000, flow(), with_hops("z9hG4bKmf5", 5).as_bytes());
    let (_, out) = outputs(&mut g);
    let Some((key, call)) = out.into_iter().find_map(|o| match o {
        GwOutput::Route { key, call } => Some((key, call)),
        _ => None,
    }) else {
        panic!("routed")
    };
    let plan = crate::dialplan::Dialplan::embedded_default().unwrap();
    let crate::dialplan::Verdict::Route(mut route) = plan.route(&call) else {
        panic!()
    };
    route.target = crate::dialplan::Target::Sip {
        uri: Some("sip:127.0.0.1:5070".into()),
        trunk: None,
    };
    g.routed(t, 1000, &key, Decision::Route(route));
    let (_, out) = outputs(&mut g);
    let Some(call) = out.into_iter().find_map(|o| match o {
        GwOutput::BridgeMedia { call, .. } => Some(call),
        _ => None,
    }) else {
        panic!("media asked for")
    };
    let ports = bridge::SipPorts {
        caller: 40000,
        callee: 40002,
        caller_video: None,
        callee_video: None,
    };
    g.bridge_ready(t, 1000, &call, Ok(ports));
    let (msgs, _) = outputs(&mut g);
    let invite = msgs
        .iter()
        .find(|m| m.method() == Some(Method::Invite))
        .expect("the callee's INVITE");
    assert_eq!(invite.header("Max-Forwards"), Some("4"));
}
