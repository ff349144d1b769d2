//! The call state machine on simulated time: forking, cancel, failures,
//! no answer, hang-ups from both sides, stray answers; browser and SIP
//! callers (browser callees in `browser`, and one module per subject).

mod browser;
mod early;
mod info;
mod prack;
mod reoffer;
mod resend;
mod sip_video;
mod timers;

use super::*;
use crate::sdp::Offer;
use crate::sip::Transport;
use crate::sip::msg::StartLine;
use crate::sip::uac::OfferedAt;
use crate::webrtc::StreamKind;
use causeway_codecs::registry::AudioCodec;

fn flow(port: u16) -> Flow {
    Flow {
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse().unwrap(),
        remote: format!("127.0.0.1:{port}").parse().unwrap(),
        conn: None,
    }
}

fn target(port: u16) -> InviteParams {
    target_offering(
        port,
        &Offer::audio(&[AudioCodec::Pcma, AudioCodec::Pcmu], true),
    )
}

/// The INVITE params toward a callee on `port`, offering `offer` as the
/// gateway prints it (our media at 127.0.0.1:40002).
fn target_offering(port: u16, offer: &Offer) -> InviteParams {
    let offered = OfferedAt {
        ip: "127.0.0.1".parse().unwrap(),
        port: 40002,
        video_port: offer.video.as_ref().map(|v| v.port),
        origin: (77, 1),
    };
    InviteParams {
        request_uri: format!("sip:alice@127.0.0.1:{port}"),
        to: "sip:alice@test.local".into(),
        from: "sip:browser@test.local".into(),
        display_name: "Browser".into(),
        flow: flow(port),
        via_host: "127.0.0.1:5060".into(),
        user_agent: "causeway".into(),
        sdp: offer.to_sdp(offered.ip, offered.port, 77, 1),
        offered,
        session_expires: Some(1800),
        max_forwards: 70,
    }
}

const ANSWER_PCMU: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                           m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const ANSWER_G729: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                           m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";

/// A call to `ports.len()` contacts; returns the INVITEs sent.
fn dial(b: &mut B2bua, now: Instant, ports: &[u16]) -> Vec<Message> {
    dial_with(b, now, ports, DtmfMode::Auto)
}

/// [`dial`], with digits sent to the SIP side as `dtmf` says.
fn dial_with(b: &mut B2bua, now: Instant, ports: &[u16], dtmf: DtmfMode) -> Vec<Message> {
    b.dial(
        now,
        Dial {
            id: "call-1".into(),
            peer: PeerId(7),
            offer: Offer::audio(&[AudioCodec::Opus, AudioCodec::Pcmu], true),
            dtmf,
        },
        ports.iter().map(|p| target(*p)).collect(),
    );
    let mut invites = Vec::new();
    for o in drain(b) {
        match o {
            CallOutput::Request(m, _) => {
                let key = TxKey::server(&m).unwrap();
                let key = key.for_method(Method::Invite);
                b.sent(&m, key);
                invites.push(m);
            }
            o => panic!("unexpected {o:?}"),
        }
    }
    invites
}

fn drain(b: &mut B2bua) -> Vec<CallOutput> {
    std::iter::from_fn(|| b.poll_output()).collect()
}

fn reply(invite: &Message, code: u16, tag: &str, sdp: Option<&str>) -> Message {
    let mut r = response_to(invite, code, "Reason", Some(tag), None);
    r.push_header("Contact", "<sip:alice@127.0.0.1:5070>");
    if let Some(sdp) = sdp {
        r.push_header("Content-Type", "application/sdp");
        r.body = Bytes::from(sdp.to_string());
    }
    r
}

