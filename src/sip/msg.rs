//! SIP message model, parser and printer (RFC 3261 section 7 and 25).
//!
//! Owns the bytes-to-message boundary: a [`Message`] keeps every header in the
//! order and spelling it arrived in (names as written, values verbatim apart
//! from unfolding), so a message re-serializes faithfully, and typed views
//! (Via, name-addr, CSeq, URI) are parsed on demand from those values.
//!
//! Written here rather than taken from rsipstack's `sip` module: that model has
//! a closed method enum (an unknown method cannot be answered 405), parses the
//! digest `nc` into a `u8` (replay protection breaks past 255) and silently
//! drops header lines that are not UTF-8. Parsing never panics on any input
//! (fuzzed by `fuzz/fuzz_targets/sip_parse.rs`). This module must not know about
//! sockets, transactions or time.

use bytes::Bytes;
use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Largest message accepted, in bytes (a UDP datagram cannot be bigger anyway).
pub const MAX_MESSAGE: usize = 65_535;

/// A SIP method; extension methods are kept by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// INFO
    Info,
    /// PRACK
    Prack,
    /// UPDATE
    Update,
    /// SUBSCRIBE
    Subscribe,
    /// NOTIFY
    Notify,
    /// MESSAGE
    Message,
    /// REFER
    Refer,
    /// PUBLISH
    Publish,
    /// Any other token.
    Other(String),
}

impl Method {
    /// Parses a method token (case-sensitive, as RFC 3261 says).
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "INFO" => Self::Info,
            "PRACK" => Self::Prack,
            "UPDATE" => Self::Update,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "MESSAGE" => Self::Message,
            "REFER" => Self::Refer,
            "PUBLISH" => Self::Publish,
            t if !t.is_empty() && t.bytes().all(is_token_char) => Self::Other(t.to_string()),
            _ => return None,
        })
    }

    /// The method as it goes on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Info => "INFO",
            Self::Prack => "PRACK",
            Self::Update => "UPDATE",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Message => "MESSAGE",
            Self::Refer => "REFER",
            Self::Publish => "PUBLISH",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3261 `token` characters.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// First line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD Request-URI SIP/2.0`
    Request {
        /// Method.
        method: Method,
        /// Request-URI, verbatim.
        uri: String,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// Status code, 100..=699.
        code: u16,
        /// Reason phrase, verbatim (may be empty).
        reason: String,
    },
}

/// One header line: the name as written and the unfolded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name as it appeared (`v`, `Via`, `VIA` ...).
    pub name: String,
    /// Value with surrounding whitespace trimmed and folded lines joined by one space.
    pub value: String,
}

impl Header {
    /// Whether this header is `canonical` (compared case-insensitively, compact forms expanded).
    pub fn is(&self, canonical: &str) -> bool {
        canonical_name(&self.name).eq_ignore_ascii_case(canonical)
    }
}

/// Expands RFC 3261 / 3515 / 3903 / 4028 compact header names.
pub fn canonical_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'x' => "Session-Expires",
        b'u' => "Allow-Events",
        b'a' => "Accept-Contact",
        b'j' => "Reject-Contact",
        b'd' => "Request-Disposition",
        b'y' => "Identity",
        _ => name,
    }
}

/// A parsed SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Headers in arrival order.
    pub headers: Vec<Header>,
    /// Body (exactly Content-Length bytes when that header is present).
    pub body: Bytes,
}

/// Why a message was refused, with the status code that tells the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No blank line ends the header section (a datagram cut short).
    Incomplete,
    /// Structurally broken: reply 400 with this reason, if a response can be formed.
    BadRequest(&'static str),
    /// `SIP/x.y` other than 2.0: reply 505.
    VersionNotSupported,
    /// Request-URI scheme we do not serve: reply 416.
    UnsupportedUriScheme,
    /// Larger than [`MAX_MESSAGE`]: reply 513.
    TooLarge,
}

