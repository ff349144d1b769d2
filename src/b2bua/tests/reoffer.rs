//! A SIP side's re-offer that changes its codec or address, on simulated
//! time: answered in the new codec, the side's media moved, the other side
//! left in its own codec.

use super::*;

#[test]
fn a_re_invite_in_another_codec_moves_that_sides_media_and_back() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, our_tag) = connected_sip_call(&mut b, t0);

    // The caller now offers A-law only, from another port: answered in
    // A-law, its media moves; the callee is re-offered its own PCMU.
    let pcma_only = CALLER_OFFER
        .replace(
            "m=audio 30000 RTP/AVP 8 0 101",
            "m=audio 30010 RTP/AVP 8 101",
        )
        .replace("a=rtpmap:0 PCMU/8000\r\n", "");
    let reinvite = with_sdp(from_caller("INVITE", &our_tag, 2), &pcma_only);
    assert!(b.on_request(
        t0,
        &TxKey::server(&reinvite).unwrap(),
        &reinvite,
        flow(5080)
    ));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["INVITE", "update-media", "200"]);
    let CallOutput::Request(to_callee, _) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(
        body(to_callee).contains("RTP/AVP 0\r\n"),
        "{}",
        body(to_callee)
    );
    let CallOutput::Notice(Notice::UpdateMedia { party, media, .. }) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(*party, Party::Caller);
    assert_eq!(media.format.pt, 8);
    assert_eq!(media.remote_rtp, Some("127.0.0.1:30010".parse().unwrap()));
    let CallOutput::Respond(_, ok) = &out[2] else {
        panic!("{out:?}")
    };
    assert!(
        body(ok).contains("m=audio 20000 RTP/AVP 8 101"),
        "{}",
        body(ok)
    );
    b.on_response(t0, &reply(to_callee, 200, "a", Some(ANSWER_PCMU)));
    assert_eq!(methods(&drain(&mut b)), ["ACK"]);

    // The same offer again moves nothing (a refresh); PCMU again moves it
    // back.
    let again = with_sdp(from_caller("INVITE", &our_tag, 3), &pcma_only);
    assert!(b.on_request(t0, &TxKey::server(&again).unwrap(), &again, flow(5080)));
    assert_eq!(methods(&drain(&mut b)), ["200"]);
    let pcmu = CALLER_OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 0 101");
    let back = with_sdp(from_caller("INVITE", &our_tag, 4), &pcmu);
    assert!(b.on_request(t0, &TxKey::server(&back).unwrap(), &back, flow(5080)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["INVITE", "update-media", "200"]);
    let CallOutput::Notice(Notice::UpdateMedia { media, .. }) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(media.format.pt, 0);
}

#[test]
fn a_callee_moving_its_media_is_followed_and_a_hold_moves_nothing() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    drain(&mut b);
    let reinvite = |cseq, sdp: &str| with_sdp(from_callee(&inv[0], "INVITE", cseq), sdp);
    // Held by c=0.0.0.0: answered, nothing moves.
    let hold = reinvite(
        5,
        &ANSWER_PCMU.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"),
    );
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5070)));
    assert_eq!(methods(&drain(&mut b)), ["hold-Callee:true", "200"]);
    // Moved to another port: its media follows.
    let moved = reinvite(6, &ANSWER_PCMU.replace("m=audio 40000", "m=audio 40100"));
    assert!(b.on_request(t0, &TxKey::server(&moved).unwrap(), &moved, flow(5070)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["update-media", "hold-Callee:false", "200"]);
    let CallOutput::Notice(Notice::UpdateMedia { party, media, .. }) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(*party, Party::Callee);
    assert_eq!(media.remote_rtp, Some("127.0.0.1:40100".parse().unwrap()));
}

