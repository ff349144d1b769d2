//! The call state machine: one call joins a caller leg (a browser's WebRTC
//! peer, or a SIP endpoint whose INVITE we answer as a UAS) and a SIP leg
//! the gateway places as a UAC, sans-IO.
//!
//! Flows implemented so far: browser -> SIP, SIP -> SIP (registered
//! endpoints, SIP URIs, trunks) and SIP -> browser (browsers registered
//! through the client API ring as forks beside SIP contacts: `browser`).
//! A browser's offer is answered at once (the
//! hub terminates its media); a SIP caller gets 180 when a callee rings and
//! the 200 (with our answer, in the codec the callee chose when the caller
//! offered it, else the caller's first, transcoded) once a callee answers;
//! its CANCEL, BYE, PRACK and ACK come here, and our 2xx (and a 180 to a
//! caller that requires 100rel) is retransmitted until the ACK (PRACK)
//! ([`Dialogs`]); a callee's reliable 18x gets our PRACK. The call rings every target in parallel
//! (RFC 3261 forking done by the B2BUA: one [`UacLeg`] per contact), the
//! first 2xx wins and the other forks are cancelled (a late 2xx is ACKed
//! and sent a BYE). 180/183 become `ringing` (with SDP, early media to
//! either kind of caller: `early`, which also handles a SIP caller's
//! INVITE without SDP); a re-INVITE or UPDATE is answered on its side and
//! mirrored to the other (`uas`), moving the side's media when its codec
//! or address changed; SIP INFO
//! carries digits and keyframe requests (`info`), a failure of every fork ends
//! the call with the most telling status (6xx, then 486, then the first),
//! no answer within [`NO_ANSWER`] cancels everything (408). A hang-up from
//! either side ends the other: CANCEL before the answer (sent only after a
//! provisional response, RFC 3261 9.1), BYE after it.
//!
//! Owns call and fork state and decides which SIP messages go out; the
//! transaction layer retransmits them, [`crate::sip::uac`] builds them, and
//! the runtime moves media and tells the browser ([`Notice`]). What a
//! browser's negotiated formats mean for the SIP side is `codecs`'s
//! ([`sip_offer_codecs`], [`browser_audio`]); session timers (RFC 4028)
//! and our refreshes are `refresh`'s. It must not touch sockets, clocks,
//! the registrar or the dialplan: targets come in resolved.

mod browser;
mod codecs;
mod early;
mod forks;
mod info;
mod refresh;
#[cfg(test)]
mod tests;
mod uas;

pub use codecs::{
    browser_audio, browser_video_codecs, caller_video_codecs, caller_video_formats, offer_codecs,
    opus_rate_limit, sip_offer_codecs,
};

use browser::{caller_name, stop_browsers};
use forks::cancel_fork;
use info::InfoLeg;
use refresh::allows_update;
use uas::{accept_caller, caller_response};

use crate::dialplan::{DtmfMode, reason_phrase};
use crate::media::dtmf::Digit;
use crate::sdp::{Agreed, Negotiated, Offer, SessionDesc};
use crate::sip::Flow;
use crate::sip::dialog::{DialogId, DialogOutput, Dialogs, Resend, ResendStep};
use crate::sip::msg::{Message, Method, response_to};
use crate::sip::timer::{Grant, LegTimer, SessionExpires};
use crate::sip::transaction::TxKey;
use crate::sip::uac::{InviteParams, UacLeg};
use crate::webrtc::{PeerFormat, PeerId};
use bytes::Bytes;
use causeway_codecs::registry::AudioCodec;
use causeway_codecs::video::VideoCodec;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What the call layer answers in-dialog (Allow of our 200s and 405s).
pub const ALLOW: &str = crate::sip::ALLOW_IN_DIALOG;

/// How long a call may ring before it is given up (408).
pub const NO_ANSWER: Duration = Duration::from_secs(60);

/// Which side did something (hung up, refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The browser (or the client API on its behalf).
    Browser,
    /// The SIP endpoint called.
    Sip,
    /// A SIP endpoint that placed the call.
    Caller,
    /// The gateway (no answer, no common codec, shutdown).
    Gateway,
}

impl Side {
    /// Name for events and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Browser => "browser",
            Side::Sip => "sip",
            Side::Caller => "caller",
            Side::Gateway => "gateway",
        }
    }
}

/// What happened to a call, for the client API and records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A callee is alerting (180/183).
    Ringing,
    /// Answered; media flows.
    Connected {
        /// The SIP side's codec (`PCMU/8000`).
        codec: String,
    },
    /// Over, or never connected.
    Ended {
        /// Who ended it.
        by: Side,
        /// SIP status when the call failed (486, 408, 488...).
        status: Option<u16>,
        /// Why, for people.
        reason: String,
    },
}

