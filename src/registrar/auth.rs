//! Digest authentication policy for requests from local users: challenge,
//! verify, nonce-count replay protection and failure rate limiting.
//!
//! Owns the user table's secrets and the nonce state; shared by REGISTER
//! and by INVITEs that a dialplan rule makes authenticate (`auth = true`). An unknown user takes exactly the same path as a known
//! user with a wrong password (same challenge, same hashing work, same 403), so
//! responses never reveal which accounts exist. Pure: time is passed in.

use super::limiter::Limiter;
use crate::config::{Config, UserConfig};
use crate::sip::digest::{
    Algorithm, Credentials, CredentialsError, NonceFactory, NonceState, challenge, constant_time_eq,
};
use crate::sip::msg::{Message, Method};
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
struct Secrets {
    md5: Option<String>,
    sha256: Option<String>,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// Authenticated as this user.
    Ok(String),
    /// Answer 401 with these `WWW-Authenticate` values.
    Challenge(Vec<String>),
    /// Answer 403: wrong credentials, unknown user or blocked.
    Forbidden,
    /// Answer 400: the Authorization header is unusable.
    Malformed,
}

/// Authenticates requests against the configured users.
#[derive(Debug)]
pub struct Authenticator {
    realm: String,
    algorithms: Vec<Algorithm>,
    users: HashMap<String, Secrets>,
    nonces: NonceFactory,
    nonce_lifetime: u64,
    /// Highest nonce-count seen per nonce, and when to forget it.
    counts: HashMap<String, (u32, u64)>,
    limiter: Limiter,
}

impl Authenticator {
    /// Builds the user table from config.
    pub fn new(cfg: &Config) -> Self {
        let realm = cfg.sip.domain.clone();
        let users = cfg
            .users
            .iter()
            .map(|u| {
                let u: &UserConfig = u.get_ref();
                let secrets = match &u.password {
                    Some(p) => Secrets {
                        md5: Some(Algorithm::Md5.ha1(&u.name, &realm, p)),
                        sha256: Some(Algorithm::Sha256.ha1(&u.name, &realm, p)),
                    },
                    None => Secrets {
                        md5: u.ha1.as_ref().map(|h| h.to_ascii_lowercase()),
                        sha256: u.ha1_sha256.as_ref().map(|h| h.to_ascii_lowercase()),
                    },
                };
                (u.name.clone(), secrets)
            })
            .collect();
        let r = &cfg.registrar;
        Self {
            realm,
            algorithms: r
                .digest_algorithms
                .get_ref()
                .iter()
                .filter_map(|a| Algorithm::parse(a))
                .collect(),
            users,
            nonces: NonceFactory::new(),
            nonce_lifetime: u64::from(r.nonce_lifetime),
            counts: HashMap::new(),
            limiter: Limiter::new(
                r.max_failures,
                u64::from(r.failure_window),
                u64::from(r.block_duration),
            ),
        }
    }

    fn challenge(&self, now: u64, stale: bool) -> AuthResult {
        let nonce = self.nonces.mint(now);
        AuthResult::Challenge(
            self.algorithms
                .iter()
                .map(|a| challenge(&self.realm, &nonce, *a, stale))
                .collect(),
        )
    }

    /// Authenticates `req` from `source`; `expected_user` is the user the
    /// request acts for (the To user of a REGISTER, the From user of a
    /// call), which must match. A REGISTER answers our 401 in
    /// `Authorization`; a call answers our 407 in `Proxy-Authorization`
    /// (some devices use `Authorization` there too).
    pub fn authenticate(
        &mut self,
        now: u64,
        req: &Message,
        source: IpAddr,
        expected_user: &str,
    ) -> AuthResult {
        let header = match req.method() {
            Some(Method::Register) => req.header("Authorization"),
            _ => req
                .header("Proxy-Authorization")
                .or_else(|| req.header("Authorization")),
        };
        self.verify(now, header, req, source, expected_user)
    }

