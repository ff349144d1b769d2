//! The registrar (RFC 3261 section 10.3), sans-IO.
//!
//! Owns the location service's working set (bindings per address of record,
//! in memory) and decides every REGISTER: authentication (through
//! [`auth::Authenticator`]), Expires and Min-Expires (423), `*` unregister,
//! q-values, Call-ID/CSeq ordering, and which connection a binding was made
//! on. It returns the response plus the [`store::StoreOp`]s the caller must
//! persist; it never touches a socket, a clock or the disk itself.

pub mod auth;
pub mod limiter;
pub mod store;

use crate::config::Config;
use crate::sip::msg::{Message, NameAddr, Uri, response_to};
use crate::sip::{ConnId, Flow, Transport};
use auth::{AuthResult, Authenticator};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use store::StoreOp;

/// One contact bound to an address of record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Binding {
    /// Canonical address of record, `sip:user@domain`.
    pub aor: String,
    /// Identity of the binding within the AOR (`+sip.instance` or the normalized contact).
    pub key: String,
    /// Contact URI as the device gave it.
    pub contact: String,
    /// Unix seconds when it lapses.
    pub expires_at: u64,
    /// q-value in thousandths (1000 = 1.0).
    pub q: u16,
    /// Call-ID of the REGISTER that made it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// Transport it arrived on.
    pub transport: Transport,
    /// Source address it arrived from (where a NATed device is reachable).
    pub source: SocketAddr,
    /// Our address it arrived at.
    pub local: SocketAddr,
    /// The stream connection it arrived on, while that connection lives.
    #[serde(skip)]
    pub conn: Option<ConnId>,
    /// User-Agent header.
    pub user_agent: String,
    /// Unix seconds of the first registration of this binding.
    pub registered_at: u64,
}

impl Binding {
    /// The flow requests to this contact should take: the registering
    /// connection for stream transports, the source address for UDP.
    pub fn flow(&self) -> Flow {
        Flow {
            transport: self.transport,
            local: self.local,
            remote: self.source,
            conn: self.conn,
        }
    }
}

/// A decided REGISTER.
#[derive(Debug)]
pub struct Outcome {
    /// The response to send.
    pub response: Message,
    /// Changes to persist.
    pub ops: Vec<StoreOp>,
}

/// Registrar state and policy.
#[derive(Debug)]
pub struct Registrar {
    domain: String,
    min_expires: u32,
    max_expires: u32,
    default_expires: u32,
    max_contacts: usize,
    /// Shared with the client API (browser registrations check passwords
    /// against the same users, failure counts and blocks).
    auth: Arc<Mutex<Authenticator>>,
    bindings: HashMap<String, Vec<Binding>>,
    to_tag: String,
}

fn reply(req: &Message, code: u16, reason: &str, tag: &str, flow: &Flow) -> Message {
    response_to(req, code, reason, Some(tag), Some(flow.remote))
}

impl Registrar {
    /// A registrar with no bindings.
    pub fn new(cfg: &Config) -> Self {
        let r = &cfg.registrar;
        Self {
            domain: cfg.sip.domain.to_ascii_lowercase(),
            min_expires: r.min_expires,
            max_expires: r.max_expires,
            default_expires: r.default_expires,
            max_contacts: r.max_contacts.max(1),
            auth: Arc::new(Mutex::new(Authenticator::new(cfg))),
            bindings: HashMap::new(),
            to_tag: crate::sip::msg::random_token(10),
        }
    }

    /// The local users' authentication (calls use it too).
    pub fn authenticator(&self) -> MutexGuard<'_, Authenticator> {
        self.auth.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The same authentication, for the client API's threads.
    pub fn shared_authenticator(&self) -> Arc<Mutex<Authenticator>> {
        self.auth.clone()
    }

    /// Loads persisted bindings (at start).
    pub fn restore(&mut self, bindings: Vec<Binding>) {
        for b in bindings {
            self.bindings.entry(b.aor.clone()).or_default().push(b);
        }
    }

