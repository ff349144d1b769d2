//! SIP INFO on simulated time: digits both ways (one INFO in flight per
//! side, in order), the rule's `media.dtmf` modes, keyframe requests and
//! bodies we do not read.

use super::*;

const ANSWER_PCMU_EVENTS: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
                                  t=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                                  a=rtpmap:101 telephone-event/8000\r\n";

/// An INFO from the callee of `invite` (our tag `local`, theirs `a`).
fn info_from_callee(invite: &Message, local: &str, cseq: u32, ct: &str, body: &str) -> Message {
    let text = format!(
        "INFO sip:causeway@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinfo{cseq}\r\n\
         From: <sip:alice@test.local>;tag=a\r\nTo: <sip:browser@test.local>;tag={local}\r\n\
         Call-ID: {}\r\nCSeq: {cseq} INFO\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
        invite.call_id(),
        body.len()
    );
    Message::parse(text.as_bytes()).unwrap()
}

/// The INFO requests in `out`, as (Call-ID, body); each is reported sent.
fn infos_sent(b: &mut B2bua, out: &[CallOutput]) -> Vec<(String, String, Message)> {
    let mut sent = Vec::new();
    for o in out {
        if let CallOutput::Request(m, _) = o
            && m.method() == Some(Method::Info)
        {
            assert_eq!(m.header("Content-Type"), Some("application/dtmf-relay"));
            b.sent(m, TxKey::server(m).unwrap());
            sent.push((m.call_id().to_string(), body(m), m.clone()));
        }
    }
    sent
}

/// Our response to a request the call layer answered.
fn response(out: &[CallOutput]) -> &Message {
    out.iter()
        .find_map(|o| match o {
            CallOutput::Respond(_, m) => Some(m),
            _ => None,
        })
        .expect("a response")
}

#[test]
fn digits_cross_a_browser_call_by_info_one_at_a_time_and_back_to_the_browser() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial_with(&mut b, t0, &[5070], DtmfMode::Info);
    // Telephone-events agreed, but the rule says INFO.
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU_EVENTS)));
    drain(&mut b);
    let local = from_tag(&inv[0]);

    // The keypad's digits: one INFO now, the next once it is answered.
    assert!(b.browser_digits("call-1", "1x#", 120));
    let out = drain(&mut b);
    let sent = infos_sent(&mut b, &out);
    assert_eq!(sent.len(), 1, "{out:?}");
    let (call_id, text, first) = &sent[0];
    assert_eq!(call_id, inv[0].call_id());
    assert_eq!(text, "Signal=1\r\nDuration=120\r\n");
    assert!(first.header("To").unwrap().ends_with(";tag=a"));
    assert_eq!(first.cseq().unwrap().seq, 2);
    b.on_response(t0, &response_to(first, 200, "OK", None, None));
    let out = drain(&mut b);
    let sent = infos_sent(&mut b, &out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, "Signal=#\r\nDuration=120\r\n");
    assert_eq!(sent[0].2.cseq().unwrap().seq, 3);
    // An INFO that never gets an answer does not block the next digit.
    b.on_timeout(t0, &TxKey::server(&sent[0].2).unwrap());
    assert!(drain(&mut b).is_empty(), "nothing queued");
    assert!(b.browser_digits("call-1", "2", 120));
    let out = drain(&mut b);
    assert_eq!(infos_sent(&mut b, &out).len(), 1);

    // The callee's INFO reaches the browser's event stream.
    let info = info_from_callee(
        &inv[0],
        &local,
        7,
        "application/dtmf-relay",
        "Signal=5\r\nDuration=200\r\n",
    );
    assert!(b.on_request(t0, &TxKey::server(&info).unwrap(), &info, flow(5070)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["dtmf-to-browser:5", "200"]);
    let CallOutput::Notice(Notice::DtmfToBrowser { peer, digit }) = &out[0] else {
        panic!()
    };
    assert_eq!((*peer, digit.duration_ms), (PeerId(7), 200));

    // A keyframe request, a body we do not read, a digit we cannot.
    let fast_update = "<?xml version=\"1.0\"?><media_control><vc_primitive><to_encoder>\
                       <picture_fast_update/></to_encoder></vc_primitive></media_control>";
    let cases = [
        (
            "application/media_control+xml",
            fast_update,
            vec!["keyframe", "200"],
        ),
        ("text/plain", "hello", vec!["415"]),
        ("application/dtmf-relay", "Signal=Z\r\n", vec!["400"]),
        ("application/dtmf", "9", vec!["dtmf-to-browser:9", "200"]),
    ];
    for (n, (ct, text, want)) in cases.into_iter().enumerate() {
        let info = info_from_callee(&inv[0], &local, 8 + n as u32, ct, text);
        assert!(b.on_request(t0, &TxKey::server(&info).unwrap(), &info, flow(5070)));
        let out = drain(&mut b);
        assert_eq!(methods(&out), want, "{ct}");
        if want == ["415"] {
            assert!(
                response(&out)
                    .header("Accept")
                    .unwrap()
                    .contains("application/dtmf-relay")
            );
        }
    }
}

