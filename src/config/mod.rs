//! Configuration: `causeway.toml` (or the embedded defaults) into a validated
//! [`Config`].
//!
//! Owns the file format, its defaults and every check on it. Unknown keys and
//! bad values are errors that carry file, line, column and a one-line reason,
//! so an operator can fix the file without reading code. It must not open
//! sockets or files other than the one it is asked to read.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The whole gateway configuration, every field defaulted.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SIP listeners, domain and identity.
    pub sip: SipConfig,
    /// Registrar limits and keepalives.
    pub registrar: RegistrarConfig,
    /// RTP port range.
    pub media: MediaConfig,
    /// Where state lives on disk.
    pub storage: StorageConfig,
    /// The HTTP server (admin API now; client API and web client later).
    pub http: HttpConfig,
    /// Admin API access.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// Local SIP users allowed to register.
    pub users: Vec<Spanned<UserConfig>>,
    /// Where the dialplan lives and whether it is watched.
    pub dialplan: DialplanConfig,
    /// The external policy server.
    pub policy: PolicyConfig,
    /// SIP trunks dialplan rules can send calls to.
    pub trunks: Vec<Spanned<TrunkConfig>>,
    /// `[webrtc]`
    pub webrtc: WebrtcConfig,
}

/// `[dialplan]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialplanConfig {
    /// A dialplan file, or a directory whose `*.toml` files (except
    /// `*.cases.toml`) together form the plan. None: the embedded default plan.
    pub path: Option<PathBuf>,
    /// Reload the plan when its files change.
    pub watch: bool,
}

impl Default for DialplanConfig {
    fn default() -> Self {
        Self {
            path: None,
            watch: true,
        }
    }
}

/// `[policy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Base URL; rules with target `policy` ask `{url}/policy/v1/service/configuration`.
    pub url: Option<Spanned<String>>,
    /// How long to wait for an answer, milliseconds.
    pub timeout_ms: u64,
    /// How long an answer may be reused for the same call parameters, seconds (0: never).
    pub cache_ttl: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout_ms: 2000,
            cache_ttl: 0,
        }
    }
}

/// `[[trunks]]`: a SIP peer (carrier, PBX) calls can be sent to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name used by dialplan targets.
    pub name: String,
    /// Where to send calls: `sip:host[:port][;transport=tcp]`.
    pub uri: String,
    /// Digest username, when the trunk challenges.
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<String>,
    /// Register to the trunk's host as `username` (needs the credentials).
    #[serde(default)]
    pub register: bool,
    /// Expiry to ask for when registering, seconds.
    #[serde(default = "default_trunk_expires")]
    pub expires: u32,
}

fn default_trunk_expires() -> u32 {
    3600
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Home domain, also the digest realm.
    pub domain: String,
    /// UDP listen addresses.
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// TLS listen addresses (need `tls_cert` and `tls_key`).
    pub tls: Vec<SocketAddr>,
    /// WebSocket (RFC 7118) listen addresses.
    pub ws: Vec<SocketAddr>,
    /// Secure WebSocket listen addresses (need `tls_cert` and `tls_key`).
    pub wss: Vec<SocketAddr>,
    /// PEM certificate chain for TLS and WSS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS and WSS.
    pub tls_key: Option<PathBuf>,
    /// Address to advertise in Via, Contact and SDP instead of the bound one.
    pub public_address: Option<IpAddr>,
    /// Server and User-Agent header value.
    pub user_agent: String,
    /// Session timer (RFC 4028) we ask callees for and grant callers at
    /// most, in seconds; 0 asks for none (callers that ask still get one).
    pub session_expires: u32,
    /// The shortest session timer we accept (`Min-SE`), at least 90.
    pub min_se: u32,
}