fn methods(out: &[CallOutput]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            CallOutput::Request(m, _) => m.method().unwrap().as_str().to_string(),
            CallOutput::Transmit(..) => "ACK".into(),
            CallOutput::Respond(_, m) => m.status().unwrap().to_string(),
            CallOutput::Notice(Notice::Event(_, CallEvent::Ringing)) => "ringing".into(),
            CallOutput::Notice(Notice::Event(_, CallEvent::Connected { .. })) => "connected".into(),
            CallOutput::Notice(Notice::Event(_, CallEvent::Ended { status, by, .. })) => {
                format!("ended:{}:{}", by.as_str(), status.unwrap_or(0))
            }
            CallOutput::Notice(Notice::StartMedia { .. }) => "media".into(),
            CallOutput::Notice(Notice::Release { .. }) => "release".into(),
            CallOutput::Notice(Notice::RingBrowser { .. }) => "ring".into(),
            CallOutput::Notice(Notice::DtmfToBrowser { digit, .. }) => {
                format!("dtmf-to-browser:{}", digit.digit)
            }
            CallOutput::Notice(Notice::PlayDigit { to, digit, .. }) => {
                format!("play-to-{to:?}:{}", digit.digit)
            }
            CallOutput::Notice(Notice::KeyframeWanted { .. }) => "keyframe".into(),
            CallOutput::Notice(Notice::UpdateMedia { .. }) => "update-media".into(),
            CallOutput::Notice(Notice::Hold { party, held, .. }) => {
                format!("hold-{party:?}:{held}")
            }
            CallOutput::Abandon(_) => "abandon".into(),
        })
        .collect()
}

fn bye_from_callee(invite: &Message, local_tag: &str, remote_tag: &str) -> Message {
    let text = format!(
        "BYE sip:causeway@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye1\r\n\
         From: <sip:alice@test.local>;tag={remote_tag}\r\nTo: <sip:browser@test.local>;tag={local_tag}\r\n\
         Call-ID: {}\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n",
        invite.call_id()
    );
    Message::parse(text.as_bytes()).unwrap()
}

fn from_tag(m: &Message) -> String {
    crate::sip::msg::NameAddr::parse(m.header("From").unwrap())
        .unwrap()
        .tag()
        .unwrap()
        .to_string()
}

#[test]
fn forks_ring_the_first_answer_wins_and_the_rest_are_cancelled() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070, 5072]);
    assert_eq!(inv.len(), 2);
    assert_ne!(inv[0].call_id(), inv[1].call_id());
    assert!(inv[0].body.starts_with(b"v=0"));

    b.on_response(t0, &reply(&inv[0], 180, "a", None));
    assert_eq!(methods(&drain(&mut b)), ["ringing"]);
    // Fork 0 answers; fork 1 has sent nothing, so its CANCEL waits.
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["ACK", "media", "connected"]);
    let CallOutput::Notice(Notice::StartMedia {
        callee: CalleeMedia::Sip(sip),
        caller,
        ..
    }) = &out[1]
    else {
        panic!()
    };
    assert!(matches!(caller, CallerMedia::Browser(PeerId(7))));
    assert_eq!(sip.audio.format.pt, 0);
    // The 200 retransmitted: ACKed again, nothing else.
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    assert_eq!(methods(&drain(&mut b)), ["ACK"]);
    // Fork 1 rings now: it gets its CANCEL.
    b.on_response(t0, &reply(&inv[1], 180, "b", None));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["CANCEL"]);
    let CallOutput::Request(cancel, f) = &out[0] else {
        panic!()
    };
    assert_eq!(cancel.call_id(), inv[1].call_id());
    assert_eq!(f.remote.port(), 5072);
    b.on_response(t0, &reply(&inv[1], 487, "b", None));
    assert!(drain(&mut b).is_empty());

    // The browser hangs up: BYE to the winner only.
    b.browser_gone(t0, "call-1", "hangup");
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["BYE", "ended:browser:0", "release"]);
    let CallOutput::Request(bye, _) = &out[0] else {
        panic!()
    };
    assert_eq!(bye.call_id(), inv[0].call_id());
    assert!(b.is_empty(), "every fork settled");
}

