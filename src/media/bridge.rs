//! One direction of a call's media: leg A's RTP in, leg B's RTP out, either
//! relayed (passthrough) or transcoded, switchable while the call runs.
//!
//! Owns the outgoing stream identity ([`OutStream`]: our SSRC, a sequence
//! number and timestamp line that never jump, whatever happens upstream),
//! the passthrough rewrite (payload type map, SSRC changes upstream), the
//! audio transcoding chain (jitter buffer, decoder with concealment,
//! encoder) and per-stage counters. Sans-IO: packets and time in, packets
//! out. It must not touch sockets or SRTP (the leg does), nor negotiate.
//!
//! No resampler on the common paths: Opus can decode and encode at the other
//! codec's rate (8 kHz against G.711, 16 kHz against G.722), so PCM crosses
//! at one rate. Only G.711 <-> G.722 shares none; its decoder side goes
//! through libswresample (`causeway_codecs::registry::pcm_rate`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use causeway_codecs::opus::OpusConfig;
use causeway_codecs::registry::{self, AudioCodec};
use causeway_codecs::{AudioDecoder, AudioEncoder, CodecError, Pcm};

use super::dtmf::{self, Digit, EventPayload, Remapper};
use super::jitter::{JitterBuffer, JitterConfig, Playout};
use super::rtp::{self, RtpHeader};
use super::video::VideoTranscoder;

/// Per-stage counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// RTP packets received from the source leg.
    pub packets_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// RTP packets sent to the other leg.
    pub packets_out: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Packets with a payload type the other leg did not negotiate.
    pub dropped_pt: u64,
    /// Packets missing upstream (sequence gaps).
    pub lost: u64,
    /// Frames concealed by the decoder (transcoding only).
    pub concealed: u64,
    /// Packets that came too late for playout (transcoding only).
    pub late: u64,
    /// Frames the jitter buffer dropped to keep its delay down (transcoding
    /// only).
    pub jitter_dropped: u64,
    /// Time spent in decoders and encoders.
    pub codec_time: Duration,
    /// The widest audio bandwidth the source's packets carried, as the
    /// sample rate that holds it, where the codec says so per packet (Opus;
    /// transcoding only): whether a browser honoured `maxplaybackrate`.
    pub bandwidth_in: u32,
}

/// The stream we send on the other leg: one SSRC, continuous numbering.
#[derive(Debug, Clone)]
pub struct OutStream {
    /// Our SSRC toward the other leg.
    pub ssrc: u32,
    clock_rate: u32,
    next_seq: u16,
    /// Last timestamp sent and when (to continue the line after a switch).
    last: Option<(u32, Instant)>,
}

impl OutStream {
    /// A stream with a random SSRC, sequence and timestamp start (RFC 3550).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            ssrc: rand::random(),
            clock_rate,
            next_seq: rand::random(),
            last: None,
        }
    }

    /// The timestamp a packet produced at `now` should carry if the line
    /// is to continue smoothly from the last one sent.
    pub(super) fn continue_at(&self, now: Instant) -> u32 {
        match self.last {
            Some((ts, at)) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                ts.wrapping_add((elapsed * f64::from(self.clock_rate)).round() as u32)
            }
            None => rand::random(),
        }
    }

    pub(super) fn emit(
        &mut self,
        now: Instant,
        header: RtpHeader,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let h = RtpHeader {
            sequence: self.next_seq,
            ssrc: self.ssrc,
            ..header
        };
        rtp::write(out, &h, payload);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.advance(h.timestamp, now);
    }

    /// Moves the timestamp line forward only: a telephone-event's packets
    /// all carry the event's start and must neither pull the line back nor
    /// pin an old timestamp to a later time.
    fn advance(&mut self, ts: u32, now: Instant) {
        if self
            .last
            .is_none_or(|(last, _)| (1..0x8000_0000).contains(&ts.wrapping_sub(last)))
        {
            self.last = Some((ts, now));
        }
    }

    /// Writes a relayed packet with the sequence number it was given (gaps
    /// and reordering upstream stay visible downstream); the line only moves
    /// forward when the packet is ahead of it.
    fn emit_relayed(&mut self, now: Instant, header: RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
        let h = RtpHeader {
            ssrc: self.ssrc,
            ..header
        };
        rtp::write(out, &h, payload);
        if h.sequence.wrapping_sub(self.next_seq) < 0x8000 {
            self.next_seq = h.sequence.wrapping_add(1);
            self.advance(h.timestamp, now);
        }
    }
}

/// Relays packets, rewriting SSRC, sequence, timestamp and payload type.
#[derive(Debug, Clone)]
pub struct Passthrough {
    /// Incoming payload type -> outgoing payload type.
    pt_map: HashMap<u8, u8>,
    /// Current upstream source and the offsets that map it onto our line.
    source: Option<Source>,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    ts_offset: u32,
    seq_offset: u16,
    last_seq: u16,
}

