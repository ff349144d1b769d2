//! Call records: what the admin API shows of calls in progress and what
//! is kept of every bridged call once it ends (a CDR).
//!
//! [`Records`] builds each record from the call layer's notices (who
//! calls whom, through which rule; ringing, answer, end: who ended it and
//! why), what the media bridge decided (codecs each way, relayed or
//! transcoded) and the bridge's final counters. Sans-IO: wall-clock times
//! come in with each input; [`store`] keeps finished records in the
//! embedded database. Must not touch sockets or make call decisions.

pub mod store;

use crate::b2bua::{CallEvent, Notice};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Who called whom, as routed (reported when a bridged call starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallParties {
    /// The caller (its alias or display name).
    pub from: String,
    /// The alias called (after the dialplan's transforms).
    pub to: String,
    /// The dialplan rule that routed it.
    pub rule: String,
    /// The caller's leg: `sip` or `webrtc`.
    pub caller_leg: String,
}

/// What the media bridge runs for a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaPlan {
    /// The callee's leg: `sip` or `webrtc`.
    pub callee_leg: String,
    /// The caller's codec (`PCMU/8000`).
    pub caller_codec: String,
    /// The callee's codec.
    pub callee_codec: String,
    /// `passthrough` (relayed untouched) or `transcoded`.
    pub audio: String,
    /// The video between a browser and a SIP endpoint, when both sides
    /// have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoPlan>,
    /// The video between two SIP endpoints, when both sides have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_video: Option<SipVideoPlan>,
}

/// The video of a call between two SIP endpoints: the callee took one of
/// the caller's own formats, relayed both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipVideoPlan {
    /// The codec both sides send (`H264/90000`).
    pub codec: String,
    /// `passthrough`.
    pub video: String,
}

/// The video of a call between a browser and a SIP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoPlan {
    /// What the browser sends (`VP8/90000`).
    pub browser_codec: String,
    /// What the browser is sent: its own codec, unless it takes only
    /// another (records from before this field say nothing).
    #[serde(default)]
    pub browser_receives: String,
    /// What the SIP side sends (and is sent).
    pub sip_codec: String,
    /// Toward the SIP side: `passthrough` or `transcoded`.
    pub to_sip: String,
    /// Toward the browser: `passthrough` or `transcoded`.
    pub to_browser: String,
}

/// A bridged call's media counters when it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaTotals {
    /// Packets received from the caller, and sent on to the callee.
    pub to_callee_in: u64,
    /// Packets sent to the callee.
    pub to_callee_out: u64,
    /// Packets received from the callee.
    pub to_caller_in: u64,
    /// Packets sent to the caller.
    pub to_caller_out: u64,
    /// Packets lost (sequence gaps) on the SIP side's RTP.
    pub lost: u64,
    /// Video packets received from the browser, and sent to the SIP side.
    #[serde(default)]
    pub video_to_sip_in: u64,
    /// Video packets sent to the SIP side.
    #[serde(default)]
    pub video_to_sip_out: u64,
    /// Video packets received from the SIP side.
    #[serde(default)]
    pub video_to_browser_in: u64,
    /// Video packets sent to the browser.
    #[serde(default)]
    pub video_to_browser_out: u64,
    /// Between two SIP endpoints: video packets received from the caller.
    #[serde(default)]
    pub video_to_callee_in: u64,
    /// Video packets sent to the callee.
    #[serde(default)]
    pub video_to_callee_out: u64,
    /// Video packets received from the callee.
    #[serde(default)]
    pub video_to_caller_in: u64,
    /// Video packets sent to the caller.
    #[serde(default)]
    pub video_to_caller_out: u64,
}

/// One side of a call in progress, as the admin API shows it: its SDPs
/// and, for a SIP side, its session timer; for a browser, its ICE and DTLS
/// state and the peer's counters. Not kept in the CDR.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegState {
    /// `caller` or `callee`.
    pub side: String,
    /// `sip` or `webrtc`.
    pub leg: String,
    /// Our latest SDP toward it.
    pub local_sdp: String,
    /// Its latest SDP.
    pub remote_sdp: String,
    /// A SIP side's session timer (RFC 4028), seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_expires: Option<u32>,
    /// Who refreshes it: `gateway` or `peer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresher: Option<String>,
    /// A browser's ICE state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice: Option<String>,
    /// A browser's DTLS state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtls: Option<String>,
    /// RTP packets from the browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_in: Option<u64>,
    /// RTP packets to the browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_out: Option<u64>,
    /// The highest loss fraction the browser's RTCP reported (0-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_in: Option<f32>,
    /// Round-trip time from RTCP, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u32>,
    /// The browser's call id in the client API (where its state is).
    #[serde(skip)]
    pub browser_call: Option<String>,
}