#[test]
fn every_fork_failing_reports_the_most_telling_status() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070, 5072]);
    b.on_response(t0, &reply(&inv[0], 404, "a", None));
    assert!(drain(&mut b).is_empty(), "one fork left");
    b.on_response(t0, &reply(&inv[1], 486, "b", None));
    assert_eq!(methods(&drain(&mut b)), ["ended:sip:486", "release"]);
    assert!(b.is_empty());
    // A fork that never answers at all times out (timer B) as 408.
    let inv = dial(&mut b, t0, &[5070]);
    let key = TxKey::server(&inv[0]).unwrap().for_method(Method::Invite);
    b.on_timeout(t0, &key);
    assert_eq!(methods(&drain(&mut b)), ["ended:sip:408", "release"]);
}

#[test]
fn no_answer_cancels_ringing_forks_and_ends_with_408() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070, 5072]);
    b.on_response(t0, &reply(&inv[0], 180, "a", None));
    drain(&mut b);
    assert_eq!(b.poll_timeout(), Some(t0 + NO_ANSWER));
    b.handle_timeout(t0 + NO_ANSWER);
    assert_eq!(
        methods(&drain(&mut b)),
        ["CANCEL", "ended:gateway:408", "release"]
    );
    // The silent fork never answers: the call is forgotten after SETTLE,
    // dropping its transaction.
    b.on_response(t0, &reply(&inv[0], 487, "a", None));
    assert!(!b.is_empty());
    let settle = b.poll_timeout().unwrap();
    b.handle_timeout(settle);
    assert_eq!(methods(&drain(&mut b)), ["abandon"]);
    assert!(b.is_empty());
    assert!(!b.owns(inv[1].call_id()));
}

#[test]
fn a_late_answer_after_hangup_is_acked_and_ended() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 183, "a", None));
    drain(&mut b);
    b.browser_gone(t0, "call-1", "hangup");
    assert_eq!(
        methods(&drain(&mut b)),
        ["CANCEL", "ended:browser:0", "release"]
    );
    // The 200 crossed the CANCEL.
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["ACK", "BYE"]);
    assert!(b.is_empty());
}

#[test]
fn the_callee_refreshes_hangs_up_and_renegotiation_is_refused_without_ending_the_call() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    drain(&mut b);
    let local = from_tag(&inv[0]);
    let mut reinvite = bye_from_callee(&inv[0], &local, "a");
    reinvite.start = StartLine::Request {
        method: Method::Invite,
        uri: "sip:causeway@127.0.0.1".into(),
    };
    // Without SDP it only refreshes: our 200 offers our SDP unchanged.
    let key = TxKey::server(&reinvite).unwrap();
    assert!(b.on_request(t0, &key, &reinvite, flow(5070)));
    let out = drain(&mut b);
    let [CallOutput::Respond(_, ok)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!((ok.status(), body(ok)), (Some(200), body(&inv[0])));
    // An offer without our codec is refused; the call goes on.
    let reinvite = with_sdp(reinvite, ANSWER_G729);
    let key = TxKey::server(&reinvite).unwrap();
    assert!(b.on_request(t0, &key, &reinvite, flow(5070)));
    assert_eq!(methods(&drain(&mut b)), ["488"]);
    // A BYE with the wrong tag is not ours.
    let stranger = bye_from_callee(&inv[0], &local, "zzz");
    assert!(!b.on_request(
        t0,
        &TxKey::server(&stranger).unwrap(),
        &stranger,
        flow(5070)
    ));
    let bye = bye_from_callee(&inv[0], &local, "a");
    assert!(b.on_request(t0, &TxKey::server(&bye).unwrap(), &bye, flow(5070)));
    assert_eq!(methods(&drain(&mut b)), ["200", "ended:sip:0", "release"]);
    assert!(b.is_empty());
}

#[test]
fn an_answer_without_a_common_codec_is_hung_up_with_488() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let inv = dial(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_G729)));
    assert_eq!(
        methods(&drain(&mut b)),
        ["ACK", "BYE", "ended:gateway:488", "release"]
    );
}

