//! Session timers (RFC 4028), sans-IO: the `Session-Expires` and `Min-SE`
//! headers, what interval and refresher a UAS grants a session-refresh
//! request, and when a dialog's next refresh is due or its session has
//! expired.
//!
//! Owns only the header grammar and the arithmetic. The call layer decides
//! which request refreshes and whom to hang up; time comes in as a
//! parameter. It must not touch dialogs, transactions or clocks.

use super::msg::{Message, parse_params};
#[cfg(test)]
use super::{supports, unsupported};
use std::time::{Duration, Instant};

/// The smallest interval RFC 4028 allows anyone to ask for (section 4).
pub const MIN_SE: u32 = 90;

/// The gateway's session-timer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimers {
    /// The interval we ask for and grant at most, in seconds (0: we ask
    /// for none, and grant only what a caller asks for).
    pub expires: u32,
    /// The smallest interval we accept (`Min-SE`), at least [`MIN_SE`].
    pub min_se: u32,
}

impl Default for SessionTimers {
    fn default() -> Self {
        Self {
            expires: 1800,
            min_se: MIN_SE,
        }
    }
}

/// Who sends the refreshes, as the `refresher` parameter names them: the
/// UAC or the UAS of the transaction that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The sender of the request.
    Uac,
    /// The sender of the response.
    Uas,
}

/// A `Session-Expires` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// Seconds.
    pub interval: u32,
    /// Who refreshes; a request may leave it to the UAS.
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// The message's `Session-Expires` (or its compact form `x`); `None`
    /// when absent or unreadable.
    pub fn of(msg: &Message) -> Option<Self> {
        let value = msg.header("Session-Expires")?;
        let (secs, params) = value.split_once(';').unwrap_or((value, ""));
        let interval = secs.trim().parse().ok()?;
        let refresher = parse_params(params)
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("refresher"))
            .and_then(|(_, v)| match v?.to_ascii_lowercase().as_str() {
                "uac" => Some(Refresher::Uac),
                "uas" => Some(Refresher::Uas),
                _ => None,
            });
        Some(Self {
            interval,
            refresher,
        })
    }

    /// The header value (`1800;refresher=uac`).
    pub fn value(&self) -> String {
        match self.refresher {
            Some(Refresher::Uac) => format!("{};refresher=uac", self.interval),
            Some(Refresher::Uas) => format!("{};refresher=uas", self.interval),
            None => self.interval.to_string(),
        }
    }
}

/// The message's `Min-SE` (0 when absent).
pub fn min_se(msg: &Message) -> u32 {
    msg.header("Min-SE")
        .and_then(|v| v.split(';').next()?.trim().parse().ok())
        .unwrap_or(0)
}

/// What a UAS makes of a session-refresh request (an INVITE, a
/// re-INVITE, an UPDATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// No session timer.
    Off,
    /// A timer: the `Session-Expires` of our 2xx, refresher always set.
    On(SessionExpires),
    /// The interval asked for is below our minimum: 422 with this `Min-SE`.
    TooSmall(u32),
}

impl SessionTimers {
    /// The timer a UAS grants `req` (RFC 4028 section 9). An interval
    /// below our minimum gets 422 from a UAC that supports timers, and is
    /// raised for one that does not (it could not retry). We keep the
    /// interval asked for unless ours is shorter (never below either
    /// side's `Min-SE`). A request without `Session-Expires` from a UAC
    /// that supports timers gets ours with the UAC refreshing; one from a
    /// UAC that does not gets none. Where the request leaves the refresher
    /// open, the UAC refreshes if it can, else the UAS.
    pub fn grant(&self, req: &Message) -> Grant {
        let timer = super::supports(req, "timer");
        let floor = self.min_se.max(min_se(req));
        let asked = match SessionExpires::of(req) {
            Some(se) if se.interval < self.min_se && timer => return Grant::TooSmall(floor),
            Some(se) => se,
            None if timer && self.expires > 0 => SessionExpires {
                interval: self.expires,
                refresher: Some(Refresher::Uac),
            },
            None => return Grant::Off,
        };
        let interval = if self.expires > 0 {
            asked.interval.min(self.expires)
        } else {
            asked.interval
        };
        let refresher = match asked.refresher {
            Some(Refresher::Uac) if timer => Refresher::Uac,
            Some(Refresher::Uas) => Refresher::Uas,
            _ if timer => Refresher::Uac,
            _ => Refresher::Uas,
        };
        Grant::On(SessionExpires {
            interval: interval.max(floor),
            refresher: Some(refresher),
        })
    }
}