/// One call: in progress (no `ended_at` yet) or over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The call's id.
    pub id: String,
    /// Who called whom.
    #[serde(flatten)]
    pub parties: CallParties,
    /// `calling`, `ringing`, `connected` or `ended`.
    pub state: String,
    /// Unix milliseconds.
    pub started_at: u64,
    /// When a callee answered (unix ms).
    pub answered_at: Option<u64>,
    /// When it ended (unix ms).
    pub ended_at: Option<u64>,
    /// Codecs and relaying, once media runs.
    pub media: Option<MediaPlan>,
    /// Who ended it: `browser`, `sip` (the callee), `caller` (a SIP
    /// caller), `gateway`.
    pub ended_by: Option<String>,
    /// The SIP status of a failed call (486, 408, 487...).
    pub status: Option<u16>,
    /// Why it ended.
    pub reason: Option<String>,
    /// Media counters: every few seconds while the call runs, final once
    /// it stopped.
    pub totals: Option<MediaTotals>,
    /// Each side's state, in the list of calls in progress only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<LegState>,
}

/// Calls in progress, and ended calls waiting for their media counters.
#[derive(Debug, Default)]
pub struct Records {
    live: HashMap<String, CallRecord>,
    /// Counters of running calls so far (a record's `totals` are only
    /// the final ones: they complete it).
    progress: HashMap<String, MediaTotals>,
}

impl Records {
    /// A bridged call starts (before any of its notices).
    pub fn start(&mut self, wall_ms: u64, call: &str, parties: CallParties) {
        self.live.insert(
            call.to_string(),
            CallRecord {
                id: call.to_string(),
                parties,
                state: "calling".into(),
                started_at: wall_ms,
                answered_at: None,
                ended_at: None,
                media: None,
                ended_by: None,
                status: None,
                reason: None,
                totals: None,
                legs: Vec::new(),
            },
        );
    }

    /// Follows a call's notice. Returns the finished record when the call
    /// ended without media (nothing more will come for it).
    pub fn on_notice(&mut self, wall_ms: u64, n: &Notice) -> Option<CallRecord> {
        match n {
            Notice::Event(call, ev) => {
                let r = self.live.get_mut(call)?;
                match ev {
                    CallEvent::Ringing => r.state = "ringing".into(),
                    CallEvent::Connected { .. } => {
                        r.state = "connected".into();
                        r.answered_at.get_or_insert(wall_ms);
                    }
                    CallEvent::Ended { by, status, reason } => {
                        r.state = "ended".into();
                        r.ended_at = Some(wall_ms);
                        r.ended_by = Some(by.as_str().to_string());
                        r.status = *status;
                        r.reason = Some(reason.clone());
                    }
                }
                None
            }
            Notice::Release { call, .. } => {
                let r = self.live.get(call)?;
                // Media counters come when the bridge stops (which may have
                // happened already: a browser's peer closing ends it).
                if r.media.is_some() && r.totals.is_none() {
                    None
                } else {
                    self.progress.remove(call);
                    self.live.remove(call)
                }
            }
            Notice::StartMedia { .. }
            | Notice::RingBrowser { .. }
            | Notice::DtmfToBrowser { .. }
            | Notice::PlayDigit { .. }
            | Notice::KeyframeWanted { .. }
            | Notice::Hold { .. }
            | Notice::UpdateMedia { .. } => None,
        }
    }

    /// What the bridge runs for a call.
    pub fn media(&mut self, call: &str, plan: MediaPlan) {
        if let Some(r) = self.live.get_mut(call) {
            r.media = Some(plan);
        }
    }

    /// A running call's media was planned anew (a side changed codec, the
    /// browser sent video in another): the record takes the new plan; its
    /// video stays where the plan has none (a SIP side between SIP sides).
    pub fn media_replanned(&mut self, call: &str, plan: MediaPlan) {
        if let Some(r) = self.live.get_mut(call) {
            let video = r.media.take().and_then(|m| m.video);
            r.media = Some(MediaPlan {
                video: plan.video.or(video),
                ..plan
            });
        }
    }

    /// A running call's media counters so far.
    pub fn media_progress(&mut self, call: &str, totals: MediaTotals) {
        if self.live.get(call).is_some_and(|r| r.ended_at.is_none()) {
            self.progress.insert(call.to_string(), totals);
        }
    }

    /// A call's media stopped with these counters: its record is finished
    /// when the call has ended too.
    pub fn media_stopped(&mut self, call: &str, totals: MediaTotals) -> Option<CallRecord> {
        self.progress.remove(call);
        let r = self.live.get_mut(call)?;
        r.totals = Some(totals);
        if r.ended_at.is_some() {
            self.live.remove(call)
        } else {
            None
        }
    }