/// What the call layer wants done on the SIP side (the signalling core
/// does it) or elsewhere ([`CallOutput::Notice`], for the runtime).
#[derive(Debug)]
pub enum CallOutput {
    /// Start a client transaction.
    Request(Message, Flow),
    /// Send bytes outside any transaction (the ACK of a 2xx).
    Transmit(Flow, Bytes),
    /// Answer a server transaction (a BYE from the callee).
    Respond(TxKey, Message),
    /// Drop a client transaction that will never settle (a cancelled
    /// fork that never sent its final response).
    Abandon(TxKey),
    /// For the media and the browser side.
    Notice(Notice),
}

/// What the runtime does for a call: report it, move its media, end it.
#[derive(Debug)]
pub enum Notice {
    /// Report a call event to the browser.
    Event(String, CallEvent),
    /// A callee answered: bridge media between the caller and the callee
    /// as negotiated.
    StartMedia {
        /// The call.
        call: String,
        /// The caller's media.
        caller: CallerMedia,
        /// The callee's.
        callee: CalleeMedia,
    },
    /// Offer the call to a browser registered for the called alias: make
    /// its peer and our offer, tell the browser (an `incoming_call` event),
    /// and report with [`B2bua::browser_offered`].
    RingBrowser {
        /// The browser's id for the call (its call UUID).
        fork: String,
        /// The registration to tell.
        participant: String,
        /// Who calls, for people (display name, else the caller's user).
        from: String,
        /// Audio codecs to offer, first preferred.
        audio: Vec<AudioCodec>,
        /// Video codecs to offer, first preferred (none: no video).
        video: Vec<VideoCodec>,
    },
    /// The media of a call already bridged moves with a SIP side's new
    /// answer: the winner's 2xx where it differs from the 183 that started
    /// early media (or came from another fork), or a re-INVITE or UPDATE
    /// that changed the side's codec or address.
    UpdateMedia {
        /// The call.
        call: String,
        /// The SIP side whose media moved.
        party: Party,
        /// Its audio, as the new answer agreed.
        media: Box<Negotiated>,
    },
    /// A SIP side put the call on hold (`held`: its last offer was not
    /// sendrecv) or took it off: the media may rightly go silent.
    Hold {
        /// The call.
        call: String,
        /// The side that offered.
        party: Party,
        /// On hold.
        held: bool,
    },
    /// A digit for a browser's event stream, from the SIP side (its RTP
    /// or its SIP INFO).
    DtmfToBrowser {
        /// The browser's peer.
        peer: PeerId,
        /// The digit.
        digit: Digit,
    },
    /// A digit a SIP side sent by SIP INFO, to play as an RFC 4733 event
    /// on the media toward `to` (a SIP side that agreed telephone-events).
    PlayDigit {
        /// The call.
        call: String,
        /// Whose media plays it.
        to: Party,
        /// The digit.
        digit: Digit,
    },
    /// A SIP side asked for a keyframe by SIP INFO (`picture_fast_update`).
    KeyframeWanted {
        /// The call.
        call: String,
        /// The side that asked (it wants a keyframe of what it receives).
        from: Party,
    },
    /// The call is over: stop its media and close its peer, if any.
    Release {
        /// The call.
        call: String,
        /// Its browser peer.
        peer: Option<PeerId>,
    },
}

/// One side of a call, for digits and keyframes that cross it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// Who placed the call (a browser or a SIP endpoint).
    Caller,
    /// Who answered it.
    Callee,
}

impl Party {
    /// How logs and records name it: "the caller", "the callee".
    pub fn name(self) -> &'static str {
        match self {
            Party::Caller => "the caller",
            Party::Callee => "the callee",
        }
    }

    /// Its place in a pair kept per side: the caller 0, the callee 1.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The other side.
    pub fn other(self) -> Party {
        match self {
            Party::Caller => Party::Callee,
            Party::Callee => Party::Caller,
        }
    }
}

/// The caller's end of a call's media.
#[derive(Debug)]
pub enum CallerMedia {
    /// A browser's peer in the WebRTC hub.
    Browser(PeerId),
    /// A SIP endpoint, as our answer to its offer agreed (on the ports
    /// reserved for it).
    Sip(Box<Agreed>),
}

/// The callee's end of a call's media.
#[derive(Debug)]
pub enum CalleeMedia {
    /// A SIP endpoint, as its answer to our offer agreed.
    Sip(Box<Agreed>),
    /// A browser's peer that answered our offer, with what it negotiated.
    Browser(PeerId, Vec<PeerFormat>),
}

/// A browser registered for the called alias (through the client API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserTarget {
    /// The registration's participant: where its events go.
    pub participant: String,
}

