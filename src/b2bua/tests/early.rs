//! Early media on simulated time: a callee's 18x with SDP bridges media to
//! a browser caller before the answer; the 2xx keeps it or moves it.

use super::*;

/// ANSWER_PCMU on another port: another fork's (or a changed) answer.
fn answer_pcmu_at(port: u16) -> String {
    ANSWER_PCMU.replace("m=audio 40000", &format!("m=audio {port}"))
}

#[test]
fn a_183_with_sdp_bridges_early_media_which_the_same_answer_keeps() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070]);
    // A 180 without SDP rings; the 183 with SDP starts the media.
    b.on_response(t0, &reply(&inv[0], 180, "a", None));
    assert_eq!(methods(&drain(&mut b)), ["ringing"]);
    b.on_response(t0, &reply(&inv[0], 183, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["media"]);
    let CallOutput::Notice(Notice::StartMedia {
        callee: CalleeMedia::Sip(a),
        caller: CallerMedia::Browser(PeerId(7)),
        ..
    }) = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(a.audio.remote_rtp, Some("127.0.0.1:40000".parse().unwrap()));
    // Another 183 changes nothing; the 200 with the same SDP connects
    // without touching the media.
    b.on_response(t0, &reply(&inv[0], 183, "a", Some(ANSWER_PCMU)));
    assert!(drain(&mut b).is_empty());
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    assert_eq!(methods(&drain(&mut b)), ["ACK", "connected"]);
}

#[test]
fn the_answer_moves_early_media_to_another_fork_or_address() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070, 5072]);
    b.on_response(t0, &reply(&inv[0], 183, "a", Some(ANSWER_PCMU)));
    assert_eq!(methods(&drain(&mut b)), ["media", "ringing"]);
    // The second fork answers: the media moves to its address.
    b.on_response(t0, &reply(&inv[1], 200, "b", Some(&answer_pcmu_at(40010))));
    let out = drain(&mut b);
    assert_eq!(
        methods(&out),
        ["ACK", "CANCEL", "update-media", "connected"]
    );
    let Some(CallOutput::Notice(Notice::UpdateMedia { media: callee, .. })) = out.get(2) else {
        panic!("{out:?}")
    };
    assert_eq!(callee.remote_rtp, Some("127.0.0.1:40010".parse().unwrap()));

    // A 2xx from the early fork whose SDP moved is an update too.
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 183, "a", Some(ANSWER_PCMU)));
    drain(&mut b);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(&answer_pcmu_at(40020))));
    assert_eq!(
        methods(&drain(&mut b)),
        ["ACK", "update-media", "connected"]
    );
}

#[test]
fn early_media_ends_with_a_failure_and_bad_early_sdp_is_ignored() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070]);
    // An early answer in a codec we did not offer starts nothing.
    b.on_response(t0, &reply(&inv[0], 183, "a", Some(ANSWER_G729)));
    assert_eq!(methods(&drain(&mut b)), ["ringing"]);
    b.on_response(t0, &reply(&inv[0], 183, "a", Some(ANSWER_PCMU)));
    assert_eq!(methods(&drain(&mut b)), ["media"]);
    // The announcement ends in 486: the call and its media end.
    b.on_response(t0, &reply(&inv[0], 486, "a", None));
    assert_eq!(methods(&drain(&mut b)), ["ended:sip:486", "release"]);
}

/// A SIP caller's INVITE without SDP to one callee on 5070; the INVITE
/// sent to it.
fn dial_late_offer(b: &mut B2bua, now: Instant) -> Message {
    dial_late_offer_with(b, now, sip_dial(caller_invite()).offer)
}

/// [`dial_late_offer`], the callee offered `offer`.
fn dial_late_offer_with(b: &mut B2bua, now: Instant, offer: Offer) -> Message {
    b.dial_sip(
        now,
        SipDial {
            caller_offer: None,
            offer,
            ..sip_dial(caller_invite())
        },
        vec![target(5070)],
        vec![],
    );
    let out = drain(b);
    let [CallOutput::Request(inv, _)] = out.as_slice() else {
        panic!("{out:?}")
    };
    inv.clone()
}