impl Passthrough {
    /// A relay that forwards only the mapped payload types.
    pub fn new(pt_map: HashMap<u8, u8>) -> Self {
        Self {
            pt_map,
            source: None,
        }
    }

    /// Relays one packet (header parsed by the caller); returns false (and
    /// writes nothing) when dropped.
    pub fn relay(
        &mut self,
        now: Instant,
        h: &RtpHeader,
        payload: &[u8],
        stream: &mut OutStream,
        stats: &mut DirectionStats,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(&pt) = self.pt_map.get(&h.payload_type) else {
            stats.dropped_pt += 1;
            return false;
        };
        let source = match self.source {
            Some(s) if s.ssrc == h.ssrc => {
                let gap = h.sequence.wrapping_sub(s.last_seq);
                if (2..0x8000).contains(&gap) {
                    stats.lost += u64::from(gap - 1);
                }
                s
            }
            // New (or first) upstream source: join our line where it is.
            _ => Source {
                ssrc: h.ssrc,
                ts_offset: stream.continue_at(now).wrapping_sub(h.timestamp),
                seq_offset: stream.next_seq.wrapping_sub(h.sequence),
                last_seq: h.sequence.wrapping_sub(1),
            },
        };
        let ahead = h.sequence.wrapping_sub(source.last_seq) < 0x8000;
        self.source = Some(Source {
            last_seq: if ahead { h.sequence } else { source.last_seq },
            ..source
        });
        let header = RtpHeader {
            payload_type: pt,
            sequence: h.sequence.wrapping_add(source.seq_offset),
            timestamp: h.timestamp.wrapping_add(source.ts_offset),
            ..*h
        };
        // Keep CSRCs/extensions out: the other leg negotiated none of ours.
        stream.emit_relayed(now, header, payload, out);
        stats.packets_out += 1;
        stats.bytes_out += payload.len() as u64;
        true
    }
}

/// Audio transcoding: jitter buffer, decode (or conceal), encode.
pub struct AudioTranscoder {
    jitter: JitterBuffer,
    decoder: Box<dyn AudioDecoder>,
    encoder: Box<dyn AudioEncoder>,
    /// Payload type we send.
    out_pt: u8,
    /// Outgoing RTP units per 20 ms frame.
    out_frame: u32,
    /// Samples per frame at the PCM rate both codecs share.
    pcm_frame: usize,
    pcm: Pcm,
    payload: Vec<u8>,
    /// Timestamp line of the output, set when a talkspurt starts.
    out_ts: Option<u32>,
    /// A talkspurt starts: set the marker bit.
    marker: bool,
}

impl std::fmt::Debug for AudioTranscoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioTranscoder")
            .field("out_pt", &self.out_pt)
            .finish_non_exhaustive()
    }
}

/// Both sides of a transcoding chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormats {
    /// RTP clock of the incoming stream.
    pub in_clock: u32,
    /// RTP clock of the outgoing stream.
    pub out_clock: u32,
    /// Sample rate at which the decoder outputs and the encoder takes PCM.
    pub pcm_rate: u32,
    /// Payload type to send.
    pub out_pt: u8,
}

impl AudioTranscoder {
    /// A chain from `decoder` to `encoder` in 20 ms frames.
    pub fn new(
        formats: AudioFormats,
        decoder: Box<dyn AudioDecoder>,
        encoder: Box<dyn AudioEncoder>,
    ) -> Self {
        Self {
            jitter: JitterBuffer::new(JitterConfig::new(formats.in_clock)),
            decoder,
            encoder,
            out_pt: formats.out_pt,
            out_frame: formats.out_clock / 50,
            pcm_frame: formats.pcm_rate as usize / 50,
            pcm: Pcm {
                sample_rate: formats.pcm_rate,
                channels: 1,
                samples: Vec::new(),
            },
            payload: Vec::new(),
            out_ts: None,
            marker: true,
        }
    }

    /// Takes one incoming packet (payload types are the leg's business:
    /// pass only the negotiated audio codec here).
    pub fn push(&mut self, now: Instant, h: &RtpHeader, payload: &[u8]) {
        self.jitter.push(now, h.sequence, h.timestamp, payload);
    }

    /// When [`Self::poll`] should next be called.
    pub fn next_due(&self) -> Option<Instant> {
        self.jitter.next_due()
    }

