//! The hub against a str0m client peer, on simulated time and in-memory
//! datagrams: ICE-lite + DTLS come up, the echo loops RTP back on the same
//! mid, DTMF is read, keyframe requests reach the sender, vanished peers are
//! reaped.

use super::*;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Mid};
use str0m::rtp::SeqNo;

const HUB: &str = "10.0.0.1:10000";
const CLIENT: &str = "10.0.0.2:5000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn hub() -> Hub {
    let cert = generate_certificate().expect("certificate");
    Hub::new(cert, vec![addr(HUB)])
}

/// A browser stand-in: str0m in RTP mode, full ICE, offering what a
/// browser offers (audio and video, all our codecs).
struct Client {
    rtc: Rtc,
    events: Vec<Event>,
    /// What the hub handed the call layer from this client (bridged peers).
    bridged: Vec<(StreamKind, Vec<u8>)>,
    /// Keyframe requests the hub handed the call layer for this client.
    keyframe_requests: usize,
}

impl Client {
    /// The client's answer to the hub's `offer`.
    fn answer(&mut self, offer: &str) -> String {
        self.rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(offer).expect("offer parses"))
            .expect("client answers")
            .to_sdp_string()
    }

    fn new(now: Instant, codecs: CodecConfig) -> Self {
        let mut config = RtcConfig::new().set_rtp_mode(true);
        *config.codec_config() = codecs;
        let mut rtc = config.build(now);
        rtc.add_local_candidate(Candidate::host(addr(CLIENT), "udp").expect("candidate"));
        Self {
            rtc,
            events: Vec::new(),
            bridged: Vec::new(),
            keyframe_requests: 0,
        }
    }

    /// Offers audio and video; returns the offer and what to do with the answer.
    fn offer(&mut self) -> (String, str0m::change::SdpPendingOffer, Mid, Mid) {
        let mut api = self.rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        (offer.to_sdp_string(), pending, audio, video)
    }
}

/// Moves datagrams both ways and advances time by `step` until `until` or
/// `done` says so.
fn run(
    hub: &mut Hub,
    client: &mut Client,
    hub_events: &mut Vec<(PeerId, PeerEvent)>,
    now: &mut Instant,
    until: Duration,
    mut done: impl FnMut(&Client, &[(PeerId, PeerEvent)]) -> bool,
) {
    let end = *now + until;
    while *now < end {
        // Client output.
        loop {
            match client.rtc.poll_output().expect("client output") {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    hub.handle_receive(*now, t.source, t.destination, &t.contents);
                }
                Output::Event(e) => client.events.push(e),
            }
        }
        // Hub output.
        while let Some(o) = hub.poll_output() {
            match o {
                HubOutput::Transmit(d) => {
                    if d.destination != addr(CLIENT) {
                        continue;
                    }
                    let contents = d.contents.as_slice().try_into().expect("datagram");
                    client
                        .rtc
                        .handle_input(Input::Receive(
                            *now,
                            Receive {
                                proto: Protocol::Udp,
                                source: addr(HUB),
                                destination: addr(CLIENT),
                                contents,
                            },
                        ))
                        .expect("client input");
                }
                HubOutput::Event(id, e) => hub_events.push((id, e)),
                HubOutput::Rtp(_, kind, p) => client.bridged.push((kind, p)),
                HubOutput::KeyframeRequest(_) => client.keyframe_requests += 1,
            }
        }
        assert!(hub.timers_agree(), "the hub's timers follow its peers");
        if done(client, hub_events) {
            return;
        }
        *now += Duration::from_millis(5);
        client
            .rtc
            .handle_input(Input::Timeout(*now))
            .expect("client timeout");
        hub.handle_timeout(*now);
    }
}

fn connect(
    hub: &mut Hub,
    now: &mut Instant,
) -> (Client, PeerId, Mid, Mid, Vec<(PeerId, PeerEvent)>) {
    connect_app(hub, now, PeerApp::Echo)
}

fn connect_app(
    hub: &mut Hub,
    now: &mut Instant,
    app: PeerApp,
) -> (Client, PeerId, Mid, Mid, Vec<(PeerId, PeerEvent)>) {
    let mut client = Client::new(*now, codec_config());
    let (offer, pending, audio, video) = client.offer();
    let (id, answer) = hub.accept_offer(*now, &offer, app).expect("answer");
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("a=group:BUNDLE"), "{answer}");
    assert!(answer.contains("a=rtcp-mux"), "{answer}");
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(answer.contains("a=candidate:") && answer.contains("10.0.0.1 10000 typ host"));
    let answer = SdpAnswer::from_sdp_string(&answer).expect("answer parses");
    client
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("accept answer");
    let events = until_connected(hub, &mut client, id, now);
    (client, id, audio, video, events)
}