impl SipConfig {
    /// The session-timer settings.
    pub fn session_timers(&self) -> crate::sip::timer::SessionTimers {
        crate::sip::timer::SessionTimers {
            expires: self.session_expires,
            min_se: self.min_se,
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        Self {
            domain: "causeway.local".into(),
            udp: vec![any(5060)],
            tcp: vec![any(5060)],
            tls: vec![],
            ws: vec![],
            wss: vec![],
            tls_cert: None,
            tls_key: None,
            public_address: None,
            user_agent: concat!("Causeway/", env!("CARGO_PKG_VERSION")).into(),
            session_expires: 1800,
            min_se: crate::sip::timer::MIN_SE,
        }
    }
}

/// `[registrar]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    /// Shortest registration accepted, seconds (shorter gets 423).
    pub min_expires: u32,
    /// Longest registration granted, seconds (longer is shortened).
    pub max_expires: u32,
    /// Granted when the REGISTER names none.
    pub default_expires: u32,
    /// Contacts kept per address of record; the oldest go first.
    pub max_contacts: usize,
    /// How long a nonce is accepted, seconds; after that the challenge says stale=true.
    pub nonce_lifetime: u32,
    /// Failed authentications tolerated per source address or user within
    /// `failure_window` before requests are refused with 403.
    pub max_failures: u32,
    /// Window for counting failures, seconds.
    pub failure_window: u32,
    /// How long a source or user stays blocked once over the limit, seconds.
    pub block_duration: u32,
    /// Send OPTIONS to each registered contact this often, seconds (0: never).
    pub keepalive_interval: u32,
    /// Digest algorithms offered, one challenge each, in this order: `MD5`,
    /// `SHA-256`. MD5 alone by default: some deployed stacks (baresip 1.0's
    /// libre among them) fail the whole exchange when any challenge names an
    /// algorithm they lack.
    pub digest_algorithms: Spanned<Vec<String>>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
            nonce_lifetime: 300,
            max_failures: 5,
            failure_window: 60,
            block_duration: 300,
            keepalive_interval: 0,
            digest_algorithms: Spanned::new(0..0, vec!["MD5".into()]),
        }
    }
}

/// `[media]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// First RTP port (even).
    pub port_min: Spanned<u16>,
    /// Last RTP port.
    pub port_max: Spanned<u16>,
    /// Seconds a SIP side (or an echo caller) may send no RTP and no RTCP
    /// before its call is hung up as gone; 0: never.
    pub timeout: u32,
    /// The same, while a side has the call on hold (a held phone may
    /// rightly send nothing, RTCP included); 0: never.
    pub hold_timeout: u32,
    /// Complexity (0 cheapest to 10) of the Opus encoders of transcoded
    /// calls: the operator's trade of CPU for quality. The default, 1,
    /// scores as well as 5 on G.711 speech (P.862 narrowband, see
    /// `bench/RESULTS.md`) at less than half the encoder's cost; wideband
    /// (G.722 <-> Opus) calls use it too, unmeasured.
    pub opus_complexity: Spanned<u8>,
}

impl MediaConfig {
    /// The media timeout (`timeout`, a year when 0).
    pub fn silence(&self) -> std::time::Duration {
        seconds_or_never(self.timeout)
    }

    /// The media timeout on hold (`hold_timeout`, a year when 0).
    pub fn held_silence(&self) -> std::time::Duration {
        seconds_or_never(self.hold_timeout)
    }
}

/// `secs` seconds; a year (never, for a call) when 0.
fn seconds_or_never(secs: u32) -> std::time::Duration {
    let secs = if secs == 0 { 365 * 86_400 } else { secs };
    std::time::Duration::from_secs(u64::from(secs))
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            port_min: Spanned::new(0..0, 20000),
            port_max: Spanned::new(0..0, 30000),
            timeout: 60,
            hold_timeout: 0,
            opus_complexity: Spanned::new(0..0, 1),
        }
    }
}

/// `[webrtc]`: the browser side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// The one UDP socket every WebRTC peer shares.
    pub bind: SocketAddr,
    /// Addresses advertised to browsers as ICE host candidates, each with
    /// the port of `bind`. Empty: the bound address if it is specific, else
    /// `sip.public_address` if set, else the host's primary address and
    /// 127.0.0.1.
    pub addresses: Vec<IpAddr>,
    /// STUN and TURN servers handed to clients with their token (and as
    /// WHIP `Link` headers).
    pub ice_servers: Vec<IceServerConfig>,
    /// Lifetime of a client API token, seconds; clients refresh before it ends.
    pub token_ttl: u32,
    /// Bearer token WHIP clients must present. None: WHIP needs no token.
    pub whip_token: Option<String>,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 10000)),
            addresses: Vec::new(),
            ice_servers: Vec::new(),
            token_ttl: 120,
            whip_token: None,
        }
    }
}

