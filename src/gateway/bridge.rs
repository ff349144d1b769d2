//! Bridged calls, seen from the signalling core: a browser's call placed
//! toward the contacts registered for an alias ([`Gateway::dial`]), and a
//! routed SIP call placed toward registered contacts (SIP ones and browsers
//! registered through the client API), a SIP URI or a trunk
//! (the caller's offer read and re-offered, media ports asked of the shell
//! with [`GwOutput::BridgeMedia`], the callees rung once
//! [`Gateway::bridge_ready`] has them). The call itself is run by
//! [`crate::b2bua`]; this module only turns routes and registrations into
//! its inputs. It must not touch sockets or clocks.

use super::{Gateway, GwOutput, echo};
use crate::b2bua::{BrowserTarget, Dial, Notice, Party};
use crate::dialplan::Srtp;
use crate::media::dtmf::Digit;
use crate::sdp::Offer;
use crate::sip::Flow;
use crate::sip::msg::{Message, NameAddr, Uri, random_token};
use crate::sip::transaction::TxKey;
use crate::sip::uac::{InviteParams, OfferedAt};
use crate::trunks::TrunkTarget;
use causeway_codecs::video::VideoCodec;
use std::net::IpAddr;
use std::time::Instant;

/// A SIP call routed to a bridge target, waiting for its media ports.
#[derive(Debug)]
pub(super) struct PendingBridge {
    key: TxKey,
    invite: Message,
    flow: Flow,
    /// None: a late offer (our 200 makes the offer).
    caller_offer: Option<crate::sdp::SessionDesc>,
    offer: Offer,
    /// Who to ring.
    callees: Callees,
    /// Our user part toward callees (the caller's alias after transforms).
    from: String,
    /// The called alias (our Contact's user part toward the caller).
    to: String,
    /// The rule that routed it.
    rule: String,
    /// How digits reach the SIP legs.
    dtmf: crate::dialplan::DtmfMode,
    /// The video codecs browsers are offered (none: no video).
    video: Vec<VideoCodec>,
    /// The caller's video formats SIP callees are offered (none: no video).
    sip_video: Vec<crate::sdp::Format>,
}

/// The RTP ports bound for a SIP caller's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipPorts {
    /// Toward the caller.
    pub caller: u16,
    /// Toward the callees.
    pub callee: u16,
    /// For video toward the caller, when asked for.
    pub caller_video: Option<u16>,
    /// For video toward the callees, when asked for.
    pub callee_video: Option<u16>,
}

/// Who a routed call rings.
#[derive(Debug, Default)]
pub(super) struct Callees {
    /// SIP callees: Request-URI, To and flow.
    pub sip: Vec<(String, String, Flow)>,
    /// Browsers registered for the alias.
    pub browsers: Vec<BrowserTarget>,
}

impl Callees {
    pub fn len(&self) -> usize {
        self.sip.len() + self.browsers.len()
    }
}

/// A browser call to place toward the SIP side.
#[derive(Debug, Clone)]
pub struct BrowserDial {
    /// The call's id.
    pub id: String,
    /// The browser's peer.
    pub peer: crate::webrtc::PeerId,
    /// Who is called (the route's alias).
    pub alias: String,
    /// Where the rule sends it.
    pub target: crate::dialplan::Target,
    /// The rule that routed it.
    pub rule: String,
    /// The caller's display name.
    pub display_name: String,
    /// What the SIP side is offered.
    pub offer: Offer,
    /// How digits reach the SIP side.
    pub dtmf: crate::dialplan::DtmfMode,
    /// Our RTP port for the SIP side (already bound); `None` when no
    /// port was free (the call is refused with 503).
    pub media_port: Option<u16>,
}

impl Gateway {
    /// The addresses the transports listen on (calls toward SIP URIs and
    /// trunks leave from them).
    pub fn set_listeners(&mut self, listeners: Vec<(crate::sip::Transport, std::net::SocketAddr)>) {
        self.listeners = listeners;
    }

    /// Makes a trunk (resolved by the runtime) reachable by dialplan rules.
    pub fn add_trunk_peer(&mut self, target: TrunkTarget) {
        self.trunk_peers.insert(target.name.clone(), target);
    }

    /// A browser registered `alias` through the client API, until `until`
    /// (unix seconds); a refresh moves the expiry.
    pub fn register_browser(&mut self, alias: &str, participant: &str, until: u64) {
        let regs = self.browsers.entry(alias.to_ascii_lowercase()).or_default();
        regs.retain(|(p, _)| p != participant);
        regs.push((participant.to_string(), until));
    }

