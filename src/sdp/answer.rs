//! RFC 3264 answers for SIP legs: per `m=` section, the first offered codec
//! this side may use (the offerer's order wins; of H.264 offered in
//! packetization modes 0 and 1, mode 1), telephone-event at the same
//! clock when allowed, the mirrored direction, rtcp-mux when offered, and an
//! SDES key (RFC 4568) for the first offered crypto suite we implement,
//! and for video the keyframe feedback (`a=rtcp-fb` PLI, FIR) the offer
//! listed. Sections we cannot take are rejected with port 0, as RFC 3264
//! 6 requires.

use super::{Direction, Format, MediaDesc, MediaKind, Proto, SdpError, SessionDesc};
use crate::media::srtp::MasterKey;
use causeway_codecs::CodecKey;
use rtc_sdp::description::common::{Address, Attribute, ConnectionInformation};
use rtc_sdp::description::media::{MediaName, RangedPort};
use rtc_sdp::description::session::{Origin, TimeDescription, Timing};
use rtc_sdp::{MediaDescription, SessionDescription};
use std::net::{IpAddr, SocketAddr};

/// What this side may answer with.
#[derive(Debug, Clone)]
pub struct AnswerConfig {
    /// Codecs (audio and video) this side may use; matched by name
    /// (case-insensitive), clock rate and channels.
    pub codecs: Vec<CodecKey>,
    /// Whether telephone-event is answered when offered.
    pub dtmf: bool,
    /// Our SDES key of the session being re-offered: kept when the offer's
    /// suite matches (RFC 4568 lets the answerer keep its key), so a hold
    /// or a new address does not rekey the media. For audio sections.
    pub keep_key: Option<MasterKey>,
    /// The same for video sections (each stream has a key of its own).
    pub keep_video_key: Option<MasterKey>,
}

/// SDES keys for one stream.
#[derive(Debug, Clone)]
pub struct Srtp {
    /// The offered `a=crypto` line we took (its tag goes back).
    pub tag: u32,
    /// The remote side's key (what it protects with).
    pub remote: MasterKey,
    /// Our key (what we protect with), sent in the answer.
    pub local: MasterKey,
}

impl Srtp {
    /// The keys an RTP session takes: (the remote's, ours).
    pub fn keys(&self) -> (MasterKey, MasterKey) {
        (self.remote.clone(), self.local.clone())
    }
}

/// What was agreed for one accepted `m=` section.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec and payload type both sides use.
    pub format: Format,
    /// telephone-event, when both sides have it at the codec's clock.
    pub dtmf: Option<Format>,
    /// Our direction.
    pub direction: Direction,
    /// RTP and RTCP share the port.
    pub rtcp_mux: bool,
    /// Where the remote wants RTP (None: unknown until it sends, e.g. 0.0.0.0).
    pub remote_rtp: Option<SocketAddr>,
    /// Where the remote wants RTCP.
    pub remote_rtcp: Option<SocketAddr>,
    /// SDES-SRTP keys when the profile is secure.
    pub srtp: Option<Srtp>,
    /// Packet time the remote asked for.
    pub ptime: Option<u32>,
    /// The remote takes RTCP keyframe requests (PLI, FIR) for the format
    /// (its `a=rtcp-fb`); else a SIP INFO asks it for a keyframe.
    pub keyframe_fb: bool,
}

/// An answer before ports are known: one entry per offered section.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The offer answered.
    pub offer: SessionDesc,
    /// Accepted sections (None: rejected with port 0).
    pub streams: Vec<Option<Negotiated>>,
}

pub(super) fn same_codec(a: &CodecKey, b: &CodecKey) -> bool {
    a.name.eq_ignore_ascii_case(&b.name) && a.clock_rate == b.clock_rate && a.channels == b.channels
}