/// The caller's ACK to our 200 `ok`, carrying `sdp`.
fn ack_with(ok: &Message, sdp: Option<&str>) -> Message {
    let ack = from_caller("ACK", &tag_of_ok(ok), 1);
    match sdp {
        Some(sdp) => with_sdp(ack, sdp),
        None => ack,
    }
}

#[test]
fn a_late_offer_gets_ours_in_the_200_and_its_ack_answer_starts_the_media() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial_late_offer(&mut b, t0);
    b.on_response(t0, &reply(&inv, 200, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    // The callee is ACKed, the caller gets our offer: the callee's PCMU
    // first, then the rest we offered; no media until the caller answers.
    assert_eq!(methods(&out), ["ACK", "200", "connected"]);
    let CallOutput::Respond(_, ok) = &out[1] else {
        panic!()
    };
    assert!(
        body(ok).contains("m=audio 20000 RTP/AVP 0 8 101\r\n"),
        "{}",
        body(ok)
    );
    // Its ACK answers PCMU: caller and callee media start.
    let answer = ANSWER_PCMU.replace("40000", "30000");
    assert!(b.on_ack(t0, &ack_with(ok, Some(&answer))));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["media"]);
    let CallOutput::Notice(Notice::StartMedia {
        caller: CallerMedia::Sip(caller),
        callee: CalleeMedia::Sip(callee),
        ..
    }) = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        caller.audio.remote_rtp,
        Some("127.0.0.1:30000".parse().unwrap())
    );
    assert_eq!((caller.audio.format.pt, callee.audio.format.pt), (0, 0));
    // A retransmitted ACK starts nothing more.
    b.on_ack(t0, &ack_with(ok, Some(&answer)));
    assert!(drain(&mut b).is_empty());
}

#[test]
fn a_late_offer_on_a_route_requiring_srtp_gets_an_sdes_offer_and_a_plain_answer_is_refused() {
    use crate::media::srtp::Suite;
    let t0 = Instant::now();
    for sdes_answer in [true, false] {
        let mut b = B2bua::default();
        let offer = Offer::audio(&[AudioCodec::Pcmu], true).with_srtp(Suite::AesCm128HmacSha1_80);
        let callee_key = offer.srtp.clone().expect("key");
        let inv = &dial_late_offer_with(&mut b, t0, offer);
        let callee = ANSWER_PCMU.replace("RTP/AVP", "RTP/SAVP").replace(
            "a=rtpmap:0",
            &format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\na=rtpmap:0",
                callee_key.to_inline()
            ),
        );
        b.on_response(t0, &reply(inv, 200, "a", Some(&callee)));
        let out = drain(&mut b);
        let CallOutput::Respond(_, ok) = &out[1] else {
            panic!("{out:?}")
        };
        // Our offer to the caller is RTP/SAVP too, with a key of its own.
        let sdp = body(ok);
        assert!(sdp.contains("m=audio 20000 RTP/SAVP 0 101\r\n"), "{sdp}");
        let ours = sdp
            .lines()
            .find_map(|l| l.strip_prefix("a=crypto:1 AES_CM_128_HMAC_SHA1_80 "))
            .expect("an SDES key");
        assert_ne!(ours, callee_key.to_inline(), "one key per leg");

        let answer = if sdes_answer {
            callee.replace("40000", "30000")
        } else {
            ANSWER_PCMU.replace("40000", "30000")
        };
        assert!(b.on_ack(t0, &ack_with(ok, Some(&answer))));
        let out = drain(&mut b);
        if sdes_answer {
            let [
                CallOutput::Notice(Notice::StartMedia {
                    caller: CallerMedia::Sip(caller),
                    ..
                }),
            ] = out.as_slice()
            else {
                panic!("{out:?}")
            };
            assert!(caller.audio.srtp.is_some(), "the caller's media is SRTP");
        } else {
            // A plain RTP answer cannot be taken: both sides are hung up.
            assert_eq!(
                methods(&out),
                ["BYE", "BYE", "ended:gateway:488", "release"]
            );
        }
    }
}