/// Runs both sides until ICE and DTLS are up on each (5 s at most);
/// returns the hub's events.
fn until_connected(
    hub: &mut Hub,
    client: &mut Client,
    id: PeerId,
    now: &mut Instant,
) -> Vec<(PeerId, PeerEvent)> {
    let mut events = Vec::new();
    run(
        hub,
        client,
        &mut events,
        now,
        Duration::from_secs(5),
        |c, h| {
            c.events.iter().any(|e| matches!(e, Event::Connected))
                && h.iter().any(|(_, e)| *e == PeerEvent::Connected)
        },
    );
    assert!(
        events.contains(&(id, PeerEvent::Connected)),
        "hub side never connected: {events:?}"
    );
    events
}

fn pt_of(rtc: &Rtc, codec: Codec, rate: u32) -> str0m::media::Pt {
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && p.spec().clock_rate.get() == rate)
        .map(|p| p.pt())
        .expect("negotiated payload type")
}

#[test]
fn echo_loops_audio_and_video_back_on_their_mid() {
    let mut now = Instant::now();
    let mut hub = hub();
    let (mut client, id, audio, video, mut events) = connect(&mut hub, &mut now);
    let opus = pt_of(&client.rtc, Codec::Opus, 48_000);
    let vp8 = pt_of(&client.rtc, Codec::Vp8, 90_000);
    for i in 0..50u64 {
        let t = now;
        let mut api = client.rtc.direct_api();
        let tx = api.stream_tx_by_mid(audio, None).expect("audio stream");
        tx.write_rtp(RtpWrite::new(
            opus,
            SeqNo::from(1000 + i),
            (i * 960) as u32,
            t,
            vec![i as u8; 40],
        ));
        let tx = api.stream_tx_by_mid(video, None).expect("video stream");
        tx.write_rtp(
            RtpWrite::new(
                vp8,
                SeqNo::from(5000 + i),
                (i * 3000) as u32,
                t,
                vec![0x10, 0, 0, 0, i as u8],
            )
            .marker(true)
            .nackable(true),
        );
        run(
            &mut hub,
            &mut client,
            &mut events,
            &mut now,
            Duration::from_millis(20),
            |_, _| false,
        );
    }
    run(
        &mut hub,
        &mut client,
        &mut events,
        &mut now,
        Duration::from_millis(200),
        |_, _| false,
    );

    let back: Vec<&RtpPacket> = client
        .events
        .iter()
        .filter_map(|e| match e {
            Event::RtpPacket(p) => Some(p),
            _ => None,
        })
        .collect();
    let audio_back: Vec<&&RtpPacket> = back
        .iter()
        .filter(|p| p.header.payload_type == opus)
        .collect();
    let video_back: Vec<&&RtpPacket> = back
        .iter()
        .filter(|p| p.header.payload_type == vp8)
        .collect();
    assert_eq!(audio_back.len(), 50, "every audio packet came back");
    assert_eq!(video_back.len(), 50, "every video packet came back");
    for (i, p) in audio_back.iter().enumerate() {
        assert_eq!(&*p.payload, vec![i as u8; 40].as_slice());
        assert_eq!(p.header.timestamp, (i * 960) as u32);
    }
    assert!(video_back.iter().all(|p| p.header.marker));
    let counters = hub.counters(id).expect("live peer");
    assert_eq!(counters.packets_in, 100);
    assert_eq!(counters.packets_out, 100);
}

#[test]
fn telephone_events_become_digits_and_come_back() {
    let mut now = Instant::now();
    let mut hub = hub();
    let (mut client, id, audio, _, mut events) = connect(&mut hub, &mut now);
    let tele = pt_of(&client.rtc, Codec::Tele, 48_000);
    // Digit 5: two updates and three end packets, one timestamp.
    for (i, (end, dur)) in [
        (false, 960u16),
        (false, 1920),
        (true, 2880),
        (true, 2880),
        (true, 2880),
    ]
    .into_iter()
    .enumerate()
    {
        let payload = dtmf::EventPayload {
            event: 5,
            end,
            volume: 10,
            duration: dur,
        }
        .to_bytes();
        let mut api = client.rtc.direct_api();
        let tx = api.stream_tx_by_mid(audio, None).expect("audio stream");
        tx.write_rtp(RtpWrite::new(
            tele,
            SeqNo::from(10 + i as u64),
            48_000,
            now,
            payload.to_vec(),
        ));
        run(
            &mut hub,
            &mut client,
            &mut events,
            &mut now,
            Duration::from_millis(20),
            |_, _| false,
        );
    }
    let digits: Vec<&PeerEvent> = events
        .iter()
        .filter(|(p, e)| *p == id && matches!(e, PeerEvent::Dtmf(_)))
        .map(|(_, e)| e)
        .collect();
    assert_eq!(digits, [&PeerEvent::Dtmf('5')]);
    let echoed = client
        .events
        .iter()
        .filter(|e| matches!(e, Event::RtpPacket(p) if p.header.payload_type == tele))
        .count();
    assert_eq!(echoed, 5, "telephone-events are echoed too");
}

