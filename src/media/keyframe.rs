//! Keyframe requests across legs: RTCP PLI/FIR on one side becomes a forced
//! keyframe on our encoder (transcoding), a PLI/FIR toward the sender
//! (passthrough), or a SIP INFO `picture_fast_update` (RFC 5168) for peers
//! that do no RTCP feedback. Also reads and writes that INFO body.
//!
//! Owns the decision and rate limiting (a browser sends PLIs in bursts; an
//! encoder forced every frame would never compress). It must not send
//! anything itself: it returns what the call layer should do.

use std::time::{Duration, Instant};

/// How the video toward the requester is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoPath {
    /// Our encoder produces it: force a keyframe.
    Transcoded,
    /// Relayed from the other leg, which takes RTCP feedback: forward it.
    RelayedRtcpFeedback,
    /// Relayed from a SIP peer without RTCP feedback: ask over SIP INFO.
    RelayedSipInfo,
}

impl VideoPath {
    /// Video relayed from a sender that takes RTCP keyframe requests when
    /// `fb` (its SDP's `a=rtcp-fb`), else SIP INFO.
    pub fn relayed(fb: bool) -> Self {
        if fb {
            Self::RelayedRtcpFeedback
        } else {
            Self::RelayedSipInfo
        }
    }
}

/// What to do about a keyframe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyframeAction {
    /// Force the next encoded frame to be a keyframe.
    ForceKeyframe,
    /// Ask the sending leg for a keyframe over RTCP (PLI + FIR, written by
    /// that leg's [`super::session::RtpSession::request_keyframe`]).
    AskSender,
    /// Send a SIP INFO with [`PICTURE_FAST_UPDATE`] on the other leg's dialog.
    SendSipInfo,
}

/// Content type of the SIP INFO body (RFC 5168).
pub const MEDIA_CONTROL_TYPE: &str = "application/media_control+xml";

/// The RFC 5168 body asking for a full frame.
pub const PICTURE_FAST_UPDATE: &str = "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\r\n\
<media_control>\r\n  <vc_primitive>\r\n    <to_encoder>\r\n      <picture_fast_update/>\r\n    \
</to_encoder>\r\n  </vc_primitive>\r\n</media_control>\r\n";

/// Whether a SIP INFO carries a picture_fast_update request.
pub fn is_picture_fast_update(content_type: &str, body: &str) -> bool {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    ct.eq_ignore_ascii_case(MEDIA_CONTROL_TYPE)
        && body.contains("<picture_fast_update")
        && body.contains("<media_control")
}

/// Turns requests from one leg into actions on the other, at most one per
/// interval (PLIs come in bursts on loss; FIR repeats carry the same seq).
#[derive(Debug, Clone)]
pub struct KeyframeRequests {
    path: VideoPath,
    min_interval: Duration,
    last: Option<Instant>,
}

impl KeyframeRequests {
    /// Requests toward video produced by `path`, no more often than every
    /// `min_interval` (250 ms is what browsers tolerate well).
    pub fn new(path: VideoPath, min_interval: Duration) -> Self {
        Self {
            path,
            min_interval,
            last: None,
        }
    }

    /// The path changed (a renegotiation switched passthrough/transcoding).
    pub fn set_path(&mut self, path: VideoPath) {
        self.path = path;
    }

    /// A request arrived (PLI, FIR or SIP INFO).
    pub fn on_request(&mut self, now: Instant) -> Option<KeyframeAction> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.min_interval)
        {
            return None;
        }
        self.last = Some(now);
        Some(match self.path {
            VideoPath::Transcoded => KeyframeAction::ForceKeyframe,
            VideoPath::RelayedSipInfo => KeyframeAction::SendSipInfo,
            VideoPath::RelayedRtcpFeedback => KeyframeAction::AskSender,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_gets_its_action_and_bursts_are_limited() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(VideoPath::Transcoded, Duration::from_millis(250));
        assert_eq!(k.on_request(t0), Some(KeyframeAction::ForceKeyframe));
        assert_eq!(k.on_request(t0 + Duration::from_millis(100)), None);
        assert_eq!(
            k.on_request(t0 + Duration::from_millis(300)),
            Some(KeyframeAction::ForceKeyframe)
        );

        let mut k = KeyframeRequests::new(VideoPath::RelayedSipInfo, Duration::ZERO);
        assert_eq!(k.on_request(t0), Some(KeyframeAction::SendSipInfo));

        k.set_path(VideoPath::RelayedRtcpFeedback);
        // The packet itself: `session::tests::keyframe_requests_carry_pli_and_fir`.
        assert_eq!(k.on_request(t0), Some(KeyframeAction::AskSender));
    }

    #[test]
    fn picture_fast_update_bodies_are_recognised() {
        assert!(is_picture_fast_update(
            MEDIA_CONTROL_TYPE,
            PICTURE_FAST_UPDATE
        ));
        // Polycom-style: no XML declaration, one line, content type with params.
        assert!(is_picture_fast_update(
            "Application/Media_Control+XML; charset=utf-8",
            "<media_control><vc_primitive><to_encoder><picture_fast_update></picture_fast_update></to_encoder></vc_primitive></media_control>"
        ));
        assert!(!is_picture_fast_update(
            "application/dtmf-relay",
            PICTURE_FAST_UPDATE
        ));
        assert!(!is_picture_fast_update(
            MEDIA_CONTROL_TYPE,
            "<media_control/>"
        ));
    }
}
