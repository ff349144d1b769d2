//! DTMF: RFC 4733 telephone-events, their remapping between RTP clocks, and
//! conversion to and from SIP INFO bodies.
//!
//! Owns the event payload format, the per-direction [`Remapper`] a relay uses
//! when the two legs negotiated telephone-event at different clock rates
//! (8000 on SIP, 48000 next to Opus in browsers), the [`Receiver`] that turns
//! a stream of event packets into one digit each, and the [`Sender`] that
//! turns a digit into event packets over time (sans-IO: the caller's clock).
//! `application/dtmf-relay` and `application/dtmf` bodies are read and
//! written here; the SIP dialog that carries them is the call layer's.
//! It must not touch sockets or SRTP.

use std::fmt;
use std::time::{Duration, Instant};

/// One RFC 4733 named event (section 3.2), as carried in an RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code: 0-9, 10 `*`, 11 `#`, 12-15 `A`-`D`, 16 flash.
    pub event: u8,
    /// End of the event.
    pub end: bool,
    /// Power level in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, in RTP clock units of the stream.
    pub duration: u16,
}

impl EventPayload {
    /// Reads the first four bytes of a telephone-event payload.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let b = payload.get(..4)?;
        Some(Self {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The four payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            u8::from(self.end) << 7 | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// The event code for a DTMF character (`0-9 * # A-D`, case-insensitive).
pub fn event_code(digit: char) -> Option<u8> {
    Some(match digit.to_ascii_uppercase() {
        d @ '0'..='9' => d as u8 - b'0',
        '*' => 10,
        '#' => 11,
        d @ 'A'..='D' => d as u8 - b'A' + 12,
        _ => return None,
    })
}

/// The character for an event code 0..=15.
pub fn digit_char(code: u8) -> Option<char> {
    Some(match code {
        0..=9 => char::from(b'0' + code),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + code - 12),
        _ => return None,
    })
}

/// A digit and how long it was pressed: what every DTMF transport agrees on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    /// `0-9 * # A-D`.
    pub digit: char,
    /// How long the key was held.
    pub duration_ms: u32,
}

/// Why a DTMF body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDtmf(pub String);

impl fmt::Display for BadDtmf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad DTMF body: {}", self.0)
    }
}

impl std::error::Error for BadDtmf {}

/// Digit length when a body names none: what most SIP phones send.
pub const DEFAULT_DURATION_MS: u32 = 160;

/// Reads a SIP INFO body by content type: `application/dtmf-relay`
/// (`Signal=5` / `Duration=160` lines) or `application/dtmf` (the digit).
pub fn parse_info(content_type: &str, body: &str) -> Result<Digit, BadDtmf> {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let digit_of = |s: &str| -> Result<char, BadDtmf> {
        let s = s.trim();
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if event_code(c).is_some() => Ok(c.to_ascii_uppercase()),
            // Some devices send the event code instead of the character.
            _ => s
                .parse::<u8>()
                .ok()
                .and_then(digit_char)
                .ok_or_else(|| BadDtmf(format!("unknown signal {s:?}"))),
        }
    };
    match ct.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration_ms = DEFAULT_DURATION_MS;
            for line in body.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                match key.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = Some(digit_of(value)?),
                    "duration" => {
                        duration_ms = value
                            .trim()
                            .parse()
                            .map_err(|_| BadDtmf(format!("bad duration {:?}", value.trim())))?;
                    }
                    _ => {}
                }
            }
            let digit = digit.ok_or_else(|| BadDtmf("no Signal line".into()))?;
            Ok(Digit {
                digit,
                duration_ms: duration_ms.clamp(40, 10_000),
            })
        }
        "application/dtmf" => Ok(Digit {
            digit: digit_of(body)?,
            duration_ms: DEFAULT_DURATION_MS,
        }),
        other => Err(BadDtmf(format!("content type {other:?} carries no DTMF"))),
    }
}

/// The `application/dtmf-relay` body for a digit.
pub fn format_info(digit: &Digit) -> String {
    format!(
        "Signal={}\r\nDuration={}\r\n",
        digit.digit, digit.duration_ms
    )
}

