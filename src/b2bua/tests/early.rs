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
    assert_eq!(methods(&drain(&mut b)), ["ringing", "media"]);
    // The second fork answers: the media moves to its address.
    b.on_response(t0, &reply(&inv[1], 200, "b", Some(&answer_pcmu_at(40010))));
    let out = drain(&mut b);
    assert_eq!(
        methods(&out),
        ["ACK", "CANCEL", "update-media", "connected"]
    );
    let Some(CallOutput::Notice(Notice::UpdateMedia { callee, .. })) = out.get(2) else {
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
