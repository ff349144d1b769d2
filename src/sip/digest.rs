//! HTTP Digest authentication for SIP (RFC 3261 22, RFC 2617, RFC 7616, RFC 8760).
//!
//! Owns credential parsing, the MD5 and SHA-256 response computation, and
//! stateless nonces (a timestamp sealed with an HMAC, so any restart-free
//! replica can check them). Replay protection (nonce-count tracking) and
//! policy (who may register) belong to the registrar, not here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use md5::Md5;
use sha2::Sha256;
use std::fmt::Write as _;

/// Digest algorithm (the `-sess` variants are not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5 (RFC 2617), what most deployed SIP devices speak.
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
}

impl Algorithm {
    /// Name as it appears in `algorithm=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm=` value; absent means MD5 (RFC 2617).
    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    /// Lowercase hex of H(data).
    pub fn hash_hex(self, parts: &[&str]) -> String {
        fn run<D: sha2::Digest>(parts: &[&str]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            hex::encode(d.finalize())
        }
        match self {
            Self::Md5 => run::<Md5>(parts),
            Self::Sha256 => run::<Sha256>(parts),
        }
    }

    /// HA1 = H(username:realm:password).
    pub fn ha1(self, username: &str, realm: &str, password: &str) -> String {
        self.hash_hex(&[username, realm, password])
    }
}

/// The parameters of an `Authorization: Digest ...` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// `username`
    pub username: String,
    /// `realm`
    pub realm: String,
    /// `nonce`
    pub nonce: String,
    /// `uri` (the digest-uri, verbatim)
    pub uri: String,
    /// `response`, lowercase hex
    pub response: String,
    /// `algorithm` as written (`MD5` when absent)
    pub algorithm: String,
    /// `cnonce`
    pub cnonce: Option<String>,
    /// `qop` (`auth` is the only one accepted)
    pub qop: Option<String>,
    /// `nc` as written (8 hex digits)
    pub nc: Option<String>,
    /// `opaque`
    pub opaque: Option<String>,
}

/// Why credentials could not be used at all (as opposed to being wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    /// A scheme other than Digest (answered with a challenge, RFC 4475 3.3.7).
    OtherScheme,
    /// Malformed.
    Malformed,
    /// A required parameter is missing.
    Missing(&'static str),
}

impl Credentials {
    /// Parses `Digest k=v, k="v", ...`.
    pub fn parse(header: &str) -> Result<Credentials, CredentialsError> {
        let header = header.trim();
        let (scheme, rest) = header
            .split_once(char::is_whitespace)
            .ok_or(CredentialsError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::OtherScheme);
        }
        let mut c = Credentials {
            algorithm: "MD5".into(),
            ..Default::default()
        };
        for (k, v) in parse_auth_params(rest).ok_or(CredentialsError::Malformed)? {
            let slot = match k.to_ascii_lowercase().as_str() {
                "username" => &mut c.username,
                "realm" => &mut c.realm,
                "nonce" => &mut c.nonce,
                "uri" => &mut c.uri,
                "response" => &mut c.response,
                "algorithm" => &mut c.algorithm,
                "cnonce" => c.cnonce.get_or_insert_default(),
                "qop" => c.qop.get_or_insert_default(),
                "nc" => c.nc.get_or_insert_default(),
                "opaque" => c.opaque.get_or_insert_default(),
                _ => continue,
            };
            *slot = v;
        }
        for (name, v) in [
            ("username", &c.username),
            ("realm", &c.realm),
            ("nonce", &c.nonce),
            ("uri", &c.uri),
            ("response", &c.response),
        ] {
            if v.is_empty() {
                return Err(CredentialsError::Missing(name));
            }
        }
        c.response.make_ascii_lowercase();
        Ok(c)
    }

    /// The nonce count as a number, when present and well-formed.
    pub fn nonce_count(&self) -> Option<u32> {
        let nc = self.nc.as_deref()?;
        if nc.len() != 8 {
            return None;
        }
        u32::from_str_radix(nc, 16).ok()
    }

    /// The response this request should carry, given HA1 for its algorithm.
    pub fn expected_response(&self, alg: Algorithm, ha1: &str, method: &str) -> String {
        let ha2 = alg.hash_hex(&[method, &self.uri]);
        match (&self.qop, &self.nc, &self.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => {
                alg.hash_hex(&[ha1, &self.nonce, nc, cnonce, qop, &ha2])
            }
            _ => alg.hash_hex(&[ha1, &self.nonce, &ha2]),
        }
    }
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` challenge, for answering as
/// a client (outbound registration to a trunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`
    pub realm: String,
    /// `nonce`
    pub nonce: String,
    /// `algorithm`
    pub algorithm: Algorithm,
    /// Whether `qop` offers `auth`.
    pub qop_auth: bool,
    /// `opaque`, echoed back.
    pub opaque: Option<String>,
    /// `stale=true`: the nonce expired, the password was fine.
    pub stale: bool,
}