    /// Produces the packets due by `now`, appending each to `out`.
    pub fn poll(
        &mut self,
        now: Instant,
        stream: &mut OutStream,
        stats: &mut DirectionStats,
        out: &mut Vec<Vec<u8>>,
    ) {
        while let Some(slot) = self.jitter.pop(now) {
            let t = Instant::now();
            let decoded = match &slot {
                Playout::Frame { payload, .. } => {
                    if let Some(b) = self.decoder.bandwidth(payload) {
                        stats.bandwidth_in = stats.bandwidth_in.max(b);
                    }
                    self.decoder.decode(payload, &mut self.pcm)
                }
                Playout::Conceal { next } => {
                    stats.concealed += 1;
                    self.decoder
                        .conceal(next.as_deref(), self.pcm_frame, &mut self.pcm)
                }
            };
            if decoded.is_err() {
                // A corrupt payload: conceal instead, keep the line going.
                stats.concealed += 1;
                if self
                    .decoder
                    .conceal(None, self.pcm_frame, &mut self.pcm)
                    .is_err()
                {
                    continue;
                }
            }
            self.pcm.samples.resize(self.pcm_frame, 0);
            let encoded = self.encoder.encode(&self.pcm, &mut self.payload);
            stats.codec_time += t.elapsed();
            let ts = *self.out_ts.get_or_insert_with(|| stream.continue_at(now));
            self.out_ts = Some(ts.wrapping_add(self.out_frame));
            if encoded.is_err() || self.payload.is_empty() {
                // DTX or an encoder refusal: nothing to send this frame.
                self.marker = true;
                continue;
            }
            let mut packet = Vec::with_capacity(12 + self.payload.len());
            stream.emit(
                now,
                RtpHeader::new(self.out_pt, 0, ts, 0, std::mem::take(&mut self.marker)),
                &self.payload,
                &mut packet,
            );
            stats.packets_out += 1;
            stats.bytes_out += self.payload.len() as u64;
            out.push(packet);
        }
        let j = self.jitter.stats();
        stats.late = j.late;
        stats.jitter_dropped = j.dropped;
        if self.jitter.next_due().is_none() {
            // Talkspurt over: the next one continues the line from the clock.
            self.out_ts = None;
            self.marker = true;
        }
    }
}

/// How one direction moves media now.
#[derive(Debug)]
pub enum Mode {
    /// Relay, rewriting headers.
    Passthrough(Passthrough),
    /// Decode and re-encode audio.
    Transcode(Box<AudioTranscoder>),
    /// Decode and re-encode video.
    Video(Box<VideoTranscoder>),
}

/// Telephone-events (RFC 4733) in one direction: recognised as digits for
/// the call layer, and, on transcoding paths, re-sent on the output line at
/// its clock rate.
#[derive(Debug, Clone)]
pub struct DtmfRoute {
    /// Incoming telephone-event payload type.
    pub in_pt: u8,
    /// Outgoing telephone-event payload type (None: the other leg has none;
    /// digits then only reach the call layer, e.g. for SIP INFO).
    pub out_pt: Option<u8>,
    in_clock: u32,
    out_clock: u32,
    remap: Remapper,
    receiver: dtmf::Receiver,
    /// Incoming event timestamp -> outgoing one, for the event in progress.
    current: Option<(u32, u32)>,
}

impl DtmfRoute {
    /// Events at `in_clock` with `in_pt`, re-sent at `out_clock` with `out_pt`.
    pub fn new(in_pt: u8, in_clock: u32, out_pt: Option<u8>, out_clock: u32) -> Self {
        Self {
            in_pt,
            out_pt,
            in_clock,
            out_clock,
            remap: Remapper::new(in_clock, out_clock),
            receiver: dtmf::Receiver::default(),
            current: None,
        }
    }
}

/// One direction of a call: a mode that can change while the call runs and
/// an outgoing stream that stays the same across changes.
#[derive(Debug)]
pub struct Direction {
    /// Current mode.
    pub mode: Mode,
    /// What the other leg sees.
    pub stream: OutStream,
    /// Counters across modes.
    pub stats: DirectionStats,
    /// Telephone-events, when negotiated on the incoming leg.
    pub dtmf: Option<DtmfRoute>,
    digits: Vec<Digit>,
    /// Digits the call layer plays on the output line (client API, SIP
    /// INFO): the outgoing telephone-event payload type and the player.
    inject: Option<(u8, dtmf::Sender)>,
}

impl Direction {
    /// A direction sending at `out_clock` in `mode`.
    pub fn new(mode: Mode, out_clock: u32) -> Self {
        Self {
            mode,
            stream: OutStream::new(out_clock),
            stats: DirectionStats::default(),
            dtmf: None,
            digits: Vec::new(),
            inject: None,
        }
    }

    /// Lets [`Self::play_digits`] send telephone-events with `pt` at
    /// `clock` on the output line.
    pub fn enable_injection(&mut self, pt: u8, clock: u32) {
        self.inject = Some((pt, dtmf::Sender::new(clock)));
    }

    /// Queues digits to play as RFC 4733 events; refused when the other
    /// leg negotiated no telephone-event or a character is not a digit.
    pub fn play_digits(&mut self, digits: &str, duration_ms: u32) -> Result<(), dtmf::BadDtmf> {
        match self.inject.as_mut() {
            Some((_, sender)) => sender.queue(digits, duration_ms),
            None => Err(dtmf::BadDtmf(
                "the other side negotiated no telephone-event".into(),
            )),
        }
    }

    /// When injected digits next need [`Self::poll`].
    pub fn next_event_due(&self, now: Instant) -> Option<Instant> {
        self.inject.as_ref()?.1.next_wakeup(now)
    }