#[test]
fn no_contact_ends_the_call_at_once() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let dial = Dial {
        id: "call-1".into(),
        peer: PeerId(7),
        offer: Offer::audio(&[AudioCodec::Pcmu], true),
        dtmf: DtmfMode::Auto,
    };
    b.dial(t0, dial.clone(), vec![]);
    assert_eq!(methods(&drain(&mut b)), ["ended:gateway:480", "release"]);
    assert!(b.is_empty());
    // No media port: refused before any INVITE.
    b.refuse(t0, dial, 503, "no media port free");
    assert_eq!(methods(&drain(&mut b)), ["ended:gateway:503", "release"]);
    assert!(b.is_empty());
}

const CALLER_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                            m=audio 30000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\n\
                            a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn caller_invite() -> Message {
    caller_invite_with(CALLER_OFFER)
}

/// The SIP caller's INVITE with `offer`.
fn caller_invite_with(offer: &str) -> Message {
    let text = format!(
        "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKcaller1\r\n\
         From: \"Carol\" <sip:carol@test.local>;tag=ctag\r\nTo: <sip:bob@test.local>\r\n\
         Call-ID: caller-call\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@127.0.0.1:5080>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    Message::parse(text.as_bytes()).unwrap()
}

/// A SIP caller's call as the gateway hands it over: `invite` (with the
/// caller's offer, if any) from port 5080, PCMA and PCMU offered on.
fn sip_dial(invite: Message) -> SipDial {
    let caller_offer = std::str::from_utf8(&invite.body)
        .ok()
        .filter(|b| !b.is_empty())
        .map(|b| crate::sdp::parse(b).unwrap());
    SipDial {
        id: "sip-1".into(),
        key: TxKey::server(&invite).unwrap(),
        flow: flow(5080),
        caller_offer,
        offer: Offer::audio(&[AudioCodec::Pcma, AudioCodec::Pcmu], true),
        dtmf: DtmfMode::Auto,
        media: ("127.0.0.1".parse().unwrap(), 20000),
        video: None,
        contact: "<sip:bob@127.0.0.1:5060>".into(),
        via_host: "127.0.0.1:5060".into(),
        user_agent: "causeway".into(),
        session_timer: None,
        invite,
    }
}

/// A call from a SIP caller (PCMA, PCMU, telephone-event) to one callee
/// per port; returns the caller's INVITE transaction and the INVITEs sent.
fn dial_from_sip(b: &mut B2bua, now: Instant, ports: &[u16]) -> (TxKey, Vec<Message>) {
    let (key, invites, rung) = dial_from_sip_to(b, now, ports, &[]);
    assert!(rung.is_empty());
    (key, invites)
}

/// A browser fork the B2BUA asked to ring: its id, participant, codecs.
type Rung = (String, String, Vec<AudioCodec>);

/// Like [`dial_from_sip`], also ringing browsers registered as
/// `participants`; returns the browser forks asked for too.
fn dial_from_sip_to(
    b: &mut B2bua,
    now: Instant,
    ports: &[u16],
    participants: &[&str],
) -> (TxKey, Vec<Message>, Vec<Rung>) {
    dial_from_sip_with(b, now, ports, participants, DtmfMode::Auto, None)
}

/// [`dial_from_sip_to`], with digits sent to the SIP sides as `dtmf` says
/// and the caller granted `session_timer`.
fn dial_from_sip_with(
    b: &mut B2bua,
    now: Instant,
    ports: &[u16],
    participants: &[&str],
    dtmf: DtmfMode,
    session_timer: Option<SessionExpires>,
) -> (TxKey, Vec<Message>, Vec<Rung>) {
    let dial = SipDial {
        dtmf,
        session_timer,
        ..sip_dial(caller_invite())
    };
    let key = dial.key.clone();
    b.dial_sip(
        now,
        dial,
        ports.iter().map(|p| target(*p)).collect(),
        participants
            .iter()
            .map(|p| BrowserTarget {
                participant: p.to_string(),
            })
            .collect(),
    );
    let (mut invites, mut rung) = (Vec::new(), Vec::new());
    for o in drain(b) {
        match o {
            CallOutput::Request(m, _) => {
                b.sent(&m, TxKey::server(&m).unwrap());
                invites.push(m);
            }
            CallOutput::Notice(Notice::RingBrowser {
                fork,
                participant,
                from,
                audio,
                video,
            }) => {
                assert_eq!(from, "Carol");
                assert!(video.is_empty(), "no video port, no video offered");
                rung.push((fork, participant, audio));
            }
            o => panic!("unexpected {o:?}"),
        }
    }
    (key, invites, rung)
}

/// A SIP caller's call to a SIP callee (port 5070), answered in PCMU and
/// ACKed. Returns our INVITE to the callee and our tag toward the caller.
fn connected_sip_call(b: &mut B2bua, now: Instant) -> (Message, String) {
    let (_, inv) = dial_from_sip(b, now, &[5070]);
    b.on_response(now, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    let out = drain(b);
    let CallOutput::Respond(_, ok) = &out[1] else {
        panic!("{out:?}")
    };
    let our_tag = crate::sip::dialog::tag_of(ok, "To").unwrap();
    assert!(b.on_ack(now, &from_caller("ACK", &our_tag, 1)));
    (inv[0].clone(), our_tag)
}

/// An in-dialog request from the callee that answered `invite` (with
/// tag "a"): `method`, CSeq `cseq`.
fn from_callee(invite: &Message, method: &str, cseq: u32) -> Message {
    let bye = bye_from_callee(invite, &from_tag(invite), "a").to_bytes();
    let text = String::from_utf8_lossy(&bye)
        .replace("BYE sip:", &format!("{method} sip:"))
        .replace("CSeq: 5 BYE", &format!("CSeq: {cseq} {method}"));
    Message::parse(text.as_bytes()).unwrap()
}

/// The SIP caller's re-INVITE putting the call on hold (a=sendonly).
fn hold_from_caller(our_tag: &str, cseq: u32) -> Message {
    with_sdp(
        from_caller("INVITE", our_tag, cseq),
        &CALLER_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"),
    )
}

/// An in-dialog request from the SIP caller, to our tag.
fn from_caller(method: &str, to_tag: &str, cseq: u32) -> Message {
    let text = format!(
        "{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{method}{cseq}\r\n\
         From: <sip:carol@test.local>;tag=ctag\r\nTo: <sip:bob@test.local>;tag={to_tag}\r\n\
         Call-ID: caller-call\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(text.as_bytes()).unwrap()
}

#[test]
fn a_sip_caller_hears_ringing_gets_the_callees_codec_and_hangs_up() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (key, inv) = dial_from_sip(&mut b, t0, &[5070]);
    assert_eq!(inv.len(), 1);
    b.on_response(t0, &reply(&inv[0], 180, "a", None));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["180", "ringing"]);
    let CallOutput::Respond(k, ringing) = &out[0] else {
        panic!()
    };
    assert_eq!(*k, key);
    let our_tag = crate::sip::dialog::tag_of(ringing, "To").expect("our tag");
    assert_eq!(ringing.header("Contact"), Some("<sip:bob@127.0.0.1:5060>"));

    // The callee answers PCMU, the caller's second choice: the caller is
    // answered in PCMU too (relayed), on the port reserved for it.
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["ACK", "200", "media", "connected"]);
    let CallOutput::Respond(_, ok) = &out[1] else {
        panic!()
    };
    assert_eq!(crate::sip::dialog::tag_of(ok, "To"), Some(our_tag.clone()));
    let sdp = String::from_utf8_lossy(&ok.body).to_string();
    assert!(sdp.contains("m=audio 20000 RTP/AVP 0 101"), "{sdp}");
    let CallOutput::Notice(Notice::StartMedia {
        caller,
        callee: CalleeMedia::Sip(sip),
        ..
    }) = &out[2]
    else {
        panic!()
    };
    let CallerMedia::Sip(agreed) = caller else {
        panic!("{caller:?}")
    };
    assert_eq!((agreed.audio.format.pt, sip.audio.format.pt), (0, 0));
    assert_eq!(
        agreed.audio.remote_rtp,
        Some("127.0.0.1:30000".parse().unwrap())
    );

    // Our 200 is resent until the ACK.
    b.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(methods(&drain(&mut b)), ["ACK"], "a 2xx retransmission");
    assert!(b.on_ack(t0, &from_caller("ACK", &our_tag, 1)));
    b.handle_timeout(t0 + Duration::from_secs(2));
    assert!(drain(&mut b).is_empty());

    // The caller hangs up: 200, BYE to the callee.
    let bye = from_caller("BYE", &our_tag, 2);
    assert!(b.on_request(t0, &TxKey::server(&bye).unwrap(), &bye, flow(5080)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["200", "BYE", "ended:caller:0", "release"]);
    let CallOutput::Request(bye_out, f) = &out[1] else {
        panic!()
    };
    assert_eq!(bye_out.call_id(), inv[0].call_id());
    assert_eq!(f.remote.port(), 5070);
    assert!(b.is_empty());
    assert!(!b.owns("caller-call"));
}

#[test]
fn a_callees_bye_reaches_the_sip_caller() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, inv) = dial_from_sip(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    drain(&mut b);
    let bye = bye_from_callee(&inv[0], &from_tag(&inv[0]), "a");
    assert!(b.on_request(t0, &TxKey::server(&bye).unwrap(), &bye, flow(5070)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["200", "BYE", "ended:sip:0", "release"]);
    let CallOutput::Request(to_caller, f) = &out[1] else {
        panic!()
    };
    assert_eq!(to_caller.call_id(), "caller-call");
    assert_eq!(f.remote.port(), 5080);
    assert!(to_caller.header("To").unwrap().contains("ctag"));
}

#[test]
fn busy_and_cancel_reach_the_sip_caller_with_the_right_status() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (key, inv) = dial_from_sip(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 486, "a", None));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["486", "ended:sip:486", "release"]);
    let CallOutput::Respond(k, busy) = &out[0] else {
        panic!()
    };
    assert_eq!(*k, key);
    assert!(crate::sip::dialog::tag_of(busy, "To").is_some());
    assert!(b.is_empty());

    // Cancelled while ringing: CANCEL to the callee, 487 to the caller.
    let (key, inv) = dial_from_sip(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 180, "a", None));
    drain(&mut b);
    assert!(b.on_cancel(t0, "caller-call", &key));
    assert_eq!(
        methods(&drain(&mut b)),
        ["CANCEL", "487", "ended:caller:487", "release"]
    );
    b.on_response(t0, &reply(&inv[0], 487, "a", None));
    assert!(b.is_empty());
    // A CANCEL for an INVITE we do not know is not ours.
    assert!(!b.on_cancel(t0, "caller-call", &key));
}