impl Challenge {
    /// Parses `Digest realm=..., nonce=...`; `None` for other schemes,
    /// unknown algorithms or missing realm/nonce.
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, rest) = header.trim().split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut c = Challenge {
            realm: String::new(),
            nonce: String::new(),
            algorithm: Algorithm::Md5,
            qop_auth: false,
            opaque: None,
            stale: false,
        };
        for (k, v) in parse_auth_params(rest)? {
            match k.to_ascii_lowercase().as_str() {
                "realm" => c.realm = v,
                "nonce" => c.nonce = v,
                "algorithm" => c.algorithm = Algorithm::parse(&v)?,
                "qop" => c.qop_auth = v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")),
                "opaque" => c.opaque = Some(v),
                "stale" => c.stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        (!c.nonce.is_empty()).then_some(c)
    }

    /// The `Authorization` value answering this challenge for `method uri`;
    /// `nc` counts uses of this nonce (from 1).
    pub fn authorize(
        &self,
        method: &str,
        uri: &str,
        username: &str,
        password: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self.algorithm;
        let ha1 = alg.ha1(username, &self.realm, password);
        let ha2 = alg.hash_hex(&[method, uri]);
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut h = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={}",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            alg.as_str()
        );
        let response = if self.qop_auth {
            let nc = format!("{nc:08x}");
            let r = alg.hash_hex(&[&ha1, &self.nonce, &nc, cnonce, "auth", &ha2]);
            let _ = write!(h, ", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
            r
        } else {
            alg.hash_hex(&[&ha1, &self.nonce, &ha2])
        };
        let _ = write!(h, ", response=\"{response}\"");
        if let Some(o) = &self.opaque {
            let _ = write!(h, ", opaque=\"{}\"", quote(o));
        }
        h
    }
}

/// Splits `k=v, k="quoted, value"` pairs; `None` when quoting is broken.
fn parse_auth_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_string();
        if i >= b.len() || b[i] != b'=' {
            return None;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            loop {
                match b.get(i)? {
                    b'\\' => {
                        v.push(*b.get(i + 1)?);
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        break;
                    }
                    c => {
                        v.push(*c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(v).ok()?
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            s[vs..i].trim().to_string()
        };
        if key.is_empty() {
            return None;
        }
        out.push((key, value));
    }
    Some(out)
}

/// Builds a `WWW-Authenticate` value.
pub fn challenge(realm: &str, nonce: &str, alg: Algorithm, stale: bool) -> String {
    let mut s = String::with_capacity(128);
    let _ = write!(
        s,
        "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
        alg.as_str()
    );
    if stale {
        s.push_str(", stale=true");
    }
    s
}

/// Constant-time comparison of two ASCII strings.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type HmacSha256 = hmac::Hmac<Sha256>;

/// HMAC-SHA256 under a 256-bit secret (nonces here, client API tokens).
/// The key is zero-padded to SHA-256's 64-byte block, which is what HMAC
/// does with a short key, so the fixed-size constructor needs no error path.
pub fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut m = <HmacSha256 as KeyInit>::new(&block.into());
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Mints and checks stateless nonces: `base64url(issued_secs || random || mac)`.
#[derive(Clone)]
pub struct NonceFactory {
    key: [u8; 32],
}

impl std::fmt::Debug for NonceFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceFactory { .. }")
    }
}

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Ours, within its lifetime.
    Fresh,
    /// Ours, but too old: challenge again with `stale=true`.
    Stale,
    /// Not ours (forged, corrupted or from another key).
    Invalid,
}

impl NonceFactory {
    /// A factory with a random key.
    pub fn new() -> Self {
        Self::with_key(rand::random())
    }