/// The format an answer takes among an offer's `formats` (those `ours`
/// lets through): the first one's codec and, for H.264 offered in
/// packetization modes 0 and 1 (baresip, many room systems), a mode 1
/// format, whose FU-A carries NAL units of any size, so a browser's
/// stream is relayed as it is. What a SIP caller's SIP callees are offered
/// follows it too ([`crate::b2bua::caller_video_formats`]).
pub fn pick_format(formats: &[Format], ours: impl Fn(&&Format) -> bool) -> Option<&Format> {
    let first = formats.iter().find(&ours)?;
    Some(
        formats
            .iter()
            .filter(ours)
            .find(|f| f.codec == first.codec && f.fu_a())
            .unwrap_or(first),
    )
}

fn negotiate(
    offer: &SessionDesc,
    m: &MediaDesc,
    cfg: &AnswerConfig,
) -> Result<Option<Negotiated>, SdpError> {
    if m.port == 0 || m.kind == MediaKind::Other || m.proto == Proto::Other {
        return Ok(None);
    }
    let ours = |f: &&Format| {
        f.codec
            .as_ref()
            .is_some_and(|c| cfg.codecs.iter().any(|ours| same_codec(ours, c)))
    };
    let Some(format) = pick_format(&m.formats, ours) else {
        return Ok(None);
    };
    let clock = format.codec.as_ref().map_or(0, |c| c.clock_rate);
    let dtmf = (cfg.dtmf && m.kind == MediaKind::Audio)
        .then(|| {
            m.formats.iter().find(|f| {
                f.is_telephone_event() && f.codec.as_ref().is_some_and(|c| c.clock_rate == clock)
            })
        })
        .flatten()
        .cloned();
    let srtp = if m.proto.secure() {
        let Some((tag, remote)) = m.crypto.iter().find_map(|c| {
            MasterKey::from_inline(c.suite, &c.key_params)
                .ok()
                .map(|k| (c.tag, k))
        }) else {
            return Ok(None);
        };
        Some(Srtp {
            tag,
            local: match m.kind {
                MediaKind::Video => &cfg.keep_video_key,
                _ => &cfg.keep_key,
            }
            .clone()
            .filter(|k| k.suite == remote.suite)
            .unwrap_or_else(|| MasterKey::generate(remote.suite)),
            remote,
        })
    } else {
        None
    };
    // 0.0.0.0 (RFC 2543 hold) or a missing c=: learn the address from RTP.
    let remote_rtp = offer.rtp_addr(m).filter(|a| !a.ip().is_unspecified());
    Ok(Some(Negotiated {
        kind: m.kind,
        format: format.clone(),
        dtmf,
        direction: m.direction.answer(),
        rtcp_mux: m.rtcp_mux,
        remote_rtp,
        remote_rtcp: remote_rtp.and(offer.rtcp_addr(m, m.rtcp_mux)),
        srtp,
        ptime: m.ptime,
        keyframe_fb: m.takes_keyframe_requests(format.pt),
    }))
}

/// Negotiates an answer; fails with [`SdpError::NoCommonMedia`] (488) when
/// no section can be accepted.
pub fn answer(offer: &SessionDesc, cfg: &AnswerConfig) -> Result<Answer, SdpError> {
    let streams = offer
        .media
        .iter()
        .map(|m| negotiate(offer, m, cfg))
        .collect::<Result<Vec<_>, _>>()?;
    if streams.iter().all(Option::is_none) {
        let why = if offer
            .media
            .iter()
            .any(|m| m.proto.secure() && m.crypto.is_empty())
        {
            "no SDES crypto suite in common"
        } else {
            "no codec in common"
        };
        return Err(SdpError::NoCommonMedia(why));
    }
    Ok(Answer {
        offer: offer.clone(),
        streams,
    })
}

fn ip_type(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IP4" } else { "IP6" }
}

fn attr(key: &str, value: Option<String>) -> Attribute {
    Attribute::new(key.to_string(), value)
}

fn rtpmap(f: &Format) -> Option<Attribute> {
    let c = f.codec.as_ref()?;
    let channels = if c.channels > 1 {
        format!("/{}", c.channels)
    } else {
        String::new()
    };
    Some(attr(
        "rtpmap",
        Some(format!("{} {}/{}{channels}", f.pt, c.name, c.clock_rate)),
    ))
}

