//! Outbound registration to SIP trunks (RFC 3261 10.2, the client side), sans-IO.
//!
//! Owns one [`OutboundRegistration`] per `[[trunks]]` entry with
//! `register = true`: it builds REGISTERs, answers 401/407 digest challenges
//! (and keeps answering the same nonce with a rising nonce-count on
//! refreshes), obeys 423 Min-Expires, refreshes before the granted expiry and
//! retries after failures. The signalling core sends what it builds through
//! the transaction layer and feeds back responses and timeouts. It must not
//! touch sockets, clocks or DNS: the runtime resolves the trunk's address.

use crate::sip::Transport;
use crate::sip::digest::Challenge;
use crate::sip::msg::{Message, NameAddr, random_token};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Wait after a failure before trying again (a 503's Retry-After wins).
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Where a trunk registration stands, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegState {
    /// Nothing sent yet.
    Idle,
    /// A REGISTER is in flight.
    Registering,
    /// The registrar accepted us.
    Registered,
    /// The last attempt failed; another follows.
    Failed,
}

/// A trunk registration's state for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct TrunkStatus {
    /// Trunk name.
    pub name: String,
    /// The registrar's URI.
    pub registrar: String,
    /// State.
    pub state: RegState,
    /// Unix seconds when the binding lapses, when registered.
    pub expires_at: Option<u64>,
    /// Status of the last final response.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// What a trunk registration needs to know at start.
#[derive(Debug, Clone)]
pub struct TrunkTarget {
    /// Trunk name.
    pub name: String,
    /// Registrar host (and port) as in the trunk URI, for the Request-URI and AOR.
    pub host: String,
    /// Resolved registrar address.
    pub remote: SocketAddr,
    /// Transport to the registrar.
    pub transport: Transport,
    /// Our listener for that transport (Via, Contact).
    pub local: SocketAddr,
    /// Digest username and AOR user part.
    pub username: String,
    /// Digest password.
    pub password: String,
    /// Requested expiry, seconds.
    pub expires: u32,
}

/// One trunk's client-side registration.
#[derive(Debug)]
pub struct OutboundRegistration {
    target: TrunkTarget,
    call_id: String,
    from_tag: String,
    cseq: u32,
    expires: u32,
    /// Challenge being answered, whether it came as 407, and the nonce-count used.
    challenge: Option<(Challenge, bool, u32)>,
    /// Challenges answered since the last success (two in a row means wrong credentials).
    fresh_challenges: u8,
    next: Option<Instant>,
    /// Branch of the REGISTER in flight.
    branch: Option<String>,
    status: TrunkStatus,
}

impl OutboundRegistration {
    /// A registration that sends its first REGISTER at `now`.
    pub fn new(target: TrunkTarget, now: Instant) -> Self {
        let status = TrunkStatus {
            name: target.name.clone(),
            registrar: format!("sip:{}", target.host),
            state: RegState::Idle,
            expires_at: None,
            last_status: None,
            last_error: None,
        };
        Self {
            expires: target.expires,
            target,
            call_id: random_token(20),
            from_tag: random_token(10),
            cseq: 0,
            challenge: None,
            fresh_challenges: 0,
            next: Some(now),
            branch: None,
            status,
        }
    }

    /// When it next wants to send.
    pub fn next_send(&self) -> Option<Instant> {
        self.next
    }

    /// Its Call-ID (responses are matched on it).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Whether a transaction branch is this registration's REGISTER in flight.
    pub fn owns_branch(&self, branch: &str) -> bool {
        self.branch.as_deref() == Some(branch)
    }

    /// Current state.
    pub fn status(&self) -> &TrunkStatus {
        &self.status
    }

    /// Where REGISTERs go.
    pub fn flow(&self) -> crate::sip::Flow {
        crate::sip::Flow {
            transport: self.target.transport,
            local: self.target.local,
            remote: self.target.remote,
            conn: None,
        }
    }

    /// Builds the next REGISTER if one is due; `via_host` is our advertised
    /// host:port for the flow.
    pub fn poll_register(
        &mut self,
        now: Instant,
        via_host: &str,
        user_agent: &str,
    ) -> Option<Message> {
        if self.next.is_none_or(|t| t > now) {
            return None;
        }
        self.next = None;
        self.cseq += 1;
        let branch = format!("z9hG4bK{}", random_token(16));
        let t = &self.target;
        let uri = format!("sip:{}", t.host);
        let tparam = t.transport.uri_param();
        let mut text = format!(
            "REGISTER {uri}{tparam} SIP/2.0\r\n\
             Via: SIP/2.0/{} {via_host};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{}@{}>;tag={}\r\n\
             To: <sip:{}@{}>\r\n\
             Call-ID: {}\r\n\
             CSeq: {} REGISTER\r\n\
             Contact: <sip:{}@{via_host}{tparam}>\r\n\
             Expires: {}\r\n\
             User-Agent: {user_agent}\r\n",
            t.transport.via_name(),
            t.username,
            t.host,
            self.from_tag,
            t.username,
            t.host,
            self.call_id,
            self.cseq,
            t.username,
            self.expires,
        );
        if let Some((ch, proxy, nc)) = &mut self.challenge {
            *nc += 1;
            let header = if *proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            let value = ch.authorize(
                "REGISTER",
                &format!("{uri}{tparam}"),
                &t.username,
                &t.password,
                *nc,
                &random_token(12),
            );
            text.push_str(&format!("{header}: {value}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        let msg = Message::parse(text.as_bytes()).ok()?;
        self.branch = Some(branch);
        self.status.state = RegState::Registering;
        Some(msg)
    }

    fn fail(&mut self, now: Instant, error: String, retry: Duration) {
        tracing::warn!(trunk = %self.target.name, %error, retry_s = retry.as_secs(), "trunk registration failed");
        self.status.state = RegState::Failed;
        self.status.expires_at = None;
        self.status.last_error = Some(error);
        self.branch = None;
        self.next = Some(now + retry);
    }

    /// The REGISTER got no answer.
    pub fn on_timeout(&mut self, now: Instant) {
        self.fail(now, "registrar did not answer".into(), RETRY_AFTER);
    }

    /// A final response to our REGISTER.
    pub fn on_response(&mut self, now: Instant, wall: u64, resp: &Message) {
        let Some(code) = resp.status() else { return };
        if code < 200 {
            return;
        }
        self.branch = None;
        self.status.last_status = Some(code);
        match code {
            200..=299 => {
                let granted = self.granted_expiry(resp);
                self.fresh_challenges = 0;
                self.status.state = RegState::Registered;
                self.status.expires_at = Some(wall + u64::from(granted));
                self.status.last_error = None;
                // Refresh well before the binding lapses.
                let refresh = if granted > 60 {
                    granted - 30
                } else {
                    (granted * 3 / 4).max(1)
                };
                self.next = Some(now + Duration::from_secs(u64::from(refresh)));
                tracing::info!(trunk = %self.target.name, expires = granted, "registered to trunk");
            }
            401 | 407 => {
                let header = if code == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let ch = resp.headers_named(header).find_map(Challenge::parse);
                match ch {
                    // A registrar that answers `stale` forever must not
                    // get a REGISTER loop: three fresh nonces in a row, then back off.
                    Some(ch)
                        if (ch.stale && self.fresh_challenges < 3)
                            || self.fresh_challenges == 0 =>
                    {
                        self.fresh_challenges += 1;
                        self.challenge = Some((ch, code == 407, 0));
                        self.next = Some(now);
                    }
                    Some(_) => {
                        self.challenge = None;
                        self.fail(now, format!("credentials rejected ({code})"), RETRY_AFTER);
                    }
                    None => self.fail(
                        now,
                        format!("{code} without a usable digest challenge"),
                        RETRY_AFTER,
                    ),
                }
            }
            423 => match resp
                .header("Min-Expires")
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                Some(min) if min > self.expires => {
                    self.expires = min;
                    self.next = Some(now);
                }
                _ => self.fail(now, "423 without a larger Min-Expires".into(), RETRY_AFTER),
            },
            _ => {
                let retry = resp
                    .header("Retry-After")
                    .and_then(|v| {
                        v.split(|c: char| !c.is_ascii_digit())
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .map_or(RETRY_AFTER, |s| Duration::from_secs(s.clamp(1, 3600)));
                let reason = match &resp.start {
                    crate::sip::msg::StartLine::Response { reason, .. } => reason.clone(),
                    crate::sip::msg::StartLine::Request { .. } => String::new(),
                };
                self.fail(now, format!("{code} {reason}"), retry);
            }
        }
    }

    /// The expiry the registrar granted: our Contact's `expires`, else the
    /// Expires header, else what we asked for.
    fn granted_expiry(&self, resp: &Message) -> u32 {
        let ours = format!("sip:{}@", self.target.username);
        let from_contact = resp
            .header_list("Contact")
            .filter_map(|c| NameAddr::parse(c).ok())
            .find(|c| c.uri_text.starts_with(&ours))
            .and_then(|c| c.param("expires").flatten().and_then(|v| v.parse().ok()));
        from_contact
            .or_else(|| resp.header("Expires").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(self.expires)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> OutboundRegistration {
        OutboundRegistration::new(
            TrunkTarget {
                name: "carrier".into(),
                host: "carrier.example".into(),
                remote: "192.0.2.1:5060".parse().unwrap(),
                transport: Transport::Udp,
                local: "192.0.2.9:5060".parse().unwrap(),
                username: "acct".into(),
                password: "pw".into(),
                expires: 3600,
            },
            Instant::now(),
        )
    }

    fn answer(req: &Message, code: u16, extra: &str) -> Message {
        let text = format!(
            "SIP/2.0 {code} X\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=r\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            req.header("Via").unwrap(),
            req.header("From").unwrap(),
            req.header("To").unwrap(),
            req.call_id(),
            req.header("CSeq").unwrap()
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn challenge_then_register_then_refresh_with_the_same_nonce() {
        let mut r = reg();
        let t0 = Instant::now();
        let first = r.poll_register(t0, "192.0.2.9:5060", "ua").unwrap();
        assert!(first.header("Authorization").is_none());
        assert_eq!(first.header("CSeq"), Some("1 REGISTER"));
        assert!(r.poll_register(t0, "h", "ua").is_none(), "one in flight");
        r.on_response(
            t0,
            1000,
            &answer(
                &first,
                401,
                "WWW-Authenticate: Digest realm=\"c\", nonce=\"n1\", qop=\"auth\"\r\n",
            ),
        );
        let second = r.poll_register(t0, "192.0.2.9:5060", "ua").unwrap();
        assert_eq!(second.header("CSeq"), Some("2 REGISTER"));
        assert_eq!(second.call_id(), first.call_id());
        let auth = crate::sip::digest::Credentials::parse(second.header("Authorization").unwrap())
            .unwrap();
        assert_eq!(
            (auth.nc.as_deref(), auth.uri.as_str()),
            (Some("00000001"), "sip:carrier.example")
        );
        r.on_response(
            t0,
            1000,
            &answer(
                &second,
                200,
                "Contact: <sip:acct@192.0.2.9:5060>;expires=120\r\n",
            ),
        );
        assert_eq!(r.status().state, RegState::Registered);
        assert_eq!(r.status().expires_at, Some(1120));
        assert_eq!(r.next_send(), Some(t0 + Duration::from_secs(90)));
        let refresh = r
            .poll_register(t0 + Duration::from_secs(90), "h", "ua")
            .unwrap();
        let auth = crate::sip::digest::Credentials::parse(refresh.header("Authorization").unwrap())
            .unwrap();
        assert_eq!(
            auth.nc.as_deref(),
            Some("00000002"),
            "preemptive, next nonce-count"
        );
    }

    #[test]
    fn wrong_credentials_stop_after_one_retry_and_try_again_later() {
        let mut r = reg();
        let t0 = Instant::now();
        let ch = "WWW-Authenticate: Digest realm=\"c\", nonce=\"n1\"\r\n";
        let m = r.poll_register(t0, "h", "ua").unwrap();
        r.on_response(t0, 0, &answer(&m, 401, ch));
        let m = r.poll_register(t0, "h", "ua").unwrap();
        r.on_response(t0, 0, &answer(&m, 401, ch));
        assert_eq!(r.status().state, RegState::Failed);
        assert!(
            r.status()
                .last_error
                .as_deref()
                .unwrap()
                .contains("credentials rejected")
        );
        assert!(
            r.poll_register(t0 + Duration::from_secs(59), "h", "ua")
                .is_none()
        );
        assert!(r.poll_register(t0 + RETRY_AFTER, "h", "ua").is_some());
    }

    #[test]
    fn a_registrar_stuck_on_stale_nonces_gets_a_back_off_not_a_loop() {
        let mut r = reg();
        let t0 = Instant::now();
        let stale = "WWW-Authenticate: Digest realm=\"c\", nonce=\"n\", stale=true\r\n";
        let mut sent = 0;
        while let Some(m) = r.poll_register(t0, "h", "ua") {
            sent += 1;
            assert!(sent < 10, "REGISTER loop");
            r.on_response(t0, 0, &answer(&m, 401, stale));
        }
        assert_eq!(sent, 4, "the first REGISTER and three fresh nonces");
        assert_eq!(r.status().state, RegState::Failed);
    }

    #[test]
    fn min_expires_and_retry_after_are_obeyed() {
        let mut r = reg();
        let t0 = Instant::now();
        let m = r.poll_register(t0, "h", "ua").unwrap();
        r.on_response(t0, 0, &answer(&m, 423, "Min-Expires: 7200\r\n"));
        let m = r.poll_register(t0, "h", "ua").unwrap();
        assert_eq!(m.header("Expires"), Some("7200"));
        r.on_response(t0, 0, &answer(&m, 503, "Retry-After: 5\r\n"));
        assert_eq!(r.status().last_error.as_deref(), Some("503 X"));
        assert_eq!(r.next_send(), Some(t0 + Duration::from_secs(5)));
        let _ = r
            .poll_register(t0 + Duration::from_secs(5), "h", "ua")
            .unwrap();
        r.on_timeout(t0 + Duration::from_secs(37));
        assert_eq!(
            r.next_send(),
            Some(t0 + Duration::from_secs(37) + RETRY_AFTER)
        );
    }
}