    /// Plays due injected events; while digits play, the audio packets
    /// this poll produced (from `out[from..]`) are dropped (RFC 4733
    /// 2.5.1.2: not both at once).
    fn poll_injected(&mut self, now: Instant, out: &mut Vec<Vec<u8>>, from: usize) {
        let Some((pt, sender)) = self.inject.as_mut() else {
            return;
        };
        let pt = *pt;
        if sender.busy() {
            let produced = out.split_off(from.min(out.len()));
            out.extend(
                produced
                    .into_iter()
                    .filter(|p| RtpHeader::parse(p).is_ok_and(|h| h.payload_type == pt)),
            );
        }
        while let Some(ev) = sender.poll(now, self.stream.continue_at(now)) {
            let mut buf = Vec::with_capacity(16);
            self.stream.emit(
                now,
                RtpHeader::new(pt, 0, ev.timestamp, 0, ev.marker),
                &ev.payload.to_bytes(),
                &mut buf,
            );
            self.stats.packets_out += 1;
            out.push(buf);
            // Relayed audio rejoins the line after the events, as a new
            // source would (its own numbering would collide with theirs).
            if let Mode::Passthrough(p) = &mut self.mode {
                p.source = None;
            }
        }
    }

    /// Digits recognised since the last call (for SIP INFO or the client API).
    pub fn take_digits(&mut self) -> Vec<Digit> {
        std::mem::take(&mut self.digits)
    }

    /// Handles a telephone-event packet; true when it was one.
    fn on_event(
        &mut self,
        now: Instant,
        h: &RtpHeader,
        payload: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        let Some(route) = self.dtmf.as_mut() else {
            return false;
        };
        if h.payload_type != route.in_pt {
            return false;
        }
        if let Some(d) = route
            .receiver
            .on_packet(h.timestamp, payload, route.in_clock)
        {
            self.digits.push(d);
        }
        // Passthrough relays events with the audio's own offsets when both
        // sides count them at the same clock; otherwise (and when
        // transcoding) they go on our output line at the other side's clock.
        if matches!(self.mode, Mode::Passthrough(_)) && route.in_clock == route.out_clock {
            return false;
        }
        let (Some(out_pt), Some(ev)) = (route.out_pt, EventPayload::parse(payload)) else {
            return true;
        };
        let start = match route.current {
            Some((in_ts, out_ts)) if in_ts == h.timestamp => out_ts,
            _ => {
                let ts = self.stream.continue_at(now);
                route.current = Some((h.timestamp, ts));
                ts
            }
        };
        let r = route.remap.remap(ev);
        let mut buf = Vec::with_capacity(16);
        let header = RtpHeader::new(
            out_pt,
            0,
            start.wrapping_add(r.timestamp_offset),
            0,
            h.marker,
        );
        self.stream
            .emit(now, header, &r.payload.to_bytes(), &mut buf);
        self.stats.packets_out += 1;
        out.push(buf);
        true
    }

    /// Takes `new`'s plan (after a renegotiation: another codec, other
    /// payload types or events) and keeps this direction's outgoing stream
    /// and counters, so the other leg sees one stream go on.
    pub fn replace(&mut self, new: Direction) {
        let mut stream = std::mem::replace(&mut self.stream, new.stream);
        stream.clock_rate = self.stream.clock_rate;
        let stats = self.stats;
        *self = Direction {
            stream,
            stats,
            ..new
        };
    }

    /// Handles one incoming packet; passthrough output is appended to `out`
    /// at once, transcoded output comes from [`Self::poll`].
    pub fn on_packet(&mut self, now: Instant, packet: &[u8], out: &mut Vec<Vec<u8>>) {
        let Ok(h) = RtpHeader::parse(packet) else {
            return;
        };
        let payload = h.payload(packet);
        self.stats.packets_in += 1;
        self.stats.bytes_in += payload.len() as u64;
        if self.on_event(now, &h, payload, out) {
            return;
        }
        let injecting = self.inject.as_ref().is_some_and(|(_, s)| s.busy());
        match &mut self.mode {
            // Relayed audio pauses while injected digits play.
            Mode::Passthrough(_) if injecting => {}
            Mode::Passthrough(p) => {
                let mut buf = Vec::with_capacity(packet.len());
                if p.relay(
                    now,
                    &h,
                    payload,
                    &mut self.stream,
                    &mut self.stats,
                    &mut buf,
                ) {
                    out.push(buf);
                }
            }
            Mode::Transcode(t) => t.push(now, &h, payload),
            Mode::Video(v) => v.push(now, &h, payload, &mut self.stream, &mut self.stats, out),
        }
    }

    /// The receiving leg asked for a keyframe: a video transcoder makes one.
    /// (Passthrough forwards the request upstream; see [`super::keyframe`].)
    pub fn request_keyframe(&mut self) {
        if let Mode::Video(v) = &mut self.mode {
            v.request_keyframe();
        }
    }

