use super::*;
use crate::media::srtp::MasterKey;

fn key(name: &str, clock_rate: u32, channels: u8) -> CodecKey {
    CodecKey {
        name: name.into(),
        clock_rate,
        channels,
    }
}

fn cfg() -> AnswerConfig {
    AnswerConfig {
        codecs: vec![
            key("PCMU", 8000, 1),
            key("PCMA", 8000, 1),
            key("G722", 8000, 1),
            key("opus", 48000, 2),
            key("H264", 90000, 1),
            key("VP8", 90000, 1),
        ],
        dtmf: true,
        keep_key: None,
        keep_video_key: None,
    }
}

/// The SDP of the Cisco CE INVITE fixture (a real room system's offer).
fn cisco_offer() -> String {
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/sip/vendors/cisco_ce_invite.sip"
    ))
    .unwrap();
    raw[raw.find("v=0").unwrap()..].to_string()
}

const SIPP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n";

#[test]
fn parses_a_room_system_offer() {
    let s = parse(&cisco_offer()).unwrap();
    assert_eq!(s.connection, Some("172.16.5.10".parse().unwrap()));
    assert_eq!(s.media.len(), 2);
    let a = &s.media[0];
    assert_eq!(
        (a.kind, a.port, a.proto),
        (MediaKind::Audio, 2326, Proto::RtpAvp)
    );
    let pts: Vec<u8> = a.formats.iter().map(|f| f.pt).collect();
    assert_eq!(pts, [108, 9, 0, 8, 101]);
    assert_eq!(a.formats[0].codec, Some(key("MP4A-LATM", 90000, 1)));
    assert!(a.formats[4].is_telephone_event());
    assert_eq!(a.formats[4].fmtp.as_deref(), Some("0-15"));
    let v = &s.media[1];
    assert_eq!(v.kind, MediaKind::Video);
    assert_eq!(
        v.formats[0].fmtp.as_deref(),
        Some("profile-level-id=42e016;max-mbps=490000;max-fs=8160;packetization-mode=1")
    );
    assert_eq!(s.rtp_addr(a), Some("172.16.5.10:2326".parse().unwrap()));
    assert_eq!(
        s.rtcp_addr(a, false),
        Some("172.16.5.10:2327".parse().unwrap())
    );
}

#[test]
fn answers_the_first_offered_codec_we_have_with_telephone_event() {
    let offer = parse(&cisco_offer()).unwrap();
    let a = answer(&offer, &cfg()).unwrap();
    let audio = a.streams[0].as_ref().unwrap();
    // MP4A-LATM is skipped; G.722 is the room system's next choice.
    assert_eq!(audio.format.pt, 9);
    assert_eq!(audio.dtmf.as_ref().map(|f| f.pt), Some(101));
    let video = a.streams[1].as_ref().unwrap();
    assert_eq!(video.format.pt, 126);
    let text = a.to_sdp("10.0.0.1".parse().unwrap(), &[30000, 30002], 7, 1);
    let golden = "v=0\r\n\
o=causeway 7 1 IN IP4 10.0.0.1\r\n\
s=causeway\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 9 101\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
m=video 30002 RTP/AVP 126\r\n\
a=rtpmap:126 H264/90000\r\n\
a=fmtp:126 profile-level-id=42e016;max-mbps=490000;max-fs=8160;packetization-mode=1\r\n\
a=rtcp-fb:126 nack pli\r\n\
a=sendrecv\r\n";
    assert_eq!(text, golden);
    // Our own answer parses back.
    let back = parse(&text).unwrap();
    assert_eq!(back.media[0].formats.len(), 2);
}

#[test]
fn h264_offered_in_both_packetization_modes_is_answered_in_mode_1() {
    // baresip's avcodec offers mode 0 first, then mode 1.
    let video = "m=video 5002 RTP/AVP 96 97 98\r\na=rtpmap:96 H264/90000\r\n\
                 a=fmtp:96 packetization-mode=0\r\na=rtpmap:97 H264/90000\r\n\
                 a=fmtp:97 packetization-mode=1\r\na=rtpmap:98 VP8/90000\r\n";
    let a = answer(&parse(&format!("{SIPP}{video}")).unwrap(), &cfg()).unwrap();
    assert_eq!(a.streams[1].as_ref().unwrap().format.pt, 97);
    // Mode 0 alone is still answered (the media path repacketizes it).
    let mode_0 = video.replace(" 96 97 98", " 96");
    let a = answer(&parse(&format!("{SIPP}{mode_0}")).unwrap(), &cfg()).unwrap();
    assert_eq!(a.streams[1].as_ref().unwrap().format.pt, 96);
    // Where VP8 comes first, the offerer's order still wins.
    let vp8_first = video.replace(" 96 97 98", " 98 96 97");
    let a = answer(&parse(&format!("{SIPP}{vp8_first}")).unwrap(), &cfg()).unwrap();
    assert_eq!(a.streams[1].as_ref().unwrap().format.pt, 98);
}

