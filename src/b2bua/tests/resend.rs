//! Our 2xx to a SIP side's re-INVITE, on simulated time: resent until its
//! ACK (RFC 3261 13.3.1.4), and a side that never ACKs is hung up.

use super::*;
use std::time::Duration;

/// The 2xx retransmissions in `out`, as text.
fn resent(out: &[CallOutput]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            CallOutput::Transmit(_, bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn our_200_to_a_callers_re_invite_is_resent_until_its_ack() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, our_tag) = connected_sip_call(&mut b, t0);
    let hold = hold_from_caller(&our_tag, 2);
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5080)));
    drain(&mut b);
    // T1 later, then 2*T1 after that: the same 200 again.
    let t1 = t0 + Duration::from_millis(500);
    assert!(b.poll_timeout().is_some_and(|t| t <= t1));
    b.handle_timeout(t1);
    let again = resent(&drain(&mut b));
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(
        again[0].starts_with("SIP/2.0 200 OK") && again[0].contains("CSeq: 2 INVITE"),
        "{}",
        again[0]
    );
    assert!(again[0].contains("a=recvonly"), "{}", again[0]);
    b.handle_timeout(t1 + Duration::from_millis(999));
    assert!(resent(&drain(&mut b)).is_empty());
    b.handle_timeout(t1 + Duration::from_secs(1));
    assert_eq!(resent(&drain(&mut b)).len(), 1);
    // The ACK stops it, and the call goes on.
    assert!(b.on_ack(t1, &from_caller("ACK", &our_tag, 2)));
    b.handle_timeout(t0 + Duration::from_secs(40));
    assert!(drain(&mut b).is_empty());
    assert!(!b.is_empty());
}

#[test]
fn our_200_to_a_callees_re_invite_is_resent_until_its_ack_or_the_call_ends() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (inv, _) = connected_sip_call(&mut b, t0);
    let held = ANSWER_PCMU.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    let hold = with_sdp(from_callee(&inv, "INVITE", 5), &held);
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5070)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["INVITE", "hold-Callee:true", "200"]);
    // Resent toward the callee at T1.
    let t1 = t0 + Duration::from_millis(500);
    b.handle_timeout(t1);
    let out = drain(&mut b);
    let [CallOutput::Transmit(to, bytes)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(to.remote.port(), 5070);
    let text = String::from_utf8_lossy(bytes);
    assert!(
        text.starts_with("SIP/2.0 200 OK") && text.contains("CSeq: 5 INVITE"),
        "{text}"
    );
    // An ACK from another dialog changes nothing; the callee's own stops it.
    let mut stranger = from_callee(&inv, "ACK", 5);
    stranger.start = StartLine::Request {
        method: Method::Ack,
        uri: "sip:causeway@127.0.0.1".into(),
    };
    let stranger = Message::parse(
        String::from_utf8_lossy(&stranger.to_bytes())
            .replace(";tag=a", ";tag=zzz")
            .as_bytes(),
    )
    .unwrap();
    assert!(!b.on_ack(t1, &stranger));
    assert!(b.on_ack(t1, &from_callee(&inv, "ACK", 5)));
    b.handle_timeout(t0 + Duration::from_secs(40));
    assert!(resent(&drain(&mut b)).is_empty());

    // Another re-INVITE (resume) that the callee never ACKs: after 64*T1
    // the call is hung up on both sides.
    let resume = with_sdp(from_callee(&inv, "INVITE", 6), ANSWER_PCMU);
    let t2 = t0 + Duration::from_secs(41);
    assert!(b.on_request(t2, &TxKey::server(&resume).unwrap(), &resume, flow(5070)));
    drain(&mut b);
    b.handle_timeout(t2 + Duration::from_secs(32));
    let out = drain(&mut b);
    assert_eq!(
        methods(&out),
        ["BYE", "BYE", "ended:gateway:0", "release"],
        "{out:?}"
    );
}

#[test]
fn a_call_that_ends_resends_nothing_more_to_its_callee() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (inv, our_tag) = connected_sip_call(&mut b, t0);
    let hold = with_sdp(from_callee(&inv, "INVITE", 5), ANSWER_PCMU);
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5070)));
    drain(&mut b);
    // The caller hangs up before the callee's ACK.
    let bye = from_caller("BYE", &our_tag, 2);
    assert!(b.on_request(t0, &TxKey::server(&bye).unwrap(), &bye, flow(5080)));
    let out = drain(&mut b);
    assert_eq!(methods(&out).iter().filter(|m| *m == "BYE").count(), 1);
    // No 2xx resent, and no second BYE when the resend would have expired.
    for secs in [1, 33] {
        b.handle_timeout(t0 + Duration::from_secs(secs));
        let out = drain(&mut b);
        assert!(resent(&out).is_empty(), "{out:?}");
        assert!(!methods(&out).contains(&"BYE".to_string()), "{out:?}");
    }
}