    /// A browser's registration ended (token released).
    pub fn unregister_browser(&mut self, participant: &str) {
        for regs in self.browsers.values_mut() {
            regs.retain(|(p, _)| p != participant);
        }
        self.browsers.retain(|_, regs| !regs.is_empty());
    }

    /// The browsers registered for an alias now.
    pub(super) fn registered_browsers(&self, alias: &str, wall: u64) -> Vec<BrowserTarget> {
        self.browsers
            .get(&alias.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter(|(_, until)| *until > wall)
            .map(|(participant, _)| BrowserTarget {
                participant: participant.clone(),
            })
            .collect()
    }

    /// Every contact registered for an alias: (Request-URI, To, flow).
    fn registered_callees(&self, alias: &str, wall: u64) -> Vec<(String, String, Flow)> {
        let aor = self.aor(alias);
        self.registrar
            .lookup(&aor, wall)
            .into_iter()
            .map(|b| (b.contact.clone(), aor.clone(), b.flow()))
            .collect()
    }

    /// The INVITE of each callee: from `from_user` at our domain, offering
    /// `offer` on our RTP `port` at the address each flow reaches, with
    /// `max_forwards`.
    fn invite_params(
        &self,
        callees: Vec<(String, String, Flow)>,
        (from_user, display_name): (&str, &str),
        (offer, port): (&Offer, u16),
        max_forwards: u8,
    ) -> Vec<InviteParams> {
        let session_id = u64::from(rand::random::<u32>());
        let from = format!(
            "sip:{}@{}",
            crate::sip::msg::escape_user(from_user),
            self.domain
        );
        callees
            .into_iter()
            .map(|(request_uri, to, flow)| {
                let offered = OfferedAt {
                    ip: self.advertised_ip(&flow),
                    port,
                    video_port: offer.video.as_ref().map(|v| v.port),
                    origin: (session_id, 1),
                };
                InviteParams {
                    request_uri,
                    to,
                    from: from.clone(),
                    display_name: display_name.to_string(),
                    via_host: self.advertised(&flow),
                    user_agent: self.user_agent.clone(),
                    sdp: offer.to_sdp(offered.ip, port, session_id, 1),
                    offered,
                    session_expires: (self.timers.expires > 0).then_some(self.timers.expires),
                    max_forwards,
                    flow,
                }
            })
            .collect()
    }

    /// Places a browser's call to every contact registered for its alias
    /// (outcomes come back as [`GwOutput::Call`]).
    pub fn dial(&mut self, now: Instant, wall: u64, d: BrowserDial) {
        self.out.push_back(GwOutput::CallStarted {
            call: d.id.clone(),
            parties: crate::cdr::CallParties {
                from: d.display_name.clone(),
                to: d.alias.clone(),
                rule: d.rule.clone(),
                caller_leg: "webrtc".into(),
            },
        });
        let dial = Dial {
            id: d.id,
            peer: d.peer,
            offer: d.offer,
            dtmf: d.dtmf,
        };
        let Some(media_port) = d.media_port else {
            self.b2bua.refuse(now, dial, 503, "no media port free");
            self.pump(now, wall);
            return;
        };
        let from_user: String = d
            .display_name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(32)
            .collect();
        let from_user = if from_user.is_empty() {
            "browser"
        } else {
            &from_user
        };
        let callees = match self.sip_callees(&d.alias, &d.target, wall) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(call = %dial.id, error = %e, "browser call not placed");
                self.b2bua.refuse(now, dial, 503, &e);
                self.pump(now, wall);
                return;
            }
        };
        let targets = self.invite_params(
            callees,
            (from_user, &d.display_name),
            (&dial.offer, media_port),
            70,
        );
        self.b2bua.dial(now, dial, targets);
        self.pump(now, wall);
    }

    /// Who a bridge target rings, or why nobody can be.
    pub(super) fn callees(
        &self,
        route: &crate::dialplan::Route,
        target: &crate::dialplan::Target,
        wall: u64,
    ) -> Result<Callees, String> {
        self.sip_callees(&route.to, target, wall)
            .map(|sip| Callees {
                sip,
                browsers: match target {
                    crate::dialplan::Target::Registered => {
                        self.registered_browsers(&route.to, wall)
                    }
                    _ => Vec::new(),
                },
            })
    }

    /// The SIP callees of a bridge target for alias `to`: (Request-URI,
    /// To, flow) each.
    fn sip_callees(
        &self,
        to: &str,
        target: &crate::dialplan::Target,
        wall: u64,
    ) -> Result<Vec<(String, String, Flow)>, String> {
        use crate::dialplan::Target;
        match target {
            Target::Registered => Ok(self.registered_callees(to, wall)),
            Target::Sip {
                trunk: Some(name), ..
            } => {
                let t = self
                    .trunk_peers
                    .get(name)
                    .ok_or_else(|| format!("trunk {name} is not resolved"))?;
                let transport = t.transport.uri_param();
                let uri = format!(
                    "sip:{}@{}{transport}",
                    crate::sip::msg::escape_user(to),
                    t.host
                );
                let flow = Flow {
                    transport: t.transport,
                    local: t.local,
                    remote: t.remote,
                    conn: None,
                };
                Ok(vec![(uri.clone(), uri, flow)])
            }
            Target::Sip { uri: Some(u), .. } => {
                let parsed = Uri::parse(u).map_err(|_| format!("bad SIP URI {u:?}"))?;
                let ip: IpAddr = parsed.host.parse().map_err(|_| {
                    format!("{u}: only IP addresses are dialled yet, not host names")
                })?;
                let transport = match parsed.param("transport").flatten() {
                    None => crate::sip::Transport::Udp,
                    Some(t) => crate::sip::Transport::parse(t)
                        .ok_or_else(|| format!("{u}: unknown transport {t}"))?,
                };
                let remote = std::net::SocketAddr::new(ip, parsed.port.unwrap_or(5060));
                let local = self
                    .listeners
                    .iter()
                    .find(|(t, l)| *t == transport && l.is_ipv4() == remote.is_ipv4())
                    .map(|(_, l)| *l)
                    .ok_or_else(|| format!("no {transport} listener toward {remote}"))?;
                let uri = if parsed.user.is_some() {
                    u.clone()
                } else {
                    let user = crate::sip::msg::escape_user(to);
                    match u.split_once(':') {
                        Some((scheme, rest)) => format!("{scheme}:{user}@{rest}"),
                        None => u.clone(),
                    }
                };
                Ok(vec![(
                    uri.clone(),
                    uri,
                    Flow {
                        transport,
                        local,
                        remote,
                        conn: None,
                    },
                )])
            }
            other => Err(format!("{} targets are not bridged yet", other.kind())),
        }
    }

    /// Starts bridging a routed SIP call: reads the caller's offer, works
    /// out what the callees are offered and asks the shell for media ports
    /// ([`GwOutput::BridgeMedia`]).
    pub(super) fn bridge(
        &mut self,
        now: Instant,
        key: &TxKey,
        invite: Message,
        flow: Flow,
        route: &crate::dialplan::Route,
        callees: Callees,
    ) {
        let refuse = |this: &mut Self, code, reason: &str, warning: String| {
            tracing::info!(code, warning, "bridged call refused");
            this.respond(
                now,
                key,
                &invite,
                flow,
                code,
                reason,
                vec![("Warning", warning)],
            );
        };
        // An INVITE without SDP (late offer): the callees get our full
        // offer, and our 200 to the caller makes one.
        let caller_offer = match echo::sdp_body(&invite).map(crate::sdp::parse) {
            None => None,
            Some(Ok(sd)) => Some(sd),
            Some(Err(e)) => {
                let (code, reason, warning) = e.status();
                return refuse(self, code, reason, warning);
            }
        };
        if let Some(why) = caller_offer
            .as_ref()
            .and_then(|o| srtp_refused(o, route.media.srtp))
        {
            return refuse(
                self,
                488,
                "Not Acceptable Here",
                format!("399 causeway \"{why}\""),
            );
        }
        let Some(offer) = callee_offer(caller_offer.as_ref(), &route.media) else {
            let why = "399 causeway \"no audio codec in common\"".to_string();
            return refuse(self, 488, "Not Acceptable Here", why);
        };
        // The caller's video, where the rule lets it through in the
        // profile its SRTP policy wants (else it is declined): browsers
        // are offered its codecs (and those we transcode to), SIP callees
        // its own formats, relayed.
        let video_offer = caller_offer.as_ref().filter(|o| {
            route.media.video
                && o.active_video()
                    .is_some_and(|v| srtp_allows(v.proto, route.media.srtp))
        });
        let video = match video_offer {
            Some(o) if !callees.browsers.is_empty() => {
                crate::b2bua::caller_video_codecs(o, route.media.transcode)
            }
            _ => Vec::new(),
        };
        let sip_video = match video_offer {
            Some(o) if !callees.sip.is_empty() => crate::b2bua::caller_video_formats(o),
            _ => Vec::new(),
        };
        let call = random_token(16);
        let ip = self.media_ip();
        let callee_video = !sip_video.is_empty();
        let with_video = !video.is_empty() || callee_video;
        self.bridging.insert(
            call.clone(),
            PendingBridge {
                key: key.clone(),
                invite,
                flow,
                caller_offer,
                offer,
                callees,
                from: route.from.clone(),
                to: route.to.clone(),
                rule: route.rule.clone(),
                dtmf: route.media.dtmf,
                video,
                sip_video,
            },
        );
        self.out.push_back(GwOutput::BridgeMedia {
            call,
            ip,
            video: with_video,
            callee_video,
        });
    }

    /// Media ports for a call announced by [`GwOutput::BridgeMedia`]:
    /// (toward the caller, toward the callees), or why there are none
    /// (503). Rings the callees.
    pub fn bridge_ready(
        &mut self,
        now: Instant,
        wall: u64,
        call: &str,
        ports: Result<SipPorts, String>,
    ) {
        let Some(p) = self.bridging.remove(call) else {
            self.out.push_back(GwOutput::Call(Notice::Release {
                call: call.to_string(),
                peer: None,
            }));
            return;
        };
        let ports = match ports {
            Ok(ports) => ports,
            Err(e) => {
                tracing::warn!(error = %e, "no media ports for a bridged call");
                self.respond(
                    now,
                    &p.key,
                    &p.invite,
                    p.flow,
                    503,
                    "Service Unavailable",
                    vec![
                        ("Retry-After", "5".into()),
                        (
                            "Warning",
                            "399 causeway \"no media ports available\"".into(),
                        ),
                    ],
                );
                self.pump(now, wall);
                return;
            }
        };
        let display_name = p
            .invite
            .header("From")
            .and_then(|f| NameAddr::parse(f).ok())
            .and_then(|n| n.display)
            .unwrap_or_default();
        let offer = match ports.callee_video {
            Some(port) => p.offer.with_video_formats(p.sip_video, port),
            None => p.offer,
        };
        // The caller's Max-Forwards less one (RFC 7332): an INVITE that
        // loops back through us ends with 483 instead of going round.
        let max_forwards = crate::sip::max_forwards(&p.invite).saturating_sub(1);
        let targets = self.invite_params(
            p.callees.sip,
            (&p.from, &display_name),
            (&offer, ports.callee),
            max_forwards,
        );
        let transport = p.flow.transport.uri_param();
        let contact = format!(
            "<sip:{}@{}{transport}>",
            crate::sip::msg::escape_user(&p.to),
            self.advertised(&p.flow)
        );
        self.out.push_back(GwOutput::CallStarted {
            call: call.to_string(),
            parties: crate::cdr::CallParties {
                from: p.from.clone(),
                to: p.to.clone(),
                rule: p.rule.clone(),
                caller_leg: "sip".into(),
            },
        });
        let session_timer = match self.timers.grant(&p.invite) {
            crate::sip::timer::Grant::On(se) => Some(se),
            _ => None,
        };
        let dial = crate::b2bua::SipDial {
            id: call.to_string(),
            session_timer,
            key: p.key,
            media: (self.advertised_ip(&p.flow), ports.caller),
            video: ports.caller_video.map(|port| (port, p.video)),
            via_host: self.advertised(&p.flow),
            user_agent: self.user_agent.clone(),
            invite: p.invite,
            flow: p.flow,
            caller_offer: p.caller_offer,
            offer,
            dtmf: p.dtmf,
            contact,
        };
        self.b2bua.dial_sip(now, dial, targets, p.callees.browsers);
        self.pump(now, wall);
    }

    /// The address family media sockets for bridged calls bind on (the
    /// wildcard of the public address's family, else IPv4).
    pub fn media_ip(&self) -> IpAddr {
        match self.public_ip {
            Some(IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }

    /// What became of ringing a browser (see [`crate::b2bua::B2bua::browser_offered`]).
    pub fn browser_offered(
        &mut self,
        now: Instant,
        wall: u64,
        fork: &str,
        result: Result<crate::webrtc::PeerId, u16>,
    ) {
        self.b2bua.browser_offered(now, fork, result);
        self.pump(now, wall);
    }

    /// A browser answered an incoming call (see
    /// [`crate::b2bua::B2bua::browser_answered`]).
    pub fn browser_answered(
        &mut self,
        now: Instant,
        wall: u64,
        fork: &str,
        formats: Vec<crate::webrtc::PeerFormat>,
    ) {
        self.b2bua.browser_answered(now, fork, formats);
        self.pump(now, wall);
    }

    /// The id a browser's call runs its media under: the call's own for
    /// calls browsers place, the SIP call's for calls they answered.
    pub fn media_call<'a>(&'a self, id: &'a str) -> &'a str {
        self.b2bua.call_of_fork(id).unwrap_or(id)
    }

    /// Each side of a connected bridged call, for the admin API (see
    /// [`crate::b2bua::B2bua::legs`]).
    pub fn call_legs(&self, call: &str) -> Vec<crate::cdr::LegState> {
        self.b2bua.legs(call)
    }

    /// A SIP side of a bridged call sent no media for the media timeout:
    /// the call is hung up on both sides.
    pub fn media_silent(&mut self, now: Instant, wall: u64, call: &str, from: crate::b2bua::Party) {
        self.b2bua.media_silent(now, call, from);
        self.pump(now, wall);
    }

    /// Hangs up a bridged call (the admin API); false when there is none.
    pub fn hang_up_call(&mut self, now: Instant, wall: u64, call: &str) -> bool {
        let done = self.b2bua.hang_up(now, call);
        self.pump(now, wall);
        done
    }

    /// Digits a browser sent through the client API, each played for
    /// `duration_ms`; true when they went by SIP INFO (else the media path
    /// plays them as RFC 4733 events).
    pub fn browser_digits(
        &mut self,
        now: Instant,
        wall: u64,
        id: &str,
        digits: &str,
        duration_ms: u32,
    ) -> bool {
        let call = self.media_call(id).to_string();
        let sent = self.b2bua.browser_digits(&call, digits, duration_ms);
        self.pump(now, wall);
        sent
    }

    /// A digit a call's media recognised on side `from`'s RTP.
    pub fn media_digit(&mut self, now: Instant, wall: u64, call: &str, from: Party, digit: Digit) {
        self.b2bua.media_digit(call, from, digit);
        self.pump(now, wall);
    }

    /// The media wants a keyframe from SIP side `of` of a call, which
    /// takes no RTCP feedback: a SIP INFO asks for it.
    pub fn media_wants_keyframe(&mut self, now: Instant, wall: u64, call: &str, of: Party) {
        self.b2bua.ask_keyframe(call, of);
        self.pump(now, wall);
    }

    /// A browser call's browser side ended (hang-up or peer gone).
    pub fn browser_gone(&mut self, now: Instant, wall: u64, call: &str, reason: &str) {
        self.b2bua.browser_gone(now, call, reason);
        self.pump(now, wall);
    }
}

/// Why a SIP caller's offer breaks the rule's SRTP policy, if it does:
/// `required` takes only RTP/SAVP (SDES) audio, `off` only plain RTP. An
/// answer cannot change the offer's profile (RFC 3264), so the caller gets
/// 488.
fn srtp_refused(offer: &crate::sdp::SessionDesc, policy: Srtp) -> Option<&'static str> {
    let audio = offer.active_audio()?;
    if srtp_allows(audio.proto, policy) {
        return None;
    }
    Some(if audio.proto.secure() {
        "SRTP is off on this route: offer RTP/AVP"
    } else {
        "this route requires SRTP (RTP/SAVP with SDES)"
    })
}