/// One dialog's running session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegTimer {
    /// The session interval.
    pub interval: Duration,
    /// Whether we send the refreshes (else we wait for the peer's).
    pub we_refresh: bool,
    /// When to refresh, or, when the peer refreshes or our refresh is
    /// unanswered, when the session has expired.
    pub due: Instant,
    /// Our refresh went out and no 2xx came back yet.
    waiting: bool,
}

/// What a [`LegTimer`] that fell due asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a refresh now.
    Refresh,
    /// The session expired: end it.
    Expired,
}

impl LegTimer {
    /// A timer as `se` set it in a transaction of which we were the UAS
    /// (`we_were_uas`) or the UAC; `se` without a refresher makes the UAC
    /// refresh. An interval under [`MIN_SE`] (no peer may set one) is
    /// taken as [`MIN_SE`].
    pub fn new(now: Instant, se: SessionExpires, we_were_uas: bool) -> Self {
        let uas_refreshes = se.refresher == Some(Refresher::Uas);
        let mut t = Self {
            interval: Duration::from_secs(u64::from(se.interval.max(MIN_SE))),
            we_refresh: uas_refreshes == we_were_uas,
            due: now,
            waiting: false,
        };
        t.refreshed(now);
        t
    }

    /// The session was refreshed at `now`: we refresh again at half the
    /// interval; a peer that refreshes is given until the interval less
    /// a third of it, at most 32 s (RFC 4028 section 10), so our BYE goes
    /// out before the session would expire anyway.
    pub fn refreshed(&mut self, now: Instant) {
        self.waiting = false;
        self.due = if self.we_refresh {
            now + self.interval / 2
        } else {
            now + self.expiry()
        };
    }

    /// From a refresh to the BYE that ends a session left unrefreshed.
    fn expiry(&self) -> Duration {
        self.interval - (self.interval / 3).min(Duration::from_secs(32))
    }

    /// The timer fell due at `now`: time for our refresh (then the session
    /// expires unless a 2xx to it comes within the rest of the interval),
    /// or the session expired.
    pub fn on_due(&mut self, now: Instant) -> Due {
        if self.we_refresh && !self.waiting {
            self.waiting = true;
            self.due = now + self.expiry().saturating_sub(self.interval / 2);
            Due::Refresh
        } else {
            Due::Expired
        }
    }

    /// Send our refresh again at `at` (the peer refused the last one for
    /// its method, or for glare); only while one is awaited.
    pub fn retry(&mut self, at: Instant) {
        if self.waiting {
            self.waiting = false;
            self.due = at;
        }
    }

    /// The `Session-Expires` of our response to a refresh request from the
    /// peer (we are its UAS).
    pub fn as_uas(&self) -> SessionExpires {
        SessionExpires {
            interval: self.interval.as_secs() as u32,
            refresher: Some(if self.we_refresh {
                Refresher::Uas
            } else {
                Refresher::Uac
            }),
        }
    }

    /// The `Session-Expires` of a re-INVITE or UPDATE we send (we are its
    /// UAC): the interval as it stands, and who refreshes.
    pub fn as_uac(&self) -> SessionExpires {
        SessionExpires {
            interval: self.interval.as_secs() as u32,
            refresher: Some(if self.we_refresh {
                Refresher::Uac
            } else {
                Refresher::Uas
            }),
        }
    }
}

