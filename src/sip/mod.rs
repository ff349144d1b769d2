//! SIP signalling: messages, digest auth, transactions, transports.
//!
//! Dependencies point down: [`msg`] <- [`transport`] and [`transaction`] <- the
//! gateway core. Everything here except [`transport`] is sans-IO: time comes in
//! as a parameter and bytes go out through `poll_output`. The transport module
//! is the only place that owns sockets. This module must not know about
//! registrations, routing or calls.

/// The methods a dialog of ours takes (the Allow of our INVITEs, 200s and
/// 405s), as a literal so that `concat!` can extend it (the gateway adds
/// REGISTER).
#[macro_export]
macro_rules! allow_in_dialog {
    () => {
        "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
    };
}

/// The methods a dialog of ours takes, as a constant.
pub const ALLOW_IN_DIALOG: &str = allow_in_dialog!();

/// The option tags we support (the `Supported` of our INVITEs, 2xx and
/// in-dialog requests; a request that `Require`s anything else gets 420):
/// reliable provisional responses (RFC 3262) and session timers (RFC 4028).
pub const SUPPORTED: &str = "100rel, timer";

/// Whether a message names `tag` in its `Require`.
pub fn requires(msg: &msg::Message, tag: &str) -> bool {
    msg.header_list("Require")
        .any(|t| t.eq_ignore_ascii_case(tag))
}

/// A request's Max-Forwards (checked to fit a `u8` when parsed); 70, the
/// usual start, when it has none.
pub fn max_forwards(msg: &msg::Message) -> u8 {
    msg.header("Max-Forwards")
        .and_then(|v| v.parse().ok())
        .unwrap_or(70)
}

/// Whether a message names `tag` in its `Supported` or `Require`.
pub fn supports(msg: &msg::Message, tag: &str) -> bool {
    requires(msg, tag)
        || msg
            .header_list("Supported")
            .any(|t| t.eq_ignore_ascii_case(tag))
}

/// The option tags of a request's `Require` we do not support (for 420's
/// `Unsupported`), comma-separated; `None` when there are none.
pub fn unsupported(msg: &msg::Message) -> Option<String> {
    let missing: Vec<&str> = msg
        .header_list("Require")
        .filter(|t| !msg::split_list(SUPPORTED).any(|s| s.eq_ignore_ascii_case(t)))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

pub mod dialog;
pub mod digest;
pub mod framing;
pub mod msg;
pub mod timer;
pub mod transaction;
pub mod transport;
pub mod uac;

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP
    Udp,
    /// TCP
    Tcp,
    /// TLS over TCP
    Tls,
    /// WebSocket (RFC 7118)
    Ws,
    /// Secure WebSocket
    Wss,
}

impl Transport {
    /// Name as in a Via header (`UDP`, `TCP`, `TLS`, `WS`, `WSS`).
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }

    /// Lowercase name for `transport=` URI parameters and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    /// The `;transport=` URI parameter naming this transport (empty for
    /// UDP, the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Self::Udp => "",
            Self::Tcp => ";transport=tcp",
            Self::Tls => ";transport=tls",
            Self::Ws => ";transport=ws",
            Self::Wss => ";transport=wss",
        }
    }

    /// Parses [`Transport::as_str`] or [`Transport::via_name`] (any case).
    pub fn parse(s: &str) -> Option<Transport> {
        Some(match s.to_ascii_lowercase().as_str() {
            "udp" => Self::Udp,
            "tcp" => Self::Tcp,
            "tls" => Self::Tls,
            "ws" => Self::Ws,
            "wss" => Self::Wss,
            _ => return None,
        })
    }

    /// Stream transports keep a connection; UDP does not.
    pub fn is_reliable(self) -> bool {
        self != Self::Udp
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one accepted or opened stream connection for its lifetime.
pub type ConnId = u64;

/// Where a message came from or goes to: the transport, both addresses and,
/// for stream transports, the connection that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Transport protocol.
    pub transport: Transport,
    /// Our address (the listener or socket).
    pub local: SocketAddr,
    /// The peer's address as seen on the wire.
    pub remote: SocketAddr,
    /// The connection, for stream transports.
    pub conn: Option<ConnId>,
}
