//! RFC 3264 offers for SIP legs the gateway calls out on, and reading the
//! answer that comes back: one audio section over RTP/AVP with the codecs
//! the call layer allows (static payload types where RFC 3551 assigns one,
//! dynamic ones from 96 otherwise), telephone-event at 8 kHz and rtcp-mux.
//! The answer is read into the same [`Negotiated`] an answer we write yields,
//! so the media layer cannot tell who offered.

use super::{Direction, Format, MediaKind, Proto, SdpError, SessionDesc};
use crate::sdp::answer::{Negotiated, same_codec};
use causeway_codecs::CodecKey;
use causeway_codecs::registry::AudioCodec;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Payload type of telephone-event/8000 in our offers.
const DTMF_PT: u8 = 101;

/// An offer we send: the formats of its one audio section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Audio formats in preference order.
    pub audio: Vec<Format>,
    /// telephone-event/8000, when offered.
    pub dtmf: Option<Format>,
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
        Self { audio, dtmf }
    }

    /// A re-offer of what a session already agreed: its codec and
    /// telephone-event only.
    pub fn agreed(n: &Negotiated) -> Self {
        Self {
            audio: vec![n.format.clone()],
            dtmf: n.dtmf.clone(),
        }
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
        let formats: Vec<&Format> = self.audio.iter().chain(&self.dtmf).collect();
        let mut s = format!(
            "v=0\r\no=causeway {session_id} {version} IN {ip} {address}\r\ns=causeway\r\n\
             c=IN {ip} {address}\r\nt=0 0\r\nm=audio {port} RTP/AVP"
        );
        for f in &formats {
            let _ = write!(s, " {}", f.pt);
        }
        s.push_str("\r\n");
        for f in &formats {
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
        let _ = write!(s, "a=ptime:20\r\na=rtcp-mux\r\na={}\r\n", direction.name());
        s
    }

    /// Reads the answer to this offer: what was agreed for the audio
    /// section. A rejected section, a codec we did not offer or a changed
    /// profile is [`SdpError::NoCommonMedia`] (the call cannot go on).
    pub fn read_answer(&self, answer: &SessionDesc) -> Result<Negotiated, SdpError> {
        let m = answer
            .media
            .first()
            .ok_or(SdpError::Invalid("the answer has no media section"))?;
        if m.kind != MediaKind::Audio || m.port == 0 {
            return Err(SdpError::NoCommonMedia("the answer rejected audio"));
        }
        if m.proto != Proto::RtpAvp && m.proto != Proto::RtpAvpf {
            return Err(SdpError::NoCommonMedia(
                "the answer changed the RTP profile",
            ));
        }
        let offered = |f: &Format| {
            f.codec.as_ref().is_some_and(|c| {
                self.audio
                    .iter()
                    .any(|o| o.codec.as_ref().is_some_and(|oc| same_codec(oc, c)))
            })
        };
        let format =
            m.formats
                .iter()
                .find(|f| offered(f))
                .cloned()
                .ok_or(SdpError::NoCommonMedia(
                    "the answer names no codec we offered",
                ))?;
        let dtmf = self
            .dtmf
            .as_ref()
            .and_then(|_| {
                m.formats.iter().find(|f| {
                    f.is_telephone_event()
                        && f.codec
                            .as_ref()
                            .zip(format.codec.as_ref())
                            .is_some_and(|(t, c)| t.clock_rate == c.clock_rate)
                })
            })
            .cloned();
        let remote_rtp = answer.rtp_addr(m).filter(|a| !a.ip().is_unspecified());
        Ok(Negotiated {
            kind: MediaKind::Audio,
            format,
            dtmf,
            // The answerer's direction seen from our side.
            direction: m.direction.answer(),
            rtcp_mux: m.rtcp_mux,
            remote_rtp,
            remote_rtcp: remote_rtp.and(answer.rtcp_addr(m, m.rtcp_mux)),
            srtp: None,
            ptime: m.ptime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Direction;

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
            .unwrap();
        assert_eq!(n.format.pt, 0);
        assert_eq!(n.dtmf.map(|d| d.pt), Some(101));
        assert_eq!(n.remote_rtp, Some("192.0.2.9:5004".parse().unwrap()));
        assert_eq!(n.remote_rtcp, Some("192.0.2.9:5005".parse().unwrap()));
        assert_eq!(n.direction, Direction::SendRecv);
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
            .unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(n.dtmf.is_none());
    }
}