impl Answer {
    /// Prints the answer. `ports[i]` is our RTP port for stream `i` (ignored
    /// for rejected streams); `session_id` and `version` go into `o=`.
    pub fn to_sdp(&self, address: IpAddr, ports: &[u16], session_id: u64, version: u64) -> String {
        let connection = ConnectionInformation {
            network_type: "IN".into(),
            address_type: ip_type(address).into(),
            address: Some(Address {
                address: address.to_string(),
                ttl: None,
                range: None,
            }),
        };
        let media = self
            .offer
            .media
            .iter()
            .zip(&self.streams)
            .enumerate()
            .map(|(i, (m, n))| media_section(m, n.as_ref(), ports.get(i).copied().unwrap_or(0)))
            .collect();
        let sd = SessionDescription {
            version: 0,
            origin: Origin {
                username: "causeway".into(),
                session_id,
                session_version: version,
                network_type: "IN".into(),
                address_type: ip_type(address).into(),
                unicast_address: address.to_string(),
            },
            session_name: "causeway".into(),
            session_information: None,
            uri: None,
            email_address: None,
            phone_number: None,
            connection_information: Some(connection),
            bandwidth: vec![],
            time_descriptions: vec![TimeDescription {
                timing: Timing {
                    start_time: 0,
                    stop_time: 0,
                },
                repeat_times: vec![],
            }],
            time_zones: vec![],
            encryption_key: None,
            attributes: vec![],
            media_descriptions: media,
        };
        sd.marshal()
    }
}

fn media_section(m: &MediaDesc, n: Option<&Negotiated>, port: u16) -> MediaDescription {
    let name = |port: u16, formats: Vec<String>| MediaName {
        media: m.kind_name.clone(),
        port: RangedPort {
            value: isize::try_from(port).unwrap_or(0),
            range: None,
        },
        protos: m.proto_name.split('/').map(str::to_string).collect(),
        formats,
    };
    let Some(n) = n else {
        // Rejected: port 0, the offered formats echoed (RFC 3264 6).
        return MediaDescription {
            media_name: name(0, m.format_names.clone()),
            media_title: None,
            connection_information: None,
            bandwidth: vec![],
            encryption_key: None,
            attributes: vec![],
        };
    };
    let chosen: Vec<&Format> = std::iter::once(&n.format).chain(n.dtmf.as_ref()).collect();
    let mut attributes = Vec::new();
    for f in &chosen {
        attributes.extend(rtpmap(f));
        if let Some(fmtp) = &f.fmtp {
            attributes.push(attr("fmtp", Some(format!("{} {fmtp}", f.pt))));
        }
    }
    // The keyframe requests the offer said its video takes, echoed (RFC
    // 4585 4.2): a strict offerer sends us only feedback the answer
    // lists, and the media path honours both (`Feedback::asks_keyframe`).
    let fb = if n.kind == MediaKind::Video {
        m.keyframe_requests(n.format.pt)
    } else {
        Vec::new()
    };
    for kind in fb {
        let line = format!("{} {}", n.format.pt, kind.name());
        attributes.push(attr("rtcp-fb", Some(line)));
    }
    if let Some(p) = n.ptime {
        attributes.push(attr("ptime", Some(p.to_string())));
    }
    if n.rtcp_mux {
        attributes.push(attr("rtcp-mux", None));
    }
    if let Some(s) = &n.srtp {
        attributes.push(attr(
            "crypto",
            Some(format!(
                "{} {} {}",
                s.tag,
                s.local.suite.name(),
                s.local.to_inline()
            )),
        ));
    }
    attributes.push(attr(n.direction.name(), None));
    MediaDescription {
        media_name: name(port, chosen.iter().map(|f| f.pt.to_string()).collect()),
        media_title: None,
        connection_information: None,
        bandwidth: vec![],
        encryption_key: None,
        attributes,
    }
}