/// Five VP8 frames from the client on its `video` section (and, with
/// `bridged`, five from the hub to that peer), so both directions' video
/// streams exist.
fn exchange_video(
    hub: &mut Hub,
    client: &mut Client,
    events: &mut Vec<(PeerId, PeerEvent)>,
    now: &mut Instant,
    video: Mid,
    bridged: Option<PeerId>,
) {
    let vp8 = pt_of(&client.rtc, Codec::Vp8, 90_000);
    for i in 0..5u64 {
        let frame = vec![0x10, 0, 0, 0];
        let ts = (i * 3000) as u32;
        let mut api = client.rtc.direct_api();
        let tx = api.stream_tx_by_mid(video, None).expect("video stream");
        tx.write_rtp(RtpWrite::new(vp8, SeqNo::from(i + 1), ts, *now, frame.clone()).marker(true));
        if let Some(id) = bridged {
            let mut packet = Vec::new();
            let h = crate::media::rtp::RtpHeader::new(*vp8, i as u16, ts, 7, true);
            crate::media::rtp::write(&mut packet, &h, &frame);
            hub.write_rtp(*now, id, StreamKind::Video, &packet);
        }
        run(
            hub,
            client,
            events,
            now,
            Duration::from_millis(33),
            |_, _| false,
        );
    }
}

/// Runs until the client is asked for a keyframe of its `video`; whether
/// it was.
fn client_asked_for_keyframe(
    hub: &mut Hub,
    client: &mut Client,
    events: &mut Vec<(PeerId, PeerEvent)>,
    now: &mut Instant,
    video: Mid,
) -> bool {
    let asked = |c: &Client| {
        c.events
            .iter()
            .any(|e| matches!(e, Event::KeyframeRequest(r) if r.mid == video))
    };
    run(
        hub,
        client,
        events,
        now,
        Duration::from_millis(500),
        |c, _| asked(c),
    );
    asked(client)
}

/// The client asks for a keyframe of the video the hub sends it.
fn client_requests_keyframe(client: &mut Client, video: Mid) {
    client
        .rtc
        .direct_api()
        .stream_rx_by_mid(video, None)
        .expect("video from the hub")
        .request_keyframe(KeyframeRequestKind::Pli);
}

#[test]
fn a_keyframe_request_from_the_browser_reaches_its_own_sender() {
    let mut now = Instant::now();
    let mut hub = hub();
    let (mut client, _, _, video, mut events) = connect(&mut hub, &mut now);
    exchange_video(&mut hub, &mut client, &mut events, &mut now, video, None);
    client.events.clear();
    client_requests_keyframe(&mut client, video);
    assert!(
        client_asked_for_keyframe(&mut hub, &mut client, &mut events, &mut now, video),
        "the PLI for the echoed stream came back to the sender: {:?}",
        client.events
    );
}

#[test]
fn keyframe_requests_cross_a_bridged_peer_both_ways() {
    let mut now = Instant::now();
    let mut hub = hub();
    let (mut client, id, _, video, mut events) = connect_app(&mut hub, &mut now, PeerApp::Bridge);
    exchange_video(
        &mut hub,
        &mut client,
        &mut events,
        &mut now,
        video,
        Some(id),
    );
    // The browser asks for a keyframe of what we send it: the call layer hears.
    client_requests_keyframe(&mut client, video);
    run(
        &mut hub,
        &mut client,
        &mut events,
        &mut now,
        Duration::from_millis(500),
        |c, _| c.keyframe_requests > 0,
    );
    assert_eq!(client.keyframe_requests, 1);
    // The call layer asks the browser for one of its own video.
    client.events.clear();
    hub.request_keyframe(id);
    assert!(
        client_asked_for_keyframe(&mut hub, &mut client, &mut events, &mut now, video),
        "{:?}",
        client.events
    );
}