/// One `[[webrtc.ice_servers]]` entry, as in `RTCIceServer`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:host:port` or `turn:host:port?transport=udp` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory for the embedded database and the generated admin token.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP server.
    pub bind: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for `/api/admin`; generated and stored on first start if unset.
    pub token: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter: `info`, `debug`, `causeway::sip=trace,info`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// `[[users]]`: a SIP account. Exactly one of `password`, `ha1` or `ha1_sha256`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User part of the address of record and digest username.
    pub name: String,
    /// Clear-text password.
    pub password: Option<String>,
    /// MD5(name:realm:password) in hex, for MD5 digest only.
    pub ha1: Option<String>,
    /// SHA-256(name:realm:password) in hex, for SHA-256 digest only.
    pub ha1_sha256: Option<String>,
}

/// A configuration error, located in the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<embedded defaults>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: usize,
    /// 1-based column, when known.
    pub column: usize,
    /// One-line reason.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&src, &file)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(src: &str, file: &str) -> Result<Config, ConfigError> {
        let at = |offset: usize, message: String| {
            let (line, column) = line_col(src, offset);
            ConfigError {
                file: file.to_string(),
                line,
                column,
                message,
            }
        };
        let cfg: Config = toml::from_str(src).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            at(e.span().map_or(0, |s| s.start), message)
        })?;
        cfg.validate().map_err(|(offset, msg)| at(offset, msg))?;
        Ok(cfg)
    }

    /// Checks what serde cannot: ranges, pairs, duplicates.
    fn validate(&self) -> Result<(), (usize, String)> {
        let (min, max) = (&self.media.port_min, &self.media.port_max);
        if min.get_ref() >= max.get_ref() {
            return Err((
                max.span().start,
                format!(
                    "media.port_max ({}) must be above port_min ({})",
                    max.get_ref(),
                    min.get_ref()
                ),
            ));
        }
        let complexity = &self.media.opus_complexity;
        if *complexity.get_ref() > 10 {
            return Err((
                complexity.span().start,
                format!(
                    "media.opus_complexity ({}) must be 0 to 10",
                    complexity.get_ref()
                ),
            ));
        }
        if self
            .webrtc
            .whip_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err((
                0,
                "webrtc.whip_token must not be empty (leave it out for open WHIP)".into(),
            ));
        }
        if self.webrtc.token_ttl == 0 {
            return Err((0, "webrtc.token_ttl must be at least 1 second".into()));
        }
        if self.sip.domain.trim().is_empty() {
            return Err((0, "sip.domain must not be empty".into()));
        }
        let (se, min_se) = (self.sip.session_expires, self.sip.min_se);
        if min_se < crate::sip::timer::MIN_SE || (se != 0 && se < min_se) {
            return Err((
                0,
                format!(
                    "sip.min_se must be at least 90 (RFC 4028) and sip.session_expires \
                     0 or at least min_se (got {se} and {min_se})"
                ),
            ));
        }
        let r = &self.registrar;
        if r.min_expires > r.max_expires {
            return Err((
                0,
                "registrar.min_expires must not exceed max_expires".into(),
            ));
        }
        let algs = &r.digest_algorithms;
        if algs.get_ref().is_empty() {
            return Err((
                algs.span().start,
                "registrar.digest_algorithms must not be empty".into(),
            ));
        }
        for a in algs.get_ref() {
            if crate::sip::digest::Algorithm::parse(a).is_none() {
                return Err((
                    algs.span().start,
                    format!("unknown digest algorithm {a:?} (MD5 or SHA-256)"),
                ));
            }
        }
        let needs_tls = !self.sip.tls.is_empty() || !self.sip.wss.is_empty();
        if needs_tls && (self.sip.tls_cert.is_none() || self.sip.tls_key.is_none()) {
            return Err((
                0,
                "sip.tls and sip.wss listeners need sip.tls_cert and sip.tls_key".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            let span = u.span().start;
            let user = u.get_ref();
            if user.name.is_empty()
                || user
                    .name
                    .contains(|c: char| c.is_whitespace() || c == '@' || c == ':')
            {
                return Err((
                    span,
                    format!("user name {:?} is not a valid SIP user part", user.name),
                ));
            }
            let secrets = [&user.password, &user.ha1, &user.ha1_sha256]
                .iter()
                .filter(|s| s.is_some())
                .count();
            if secrets == 0 {
                return Err((
                    span,
                    format!("user {:?} needs password, ha1 or ha1_sha256", user.name),
                ));
            }
            if user.password.is_some() && secrets > 1 {
                return Err((
                    span,
                    format!("user {:?}: give password or hashes, not both", user.name),
                ));
            }
            for (key, hash, len) in [("ha1", &user.ha1, 32), ("ha1_sha256", &user.ha1_sha256, 64)] {
                if let Some(h) = hash
                    && (h.len() != len || !h.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err((
                        span,
                        format!("user {:?}: {key} must be {len} hex digits", user.name),
                    ));
                }
            }
            if !seen.insert(user.name.clone()) {
                return Err((span, format!("user {:?} is defined twice", user.name)));
            }
        }
        if let Some(url) = &self.policy.url {
            let u = url.get_ref();
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err((
                    url.span().start,
                    format!("policy.url {u:?} must start with http:// or https://"),
                ));
            }
        }
        if self.policy.timeout_ms == 0 {
            return Err((0, "policy.timeout_ms must be above 0".into()));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.trunks {
            let span = t.span().start;
            let trunk = t.get_ref();
            if trunk.name.trim().is_empty() || !names.insert(trunk.name.clone()) {
                return Err((
                    span,
                    format!("trunk name {:?} is empty or defined twice", trunk.name),
                ));
            }
            if !crate::sip::msg::Uri::parse(&trunk.uri).is_ok_and(|u| u.is_sip()) {
                return Err((
                    span,
                    format!(
                        "trunk {:?}: uri {:?} is not a SIP URI",
                        trunk.name, trunk.uri
                    ),
                ));
            }
            if trunk.register && trunk.username.is_none() {
                return Err((
                    span,
                    format!(
                        "trunk {:?}: register needs username and password",
                        trunk.name
                    ),
                ));
            }
            if trunk.expires == 0 {
                return Err((
                    span,
                    format!("trunk {:?}: expires must be above 0", trunk.name),
                ));
            }
            if trunk.username.is_some() != trunk.password.is_some() {
                return Err((
                    span,
                    format!(
                        "trunk {:?}: give both username and password, or neither",
                        trunk.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_with_no_file() {
        let c = Config::parse("", "<empty>").unwrap();
        assert_eq!(c.sip.udp[0].port(), 5060);
        assert_eq!(c.http.bind.to_string(), "127.0.0.1:8080");
        assert!(c.users.is_empty());
    }

    #[test]
    fn the_documented_shape_is_accepted() {
        let src = r#"
[sip]
domain = "example.com"        # realm and home domain
[storage]
data_dir = "/var/lib/causeway"
[admin]
token = "abc"
[[users]]
name = "alice"
password = "secret"
"#;
        let c = Config::parse(src, "x.toml").unwrap();
        assert_eq!(c.sip.domain, "example.com");
        assert_eq!(c.users[0].get_ref().name, "alice");
        assert_eq!(c.admin.token.as_deref(), Some("abc"));
    }

    #[test]
    fn unknown_key_is_located() {
        let e = Config::parse("[sip]\ndomain = \"a\"\nfoo = 1\n", "c.toml").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.message.contains("unknown field `foo`"), "{e}");
        assert!(e.to_string().starts_with("c.toml:3:1: "), "{e}");
    }

    #[test]
    fn bad_address_is_located() {
        let e = Config::parse("[http]\nbind = \"nowhere\"\n", "c.toml").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn semantic_errors_are_located() {
        let e =
            Config::parse("[media]\nport_min = 30000\nport_max = 20000\n", "c.toml").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = Config::parse("[media]\n\nopus_complexity = 11\n", "c.toml").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("0 to 10"), "{e}");
        let e = Config::parse("\n[[users]]\nname = \"bob\"\n", "c.toml").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("needs password"), "{e}");
        let e = Config::parse(
            "[[users]]\nname='a'\npassword='x'\n[[users]]\nname='a'\npassword='y'\n",
            "c",
        )
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("causeway.example.toml");
        Config::load(&path).unwrap();
    }
}