#[test]
fn the_keyframe_feedback_a_video_offer_takes_is_echoed_for_the_answered_format() {
    // PLI for every format, FIR only for VP8's 98, and feedback we do not
    // act on (NACK, REMB) left out; audio gets none.
    let video = "m=video 5002 RTP/AVP 97 98\r\na=rtpmap:97 H264/90000\r\n\
                 a=fmtp:97 packetization-mode=1\r\na=rtpmap:98 VP8/90000\r\n\
                 a=rtcp-fb:* nack pli\r\na=rtcp-fb:97 nack pli\r\na=rtcp-fb:98 ccm fir\r\n\
                 a=rtcp-fb:* nack\r\na=rtcp-fb:* goog-remb\r\n";
    let audio_fb = SIPP.replace("0-11,16\r\n", "0-11,16\r\na=rtcp-fb:* nack pli\r\n");
    let offer = parse(&format!("{audio_fb}{video}")).unwrap();
    let text = |offer: &SessionDesc| {
        answer(offer, &cfg())
            .unwrap()
            .to_sdp("127.0.0.1".parse().unwrap(), &[20000, 20002], 1, 1)
    };
    let h264 = text(&offer);
    let fb: Vec<&str> = h264
        .lines()
        .filter(|l| l.starts_with("a=rtcp-fb"))
        .collect();
    assert_eq!(fb, ["a=rtcp-fb:97 nack pli"], "{h264}");
    let vp8_first = parse(&format!("{audio_fb}{}", video.replace(" 97 98", " 98 97"))).unwrap();
    let vp8 = text(&vp8_first);
    let fb: Vec<&str> = vp8.lines().filter(|l| l.starts_with("a=rtcp-fb")).collect();
    assert_eq!(
        fb,
        ["a=rtcp-fb:98 nack pli", "a=rtcp-fb:98 ccm fir"],
        "{vp8}"
    );
    // The answer parses back as taking keyframe requests.
    let back = parse(&vp8).unwrap();
    assert!(back.media[1].takes_keyframe_requests(98));
    assert!(!back.media[0].takes_keyframe_requests(8));
}

#[test]
fn unsupported_sections_are_rejected_with_port_zero() {
    let offer = parse(&format!(
        "{SIPP}m=application 5000 UDP/BFCP *\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
    ))
    .unwrap();
    let a = answer(&offer, &cfg()).unwrap();
    assert!(a.streams[0].is_some());
    assert!(a.streams[1].is_none() && a.streams[2].is_none());
    let text = a.to_sdp("127.0.0.1".parse().unwrap(), &[20000], 1, 1);
    assert!(text.contains("m=application 0 UDP/BFCP *\r\n"), "{text}");
    assert!(text.contains("m=video 0 RTP/AVP 96\r\n"), "{text}");
}

#[test]
fn no_common_codec_is_488() {
    let offer = parse(
        &SIPP
            .replace("PCMA/8000", "G729/8000")
            .replace(" 8 101", " 18 101")
            .replace(":8 ", ":18 "),
    )
    .unwrap();
    let err = answer(&offer, &cfg()).unwrap_err();
    assert!(matches!(err, SdpError::NoCommonMedia(_)));
    assert_eq!(err.status().0, 488);
    assert!(err.status().2.starts_with("305 "));
}

#[test]
fn garbage_is_400() {
    for bad in [
        "",
        "hello",
        "v=0\r\nm=audio x RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n",
    ] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.status().0, 400, "{bad:?}: {err}");
    }
}