/// Whether a media section in `proto` keeps a rule's SRTP `policy`.
fn srtp_allows(proto: crate::sdp::Proto, policy: Srtp) -> bool {
    match policy {
        Srtp::Required => proto.secure(),
        Srtp::Off => !proto.secure(),
        Srtp::Optional => true,
    }
}

/// What callees are offered for a SIP caller's offer: the codecs of
/// [`crate::b2bua::offer_codecs`] (every codec we handle, in the rule's
/// order, for a caller that made no offer); telephone-event unless digits
/// go by SIP INFO only. `None` when nothing is left to offer (the caller
/// offered no audio codec we can handle, or the rule allows none).
fn callee_offer(
    caller: Option<&crate::sdp::SessionDesc>,
    media: &crate::dialplan::MediaOptions,
) -> Option<Offer> {
    use causeway_codecs::registry::AudioCodec;
    let codecs = match caller {
        None => crate::b2bua::offer_codecs(&AudioCodec::ALL, &media.codecs, true),
        Some(caller) => {
            let m = caller.active_audio()?;
            let theirs: Vec<AudioCodec> = m
                .formats
                .iter()
                .filter_map(|f| f.codec.as_ref().and_then(AudioCodec::from_key))
                .collect();
            if theirs.is_empty() {
                return None;
            }
            crate::b2bua::offer_codecs(&theirs, &media.codecs, media.transcode)
        }
    };
    // Telephone-events unless digits go by SIP INFO only: digits the
    // caller sends by INFO are played to the callee as events.
    (!codecs.is_empty()).then(|| {
        Offer::audio(&codecs, media.dtmf != crate::dialplan::DtmfMode::Info)
            .with_srtp_if(media.srtp)
    })
}