    /// The canonical AOR for a user.
    pub fn aor_of(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.domain)
    }

    /// Live bindings of one AOR, best q first.
    pub fn lookup(&self, aor: &str, now: u64) -> Vec<&Binding> {
        let mut v: Vec<&Binding> = self
            .bindings
            .get(aor)
            .into_iter()
            .flatten()
            .filter(|b| b.expires_at > now)
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.q));
        v
    }

    /// Every live binding.
    pub fn all(&self, now: u64) -> impl Iterator<Item = &Binding> {
        self.bindings
            .values()
            .flatten()
            .filter(move |b| b.expires_at > now)
    }

    /// A stream connection closed: its bindings fall back to the source address.
    pub fn connection_closed(&mut self, conn: ConnId) {
        for b in self.bindings.values_mut().flatten() {
            if b.conn == Some(conn) {
                b.conn = None;
            }
        }
    }

    /// Drops expired bindings from memory and old auth state. The store purges its own.
    pub fn expire(&mut self, now: u64) {
        self.bindings.retain(|_, v| {
            v.retain(|b| b.expires_at > now);
            !v.is_empty()
        });
        self.authenticator().prune(now);
    }

    /// Decides one REGISTER that arrived on `flow` at `now` (unix seconds).
    pub fn handle(&mut self, now: u64, req: &Message, flow: &Flow) -> Outcome {
        let tag = self.to_tag.clone();
        let fail = |code, reason: &str| Outcome {
            response: reply(req, code, reason, &tag, flow),
            ops: vec![],
        };

        // Step 1: the Request-URI names a domain we serve.
        let Some(ruri) = request_uri(req) else {
            return fail(400, "Bad Request-URI");
        };
        if !self.serves(&ruri.host) {
            return fail(404, "Domain Not Served");
        }
        // Step 2: no extension we would have to understand.
        if let Some(req_ext) = req.header("Require") {
            let mut resp = reply(req, 420, "Bad Extension", &tag, flow);
            resp.push_header("Unsupported", req_ext);
            return Outcome {
                response: resp,
                ops: vec![],
            };
        }
        // Syntax before authentication: a malformed REGISTER gets 400, not a challenge.
        if req
            .header_list("Contact")
            .any(|c| c != "*" && NameAddr::parse(c).is_err())
        {
            return fail(400, "Bad Contact");
        }
        // Steps 3-4: who is asking, and for which AOR.
        let Some(to) = req.header("To").and_then(|v| NameAddr::parse(v).ok()) else {
            return fail(400, "Bad To");
        };
        let Some(user) = to.uri.user.as_deref().map(crate::sip::msg::unescape) else {
            return fail(400, "To Has No User");
        };
        let verdict = self
            .authenticator()
            .authenticate(now, req, flow.remote.ip(), &user);
        match verdict {
            AuthResult::Ok(_) => {}
            AuthResult::Challenge(values) => {
                let mut resp = reply(req, 401, "Unauthorized", &tag, flow);
                for v in values {
                    resp.push_header("WWW-Authenticate", v);
                }
                return Outcome {
                    response: resp,
                    ops: vec![],
                };
            }
            AuthResult::Forbidden => return fail(403, "Forbidden"),
            AuthResult::Malformed => return fail(400, "Malformed Authorization"),
        }
        let aor = self.aor_of(&user);
        let call_id = req.call_id().to_string();
        let cseq = req.cseq().map_or(0, |c| c.seq);

        // Step 6: the Contact list, `*`, and the expiry of each.
        let contacts: Vec<&str> = req.header_list("Contact").collect();
        let header_expires = match req.header("Expires") {
            Some(v) => match v.trim().parse::<u64>() {
                Ok(e) => Some(e.min(u64::from(u32::MAX)) as u32),
                Err(_) => return fail(400, "Bad Expires"),
            },
            None => None,
        };
        let mut ops = Vec::new();
        if contacts.contains(&"*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return fail(400, "Wildcard Contact Needs Expires 0");
            }
            if let Some(existing) = self.bindings.get(&aor) {
                // RFC 3261 10.3 step 6: a stale CSeq on the same Call-ID aborts.
                if existing
                    .iter()
                    .any(|b| b.call_id == call_id && b.cseq >= cseq)
                {
                    return fail(400, "Out Of Order CSeq");
                }
            }
            self.bindings.remove(&aor);
            ops.push(StoreOp::RemoveAll { aor: aor.clone() });
            return Outcome {
                response: self.ok(req, &aor, now, &tag, flow),
                ops,
            };
        }
        let mut updates = Vec::with_capacity(contacts.len());
        for c in &contacts {
            let Ok(na) = NameAddr::parse(c) else {
                return fail(400, "Bad Contact");
            };
            let expires = match na.param("expires").flatten() {
                Some(e) => match e.parse::<u64>() {
                    Ok(e) => e.min(u64::from(u32::MAX)) as u32,
                    Err(_) => return fail(400, "Bad Contact Expires"),
                },
                None => header_expires.unwrap_or(self.default_expires),
            };
            if expires > 0 && expires < self.min_expires {
                let mut resp = reply(req, 423, "Interval Too Brief", &tag, flow);
                resp.push_header("Min-Expires", self.min_expires.to_string());
                return Outcome {
                    response: resp,
                    ops: vec![],
                };
            }
            let q = match na.param("q").flatten() {
                Some(q) => match parse_q(q) {
                    Some(q) => q,
                    None => return fail(400, "Bad q-value"),
                },
                None => 1000,
            };
            let key = binding_key(&na);
            updates.push((na, key, expires.min(self.max_expires), q));
        }

        // Step 7: apply, honouring Call-ID/CSeq ordering per binding.
        let list = self.bindings.entry(aor.clone()).or_default();
        for (_, key, _, _) in &updates {
            if list
                .iter()
                .any(|b| &b.key == key && b.call_id == call_id && b.cseq >= cseq)
            {
                return fail(400, "Out Of Order CSeq");
            }
        }
        let user_agent = req.header("User-Agent").unwrap_or_default().to_string();
        for (na, key, expires, q) in updates {
            let old = list.iter().position(|b| b.key == key);
            if expires == 0 {
                if let Some(i) = old {
                    list.remove(i);
                    ops.push(StoreOp::Remove {
                        aor: aor.clone(),
                        key,
                    });
                }
                continue;
            }
            let registered_at = old.map_or(now, |i| list[i].registered_at);
            let b = Binding {
                aor: aor.clone(),
                key,
                contact: na.uri_text.clone(),
                expires_at: now + u64::from(expires),
                q,
                call_id: call_id.clone(),
                cseq,
                transport: flow.transport,
                source: flow.remote,
                local: flow.local,
                conn: flow.conn,
                user_agent: user_agent.clone(),
                registered_at,
            };
            match old {
                Some(i) => list[i] = b.clone(),
                None => list.push(b.clone()),
            }
            ops.push(StoreOp::Upsert(b));
        }
        // Too many contacts: the ones registered longest ago give way.
        while list.len() > self.max_contacts {
            let oldest = list
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.registered_at)
                .map(|(i, _)| i)
                .unwrap_or(0);
            let b = list.remove(oldest);
            ops.push(StoreOp::Remove {
                aor: aor.clone(),
                key: b.key,
            });
        }
        if list.is_empty() {
            self.bindings.remove(&aor);
        }
        Outcome {
            response: self.ok(req, &aor, now, &tag, flow),
            ops,
        }
    }

    fn serves(&self, host: &str) -> bool {
        host.eq_ignore_ascii_case(&self.domain)
            || host.eq_ignore_ascii_case("localhost")
            || host.parse::<std::net::IpAddr>().is_ok()
    }

    /// 200 OK listing every current binding of the AOR (RFC 3261 10.3 step 8).
    fn ok(&self, req: &Message, aor: &str, now: u64, tag: &str, flow: &Flow) -> Message {
        let mut resp = reply(req, 200, "OK", tag, flow);
        for b in self.lookup(aor, now) {
            let mut v = String::with_capacity(b.contact.len() + 24);
            let _ = write!(v, "<{}>;expires={}", b.contact, b.expires_at - now);
            if b.q != 1000 {
                let _ = write!(v, ";q={}", format_q(b.q));
            }
            resp.push_header("Contact", v);
        }
        resp.push_header(
            "Date",
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now)),
        );
        resp
    }
}