#[test]
fn a_peer_that_vanishes_is_reaped_by_ice_consent() {
    let mut now = Instant::now();
    let mut hub = hub();
    let (_client, id, _, _, _) = connect(&mut hub, &mut now);
    // The browser goes silent: no more STUN, no media.
    let mut closed = None;
    for _ in 0..(60 * 20) {
        now += Duration::from_millis(50);
        hub.handle_timeout(now);
        while let Some(o) = hub.poll_output() {
            if let HubOutput::Event(p, PeerEvent::Closed(r)) = o {
                assert_eq!(p, id);
                closed = Some(r);
            }
        }
        if closed.is_some() {
            break;
        }
    }
    assert_eq!(closed, Some(CloseReason::IceTimeout));
    assert!(hub.is_empty());
}

/// A peer answered for a client that will never send a datagram.
fn answered(hub: &mut Hub, now: Instant) -> (PeerId, String) {
    let mut client = Client::new(now, codec_config());
    let (offer, ..) = client.offer();
    hub.accept_offer(now, &offer, PeerApp::Echo)
        .expect("answer")
}

#[test]
fn an_answer_nobody_uses_is_dropped_after_the_connect_timeout() {
    let now = Instant::now();
    let mut hub = hub();
    let (id, _) = answered(&mut hub, now);
    let at = hub.poll_timeout().expect("a timer");
    assert!(at <= now + CONNECT_TIMEOUT + Duration::from_millis(1));
    hub.handle_timeout(now + CONNECT_TIMEOUT + Duration::from_secs(1));
    let mut events = Vec::new();
    while let Some(o) = hub.poll_output() {
        if let HubOutput::Event(p, e) = o {
            events.push((p, e));
        }
    }
    assert!(events.contains(&(id, PeerEvent::Closed(CloseReason::NeverConnected))));
    assert!(hub.is_empty());
}

