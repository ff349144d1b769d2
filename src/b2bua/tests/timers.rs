//! Session timers (RFC 4028) on simulated time: what our 200 grants, our
//! refreshes (UPDATE, else a re-INVITE with our SDP unchanged), refreshes
//! from either side, and the call ended when a side stops refreshing or
//! its dialog is gone.

use super::*;
use crate::sip::timer::Refresher;
use std::time::Duration;

fn se(interval: u32, refresher: Refresher) -> SessionExpires {
    SessionExpires {
        interval,
        refresher: Some(refresher),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn requests(out: &[CallOutput]) -> Vec<(&Message, Flow)> {
    out.iter()
        .filter_map(|o| match o {
            CallOutput::Request(m, f) => Some((m, *f)),
            _ => None,
        })
        .collect()
}

/// Dials from a SIP caller granted `granted`; the callee answers PCMU
/// with `callee_headers`. Returns our 200 to the caller, our tag in it,
/// and the INVITE the callee got.
fn connected(
    b: &mut B2bua,
    t0: Instant,
    granted: SessionExpires,
    callee_headers: &[(&str, &str)],
) -> (Message, String, Message) {
    let (_, inv, _) = dial_from_sip_with(b, t0, &[5070], &[], DtmfMode::Auto, Some(granted));
    // We ask the callee for our interval.
    assert_eq!(inv[0].header("Session-Expires"), Some("1800"));
    assert_eq!(inv[0].header("Supported"), Some("100rel, timer"));
    let mut ok = reply(&inv[0], 200, "a", Some(ANSWER_PCMU));
    for (k, v) in callee_headers {
        ok.push_header(k, *v);
    }
    b.on_response(t0, &ok);
    let out = drain(b);
    let ours = out
        .iter()
        .find_map(|o| match o {
            CallOutput::Respond(_, m) if m.status() == Some(200) => Some(m.clone()),
            _ => None,
        })
        .expect("our 200 to the caller");
    let tag = crate::sip::dialog::tag_of(&ours, "To").unwrap();
    assert!(b.on_ack(t0, &from_caller("ACK", &tag, 1)));
    (ours, tag, inv[0].clone())
}

#[test]
fn we_refresh_the_callee_the_caller_refreshes_us_and_a_silent_caller_is_hung_up() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let caller_refreshes = se(90, Refresher::Uac);
    let (ok_to_caller, tag, inv) = connected(
        &mut b,
        t0,
        caller_refreshes,
        &[
            ("Session-Expires", "90;refresher=uac"),
            ("Allow", "INVITE, ACK, BYE, UPDATE"),
        ],
    );
    // The caller is told it refreshes, and must.
    let ok = &ok_to_caller;
    assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(ok.header("Require"), Some("timer"));
    assert_eq!(ok.header("Supported"), Some("100rel, timer"));
    assert_eq!(b.poll_timeout(), Some(t0 + secs(45)));

    // The caller refreshes at 30 s: 200 saying the same.
    let refresh = from_caller("UPDATE", &tag, 2);
    let mut r = refresh.clone();
    r.push_header("Session-Expires", "90;refresher=uac");
    r.push_header("Supported", "timer");
    assert!(b.on_request(t0 + secs(30), &TxKey::server(&r).unwrap(), &r, flow(5080)));
    let out = drain(&mut b);
    let [CallOutput::Respond(_, resp)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.header("Session-Expires"), Some("90;refresher=uac"));

    // At half the callee's interval we refresh it by UPDATE.
    b.handle_timeout(t0 + secs(45));
    let out = drain(&mut b);
    let reqs = requests(&out);
    let [(update, f)] = reqs.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(update.method(), Some(Method::Update));
    assert_eq!(update.call_id(), inv.call_id());
    assert_eq!(f.remote.port(), 5070);
    assert_eq!(update.header("Session-Expires"), Some("90;refresher=uac"));
    assert!(update.body.is_empty());

    // It does not take UPDATE after all: a re-INVITE with our offer, at once.
    b.on_response(
        t0 + secs(46),
        &response_to(update, 501, "Not Implemented", Some("a"), None),
    );
    b.handle_timeout(t0 + secs(46));
    let out = drain(&mut b);
    let reqs = requests(&out);
    let [(reinvite, _)] = reqs.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(reinvite.method(), Some(Method::Invite));
    assert_eq!(body(reinvite), body(&inv), "the SDP is unchanged");
    let mut ok = reply(reinvite, 200, "a", Some(ANSWER_PCMU));
    ok.push_header("Session-Expires", "90;refresher=uac");
    b.on_response(t0 + secs(46), &ok);
    assert_eq!(methods(&drain(&mut b)), ["ACK"]);

    // The caller repeats its offer word for word (a refresh by re-INVITE):
    // 200 with our SDP unchanged, nothing passed on.
    // (A caller that supports timers says so in every request; one that
    // does not would make us the refresher, RFC 4028 section 9.)
    let mut again = with_sdp(from_caller("INVITE", &tag, 3), CALLER_OFFER);
    again.push_header("Supported", "timer");
    let key = TxKey::server(&again).unwrap();
    assert!(b.on_request(t0 + secs(50), &key, &again, flow(5080)));
    let out = drain(&mut b);
    let [CallOutput::Respond(_, resp)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(body(resp), body(&ok_to_caller));
    assert!(b.on_ack(t0 + secs(50), &from_caller("ACK", &tag, 3)));

    // A hold passed on to the callee keeps its timer running.
    let mut hold = hold_from_caller(&tag, 4);
    hold.push_header("Supported", "timer");
    let key = TxKey::server(&hold).unwrap();
    assert!(b.on_request(t0 + secs(55), &key, &hold, flow(5080)));
    let out = drain(&mut b);
    let reqs = requests(&out);
    let [(forwarded, _)] = reqs.as_slice() else {
        panic!("{out:?}")
    };
    // Our 200 to the caller says it still refreshes.
    let caller_ok = out.iter().find_map(|o| match o {
        CallOutput::Respond(_, m) => Some(m),
        _ => None,
    });
    assert_eq!(
        caller_ok.and_then(|m| m.header("Session-Expires")),
        Some("90;refresher=uac")
    );
    assert_eq!(
        forwarded.header("Session-Expires"),
        Some("90;refresher=uac")
    );
    assert_eq!(forwarded.header("Supported"), Some("100rel, timer"));
    assert!(b.on_ack(t0 + secs(55), &from_caller("ACK", &tag, 4)));

    // The callee's next refresh (45 s after the last) is a re-INVITE.
    b.handle_timeout(t0 + secs(114));
    let out = drain(&mut b);
    let methods_sent: Vec<_> = requests(&out)
        .iter()
        .map(|(m, f)| (m.method(), f.remote.port()))
        .collect();
    assert_eq!(methods_sent, [(Some(Method::Invite), 5070)]);
    // The caller's last refresh was the hold at 55 s; the next never comes:
    // BYE to both sides 60 s on, before its session would expire.
    b.handle_timeout(t0 + secs(115));
    let out = drain(&mut b);
    let byes: Vec<u16> = requests(&out)
        .iter()
        .filter(|(m, _)| m.method() == Some(Method::Bye))
        .map(|(_, f)| f.remote.port())
        .collect();
    assert_eq!(byes, [5070, 5080]);
    assert!(methods(&out).contains(&"ended:gateway:0".to_string()));
    let ended = out.iter().find_map(|o| match o {
        CallOutput::Notice(Notice::Event(_, CallEvent::Ended { reason, .. })) => Some(reason),
        _ => None,
    });
    assert_eq!(
        ended.map(String::as_str),
        Some("session expired: no refresh from the caller")
    );
}

#[test]
fn a_caller_that_cannot_refresh_is_refreshed_by_re_invite_and_a_481_ends_the_call() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let we_refresh = se(90, Refresher::Uas);
    // The callee runs no timer (its 200 has no Session-Expires).
    let (ok, _, _) = connected(&mut b, t0, we_refresh, &[]);
    assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uas"));
    assert_eq!(ok.header("Require"), None, "the caller need not refresh");

    // The caller's INVITE had no Allow: UPDATE, so the refresh re-INVITEs
    // with the SDP of our 200, our Contact, and our timer.
    b.handle_timeout(t0 + secs(45));
    let out = drain(&mut b);
    let reqs = requests(&out);
    let [(reinvite, f)] = reqs.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(reinvite.method(), Some(Method::Invite));
    assert_eq!(reinvite.call_id(), "caller-call");
    assert_eq!(f.remote.port(), 5080);
    assert_eq!(body(reinvite), body(&ok));
    assert_eq!(reinvite.header("Contact"), Some("<sip:bob@127.0.0.1:5060>"));
    assert_eq!(reinvite.header("Session-Expires"), Some("90;refresher=uac"));

    // Its 200 refreshes the session: next refresh 45 s on.
    let mut theirs = response_to(reinvite, 200, "OK", None, None);
    theirs.push_header("Content-Type", "application/sdp");
    theirs.body = Bytes::from(CALLER_OFFER);
    b.on_response(t0 + secs(46), &theirs);
    assert_eq!(methods(&drain(&mut b)), ["ACK"]);
    assert_eq!(b.poll_timeout(), Some(t0 + secs(91)));

    // The next one finds the dialog gone: the call ends, the callee gets BYE.
    b.handle_timeout(t0 + secs(91));
    let out = drain(&mut b);
    let reqs = requests(&out);
    let [(again, _)] = reqs.as_slice() else {
        panic!("{out:?}")
    };
    b.on_response(
        t0 + secs(91),
        &response_to(again, 481, "Call/Transaction Does Not Exist", None, None),
    );
    let out = drain(&mut b);
    assert_eq!(requests(&out)[0].1.remote.port(), 5070);
    assert_eq!(requests(&out)[0].0.method(), Some(Method::Bye));
    assert!(methods(&out).contains(&"ended:gateway:0".to_string()));
}

#[test]
fn an_unanswered_refresh_ends_the_call_when_the_session_would_expire() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let granted = se(90, Refresher::Uas);
    connected(&mut b, t0, granted, &[]);
    b.handle_timeout(t0 + secs(45));
    assert_eq!(requests(&drain(&mut b)).len(), 1);
    // No answer (a caller gone silent): nothing until 60 s, then BYE.
    assert_eq!(b.poll_timeout(), Some(t0 + secs(60)));
    b.handle_timeout(t0 + secs(60));
    let out = drain(&mut b);
    assert!(
        methods(&out).contains(&"ended:gateway:0".to_string()),
        "{out:?}"
    );
}

