//! RFC 3264 offers for SIP legs the gateway calls out on, and reading the
//! answer that comes back: one audio section over RTP/AVP with the codecs
//! the call layer allows (static payload types where RFC 3551 assigns one,
//! dynamic ones from 96 otherwise), telephone-event at 8 kHz and rtcp-mux;
//! optionally a video section on its own port (our H.264
//! packetization-mode 1 and VP8, or a SIP caller's own formats to relay),
//! asking for keyframes over RTCP (PLI, FIR), RTP/SAVP with a key of its
//! own when the audio section is. A re-offer is laid out like the
//! session it changes (RFC 3264 8: its sections in their places, those
//! refused still refused), and its answer read in that layout. The
//! answer is read into the same [`Negotiated`] an answer we write
//! yields, so the media layer cannot tell who offered.

use super::{Direction, Format, MediaDesc, MediaKind, Proto, SdpError, SessionDesc};
use crate::media::srtp::{MasterKey, Suite};
use crate::sdp::answer::{Negotiated, Srtp, same_codec};
use causeway_codecs::CodecKey;
use causeway_codecs::registry::AudioCodec;
use causeway_codecs::video::VideoCodec;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Payload type of telephone-event/8000 in our offers.
const DTMF_PT: u8 = 101;

/// Payload types of our video formats (clear of the audio ones and 101).
const H264_PT: u8 = 99;
const VP8_PT: u8 = 100;

/// The H.264 we offer: constrained baseline 3.1, FU-A allowed.
const H264_FMTP: &str = "profile-level-id=42e01f;packetization-mode=1";

/// An offer we send: the formats of its audio section and, optionally,
/// of a video section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Audio formats in preference order.
    pub audio: Vec<Format>,
    /// telephone-event/8000, when offered.
    pub dtmf: Option<Format>,
    /// The video section, when offered.
    pub video: Option<VideoOffer>,
    /// Our SDES key: the audio section is RTP/SAVP with it (`a=crypto:1`)
    /// and the answer must be too.
    pub srtp: Option<MasterKey>,
    /// Where each section goes (empty: audio, then video). A re-offer
    /// keeps the session's sections in their places ([`Self::laid_out_like`]).
    pub(crate) layout: Vec<Slot>,
}

/// A section's place in an offer (RFC 3264 8: a re-offer has every
/// section of the session, in the same order, those refused still
/// refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The audio section.
    Audio,
    /// The video section.
    Video,
    /// A section the session refused: its `m=` line, on port 0.
    Refused(String),
}

/// The video section of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoOffer {
    /// Our RTP port for video.
    pub port: u16,
    /// Formats in preference order.
    pub formats: Vec<Format>,
    /// Our SDES key for video, when the audio section is RTP/SAVP (each
    /// stream has a key of its own): the section is RTP/SAVP too.
    pub srtp: Option<MasterKey>,
}

/// What the answer to one of our offers agreed: audio, and video when the
/// offer had it and the answer accepted it.
#[derive(Debug, Clone)]
pub struct Agreed {
    /// The audio section.
    pub audio: Negotiated,
    /// The video section.
    pub video: Option<Negotiated>,
}

/// The SDP format of a video codec in our offers.
pub fn video_format(codec: VideoCodec) -> Format {
    let (pt, name, fmtp) = match codec {
        VideoCodec::H264 => (H264_PT, "H264", Some(H264_FMTP.to_string())),
        VideoCodec::Vp8 => (VP8_PT, "VP8", None),
    };
    Format {
        pt,
        codec: Some(CodecKey {
            name: name.into(),
            clock_rate: 90000,
            channels: 1,
        }),
        fmtp,
    }
}

impl Offer {
    /// An offer for `codecs` (first preferred; codecs the gateway cannot
    /// decode are left out) and, when `dtmf`, telephone-event.
    pub fn audio(codecs: &[AudioCodec], dtmf: bool) -> Self {
        let mut next_dynamic = 96;
        let audio = codecs
            .iter()
            .map(|c| {
                let pt = c.static_payload_type().unwrap_or_else(|| {
                    next_dynamic += 1;
                    next_dynamic - 1
                });
                Format {
                    pt,
                    codec: Some(c.key()),
                    fmtp: (*c == AudioCodec::Opus).then(|| "useinbandfec=1".to_string()),
                }
            })
            .collect();
        let dtmf = dtmf.then(|| Format {
            pt: DTMF_PT,
            codec: Some(CodecKey {
                name: "telephone-event".into(),
                clock_rate: 8000,
                channels: 1,
            }),
            fmtp: Some("0-16".into()),
        });
        Self {
            audio,
            dtmf,
            video: None,
            srtp: None,
            layout: Vec::new(),
        }
    }