#[test]
fn close_ends_the_peer_and_forgets_its_addresses() {
    let mut now = Instant::now();
    let mut hub = hub();
    let (_client, id, _, _, _) = connect(&mut hub, &mut now);
    hub.close(id);
    let mut closed = false;
    while let Some(o) = hub.poll_output() {
        closed |= o == HubOutput::Event(id, PeerEvent::Closed(CloseReason::Local));
    }
    assert!(closed);
    assert!(hub.is_empty());
    // Its traffic is now unmatched, not a panic.
    let before = hub.unmatched;
    hub.handle_receive(
        now,
        addr(CLIENT),
        addr(HUB),
        &[0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    assert_eq!(hub.unmatched, before + 1);
    assert!(hub.poll_output().is_none());
}

#[test]
fn bad_offers_are_refused_with_a_reason() {
    let now = Instant::now();
    let mut hub = hub();
    assert!(matches!(
        hub.accept_offer(now, "this is not sdp", PeerApp::Echo),
        Err(WebrtcError::BadSdp(_))
    ));
    // A browser offering only codecs we lack (VP9 video).
    let mut only_vp9 = CodecConfig::empty();
    only_vp9.enable_vp9(true);
    let mut client = Client::new(now, only_vp9);
    let mut api = client.rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, _) = api.apply().expect("offer");
    assert_eq!(
        hub.accept_offer(now, &offer.to_sdp_string(), PeerApp::Echo),
        Err(WebrtcError::NoCommonCodec)
    );
    assert!(hub.is_empty());
    assert!(
        hub.poll_output().is_none(),
        "a refused offer leaves nothing behind"
    );
}

/// A STUN binding request with `username`, signed with `password`.
fn binding_request(username: &str, password: &[u8]) -> Vec<u8> {
    let stun = str0m::ice::StunMessage::binding_request(
        username,
        str0m::ice::TransId::new(),
        true,
        0,
        1,
        false,
    );
    let mut buf = vec![0u8; 1500];
    let n = stun
        .to_bytes(Some(password), &mut buf, |key, parts| {
            use hmac::{KeyInit, Mac};
            let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().into()
        })
        .expect("stun");
    buf.truncate(n);
    buf
}

#[test]
fn a_forged_binding_request_does_not_claim_its_source() {
    let now = Instant::now();
    let mut hub = hub();
    let (_, answer) = answered(&mut hub, now);
    let ufrag = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("ufrag");
    while hub.poll_output().is_some() {}
    let attacker = addr("10.6.6.6:666");
    // The right ufrag, the wrong password: str0m does not answer it...
    hub.handle_receive(
        now,
        attacker,
        addr(HUB),
        &binding_request(&format!("{ufrag}:x"), b"wrong"),
    );
    assert!(
        !std::iter::from_fn(|| hub.poll_output()).any(|o| matches!(o, HubOutput::Transmit(_))),
        "a forged request is not answered"
    );
    // ...so the attacker's other datagrams reach nobody.
    let before = hub.unmatched;
    hub.handle_receive(
        now,
        attacker,
        addr(HUB),
        &[0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    assert_eq!(hub.unmatched, before + 1);
}

#[test]
fn the_timer_never_asks_for_a_wakeup_it_will_not_use() {
    // A peer that never connects (its offer has no candidates, as from a
    // client that meant to trickle them): every deadline the hub reports
    // must be consumed by handle_timeout, or the driver spins.
    let start = Instant::now();
    let mut hub = hub();
    let mut config = RtcConfig::new().set_rtp_mode(true);
    *config.codec_config() = codec_config();
    let mut client = Client {
        rtc: config.build(start),
        events: Vec::new(),
        bridged: Vec::new(),
        keyframe_requests: 0,
    };
    let (offer, ..) = client.offer();
    hub.accept_offer(start, &offer, PeerApp::Echo)
        .expect("answer");
    // A driver like the runtime's: it sleeps until the reported deadline;
    // real time has moved on by at least 1 ms when it wakes.
    let mut now = start;
    let mut wakeups = 0;
    while let Some(at) = hub.poll_timeout() {
        now = at.max(now + Duration::from_millis(1));
        hub.handle_timeout(now);
        while hub.poll_output().is_some() {}
        assert!(hub.timers_agree(), "the hub's timers follow its peers");
        wakeups += 1;
        assert!(
            wakeups < 1000,
            "{wakeups} wakeups in {:?}: a deadline is reported but not handled",
            now - start
        );
    }
    assert!(hub.is_empty(), "the peer was dropped in the end");
    assert!(
        now <= start + CONNECT_TIMEOUT + Duration::from_millis(2),
        "dropped {:?} after the offer, not at the connect timeout",
        now - start
    );
}

#[test]
fn datagrams_from_strangers_are_counted_and_dropped() {
    let now = Instant::now();
    let mut hub = hub();
    let stranger = addr("10.9.9.9:999");
    // STUN naming an unknown ufrag, random bytes, an empty datagram.
    hub.handle_receive(
        now,
        stranger,
        addr(HUB),
        &binding_request("nobody:someone", b"pass"),
    );
    hub.handle_receive(now, stranger, addr(HUB), &[0xde, 0xad, 0xbe, 0xef]);
    hub.handle_receive(now, stranger, addr(HUB), &[]);
    assert_eq!(hub.unmatched, 3);
    assert!(hub.poll_output().is_none());
}

/// Masks what changes on every answer (ICE credentials, fingerprint,
/// SSRCs, CNAMEs, stream ids, the session id) so answers can be compared.
fn normalize(answer: &str) -> String {
    let mask_after = |line: &str, prefix: &str, keep: usize| -> Option<String> {
        line.strip_prefix(prefix).map(|rest| {
            let parts: Vec<&str> = rest.split(' ').collect();
            let kept = parts
                .iter()
                .take(keep)
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            format!("{prefix}{kept}{}<masked>", if keep > 0 { " " } else { "" })
        })
    };
    answer
        .lines()
        .map(|l| {
            mask_after(l, "o=", 0)
                .or_else(|| mask_after(l, "a=ice-ufrag:", 0))
                .or_else(|| mask_after(l, "a=ice-pwd:", 0))
                .or_else(|| mask_after(l, "a=fingerprint:", 1))
                .or_else(|| mask_after(l, "a=msid:", 0))
                .or_else(|| mask_after(l, "a=ssrc-group:", 1))
                .or_else(|| mask_after(l, "a=ssrc:", 0))
                .or_else(|| mask_after(l, "a=msid-semantic:", 0))
                .or_else(|| {
                    // Foundation and ufrag vary; component, priority and address do not.
                    let rest = l.strip_prefix("a=candidate:")?;
                    let fields: Vec<&str> = rest.split(' ').skip(1).take(7).collect();
                    Some(format!(
                        "a=candidate:<masked> {} <masked>",
                        fields.join(" ")
                    ))
                })
                .unwrap_or_else(|| l.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Answers to offers captured from real browsers, kept in `fixtures/sdp/`
/// as `<browser>-offer.sdp` with the expected `<browser>-answer.sdp`
/// (regenerate with `UPDATE_GOLDEN=1` after a deliberate change, and
/// review the diff).
#[test]
fn golden_answers_to_real_browser_offers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sdp");
    let mut offers: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures/sdp")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("-offer.sdp"))
        .collect();
    offers.sort();
    assert!(offers.len() >= 2, "offers: {offers:?}");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for path in offers {
        let offer = std::fs::read_to_string(&path).expect("offer");
        let mut hub = hub();
        let (_, answer) = hub
            .accept_offer(Instant::now(), &offer, PeerApp::Echo)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.display().to_string();
        // What every answer must say, whatever the golden file holds.
        assert!(answer.contains("a=ice-lite"), "{name}");
        assert!(answer.contains("a=setup:passive"), "{name}");
        assert!(answer.contains("a=fingerprint:sha-256 "), "{name}");
        assert!(answer.contains(" 10.0.0.1 10000 typ host"), "{name}");
        for refused in ["red/", "ulpfec/", "VP9/", "AV1/", "H265/", "CN/"] {
            assert!(!answer.contains(refused), "{name} answers {refused}");
        }
        assert!(answer.contains("opus/48000/2"), "{name}");
        assert!(
            answer.contains("VP8/90000") || answer.contains("H264/90000"),
            "{name}"
        );
        for l in answer.lines().filter(|l| l.contains("packetization-mode")) {
            assert!(l.contains("packetization-mode=1"), "{name}: {l}");
        }
        let golden = path.with_file_name(
            path.file_name()
                .map(|f| f.to_string_lossy().replace("-offer.sdp", "-answer.sdp"))
                .expect("file name"),
        );
        let got = normalize(&answer);
        if update {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", golden.display()));
        assert_eq!(got, want, "{name}: the answer changed");
    }
}

#[test]
fn a_bridged_peer_hands_its_rtp_over_and_sends_what_it_is_given() {
    let mut now = Instant::now();
    let mut hub = hub();
    let (mut client, id, audio, _video, mut events) =
        connect_app(&mut hub, &mut now, PeerApp::Bridge);
    let formats = hub.formats(id);
    let first_audio = formats
        .iter()
        .find(|f| f.kind == StreamKind::Audio)
        .expect("audio formats");
    assert_eq!(first_audio.codec.name, "opus");
    assert_eq!(first_audio.codec.clock_rate, 48_000);
    assert!(formats.iter().any(|f| f.codec.name == "telephone-event"));
    assert!(
        formats
            .iter()
            .any(|f| f.kind == StreamKind::Video && f.codec.name == "VP8")
    );

    let opus = pt_of(&client.rtc, Codec::Opus, 48_000);
    for i in 0..10u64 {
        let mut api = client.rtc.direct_api();
        let tx = api.stream_tx_by_mid(audio, None).expect("audio stream");
        tx.write_rtp(RtpWrite::new(
            opus,
            SeqNo::from(1000 + i),
            (i * 960) as u32,
            now,
            vec![i as u8; 40],
        ));
        run(
            &mut hub,
            &mut client,
            &mut events,
            &mut now,
            Duration::from_millis(20),
            |_, _| false,
        );
    }
    assert_eq!(
        client.bridged.len(),
        10,
        "nothing is echoed, all is handed over"
    );
    for (i, (kind, p)) in client.bridged.iter().enumerate() {
        let h = crate::media::rtp::RtpHeader::parse(p).expect("RTP");
        assert_eq!(*kind, StreamKind::Audio);
        assert_eq!(h.payload_type, *opus);
        assert_eq!(h.sequence, 1000 + i as u16);
        assert_eq!(h.payload(p), vec![i as u8; 40].as_slice());
    }
    assert!(
        !client
            .events
            .iter()
            .any(|e| matches!(e, Event::RtpPacket(_))),
        "a bridged peer does not echo"
    );

    // What the call layer writes reaches the client, across a sequence wrap.
    for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
        let mut p = Vec::new();
        crate::media::rtp::write(
            &mut p,
            &crate::media::rtp::RtpHeader::new(*opus, seq, 960 * i as u32, 0x1234, false),
            &[7; 30],
        );
        hub.write_rtp(now, id, StreamKind::Audio, &p);
        run(
            &mut hub,
            &mut client,
            &mut events,
            &mut now,
            Duration::from_millis(20),
            |_, _| false,
        );
    }
    let got: Vec<u64> = client
        .events
        .iter()
        .filter_map(|e| match e {
            Event::RtpPacket(p) => Some(*p.seq_no),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    assert_eq!(hub.counters(id).expect("peer").packets_out, 4);
}

#[test]
fn an_offer_to_a_browser_connects_once_answered_in_our_codec_order() {
    let mut now = Instant::now();
    let mut hub = hub();
    let (id, offer) = hub
        .create_offer(now, &[AudioCodec::Pcmu, AudioCodec::Opus], &[])
        .expect("offer");
    assert!(offer.contains("a=ice-lite"), "{offer}");
    assert!(offer.contains("a=setup:actpass"), "{offer}");
    assert!(!offer.contains("m=video"), "{offer}");
    let m = offer
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .expect("audio section");
    assert!(m.ends_with("0 111 110 126"), "PCMU first, then Opus: {m}");

    // Ringing for longer than a browser's own connect timeout is fine.
    now += CONNECT_TIMEOUT + Duration::from_secs(5);
    hub.handle_timeout(now);
    assert_eq!(hub.len(), 1, "an offer waits for its answer");

    // A browser (full ICE) answers with what it can, in our order (as
    // Chromium does; str0m answers in its own order, so it is given ours).
    let mut client = Client::new(
        now,
        offer_codecs(&[AudioCodec::Pcmu, AudioCodec::Opus], &[]),
    );
    let answer = client.answer(&offer);
    assert!(matches!(
        hub.accept_answer(now, PeerId(99), &answer),
        Err(WebrtcError::Unanswerable(_))
    ));
    assert!(matches!(
        hub.accept_answer(now, id, "v=0 junk"),
        Err(WebrtcError::BadSdp(_))
    ));
    hub.accept_answer(now, id, &answer).expect("answer");
    assert!(
        hub.accept_answer(now, id, &answer).is_err(),
        "one answer per offer"
    );
    let formats = hub.formats(id);
    let first = formats.first().expect("formats");
    assert_eq!(
        (first.kind, first.codec.name.as_str(), first.pt),
        (StreamKind::Audio, "PCMU", 0)
    );
    assert!(formats.iter().any(|f| f.codec.name == "telephone-event"));

    let mut events = until_connected(&mut hub, &mut client, id, &mut now);
    // Media goes both ways as on an answered peer.
    let mut p = Vec::new();
    crate::media::rtp::write(
        &mut p,
        &crate::media::rtp::RtpHeader::new(0, 5, 160, 0x1234, false),
        &[0xff; 160],
    );
    hub.write_rtp(now, id, StreamKind::Audio, &p);
    run(
        &mut hub,
        &mut client,
        &mut events,
        &mut now,
        Duration::from_millis(40),
        |_, _| false,
    );
    assert!(
        client
            .events
            .iter()
            .any(|e| matches!(e, Event::RtpPacket(p) if p.payload.len() == 160)),
        "the browser got our PCMU"
    );
}

#[test]
fn an_offer_to_a_browser_with_video_lists_its_codecs_in_order_and_the_answer_picks_one() {
    let now = Instant::now();
    let mut hub = hub();
    let (id, offer) = hub
        .create_offer(
            now,
            &[AudioCodec::Pcmu],
            &[VideoCodec::H264, VideoCodec::Vp8],
        )
        .expect("offer");
    let m = offer
        .lines()
        .find(|l| l.starts_with("m=video"))
        .expect("video section");
    // Constrained baseline H.264 (and its RTX), baseline, then VP8.
    let pts: Vec<&str> = m.split(' ').skip(3).collect();
    assert_eq!(pts.first(), Some(&"108"), "{m}");
    let vp8 = offer
        .lines()
        .find_map(|l| l.strip_suffix(" VP8/90000")?.strip_prefix("a=rtpmap:"))
        .expect("VP8 offered");
    let pos = |pt: &str| pts.iter().position(|p| *p == pt).expect("offered");
    assert!(pos("127") < pos(vp8), "{m}");
    assert!(offer.contains("profile-level-id=42e01f"), "{offer}");

    // A browser that sends only VP8 answers with it.
    let mut vp8_only = CodecConfig::empty();
    vp8_only.enable_pcmu(true, false);
    vp8_only.enable_vp8(true);
    let mut client = Client::new(now, vp8_only);
    let answer = client.answer(&offer);
    hub.accept_answer(now, id, &answer).expect("answer");
    let video: Vec<_> = hub
        .formats(id)
        .into_iter()
        .filter(|f| f.kind == StreamKind::Video)
        .collect();
    assert_eq!(video.first().map(|f| f.codec.name.as_str()), Some("VP8"));
}

#[test]
fn an_offer_nobody_answers_is_dropped_after_the_offer_timeout() {
    let now = Instant::now();
    let mut hub = hub();
    let (id, _) = hub
        .create_offer(now, &[AudioCodec::Opus], &[])
        .expect("offer");
    assert!(
        hub.create_offer(now, &[], &[VideoCodec::Vp8]).is_err(),
        "no codec, no offer"
    );
    hub.handle_timeout(now + OFFER_TIMEOUT);
    assert_eq!(hub.len(), 1);
    hub.handle_timeout(now + OFFER_TIMEOUT + Duration::from_millis(2));
    assert!(hub.is_empty());
    let closed: Vec<_> = std::iter::from_fn(|| hub.poll_output())
        .filter_map(|o| match o {
            HubOutput::Event(p, PeerEvent::Closed(r)) => Some((p, r)),
            _ => None,
        })
        .collect();
    assert_eq!(closed, [(id, CloseReason::NeverConnected)]);
}

#[test]
fn opus_is_limited_to_the_far_ends_rate_in_its_format_parameters() {
    let offer = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/sdp/chromium-156-offer.sdp"),
    )
    .expect("fixture");
    let (_, answer) = hub()
        .accept_offer(Instant::now(), &offer, PeerApp::Bridge)
        .expect("answer");
    let limited = limit_opus_rate(&answer, 111, 8000);
    let fmtp: Vec<&str> = limited
        .lines()
        .filter(|l| l.starts_with("a=fmtp:111 "))
        .collect();
    assert_eq!(fmtp.len(), 1, "{limited}");
    assert!(
        fmtp[0].ends_with(";maxplaybackrate=8000;sprop-maxcapturerate=8000"),
        "{}",
        fmtp[0]
    );
    // Nothing else changed, and the line endings stayed CRLF.
    assert_eq!(
        limited.replace(";maxplaybackrate=8000;sprop-maxcapturerate=8000", ""),
        answer
    );
    assert!(limited.contains("sprop-maxcapturerate=8000\r\n"));
    // Still SDP a browser (and str0m) reads.
    assert!(SdpAnswer::from_sdp_string(&limited).is_ok());

    // Without an fmtp line for the payload type, one follows its rtpmap.
    let bare =
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n";
    assert_eq!(
        limit_opus_rate(bare, 111, 16000),
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
         a=fmtp:111 maxplaybackrate=16000;sprop-maxcapturerate=16000\r\na=sendrecv\r\n"
    );
    // Applied twice, it says so once.
    assert_eq!(limit_opus_rate(&limited, 111, 8000), limited);
    // A last line without its CRLF still gets its own line after it.
    assert_eq!(
        limit_opus_rate("a=rtpmap:111 opus/48000/2", 111, 8000),
        "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 maxplaybackrate=8000;sprop-maxcapturerate=8000\r\n"
    );
    // Another payload type's fmtp is left alone.
    let other = "a=rtpmap:0 PCMU/8000\r\na=fmtp:0 x=1\r\n";
    assert_eq!(limit_opus_rate(other, 111, 8000), other);
}

/// TWCC feedback is negotiated for peers with video only, whichever side
/// offers.
#[test]
fn transport_wide_congestion_control_is_negotiated_only_with_video() {
    // The header extension that numbers packets, and the feedback itself.
    const TWCC: [&str; 2] = ["transport-wide-cc", "transport-cc"];
    let has = |sdp: &str| TWCC.map(|t| sdp.contains(t));
    let now = Instant::now();
    let mut hub = hub();

    // A browser's offers: str0m, as Chrome, puts TWCC in every section.
    let mut client = Client::new(now, codec_config());
    let (with_video, ..) = client.offer();
    let mut client = Client::new(now, codec_config());
    let mut api = client.rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let audio_only = api.apply().expect("offer").0.to_sdp_string();
    assert_eq!((has(&with_video), has(&audio_only)), ([true; 2], [true; 2]));

    let (_, answer) = hub
        .accept_offer(now, &with_video, PeerApp::Echo)
        .expect("answer");
    assert_eq!(has(&answer), [true; 2], "{answer}");
    let (_, answer) = hub
        .accept_offer(now, &audio_only, PeerApp::Echo)
        .expect("answer");
    assert_eq!(has(&answer), [false; 2], "{answer}");

    // Our own offers.
    let (_, offer) = hub
        .create_offer(now, &[AudioCodec::Opus], &[VideoCodec::Vp8])
        .expect("offer");
    assert_eq!(has(&offer), [true; 2], "{offer}");
    let (_, offer) = hub
        .create_offer(now, &[AudioCodec::Opus], &[])
        .expect("offer");
    assert_eq!(has(&offer), [false; 2], "{offer}");
    // Everything else of the standard set stays.
    assert!(
        offer.contains("urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        "{offer}"
    );
    assert!(
        offer.contains("urn:ietf:params:rtp-hdrext:sdes:mid"),
        "{offer}"
    );
}
