//! SIP-side SDP: parse offers from room systems and phones into a typed
//! model, negotiate an answer (RFC 3264), print it.
//!
//! Owns the SDP grammar boundary (through `rtc-sdp`, which reads the
//! Polycom/Cisco/Yealink offers str0m's stricter parser refuses) and the
//! offer/answer rules for plain RTP/AVP and SDES-SRTP (RFC 4568) legs. It is
//! pure: no sockets, no clocks; ports and addresses come in as parameters.
//! It must not know about calls or legs: the call layer decides which codecs
//! a side may use and hands them in.

mod answer;
mod offer;

pub use answer::{Answer, AnswerConfig, Negotiated, Srtp, answer, pick_format};
pub use offer::{Agreed, Offer, VideoOffer, video_format};

use crate::media::srtp::Suite;
use causeway_codecs::CodecKey;
use std::net::{IpAddr, SocketAddr};

/// Why an SDP body was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// The body does not follow the SDP grammar.
    #[error("SDP does not parse: {0}")]
    Syntax(String),
    /// It parses but something a session needs is missing or out of range.
    #[error("SDP is incomplete: {0}")]
    Invalid(&'static str),
    /// No media stream could be accepted.
    #[error("no acceptable media: {0}")]
    NoCommonMedia(&'static str),
}

impl SdpError {
    /// The SIP status and Warning (RFC 3261 20.43 codes) this maps to.
    pub fn status(&self) -> (u16, &'static str, String) {
        match self {
            Self::Syntax(_) | Self::Invalid(_) => {
                (400, "Bad Request", format!("399 causeway \"{self}\""))
            }
            Self::NoCommonMedia(_) => (
                488,
                "Not Acceptable Here",
                format!("305 causeway \"{self}\""),
            ),
        }
    }
}

/// `m=` media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `audio`
    Audio,
    /// `video`
    Video,
    /// Anything else (`application`, `text`, `image`): always rejected.
    Other,
}

/// `m=` transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `RTP/AVP`
    RtpAvp,
    /// `RTP/AVPF`
    RtpAvpf,
    /// `RTP/SAVP` (SDES-SRTP)
    RtpSavp,
    /// `RTP/SAVPF`
    RtpSavpf,
    /// Anything else (DTLS, TCP/BFCP, udptl): not for an RTP session here.
    Other,
}

impl Proto {
    fn parse(protos: &[String]) -> Self {
        match protos.join("/").to_ascii_uppercase().as_str() {
            "RTP/AVP" => Self::RtpAvp,
            "RTP/AVPF" => Self::RtpAvpf,
            "RTP/SAVP" => Self::RtpSavp,
            "RTP/SAVPF" => Self::RtpSavpf,
            _ => Self::Other,
        }
    }

    /// Whether the profile is secure (needs `a=crypto`).
    pub fn secure(self) -> bool {
        matches!(self, Self::RtpSavp | Self::RtpSavpf)
    }
}

/// Stream direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `sendrecv` (the default).
    #[default]
    SendRecv,
    /// `sendonly`
    SendOnly,
    /// `recvonly`
    RecvOnly,
    /// `inactive`
    Inactive,
}

impl Direction {
    /// The direction an answerer takes toward an offer (RFC 3264 6.1) when it
    /// is willing to both send and receive.
    pub fn answer(self) -> Self {
        match self {
            Self::SendRecv => Self::SendRecv,
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            Self::Inactive => Self::Inactive,
        }
    }

    /// The attribute name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// Whether the side that wrote this sends media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }
}

/// One payload format of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// RTP payload type.
    pub pt: u8,
    /// Encoding from `a=rtpmap`, or the RFC 3551 static assignment.
    pub codec: Option<CodecKey>,
    /// `a=fmtp` parameters.
    pub fmtp: Option<String>,
}

impl Format {
    /// Whether its `a=fmtp` allows H.264 packetization mode 1 (FU-A,
    /// STAP-A); RFC 6184: an absent `packetization-mode` means 0.
    pub fn fu_a(&self) -> bool {
        causeway_codecs::registry::H264Params::from_fmtp(self.fmtp.as_deref().unwrap_or(""))
            .is_ok_and(|p| p.packetization_mode == 1)
    }

    /// Whether this is `telephone-event`.
    pub fn is_telephone_event(&self) -> bool {
        self.codec
            .as_ref()
            .is_some_and(|c| c.name.eq_ignore_ascii_case("telephone-event"))
    }
}