impl ParseError {
    /// Status code and reason phrase that go on the wire.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Self::Incomplete => (400, "Incomplete Message"),
            Self::BadRequest(r) => (400, r),
            Self::VersionNotSupported => (505, "Version Not Supported"),
            Self::UnsupportedUriScheme => (416, "Unsupported URI Scheme"),
            Self::TooLarge => (513, "Message Too Large"),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, reason) = self.status();
        write!(f, "{code} {reason}")
    }
}

impl std::error::Error for ParseError {}

/// Finds the end of the header section: index just past the blank line.
pub fn header_end(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == b'\n' {
            if data[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if data[i + 1] == b'\r' && data.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Splits a header section into logical lines, joining folded continuations
/// (a line is copied only when something was folded onto it).
fn logical_lines(head: &str) -> Vec<Cow<'_, str>> {
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with([' ', '\t'])
            && let Some(last) = out.last_mut()
        {
            let cont = line.trim();
            if !cont.is_empty() {
                let last = last.to_mut();
                let trimmed_len = last.trim_end().len();
                last.truncate(trimmed_len);
                last.push(' ');
                last.push_str(cont);
            }
            continue;
        }
        out.push(Cow::Borrowed(line));
    }
    out
}

impl Message {
    /// Parses one whole message (a datagram, or a frame cut from a stream).
    ///
    /// A body longer than Content-Length is cut to it; a shorter one is an error.
    pub fn parse(data: &[u8]) -> Result<Message, ParseError> {
        if data.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge);
        }
        // RFC 5626 keepalives and stray CRLFs before a message are skipped.
        let skip = data
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        let data = &data[skip..];
        let end = header_end(data).ok_or(ParseError::Incomplete)?;
        let head = std::str::from_utf8(&data[..end])
            .map_err(|_| ParseError::BadRequest("Header Is Not UTF-8"))?;
        let lines = logical_lines(head.trim_end_matches(['\r', '\n']));
        let (first, rest) = lines
            .split_first()
            .ok_or(ParseError::BadRequest("Empty Message"))?;
        let start = parse_start_line(first)?;
        let mut headers = Vec::with_capacity(rest.len());
        for line in rest {
            let (name, value) = line
                .split_once(':')
                .ok_or(ParseError::BadRequest("Header Without Colon"))?;
            let name = name.trim_end_matches([' ', '\t']);
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(ParseError::BadRequest("Malformed Header Name"));
            }
            headers.push(Header {
                name: name.to_string(),
                value: value.trim().to_string(),
            });
        }
        let available = &data[end..];
        let mut msg = Message {
            start,
            headers,
            body: Bytes::new(),
        };
        let body = match msg.header("Content-Length") {
            Some(v) => {
                let len: usize = v
                    .parse()
                    .map_err(|_| ParseError::BadRequest("Bad Content-Length"))?;
                if len > available.len() {
                    return Err(ParseError::BadRequest("Body Shorter Than Content-Length"));
                }
                &available[..len]
            }
            None => available,
        };
        msg.body = Bytes::copy_from_slice(body);
        Ok(msg)
    }

    /// Parses as much as an error response needs, from a message that
    /// [`Message::parse`] refused: any SIP version, no blank line needed, the
    /// body and Content-Length ignored, and a broken request line replaced by
    /// the method from CSeq. `None` when not even that is there.
    pub fn parse_lenient(data: &[u8]) -> Option<Message> {
        let data = &data[..data.len().min(MAX_MESSAGE)];
        let end = header_end(data).unwrap_or(data.len());
        let head = String::from_utf8_lossy(&data[..end]);
        let lines = logical_lines(head.trim_matches(['\r', '\n']));
        let (first, rest) = lines.split_first()?;
        let headers: Vec<Header> = rest
            .iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| Header {
                name: n.trim().to_string(),
                value: v.trim().to_string(),
            })
            .collect();
        let mut msg = Message {
            start: StartLine::Request {
                method: Method::Other(String::new()),
                uri: String::new(),
            },
            headers,
            body: Bytes::new(),
        };
        if first.starts_with("SIP/") {
            return None; // never answer a response
        }
        // The request line's method when it has one (an ACK stays an ACK), else CSeq's.
        let method = first
            .split(' ')
            .next()
            .and_then(Method::parse)
            .or_else(|| msg.cseq().map(|c| c.method))?;
        msg.start = StartLine::Request {
            method,
            uri: String::new(),
        };
        Some(msg)
    }

    /// Parses and checks what every request and response must carry
    /// (RFC 3261 section 8.1.1): Via, From, To, Call-ID and a CSeq matching the method.
    pub fn parse_checked(data: &[u8]) -> Result<Message, ParseError> {
        let msg = Self::parse(data)?;
        msg.check()?;
        Ok(msg)
    }

    /// The mandatory-header checks of [`Message::parse_checked`].
    pub fn check(&self) -> Result<(), ParseError> {
        use ParseError::BadRequest;
        for (name, reason) in [
            ("Via", "Missing Via"),
            ("From", "Missing From"),
            ("To", "Missing To"),
            ("Call-ID", "Missing Call-ID"),
            ("CSeq", "Missing CSeq"),
        ] {
            if self.header(name).is_none_or(str::is_empty) {
                return Err(BadRequest(reason));
            }
        }
        for (name, reason) in [
            ("From", "Duplicate From"),
            ("To", "Duplicate To"),
            ("Call-ID", "Duplicate Call-ID"),
            ("CSeq", "Duplicate CSeq"),
            ("Content-Length", "Duplicate Content-Length"),
            ("Max-Forwards", "Duplicate Max-Forwards"),
        ] {
            if self.headers_named(name).nth(1).is_some() {
                return Err(BadRequest(reason));
            }
        }
        let cseq = self.cseq().ok_or(BadRequest("Malformed CSeq"))?;
        if let StartLine::Request { method, uri } = &self.start {
            if &cseq.method != method {
                return Err(BadRequest("CSeq Method Does Not Match"));
            }
            match Uri::parse(uri) {
                Ok(u) if u.is_sip() || u.scheme.eq_ignore_ascii_case("tel") => {}
                Ok(_) => return Err(ParseError::UnsupportedUriScheme),
                Err(Malformed) => return Err(BadRequest("Malformed Request-URI")),
            }
            if let Some(mf) = self.header("Max-Forwards") {
                mf.parse::<u8>()
                    .map_err(|_| BadRequest("Bad Max-Forwards"))?;
            }
        }
        let via = self.top_via().ok_or(BadRequest("Malformed Via"))?;
        if via.host.is_empty() {
            return Err(BadRequest("Malformed Via"));
        }
        for name in ["From", "To"] {
            let v = self.header(name).unwrap_or_default();
            NameAddr::parse(v).map_err(|Malformed| BadRequest("Malformed From or To"))?;
        }
        Ok(())
    }

    /// The method of a request, or of the request a response answers (from CSeq).
    pub fn method(&self) -> Option<Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method.clone()),
            StartLine::Response { .. } => self.cseq().map(|c| c.method),
        }
    }

    /// Status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response.
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    /// First value of a header (compact forms match).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.is(name))
            .map(|h| h.value.as_str())
    }

    /// All header lines with this name, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.is(name))
            .map(|h| h.value.as_str())
    }

    /// All comma-separated values of a list header (Via, Contact, Allow ...), in order.
    pub fn header_list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers_named(name).flat_map(split_list)
    }

    /// Parsed CSeq.
    pub fn cseq(&self) -> Option<CSeq> {
        CSeq::parse(self.header("CSeq")?)
    }

    /// Parsed topmost Via.
    pub fn top_via(&self) -> Option<Via> {
        Via::parse(self.header_list("Via").next()?).ok()
    }

    /// Call-ID value.
    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or_default()
    }

    /// Appends a header.
    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push(Header {
            name: name.to_string(),
            value: value.into(),
        });
    }

    /// Serializes the message; Content-Length is kept as is when present and
    /// matching, else written from the body.
    pub fn to_bytes(&self) -> Bytes {
        let mut s = String::with_capacity(256 + self.headers.len() * 48);
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        let mut wrote_len = false;
        for h in &self.headers {
            if h.is("Content-Length") {
                if wrote_len {
                    continue;
                }
                wrote_len = true;
                let _ = write!(s, "{}: {}\r\n", h.name, self.body.len());
                continue;
            }
            let _ = write!(s, "{}: {}\r\n", h.name, h.value);
        }
        if !wrote_len {
            let _ = write!(s, "Content-Length: {}\r\n", self.body.len());
        }
        s.push_str("\r\n");
        let mut out = Vec::with_capacity(s.len() + self.body.len());
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    use ParseError::BadRequest;
    if let Some(rest) = line.strip_prefix("SIP/") {
        let (version, rest) = rest
            .split_once(' ')
            .ok_or(BadRequest("Malformed Status Line"))?;
        if version != "2.0" {
            return Err(ParseError::VersionNotSupported);
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code
            .parse()
            .map_err(|_| BadRequest("Malformed Status Code"))?;
        if !(100..=699).contains(&code) || rest.len() < 3 {
            return Err(BadRequest("Malformed Status Code"));
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces.
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest("Malformed Request Line"));
    };
    let method = Method::parse(method).ok_or(BadRequest("Malformed Method"))?;
    if uri.is_empty() {
        return Err(BadRequest("Malformed Request Line"));
    }
    match version.strip_prefix("SIP/") {
        Some("2.0") => {}
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            return Err(ParseError::VersionNotSupported);
        }
        _ => return Err(BadRequest("Malformed SIP Version")),
    }
    Ok(StartLine::Request {
        method,
        uri: uri.to_string(),
    })
}