/// A call to place from a browser.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The call's id (the client API's call UUID).
    pub id: String,
    /// The browser's peer.
    pub peer: PeerId,
    /// What the SIP side is offered.
    pub offer: Offer,
    /// How digits reach the SIP side (the rule's `media.dtmf`).
    pub dtmf: DtmfMode,
}

/// A call from a SIP endpoint to place: its INVITE (already answered 100)
/// and what we need to answer it.
#[derive(Debug, Clone)]
pub struct SipDial {
    /// The call's id.
    pub id: String,
    /// The INVITE's server transaction.
    pub key: TxKey,
    /// The INVITE.
    pub invite: Message,
    /// Where it came from.
    pub flow: Flow,
    /// The caller's SDP offer (None: it made none; our 200 will, and its
    /// ACK answers).
    pub caller_offer: Option<SessionDesc>,
    /// What the callees are offered.
    pub offer: Offer,
    /// How digits reach the SIP legs (the rule's `media.dtmf`).
    pub dtmf: DtmfMode,
    /// Our media address and RTP port toward the caller (bound already).
    pub media: (IpAddr, u16),
    /// Where the caller offered video the rule lets through: our video
    /// RTP port toward it (bound already) and the video codecs browsers
    /// are offered, first preferred (none when only SIP callees are
    /// rung: they are offered the caller's formats, in [`Self::offer`]).
    pub video: Option<(u16, Vec<VideoCodec>)>,
    /// Our Contact toward the caller (`<sip:...>`).
    pub contact: String,
    /// Our advertised `host:port` toward the caller (Via of our BYE).
    pub via_host: String,
    /// Server / User-Agent.
    pub user_agent: String,
    /// The session timer granted the caller (RFC 4028), if any.
    pub session_timer: Option<SessionExpires>,
}

/// The UAS side of a call from a SIP endpoint.
#[derive(Debug)]
struct SipCaller {
    call_id: String,
    key: TxKey,
    dialog: DialogId,
    caller_offer: Option<SessionDesc>,
    /// Our offer in the 200, to a caller that made none (its ACK answers).
    late: Option<Offer>,
    media: (IpAddr, u16),
    /// Our video port toward it and the video codecs browsers are offered
    /// ([`SipDial::video`]).
    video_offer: Option<(u16, Vec<VideoCodec>)>,
    contact: String,
    via_host: String,
    user_agent: String,
    /// 180, or 183 with early media, sent.
    ringing: bool,
    /// Its INVITE requires reliable provisional responses (RFC 3262).
    reliable: bool,
    /// 200 sent.
    answered: bool,
    /// What our answer (or, from a late-offer caller, its answer in the
    /// ACK) agreed with the caller: audio, and video where taken.
    agreed: Option<Agreed>,
    /// Our answer in a 183 (early media) and what it agreed: the 200
    /// repeats it.
    early_answer: Option<(String, Agreed)>,
    /// The session timer our 200 grants.
    granted: Option<SessionExpires>,
    /// `o=` session id and version of our SDP toward the caller.
    origin: (u64, u64),
    /// Its session: the timer granted, refreshes, our latest SDP.
    session: Session,
}

/// Who placed a call.
#[derive(Debug)]
enum Caller {
    Browser(PeerId),
    Sip(Box<SipCaller>),
}

impl Leg {
    /// The side of the call this leg is.
    fn party(self) -> Party {
        match self {
            Leg::Caller => Party::Caller,
            Leg::Fork(_) => Party::Callee,
        }
    }
}

impl Caller {
    fn peer(&self) -> Option<PeerId> {
        match self {
            Caller::Browser(p) => Some(*p),
            Caller::Sip(_) => None,
        }
    }
}