#[test]
fn an_answer_the_sip_caller_cannot_take_gets_488_with_a_warning() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, inv) = dial_from_sip(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_G729)));
    let out = drain(&mut b);
    assert_eq!(
        methods(&out),
        ["ACK", "BYE", "488", "ended:gateway:488", "release"]
    );
    let CallOutput::Respond(_, r) = &out[2] else {
        panic!()
    };
    assert!(r.header("Warning").unwrap().starts_with("399 causeway"));
}

/// A re-INVITE with `sdp` from the callee that answered `invite` (with
/// tag "a").
fn reinvite_from_callee(invite: &Message, sdp: &str) -> Message {
    let mut m = bye_from_callee(invite, &from_tag(invite), "a");
    m.start = StartLine::Request {
        method: Method::Invite,
        uri: "sip:causeway@127.0.0.1".into(),
    };
    with_sdp(m, sdp)
}

fn with_sdp(mut m: Message, sdp: &str) -> Message {
    m.push_header("Content-Type", "application/sdp");
    m.body = Bytes::from(sdp.to_string());
    m
}

fn body(m: &Message) -> String {
    String::from_utf8_lossy(&m.body).to_string()
}

#[test]
fn hold_and_resume_are_answered_mirrored_and_passed_to_the_other_side() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (inv, our_tag) = connected_sip_call(&mut b, t0);

    // The caller holds: answered recvonly (never sendrecv), and the callee
    // is re-offered sendonly in the codec it agreed.
    let hold = hold_from_caller(&our_tag, 2);
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5080)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["INVITE", "hold-Caller:true", "200"]);
    let (CallOutput::Request(reinvite, f), CallOutput::Respond(_, ok)) = (&out[0], &out[2]) else {
        panic!()
    };
    assert!(body(ok).contains("a=recvonly"), "{}", body(ok));
    assert!(
        body(ok).contains("m=audio 20000 RTP/AVP 0 101"),
        "{}",
        body(ok)
    );
    // It answers the re-INVITE, not the dialog's first INVITE.
    assert_eq!(ok.cseq().unwrap().seq, 2);
    assert_eq!(ok.header("Via"), hold.header("Via"));
    assert_eq!(f.remote.port(), 5070);
    assert_eq!(reinvite.call_id(), inv.call_id());
    assert!(body(reinvite).contains("a=sendonly"), "{}", body(reinvite));
    assert!(
        body(reinvite).contains("RTP/AVP 0\r\n"),
        "{}",
        body(reinvite)
    );
    let cseq = reinvite.cseq().unwrap().seq;
    assert!(cseq > 1);
    // The callee's 200 to it gets an ACK with the re-INVITE's CSeq.
    b.on_response(t0, &reply(reinvite, 200, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["ACK"]);
    let CallOutput::Transmit(_, ack) = &out[0] else {
        panic!()
    };
    let ack = Message::parse(ack).unwrap();
    assert_eq!(ack.cseq().unwrap().seq, cseq);

    // The callee puts it inactive in turn: mirrored, and passed to the
    // caller in its own dialog; the caller's 200 gets an ACK.
    let inactive = reinvite_from_callee(
        &inv,
        &ANSWER_PCMU.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n"),
    );
    assert!(b.on_request(
        t0,
        &TxKey::server(&inactive).unwrap(),
        &inactive,
        flow(5070)
    ));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["INVITE", "hold-Callee:true", "200"]);
    let (CallOutput::Request(to_caller, f), CallOutput::Respond(_, ok)) = (&out[0], &out[2]) else {
        panic!()
    };
    assert!(body(ok).contains("a=inactive"), "{}", body(ok));
    assert_eq!(to_caller.call_id(), "caller-call");
    assert_eq!(f.remote.port(), 5080);
    assert!(body(to_caller).contains("a=inactive"));
    let mut caller_ok = response_to(to_caller, 200, "OK", None, None);
    caller_ok.push_header("Content-Type", "application/sdp");
    b.on_response(t0, &caller_ok);
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["ACK"]);
    // A re-INVITE without SDP refreshes the session: our 200 offers the
    // SDP we last sent the caller, unchanged, and nothing is passed on.
    let bare = from_caller("INVITE", &our_tag, 3);
    assert!(b.on_request(t0, &TxKey::server(&bare).unwrap(), &bare, flow(5080)));
    let out = drain(&mut b);
    let [CallOutput::Respond(_, ok)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(ok.status(), Some(200));
    assert_eq!(body(ok), body(to_caller));
    assert!(!b.is_empty());
}