/// Splits a list header value at commas that are outside quotes and `<...>`.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut quoted, mut angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

/// Whether a `;`-separated parameter list has an empty entry (`;;`, a trailing `;`).
fn has_empty_param(s: &str) -> bool {
    s.split(';').any(|p| p.trim().is_empty())
}

/// Splits `;name=value` parameters (values may be quoted) into pairs.
pub fn parse_params(s: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    let bytes = s.as_bytes();
    let mut push = |seg: &str| {
        let seg = seg.trim();
        if seg.is_empty() {
            return;
        }
        match seg.split_once('=') {
            Some((k, v)) => out.push((k.trim().to_string(), Some(v.trim().to_string()))),
            None => out.push((seg.to_string(), None)),
        }
    };
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            b';' if !quoted => {
                push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&s[start..]);
    out
}

fn param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// `CSeq: 1 REGISTER`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (RFC 3261: below 2^31).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses `number LWS method`.
    pub fn parse(s: &str) -> Option<CSeq> {
        let mut it = s.split_ascii_whitespace();
        let seq: u32 = it.next()?.parse().ok()?;
        let method = Method::parse(it.next()?)?;
        if it.next().is_some() || seq >= 1 << 31 {
            return None;
        }
        Some(CSeq { seq, method })
    }
}

