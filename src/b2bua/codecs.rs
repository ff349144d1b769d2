//! What a browser's negotiated formats mean for the SIP side: the audio it
//! sends, and the audio and video codecs a callee is offered for a caller
//! (its own first, relayed when picked, then those we transcode to), a
//! browser callee included; and the video formats SIP callees are offered
//! for a SIP caller (its own, relayed). Pure functions of formats, offers
//! and the rule; must not touch calls or messages.

use crate::media::bridge::AudioEnd;
use crate::sdp::{Format, SessionDesc};
use crate::webrtc::{PeerFormat, StreamKind};
use causeway_codecs::registry::{AudioCodec, video_codec};
use causeway_codecs::video::VideoCodec;

/// What the browser sends on audio: its first audio codec, and its
/// telephone-event at that codec's clock.
pub fn browser_audio(formats: &[PeerFormat]) -> Option<AudioEnd> {
    let audio = formats
        .iter()
        .filter(|f| f.kind == StreamKind::Audio && f.answered);
    let (codec, pt) = audio
        .clone()
        .find_map(|f| AudioCodec::from_key(&f.codec).map(|c| (c, f.pt)))?;
    let clock = codec.key().clock_rate;
    let dtmf = audio
        .filter(|f| f.codec.name.eq_ignore_ascii_case("telephone-event"))
        .find(|f| f.codec.clock_rate == clock)
        .map(|f| (f.pt, clock));
    Some(AudioEnd { pt, codec, dtmf })
}

/// A browser's call that is sure to be transcoded: the browser sends Opus
/// and none of `sip` (the codecs offered to the SIP side) is Opus. Returns
/// the Opus payload type and the highest audio rate among `sip`: what the
/// browser's encoder need carry (SDP's `maxplaybackrate`). `None` when Opus
/// may be relayed untouched or the browser does not send Opus.
pub fn opus_rate_limit(formats: &[PeerFormat], sip: &[AudioCodec]) -> Option<(u8, u32)> {
    let browser = browser_audio(formats)?;
    if browser.codec != AudioCodec::Opus || sip.contains(&AudioCodec::Opus) {
        return None;
    }
    let rate = sip.iter().map(|c| c.audio_rate()).max()?;
    Some((browser.pt, rate))
}

/// The audio codecs to offer the SIP side for a browser's call: see
/// [`offer_codecs`], with the browser's audio codecs as `theirs` (a WebRTC
/// client offering only Opus still reaches a G.711 phone).
pub fn sip_offer_codecs(
    formats: &[PeerFormat],
    rule: &[String],
    transcode: bool,
) -> Vec<AudioCodec> {
    let browser: Vec<AudioCodec> = formats
        .iter()
        .filter(|f| f.kind == StreamKind::Audio && f.answered)
        .filter_map(|f| AudioCodec::from_key(&f.codec))
        .collect();
    offer_codecs(&browser, rule, transcode)
}

/// The audio codecs to offer a callee for a caller that sends `theirs`:
/// the caller's own first (relayed untouched when the callee picks one),
/// then, when the rule allows transcoding, the others we transcode to.
/// Where the rule names codecs, only those, each group in the rule's
/// order; else the caller's order, then the gateway's.
pub fn offer_codecs(theirs: &[AudioCodec], rule: &[String], transcode: bool) -> Vec<AudioCodec> {
    let allowed: Vec<AudioCodec> = if rule.is_empty() {
        theirs.iter().chain(&AudioCodec::ALL).copied().collect()
    } else {
        rule.iter()
            .filter_map(|name| {
                AudioCodec::ALL
                    .into_iter()
                    .find(|c| c.key().name.eq_ignore_ascii_case(name))
            })
            .collect()
    };
    let own = allowed.iter().filter(|c| theirs.contains(c));
    let others = allowed.iter().filter(|c| transcode && !theirs.contains(c));
    let mut v: Vec<AudioCodec> = Vec::new();
    for &c in own.chain(others) {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v
}

/// The video codecs to offer the SIP side for a browser's call: the one
/// the browser sends first (relayed when the SIP side takes it), then,
/// when `transcode`, the other one we can transcode to.
pub fn browser_video_codecs(formats: &[PeerFormat], transcode: bool) -> Vec<VideoCodec> {
    with_transcoded(browser_video(formats).into_iter().collect(), transcode)
}

/// The browser's first video codec we bridge: what it would rather
/// receive and, in its own offer, what it sends.
pub fn browser_video(formats: &[PeerFormat]) -> Option<VideoCodec> {
    formats
        .iter()
        .filter(|f| f.kind == StreamKind::Video && f.answered)
        .find_map(|f| video_codec(&f.codec))
}

/// The video codecs to offer browsers for a SIP caller's offer: those of
/// its first live video section that we bridge, in its order (relayed
/// when the browser picks one), then, when `transcode`, the other one we
/// can transcode to. Empty without such a section.
pub fn caller_video_codecs(offer: &SessionDesc, transcode: bool) -> Vec<VideoCodec> {
    with_transcoded(sip_video(offer).collect(), transcode)
}

/// The video formats to offer SIP callees for a SIP caller's offer: for
/// each codec of its first live video section that we bridge, in its
/// order, the format our answer to the caller takes for that codec
/// ([`crate::sdp::pick_format`]), as the caller wrote it (payload type,
/// profile, packetization mode). Whichever a callee picks, our answer
/// gives the caller the same format, and the video is relayed untouched.
/// Empty without such a section.
pub fn caller_video_formats(offer: &SessionDesc) -> Vec<Format> {
    let Some(m) = offer.active_video() else {
        return Vec::new();
    };
    let mut formats: Vec<Format> = Vec::new();
    for c in sip_video(offer) {
        let of_codec = |f: &&Format| f.codec.as_ref().and_then(video_codec) == Some(c);
        if formats.iter().any(|f| of_codec(&f)) {
            continue;
        }
        formats.extend(crate::sdp::pick_format(&m.formats, of_codec).cloned());
    }
    formats
}

/// The codec of a SIP caller's video our answer takes when the browser
/// that answered sends `browser`: that one where the caller offered it
/// (relayed), else the first the caller offered that we transcode to.
pub fn caller_video_answer(offer: &SessionDesc, browser: VideoCodec) -> Option<VideoCodec> {
    let mut theirs = sip_video(offer);
    theirs
        .clone()
        .find(|c| *c == browser)
        .or_else(|| theirs.next())
}

/// The codecs of a SIP offer's first live video section we bridge.
fn sip_video(offer: &SessionDesc) -> impl Iterator<Item = VideoCodec> + Clone + '_ {
    offer
        .active_video()
        .into_iter()
        .flat_map(|m| &m.formats)
        .filter_map(|f| f.codec.as_ref().and_then(video_codec))
}

/// `theirs` once each, then, when `transcode` and `theirs` has any, the
/// codecs we transcode to that it lacks.
fn with_transcoded(theirs: Vec<VideoCodec>, transcode: bool) -> Vec<VideoCodec> {
    let mut v: Vec<VideoCodec> = Vec::new();
    for c in theirs {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    if transcode && !v.is_empty() {
        for c in [VideoCodec::H264, VideoCodec::Vp8] {
            if !v.contains(&c) {
                v.push(c);
            }
        }
    }
    v
}
