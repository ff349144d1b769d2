//! Browsers as callees on simulated time: a SIP call rings browsers
//! registered for the alias beside its SIP contacts; the first answer
//! wins, in the browser's codec or transcoded, with the caller's video
//! where both have some; declines, cancels and late offers.

use super::*;

/// What a browser negotiates when it answers in `codec` (with
/// telephone-event at 8 kHz).
fn browser_formats(codec: &str, clock: u32, pt: u8) -> Vec<PeerFormat> {
    let key = |name: &str, clock_rate| causeway_codecs::CodecKey {
        name: name.into(),
        clock_rate,
        channels: if name == "opus" { 2 } else { 1 },
    };
    vec![
        PeerFormat {
            kind: StreamKind::Audio,
            pt,
            codec: key(codec, clock),
            answered: true,
        },
        PeerFormat {
            kind: StreamKind::Audio,
            pt: 126,
            codec: key("telephone-event", 8000),
            answered: true,
        },
    ]
}

#[test]
fn the_sip_side_is_offered_the_browsers_codecs_first_then_what_we_transcode_to() {
    use AudioCodec::*;
    let opus_only = browser_formats("opus", 48000, 111);
    // An Opus-only WebRTC client still reaches a G.711 phone.
    assert_eq!(
        sip_offer_codecs(&opus_only, &[], true),
        [Opus, G722, Pcmu, Pcma]
    );
    // Passthrough only: nothing the browser lacks.
    assert_eq!(sip_offer_codecs(&opus_only, &[], false), [Opus]);
    // The rule's list limits and orders each group; the browser's own
    // codecs (relayable) come first whatever the rule's order.
    let rule = ["PCMA".to_string(), "opus".to_string()];
    assert_eq!(sip_offer_codecs(&opus_only, &rule, true), [Opus, Pcma]);
    let mut chrome = browser_formats("opus", 48000, 111);
    chrome.extend(browser_formats("PCMU", 8000, 0));
    chrome.extend(browser_formats("PCMA", 8000, 8));
    assert_eq!(sip_offer_codecs(&chrome, &rule, true), [Pcma, Opus]);
    assert_eq!(
        sip_offer_codecs(&chrome, &[], true),
        [Opus, Pcmu, Pcma, G722]
    );
    // A rule naming nothing the gateway has leaves nothing to offer.
    assert!(sip_offer_codecs(&chrome, &["G729".to_string()], true).is_empty());
}

#[test]
fn a_browsers_opus_is_limited_only_where_the_sip_side_cannot_take_opus() {
    use AudioCodec::*;
    let opus_only = browser_formats("opus", 48000, 111);
    // Sure to be transcoded: the SIP side's best rate (G.722 carries 16 kHz).
    assert_eq!(opus_rate_limit(&opus_only, &[Pcma]), Some((111, 8000)));
    assert_eq!(
        opus_rate_limit(&opus_only, &[Pcmu, G722, Pcma]),
        Some((111, 16000))
    );
    // The SIP side may answer Opus: relayed untouched, so no limit.
    assert_eq!(opus_rate_limit(&opus_only, &[Opus, Pcma]), None);
    // A browser sending G.711 has no Opus to limit.
    let pcmu = browser_formats("PCMU", 8000, 0);
    assert_eq!(opus_rate_limit(&pcmu, &[Pcma]), None);
    assert_eq!(opus_rate_limit(&opus_only, &[]), None);
}