#[test]
fn a_late_offer_whose_ack_has_no_answer_is_hung_up_both_ways() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial_late_offer(&mut b, t0);
    b.on_response(t0, &reply(&inv, 200, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    let CallOutput::Respond(_, ok) = &out[1] else {
        panic!()
    };
    assert!(b.on_ack(t0, &ack_with(ok, None)));
    let out = drain(&mut b);
    assert_eq!(
        methods(&out),
        ["BYE", "BYE", "ended:gateway:488", "release"]
    );
    let CallOutput::Request(bye, _) = &out[1] else {
        panic!()
    };
    assert_eq!(bye.call_id(), "caller-call");
}

#[test]
fn a_sip_caller_gets_a_183_with_our_answer_and_the_200_repeats_it() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (key, inv) = dial_from_sip(&mut b, t0, &[5070]);
    // The callee's 183 with PCMU: the caller gets our 183 with an answer
    // in PCMU (it offered it) instead of a 180, and the relay starts.
    b.on_response(t0, &reply(&inv[0], 183, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["183", "media", "ringing"]);
    let CallOutput::Respond(k, progress) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(*k, key);
    assert_eq!(progress.header("Content-Type"), Some("application/sdp"));
    assert!(
        body(progress).contains("m=audio 20000 RTP/AVP 0 101"),
        "{}",
        body(progress)
    );
    let CallOutput::Notice(Notice::StartMedia {
        caller: CallerMedia::Sip(caller),
        callee: CalleeMedia::Sip(callee),
        ..
    }) = &out[1]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        caller.audio.remote_rtp,
        Some("127.0.0.1:30000".parse().unwrap())
    );
    assert_eq!((caller.audio.format.pt, callee.audio.format.pt), (0, 0));
    // A 180 afterwards sends nothing more to the caller.
    b.on_response(t0, &reply(&inv[0], 180, "a", None));
    assert!(drain(&mut b).is_empty());

    // The callee answers PCMA from another address: our 200 repeats the
    // 183's SDP word for word (the caller's answer may not change) and
    // only the callee's side of the media moves.
    let pcma = ANSWER_PCMU
        .replace("RTP/AVP 0", "RTP/AVP 8")
        .replace("0 PCMU", "8 PCMA")
        .replace("m=audio 40000", "m=audio 40010");
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(&pcma)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["ACK", "200", "update-media", "connected"]);
    let CallOutput::Respond(_, ok) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(body(ok), body(progress));
    let Some(CallOutput::Notice(Notice::UpdateMedia { media: callee, .. })) = out.get(2) else {
        panic!("{out:?}")
    };
    assert_eq!(callee.format.pt, 8);
}

#[test]
fn no_early_media_to_a_sip_caller_requiring_100rel_or_while_browsers_ring() {
    let t0 = Instant::now();
    // A caller that requires reliable provisionals keeps its reliable 180.
    let mut b = B2bua::default();
    let mut invite = caller_invite();
    invite.push_header("Require", "100rel");
    b.dial_sip(t0, sip_dial(invite), vec![target(5070)], vec![]);
    let out = drain(&mut b);
    let [CallOutput::Request(inv, _)] = out.as_slice() else {
        panic!("{out:?}")
    };
    b.sent(inv, TxKey::server(inv).unwrap());
    b.on_response(t0, &reply(inv, 183, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["180", "ringing"]);

    // A call that also rings a browser: the browser's answer would have
    // to take the caller's media off the relay, so the caller hears 180.
    let mut b = B2bua::default();
    let (_, inv, rung) = dial_from_sip_to(&mut b, t0, &[5070], &["alice"]);
    assert_eq!(rung.len(), 1);
    b.on_response(t0, &reply(&inv[0], 183, "a", Some(ANSWER_PCMU)));
    assert_eq!(methods(&drain(&mut b)), ["180", "ringing"]);
}