fn request_uri(req: &Message) -> Option<Uri> {
    match &req.start {
        crate::sip::msg::StartLine::Request { uri, .. } => Uri::parse(uri).ok(),
        _ => None,
    }
}

/// `+sip.instance` (with `reg-id`) identifies a device across contact changes
/// (RFC 5626); otherwise the contact URI's scheme, user, host, port and transport do.
fn binding_key(na: &NameAddr) -> String {
    if let Some(Some(inst)) = na.param("+sip.instance") {
        let reg = na.param("reg-id").flatten().unwrap_or("");
        return format!("{}#{reg}", inst.trim_matches('"'));
    }
    let u = &na.uri;
    let transport = u
        .param("transport")
        .flatten()
        .unwrap_or("udp")
        .to_ascii_lowercase();
    format!(
        "{}:{}@{}:{};{}",
        u.scheme,
        u.user.as_deref().unwrap_or(""),
        u.host.to_ascii_lowercase(),
        u.port.unwrap_or(0),
        transport
    )
}

/// q-value "0" to "1" with up to three decimals, in thousandths.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_val: u16 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}").parse().ok()?
    };
    match int {
        "0" => Some(frac_val),
        "1" if frac_val == 0 => Some(1000),
        _ => None,
    }
}

fn format_q(q: u16) -> String {
    if q >= 1000 {
        "1".into()
    } else if q == 0 {
        "0".into()
    } else {
        let s = format!("0.{q:03}");
        s.trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests;