/// Rewrites one direction of telephone-events between two clock rates
/// (RFC 4733 section 2.5.2.3 for durations that no longer fit 16 bits).
///
/// The relay maps the RTP timestamp itself; this scales durations and, when
/// a scaled duration passes 0xFFFF units, starts a new segment whose
/// timestamp is advanced by the segment length, as the RFC prescribes.
#[derive(Debug, Clone)]
pub struct Remapper {
    from_rate: u32,
    to_rate: u32,
}

/// One event packet after remapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remapped {
    /// Add this to the mapped RTP timestamp of the event (segment start).
    pub timestamp_offset: u32,
    /// Payload to send.
    pub payload: EventPayload,
}

impl Remapper {
    /// Maps events from a stream at `from_rate` to one at `to_rate`.
    pub fn new(from_rate: u32, to_rate: u32) -> Self {
        Self {
            from_rate: from_rate.max(1),
            to_rate: to_rate.max(1),
        }
    }

    /// Converts a timestamp delta or duration between the clocks.
    pub fn scale(&self, units: u64) -> u64 {
        units * u64::from(self.to_rate) / u64::from(self.from_rate)
    }

    /// Remaps one event packet.
    pub fn remap(&self, input: EventPayload) -> Remapped {
        let scaled = self.scale(u64::from(input.duration));
        let segment = if scaled > 0xffff { scaled / 0xffff } else { 0 };
        let rest = scaled - segment * 0xffff;
        // A duration that is an exact multiple ends a segment at 0xFFFF.
        let (segment, rest) = if segment > 0 && rest == 0 {
            (segment - 1, 0xffff)
        } else {
            (segment, rest)
        };
        Remapped {
            timestamp_offset: (segment * 0xffff) as u32,
            payload: EventPayload {
                duration: rest as u16,
                ..input
            },
        }
    }
}

/// Turns received event packets into digits, once each, however many
/// retransmitted updates and end packets arrive.
#[derive(Debug, Clone, Default)]
pub struct Receiver {
    /// Timestamp of the event in progress or last finished.
    current: Option<(u32, bool)>,
}

impl Receiver {
    /// Feeds one packet (RTP timestamp, payload at `clock_rate`); returns the
    /// digit when its end is first seen.
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8], clock_rate: u32) -> Option<Digit> {
        let ev = EventPayload::parse(payload)?;
        let digit = digit_char(ev.event)?;
        match self.current {
            Some((ts, true)) if ts == timestamp => return None,
            _ => {}
        }
        self.current = Some((timestamp, ev.end));
        if !ev.end {
            return None;
        }
        let duration_ms = u64::from(ev.duration) * 1000 / u64::from(clock_rate.max(1));
        Some(Digit {
            digit,
            duration_ms: duration_ms as u32,
        })
    }
}

/// Packets a [`Sender`] wants sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// RTP timestamp: the event's start, same for every packet of it.
    pub timestamp: u32,
    /// Marker bit: set on the first packet of an event.
    pub marker: bool,
    /// Payload.
    pub payload: EventPayload,
}

/// Plays digits as RFC 4733 packets: one on start, an update every 50 ms,
/// the end packet three times (section 2.5.1.4), then a 50 ms gap.
#[derive(Debug)]
pub struct Sender {
    clock_rate: u32,
    queue: std::collections::VecDeque<Digit>,
    playing: Option<Playing>,
    gap_until: Option<Instant>,
}

#[derive(Debug)]
struct Playing {
    digit: Digit,
    code: u8,
    started: Instant,
    timestamp: u32,
    next: Instant,
    ends_sent: u8,
}

/// Interval between updates of a playing digit.
const UPDATE: Duration = Duration::from_millis(50);