/// An `a=crypto` line (RFC 4568) for a suite we implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    /// The tag the answer must repeat.
    pub tag: u32,
    /// The suite.
    pub suite: Suite,
    /// The key parameter (`inline:...`), checked when keys are made.
    pub key_params: String,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDesc {
    /// Media type.
    pub kind: MediaKind,
    /// The type as written (for echoing it in a rejection).
    pub kind_name: String,
    /// RTP port (0: the stream is disabled).
    pub port: u16,
    /// Transport profile.
    pub proto: Proto,
    /// The profile as written.
    pub proto_name: String,
    /// Formats as written on the `m=` line.
    pub format_names: Vec<String>,
    /// Connection address for this section (falls back to the session's).
    pub connection: Option<IpAddr>,
    /// RTP payload formats we could read, in the offerer's order.
    pub formats: Vec<Format>,
    /// Direction.
    pub direction: Direction,
    /// `a=rtcp-mux`
    pub rtcp_mux: bool,
    /// `a=rtcp:` port (and address) when not port + 1.
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    /// `a=crypto` lines with suites we implement, in offer order.
    pub crypto: Vec<Crypto>,
    /// `a=ptime` in ms.
    pub ptime: Option<u32>,
    /// The keyframe requests an `a=rtcp-fb` takes (`nack pli` or `ccm
    /// fir`, RFC 4585 and 5104), with its payload type (`None`: `*`).
    pub keyframe_fb: Vec<(Option<u8>, KeyframeFb)>,
}

/// An RTCP keyframe request an `a=rtcp-fb` line can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeFb {
    /// `nack pli`: Picture Loss Indication (RFC 4585).
    Pli,
    /// `ccm fir`: Full Intra Request (RFC 5104).
    Fir,
}

impl KeyframeFb {
    /// The line's feedback type and parameter.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pli => "nack pli",
            Self::Fir => "ccm fir",
        }
    }
}