/// Which leg of a call a SIP Call-ID belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    /// The SIP caller's dialog.
    Caller,
    /// A fork toward a callee.
    Fork(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForkState {
    /// INVITE sent, nothing back.
    Calling,
    /// A provisional response came.
    Proceeding,
    /// To cancel as soon as a provisional response comes (RFC 3261 9.1).
    CancelPending,
    /// CANCEL sent; the 487 will end it.
    Cancelled,
    /// Final response received (or timed out).
    Done,
}

#[derive(Debug)]
struct Fork {
    leg: UacLeg,
    key: Option<TxKey>,
    state: ForkState,
    failure: Option<u16>,
    /// Our 2xx to its re-INVITE, resent until its ACK.
    unacked: Option<Resend>,
}

/// Which callee answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Winner {
    Sip(usize),
    Browser(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrowserState {
    /// Its peer and our offer are being made.
    Offering,
    /// Told of the call; its answer is awaited.
    Ringing,
    /// Answered (the winner).
    Answered,
    /// Declined, unreachable, or stopped (another callee answered, the
    /// call ended): its peer is released.
    Done,
}

/// A browser rung for a call.
#[derive(Debug)]
struct BrowserFork {
    /// The browser's id for the call (`<call>-b<n>`).
    id: String,
    participant: String,
    peer: Option<PeerId>,
    state: BrowserState,
    failure: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Calling,
    Ringing,
    Connected,
    /// Over for both sides; kept while forks still owe a final response
    /// (a CANCEL to send on their first 1xx, a late 2xx to ACK and BYE).
    Ended,
}

/// What a SIP callee agreed, and the address, ports and `o=` origin of our
/// SDP toward it (re-offers reuse them).
#[derive(Debug)]
struct CalleeSession {
    agreed: Agreed,
    ip: IpAddr,
    port: u16,
    video_port: Option<u16>,
    origin: (u64, u64),
    session: Session,
}

/// A SIP side's session as RFC 4028 refreshes it: its timer, whether it
/// takes UPDATE (else a refresh is a re-INVITE), our latest SDP toward it
/// (what a refresh re-INVITE carries, unchanged) and its latest SDP (an
/// offer repeating it word for word changes nothing: a refresh), and
/// whether that SDP holds the call (not sendrecv).
#[derive(Debug, Default)]
struct Session {
    timer: Option<LegTimer>,
    update: bool,
    sdp: String,
    theirs: Bytes,
    held: bool,
}

#[derive(Debug)]
struct Call {
    caller: Caller,
    offer: Offer,
    /// What the answering SIP callee agreed, and our side of it.
    callee: Option<CalleeSession>,
    forks: Vec<Fork>,
    /// Browsers rung (SIP callers only).
    browsers: Vec<BrowserFork>,
    winner: Option<Winner>,
    state: State,
    /// No answer by then: 408. Once ended: forget the forks still open.
    give_up: Instant,
    /// How digits reach the SIP legs.
    dtmf: DtmfMode,
    /// SIP INFO toward the caller and the callee ([`Party`] order).
    info: [InfoLeg; 2],
    /// The fork whose 18x answer started the media before the call was
    /// answered (early media), and what it agreed.
    early: Option<(usize, Agreed)>,
    /// The callee's media, held until a SIP caller that made no offer
    /// answers ours in its ACK.
    held: Option<CalleeMedia>,
}

impl Call {
    /// A call not placed yet.
    fn new(caller: Caller, offer: Offer, dtmf: DtmfMode, give_up: Instant) -> Self {
        Call {
            caller,
            offer,
            callee: None,
            forks: Vec::new(),
            browsers: Vec::new(),
            winner: None,
            state: State::Calling,
            give_up,
            dtmf,
            info: Default::default(),
            early: None,
            held: None,
        }
    }
}

/// How long an ended call waits for its cancelled forks to settle (64*T1).
const SETTLE: Duration = Duration::from_secs(32);

/// Every bridged call.
#[derive(Debug, Default)]
pub struct B2bua {
    calls: HashMap<String, Call>,
    /// SIP Call-ID of a leg -> its call and which leg.
    by_call_id: HashMap<String, (String, Leg)>,
    /// Browser fork id -> its call and index.
    by_fork: HashMap<String, (String, usize)>,
    /// UAS dialogs of SIP callers.
    dialogs: Dialogs,
    out: VecDeque<CallOutput>,
    /// The configured `Min-SE` (in-dialog refreshes below it get 422;
    /// never below [`crate::sip::timer::MIN_SE`]).
    min_se: u32,
}

impl B2bua {
    /// Calls to bridge under the configured `Min-SE`.
    pub fn new(min_se: u32) -> Self {
        Self {
            min_se,
            ..Self::default()
        }
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Whether a SIP Call-ID belongs to one of our forks.
    pub fn owns(&self, call_id: &str) -> bool {
        self.by_call_id.contains_key(call_id)
    }

    /// Places a browser's call: an INVITE to every target at once (each
    /// with its offer printed for its flow: the media address may differ).
    /// No target ends the call at once (480).
    pub fn dial(&mut self, now: Instant, dial: Dial, targets: Vec<InviteParams>) {
        let call = Call::new(
            Caller::Browser(dial.peer),
            dial.offer,
            dial.dtmf,
            now + NO_ANSWER,
        );
        self.place(now, &dial.id, call, targets, Vec::new());
    }

    /// Places a SIP endpoint's call (see [`SipDial`]) to SIP `targets` and
    /// registered `browsers` at once; a caller without a From tag gets 400.
    pub fn dial_sip(
        &mut self,
        now: Instant,
        dial: SipDial,
        targets: Vec<InviteParams>,
        browsers: Vec<BrowserTarget>,
    ) {
        let Some(dialog) = self.dialogs.create(&dial.invite, dial.flow) else {
            let mut r = response_to(
                &dial.invite,
                400,
                "Bad Request",
                None,
                Some(dial.flow.remote),
            );
            r.push_header("Warning", "399 causeway \"the INVITE has no From tag\"");
            self.out.push_back(CallOutput::Respond(dial.key, r));
            return;
        };
        self.by_call_id.insert(
            dial.invite.call_id().to_string(),
            (dial.id.clone(), Leg::Caller),
        );
        let caller = Caller::Sip(Box::new(SipCaller {
            call_id: dial.invite.call_id().to_string(),
            key: dial.key,
            dialog,
            caller_offer: dial.caller_offer,
            late: None,
            media: dial.media,
            video_offer: dial.video,
            contact: dial.contact,
            via_host: dial.via_host,
            user_agent: dial.user_agent,
            ringing: false,
            reliable: crate::sip::requires(&dial.invite, "100rel"),
            answered: false,
            agreed: None,
            early_answer: None,
            origin: (u64::from(rand::random::<u32>()), 0),
            session: Session {
                timer: None,
                update: allows_update(&dial.invite),
                sdp: String::new(),
                theirs: dial.invite.body.clone(),
                held: false,
            },
            granted: dial.session_timer,
        }));
        let from = caller_name(&dial.invite);
        let call = Call::new(caller, dial.offer, dial.dtmf, now + NO_ANSWER);
        self.place(now, &dial.id, call, targets, browsers);
        self.ring_browsers(&dial.id, &from);
    }

    /// Rings every target; none ends the call at once (480).
    fn place(
        &mut self,
        now: Instant,
        id: &str,
        mut call: Call,
        targets: Vec<InviteParams>,
        browsers: Vec<BrowserTarget>,
    ) {
        let mut forks = Vec::new();
        for params in targets {
            let Some((leg, invite)) = UacLeg::invite(params) else {
                continue;
            };
            self.by_call_id.insert(
                leg.call_id.clone(),
                (id.to_string(), Leg::Fork(forks.len())),
            );
            self.out.push_back(CallOutput::Request(invite, leg.flow));
            forks.push(Fork {
                leg,
                key: None,
                state: ForkState::Calling,
                failure: None,
                unacked: None,
            });
        }
        let browsers: Vec<BrowserFork> = browsers
            .into_iter()
            .enumerate()
            .map(|(j, b)| {
                let fork = format!("{id}-b{j}");
                self.by_fork.insert(fork.clone(), (id.to_string(), j));
                BrowserFork {
                    id: fork,
                    participant: b.participant,
                    peer: None,
                    state: BrowserState::Offering,
                    failure: None,
                }
            })
            .collect();
        let empty = forks.is_empty() && browsers.is_empty();
        if !empty {
            tracing::info!(call = %id, forks = forks.len(), browsers = browsers.len(), "calling");
        }
        call.forks = forks;
        call.browsers = browsers;
        self.calls.insert(id.to_string(), call);
        if empty {
            self.end(now, id, Side::Gateway, Some(480), "no reachable contact");
        }
    }

    /// Refuses a browser's call the gateway cannot place (no media
    /// port): reported and released like any other ending.
    pub fn refuse(&mut self, now: Instant, dial: Dial, status: u16, reason: &str) {
        let call = Call::new(Caller::Browser(dial.peer), dial.offer, dial.dtmf, now);
        self.calls.insert(dial.id.clone(), call);
        self.end(now, &dial.id, Side::Gateway, Some(status), reason);
    }

    /// An in-dialog request from a callee or a SIP caller (BYE,
    /// re-INVITE...). Returns false when it belongs to no call here.
    pub fn on_request(&mut self, now: Instant, key: &TxKey, msg: &Message, flow: Flow) -> bool {
        let Some((call_id, leg)) = self.by_call_id.get(msg.call_id()).cloned() else {
            return false;
        };
        let Some(call) = self.calls.get(&call_id) else {
            return false;
        };
        let ours = match (leg, &call.caller) {
            (Leg::Fork(i), _) => call.forks.get(i).is_some_and(|f| f.leg.matches(msg)),
            (Leg::Caller, Caller::Sip(sc)) => self.dialogs.matching(msg) == Some(sc.dialog),
            (Leg::Caller, Caller::Browser(_)) => false,
        };
        if !ours {
            return false;
        }
        let method = msg.method();
        if matches!(method, Some(Method::Invite | Method::Update)) {
            let grant = refresh::in_dialog_grant(msg, self.min_se);
            let resp = if let Grant::TooSmall(min) = grant {
                // Nothing changes (RFC 4028 section 9).
                let mut r = response_to(
                    msg,
                    422,
                    "Session Interval Too Small",
                    None,
                    Some(flow.remote),
                );
                r.push_header("Min-SE", min.to_string());
                r
            } else if msg.body.is_empty() {
                // A bodiless UPDATE or re-INVITE refreshes the session (RFC
                // 3311, RFC 4028); the re-INVITE's 200 offers our SDP
                // unchanged.
                self.refreshed(&call_id, leg, msg, flow)
            } else {
                self.reoffer_unless_unchanged(&call_id, leg, msg, flow)
                    .unwrap_or_else(|why| {
                        // The session goes on unchanged (RFC 3261 14.2, RFC
                        // 3311 5.2: 488 keeps it).
                        tracing::info!(call = %call_id, why, "session change refused");
                        let mut r =
                            response_to(msg, 488, "Not Acceptable Here", None, Some(flow.remote));
                        r.push_header("Warning", format!("399 causeway \"{why}\""));
                        r
                    })
            };
            self.answer_session_request(now, key, (&call_id, leg), (msg, grant), resp);
            return true;
        }
        if method == Some(Method::Info) {
            let resp = self.on_info(&call_id, leg, msg, flow);
            self.out.push_back(CallOutput::Respond(key.clone(), resp));
            return true;
        }
        if method == Some(Method::Prack) {
            let resp = self.on_prack(&call_id, leg, msg, flow);
            self.out.push_back(CallOutput::Respond(key.clone(), resp));
            return true;
        }
        let (code, reason) = match method {
            Some(Method::Bye) => (200, "OK"),
            _ => (405, "Method Not Allowed"),
        };
        let mut resp = response_to(msg, code, reason, None, Some(flow.remote));
        if code == 405 {
            resp.push_header("Allow", ALLOW);
        }
        self.out.push_back(CallOutput::Respond(key.clone(), resp));
        if method == Some(Method::Bye) && call.state != State::Ended {
            if leg == Leg::Caller {
                tracing::info!(call = %call_id, "SIP caller hung up");
                if let Some(Caller::Sip(sc)) = self.calls.get(&call_id).map(|c| &c.caller) {
                    self.dialogs.remove(sc.dialog);
                }
                self.finish(now, &call_id, Side::Caller, None, "hangup");
            } else {
                tracing::info!(call = %call_id, "SIP side hung up");
                self.end(now, &call_id, Side::Sip, None, "hangup");
            }
        }
        true
    }

    /// The ACK of our 2xx to a SIP caller (with its answer, when our 2xx
    /// made the offer) or to a callee's re-INVITE; false when it is not
    /// for a call here.
    pub fn on_ack(&mut self, now: Instant, msg: &Message) -> bool {
        match self.dialogs.matching(msg) {
            Some(id) if self.by_call_id.contains_key(msg.call_id()) => {
                self.dialogs.on_ack(id);
                self.late_answer(now, msg);
                true
            }
            _ => self.callee_acked(msg),
        }
    }

    /// A callee's ACK of our 2xx to its re-INVITE: no more resending.
    fn callee_acked(&mut self, msg: &Message) -> bool {
        let Some((call_id, Leg::Fork(i))) = self.by_call_id.get(msg.call_id()) else {
            return false;
        };
        let fork = self
            .calls
            .get_mut(call_id)
            .and_then(|c| c.forks.get_mut(*i));
        match fork {
            Some(f) if f.leg.matches(msg) => {
                f.unacked = None;
                true
            }
            _ => false,
        }
    }

    /// Sends our response `resp` to a SIP side's re-INVITE or UPDATE
    /// `msg` (which asked for the timer `grant`): a 2xx carries the side's
    /// session timer, and a 2xx to a
    /// re-INVITE is resent until its ACK (RFC 3261 13.3.1.4).
    fn answer_session_request(
        &mut self,
        now: Instant,
        key: &TxKey,
        (call_id, leg): (&str, Leg),
        (msg, grant): (&Message, Grant),
        mut resp: Message,
    ) {
        self.session_refreshed(now, call_id, leg.party(), (msg, grant), &mut resp);
        let ok = resp.status().is_some_and(|c| (200..300).contains(&c));
        if let Some(call) = self.calls.get_mut(call_id)
            && ok
            && msg.method() == Some(Method::Invite)
        {
            let bytes = resp.to_bytes();
            match (leg, &call.caller) {
                (Leg::Caller, Caller::Sip(sc)) => self.dialogs.accepted(now, sc.dialog, bytes),
                (Leg::Fork(i), _) => {
                    if let Some(f) = call.forks.get_mut(i) {
                        let reliable = f.leg.flow.transport.is_reliable();
                        f.unacked = Some(Resend::new(now, bytes, reliable));
                    }
                }
                (Leg::Caller, Caller::Browser(_)) => {}
            }
        }
        self.out.push_back(CallOutput::Respond(key.clone(), resp));
    }

    /// A SIP caller cancelled its INVITE (`sip_call_id` is its Call-ID,
    /// `invite` the INVITE's transaction). Before the answer: 487 to the caller, CANCEL to every
    /// fork. Returns false when no call here has that INVITE (the caller
    /// answers 481 to the CANCEL).
    pub fn on_cancel(&mut self, now: Instant, sip_call_id: &str, invite: &TxKey) -> bool {
        let Some((call_id, Leg::Caller)) = self.by_call_id.get(sip_call_id).cloned() else {
            return false;
        };
        let Some(state) = self.calls.get(&call_id).and_then(|c| match &c.caller {
            Caller::Sip(sc) if sc.key == *invite => Some(c.state),
            _ => None,
        }) else {
            return false;
        };
        if matches!(state, State::Calling | State::Ringing) {
            tracing::info!(call = %call_id, "SIP caller cancelled");
            self.finish(now, &call_id, Side::Caller, Some(487), "cancelled");
        }
        true
    }

    /// The browser left (hang-up, or its peer closed): CANCEL or BYE the
    /// SIP side.
    pub fn browser_gone(&mut self, now: Instant, call_id: &str, reason: &str) {
        if self.browser_fork_gone(now, call_id, reason) {
            return;
        }
        if !self
            .calls
            .get(call_id)
            .is_some_and(|c| c.state != State::Ended)
        {
            return;
        }
        tracing::info!(call = %call_id, reason, "browser side hung up");
        self.finish(now, call_id, Side::Browser, None, reason);
    }

    /// Hangs up a call on an administrator's order: both sides are ended
    /// (BYE, CANCEL, or a final response to a SIP caller still ringing).
    /// False when no such call is in progress.
    pub fn hang_up(&mut self, now: Instant, call_id: &str) -> bool {
        if !self
            .calls
            .get(call_id)
            .is_some_and(|c| c.state != State::Ended)
        {
            return false;
        }
        tracing::info!(call = %call_id, "hung up by an administrator");
        self.finish(
            now,
            call_id,
            Side::Gateway,
            None,
            "hung up by an administrator",
        );
        true
    }

    /// Ends the SIP side of a call: BYE to the winner, CANCEL to forks
    /// still ringing.
    fn hang_up_sip(&mut self, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        for (j, f) in call.forks.iter_mut().enumerate() {
            if call.winner == Some(Winner::Sip(j)) {
                if let Some(bye) = f.leg.bye() {
                    self.out.push_back(CallOutput::Request(bye, f.leg.flow));
                }
            } else {
                cancel_fork(f, &mut self.out);
            }
        }
    }

    /// Hangs up the SIP side ([`Self::hang_up_sip`]) and ends the call for
    /// both sides.
    fn finish(&mut self, now: Instant, call_id: &str, by: Side, status: Option<u16>, reason: &str) {
        self.hang_up_sip(call_id);
        self.end(now, call_id, by, status, reason);
    }

    /// Ends a call for both sides (the SIP side was already hung up or
    /// refused): reports it and releases its media and peer. The call stays
    /// known until its forks settle.
    fn end(&mut self, now: Instant, call_id: &str, by: Side, status: Option<u16>, reason: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.state == State::Ended {
            return;
        }
        call.state = State::Ended;
        call.give_up = now + SETTLE;
        // Nothing more is resent to a callee we hang up on.
        for f in &mut call.forks {
            f.unacked = None;
        }
        let peer = match call.winner {
            Some(Winner::Browser(j)) => call.browsers.get(j).and_then(|b| b.peer),
            _ => call.caller.peer(),
        };
        if let Caller::Sip(sc) = &call.caller {
            if !sc.answered {
                // The INVITE still waits for its final response.
                let code = status.unwrap_or(480);
                if let Some(mut r) = caller_response(&self.dialogs, sc, code, reason_phrase(code)) {
                    if code == 488 {
                        r.push_header("Warning", format!("399 causeway \"{reason}\""));
                    }
                    self.out.push_back(CallOutput::Respond(sc.key.clone(), r));
                }
                self.dialogs.remove(sc.dialog);
            } else if by != Side::Caller
                && let Some((bye, flow)) = self.dialogs.bye(sc.dialog, &sc.via_host, &sc.user_agent)
            {
                self.out.push_back(CallOutput::Request(bye, flow));
            }
        }
        // Browsers still ringing, and the one that answered, are told.
        for b in &mut call.browsers {
            if b.state != BrowserState::Done {
                b.state = BrowserState::Done;
                self.out.push_back(CallOutput::Notice(Notice::Event(
                    b.id.clone(),
                    CallEvent::Ended {
                        by,
                        status: None,
                        reason: reason.to_string(),
                    },
                )));
                // The winner's peer goes with the call's release below.
                if b.peer.is_some() && b.peer != peer {
                    self.out.push_back(CallOutput::Notice(Notice::Release {
                        call: b.id.clone(),
                        peer: b.peer,
                    }));
                }
            }
        }
        self.notify(Notice::Event(
            call_id.to_string(),
            CallEvent::Ended {
                by,
                status,
                reason: reason.to_string(),
            },
        ));
        self.notify(Notice::Release {
            call: call_id.to_string(),
            peer,
        });
        self.reap(call_id);
    }

    /// Forgets an ended call whose forks have all settled.
    fn reap(&mut self, call_id: &str) {
        let settled = self.calls.get(call_id).is_some_and(|c| {
            c.state == State::Ended && c.forks.iter().all(|f| f.state == ForkState::Done)
        });
        if settled {
            self.forget(call_id);
        }
    }

    /// Drops an ended call and its legs; returns the transactions of forks
    /// that never settled.
    fn forget(&mut self, call_id: &str) -> Vec<TxKey> {
        let Some(call) = self.calls.remove(call_id) else {
            return Vec::new();
        };
        if let Caller::Sip(sc) = call.caller {
            self.by_call_id.remove(&sc.call_id);
            self.dialogs.remove(sc.dialog);
        }
        for b in call.browsers {
            self.by_fork.remove(&b.id);
        }
        let mut open = Vec::new();
        for f in call.forks {
            self.by_call_id.remove(&f.leg.call_id);
            if f.state != ForkState::Done
                && let Some(key) = f.key
            {
                open.push(key);
            }
        }
        open
    }

    /// Gives up on calls nobody answered in time, runs session timers
    /// (RFC 4028), and forgets ended calls whose cancelled forks never
    /// settled (their transactions are dropped).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.session_timers_due(now);
        for o in self.dialogs.handle_timeout(now) {
            match o {
                DialogOutput::Retransmit(flow, data) => {
                    self.out.push_back(CallOutput::Transmit(flow, data));
                }
                DialogOutput::AckTimeout(dialog) | DialogOutput::PrackTimeout(dialog) => {
                    let found = self.calls.iter().find_map(|(id, c)| match &c.caller {
                        Caller::Sip(sc) if sc.dialog == dialog => Some(id.clone()),
                        _ => None,
                    });
                    let Some(id) = found else { continue };
                    // No PRACK: the INVITE is refused (RFC 3262 section 3).
                    let (status, reason) = match o {
                        DialogOutput::PrackTimeout(_) => (Some(504), "no PRACK from the caller"),
                        _ => (None, "no ACK from the caller"),
                    };
                    tracing::info!(call = %id, reason, "SIP caller unresponsive");
                    self.finish(now, &id, Side::Gateway, status, reason);
                }
            }
        }
        self.resend_to_callees(now);
        let due: Vec<(String, State)> = self
            .calls
            .iter()
            .filter(|(_, c)| c.give_up <= now && c.state != State::Connected)
            .map(|(id, c)| (id.clone(), c.state))
            .collect();
        for (id, state) in due {
            if state == State::Ended {
                for key in self.forget(&id) {
                    self.out.push_back(CallOutput::Abandon(key));
                }
                continue;
            }
            tracing::info!(call = %id, "no answer");
            self.finish(now, &id, Side::Gateway, Some(408), "no answer");
        }
    }

    /// Resends our 2xx to callees' re-INVITEs that are due; a callee that
    /// never ACKs one is gone (RFC 3261 14.2): its call is hung up.
    fn resend_to_callees(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (id, call) in &mut self.calls {
            for f in &mut call.forks {
                let Some(r) = &mut f.unacked else { continue };
                match r.poll(now) {
                    ResendStep::Wait => {}
                    ResendStep::Send(bytes) => {
                        self.out.push_back(CallOutput::Transmit(f.leg.flow, bytes));
                    }
                    ResendStep::GiveUp => {
                        f.unacked = None;
                        gone.push(id.clone());
                    }
                }
            }
        }
        for id in gone {
            let reason = "no ACK from the callee";
            tracing::info!(call = %id, reason, "SIP callee unresponsive");
            self.finish(now, &id, Side::Gateway, None, reason);
        }
    }

    /// When [`Self::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter_map(Call::next_due)
            .chain(self.dialogs.poll_timeout())
            .min()
    }

    fn notify(&mut self, n: Notice) {
        self.out.push_back(CallOutput::Notice(n));
    }

    /// Next thing to do.
    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }
}