    /// A factory with a given key (tests, or replicas sharing one).
    pub fn with_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, body: &[u8]) -> [u8; 16] {
        let full = hmac_sha256(&self.key, body);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A new nonce issued at `now_secs`.
    pub fn mint(&self, now_secs: u64) -> String {
        let mut raw = [0u8; 36];
        raw[..8].copy_from_slice(&now_secs.to_be_bytes());
        raw[8..20].copy_from_slice(&rand::random::<[u8; 12]>());
        let mac = self.mac(&raw[..20]);
        raw[20..].copy_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce against its MAC and lifetime.
    pub fn check(&self, nonce: &str, now_secs: u64, lifetime_secs: u64) -> NonceState {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return NonceState::Invalid;
        };
        if raw.len() != 36 {
            return NonceState::Invalid;
        }
        let mac = self.mac(&raw[..20]);
        if mac
            .iter()
            .zip(&raw[20..])
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
        {
            return NonceState::Invalid;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let issued = u64::from_be_bytes(ts);
        if issued > now_secs + 5 {
            NonceState::Invalid
        } else if now_secs - issued.min(now_secs) > lifetime_secs {
            NonceState::Stale
        } else {
            NonceState::Fresh
        }
    }
}

impl Default for NonceFactory {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_key_hmac_is_the_plain_hmac() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&key).unwrap();
        m.update(b"what the nonce says");
        let want: [u8; 32] = m.finalize().into_bytes().into();
        assert_eq!(hmac_sha256(&key, b"what the nonce says"), want);
    }

    /// What the client side writes, the server side verifies (MD5 and SHA-256,
    /// with and without qop), and the RFC 2617 vector comes out of `authorize`.
    #[test]
    fn client_answers_verify_on_the_server_side() {
        let ch = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        let h = ch.authorize(
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle Of Life",
            1,
            "0a4f113b",
        );
        let c = Credentials::parse(&h).unwrap();
        assert_eq!(c.response, "6629fae49393a05397450978507c4ef1");
        assert_eq!(
            c.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        for (alg, qop) in [("MD5", ""), ("SHA-256", ", qop=\"auth\"")] {
            let ch = Challenge::parse(&format!(
                "Digest realm=\"r\", nonce=\"n\\\"x\", algorithm={alg}{qop}, stale=TRUE"
            ))
            .unwrap();
            assert!(ch.stale);
            let h = ch.authorize("REGISTER", "sip:carrier.example", "u\"q", "pw", 7, "c");
            let c = Credentials::parse(&h).unwrap();
            assert_eq!((c.username.as_str(), c.nonce.as_str()), ("u\"q", "n\"x"));
            let a = Algorithm::parse(alg).unwrap();
            let ha1 = a.ha1("u\"q", "r", "pw");
            assert_eq!(
                c.response,
                c.expected_response(a, &ha1, "REGISTER"),
                "{alg}"
            );
        }
        assert!(Challenge::parse("Basic realm=\"x\"").is_none());
        assert!(Challenge::parse("Digest realm=\"x\", nonce=\"y\", algorithm=MD5-sess").is_none());
    }

    /// RFC 2617 section 3.5 (HTTP, but the arithmetic is the same).
    #[test]
    fn rfc2617_vector() {
        let c = Credentials {
            username: "Mufasa".into(),
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            uri: "/dir/index.html".into(),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("0a4f113b".into()),
            ..Default::default()
        };
        let ha1 = Algorithm::Md5.ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(
            c.expected_response(Algorithm::Md5, &ha1, "GET"),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    /// RFC 7616 section 3.9.1, the SHA-256 example (RFC 8760 brings it to SIP).
    #[test]
    fn rfc7616_sha256_vector() {
        let c = Credentials {
            username: "Mufasa".into(),
            realm: "http-auth@example.org".into(),
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
            uri: "/dir/index.html".into(),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ".into()),
            ..Default::default()
        };
        let ha1 = Algorithm::Sha256.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(
            c.expected_response(Algorithm::Sha256, &ha1, "GET"),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let md5 = Algorithm::Md5.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(
            c.expected_response(Algorithm::Md5, &md5, "GET"),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn parses_sip_credentials() {
        let h = r#"Digest username="alice",realm="example.com", nonce="abc", uri="sip:example.com",
            response="0123ABCD", algorithm=SHA-256, cnonce="x,y", qop=auth, nc=0000010a"#;
        let c = Credentials::parse(h).unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.cnonce.as_deref(), Some("x,y"));
        assert_eq!(c.response, "0123abcd");
        assert_eq!(c.nonce_count(), Some(0x10a));
        assert_eq!(Algorithm::parse(&c.algorithm), Some(Algorithm::Sha256));
        assert_eq!(
            Credentials::parse("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            Err(CredentialsError::OtherScheme)
        );
        assert_eq!(
            Credentials::parse("Digest username=\"a\""),
            Err(CredentialsError::Missing("realm"))
        );
        assert!(Credentials::parse("Digest username=\"unterminated").is_err());
    }

    #[test]
    fn nonces_expire_and_resist_forgery() {
        let f = NonceFactory::with_key([7; 32]);
        let n = f.mint(1000);
        assert_eq!(f.check(&n, 1000, 300), NonceState::Fresh);
        assert_eq!(f.check(&n, 1300, 300), NonceState::Fresh);
        assert_eq!(f.check(&n, 1301, 300), NonceState::Stale);
        assert_eq!(
            NonceFactory::with_key([8; 32]).check(&n, 1000, 300),
            NonceState::Invalid
        );
        let mut forged = n.clone().into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            f.check(std::str::from_utf8(&forged).unwrap(), 1000, 300),
            NonceState::Invalid
        );
        assert_eq!(f.check("!!", 1000, 300), NonceState::Invalid);
    }
}