#[test]
fn directions_mirror_and_hold_address_is_learned() {
    for (offered, answered) in [
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
        ("sendrecv", "sendrecv"),
    ] {
        let text =
            SIPP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0") + &format!("a={offered}\r\n");
        let a = answer(&parse(&text).unwrap(), &cfg()).unwrap();
        let s = a.streams[0].as_ref().unwrap();
        assert_eq!(s.direction.name(), answered);
        assert_eq!(s.remote_rtp, None);
    }
    // A session-level direction applies to sections without one.
    let text = SIPP.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    assert_eq!(
        parse(&text).unwrap().media[0].direction,
        Direction::SendOnly
    );
}

#[test]
fn a_re_answer_keeps_each_streams_own_sdes_key() {
    let suite = Suite::AesCm128HmacSha1_80;
    let crypto =
        |k: &MasterKey| format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\n", k.to_inline());
    let text = SIPP.replace("RTP/AVP", "RTP/SAVP")
        + &crypto(&MasterKey::generate(suite))
        + "m=video 6002 RTP/SAVP 96\r\na=rtpmap:96 VP8/90000\r\n"
        + &crypto(&MasterKey::generate(suite));
    let (audio, video) = (MasterKey::generate(suite), MasterKey::generate(suite));
    let cfg = AnswerConfig {
        keep_key: Some(audio.clone()),
        keep_video_key: Some(video.clone()),
        ..cfg()
    };
    let a = answer(&parse(&text).unwrap(), &cfg).unwrap();
    let local = |i: usize| {
        a.streams[i]
            .as_ref()
            .unwrap()
            .srtp
            .as_ref()
            .unwrap()
            .local
            .clone()
    };
    assert_eq!((local(0), local(1)), (audio, video));
}

#[test]
fn sdes_answer_takes_the_first_suite_we_implement_and_mux() {
    let theirs = MasterKey::generate(Suite::AesCm128HmacSha1_80);
    let text = SIPP.replace("RTP/AVP", "RTP/SAVP")
        + "a=crypto:1 F8_128_HMAC_SHA1_80 inline:AAAA\r\n"
        + &format!(
            "a=crypto:2 AES_CM_128_HMAC_SHA1_80 {}|2^31\r\n",
            theirs.to_inline()
        )
        + "a=rtcp-mux\r\n";
    let offer = parse(&text).unwrap();
    assert_eq!(offer.media[0].crypto.len(), 1, "unknown suites are skipped");
    let a = answer(&offer, &cfg()).unwrap();
    let s = a.streams[0].as_ref().unwrap();
    let srtp = s.srtp.as_ref().unwrap();
    assert_eq!(srtp.tag, 2);
    assert_eq!(srtp.remote, theirs);
    assert!(s.rtcp_mux);
    assert_eq!(s.remote_rtcp, s.remote_rtp);
    let out = a.to_sdp("127.0.0.1".parse().unwrap(), &[20000], 1, 1);
    assert!(out.contains("m=audio 20000 RTP/SAVP 8 101\r\n"), "{out}");
    assert!(out.contains("a=rtcp-mux\r\n"));
    let back = parse(&out).unwrap();
    assert_eq!(back.media[0].crypto[0].tag, 2);
    assert_eq!(
        MasterKey::from_inline(
            Suite::AesCm128HmacSha1_80,
            &back.media[0].crypto[0].key_params
        )
        .unwrap(),
        srtp.local
    );
    // SAVP without a usable key: 488.
    let none = SIPP.replace("RTP/AVP", "RTP/SAVP");
    assert!(matches!(
        answer(&parse(&none).unwrap(), &cfg()),
        Err(SdpError::NoCommonMedia(_))
    ));
}

#[test]
fn rtcp_attribute_and_static_payload_types() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 18\r\nc=IN IP4 10.1.1.2\r\na=rtcp:4005 IN IP4 10.1.1.3\r\na=ptime:30\r\n";
    let s = parse(text).unwrap();
    let m = &s.media[0];
    assert_eq!(m.formats[0].codec, Some(key("PCMU", 8000, 1)));
    assert_eq!(m.ptime, Some(30));
    assert_eq!(s.rtp_addr(m), Some("10.1.1.2:4000".parse().unwrap()));
    assert_eq!(
        s.rtcp_addr(m, false),
        Some("10.1.1.3:4005".parse().unwrap())
    );
    let a = answer(&s, &cfg()).unwrap();
    let out = a.to_sdp("10.0.0.1".parse().unwrap(), &[20000], 1, 1);
    assert!(
        out.contains("m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:30\r\n"),
        "{out}"
    );
}