#[test]
fn a_callee_wanting_a_longer_timer_is_invited_again_with_its_min_se() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070]);
    let mut too_short = reply(&inv[0], 422, "a", None);
    too_short.push_header("Min-SE", "3600");
    b.on_response(t0, &too_short);
    let out = drain(&mut b);
    let reqs = requests(&out);
    let [(again, f)] = reqs.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(f.remote.port(), 5070);
    assert_eq!(again.call_id(), inv[0].call_id());
    assert_eq!(again.header("Session-Expires"), Some("3600"));
    assert_eq!(again.cseq().unwrap().seq, 2);
    b.sent(again, TxKey::server(again).unwrap());
    // The same 422 again: the call fails (500: the 422 was about our timer).
    let mut still = reply(again, 422, "a", None);
    still.push_header("Min-SE", "3600");
    b.on_response(t0, &still);
    assert!(methods(&drain(&mut b)).contains(&"ended:sip:500".to_string()));
}

#[test]
fn a_refresh_from_a_caller_without_timer_support_makes_us_the_refresher() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let caller_refreshes = se(90, Refresher::Uac);
    let (_, tag, _) = connected(&mut b, t0, caller_refreshes, &[]);
    // A bodiless UPDATE without Supported: timer (RFC 4028 section 9).
    let refresh = from_caller("UPDATE", &tag, 2);
    let key = TxKey::server(&refresh).unwrap();
    assert!(b.on_request(t0 + secs(10), &key, &refresh, flow(5080)));
    let out = drain(&mut b);
    let [CallOutput::Respond(_, ok)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uas"));
    assert_eq!(ok.header("Require"), None);
    assert_eq!(b.poll_timeout(), Some(t0 + secs(55)));
}

