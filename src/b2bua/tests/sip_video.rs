//! Video between two SIP endpoints on simulated time: the callee is
//! offered the caller's own formats, the caller's answer takes the one the
//! callee picked (relayed), a declined video stays declined, a hold keeps
//! the video section, and keyframe INFOs cross between the sides.

use super::*;

/// The caller's offer: PCMA, then H.264 in packetization modes 0 and 1
/// and VP8 (as baresip and many room systems offer them).
fn video_offer() -> String {
    format!(
        "{CALLER_OFFER}m=video 30002 RTP/AVP 96 97 100\r\n\
         a=rtpmap:96 H264/90000\r\na=fmtp:96 profile-level-id=42801f\r\n\
         a=rtpmap:97 H264/90000\r\na=fmtp:97 profile-level-id=42801f;packetization-mode=1\r\n\
         a=rtpmap:100 VP8/90000\r\n"
    )
}

/// The callee's answer: PCMU and, when `video` is some, that video
/// section (`m=video ...` onward).
fn answer_with(video: &str) -> String {
    format!("{ANSWER_PCMU}{video}")
}

/// A SIP caller offering [`video_offer`] calls one SIP callee (5070);
/// returns our INVITE to it.
fn dial_with_video(b: &mut B2bua, now: Instant) -> Message {
    dial_offering(b, now, &video_offer())
}

/// [`dial_with_video`], the caller offering `offer`.
fn dial_offering(b: &mut B2bua, now: Instant, offer: &str) -> Message {
    let invite = caller_invite_with(offer);
    let dial = sip_dial(invite);
    let theirs = dial.caller_offer.clone().unwrap();
    let formats = crate::b2bua::caller_video_formats(&theirs);
    let offer = dial.offer.clone().with_video_formats(formats, 40006);
    // As the gateway prints it for the callee.
    let callee = target_offering(5070, &offer);
    let dial = SipDial {
        offer,
        video: Some((40004, Vec::new())),
        ..dial
    };
    b.dial_sip(now, dial, vec![callee], Vec::new());
    let out = drain(b);
    let [CallOutput::Request(inv, _)] = out.as_slice() else {
        panic!("{out:?}")
    };
    b.sent(inv, TxKey::server(inv).unwrap());
    inv.clone()
}

/// The caller's and the callee's video in the StartMedia of `out`.
fn started_video(out: &[CallOutput]) -> (Option<Negotiated>, Option<Negotiated>) {
    let Some(CallOutput::Notice(Notice::StartMedia {
        caller: CallerMedia::Sip(caller),
        callee: CalleeMedia::Sip(callee),
        ..
    })) = out
        .iter()
        .find(|o| matches!(o, CallOutput::Notice(Notice::StartMedia { .. })))
    else {
        panic!("{out:?}")
    };
    (caller.video.clone(), callee.video.clone())
}