/// A URI, header value or parameter that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed")
    }
}

impl std::error::Error for Malformed {}

/// A SIP or SIPS URI (other schemes keep everything after the colon in `host`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uri {
    /// `sip`, `sips`, `tel`, ...
    pub scheme: String,
    /// User part, still escaped.
    pub user: Option<String>,
    /// Host, IPv6 without brackets.
    pub host: String,
    /// Port, when given.
    pub port: Option<u16>,
    /// `;params`
    pub params: Vec<(String, Option<String>)>,
    /// `?headers`, verbatim.
    pub headers: Option<String>,
}

impl Uri {
    /// Parses a URI; `Err(Malformed)` when it is not one.
    pub fn parse(s: &str) -> Result<Uri, Malformed> {
        let s = s.trim();
        let (scheme, rest) = s.split_once(':').ok_or(Malformed)?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(Malformed);
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(Malformed);
            }
            return Ok(Uri {
                scheme,
                host: rest.to_string(),
                ..Uri::default()
            });
        }
        // The user part may hold ';', '?' and more (RFC 4475 3.1.1.2), but no
        // unescaped '@', which cannot appear after it either: split there first.
        let (user, after_user) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostport_params, headers) = match after_user.split_once('?') {
            Some((r, h)) => (r, Some(h.to_string())),
            None => (after_user, None),
        };
        let (hostport, params) = match hostport_params.split_once(';') {
            Some((h, p)) => (h, parse_params(p)),
            None => (hostport_params, Vec::new()),
        };
        let (host, port) = split_host_port(hostport)?;
        if let Some(u) = user
            && (u.is_empty() || u.contains(char::is_whitespace))
        {
            return Err(Malformed);
        }
        Ok(Uri {
            scheme,
            user: user.map(|u| u.split(':').next().unwrap_or(u).to_string()),
            host,
            port,
            params,
            headers,
        })
    }

    /// `sip` or `sips`.
    pub fn is_sip(&self) -> bool {
        self.scheme == "sip" || self.scheme == "sips"
    }

    /// A URI parameter (`transport`, `lr`, ...).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param(&self.params, name)
    }

    /// `sip:user@host` with the host lowercased: the address-of-record form (RFC 3261 10.3).
    pub fn aor(&self) -> String {
        match &self.user {
            Some(u) => format!("sip:{}@{}", unescape(u), self.host.to_ascii_lowercase()),
            None => format!("sip:{}", self.host.to_ascii_lowercase()),
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_sip() {
            return write!(f, "{}:{}", self.scheme, self.host);
        }
        write!(f, "{}:", self.scheme)?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// Escapes a URI user part (RFC 3261 25.1: unreserved and
/// user-unreserved characters stay, everything else becomes `%XX`).
pub fn escape_user(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
pub fn unescape(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `host[:port]` with IPv6 in brackets; `Err(Malformed)` when malformed.
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), Malformed> {
    let s = s.trim();
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, rest) = v6.split_once(']').ok_or(Malformed)?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(Malformed);
        }
        let port = match rest {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(Malformed)?),
        };
        (h, port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    if !valid_host {
        return Err(Malformed);
    }
    let port = match port {
        Some(p) => Some(p.trim().parse::<u16>().map_err(|_| Malformed)?),
        None => None,
    };
    Ok((host.to_string(), port))
}

/// `"Display" <uri>;params` or `uri;params` (From, To, Contact, Route ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name without quotes, if any.
    pub display: Option<String>,
    /// The URI text, verbatim.
    pub uri_text: String,
    /// Parsed URI.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `q`, `+sip.instance` ...).
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// Parses a name-addr or addr-spec with header parameters.
    pub fn parse(s: &str) -> Result<NameAddr, Malformed> {
        let s = s.trim();
        let (display, uri_text, rest) = if let Some(lt) = find_unquoted(s, b'<') {
            let gt = s[lt..].find('>').ok_or(Malformed)? + lt;
            let d = s[..lt].trim();
            let display = if d.is_empty() {
                None
            } else if let Some(q) = d.strip_prefix('"') {
                Some(q.strip_suffix('"').ok_or(Malformed)?.replace("\\\"", "\""))
            } else {
                Some(d.to_string())
            };
            let inner = &s[lt + 1..gt];
            if inner.trim() != inner {
                return Err(Malformed); // no LWS inside <> (RFC 4475 3.1.2.14)
            }
            (display, inner, &s[gt + 1..])
        } else {
            // addr-spec: URI parameters and header parameters are ambiguous;
            // RFC 3261 20.10 says they are header parameters, and a URI with
            // '?' or ',' must be in <> (RFC 4475 3.1.2.13).
            let (uri, rest) = match s.find(';') {
                Some(i) => (&s[..i], &s[i..]),
                None => (s, ""),
            };
            if uri.contains(['?', ',']) {
                return Err(Malformed);
            }
            (None, uri, rest)
        };
        let uri = Uri::parse(uri_text)?;
        let rest = rest.trim();
        let params = match rest.strip_prefix(';') {
            Some(p) if has_empty_param(p) => return Err(Malformed),
            Some(p) => parse_params(p),
            None if rest.is_empty() => Vec::new(),
            None => return Err(Malformed),
        };
        Ok(NameAddr {
            display,
            uri_text: uri_text.trim().to_string(),
            uri,
            params,
        })
    }

    /// A header parameter; `Some(None)` for a flag without value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param(&self.params, name)
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b if b == needle && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// One Via value: `SIP/2.0/UDP host:port;branch=...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, `WS`, `WSS` (uppercased).
    pub transport: String,
    /// sent-by host.
    pub host: String,
    /// sent-by port.
    pub port: Option<u16>,
    /// Parameters.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parses one Via value (whitespace around `/` is allowed, RFC 4475 3.1.1.1).
    pub fn parse(s: &str) -> Result<Via, Malformed> {
        let mut parts = s.splitn(3, '/');
        let (Some(proto), Some(ver), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Malformed);
        };
        if !proto.trim().eq_ignore_ascii_case("SIP") || ver.trim() != "2.0" {
            return Err(Malformed);
        }
        let rest = rest.trim_start();
        let split = rest.find(char::is_whitespace).ok_or(Malformed)?;
        let transport = rest[..split].to_ascii_uppercase();
        let rest = rest[split..].trim_start();
        let (sent_by, params) = match rest.split_once(';') {
            Some((_, p)) if has_empty_param(p) => return Err(Malformed),
            Some((h, p)) => (h, parse_params(p)),
            None => (rest, Vec::new()),
        };
        // RFC 3261 allows a comment after sent-by; ignore it.
        let sent_by = sent_by.split('(').next().unwrap_or_default().trim();
        let (host, port) = split_host_port(sent_by)?;
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// `branch`, when present.
    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch").flatten()
    }

    /// Whether `rport` was asked for (RFC 3581).
    pub fn has_rport(&self) -> bool {
        param(&self.params, "rport").is_some()
    }
}