#[test]
fn a_sip_call_rings_a_registered_browser_which_answers_and_wins() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (key, inv, rung) = dial_from_sip_to(&mut b, t0, &[5070], &["p-1"]);
    assert_eq!(inv.len(), 1, "the SIP contact is rung too");
    assert_eq!(rung.len(), 1);
    let (fork, participant, audio) = &rung[0];
    assert_eq!(participant, "p-1");
    assert_eq!(*audio, [AudioCodec::Pcma, AudioCodec::Pcmu]);

    // The browser was told: the caller hears ringing.
    b.browser_offered(t0, fork, Ok(PeerId(7)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["180", "ringing"]);
    let CallOutput::Respond(k, _) = &out[0] else {
        panic!()
    };
    assert_eq!(*k, key);

    // It answers in PCMU, which the caller offered: relayed.
    b.browser_answered(t0, fork, browser_formats("PCMU", 8000, 0));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["200", "media", "connected", "connected"]);
    let CallOutput::Respond(_, ok) = &out[0] else {
        panic!()
    };
    assert!(
        body(ok).contains("m=audio 20000 RTP/AVP 0 101"),
        "{}",
        body(ok)
    );
    let CallOutput::Notice(Notice::StartMedia {
        caller: CallerMedia::Sip(agreed),
        callee: CalleeMedia::Browser(peer, _),
        ..
    }) = &out[1]
    else {
        panic!("{:?}", out[1])
    };
    assert_eq!((agreed.audio.format.pt, *peer), (0, PeerId(7)));
    let ids: Vec<&str> = out[2..]
        .iter()
        .map(|o| match o {
            CallOutput::Notice(Notice::Event(id, _)) => id.as_str(),
            _ => "",
        })
        .collect();
    assert_eq!(ids, ["sip-1", fork.as_str()], "the browser hears of it too");

    // The SIP fork that had not rung yet is cancelled once it does.
    b.on_response(t0, &reply(&inv[0], 180, "a", None));
    assert_eq!(methods(&drain(&mut b)), ["CANCEL"]);

    // The caller hangs up: the browser's call ends and its peer closes.
    b.on_ack(t0, &from_caller("ACK", &tag_of_ok(ok), 1));
    let bye = from_caller("BYE", &tag_of_ok(ok), 2);
    assert!(b.on_request(t0, &TxKey::server(&bye).unwrap(), &bye, flow(5080)));
    let out = drain(&mut b);
    assert_eq!(
        methods(&out),
        ["200", "ended:caller:0", "ended:caller:0", "release"]
    );
    let CallOutput::Notice(Notice::Release { peer, .. }) = &out[3] else {
        panic!()
    };
    assert_eq!(*peer, Some(PeerId(7)));
}

/// The caller's H.264 video section (after [`CALLER_OFFER`]'s audio).
const CALLER_VIDEO: &str = "m=video 30002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                            a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n";

#[test]
fn a_sip_callers_video_goes_to_the_browser_that_answers_relayed_or_transcoded() {
    use causeway_codecs::video::VideoCodec::{H264, Vp8};
    let t0 = Instant::now();
    let offer = format!("{CALLER_OFFER}{CALLER_VIDEO}");
    // The browser answers H.264 (relayed), VP8 (transcoded), or no video.
    for browser_video in [Some(("H264", 108)), Some(("VP8", 96)), None] {
        let mut b = B2bua::default();
        let dial = SipDial {
            video: Some((20002, vec![H264, Vp8])),
            ..sip_dial(caller_invite_with(&offer))
        };
        let browsers = vec![BrowserTarget {
            participant: "p-1".into(),
        }];
        b.dial_sip(t0, dial, Vec::new(), browsers);
        let out = drain(&mut b);
        let [CallOutput::Notice(Notice::RingBrowser { fork, video, .. })] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(*video, [H264, Vp8], "the browser is offered video");
        let fork = fork.clone();
        b.browser_offered(t0, &fork, Ok(PeerId(7)));
        drain(&mut b);

        let mut formats = browser_formats("PCMU", 8000, 0);
        formats.extend(browser_video.map(|(name, pt)| PeerFormat {
            kind: StreamKind::Video,
            pt,
            codec: causeway_codecs::CodecKey {
                name: name.into(),
                clock_rate: 90000,
                channels: 1,
            },
            answered: true,
        }));
        b.browser_answered(t0, &fork, formats);
        let out = drain(&mut b);
        assert_eq!(methods(&out), ["200", "media", "connected", "connected"]);
        let CallOutput::Respond(_, ok) = &out[0] else {
            panic!()
        };
        let CallOutput::Notice(Notice::StartMedia {
            caller: CallerMedia::Sip(agreed),
            ..
        }) = &out[1]
        else {
            panic!("{:?}", out[1])
        };
        let sdp = body(ok);
        if browser_video.is_none() {
            assert!(sdp.contains("m=video 0 "), "video declined: {sdp}");
            assert!(agreed.video.is_none());
            continue;
        }
        // Whatever the browser sends, the caller gets its own H.264 on our
        // video port.
        assert!(sdp.contains("m=video 20002 RTP/AVP 96\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 H264/90000"), "{sdp}");
        let video = agreed.video.as_ref().expect("video agreed");
        assert_eq!(video.format.pt, 96);
        assert_eq!(video.remote_rtp, Some("127.0.0.1:30002".parse().unwrap()));

        // The caller holds: our answer keeps the video section, on hold too.
        b.on_ack(t0, &from_caller("ACK", &tag_of_ok(ok), 1));
        let hold = with_sdp(
            from_caller("INVITE", &tag_of_ok(ok), 2),
            &offer.replace("RTP/AVP 96\r\n", "RTP/AVP 96\r\na=sendonly\r\n"),
        );
        assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5080)));
        let out = drain(&mut b);
        let Some(CallOutput::Respond(_, ok)) = out.first() else {
            panic!("{out:?}")
        };
        let sdp = body(ok);
        let video = &sdp[sdp.find("m=video").expect("video kept")..];
        assert!(video.starts_with("m=video 20002 RTP/AVP 96\r\n"), "{sdp}");
        assert!(video.contains("a=recvonly"), "{sdp}");
    }
}