    fn verify(
        &mut self,
        now: u64,
        header: Option<&str>,
        req: &Message,
        source: IpAddr,
        expected_user: &str,
    ) -> AuthResult {
        let ip_key = format!("ip:{source}");
        let Some(header) = header else {
            if self.limiter.is_blocked(&ip_key, now) {
                return AuthResult::Forbidden;
            }
            return self.challenge(now, false);
        };
        let creds = match Credentials::parse(header) {
            Ok(c) => c,
            Err(CredentialsError::OtherScheme) => return self.challenge(now, false),
            Err(_) => return AuthResult::Malformed,
        };
        let user_key = format!("user:{}", creds.username);
        if self.limiter.is_blocked(&ip_key, now) || self.limiter.is_blocked(&user_key, now) {
            tracing::debug!(%source, "refused: source or user is blocked");
            return AuthResult::Forbidden;
        }
        let Some(alg) = Algorithm::parse(&creds.algorithm).filter(|a| self.algorithms.contains(a))
        else {
            return self.challenge(now, false);
        };
        if creds.realm != self.realm {
            return self.challenge(now, false);
        }
        match self.nonces.check(&creds.nonce, now, self.nonce_lifetime) {
            NonceState::Fresh => {}
            NonceState::Stale => return self.challenge(now, true),
            NonceState::Invalid => return self.challenge(now, false),
        }
        if creds
            .qop
            .as_deref()
            .is_some_and(|q| !q.eq_ignore_ascii_case("auth"))
        {
            return self.challenge(now, false);
        }
        // Without qop there is no nonce-count: such a nonce is good once (count 0).
        let nc = match &creds.qop {
            Some(_) => match creds.nonce_count() {
                Some(n) if n > 0 && creds.cnonce.is_some() => n,
                _ => return AuthResult::Malformed,
            },
            None => 0,
        };
        let secrets = self.users.get(&creds.username);
        let ha1 = secrets.and_then(|s| match alg {
            Algorithm::Md5 => s.md5.clone(),
            Algorithm::Sha256 => s.sha256.clone(),
        });
        // Unknown users (or a hash we lack) cost the same work as known ones.
        let known = ha1.is_some();
        let ha1 = ha1.unwrap_or_else(|| alg.ha1(&creds.username, &self.realm, "\u{0}no-such-user"));
        let method = req
            .method()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        let expected = creds.expected_response(alg, &ha1, &method);
        let right = known && constant_time_eq(&expected, &creds.response);
        if !right || creds.username != expected_user {
            self.record_failure(now, &ip_key, &user_key, source);
            return AuthResult::Forbidden;
        }
        // Replay protection: the count must grow for each use of a nonce.
        let entry = self
            .counts
            .entry(creds.nonce.clone())
            .or_insert((u32::MAX, now + self.nonce_lifetime + 5));
        if entry.0 != u32::MAX && (nc <= entry.0) {
            tracing::warn!(%source, nc, "replayed nonce-count refused");
            self.record_failure(now, &ip_key, &user_key, source);
            return self.challenge(now, false);
        }
        entry.0 = nc;
        AuthResult::Ok(creds.username)
    }

    /// Checks a user's clear-text password (the client API's browser
    /// registrations), against either stored hash, with the same failure
    /// counting and blocking as digest authentication.
    pub fn check_password(
        &mut self,
        now: u64,
        user: &str,
        password: &str,
        source: IpAddr,
    ) -> AuthResult {
        let ip_key = format!("ip:{source}");
        let user_key = format!("user:{user}");
        if self.limiter.is_blocked(&ip_key, now) || self.limiter.is_blocked(&user_key, now) {
            return AuthResult::Forbidden;
        }
        let secrets = self.users.get(user);
        let (alg, stored) = match secrets {
            Some(Secrets { md5: Some(h), .. }) => (Algorithm::Md5, Some(h.as_str())),
            Some(Secrets {
                sha256: Some(h), ..
            }) => (Algorithm::Sha256, Some(h.as_str())),
            _ => (Algorithm::Md5, None),
        };
        // Unknown users cost the same work as known ones.
        let given = alg.ha1(user, &self.realm, password);
        if stored.is_some_and(|h| constant_time_eq(h, &given)) {
            return AuthResult::Ok(user.to_string());
        }
        self.record_failure(now, &ip_key, &user_key, source);
        AuthResult::Forbidden
    }

    fn record_failure(&mut self, now: u64, ip_key: &str, user_key: &str, source: IpAddr) {
        let user_digest = &crate::sip::digest::Algorithm::Sha256.hash_hex(&[user_key])[..8];
        tracing::info!(%source, user = user_digest, "authentication failed");
        if self.limiter.fail(ip_key, now) {
            tracing::warn!(%source, "too many failed authentications: source blocked");
        }
        if self.limiter.fail(user_key, now) {
            tracing::warn!(
                user = user_digest,
                "too many failed authentications: user blocked"
            );
        }
    }

    /// Forgets old nonce counts and limiter entries.
    pub fn prune(&mut self, now: u64) {
        self.counts.retain(|_, (_, until)| *until > now);
        self.limiter.prune(now);
    }
}