    /// Makes the audio section RTP/SAVP with a new SDES key of `suite`,
    /// and the video section, if any, with another.
    pub fn with_srtp(mut self, suite: Suite) -> Self {
        self.srtp = Some(MasterKey::generate(suite));
        if let Some(v) = &mut self.video {
            v.srtp = Some(MasterKey::generate(suite));
        }
        self
    }

    /// RTP/SAVP (AES_CM_128_HMAC_SHA1_80, the suite every SDES peer has)
    /// where a rule's `media.srtp` requires it; plain RTP otherwise (an
    /// RTP/SAVP offer would cost the call with every peer that lacks SRTP,
    /// and SDP has no fallback without capability negotiation, RFC 5939).
    pub fn with_srtp_if(self, policy: crate::dialplan::Srtp) -> Self {
        match policy {
            crate::dialplan::Srtp::Required => self.with_srtp(Suite::AesCm128HmacSha1_80),
            crate::dialplan::Srtp::Optional | crate::dialplan::Srtp::Off => self,
        }
    }

    /// Adds a video section on our RTP `port` with `codecs`, first
    /// preferred (none: no section).
    pub fn with_video(self, codecs: &[VideoCodec], port: u16) -> Self {
        self.with_video_formats(codecs.iter().map(|c| video_format(*c)).collect(), port)
    }

    /// Adds a video section on our RTP `port` with `formats` as they are
    /// (a SIP caller's own, to be relayed), first preferred (none: no
    /// section). It is RTP/SAVP with a key of its own when the audio is
    /// (whichever of this and [`Self::with_srtp`] comes first).
    pub fn with_video_formats(mut self, formats: Vec<Format>, port: u16) -> Self {
        self.video = (!formats.is_empty()).then(|| VideoOffer {
            port,
            formats,
            srtp: self.srtp.as_ref().map(|k| MasterKey::generate(k.suite)),
        });
        self
    }

    /// A re-offer of what a session already agreed: its codecs and
    /// telephone-event only, video on `video_port` when it was agreed (a
    /// refused video section stays in, refused, as RFC 3264 8 wants).
    pub fn agreed(a: &Agreed, video_port: Option<u16>) -> Self {
        Self {
            audio: vec![a.audio.format.clone()],
            dtmf: a.audio.dtmf.clone(),
            video: video_port.map(|port| VideoOffer {
                port: if a.video.is_some() { port } else { 0 },
                formats: a.video.as_ref().map_or_else(
                    || vec![video_format(VideoCodec::H264)],
                    |v| vec![v.format.clone()],
                ),
                srtp: a
                    .video
                    .as_ref()
                    .and_then(|v| v.srtp.as_ref())
                    .map(|s| s.local.clone()),
            }),
            // The session's own key again: a re-offer does not rekey.
            srtp: a.audio.srtp.as_ref().map(|s| s.local.clone()),
            layout: Vec::new(),
        }
    }