/// Our 200 to the caller in `out`.
fn ok_to_caller(out: &[CallOutput]) -> Message {
    out.iter()
        .find_map(|o| match o {
            CallOutput::Respond(_, m) if m.status() == Some(200) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{out:?}"))
}

#[test]
fn the_callee_is_offered_the_callers_formats_and_its_pick_is_answered_to_the_caller() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial_with_video(&mut b, t0);
    // One H.264 format (mode 1, which our answer would take) and VP8, as
    // the caller wrote them, on the callee's video port.
    let offer = body(&inv);
    assert!(
        offer.contains("m=video 40006 RTP/AVP 97 100\r\n"),
        "{offer}"
    );
    assert!(
        offer.contains("a=fmtp:97 profile-level-id=42801f;packetization-mode=1\r\n"),
        "{offer}"
    );
    assert!(!offer.contains("a=rtpmap:96"), "{offer}");

    // The callee takes H.264 (without RTCP feedback).
    let answer = answer_with(
        "m=video 31002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n\
         a=fmtp:97 profile-level-id=42801f;packetization-mode=1\r\n",
    );
    b.on_response(t0, &reply(&inv, 200, "a", Some(&answer)));
    let out = drain(&mut b);
    let ok = body(&ok_to_caller(&out));
    assert!(ok.contains("m=video 40004 RTP/AVP 97\r\n"), "{ok}");
    assert!(ok.contains("packetization-mode=1"), "{ok}");
    let (caller, callee) = started_video(&out);
    let (caller, callee) = (caller.unwrap(), callee.unwrap());
    assert_eq!((caller.format.pt, callee.format.pt), (97, 97));
    assert_eq!(caller.remote_rtp, Some("127.0.0.1:30002".parse().unwrap()));
    assert!(!callee.keyframe_fb, "no a=rtcp-fb: keyframes by INFO");

    // The callee asks for a keyframe by INFO: the media is told which side
    // asked, and asks the caller by INFO in turn.
    let our_tag = crate::sip::dialog::tag_of(&ok_to_caller(&out), "To").unwrap();
    assert!(b.on_ack(t0, &from_caller("ACK", &our_tag, 1)));
    let mut info = from_callee(&inv, "INFO", 2);
    info.push_header("Content-Type", crate::media::keyframe::MEDIA_CONTROL_TYPE);
    info.body = Bytes::from(crate::media::keyframe::PICTURE_FAST_UPDATE);
    assert!(b.on_request(t0, &TxKey::server(&info).unwrap(), &info, flow(5070)));
    let out = drain(&mut b);
    assert!(
        out.iter().any(|o| matches!(
            o,
            CallOutput::Notice(Notice::KeyframeWanted {
                from: Party::Callee,
                ..
            })
        )),
        "{out:?}"
    );
    b.ask_keyframe("sip-1", Party::Caller);
    let out = drain(&mut b);
    let [CallOutput::Request(to_caller, f)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(to_caller.method(), Some(Method::Info));
    assert_eq!(to_caller.call_id(), "caller-call");
    assert_eq!(f.remote.port(), 5080);
}

/// The caller ACKs our `ok`; then the callee, answered by `answer` to
/// our `inv`, holds with it sendonly. Returns the re-INVITE we send the
/// caller.
fn acked_then_held(
    b: &mut B2bua,
    t0: Instant,
    (ok, inv): (&Message, &Message),
    answer: &str,
) -> Message {
    let our_tag = crate::sip::dialog::tag_of(ok, "To").unwrap();
    assert!(b.on_ack(t0, &from_caller("ACK", &our_tag, 1)));
    let hold = reinvite_from_callee(inv, &answer.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"));
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5070)));
    let out = drain(b);
    let Some(CallOutput::Request(to_caller, _)) = out.first() else {
        panic!("{out:?}")
    };
    to_caller.clone()
}

#[test]
fn a_callee_taking_vp8_gets_the_caller_answered_in_vp8_and_a_hold_keeps_the_video() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial_with_video(&mut b, t0);
    let answer = answer_with(
        "m=video 31002 RTP/AVP 100\r\na=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 nack pli\r\n",
    );
    b.on_response(t0, &reply(&inv, 200, "a", Some(&answer)));
    let out = drain(&mut b);
    let ok = ok_to_caller(&out);
    assert!(
        body(&ok).contains("m=video 40004 RTP/AVP 100\r\n"),
        "{}",
        body(&ok)
    );
    let (caller, callee) = started_video(&out);
    assert_eq!(caller.unwrap().format.pt, 100);
    assert!(callee.unwrap().keyframe_fb);
    // The callee holds: the caller's re-offer keeps its video section,
    // on our port, in the agreed format, sendonly like the audio.
    let reoffer = body(&acked_then_held(&mut b, t0, (&ok, &inv), &answer));
    assert!(
        reoffer.contains("m=video 40004 RTP/AVP 100\r\n"),
        "{reoffer}"
    );
    assert_eq!(reoffer.matches("a=sendonly").count(), 2, "{reoffer}");
}