/// Adds the session-timer headers to our 2xx (`se`, and `Require: timer`
/// when the UAC is to refresh, RFC 4028 section 9).
pub fn stamp_response(resp: &mut Message, se: SessionExpires) {
    resp.push_header("Session-Expires", se.value());
    if se.refresher == Some(Refresher::Uac) {
        resp.push_header("Require", "timer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(extra: &str) -> Message {
        let text = format!(
            "INVITE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\n\
             From: <sip:a@example.org>;tag=1\r\nTo: <sip:bob@example.org>\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    fn on(interval: u32, r: Refresher) -> Grant {
        Grant::On(SessionExpires {
            interval,
            refresher: Some(r),
        })
    }

    #[test]
    fn headers_parse_in_long_and_compact_form() {
        let m = invite("x: 600 ; refresher=UAS\r\nMin-SE: 120\r\nk: 100rel, timer\r\n");
        assert_eq!(
            SessionExpires::of(&m),
            Some(SessionExpires {
                interval: 600,
                refresher: Some(Refresher::Uas)
            })
        );
        assert_eq!(min_se(&m), 120);
        assert!(supports(&m, "timer"));
        assert!(!supports(&invite(""), "timer"));
        assert_eq!(
            SessionExpires::of(&invite("Session-Expires: soon\r\n")),
            None
        );
        assert_eq!(
            unsupported(&invite("Require: timer, 100rel, precondition\r\n")).as_deref(),
            Some("precondition")
        );
        assert_eq!(unsupported(&invite("Require: timer\r\n")), None);
    }

    #[test]
    fn a_uas_grants_what_rfc_4028_says() {
        let t = SessionTimers::default();
        // Too small from a UAC that can retry: 422 with our Min-SE.
        assert_eq!(
            t.grant(&invite("Supported: timer\r\nSession-Expires: 60\r\n")),
            Grant::TooSmall(90)
        );
        // Too small from one that cannot: raised, and we refresh.
        assert_eq!(
            t.grant(&invite("Session-Expires: 60\r\n")),
            on(90, Refresher::Uas)
        );
        // Taken as asked, the refresher kept.
        assert_eq!(
            t.grant(&invite(
                "Supported: timer\r\nSession-Expires: 300;refresher=uas\r\n"
            )),
            on(300, Refresher::Uas)
        );
        // Longer than ours: ours; the refresher left open goes to the UAC.
        assert_eq!(
            t.grant(&invite("Supported: timer\r\nSession-Expires: 7200\r\n")),
            on(1800, Refresher::Uac)
        );
        // Never below the UAC's own Min-SE.
        let short = SessionTimers {
            expires: 100,
            min_se: 90,
        };
        assert_eq!(
            short.grant(&invite(
                "Supported: timer\r\nSession-Expires: 600\r\nMin-SE: 300\r\n"
            )),
            on(300, Refresher::Uac)
        );
        // A UAC that supports timers but asks for none gets ours.
        assert_eq!(
            t.grant(&invite("Supported: timer\r\n")),
            on(1800, Refresher::Uac)
        );
        assert_eq!(t.grant(&invite("")), Grant::Off);
        // A UAC that names itself refresher but cannot refresh: we do.
        assert_eq!(
            t.grant(&invite("Session-Expires: 300;refresher=uac\r\n")),
            on(300, Refresher::Uas)
        );
    }

    #[test]
    fn refreshes_fall_due_at_half_and_expiry_a_third_early() {
        let t0 = Instant::now();
        let se = |r| SessionExpires {
            interval: 90,
            refresher: Some(r),
        };
        let ours = LegTimer::new(t0, se(Refresher::Uas), true);
        assert!(ours.we_refresh);
        assert_eq!(ours.due, t0 + Duration::from_secs(45));
        let theirs = LegTimer::new(t0, se(Refresher::Uac), true);
        assert!(!theirs.we_refresh);
        assert_eq!(theirs.due, t0 + Duration::from_secs(60));
        // As the UAC: refresher=uac is us.
        assert!(LegTimer::new(t0, se(Refresher::Uac), false).we_refresh);
        // Long intervals: 32 s before the end at most.
        let long = LegTimer::new(
            t0,
            SessionExpires {
                interval: 1800,
                refresher: Some(Refresher::Uac),
            },
            true,
        );
        assert_eq!(long.due, t0 + Duration::from_secs(1768));
        assert_eq!(long.as_uas().value(), "1800;refresher=uac");
        // Our refresh goes out at 45 s; unanswered, the session ends at 60 s.
        let mut ours = ours;
        let at = ours.due;
        assert_eq!(ours.on_due(at), Due::Refresh);
        assert_eq!(ours.due, t0 + Duration::from_secs(60));
        assert_eq!(ours.on_due(ours.due), Due::Expired);
        // A peer that refreshes never gets a refresh from us.
        let mut theirs = theirs;
        assert_eq!(theirs.on_due(theirs.due), Due::Expired);
        assert_eq!(ours.as_uas().value(), "90;refresher=uas");
    }
}