    /// Lays this re-offer out like `previous`, our last SDP of the
    /// session: our audio, and our video if this offer has some, where
    /// its first active ones were; every other section (a second video,
    /// BFCP's `m=application`, a video we no longer carry) refused in its
    /// place. A re-offer adds no section. SDP that does not parse, or has
    /// no active audio, leaves the default layout.
    pub fn laid_out_like(mut self, previous: &str) -> Self {
        let Ok(prev) = super::parse(previous) else {
            return self;
        };
        let mut layout = Vec::with_capacity(prev.media.len());
        for m in &prev.media {
            let first = |slot| m.port != 0 && !layout.contains(&slot);
            let slot = match m.kind {
                MediaKind::Audio if first(Slot::Audio) => Slot::Audio,
                MediaKind::Video if self.video.is_some() && first(Slot::Video) => Slot::Video,
                _ => Slot::Refused(
                    std::iter::once(format!("m={} 0 {}", m.kind_name, m.proto_name))
                        .chain(m.format_names.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            };
            layout.push(slot);
        }
        if layout.contains(&Slot::Audio) {
            self.layout = layout;
        }
        self
    }

    /// Where the audio and the video section go: their indices among the
    /// offer's sections (a video the layout has no place for is left
    /// out: the layout refuses the session's video already, or it had
    /// none).
    fn places(&self) -> (usize, Option<usize>) {
        if self.layout.is_empty() {
            return (0, self.video.as_ref().map(|_| 1));
        }
        let at = |slot| self.layout.iter().position(|s| *s == slot);
        (at(Slot::Audio).unwrap_or(0), at(Slot::Video))
    }

    /// Prints the offer with our media address and RTP port.
    pub fn to_sdp(&self, address: IpAddr, port: u16, session_id: u64, version: u64) -> String {
        self.to_sdp_with(address, port, (session_id, version), Direction::SendRecv)
    }

    /// Prints the offer with a direction (a re-offer putting the session on
    /// hold, or resuming it); `origin` is the `o=` session id and version.
    pub fn to_sdp_with(
        &self,
        address: IpAddr,
        port: u16,
        origin: (u64, u64),
        direction: Direction,
    ) -> String {
        let (session_id, version) = origin;
        let ip = if address.is_ipv4() { "IP4" } else { "IP6" };
        let mut s = format!(
            "v=0\r\no=causeway {session_id} {version} IN {ip} {address}\r\ns=causeway\r\n\
             c=IN {ip} {address}\r\nt=0 0\r\n"
        );
        let (audio_at, video_at) = self.places();
        let sections = self
            .layout
            .len()
            .max(audio_at + 1)
            .max(video_at.map_or(0, |v| v + 1));
        for i in 0..sections {
            if i == audio_at {
                self.audio_section(&mut s, port, direction);
            } else if Some(i) == video_at {
                self.video_section(&mut s, direction);
            } else if let Some(Slot::Refused(line)) = self.layout.get(i) {
                let _ = write!(s, "{line}\r\n");
            }
        }
        s
    }

    /// Prints our audio section on `port`.
    fn audio_section(&self, s: &mut String, port: u16, direction: Direction) {
        let audio: Vec<&Format> = self.audio.iter().chain(&self.dtmf).collect();
        section(s, "audio", (port, profile(self.srtp.as_ref())), &audio);
        if let Some(k) = &self.srtp {
            crypto_line(s, k);
        }
        let _ = write!(s, "a=ptime:20\r\na=rtcp-mux\r\na={}\r\n", direction.name());
    }

    /// Prints our video section, if any (refused on port 0: its `m=`
    /// line and formats only).
    fn video_section(&self, s: &mut String, direction: Direction) {
        let Some(v) = &self.video else {
            return;
        };
        let formats: Vec<&Format> = v.formats.iter().collect();
        section(s, "video", (v.port, profile(v.srtp.as_ref())), &formats);
        if v.port == 0 {
            return;
        }
        if let Some(k) = &v.srtp {
            crypto_line(s, k);
        }
        for f in &formats {
            let _ = write!(
                s,
                "a=rtcp-fb:{pt} nack pli\r\na=rtcp-fb:{pt} ccm fir\r\n",
                pt = f.pt
            );
        }
        let _ = write!(s, "a=rtcp-mux\r\na={}\r\n", direction.name());
    }

    /// Reads the answer to this offer: what was agreed for the audio
    /// section and, when offered, the video one. A rejected audio section,
    /// a codec we did not offer or a changed profile is
    /// [`SdpError::NoCommonMedia`] (the call cannot go on); the same about
    /// video leaves the call without video.
    pub fn read_answer(&self, answer: &SessionDesc) -> Result<Agreed, SdpError> {
        let (audio_at, video_at) = self.places();
        let m = answer
            .media
            .get(audio_at)
            .ok_or(SdpError::Invalid("the answer has no audio section"))?;
        if m.kind != MediaKind::Audio || m.port == 0 {
            return Err(SdpError::NoCommonMedia("the answer rejected audio"));
        }
        let format = answered_format(m, &self.audio, self.srtp.is_some())?;
        let srtp = match &self.srtp {
            Some(ours) => Some(answered_key(m, ours)?),
            None => None,
        };
        // telephone-event at the codec's clock (RFC 4733), else at the
        // 8 kHz we offered (what many phones send beside Opus).
        let dtmf = self.dtmf.as_ref().and_then(|ours| {
            let events = || m.formats.iter().filter(|f| f.is_telephone_event());
            let clock = |f: &Format| f.codec.as_ref().map(|c| c.clock_rate);
            events()
                .find(|f| clock(f) == clock(&format))
                .or_else(|| events().find(|f| clock(f) == clock(ours)))
                .cloned()
        });
        let video = self.video.as_ref().and_then(|v| {
            let m = answer
                .media
                .get(video_at?)
                .filter(|m| m.kind == MediaKind::Video && m.port != 0)?;
            let format = answered_format(m, &v.formats, v.srtp.is_some()).ok()?;
            let srtp = match &v.srtp {
                Some(ours) => Some(answered_key(m, ours).ok()?),
                None => None,
            };
            Some(Negotiated {
                srtp,
                ..agreed_section(answer, m, format, None)
            })
        });
        Ok(Agreed {
            audio: Negotiated {
                srtp,
                ..agreed_section(answer, m, format, dtmf)
            },
            video,
        })
    }
}

/// The SDES keys of an answer to our RTP/SAVP section with key `ours`:
/// its `a=crypto:1` must name our suite.
fn answered_key(m: &MediaDesc, ours: &MasterKey) -> Result<Srtp, SdpError> {
    let no_key = SdpError::NoCommonMedia("the answer has no SDES key for our suite");
    let c = m
        .crypto
        .iter()
        .find(|c| c.tag == 1 && c.suite == ours.suite)
        .ok_or(no_key.clone())?;
    let remote = MasterKey::from_inline(c.suite, &c.key_params).map_err(|_| no_key)?;
    Ok(Srtp {
        tag: 1,
        remote,
        local: ours.clone(),
    })
}

/// The first format of an answer's section that we offered in `ours`, in
/// the profile we offered (RTP/SAVP when `secure`).
fn answered_format(m: &MediaDesc, ours: &[Format], secure: bool) -> Result<Format, SdpError> {
    if m.proto == Proto::Other || m.proto.secure() != secure {
        return Err(SdpError::NoCommonMedia(
            "the answer changed the RTP profile",
        ));
    }
    let offered = |f: &Format| {
        f.codec.as_ref().is_some_and(|c| {
            ours.iter()
                .any(|o| o.codec.as_ref().is_some_and(|oc| same_codec(oc, c)))
        })
    };
    m.formats
        .iter()
        .find(|f| offered(f))
        .cloned()
        .ok_or(SdpError::NoCommonMedia(
            "the answer names no codec we offered",
        ))
}

/// One answered section as the media layer takes it.
fn agreed_section(
    answer: &SessionDesc,
    m: &MediaDesc,
    format: Format,
    dtmf: Option<Format>,
) -> Negotiated {
    let remote_rtp = answer.rtp_addr(m).filter(|a| !a.ip().is_unspecified());
    Negotiated {
        kind: m.kind,
        keyframe_fb: m.takes_keyframe_requests(format.pt),
        format,
        dtmf,
        // The answerer's direction seen from our side.
        direction: m.direction.answer(),
        rtcp_mux: m.rtcp_mux,
        remote_rtp,
        remote_rtcp: remote_rtp.and(answer.rtcp_addr(m, m.rtcp_mux)),
        srtp: None,
        ptime: m.ptime,
    }
}

/// The RTP profile of a section keyed with `srtp` (SDES), or not.
fn profile(srtp: Option<&MasterKey>) -> &'static str {
    if srtp.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    }
}