#[test]
fn a_re_offer_to_the_caller_keeps_its_extra_sections_refused_in_their_places() {
    // A room system offering content (a second video) and BFCP, its main
    // video first: we answer its audio and main video and refuse the
    // rest, and our re-offer (the callee's hold) keeps all four sections
    // in that order (RFC 3264 8), the refused ones still refused.
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (audio, video) = video_offer()
        .split_once("m=video")
        .map(|(a, v)| (a.to_string(), format!("m=video{v}")))
        .unwrap();
    let (head, audio) = audio.split_at(audio.find("m=audio").unwrap());
    let offer = format!(
        "{head}{video}{audio}m=video 30004 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n\
         a=content:slides\r\nm=application 30006 UDP/BFCP *\r\n"
    );
    let inv = dial_offering(&mut b, t0, &offer);
    let answer = answer_with("m=video 31002 RTP/AVP 100\r\na=rtpmap:100 VP8/90000\r\n");
    b.on_response(t0, &reply(&inv, 200, "a", Some(&answer)));
    let out = drain(&mut b);
    let ok = ok_to_caller(&out);
    let m_lines = |sdp: &str| -> Vec<String> {
        sdp.lines()
            .filter(|l| l.starts_with("m="))
            .map(str::to_string)
            .collect()
    };
    let answered = [
        "m=video 40004 RTP/AVP 100",
        "m=audio 20000 RTP/AVP 0 101",
        "m=video 0 RTP/AVP 97",
        "m=application 0 UDP/BFCP *",
    ];
    assert_eq!(m_lines(&body(&ok)), answered, "{}", body(&ok));
    let to_caller = acked_then_held(&mut b, t0, (&ok, &inv), &answer);
    let reoffer = body(&to_caller);
    assert_eq!(m_lines(&reoffer), answered, "{reoffer}");
    assert_eq!(reoffer.matches("a=sendonly").count(), 2, "{reoffer}");

    // The caller's answer, laid out the same way, is read where its
    // audio is: it moved its audio port, and the media follows.
    let moved = format!(
        "{head}{video}{}m=video 0 RTP/AVP 97\r\nm=application 0 UDP/BFCP *\r\n",
        audio.replace("m=audio 30000", "m=audio 30010")
    );
    b.on_response(t0, &reply(&to_caller, 200, "caller", Some(&moved)));
    let out = drain(&mut b);
    let Some(CallOutput::Notice(Notice::UpdateMedia { party, media, .. })) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(*party, Party::Caller);
    assert_eq!(media.remote_rtp, Some("127.0.0.1:30010".parse().unwrap()));
}

#[test]
fn a_callee_declining_video_gets_the_callers_video_declined() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial_with_video(&mut b, t0);
    assert!(body(&inv).contains("m=video 40006 "), "{}", body(&inv));
    let answer = answer_with("m=video 0 RTP/AVP 97\r\n");
    b.on_response(t0, &reply(&inv, 200, "a", Some(&answer)));
    let out = drain(&mut b);
    let ok = body(&ok_to_caller(&out));
    assert!(ok.contains("m=video 0 "), "{ok}");
    let (caller, callee) = started_video(&out);
    assert!(caller.is_none() && callee.is_none());
}

#[test]
fn early_media_with_video_answers_the_callers_video_in_the_183_and_the_200_repeats_it() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial_with_video(&mut b, t0);
    let answer = answer_with(
        "m=video 31002 RTP/AVP 100\r\na=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 nack pli\r\n",
    );
    b.on_response(t0, &reply(&inv, 183, "a", Some(&answer)));
    let out = drain(&mut b);
    let progress = out
        .iter()
        .find_map(|o| match o {
            CallOutput::Respond(_, m) if m.status() == Some(183) => Some(body(m)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(
        progress.contains("m=video 40004 RTP/AVP 100\r\n"),
        "{progress}"
    );
    let (caller, callee) = started_video(&out);
    assert_eq!(
        (caller.unwrap().format.pt, callee.unwrap().format.pt),
        (100, 100)
    );
    // The media asks the callee for a keyframe by INFO during early
    // media: it waits for the answer.
    b.ask_keyframe("sip-1", Party::Callee);
    assert!(drain(&mut b).is_empty());
    // The same answer in the 200: the caller's 200 repeats the 183's SDP,
    // and the INFO goes to the callee.
    b.on_response(t0, &reply(&inv, 200, "a", Some(&answer)));
    let out = drain(&mut b);
    assert_eq!(body(&ok_to_caller(&out)), progress);
    let info = out
        .iter()
        .find_map(|o| match o {
            CallOutput::Request(m, f) if m.method() == Some(Method::Info) => Some((m, f)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(
        (info.0.call_id(), info.1.remote.port()),
        (inv.call_id(), 5070)
    );
}