/// Builds a response to `req` (RFC 3261 8.2.6): Via (with `received` and
/// `rport` filled from `source`), From, To (tagged with `to_tag` when it has
/// none and the code is above 100), Call-ID and CSeq copied.
pub fn response_to(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    source: Option<std::net::SocketAddr>,
) -> Message {
    let mut headers = Vec::with_capacity(8);
    let mut first_via = true;
    for h in &req.headers {
        if h.is("Via") {
            let value = if first_via {
                first_via = false;
                source.map_or_else(|| h.value.clone(), |src| stamp_via(&h.value, src))
            } else {
                h.value.clone()
            };
            headers.push(Header {
                name: "Via".into(),
                value,
            });
        }
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = req.header(name) {
            let mut value = v.to_string();
            if name == "To"
                && code > 100
                && let (Some(tag), Ok(na)) = (to_tag, NameAddr::parse(v))
                && na.tag().is_none()
            {
                value.push_str(";tag=");
                value.push_str(tag);
            }
            headers.push(Header {
                name: name.into(),
                value,
            });
        }
    }
    Message {
        start: StartLine::Response {
            code,
            reason: reason.to_string(),
        },
        headers,
        body: Bytes::new(),
    }
}

/// Adds `received` (when the source differs from sent-by) and fills `rport` on
/// the first value of a Via header line (RFC 3261 18.2.1, RFC 3581).
fn stamp_via(line: &str, src: std::net::SocketAddr) -> String {
    let mut values = split_list(line);
    let Some(top) = values.next() else {
        return line.to_string();
    };
    let rest: Vec<&str> = values.collect();
    let Ok(via) = Via::parse(top) else {
        return line.to_string();
    };
    let mut out = String::with_capacity(top.len() + 40);
    // Rebuild the top value without received/rport, then append ours.
    let (head, params) = top.split_once(';').unwrap_or((top, ""));
    out.push_str(head.trim_end());
    for p in params.split(';') {
        let name = p.split('=').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        if !p.trim().is_empty() {
            out.push(';');
            out.push_str(p.trim());
        }
    }
    let ip = src.ip().to_string();
    if via.host != ip || via.has_rport() {
        let _ = write!(out, ";received={ip}");
    }
    if via.has_rport() {
        let _ = write!(out, ";rport={}", src.port());
    }
    for r in rest {
        out.push_str(", ");
        out.push_str(r);
    }
    out
}