/// Prints our SDES key's `a=crypto:1` line (RFC 4568).
fn crypto_line(s: &mut String, k: &MasterKey) {
    let _ = write!(s, "a=crypto:1 {} {}\r\n", k.suite.name(), k.to_inline());
}

/// Prints an `m=` line (on `port` with `profile`) and the `rtpmap`/`fmtp`
/// of its formats.
fn section(s: &mut String, kind: &str, (port, profile): (u16, &str), formats: &[&Format]) {
    let _ = write!(s, "m={kind} {port} {profile}");
    for f in formats {
        let _ = write!(s, " {}", f.pt);
    }
    s.push_str("\r\n");
    for f in formats {
        if let Some(c) = &f.codec {
            let channels = if c.channels > 1 {
                format!("/{}", c.channels)
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "a=rtpmap:{} {}/{}{channels}\r\n",
                f.pt, c.name, c.clock_rate
            );
        }
        if let Some(fmtp) = &f.fmtp {
            let _ = write!(s, "a=fmtp:{} {fmtp}\r\n", f.pt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Direction;

    #[test]
    fn an_sdes_offer_is_rtp_savp_with_our_key_and_takes_only_a_keyed_answer() {
        let offer = Offer::audio(&[AudioCodec::Pcmu], false).with_srtp(Suite::AesCm128HmacSha1_80);
        let ours = offer.srtp.clone().unwrap();
        let text = offer.to_sdp("192.0.2.1".parse().unwrap(), 4000, 7, 1);
        assert!(text.contains("m=audio 4000 RTP/SAVP 0\r\n"), "{text}");
        assert!(
            text.contains(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\n",
                ours.to_inline()
            )),
            "{text}"
        );
        let theirs = MasterKey::generate(Suite::AesCm128HmacSha1_80);
        let answer = |proto: &str, crypto: &str| {
            crate::sdp::parse(&format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
                 m=audio 5000 {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}"
            ))
            .unwrap()
        };
        let keyed = format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\n",
            theirs.to_inline()
        );
        let a = offer.read_answer(&answer("RTP/SAVP", &keyed)).unwrap();
        let srtp = a.audio.srtp.clone().unwrap();
        assert!(srtp.remote == theirs && srtp.local == ours);
        // A plain answer, or one without our suite's key, cannot be taken.
        assert!(offer.read_answer(&answer("RTP/AVP", "")).is_err());
        assert!(offer.read_answer(&answer("RTP/SAVP", "")).is_err());
        assert!(
            Offer::audio(&[AudioCodec::Pcmu], false)
                .read_answer(&answer("RTP/SAVP", &keyed))
                .is_err()
        );
        // A re-offer of the session keeps our key.
        let again = Offer::agreed(&a, None).to_sdp("192.0.2.1".parse().unwrap(), 4000, 7, 2);
        assert!(again.contains(&ours.to_inline()), "{again}");
    }

    #[test]
    fn offer_prints_and_reads_its_answer() {
        let offer = Offer::audio(
            &[AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma],
            true,
        );
        let text = offer.to_sdp("192.0.2.1".parse().unwrap(), 4000, 7, 1);
        assert!(
            text.contains("m=audio 4000 RTP/AVP 96 0 8 101\r\n"),
            "{text}"
        );
        assert!(text.contains("a=rtpmap:96 opus/48000/2\r\n"));
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        // Our own offer parses with the SIP-side parser.
        let parsed = super::super::parse(&text).unwrap();
        assert_eq!(parsed.media[0].formats.len(), 4);

        // A phone that does only G.711 answers PCMU with its events.
        let answer = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
                      m=audio 5004 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                      a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
        let n = offer
            .read_answer(&super::super::parse(answer).unwrap())
            .unwrap()
            .audio;
        assert_eq!(n.format.pt, 0);
        assert_eq!(n.dtmf.map(|d| d.pt), Some(101));
        assert_eq!(n.remote_rtp, Some("192.0.2.9:5004".parse().unwrap()));
        assert_eq!(n.remote_rtcp, Some("192.0.2.9:5005".parse().unwrap()));
        assert_eq!(n.direction, Direction::SendRecv);
    }

    #[test]
    fn an_answers_rtcp_fb_says_whether_it_takes_keyframe_requests() {
        let offer = Offer::audio(&[AudioCodec::Pcmu], true).with_video(&[VideoCodec::H264], 4002);
        let takes = |fb: &str| {
            let answer = format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
                 m=audio 5004 RTP/AVP 0\r\nm=video 5006 RTP/AVP 126\r\n\
                 a=rtpmap:126 H264/90000\r\n{fb}"
            );
            let a = offer
                .read_answer(&super::super::parse(&answer).unwrap())
                .unwrap();
            a.video.unwrap().keyframe_fb
        };
        assert!(takes("a=rtcp-fb:126 nack pli\r\n"));
        assert!(takes("a=rtcp-fb:* ccm fir\r\n"));
        assert!(takes("a=rtcp-fb:126 nack\r\na=rtcp-fb:126 ccm fir\r\n"));
        // Generic NACK alone, another payload type, or nothing: no.
        assert!(!takes("a=rtcp-fb:126 nack\r\n"));
        assert!(!takes("a=rtcp-fb:97 nack pli\r\n"));
        assert!(!takes("a=rtcp-fb:126 goog-remb\r\n"));
        assert!(!takes(""));
    }

    #[test]
    fn video_beside_sdes_audio_is_rtp_savp_with_a_key_of_its_own() {
        let offer = Offer::audio(&[AudioCodec::Pcmu], false)
            .with_srtp(Suite::AesCm128HmacSha1_80)
            .with_video(&[VideoCodec::H264], 4002);
        let (audio_key, video_key) = (
            offer.srtp.clone().unwrap(),
            offer.video.as_ref().unwrap().srtp.clone().unwrap(),
        );
        assert!(audio_key != video_key);
        let text = offer.to_sdp("192.0.2.1".parse().unwrap(), 4000, 7, 1);
        assert!(text.contains("m=video 4002 RTP/SAVP 99\r\n"), "{text}");
        assert!(text.contains(&video_key.to_inline()), "{text}");
        let crypto =
            |k: &MasterKey| format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\n", k.to_inline());
        let theirs = MasterKey::generate(Suite::AesCm128HmacSha1_80);
        let answer = |video_proto: &str, video_crypto: &str| {
            crate::sdp::parse(&format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
                 m=audio 5004 RTP/SAVP 0\r\n{}m=video 5006 {video_proto} 99\r\n\
                 a=rtpmap:99 H264/90000\r\n{video_crypto}",
                crypto(&theirs)
            ))
            .unwrap()
        };
        let a = offer
            .read_answer(&answer("RTP/SAVP", &crypto(&theirs)))
            .unwrap();
        let v = a.video.clone().unwrap().srtp.unwrap();
        assert!(v.local == video_key && v.remote == theirs);
        // A plain or keyless video answer leaves the call without video.
        let plain = offer.read_answer(&answer("RTP/AVP", "")).unwrap();
        assert!(plain.video.is_none());
        let keyless = offer.read_answer(&answer("RTP/SAVP", "")).unwrap();
        assert!(keyless.video.is_none());
        // A re-offer keeps each stream's key.
        let again = Offer::agreed(&a, Some(4002)).to_sdp("192.0.2.1".parse().unwrap(), 4000, 7, 2);
        assert!(again.contains(&crypto(&audio_key)), "{again}");
        assert!(again.contains("m=video 4002 RTP/SAVP 99\r\n"), "{again}");
        assert!(again.contains(&video_key.to_inline()), "{again}");
        // Keyed the other way round too.
        let later = Offer::audio(&[AudioCodec::Pcmu], false)
            .with_video(&[VideoCodec::H264], 4002)
            .with_srtp(Suite::AesCm128HmacSha1_80);
        assert!(later.video.unwrap().srtp.is_some());
    }

    #[test]
    fn video_is_offered_on_its_own_port_and_read_back() {
        let offer = Offer::audio(&[AudioCodec::Pcmu], true)
            .with_video(&[VideoCodec::H264, VideoCodec::Vp8], 4002);
        let text = offer.to_sdp("192.0.2.1".parse().unwrap(), 4000, 7, 1);
        assert!(text.contains("m=video 4002 RTP/AVP 99 100\r\n"), "{text}");
        assert!(text.contains("a=fmtp:99 profile-level-id=42e01f;packetization-mode=1\r\n"));
        assert!(text.contains("a=rtcp-fb:100 ccm fir\r\n"));
        let parsed = super::super::parse(&text).unwrap();
        assert_eq!(parsed.media[1].kind, MediaKind::Video);

        // A room system that takes H.264 only, answered with its own type.
        let answer = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
                      m=audio 5004 RTP/AVP 0\r\nm=video 5006 RTP/AVP 126\r\n\
                      a=rtpmap:126 H264/90000\r\na=fmtp:126 packetization-mode=0\r\n";
        let a = offer
            .read_answer(&super::super::parse(answer).unwrap())
            .unwrap();
        let v = a.video.as_ref().unwrap();
        assert_eq!(v.format.pt, 126);
        assert_eq!(v.remote_rtp, Some("192.0.2.9:5006".parse().unwrap()));
        assert_eq!(v.format.fmtp.as_deref(), Some("packetization-mode=0"));
        // It wrote no a=rtcp-fb: keyframes are asked of it by SIP INFO.
        assert!(!v.keyframe_fb);

        // A re-offer keeps both sections; one without agreed video keeps
        // the section, refused.
        let again = Offer::agreed(&a, Some(4002)).to_sdp("192.0.2.1".parse().unwrap(), 4000, 7, 2);
        assert!(again.contains("m=video 4002 RTP/AVP 126\r\n"), "{again}");
        let audio_only = Agreed {
            video: None,
            ..a.clone()
        };
        let again =
            Offer::agreed(&audio_only, Some(4002)).to_sdp("192.0.2.1".parse().unwrap(), 4000, 7, 3);
        assert!(again.contains("m=video 0 RTP/AVP 99\r\n"), "{again}");

        // Video refused, or in a codec we did not offer: audio goes on alone.
        for m in [
            "m=video 0 RTP/AVP 99\r\n",
            "m=video 5006 RTP/AVP 98\r\na=rtpmap:98 VP9/90000\r\n",
        ] {
            let answer = format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
                 m=audio 5004 RTP/AVP 0\r\n{m}"
            );
            let a = offer
                .read_answer(&super::super::parse(&answer).unwrap())
                .unwrap();
            assert!(a.video.is_none(), "{m}");
            assert_eq!(a.audio.format.pt, 0);
        }
    }

    #[test]
    fn answers_that_cannot_go_on_are_refused() {
        let offer = Offer::audio(&[AudioCodec::Pcmu], false);
        let cases = [
            "m=audio 0 RTP/AVP 0\r\n",
            "m=audio 5004 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n",
            "m=audio 5004 RTP/SAVP 0\r\n",
        ];
        for m in cases {
            let answer = format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n{m}"
            );
            let err = offer
                .read_answer(&super::super::parse(&answer).unwrap())
                .unwrap_err();
            assert!(matches!(err, SdpError::NoCommonMedia(_)), "{m}: {err:?}");
        }
        // A held answer (sendonly from the phone) means we only receive.
        let held = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
                    m=audio 5004 RTP/AVP 0\r\na=sendonly\r\n";
        let n = offer
            .read_answer(&super::super::parse(held).unwrap())
            .unwrap()
            .audio;
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(n.dtmf.is_none());
    }

    #[test]
    fn a_re_offer_laid_out_like_the_session_keeps_each_section_once_in_its_place() {
        let m_lines = |sdp: &str| -> Vec<String> {
            sdp.lines()
                .filter(|l| l.starts_with("m="))
                .map(str::to_string)
                .collect()
        };
        let head = "v=0\r\no=causeway 1 1 IN IP4 192.0.2.1\r\ns=causeway\r\n\
                    c=IN IP4 192.0.2.1\r\nt=0 0\r\n";
        let ip = "192.0.2.1".parse().unwrap();
        // The session refused video and BFCP: a refused video is printed
        // once, where it was, not added again at the end.
        let previous = format!(
            "{head}m=video 0 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
             m=application 0 UDP/BFCP *\r\n"
        );
        let mut offer = Offer::audio(&[AudioCodec::Pcmu], false).with_video(&[VideoCodec::Vp8], 0);
        offer = offer.laid_out_like(&previous);
        let text = offer.to_sdp(ip, 4000, 1, 2);
        assert_eq!(
            m_lines(&text),
            [
                "m=video 0 RTP/AVP 96",
                "m=audio 4000 RTP/AVP 0",
                "m=application 0 UDP/BFCP *"
            ],
            "{text}"
        );
        // A re-offer adds no section: video the session refused stays
        // refused, and one without video refuses the session's.
        let taken = Offer::audio(&[AudioCodec::Pcmu], false)
            .with_video(&[VideoCodec::Vp8], 4002)
            .laid_out_like(&previous);
        assert_eq!(m_lines(&taken.to_sdp(ip, 4000, 1, 2)), m_lines(&text));
        let active = previous.replace("m=video 0 ", "m=video 4002 ");
        let audio_only = Offer::audio(&[AudioCodec::Pcmu], false).laid_out_like(&active);
        assert_eq!(m_lines(&audio_only.to_sdp(ip, 4000, 1, 2)), m_lines(&text));
        // The answer's audio is read in its place (second).
        let answer = format!(
            "{head}m=video 0 RTP/AVP 96\r\nm=audio 5004 RTP/AVP 0\r\n\
             m=application 0 UDP/BFCP *\r\n"
        );
        let a = offer
            .read_answer(&super::super::parse(&answer).unwrap())
            .unwrap();
        assert_eq!(a.audio.remote_rtp, Some("192.0.2.1:5004".parse().unwrap()));
        // SDP that does not parse leaves audio, then video.
        let plain = Offer::audio(&[AudioCodec::Pcmu], false).laid_out_like("garbage");
        assert!(plain.layout.is_empty());
    }
}
