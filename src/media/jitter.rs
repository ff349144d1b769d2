//! Adaptive jitter buffer for transcoding paths (relay paths never buffer).
//!
//! Owns reordering, duplicate and late-packet handling, and the playout
//! clock of one incoming audio stream: packets go in with their arrival time,
//! and every frame interval the decoder asks for the next frame, getting
//! either a packet or a request to conceal one. The target delay follows the
//! measured interarrival jitter (RFC 3550 section 6.4.1 estimator): 4 x
//! jitter + one frame, within `[min, max]`. It grows at once: when the
//! queue runs dry, a concealed frame is inserted and the missing packet keeps
//! its slot, so a late packet plays one frame later instead of being thrown
//! away. It shrinks gently: only when the queue stayed more than a frame
//! above target for a whole second (its low-water mark) are the excess
//! frames dropped, one per slot, so bursts that come and go (a starved
//! sender, Wi-Fi) cost nothing. A burst beyond the maximum delay
//! drops the oldest frames without moving the playout clock. A pause longer
//! than a few frames (DTX, hold) ends the talkspurt; the next packet
//! restarts playout with the current target. Sans-IO: time is a parameter.
//! It must not decode.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::rtp::SeqTracker;

/// Settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the stream.
    pub clock_rate: u32,
    /// Frame duration in RTP units when it cannot be learned (20 ms).
    pub frame: u32,
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Highest target delay; older packets are dropped.
    pub max_delay: Duration,
}

impl JitterConfig {
    /// 20 ms frames, 20 to 300 ms of delay.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            frame: clock_rate / 50,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(300),
        }
    }
}

/// What the decoder gets for a frame slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this payload.
    Frame {
        /// RTP timestamp.
        timestamp: u32,
        /// Payload.
        payload: Vec<u8>,
    },
    /// The packet for this slot is missing: conceal one frame. `next` is
    /// the following packet's payload when it is already here (Opus FEC).
    Conceal {
        /// Following payload, if buffered.
        next: Option<Vec<u8>>,
    },
}

/// Counters (read by stats and the admin API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted into the buffer.
    pub received: u64,
    /// Frames handed to the decoder.
    pub played: u64,
    /// Frames concealed because their packet never came in time.
    pub concealed: u64,
    /// Packets that arrived after their playout slot.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Frames dropped to shrink the delay.
    pub dropped: u64,
}

#[derive(Debug)]
struct Entry {
    timestamp: u32,
    payload: Vec<u8>,
}

/// One incoming stream's jitter buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    queue: BTreeMap<u64, Entry>,
    seq: SeqTracker,
    /// Next extended sequence number to play, and when.
    next: Option<(u64, Instant)>,
    /// Consecutive concealed frames with nothing queued.
    starved: u32,
    /// Fewest frames queued at a playout over the current window, the
    /// window's length so far, and frames still to drop from the last one.
    low_water: usize,
    window: u32,
    excess: usize,
    /// Jitter estimate in seconds, and the last relative transit time.
    jitter: f64,
    last_transit: Option<f64>,
    origin: Option<Instant>,
    stats: JitterStats,
}

/// Empty slots in a row that end a talkspurt (DTX or a pause).
const STARVED_LIMIT: u32 = 3;