impl MediaDesc {
    /// The keyframe requests the writer takes for payload type `pt`, in
    /// the order written, each once.
    pub fn keyframe_requests(&self, pt: u8) -> Vec<KeyframeFb> {
        let mut kinds = Vec::new();
        for kind in self.keyframe_fb_for(pt) {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    }

    /// Whether the writer takes RTCP keyframe requests (PLI or FIR) for
    /// payload type `pt`.
    pub fn takes_keyframe_requests(&self, pt: u8) -> bool {
        self.keyframe_fb_for(pt).next().is_some()
    }

    /// The keyframe feedback lines that apply to `pt` (its own, and `*`).
    fn keyframe_fb_for(&self, pt: u8) -> impl Iterator<Item = KeyframeFb> + '_ {
        self.keyframe_fb
            .iter()
            .filter(move |(p, _)| p.is_none_or(|p| p == pt))
            .map(|(_, kind)| *kind)
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDesc {
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` version.
    pub version: u64,
    /// Session-level connection address.
    pub connection: Option<IpAddr>,
    /// Media sections in order.
    pub media: Vec<MediaDesc>,
}

impl SessionDesc {
    /// The first audio section that is not disabled (port 0).
    pub fn active_audio(&self) -> Option<&MediaDesc> {
        self.active(MediaKind::Audio)
    }

    /// The first video section that is not disabled (port 0).
    pub fn active_video(&self) -> Option<&MediaDesc> {
        self.active(MediaKind::Video)
    }

    fn active(&self, kind: MediaKind) -> Option<&MediaDesc> {
        self.media.iter().find(|m| m.kind == kind && m.port != 0)
    }

    /// Where RTP for media section `m` goes, if it is enabled and addressed.
    pub fn rtp_addr(&self, m: &MediaDesc) -> Option<SocketAddr> {
        let ip = m.connection.or(self.connection)?;
        (m.port != 0).then_some(SocketAddr::new(ip, m.port))
    }

    /// Where RTCP for media section `m` goes: the RTP address with rtcp-mux,
    /// `a=rtcp` when given, else the next port up.
    pub fn rtcp_addr(&self, m: &MediaDesc, mux: bool) -> Option<SocketAddr> {
        let rtp = self.rtp_addr(m)?;
        if mux {
            return Some(rtp);
        }
        Some(match m.rtcp {
            Some((port, ip)) => SocketAddr::new(ip.unwrap_or(rtp.ip()), port),
            None => SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1)),
        })
    }
}

/// RFC 3551 static payload types a room system may leave without rtpmap.
fn static_codec(pt: u8) -> Option<CodecKey> {
    let (name, clock_rate) = match pt {
        0 => ("PCMU", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        18 => ("G729", 8000),
        34 => ("H263", 90000),
        _ => return None,
    };
    Some(CodecKey {
        name: name.into(),
        clock_rate,
        channels: 1,
    })
}

/// `c=IN IP4 a.b.c.d` (a multicast TTL suffix is dropped).
fn connection_ip(
    c: Option<&rtc_sdp::description::common::ConnectionInformation>,
) -> Option<IpAddr> {
    let addr = c?.address.as_ref()?;
    addr.address.split('/').next()?.parse().ok()
}

/// `a=rtpmap:<pt> <name>/<clock>[/<channels>]`
fn parse_rtpmap(value: &str) -> Option<(u8, CodecKey)> {
    let (pt, rest) = value.split_once(' ')?;
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.to_string();
    let clock_rate = parts.next()?.parse().ok()?;
    let channels = parts.next().map_or(Some(1), |c| c.parse().ok())?;
    Some((
        pt.trim().parse().ok()?,
        CodecKey {
            name,
            clock_rate,
            channels,
        },
    ))
}

/// `a=crypto:<tag> <suite> <key-params> [<session-params>]`; unknown suites
/// are skipped (an answer may pick another line).
fn parse_crypto(value: &str) -> Option<Crypto> {
    let mut parts = value.split_ascii_whitespace();
    let tag = parts.next()?.parse().ok()?;
    let suite = Suite::from_name(parts.next()?)?;
    let key_params = parts.next()?.to_string();
    Some(Crypto {
        tag,
        suite,
        key_params,
    })
}

fn media_desc(md: &rtc_sdp::MediaDescription) -> Result<MediaDesc, SdpError> {
    let name = &md.media_name;
    let kind = match name.media.to_ascii_lowercase().as_str() {
        "audio" => MediaKind::Audio,
        "video" => MediaKind::Video,
        _ => MediaKind::Other,
    };
    let port =
        u16::try_from(name.port.value).map_err(|_| SdpError::Invalid("m= port out of range"))?;
    let mut formats: Vec<Format> = name
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter(|pt| *pt < 128)
        .map(|pt| Format {
            pt,
            codec: static_codec(pt),
            fmtp: None,
        })
        .collect();
    let mut m = MediaDesc {
        kind,
        kind_name: name.media.clone(),
        port,
        proto: Proto::parse(&name.protos),
        proto_name: name.protos.join("/"),
        format_names: name.formats.clone(),
        connection: connection_ip(md.connection_information.as_ref()),
        formats: Vec::new(),
        direction: Direction::default(),
        rtcp_mux: false,
        rtcp: None,
        crypto: Vec::new(),
        ptime: None,
        keyframe_fb: Vec::new(),
    };
    for a in &md.attributes {
        let value = a.value.as_deref().unwrap_or_default();
        match a.key.to_ascii_lowercase().as_str() {
            "rtpmap" => {
                if let Some((pt, codec)) = parse_rtpmap(value)
                    && let Some(f) = formats.iter_mut().find(|f| f.pt == pt)
                {
                    f.codec = Some(codec);
                }
            }
            "fmtp" => {
                if let Some((pt, params)) = value.split_once(' ')
                    && let Ok(pt) = pt.parse::<u8>()
                    && let Some(f) = formats.iter_mut().find(|f| f.pt == pt)
                {
                    f.fmtp = Some(params.trim().to_string());
                }
            }
            "sendrecv" => m.direction = Direction::SendRecv,
            "sendonly" => m.direction = Direction::SendOnly,
            "recvonly" => m.direction = Direction::RecvOnly,
            "inactive" => m.direction = Direction::Inactive,
            "rtcp-mux" => m.rtcp_mux = true,
            "rtcp" => {
                let mut parts = value.split_ascii_whitespace();
                if let Some(Ok(port)) = parts.next().map(str::parse::<u16>) {
                    let ip = parts.nth(2).and_then(|ip| ip.parse().ok());
                    m.rtcp = Some((port, ip));
                }
            }
            "crypto" => m.crypto.extend(parse_crypto(value)),
            "ptime" => m.ptime = value.trim().parse().ok(),
            "rtcp-fb" => {
                let mut parts = value.split_ascii_whitespace();
                let pt = parts.next().map(|p| (p, p.parse::<u8>()));
                let kind = (parts.next(), parts.next());
                let keyframe = match kind {
                    (Some("nack"), Some("pli")) => Some(KeyframeFb::Pli),
                    (Some("ccm"), Some("fir")) => Some(KeyframeFb::Fir),
                    _ => None,
                };
                match (pt, keyframe) {
                    (Some(("*", _)), Some(k)) => m.keyframe_fb.push((None, k)),
                    (Some((_, Ok(pt))), Some(k)) => m.keyframe_fb.push((Some(pt), k)),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    m.formats = formats;
    Ok(m)
}

/// Parses an SDP body. Line endings may be CRLF or LF.
pub fn parse(text: &str) -> Result<SessionDesc, SdpError> {
    let mut cursor = std::io::Cursor::new(text.as_bytes());
    let sd = rtc_sdp::SessionDescription::unmarshal(&mut cursor)
        .map_err(|e| SdpError::Syntax(e.to_string()))?;
    let media = sd
        .media_descriptions
        .iter()
        .map(media_desc)
        .collect::<Result<Vec<_>, _>>()?;
    let mut session = SessionDesc {
        session_id: sd.origin.session_id,
        version: sd.origin.session_version,
        connection: connection_ip(sd.connection_information.as_ref()),
        media,
    };
    // Session-level direction applies to sections without their own.
    let session_dir = sd.attributes.iter().find_map(|a| match a.key.as_str() {
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    });
    if let Some(dir) = session_dir {
        for (m, md) in session.media.iter_mut().zip(&sd.media_descriptions) {
            let own = md.attributes.iter().any(|a| {
                ["sendrecv", "sendonly", "recvonly", "inactive"].contains(&a.key.as_str())
            });
            if !own {
                m.direction = dir;
            }
        }
    }
    Ok(session)
}

#[cfg(test)]
mod tests;