impl Sender {
    /// A sender for a telephone-event stream at `clock_rate`.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            queue: Default::default(),
            playing: None,
            gap_until: None,
        }
    }

    /// Queues digits (unknown characters are skipped and reported back).
    pub fn queue(&mut self, digits: &str, duration_ms: u32) -> Result<(), BadDtmf> {
        if let Some(bad) = digits.chars().find(|c| event_code(*c).is_none()) {
            return Err(BadDtmf(format!("{bad:?} is not a DTMF digit")));
        }
        self.queue.extend(digits.chars().map(|digit| Digit {
            digit: digit.to_ascii_uppercase(),
            duration_ms: duration_ms.clamp(40, 5_000),
        }));
        Ok(())
    }

    /// True while digits are queued or playing: the audio stream should be
    /// muted (RFC 4733 section 2.5.1.2 does not allow both at once).
    pub fn busy(&self) -> bool {
        self.playing.is_some() || !self.queue.is_empty()
    }

    /// When [`Self::poll`] next has something to say, if ever.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        match (&self.playing, self.gap_until) {
            (Some(p), _) => Some(p.next),
            (None, gap) if !self.queue.is_empty() => Some(gap.map_or(now, |g| g.max(now))),
            _ => None,
        }
    }

    /// The next packet due at `now`. `rtp_now` is the stream's RTP
    /// timestamp for `now`, used as a new event's timestamp.
    pub fn poll(&mut self, now: Instant, rtp_now: u32) -> Option<Outgoing> {
        if self.playing.is_none() {
            if self.gap_until.is_some_and(|g| now < g) {
                return None;
            }
            let digit = self.queue.pop_front()?;
            let code = event_code(digit.digit)?;
            self.playing = Some(Playing {
                digit,
                code,
                started: now,
                timestamp: rtp_now,
                next: now,
                ends_sent: 0,
            });
        }
        let p = self.playing.as_mut()?;
        if now < p.next {
            return None;
        }
        // One event's duration field holds 0xffff units (1.36 s at 48 kHz):
        // longer presses are sent as the longest single event.
        let max_ms = 0xffff * 1000 / u64::from(self.clock_rate.max(1));
        let length = Duration::from_millis(u64::from(p.digit.duration_ms).min(max_ms));
        let elapsed = now.duration_since(p.started).min(length);
        let end = elapsed >= length;
        let units = elapsed.as_micros() as u64 * u64::from(self.clock_rate) / 1_000_000;
        let out = Outgoing {
            timestamp: p.timestamp,
            marker: p.next == p.started,
            payload: EventPayload {
                event: p.code,
                end,
                volume: 10,
                duration: units.min(0xffff) as u16,
            },
        };
        if end {
            p.ends_sent += 1;
            // Redundant end packets follow closely (one per 20 ms frame).
            p.next = now + Duration::from_millis(20);
            if p.ends_sent == 3 {
                self.playing = None;
                self.gap_until = Some(now + UPDATE);
            }
        } else {
            p.next = (now + UPDATE).min(p.started + length);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let p = EventPayload {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(p.to_bytes(), [11, 0x8a, 0x05, 0x00]);
        assert_eq!(EventPayload::parse(&p.to_bytes()), Some(p));
        assert_eq!(EventPayload::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn digits_and_codes_agree() {
        for (c, code) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('d', 15),
        ] {
            assert_eq!(event_code(c), Some(code));
            assert_eq!(digit_char(code), Some(c.to_ascii_uppercase()));
        }
        assert_eq!(event_code('x'), None);
        assert_eq!(digit_char(16), None);
    }

    #[test]
    fn durations_scale_between_8k_and_48k() {
        let up = Remapper::new(8000, 48000);
        let down = Remapper::new(48000, 8000);
        let ev = |duration, end| EventPayload {
            event: 5,
            end,
            volume: 10,
            duration,
        };
        // 100 ms at 8 kHz is 800 units; at 48 kHz 4800.
        assert_eq!(up.remap(ev(800, false)).payload.duration, 4800);
        assert_eq!(down.remap(ev(4800, true)).payload, ev(800, true));
        assert_eq!(up.remap(ev(800, false)).timestamp_offset, 0);
        assert_eq!(up.scale(160), 960);
    }

    #[test]
    fn long_events_split_into_segments_after_upscaling() {
        let up = Remapper::new(8000, 48000);
        // 1.5 s at 8 kHz = 12000 units = 72000 at 48 kHz: 65535 + 6465.
        let r = up.remap(EventPayload {
            event: 1,
            end: true,
            volume: 10,
            duration: 12_000,
        });
        assert_eq!(r.timestamp_offset, 0xffff);
        assert_eq!(r.payload.duration, (72_000u32 - 0xffff) as u16);
        assert!(r.payload.end);
        // Exactly one full segment stays in the first segment.
        let r = up.remap(EventPayload {
            event: 1,
            end: false,
            volume: 10,
            duration: 10_922,
        });
        assert_eq!((r.timestamp_offset, r.payload.duration), (0, 65_532));
    }

    #[test]
    fn receiver_reports_each_digit_once() {
        let mut rx = Receiver::default();
        let pkt = |event, end, duration| {
            EventPayload {
                event,
                end,
                volume: 10,
                duration,
            }
            .to_bytes()
        };
        assert_eq!(rx.on_packet(1000, &pkt(4, false, 400), 8000), None);
        assert_eq!(
            rx.on_packet(1000, &pkt(4, true, 1280), 8000),
            Some(Digit {
                digit: '4',
                duration_ms: 160
            })
        );
        assert_eq!(rx.on_packet(1000, &pkt(4, true, 1280), 8000), None);
        assert_eq!(rx.on_packet(1000, &pkt(4, true, 1280), 8000), None);
        // The same digit again is a new event (new timestamp).
        assert_eq!(
            rx.on_packet(3000, &pkt(4, true, 4800), 48000),
            Some(Digit {
                digit: '4',
                duration_ms: 100
            })
        );
        // Garbage is ignored.
        assert_eq!(rx.on_packet(4000, &[99, 0x80, 0, 1], 8000), None);
        assert_eq!(rx.on_packet(4000, &[1], 8000), None);
    }

    #[test]
    fn sender_plays_start_updates_and_three_ends() {
        let t0 = Instant::now();
        let mut tx = Sender::new(8000);
        assert!(tx.queue("1x", 100).is_err());
        tx.queue("1#", 100).unwrap();
        assert!(tx.busy());
        let mut sent = Vec::new();
        for ms in (0..600).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            while let Some(p) = tx.poll(now, 8 * ms as u32) {
                sent.push((ms, p));
            }
        }
        assert!(!tx.busy());
        let first: Vec<_> = sent.iter().filter(|(_, p)| p.payload.event == 1).collect();
        // Start at 0, update at 50, end at 100 x3 (100, 120, 140).
        let times: Vec<_> = first.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(times, [0, 50, 100, 120, 140]);
        assert!(first[0].1.marker && !first[1].1.marker);
        assert_eq!(first[1].1.payload.duration, 400);
        assert!(
            first[2..]
                .iter()
                .all(|(_, p)| p.payload.end && p.payload.duration == 800)
        );
        assert!(first.iter().all(|(_, p)| p.timestamp == 0));
        // '#' starts after the 50 ms gap, with its own timestamp.
        let hash: Vec<_> = sent.iter().filter(|(_, p)| p.payload.event == 11).collect();
        assert_eq!(hash[0].0, 190);
        assert_eq!(hash[0].1.timestamp, 8 * 190);
        assert_eq!(hash.len(), 5);
    }

    #[test]
    fn info_bodies_convert_both_ways() {
        let d = parse_info("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(
            d,
            Digit {
                digit: '5',
                duration_ms: 160
            }
        );
        assert_eq!(format_info(&d), "Signal=5\r\nDuration=160\r\n");
        assert_eq!(
            parse_info("Application/DTMF-Relay; x=y", "signal = #\nduration= 250")
                .unwrap()
                .digit,
            '#'
        );
        // Event code form (some gateways): 11 is '#'.
        assert_eq!(
            parse_info("application/dtmf-relay", "Signal=11")
                .unwrap()
                .digit,
            '#'
        );
        assert_eq!(parse_info("application/dtmf", "*").unwrap().digit, '*');
        assert!(parse_info("application/dtmf-relay", "Duration=100").is_err());
        assert!(parse_info("application/dtmf-relay", "Signal=Z").is_err());
        assert!(parse_info("application/dtmf-relay", "Signal=1\nDuration=x").is_err());
        assert!(parse_info("text/plain", "1").is_err());
    }
}