#[test]
fn an_sdes_callers_hold_keeps_our_key_and_moves_no_media() {
    use crate::media::srtp::{MasterKey, Suite};
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let theirs = MasterKey::generate(Suite::AesCm128HmacSha1_80);
    let savp = CALLER_OFFER.replace(
        "RTP/AVP 8 0 101\r\n",
        &format!(
            "RTP/SAVP 8 0 101\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\n",
            theirs.to_inline()
        ),
    );
    b.dial_sip(
        t0,
        sip_dial(with_sdp(caller_invite(), &savp)),
        vec![target(5070)],
        vec![],
    );
    let out = drain(&mut b);
    let [CallOutput::Request(inv, _)] = out.as_slice() else {
        panic!("{out:?}")
    };
    b.sent(inv, TxKey::server(inv).unwrap());
    b.on_response(t0, &reply(inv, 200, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    let CallOutput::Respond(_, ok) = &out[1] else {
        panic!("{out:?}")
    };
    let crypto = |m: &Message| {
        body(m)
            .lines()
            .find(|l| l.starts_with("a=crypto:1 "))
            .map(str::to_string)
    };
    let ours = crypto(ok).expect("our answer carries our key");
    assert!(body(ok).contains("RTP/SAVP"), "{}", body(ok));
    let our_tag = tag_of_ok(ok);
    assert!(b.on_ack(t0, &from_caller("ACK", &our_tag, 1)));

    // A hold with the same key: answered with our key again, so the
    // media keeps its SRTP contexts (only the callee is re-offered).
    let hold = savp.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    let hold = with_sdp(from_caller("INVITE", &our_tag, 2), &hold);
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5080)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["INVITE", "hold-Caller:true", "200"]);
    let CallOutput::Respond(_, ok) = &out[2] else {
        panic!("{out:?}")
    };
    assert_eq!(crypto(ok), Some(ours));
}

#[test]
fn a_callees_answer_to_our_re_invite_that_moves_its_port_is_followed() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, our_tag) = connected_sip_call(&mut b, t0);
    let hold = hold_from_caller(&our_tag, 2);
    let reinvite = &passed_on(&mut b, t0, &hold);
    // The same answer again moves nothing.
    b.on_response(t0, &reply(reinvite, 200, "a", Some(ANSWER_PCMU)));
    assert_eq!(methods(&drain(&mut b)), ["ACK"]);
    // The resume's answer names another port: the callee's media follows.
    let resume = with_sdp(from_caller("INVITE", &our_tag, 3), CALLER_OFFER);
    let reinvite = &passed_on(&mut b, t0, &resume);
    let moved = ANSWER_PCMU.replace("m=audio 40000", "m=audio 40100");
    b.on_response(t0, &reply(reinvite, 200, "a", Some(&moved)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["update-media", "ACK"]);
    let CallOutput::Notice(Notice::UpdateMedia { party, media, .. }) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(*party, Party::Callee);
    assert_eq!(media.remote_rtp, Some("127.0.0.1:40100".parse().unwrap()));
    // An answer we cannot read changes nothing.
    let again = with_sdp(
        from_caller("INVITE", &our_tag, 4),
        &CALLER_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendrecv\r\n"),
    );
    let reinvite = &passed_on(&mut b, t0, &again);
    b.on_response(t0, &reply(reinvite, 200, "a", Some(ANSWER_G729)));
    assert_eq!(methods(&drain(&mut b)), ["ACK"]);
}

#[test]
fn a_callees_answer_holding_the_call_counts_as_its_hold() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, our_tag) = connected_sip_call(&mut b, t0);
    // The caller holds; the callee answers inactive: both hold.
    let hold = hold_from_caller(&our_tag, 2);
    let reinvite = &passed_on(&mut b, t0, &hold);
    let inactive = ANSWER_PCMU.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
    b.on_response(t0, &reply(reinvite, 200, "a", Some(&inactive)));
    assert_eq!(methods(&drain(&mut b)), ["hold-Callee:true", "ACK"]);
    // The resume's sendrecv answer takes the callee's hold off.
    let resume = with_sdp(from_caller("INVITE", &our_tag, 3), CALLER_OFFER);
    let reinvite = &passed_on(&mut b, t0, &resume);
    b.on_response(t0, &reply(reinvite, 200, "a", Some(ANSWER_PCMU)));
    assert_eq!(methods(&drain(&mut b)), ["hold-Callee:false", "ACK"]);
}

/// Sends the SIP caller's re-offer `req`; returns the re-INVITE we pass
/// on to the callee.
fn passed_on(b: &mut B2bua, t0: Instant, req: &Message) -> Message {
    assert!(b.on_request(t0, &TxKey::server(req).unwrap(), req, flow(5080)));
    let out = drain(b);
    let Some(CallOutput::Request(reinvite, _)) = out.first() else {
        panic!("{out:?}")
    };
    reinvite.clone()
}