    /// Whether the video transcoder lost frames and needs a keyframe from
    /// the sending leg since the last call.
    pub fn take_upstream_keyframe_request(&mut self) -> bool {
        match &mut self.mode {
            Mode::Video(v) => v.take_upstream_keyframe_request(),
            _ => false,
        }
    }

    /// Produces transcoded packets and injected events due by `now`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        let from = out.len();
        if let Mode::Transcode(t) = &mut self.mode {
            t.poll(now, &mut self.stream, &mut self.stats, out);
        }
        self.poll_injected(now, out, from);
    }

    /// When [`Self::poll`] should next run.
    pub fn next_due(&self) -> Option<Instant> {
        match &self.mode {
            Mode::Transcode(t) => t.next_due(),
            Mode::Passthrough(_) | Mode::Video(_) => None,
        }
    }
}

/// One side of an audio path: payload type, codec, and telephone-event
/// payload type and clock, if negotiated (the codec's clock, as RFC 4733
/// wants, or 8 kHz beside Opus, as many SIP phones send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioEnd {
    /// Payload type of the codec.
    pub pt: u8,
    /// The codec.
    pub codec: AudioCodec,
    /// telephone-event payload type and clock rate.
    pub dtmf: Option<(u8, u32)>,
}

impl AudioEnd {
    fn clock(self) -> u32 {
        self.codec.key().clock_rate
    }
}