#[test]
fn browsers_are_offered_the_callers_video_codecs_then_what_we_transcode_to() {
    use super::codecs::caller_video_answer;
    use causeway_codecs::video::VideoCodec::{H264, Vp8};
    let offer = |video: &str| crate::sdp::parse(&format!("{CALLER_OFFER}{video}")).unwrap();
    let h264 = offer(CALLER_VIDEO);
    assert_eq!(caller_video_codecs(&h264, true), [H264, Vp8]);
    assert_eq!(caller_video_codecs(&h264, false), [H264]);
    assert_eq!(caller_video_answer(&h264, Vp8), Some(H264), "transcoded");
    assert_eq!(caller_video_answer(&h264, H264), Some(H264), "relayed");
    // VP8 and H.264 offered: the browser's pick is relayed.
    let both = offer(
        &CALLER_VIDEO
            .replace("RTP/AVP 96", "RTP/AVP 100 96")
            .replace("a=rtpmap:96", "a=rtpmap:100 VP8/90000\r\na=rtpmap:96"),
    );
    assert_eq!(caller_video_codecs(&both, false), [Vp8, H264]);
    assert_eq!(caller_video_answer(&both, H264), Some(H264));
    // A disabled section, or none, offers browsers no video.
    let off = offer(&CALLER_VIDEO.replace("m=video 30002", "m=video 0"));
    assert!(caller_video_codecs(&off, true).is_empty());
    assert!(caller_video_codecs(&offer(""), true).is_empty());
    assert_eq!(caller_video_answer(&off, Vp8), None);
}

#[test]
fn an_opus_browser_is_transcoded_to_the_callers_first_codec() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, _, rung) = dial_from_sip_to(&mut b, t0, &[], &["p-1"]);
    let fork = &rung[0].0;
    b.browser_offered(t0, fork, Ok(PeerId(3)));
    drain(&mut b);
    b.browser_answered(t0, fork, browser_formats("opus", 48000, 111));
    let out = drain(&mut b);
    let CallOutput::Respond(_, ok) = &out[0] else {
        panic!()
    };
    assert_eq!(ok.status(), Some(200));
    assert!(
        body(ok).contains("m=audio 20000 RTP/AVP 8 101"),
        "{}",
        body(ok)
    );
}

#[test]
fn browsers_that_decline_or_cannot_be_told_fail_the_call_with_603() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (key, _, rung) = dial_from_sip_to(&mut b, t0, &[], &["p-1", "p-2"]);
    b.browser_offered(t0, &rung[0].0, Err(480));
    assert!(drain(&mut b).is_empty(), "the other browser still rings");
    b.browser_offered(t0, &rung[1].0, Ok(PeerId(9)));
    assert_eq!(methods(&drain(&mut b)), ["180", "ringing"]);
    // Its user declines (the page hangs up before answering).
    b.browser_gone(t0, &rung[1].0, "hangup");
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["603", "ended:browser:603", "release"]);
    let CallOutput::Respond(k, _) = &out[0] else {
        panic!()
    };
    assert_eq!(*k, key);
    assert!(b.is_empty());
    // An answer after the call is over only releases its peer.
    b.browser_answered(t0, &rung[1].0, browser_formats("PCMU", 8000, 0));
    assert!(drain(&mut b).is_empty());
}

#[test]
fn a_caller_cancelling_stops_the_ringing_browser_and_a_late_offer_is_released() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (key, _, rung) = dial_from_sip_to(&mut b, t0, &[], &["p-1", "p-2"]);
    b.browser_offered(t0, &rung[0].0, Ok(PeerId(4)));
    drain(&mut b);
    assert!(b.on_cancel(t0, "caller-call", &key));
    let out = drain(&mut b);
    assert_eq!(
        methods(&out),
        [
            "487",
            "ended:caller:0",
            "release",
            "ended:caller:0",
            "ended:caller:487",
            "release"
        ]
    );
    let CallOutput::Notice(Notice::Release { call, peer }) = &out[2] else {
        panic!()
    };
    assert_eq!(
        (call.as_str(), *peer),
        (rung[0].0.as_str(), Some(PeerId(4)))
    );
    // The second browser's peer was still being made: it is closed as it comes.
    b.browser_offered(t0, &rung[1].0, Ok(PeerId(5)));
    let out = drain(&mut b);
    let CallOutput::Notice(Notice::Release { peer, .. }) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(*peer, Some(PeerId(5)));
}
