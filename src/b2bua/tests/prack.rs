//! Reliable provisional responses (RFC 3262) toward a SIP caller that
//! requires them, on simulated time: our 180 carries an RSeq and is resent
//! until the caller's PRACK; without one the INVITE gets 504.

use super::*;
use crate::sip::transaction::T1;

/// A SIP caller requiring 100rel calls one callee on 5070, which rings;
/// returns our 180 and the callee's INVITE.
fn rung(b: &mut B2bua, t0: Instant) -> (Message, Message) {
    let mut invite = caller_invite();
    invite.push_header("Require", "100rel");
    invite.push_header("Record-Route", "<sip:proxy.example;lr>");
    b.dial_sip(
        t0,
        SipDial {
            offer: Offer::audio(&[AudioCodec::Pcma], true),
            ..sip_dial(invite)
        },
        vec![target(5070)],
        vec![],
    );
    let out = drain(b);
    let [CallOutput::Request(inv, _)] = out.as_slice() else {
        panic!("{out:?}")
    };
    b.sent(inv, TxKey::server(inv).unwrap());
    b.on_response(t0, &reply(inv, 180, "a", None));
    let out = drain(b);
    let ringing = out
        .iter()
        .find_map(|o| match o {
            CallOutput::Respond(_, m) if m.status() == Some(180) => Some(m.clone()),
            _ => None,
        })
        .expect("a 180");
    (ringing, inv.clone())
}

#[test]
fn our_180_is_resent_until_the_callers_prack() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (ringing, _) = rung(&mut b, t0);
    assert_eq!(ringing.header("Require"), Some("100rel"));
    assert_eq!(ringing.header("RSeq"), Some("1"));
    // It makes the early dialog the PRACK travels in: the route set comes back.
    assert_eq!(
        ringing.header("Record-Route"),
        Some("<sip:proxy.example;lr>")
    );
    let tag = crate::sip::dialog::tag_of(&ringing, "To").unwrap();
    // Unacknowledged: resent after T1, as it was.
    b.handle_timeout(t0 + T1);
    let out = drain(&mut b);
    let [CallOutput::Transmit(f, again)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(f.remote.port(), 5080);
    assert_eq!(*again, ringing.to_bytes());
    // A PRACK for something else: 481; the right one: 200, and no more resends.
    for (rack, code) in [("2 1 INVITE", 481), ("1 1 INVITE", 200)] {
        let mut prack = from_caller("PRACK", &tag, 2);
        prack.push_header("RAck", rack);
        assert!(b.on_request(t0 + T1, &TxKey::server(&prack).unwrap(), &prack, flow(5080)));
        assert_eq!(methods(&drain(&mut b)), [code.to_string()], "{rack}");
    }
    b.handle_timeout(t0 + 10 * T1);
    assert!(drain(&mut b).is_empty());
}

#[test]
fn a_caller_that_never_pracks_gets_504_and_the_callee_a_cancel() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    rung(&mut b, t0);
    let mut now = t0;
    let mut out = Vec::new();
    while let Some(next) = b.poll_timeout().filter(|n| *n <= t0 + 64 * T1) {
        now = next;
        b.handle_timeout(now);
        out.extend(drain(&mut b));
    }
    assert_eq!(now, t0 + 64 * T1);
    let resends = out
        .iter()
        .filter(|o| matches!(o, CallOutput::Transmit(..)))
        .count();
    assert!(resends >= 6, "{out:?}");
    let tail: Vec<String> = methods(&out).into_iter().filter(|m| m != "ACK").collect();
    assert_eq!(tail, ["CANCEL", "504", "ended:gateway:504", "release"]);
}