/// The direction from `from` to `to`: passthrough when both use the same
/// codec (payload types and events remapped), else transcoding at the PCM
/// rate the two share, an Opus encoder at `opus_complexity` (0-10; the
/// operator's `media.opus_complexity`). Events are recognised either way.
pub fn audio_direction(
    from: AudioEnd,
    to: AudioEnd,
    opus_complexity: u8,
) -> Result<Direction, CodecError> {
    let mode = if from.codec == to.codec {
        let mut map = HashMap::from([(from.pt, to.pt)]);
        // Events are relayed as they are only at the same clock; else they
        // are re-sent at the other side's (see `Direction::on_event`).
        if let (Some((a, ca)), Some((b, cb))) = (from.dtmf, to.dtmf)
            && ca == cb
        {
            map.insert(a, b);
        }
        Mode::Passthrough(Passthrough::new(map))
    } else {
        let pcm_rate = registry::pcm_rate(from.codec, to.codec);
        let opus = OpusConfig {
            // Opus's DTX takes steady tones (ringback, DTMF-like prompts,
            // music on hold) for background noise and stops sending them.
            dtx: false,
            complexity: opus_complexity,
            ..if pcm_rate == 8000 {
                OpusConfig::narrowband()
            } else {
                OpusConfig::webrtc()
            }
        };
        Mode::Transcode(Box::new(AudioTranscoder::new(
            AudioFormats {
                in_clock: from.clock(),
                out_clock: to.clock(),
                pcm_rate,
                out_pt: to.pt,
            },
            registry::audio_decoder(from.codec, pcm_rate)?,
            registry::audio_encoder(to.codec, pcm_rate, opus)?,
        )))
    };
    let mut d = Direction::new(mode, to.clock());
    let out_clock = to.dtmf.map_or(to.clock(), |(_, c)| c);
    d.dtmf = from
        .dtmf
        .map(|(pt, clock)| DtmfRoute::new(pt, clock, to.dtmf.map(|(pt, _)| pt), out_clock));
    if let Some((pt, clock)) = to.dtmf {
        d.enable_injection(pt, clock);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_codecs::analysis::{dominant_frequency, tone};
    use causeway_codecs::g711::{G711, Law};
    use causeway_codecs::opus::{OpusConfig, OpusDecoder, OpusEncoder};

    const MS: Duration = Duration::from_millis(1);

    /// One side of a direction: payload type, codec, telephone-events.
    fn end(pt: u8, codec: AudioCodec, dtmf: Option<(u8, u32)>) -> AudioEnd {
        AudioEnd { pt, codec, dtmf }
    }

    fn pcmu_packets(n: usize, ssrc: u32, seq0: u16, ts0: u32) -> Vec<Vec<u8>> {
        let t = tone(1000.0, -10.0, 8000, 160 * n);
        let mut g = G711::new(Law::Ulaw);
        t.chunks_exact(160)
            .enumerate()
            .map(|(i, chunk)| {
                let mut payload = Vec::new();
                g.encode(
                    &Pcm {
                        sample_rate: 8000,
                        channels: 1,
                        samples: chunk.to_vec(),
                    },
                    &mut payload,
                )
                .unwrap();
                let mut p = Vec::new();
                let h = RtpHeader::new(
                    0,
                    seq0.wrapping_add(i as u16),
                    ts0.wrapping_add(160 * i as u32),
                    ssrc,
                    i == 0,
                );
                rtp::write(&mut p, &h, &payload);
                p
            })
            .collect()
    }

    #[test]
    fn passthrough_rewrites_and_keeps_the_line_across_an_upstream_ssrc_change() {
        let mut d = Direction::new(
            Mode::Passthrough(Passthrough::new(HashMap::from([(0, 0), (101, 96)]))),
            8000,
        );
        let t0 = Instant::now();
        let mut out = Vec::new();
        for (i, p) in pcmu_packets(10, 1111, 65_530, 4_000_000_000)
            .iter()
            .enumerate()
        {
            d.on_packet(t0 + MS * (20 * i as u32), p, &mut out);
        }
        // Upstream switches source (a transfer): new SSRC, seq and ts.
        for (i, p) in pcmu_packets(5, 2222, 7, 123).iter().enumerate() {
            d.on_packet(t0 + MS * (200 + 20 * i as u32), p, &mut out);
        }
        let hs: Vec<RtpHeader> = out.iter().map(|p| RtpHeader::parse(p).unwrap()).collect();
        assert_eq!(hs.len(), 15);
        for w in hs.windows(2) {
            assert_eq!(w[1].ssrc, w[0].ssrc);
            assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
            assert_eq!(
                w[1].timestamp.wrapping_sub(w[0].timestamp),
                160,
                "timestamps continue across the change"
            );
        }
        assert_eq!(
            out[3][12..],
            pcmu_packets(10, 1111, 65_530, 4_000_000_000)[3][12..],
            "payload untouched"
        );
        // Unknown payload types are dropped and counted; a gap counts as loss.
        let mut odd = pcmu_packets(1, 2222, 20, 0).remove(0);
        odd[1] = 13;
        d.on_packet(t0 + MS * 400, &odd, &mut out);
        assert_eq!(d.stats.dropped_pt, 1);
        d.on_packet(t0 + MS * 420, &pcmu_packets(1, 2222, 14, 0)[0], &mut out);
        assert_eq!(d.stats.lost, 2);
    }

    #[test]
    fn passthrough_keeps_upstream_gaps_and_order_visible() {
        let mut d = Direction::new(
            Mode::Passthrough(Passthrough::new(HashMap::from([(0, 0)]))),
            8000,
        );
        let t0 = Instant::now();
        let packets = pcmu_packets(6, 1111, 100, 0);
        let mut out = Vec::new();
        // 100, 101, (102 lost), 104, 103 (late), 105.
        for (i, k) in [0, 1, 4, 3, 5].into_iter().enumerate() {
            d.on_packet(t0 + MS * (20 * i as u32), &packets[k], &mut out);
        }
        let seqs: Vec<u16> = out
            .iter()
            .map(|p| {
                RtpHeader::parse(p)
                    .unwrap()
                    .sequence
                    .wrapping_sub(RtpHeader::parse(&out[0]).unwrap().sequence)
            })
            .collect();
        assert_eq!(
            seqs,
            [0, 1, 4, 3, 5],
            "the receiver sees the gap and the reordering"
        );
        assert_eq!(d.stats.lost, 2, "102 and 103 missing when 104 came");
    }

    fn pcmu_to_opus() -> AudioTranscoder {
        AudioTranscoder::new(
            AudioFormats {
                in_clock: 8000,
                out_clock: 48000,
                pcm_rate: 8000,
                out_pt: 111,
            },
            Box::new(G711::new(Law::Ulaw)),
            Box::new(
                OpusEncoder::new(OpusConfig {
                    dtx: false,
                    ..OpusConfig::narrowband()
                })
                .unwrap(),
            ),
        )
    }

    #[test]
    fn transcoded_opus_is_encoded_at_the_configured_complexity() {
        let pcmu = end(0, AudioCodec::Pcmu, None);
        let opus = end(111, AudioCodec::Opus, None);
        let input = pcmu_packets(50, 5, 0, 0);
        let t0 = Instant::now();
        let through_direction = |complexity| {
            let mut d = audio_direction(pcmu, opus, complexity).unwrap();
            let mut out = Vec::new();
            for (i, p) in input.iter().enumerate() {
                let now = t0 + MS * (20 * i as u32);
                d.on_packet(now, p, &mut out);
                d.poll(now, &mut out);
            }
            d.poll(t0 + MS * 1020, &mut out);
            out.iter()
                .map(|p| RtpHeader::parse(p).unwrap().payload(p).to_vec())
                .collect::<Vec<_>>()
        };
        // The same tone through an encoder set as the operator's setting says.
        let by_hand = |complexity| {
            let mut g = G711::new(Law::Ulaw);
            let mut enc = OpusEncoder::new(OpusConfig {
                complexity,
                dtx: false,
                ..OpusConfig::narrowband()
            })
            .unwrap();
            let mut pcm = Pcm {
                sample_rate: 8000,
                channels: 1,
                samples: Vec::new(),
            };
            input
                .iter()
                .map(|p| {
                    g.decode(RtpHeader::parse(p).unwrap().payload(p), &mut pcm)
                        .unwrap();
                    let mut out = Vec::new();
                    enc.encode(&pcm, &mut out).unwrap();
                    out
                })
                .collect::<Vec<_>>()
        };
        let (cheap, best) = (through_direction(0), through_direction(10));
        // Then the playout conceals the frames after the last packet.
        assert!(cheap.len() >= 50 && best.len() >= 50);
        assert_eq!(cheap[..50], by_hand(0));
        assert_eq!(best[..50], by_hand(10));
        assert_ne!(cheap, best, "the setting changes what is encoded");
    }

    #[test]
    fn transcoding_pcmu_to_opus_carries_the_tone_with_a_48k_clock() {
        let mut d = Direction::new(Mode::Transcode(Box::new(pcmu_to_opus())), 48000);
        let t0 = Instant::now();
        let mut out = Vec::new();
        let input = pcmu_packets(100, 5, 0, 0);
        for (i, p) in input.iter().enumerate() {
            // Jittery arrival, one packet lost.
            if i == 50 {
                continue;
            }
            let now = t0 + MS * (20 * i as u32 + (i as u32 * 7) % 15);
            d.on_packet(now, p, &mut out);
            d.poll(now, &mut out);
        }
        d.poll(t0 + MS * 3000, &mut out);
        let hs: Vec<RtpHeader> = out.iter().map(|p| RtpHeader::parse(p).unwrap()).collect();
        assert!(hs.len() >= 99, "{} packets", hs.len());
        assert!(hs.iter().all(|h| h.payload_type == 111));
        assert!(hs[0].marker && !hs[1].marker);
        for w in hs.windows(2) {
            assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
            assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp), 960);
        }
        assert!(d.stats.concealed >= 1);
        assert!(d.stats.codec_time > Duration::ZERO);
        // What the browser would hear.
        let mut dec = OpusDecoder::new(48000, 1).unwrap();
        let mut pcm = Pcm {
            sample_rate: 48000,
            channels: 1,
            samples: vec![],
        };
        let mut heard = Vec::new();
        for p in &out {
            let h = RtpHeader::parse(p).unwrap();
            dec.decode(h.payload(p), &mut pcm).unwrap();
            heard.extend_from_slice(&pcm.samples);
        }
        let f = dominant_frequency(&heard[48000..96000], 48000);
        assert!((f - 1000.0).abs() < 10.0, "{f} Hz");
    }

    fn event(seq: u16, ts: u32, marker: bool, ev: EventPayload) -> Vec<u8> {
        let mut p = Vec::new();
        rtp::write(
            &mut p,
            &RtpHeader::new(101, seq, ts, 5, marker),
            &ev.to_bytes(),
        );
        p
    }

    #[test]
    fn dtmf_is_recognised_and_remapped_from_8k_to_48k_on_transcoding_paths() {
        let mut d = Direction::new(Mode::Transcode(Box::new(pcmu_to_opus())), 48000);
        d.dtmf = Some(DtmfRoute::new(101, 8000, Some(110), 48000));
        let t0 = Instant::now();
        let mut out = Vec::new();
        let ev = |end, duration| EventPayload {
            event: 7,
            end,
            volume: 10,
            duration,
        };
        // Digit 7 for 100 ms: start, update, three ends (8 kHz units).
        let packets = [
            event(1, 8000, true, ev(false, 0)),
            event(2, 8000, false, ev(false, 400)),
            event(3, 8000, false, ev(true, 800)),
            event(4, 8000, false, ev(true, 800)),
            event(5, 8000, false, ev(true, 800)),
        ];
        for (i, p) in packets.iter().enumerate() {
            d.on_packet(t0 + MS * (50 * i as u32), p, &mut out);
        }
        assert_eq!(
            d.take_digits(),
            [Digit {
                digit: '7',
                duration_ms: 100
            }]
        );
        assert_eq!(out.len(), 5);
        let hs: Vec<RtpHeader> = out.iter().map(|p| RtpHeader::parse(p).unwrap()).collect();
        assert!(
            hs.iter()
                .all(|h| h.payload_type == 110 && h.timestamp == hs[0].timestamp)
        );
        assert!(hs[0].marker && !hs[1].marker);
        let durations: Vec<u16> = out
            .iter()
            .zip(&hs)
            .map(|(p, h)| EventPayload::parse(h.payload(p)).unwrap().duration)
            .collect();
        assert_eq!(durations, [0, 2400, 4800, 4800, 4800]);
        // No telephone-event on the other leg: digits still reach the call layer.
        let mut d = Direction::new(Mode::Transcode(Box::new(pcmu_to_opus())), 48000);
        d.dtmf = Some(DtmfRoute::new(101, 8000, None, 48000));
        let mut out = Vec::new();
        for p in &packets {
            d.on_packet(t0, p, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(d.take_digits().len(), 1);
    }

    #[test]
    fn relayed_opus_with_8k_events_has_them_re_sent_at_the_other_sides_clock() {
        // A phone sends Opus with telephone-event/8000; the browser counts
        // events at 48 kHz. The audio is relayed, the events are not.
        let sip = end(96, AudioCodec::Opus, Some((101, 8000)));
        let browser = end(111, AudioCodec::Opus, Some((110, 48000)));
        let mut d = audio_direction(sip, browser, 1).unwrap();
        assert!(matches!(d.mode, Mode::Passthrough(_)));
        let ev = |end, duration| EventPayload {
            event: 5,
            end,
            volume: 10,
            duration,
        };
        let t0 = Instant::now();
        let mut out = Vec::new();
        for (i, p) in [
            event(1, 8000, true, ev(false, 400)),
            event(2, 8000, false, ev(true, 800)),
        ]
        .iter()
        .enumerate()
        {
            d.on_packet(t0 + MS * (50 * i as u32), p, &mut out);
        }
        assert_eq!(d.take_digits().first().map(|d| d.digit), Some('5'));
        let hs: Vec<RtpHeader> = out.iter().map(|p| RtpHeader::parse(p).unwrap()).collect();
        assert!(hs.iter().all(|h| h.payload_type == 110), "{hs:?}");
        let last = EventPayload::parse(hs[1].payload(&out[1])).unwrap();
        assert_eq!(last.duration, 4800);
    }

    #[test]
    fn replacing_passthrough_by_transcoding_keeps_ssrc_and_sequence() {
        let pcmu = end(0, AudioCodec::Pcmu, None);
        let mut d = audio_direction(pcmu, pcmu, 1).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let input = pcmu_packets(20, 9, 100, 0);
        for (i, p) in input[..10].iter().enumerate() {
            d.on_packet(t0 + MS * (20 * i as u32), p, &mut out);
        }
        // Renegotiated: the other leg now wants Opus, with events.
        let opus = end(111, AudioCodec::Opus, Some((101, 48000)));
        d.replace(audio_direction(pcmu, opus, 1).unwrap());
        assert_eq!(d.stats.packets_out, 10, "counters go on");
        for (i, p) in input[10..].iter().enumerate() {
            let now = t0 + MS * (200 + 20 * i as u32);
            d.on_packet(now, p, &mut out);
            d.poll(now, &mut out);
        }
        d.poll(t0 + MS * 2000, &mut out);
        let hs: Vec<RtpHeader> = out.iter().map(|p| RtpHeader::parse(p).unwrap()).collect();
        assert!(hs.len() >= 19);
        assert!(hs.iter().all(|h| h.ssrc == hs[0].ssrc));
        for w in hs.windows(2) {
            assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
        }
        assert_eq!((hs[9].payload_type, hs[10].payload_type), (0, 111));
        assert!(d.play_digits("1", 100).is_ok(), "the new plan's events");
    }

    #[test]
    fn injected_digits_play_as_events_on_the_output_line_and_pause_relayed_audio() {
        let t0 = Instant::now();
        let from = end(0, AudioCodec::Pcmu, None);
        let to = end(0, AudioCodec::Pcmu, Some((101, 8000)));
        let mut d = audio_direction(from, to, 1).unwrap();
        let mut out = Vec::new();
        let audio = pcmu_packets(3, 0x55, 10, 800);
        d.on_packet(t0, &audio[0], &mut out);
        assert_eq!(out.len(), 1, "relayed");
        d.play_digits("5", 100).unwrap();
        assert_eq!(d.next_event_due(t0), Some(t0));
        d.poll(t0, &mut out);
        d.on_packet(t0 + 20 * MS, &audio[1], &mut out);
        let mut t = t0;
        while let Some(due) = d.next_event_due(t) {
            t = due;
            d.poll(t, &mut out);
        }
        d.on_packet(t + 20 * MS, &audio[2], &mut out);
        let headers: Vec<RtpHeader> = out.iter().map(|p| RtpHeader::parse(p).unwrap()).collect();
        let pts: Vec<u8> = headers.iter().map(|h| h.payload_type).collect();
        // Audio, the event's packets (start, updates, three ends), audio again.
        assert_eq!(pts.first(), Some(&0));
        assert_eq!(pts.last(), Some(&0), "{pts:?}");
        let events: Vec<&Vec<u8>> = out
            .iter()
            .filter(|p| RtpHeader::parse(p).unwrap().payload_type == 101)
            .collect();
        assert!(events.len() >= 4, "{pts:?}");
        assert_eq!(
            pts.iter().filter(|p| **p == 0).count(),
            2,
            "audio paused during the digit: {pts:?}"
        );
        let first = RtpHeader::parse(events[0]).unwrap();
        assert!(first.marker);
        let ev = dtmf::EventPayload::parse(first.payload(events[0])).unwrap();
        assert_eq!(ev.event, 5);
        // One line: consecutive sequence numbers, one SSRC.
        assert!(
            headers
                .windows(2)
                .all(|w| w[1].sequence == w[0].sequence.wrapping_add(1))
        );
        assert!(headers.iter().all(|h| h.ssrc == headers[0].ssrc));
        // No telephone-event on the other leg: refused.
        let mut plain = audio_direction(to, from, 1).unwrap();
        assert!(plain.play_digits("1", 100).is_err());
    }
}