#[test]
fn auto_sends_info_only_toward_a_side_without_telephone_events() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    // The caller offers telephone-event; the callee answers without.
    let (_, inv) = dial_from_sip(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    assert!(
        body(response(&out)).contains("telephone-event"),
        "the caller keeps its events"
    );
    let local = from_tag(&inv[0]);

    // A digit in the caller's RTP (relayed as an event nowhere): INFO to
    // the callee.
    let d = |digit| Digit {
        digit,
        duration_ms: 100,
    };
    b.media_digit("sip-1", Party::Caller, d('3'));
    let out = drain(&mut b);
    let sent = infos_sent(&mut b, &out);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].0.as_str(), sent[0].1.as_str()),
        (inv[0].call_id(), "Signal=3\r\nDuration=100\r\n")
    );
    // A digit in the callee's RTP was relayed to the caller by the media
    // path: nothing more to do.
    b.media_digit("sip-1", Party::Callee, d('4'));
    assert!(drain(&mut b).is_empty());
    // The callee's INFO is played to the caller as an event.
    let info = info_from_callee(&inv[0], &local, 7, "application/dtmf", "6");
    assert!(b.on_request(t0, &TxKey::server(&info).unwrap(), &info, flow(5070)));
    assert_eq!(methods(&drain(&mut b)), ["play-to-Caller:6", "200"]);
    // Client API digits have no browser here; nothing to send by INFO for
    // an unknown call either.
    assert!(!b.browser_digits("nope", "1", 100));
}

#[test]
fn info_mode_answers_the_sip_caller_without_events_and_sends_it_info() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, inv, _) = dial_from_sip_with(&mut b, t0, &[5070], &[], DtmfMode::Info, None);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU_EVENTS)));
    let out = drain(&mut b);
    let ok = response(&out).clone();
    assert!(!body(&ok).contains("telephone-event"), "{}", body(&ok));
    assert!(ok.header("Allow").unwrap().contains("INFO"));
    let local = from_tag(&inv[0]);
    // The callee's digit goes to the caller by INFO in the caller's dialog.
    let info = info_from_callee(&inv[0], &local, 7, "application/dtmf-relay", "Signal=*\r\n");
    assert!(b.on_request(t0, &TxKey::server(&info).unwrap(), &info, flow(5070)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["INFO", "200"]);
    let sent = infos_sent(&mut b, &out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "caller-call");
    assert_eq!(sent[0].1, "Signal=*\r\nDuration=160\r\n");
    assert!(sent[0].2.header("To").unwrap().contains("tag=ctag"));
    assert_eq!(
        sent[0]
            .2
            .header("From")
            .map(|f| f.ends_with(&format!("tag={}", tag_of_ok(&ok)))),
        Some(true)
    );
    // The caller's INFO goes to the callee the same way.
    let mut from = from_caller("INFO", &tag_of_ok(&ok), 3);
    from.push_header("Content-Type", "application/dtmf-relay");
    from.body = Bytes::from_static(b"Signal=0\r\nDuration=90\r\n");
    assert!(b.on_request(t0, &TxKey::server(&from).unwrap(), &from, flow(5080)));
    let out = drain(&mut b);
    let sent = infos_sent(&mut b, &out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0].0, inv[0].call_id());
    assert_eq!(sent[0].1, "Signal=0\r\nDuration=90\r\n");
}

#[test]
fn a_keyframe_request_reaches_the_callee_by_info_behind_a_digit_and_once() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial_with(&mut b, t0, &[5070], DtmfMode::Info);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    drain(&mut b);
    // A digit in flight: the media's requests wait behind it, as one.
    assert!(b.browser_digits("call-1", "1", 120));
    let out = drain(&mut b);
    let digit = infos_sent(&mut b, &out).remove(0).2;
    b.ask_keyframe("call-1", Party::Callee);
    b.ask_keyframe("call-1", Party::Callee);
    assert!(drain(&mut b).is_empty());
    b.on_response(t0, &response_to(&digit, 200, "OK", None, None));
    let out = drain(&mut b);
    let [CallOutput::Request(info, to)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(info.method(), Some(Method::Info));
    assert_eq!(info.call_id(), inv[0].call_id());
    assert_eq!(to.remote.port(), 5070);
    let ct = info.header("Content-Type").unwrap();
    assert!(
        crate::media::keyframe::is_picture_fast_update(ct, &body(info)),
        "{ct}: {}",
        body(info)
    );
    b.sent(info, TxKey::server(info).unwrap());
    b.on_response(t0, &response_to(info, 200, "OK", None, None));
    assert!(drain(&mut b).is_empty(), "one request, not two");
    // Unknown calls are ignored.
    b.ask_keyframe("no-such-call", Party::Callee);
    assert!(drain(&mut b).is_empty());

    // A request the callee cannot take for now (491) is not a refusal.
    let keyframe_info = |b: &mut B2bua| {
        b.ask_keyframe("call-1", Party::Callee);
        let out = drain(b);
        let [CallOutput::Request(info, _)] = out.as_slice() else {
            assert!(out.is_empty(), "{out:?}");
            return None;
        };
        let ct = info.header("Content-Type").unwrap_or_default();
        assert!(crate::media::keyframe::is_picture_fast_update(
            ct,
            &body(info)
        ));
        b.sent(info, TxKey::server(info).unwrap());
        Some(info.clone())
    };
    let info = keyframe_info(&mut b).expect("asked again");
    b.on_response(t0, &response_to(&info, 491, "Request Pending", None, None));
    // A 415 is: the callee gets no more keyframe requests by INFO, and
    // digits still go.
    let info = keyframe_info(&mut b).expect("asked after a 491");
    b.on_response(
        t0,
        &response_to(&info, 415, "Unsupported Media Type", None, None),
    );
    assert!(drain(&mut b).is_empty());
    assert!(keyframe_info(&mut b).is_none(), "no INFO after the refusal");
    assert!(b.browser_digits("call-1", "2", 120));
    let out = drain(&mut b);
    assert_eq!(infos_sent(&mut b, &out).len(), 1, "digits still go by INFO");
}