    /// Calls in progress, oldest first.
    pub fn active(&self) -> Vec<CallRecord> {
        let mut v: Vec<CallRecord> = self
            .live
            .values()
            .filter(|r| r.ended_at.is_none())
            .map(|r| CallRecord {
                totals: r.totals.or_else(|| self.progress.get(&r.id).copied()),
                ..r.clone()
            })
            .collect();
        v.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b2bua::Side;

    fn parties() -> CallParties {
        CallParties {
            from: "carol".into(),
            to: "alice".into(),
            rule: "local".into(),
            caller_leg: "sip".into(),
        }
    }

    fn event(call: &str, ev: CallEvent) -> Notice {
        Notice::Event(call.into(), ev)
    }

    fn release(call: &str) -> Notice {
        Notice::Release {
            call: call.into(),
            peer: None,
        }
    }

    #[test]
    fn an_answered_call_is_recorded_once_its_media_counters_are_in() {
        let mut r = Records::default();
        r.start(1_000, "c1", parties());
        assert_eq!(r.on_notice(1_100, &event("c1", CallEvent::Ringing)), None);
        assert_eq!(r.active()[0].state, "ringing");
        let connected = CallEvent::Connected {
            codec: "PCMU/8000".into(),
        };
        assert_eq!(r.on_notice(2_000, &event("c1", connected)), None);
        r.media(
            "c1",
            MediaPlan {
                callee_leg: "sip".into(),
                caller_codec: "PCMU/8000".into(),
                callee_codec: "PCMU/8000".into(),
                audio: "passthrough".into(),
                video: None,
                sip_video: None,
            },
        );
        // Counters so far show in the list but do not complete the record.
        let so_far = MediaTotals {
            to_callee_in: 100,
            ..Default::default()
        };
        r.media_progress("c1", so_far);
        assert_eq!(r.active()[0].totals, Some(so_far));
        let ended = CallEvent::Ended {
            by: Side::Caller,
            status: None,
            reason: "hangup".into(),
        };
        assert_eq!(r.on_notice(9_000, &event("c1", ended)), None);
        assert_eq!(r.on_notice(9_000, &release("c1")), None);
        assert!(r.active().is_empty(), "ended calls are not active");
        let totals = MediaTotals {
            to_callee_in: 350,
            to_callee_out: 350,
            ..Default::default()
        };
        let done = r.media_stopped("c1", totals).expect("finished");
        assert_eq!(
            (done.started_at, done.answered_at, done.ended_at),
            (1_000, Some(2_000), Some(9_000))
        );
        assert_eq!(done.ended_by.as_deref(), Some("caller"));
        assert_eq!(done.totals, Some(totals));
        assert_eq!(r.media_stopped("c1", totals), None, "recorded once");
    }

    #[test]
    fn a_replanned_call_records_its_new_audio_and_keeps_its_video() {
        let mut r = Records::default();
        r.start(0, "c4", parties());
        let video = VideoPlan {
            browser_codec: "VP8/90000".into(),
            browser_receives: "VP8/90000".into(),
            sip_codec: "H264/90000".into(),
            to_sip: "transcoded".into(),
            to_browser: "transcoded".into(),
        };
        let plan = |codec: &str, audio: &str, video| MediaPlan {
            callee_leg: "sip".into(),
            caller_codec: "PCMU/8000".into(),
            callee_codec: codec.into(),
            audio: audio.into(),
            video,
            sip_video: None,
        };
        r.media("c4", plan("PCMU/8000", "passthrough", Some(video.clone())));
        r.media_replanned("c4", plan("PCMA/8000", "transcoded", None));
        assert_eq!(
            r.active()[0].media,
            Some(plan("PCMA/8000", "transcoded", Some(video.clone())))
        );
        // The browser sends H.264 after all: relayed toward the SIP side.
        let followed = VideoPlan {
            browser_codec: "H264/90000".into(),
            to_sip: "passthrough".into(),
            ..video
        };
        r.media_replanned(
            "c4",
            plan("PCMA/8000", "transcoded", Some(followed.clone())),
        );
        assert_eq!(
            r.active()[0].media.as_ref().and_then(|m| m.video.clone()),
            Some(followed)
        );
    }

    #[test]
    fn media_that_stopped_before_the_call_ended_is_recorded_at_the_release() {
        let mut r = Records::default();
        r.start(0, "c3", parties());
        r.media(
            "c3",
            MediaPlan {
                callee_leg: "webrtc".into(),
                caller_codec: "PCMU/8000".into(),
                callee_codec: "PCMU/8000".into(),
                audio: "passthrough".into(),
                video: None,
                sip_video: None,
            },
        );
        // The browser's peer closed: its media task stopped first.
        assert_eq!(r.media_stopped("c3", MediaTotals::default()), None);
        let ended = CallEvent::Ended {
            by: Side::Browser,
            status: None,
            reason: "hangup".into(),
        };
        assert_eq!(r.on_notice(700, &event("c3", ended)), None);
        let done = r.on_notice(700, &release("c3")).expect("finished");
        assert_eq!(done.ended_by.as_deref(), Some("browser"));
        assert_eq!(done.totals, Some(MediaTotals::default()));
    }

    #[test]
    fn a_call_that_never_connected_is_recorded_at_its_release() {
        let mut r = Records::default();
        r.start(0, "c2", parties());
        let busy = CallEvent::Ended {
            by: Side::Sip,
            status: Some(486),
            reason: "486 Busy Here".into(),
        };
        assert_eq!(r.on_notice(500, &event("c2", busy)), None);
        let done = r.on_notice(500, &release("c2")).expect("finished");
        assert_eq!(
            (done.status, done.ended_by.as_deref(), done.answered_at),
            (Some(486), Some("sip"), None)
        );
        // Notices of calls never started here (echo, browser forks) are ignored.
        assert_eq!(r.on_notice(0, &release("other")), None);
    }
}