#[test]
fn an_update_refreshes_or_holds_the_session_like_a_re_invite() {
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let (_, inv) = dial_from_sip(&mut b, t0, &[5070]);
    b.on_response(t0, &reply(&inv[0], 200, "a", Some(ANSWER_PCMU)));
    let out = drain(&mut b);
    let CallOutput::Respond(_, ok) = &out[1] else {
        panic!()
    };
    assert!(ok.header("Allow").unwrap().contains("UPDATE"));
    let our_tag = crate::sip::dialog::tag_of(ok, "To").unwrap();
    assert!(b.on_ack(t0, &from_caller("ACK", &our_tag, 1)));

    // A session refresh (no body): 200 to the UPDATE itself, nothing sent on.
    let refresh = from_caller("UPDATE", &our_tag, 2);
    assert!(b.on_request(t0, &TxKey::server(&refresh).unwrap(), &refresh, flow(5080)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["200"]);
    let CallOutput::Respond(_, ok) = &out[0] else {
        panic!()
    };
    assert_eq!(ok.cseq().unwrap().method, Method::Update);
    assert_eq!(
        crate::sip::dialog::tag_of(ok, "To").as_deref(),
        Some(our_tag.as_str())
    );

    // An UPDATE holding the call: answered recvonly, the callee re-offered
    // sendonly (by re-INVITE).
    let hold = with_sdp(
        from_caller("UPDATE", &our_tag, 3),
        &CALLER_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"),
    );
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5080)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["INVITE", "hold-Caller:true", "200"]);
    let (CallOutput::Request(reinvite, _), CallOutput::Respond(_, ok)) = (&out[0], &out[2]) else {
        panic!()
    };
    assert!(body(ok).contains("a=recvonly"), "{}", body(ok));
    assert_eq!(ok.cseq().unwrap().seq, 3);
    assert!(body(reinvite).contains("a=sendonly"), "{}", body(reinvite));

    // The callee refreshes its side by UPDATE too.
    let bye = bye_from_callee(&inv[0], &from_tag(&inv[0]), "a").to_bytes();
    let text = String::from_utf8_lossy(&bye)
        .replace("BYE sip:", "UPDATE sip:")
        .replace("CSeq: 5 BYE", "CSeq: 9 UPDATE");
    let from_callee = Message::parse(text.as_bytes()).unwrap();
    let key = TxKey::server(&from_callee).unwrap();
    assert!(b.on_request(t0, &key, &from_callee, flow(5070)));
    assert_eq!(methods(&drain(&mut b)), ["200"]);
    assert!(!b.is_empty());
}

