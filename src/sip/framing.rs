//! Cuts SIP messages out of a byte stream (TCP, TLS) by Content-Length
//! (RFC 3261 18.3), and recognizes RFC 5626 CRLF keepalives. Sans-IO: bytes in,
//! frames out. It must not parse beyond what framing needs.

use super::msg::{MAX_MESSAGE, header_end};
use bytes::{Buf, Bytes, BytesMut};

/// One thing found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message (headers and body).
    Message(Bytes),
    /// A double-CRLF keepalive ping: answer with a single CRLF pong.
    Ping,
}

/// The stream cannot be framed any more; close the connection.
#[derive(Debug, PartialEq, Eq)]
pub struct FramingError(pub &'static str);

/// Accumulates stream bytes and yields frames.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
}

impl Framer {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // Leading CRLFs: a "\r\n\r\n" ping, or stray line ends to skip.
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.advance(4);
            return Ok(Some(Frame::Ping));
        }
        let stray = self
            .buf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        if stray == self.buf.len() && stray < 4 {
            return Ok(None);
        }
        self.buf.advance(stray);
        let Some(end) = header_end(&self.buf) else {
            if self.buf.len() > MAX_MESSAGE {
                return Err(FramingError("header section too large"));
            }
            return Ok(None);
        };
        let len = content_length(&self.buf[..end]).ok_or(FramingError("bad Content-Length"))?;
        if end + len > MAX_MESSAGE {
            return Err(FramingError("message too large"));
        }
        if self.buf.len() < end + len {
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.buf.split_to(end + len).freeze())))
    }
}

/// Content-Length from a header section; absent means 0 (a stream peer must
/// send it, but a bodiless message without it is still unambiguous).
fn content_length(head: &[u8]) -> Option<usize> {
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = std::str::from_utf8(line[colon + 1..].trim_ascii()).ok()?;
            return v.parse().ok();
        }
    }
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_coalesced_messages() {
        let m1 = b"OPTIONS sip:a SIP/2.0\r\nl: 4\r\n\r\nbody";
        let m2 = b"OPTIONS sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let mut all = Vec::new();
        all.extend_from_slice(b"\r\n\r\n");
        all.extend_from_slice(m1);
        all.extend_from_slice(m2);
        let mut f = Framer::default();
        let mut frames = Vec::new();
        // Feed one byte at a time: the worst split.
        for b in &all {
            f.push(&[*b]);
            while let Some(fr) = f.next_frame().unwrap() {
                frames.push(fr);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Ping,
                Frame::Message(Bytes::from_static(m1)),
                Frame::Message(Bytes::from_static(m2))
            ]
        );
    }

    #[test]
    fn rejects_garbage_lengths() {
        let mut f = Framer::default();
        f.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n");
        assert!(f.next_frame().is_err());
        let mut f = Framer::default();
        f.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 999999\r\n\r\n");
        assert!(f.next_frame().is_err());
    }
}