#[test]
fn the_admin_api_sees_each_sides_sdps_and_session_timer() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let caller_refreshes = se(90, Refresher::Uac);
    let (ok, _, inv) = connected(
        &mut b,
        t0,
        caller_refreshes,
        &[("Session-Expires", "600;refresher=uac")],
    );
    let legs = b.legs("sip-1");
    let [caller, callee] = legs.as_slice() else {
        panic!("{legs:?}")
    };
    assert_eq!(
        (caller.side.as_str(), caller.leg.as_str()),
        ("caller", "sip")
    );
    assert_eq!(caller.local_sdp, body(&ok));
    assert_eq!(caller.remote_sdp, CALLER_OFFER);
    assert_eq!(caller.session_expires, Some(90));
    assert_eq!(caller.refresher.as_deref(), Some("peer"));
    assert_eq!(callee.side, "callee");
    assert_eq!(callee.local_sdp, body(&inv));
    assert_eq!(callee.remote_sdp, ANSWER_PCMU);
    assert_eq!(callee.session_expires, Some(600));
    assert_eq!(callee.refresher.as_deref(), Some("gateway"));
    assert!(b.legs("no-such-call").is_empty());
}

#[test]
fn a_silent_side_ends_the_call_both_ways() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let granted = se(1800, Refresher::Uac);
    connected(&mut b, t0, granted, &[]);
    b.media_silent(t0 + secs(60), "sip-1", Party::Callee);
    let out = drain(&mut b);
    let byes: Vec<u16> = requests(&out)
        .iter()
        .filter(|(m, _)| m.method() == Some(Method::Bye))
        .map(|(_, f)| f.remote.port())
        .collect();
    assert_eq!(byes, [5070, 5080]);
    let ended = out.iter().find_map(|o| match o {
        CallOutput::Notice(Notice::Event(_, CallEvent::Ended { reason, by, .. })) => {
            Some((*by, reason.clone()))
        }
        _ => None,
    });
    assert_eq!(
        ended,
        Some((Side::Gateway, "no media from the callee".to_string()))
    );
    // Once is enough: a late report changes nothing.
    b.media_silent(t0 + secs(61), "sip-1", Party::Caller);
    assert!(
        drain(&mut b)
            .iter()
            .all(|o| !matches!(o, CallOutput::Request(..)))
    );
}