/// A fresh random token for tags, branches and Call-IDs.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str = "REGISTER sip:example.com SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1;rport\r\n\
        Max-Forwards: 70\r\n\
        f: \"Alice A\" <sip:alice@example.com>;tag=abc\r\n\
        t: <sip:alice@example.com>\r\n\
        i: 1@10.0.0.1\r\n\
        CSeq: 2 REGISTER\r\n\
        m: <sip:alice@10.0.0.1:5062>;expires=60, <sip:alice@[2001:db8::1]:5070;transport=tcp>;q=0.5\r\n\
        Subject: folded\r\n  over two lines\r\n\
        l: 0\r\n\r\n";

    #[test]
    fn parses_compact_folded_and_lists() {
        let m = Message::parse_checked(REG.as_bytes()).unwrap();
        assert_eq!(m.method(), Some(Method::Register));
        assert_eq!(m.call_id(), "1@10.0.0.1");
        assert_eq!(m.header("Subject"), Some("folded over two lines"));
        let contacts: Vec<_> = m.header_list("Contact").collect();
        assert_eq!(contacts.len(), 2);
        let c = NameAddr::parse(contacts[1]).unwrap();
        assert_eq!(c.uri.host, "2001:db8::1");
        assert_eq!(c.uri.port, Some(5070));
        assert_eq!(c.param("q"), Some(Some("0.5")));
        let from = NameAddr::parse(m.header("From").unwrap()).unwrap();
        assert_eq!(from.display.as_deref(), Some("Alice A"));
        assert_eq!(from.tag(), Some("abc"));
        let via = m.top_via().unwrap();
        assert_eq!((via.transport.as_str(), via.port), ("UDP", Some(5062)));
        assert!(via.has_rport());
    }

    #[test]
    fn round_trip_is_faithful() {
        let m = Message::parse(REG.as_bytes()).unwrap();
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn response_stamps_via_and_tags_to() {
        let m = Message::parse(REG.as_bytes()).unwrap();
        let src: std::net::SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let r = response_to(&m, 200, "OK", Some("t1"), Some(src));
        let via = r.header("Via").unwrap();
        assert_eq!(
            via,
            "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1;received=192.0.2.7;rport=4000"
        );
        assert_eq!(r.header("To"), Some("<sip:alice@example.com>;tag=t1"));
        let bytes = r.to_bytes();
        assert!(bytes.starts_with(b"SIP/2.0 200 OK\r\n"));
        assert!(bytes.ends_with(b"Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn errors_map_to_status_codes() {
        let bad = |s: &str| Message::parse_checked(s.as_bytes()).unwrap_err().status().0;
        assert_eq!(
            bad("INVITE sip:a@b SIP/7.0\r\nVia: SIP/2.0/UDP h\r\n\r\n"),
            505
        );
        assert_eq!(bad("garbage\r\n\r\n"), 400);
        let no_cseq = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\
            From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\n\r\n";
        assert_eq!(bad(no_cseq), 400);
        let scheme = no_cseq
            .replace("sip:a@b SIP", "foo:a@b SIP")
            .replace("Call-ID: c\r\n", "Call-ID: c\r\nCSeq: 1 OPTIONS\r\n");
        assert_eq!(bad(&scheme), 416);
    }

    #[test]
    fn unknown_methods_parse() {
        let m = Message::parse(b"FOO sip:a@b SIP/2.0\r\n\r\n").unwrap();
        assert_eq!(m.method(), Some(Method::Other("FOO".into())));
    }

    #[test]
    fn unescape_handles_edges() {
        assert_eq!(unescape("a%20b"), "a b");
        assert_eq!(unescape("a%2"), "a%2");
        assert_eq!(unescape("%"), "%");
    }
}