fn tag_of_ok(ok: &Message) -> String {
    crate::sip::dialog::tag_of(ok, "To").expect("our tag")
}

#[test]
fn a_browser_calls_video_survives_the_callees_hold() {
    use causeway_codecs::video::VideoCodec;
    let t0 = Instant::now();
    let mut b = B2bua::default();
    let offer = Offer::audio(&[AudioCodec::Pcmu], true)
        .with_video(&[VideoCodec::Vp8, VideoCodec::H264], 40004);
    let t = target_offering(5070, &offer);
    b.dial(
        t0,
        Dial {
            id: "call-1".into(),
            peer: PeerId(7),
            offer,
            dtmf: DtmfMode::Auto,
        },
        vec![t],
    );
    let Some(CallOutput::Request(inv, _)) = b.poll_output() else {
        panic!()
    };
    b.sent(
        &inv,
        TxKey::server(&inv).unwrap().for_method(Method::Invite),
    );
    assert!(body(&inv).contains("m=video 40004 RTP/AVP 100 99\r\n"));
    // The room system takes H.264 only.
    let video = "m=video 40010 RTP/AVP 126\r\na=rtpmap:126 H264/90000\r\n\
                 a=fmtp:126 packetization-mode=1\r\n";
    let answer = format!("{ANSWER_PCMU}{video}");
    b.on_response(t0, &reply(&inv, 200, "a", Some(&answer)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["ACK", "media", "connected"]);
    let CallOutput::Notice(Notice::StartMedia {
        callee: CalleeMedia::Sip(sip),
        ..
    }) = &out[1]
    else {
        panic!()
    };
    let v = sip.video.as_ref().expect("video agreed");
    assert_eq!(v.format.pt, 126);
    assert_eq!(v.remote_rtp, Some("127.0.0.1:40010".parse().unwrap()));

    // The room system holds both streams: each is answered recvonly, video
    // on our video port in its codec (not refused).
    let held = format!("{ANSWER_PCMU}a=sendonly\r\n{video}a=sendonly\r\n");
    let hold = reinvite_from_callee(&inv, &held);
    assert!(b.on_request(t0, &TxKey::server(&hold).unwrap(), &hold, flow(5070)));
    let out = drain(&mut b);
    assert_eq!(methods(&out), ["hold-Callee:true", "200"]);
    let CallOutput::Respond(_, ok) = &out[1] else {
        panic!()
    };
    let sdp = body(ok);
    assert!(sdp.contains("m=video 40004 RTP/AVP 126\r\n"), "{sdp}");
    assert_eq!(sdp.matches("a=recvonly").count(), 2, "{sdp}");
}