#[test]
fn an_in_dialog_refresh_below_our_min_se_gets_422_and_changes_nothing() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, tag) = connected_sip_call(&mut b, t0);
    let mut hold = hold_from_caller(&tag, 2);
    hold.push_header("Supported", "timer");
    hold.push_header("Session-Expires", "30");
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5080)));
    let out = drain(&mut b);
    let [CallOutput::Respond(_, resp)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(resp.status(), Some(422));
    assert_eq!(
        resp.header("Min-SE"),
        Some(crate::sip::timer::MIN_SE.to_string().as_str())
    );
    // Not held, nothing passed on, nothing resent: the same offer at our
    // minimum is taken.
    b.handle_timeout(t0 + std::time::Duration::from_secs(1));
    assert!(drain(&mut b).is_empty());
    let mut hold = hold_from_caller(&tag, 3);
    hold.push_header("Supported", "timer");
    hold.push_header("Session-Expires", "90");
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5080)));
    assert_eq!(
        methods(&drain(&mut b)),
        ["INVITE", "hold-Caller:true", "200"]
    );
}

#[test]
fn the_configured_min_se_holds_in_dialog_too() {
    let t0 = Instant::now();
    let mut b = B2bua::new(300);
    let (_, tag) = connected_sip_call(&mut b, t0);
    let mut refresh = from_caller("UPDATE", &tag, 2);
    refresh.push_header("Supported", "timer");
    refresh.push_header("Session-Expires", "120");
    assert!(b.on_request(t0, &TxKey::server(&refresh).unwrap(), &refresh, flow(5080)));
    let out = drain(&mut b);
    let [CallOutput::Respond(_, resp)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        (resp.status(), resp.header("Min-SE")),
        (Some(422), Some("300"))
    );
}