/// Slots (20 ms each: one second) over which the queue must stay above
/// target before it is shrunk.
const SHRINK_WINDOW: u32 = 50;

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        Self {
            config,
            queue: BTreeMap::new(),
            seq: SeqTracker::default(),
            next: None,
            starved: 0,
            low_water: usize::MAX,
            window: 0,
            excess: 0,
            jitter: 0.0,
            last_transit: None,
            origin: None,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    fn frame_time(&self) -> Duration {
        Duration::from_secs_f64(
            f64::from(self.config.frame) / f64::from(self.config.clock_rate.max(1)),
        )
    }

    /// The delay playout aims for now.
    pub fn target_delay(&self) -> Duration {
        let want = self.frame_time().as_secs_f64() + 4.0 * self.jitter;
        Duration::from_secs_f64(want).clamp(self.config.min_delay, self.config.max_delay)
    }

    /// Adds a packet that arrived at `now`.
    pub fn push(&mut self, now: Instant, sequence: u16, timestamp: u32, payload: &[u8]) {
        let index = self.seq.estimate(sequence);
        // Interarrival jitter, in seconds (RFC 3550 A.8).
        let origin = *self.origin.get_or_insert(now);
        let arrival = now.duration_since(origin).as_secs_f64();
        let transit = arrival - f64::from(timestamp) / f64::from(self.config.clock_rate.max(1));
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // A timestamp jump (new stream, wrap) is not jitter.
            if d < 1.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        match self.next {
            Some((next, _)) if index < next => {
                self.stats.late += 1;
                return;
            }
            _ if self.queue.contains_key(&index) => {
                self.stats.duplicates += 1;
                return;
            }
            _ => {}
        }
        self.seq.accept(index);
        self.stats.received += 1;
        self.queue.insert(
            index,
            Entry {
                timestamp,
                payload: payload.to_vec(),
            },
        );
        if self.next.is_none() {
            // Start (or restart) a talkspurt after the target delay.
            let first = *self.queue.keys().next().unwrap_or(&index);
            self.next = Some((first, now + self.target_delay()));
            self.starved = 0;
        }
        // Never hold more than the maximum delay.
        let frame = self.frame_time();
        let cap = (self.config.max_delay.as_secs_f64() / frame.as_secs_f64()).ceil() as usize;
        while self.queue.len() > cap.max(1) {
            if let Some((k, _)) = self.queue.pop_first() {
                self.stats.dropped += 1;
                // The following frame takes the dropped one's slot: the
                // delay shrinks by a frame. (Moving the slot later instead
                // would keep the queue full and drop every packet after.)
                if let Some((next, _)) = self.next.as_mut()
                    && *next <= k
                {
                    *next = k + 1;
                }
            }
        }
    }

    /// When the next frame is due, if a talkspurt is playing.
    pub fn next_due(&self) -> Option<Instant> {
        self.next.map(|(_, at)| at)
    }

    /// The frame for the slot due at or before `now`, if any. Call until it
    /// returns `None`.
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let (index, at) = self.next?;
        if now < at {
            return None;
        }
        let frame = self.frame_time();
        if let Some(entry) = self.queue.remove(&index) {
            self.starved = 0;
            self.stats.played += 1;
            self.next = Some((index + 1, at + frame));
            self.shrink();
            return Some(Playout::Frame {
                timestamp: entry.timestamp,
                payload: entry.payload,
            });
        }
        if self.queue.is_empty() {
            self.starved += 1;
            if self.starved > STARVED_LIMIT {
                // Talkspurt over: wait for the next packet to restart.
                self.next = None;
                self.starved = 0;
                return None;
            }
            // Nothing newer is here, so the packet is late rather than
            // lost: conceal this slot and keep its place (one frame more
            // delay).
            self.stats.concealed += 1;
            self.next = Some((index, at + frame));
            return Some(Playout::Conceal { next: None });
        }
        // Newer packets are here: this one is lost.
        self.stats.concealed += 1;
        self.next = Some((index + 1, at + frame));
        let next = self.queue.get(&(index + 1)).map(|e| e.payload.clone());
        Some(Playout::Conceal { next })
    }

    /// Tracks the queue's low-water mark over a window of slots; when the
    /// queue never fell to the target plus a frame in a whole window, drops
    /// the excess, one frame per slot.
    fn shrink(&mut self) {
        let queued = self.queue.len();
        self.low_water = self.low_water.min(queued);
        self.window += 1;
        if self.window >= SHRINK_WINDOW {
            let frame = self.frame_time().as_secs_f64();
            // The mark is taken after the played frame left the queue, so
            // `target` frames still queued is one frame of slack.
            let target = (self.target_delay().as_secs_f64() / frame).round() as usize;
            self.excess = self.low_water.saturating_sub(target);
            self.low_water = usize::MAX;
            self.window = 0;
        }
        if self.excess > 0
            && let Some((next, _)) = self.next.as_mut()
            && self.queue.remove(next).is_some()
        {
            *next += 1;
            self.excess -= 1;
            self.stats.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Plays a stream where packet `i` is sent at 20 ms * i and arrives
    /// after `delay(i)` (None = lost); pops every 5 ms. Returns the
    /// sequence numbers played (None = concealed), in order.
    fn run(jb: &mut JitterBuffer, n: u16, delay: impl Fn(u16) -> Option<u64>) -> Vec<Option<u16>> {
        run_polling(jb, n, delay, |_| true).0
    }

    /// [`run`], popping only at the 5 ms ticks (ms since start) where
    /// `polls` says so: a starved task wakes late. Also returns the most
    /// audio queued over the last 200 ms of the stream.
    fn run_polling(
        jb: &mut JitterBuffer,
        n: u16,
        delay: impl Fn(u16) -> Option<u64>,
        polls: impl Fn(u64) -> bool,
    ) -> (Vec<Option<u16>>, Duration) {
        let mut tail_queued = Duration::ZERO;
        let last = MS * (20 * u32::from(n));
        let t0 = Instant::now();
        let mut arrivals: Vec<(Duration, u16)> = (0..n)
            .filter_map(|i| delay(i).map(|d| (MS * (20 * u32::from(i)) + MS * d as u32, i)))
            .collect();
        arrivals.sort();
        let mut played = Vec::new();
        let end = MS * (20 * u32::from(n) + 400);
        let mut t = Duration::ZERO;
        let mut k = 0;
        while t <= end {
            while k < arrivals.len() && arrivals[k].0 <= t {
                let i = arrivals[k].1;
                jb.push(t0 + t, i, u32::from(i) * 160, &i.to_be_bytes());
                k += 1;
            }
            while polls(t.as_millis() as u64)
                && let Some(p) = jb.pop(t0 + t)
            {
                played.push(match p {
                    Playout::Frame { payload, .. } => {
                        Some(u16::from_be_bytes([payload[0], payload[1]]))
                    }
                    Playout::Conceal { .. } => None,
                });
            }
            if t + 200 * MS >= last && t < last {
                tail_queued = tail_queued.max(jb.frame_time() * jb.queue.len() as u32);
            }
            t += MS * 5;
        }
        // The end of the stream looks like a pause: a few slots are
        // concealed before playout stops. Trim those.
        while played.last() == Some(&None) {
            played.pop();
        }
        (played, tail_queued)
    }

    #[test]
    fn steady_stream_plays_everything_at_minimum_delay() {
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        let played = run(&mut jb, 100, |_| Some(5));
        assert_eq!(played, (0..100).map(Some).collect::<Vec<_>>());
        assert_eq!(jb.target_delay(), 20 * MS);
        let s = jb.stats();
        // Only the slots after the last packet were concealed.
        assert_eq!(
            (s.played, s.concealed, s.late, s.dropped),
            (100, u64::from(STARVED_LIMIT), 0, 0)
        );
    }

    #[test]
    fn reordering_within_the_delay_comes_out_in_order() {
        let mut jb = JitterBuffer::new(JitterConfig {
            min_delay: 60 * MS,
            ..JitterConfig::new(8000)
        });
        // Every 10th packet overtaken by the next one.
        let played = run(&mut jb, 50, |i| Some(if i % 10 == 3 { 30 } else { 5 }));
        assert_eq!(played, (0..50).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn a_lost_packet_is_concealed_with_the_next_payload_for_fec() {
        let mut jb = JitterBuffer::new(JitterConfig {
            min_delay: 60 * MS,
            ..JitterConfig::new(8000)
        });
        let t0 = Instant::now();
        for i in [0u16, 1, 3] {
            jb.push(t0, i, u32::from(i) * 160, &[i as u8]);
        }
        let mut out = Vec::new();
        let mut t = t0;
        while out.len() < 4 {
            t += MS * 5;
            while let Some(p) = jb.pop(t) {
                out.push(p);
            }
        }
        assert_eq!(
            out[2],
            Playout::Conceal {
                next: Some(vec![3])
            }
        );
        assert_eq!(jb.stats().concealed, 1);
    }

    #[test]
    fn jitter_raises_the_target_until_nothing_is_late() {
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        // Delays swing between 5 and 65 ms.
        let swing = |i: u16| Some(5 + u64::from(i * 37 % 61));
        let played = run(&mut jb, 500, swing);
        let target = jb.target_delay();
        assert!(target > 60 * MS, "target {target:?}");
        let early_late = jb.stats().late;
        // Once adapted, a second stretch loses far fewer.
        let mut adapted = JitterBuffer::new(JitterConfig {
            min_delay: target,
            ..JitterConfig::new(8000)
        });
        run(&mut adapted, 500, swing);
        assert!(
            adapted.stats().late * 5 <= early_late.max(1),
            "{:?} vs {early_late}",
            adapted.stats()
        );
        assert!(played.len() >= 490);
    }

    #[test]
    fn duplicates_and_late_packets_are_counted_and_dropped() {
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        let t0 = Instant::now();
        jb.push(t0, 10, 1600, b"a");
        jb.push(t0, 10, 1600, b"a");
        assert_eq!(jb.stats().duplicates, 1);
        assert!(matches!(
            jb.pop(t0 + 20 * MS),
            Some(Playout::Frame {
                timestamp: 1600,
                ..
            })
        ));
        jb.push(t0 + 25 * MS, 9, 1440, b"old");
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn a_pause_ends_the_talkspurt_and_playout_restarts() {
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        // 0..20, then nothing for a second (DTX), then 70..90 (same timeline).
        let played = run(&mut jb, 90, |i| (!(20..70).contains(&i)).then_some(5));
        let frames: Vec<u16> = played.iter().flatten().copied().collect();
        assert_eq!(frames, (0..20).chain(70..90).collect::<Vec<_>>());
        // Only the few slots before each pause (and the end) was detected.
        assert_eq!(
            jb.stats().concealed,
            2 * u64::from(STARVED_LIMIT),
            "{:?}",
            jb.stats()
        );
    }

    #[test]
    fn the_queue_never_exceeds_the_maximum_delay() {
        let mut jb = JitterBuffer::new(JitterConfig {
            max_delay: 100 * MS,
            ..JitterConfig::new(8000)
        });
        let t0 = Instant::now();
        for i in 0..50u16 {
            jb.push(t0, i, u32::from(i) * 160, b"x");
        }
        assert!(jb.queue.len() <= 5);
        assert_eq!(jb.stats().dropped, 45);
    }

    #[test]
    fn a_stalled_task_recovers_and_plays_everything_after_the_stall() {
        // The process gets no CPU for 400 ms: packets 50..70 wait in the
        // socket and arrive together, and nothing is popped meanwhile.
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        let stall = |i: u16| {
            Some(if (50..70).contains(&i) {
                5 + 20 * u64::from(70 - i)
            } else {
                5
            })
        };
        let (played, tail_queued) =
            run_polling(&mut jb, 300, stall, |ms| !(1000..1405).contains(&ms));
        let frames: Vec<u16> = played.iter().flatten().copied().collect();
        let s = jb.stats();
        // Frames play in order, and once the delay has shrunk back, every
        // one of them does.
        assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
        let tail: Vec<u16> = frames.iter().copied().filter(|&i| i >= 200).collect();
        assert_eq!(tail, (200..300).collect::<Vec<_>>(), "{s:?}");
        // What the stall cost is counted: played + dropped + late = sent.
        assert_eq!(s.played + s.dropped + s.late, 300, "{s:?}");
        assert!(s.played >= 285, "{s:?}");
        // The delay the burst built came back down.
        assert!(
            tail_queued <= jb.target_delay() + 2 * jb.frame_time(),
            "{tail_queued:?} queued for a target of {:?}",
            jb.target_delay()
        );
    }

    #[test]
    fn coarse_wakeups_lose_nothing() {
        // The task wakes every 60 ms instead of every frame.
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        let (played, _) = run_polling(&mut jb, 200, |_| Some(5), |ms| ms % 60 == 0);
        let frames: Vec<u16> = played.iter().flatten().copied().collect();
        assert_eq!(frames, (0..200).collect::<Vec<_>>(), "{:?}", jb.stats());
    }

    #[test]
    fn a_late_packet_after_an_underrun_plays_one_frame_later() {
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        // Packets 10..14 are held up 40 ms: slot 10 finds the queue empty.
        let played = run(&mut jb, 40, |i| {
            Some(if (10..14).contains(&i) { 45 } else { 5 })
        });
        let frames: Vec<u16> = played.iter().flatten().copied().collect();
        assert_eq!(frames, (0..40).collect::<Vec<_>>());
        assert_eq!(jb.stats().late, 0, "{:?}", jb.stats());
    }

    #[test]
    fn a_full_queue_keeps_playing_at_the_maximum_delay() {
        // A starved machine measures so much jitter that the target reaches
        // the maximum: the queue runs at its cap, and a packet over it must
        // cost one frame, not stop playout.
        let mut jb = JitterBuffer::new(JitterConfig {
            min_delay: 100 * MS,
            max_delay: 100 * MS,
            ..JitterConfig::new(8000)
        });
        let played = run(&mut jb, 200, |i| Some(5 + u64::from(i % 2) * 3));
        let s = jb.stats();
        assert!(s.played >= 195, "{s:?}");
        assert_eq!(s.played + s.dropped, 200, "{s:?}");
        assert_eq!(played.iter().flatten().count(), s.played as usize);
    }
}
