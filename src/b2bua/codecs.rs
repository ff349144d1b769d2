//! What a browser's negotiated formats mean for the SIP side: the audio it
//! sends, and the audio and video codecs a callee is offered for a caller
//! (its own first, relayed when picked, then those we transcode to). Pure
//! functions of formats and the rule; must not touch calls or messages.

use crate::media::bridge::AudioEnd;
use crate::webrtc::{PeerFormat, StreamKind};
use causeway_codecs::registry::AudioCodec;
use causeway_codecs::video::VideoCodec;

/// What the browser sends on audio: its first audio codec, and its
/// telephone-event at that codec's clock.
pub fn browser_audio(formats: &[PeerFormat]) -> Option<AudioEnd> {
    let audio = formats.iter().filter(|f| f.kind == StreamKind::Audio);
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
        .filter(|f| f.kind == StreamKind::Audio)
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
    let Some(first) = formats
        .iter()
        .filter(|f| f.kind == StreamKind::Video)
        .find_map(|f| causeway_codecs::registry::video_codec(&f.codec))
    else {
        return Vec::new();
    };
    let mut v = vec![first];
    if transcode {
        v.extend(
            [VideoCodec::H264, VideoCodec::Vp8]
                .into_iter()
                .filter(|c| *c != first),
        );
    }
    v
}
