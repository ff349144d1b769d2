//! SIP transports on tokio: UDP sockets, TCP and TLS listeners, WebSocket and
//! secure WebSocket listeners (RFC 7118, subprotocol `sip`), and the table of
//! live stream connections.
//!
//! Owns every SIP socket. Datagrams are read by the task that drives the
//! gateway itself ([`Transports::udp_readable`], [`Transports::read_udp`]):
//! a reader task in between cost a thread hop, a channel and a copy per
//! message. Stream listeners and connections run on the worker runtime,
//! a reader task each, whose messages go to one channel as
//! [`TransportEvent`]s tagged with their [`Flow`]. Outbound bytes are
//! handed to [`Transports::send`], which never blocks: UDP is written at
//! once, stream connections have a writer task each. A request toward a
//! flow whose connection is gone opens a new TCP connection to the same
//! address. This module must not parse SIP beyond framing. [`bind_udp`]
//! (large socket buffers) also binds the WebRTC socket.

use super::framing::{Frame, Framer};
use super::{ConnId, Flow, Transport};
use crate::config::SipConfig;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the transports report.
#[derive(Debug)]
pub enum TransportEvent {
    /// One whole SIP message.
    Message {
        /// Where it came from.
        flow: Flow,
        /// Its bytes.
        data: Bytes,
    },
    /// A stream connection closed.
    Closed(ConnId),
}

/// A listener that could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// bind() failed.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// Which transport.
        transport: Transport,
        /// Which address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("TLS setup: {0}")]
    Tls(String),
}

type ConnTable = Arc<Mutex<Connections>>;

#[derive(Default)]
struct Connections {
    by_id: HashMap<ConnId, (Flow, mpsc::UnboundedSender<Bytes>)>,
    by_remote: HashMap<(Transport, SocketAddr), ConnId>,
}

/// All SIP listeners and connections.
pub struct Transports {
    udp: Vec<(SocketAddr, UdpSocket)>,
    /// Set once listening stops: datagrams are no longer read.
    udp_closed: bool,
    /// The UDP socket [`Transports::udp_readable`] looks at first, in
    /// turn, so that a busy socket cannot starve the others.
    udp_next: usize,
    conns: ConnTable,
    next_conn: Arc<AtomicU64>,
    events: mpsc::Sender<TransportEvent>,
    listeners: Vec<JoinHandle<()>>,
    /// Where stream listeners and connections run.
    workers: tokio::runtime::Handle,
    /// What is listening, with the real bound addresses (port 0 resolved).
    pub bound: Vec<(Transport, SocketAddr)>,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("bound", &self.bound)
            .finish()
    }
}

fn lock(t: &ConnTable) -> std::sync::MutexGuard<'_, Connections> {
    // A panic while holding this lock cannot leave the maps inconsistent
    // (each update is a single insert or remove), so poisoning is ignored.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl Transports {
    /// Binds every configured listener and starts accepting. The UDP
    /// sockets belong to the calling thread's runtime (the loop that reads
    /// them); stream listeners and their connections run on `workers`.
    pub async fn start(
        cfg: &SipConfig,
        events: mpsc::Sender<TransportEvent>,
        workers: &tokio::runtime::Handle,
    ) -> Result<Transports, TransportError> {
        let mut t = Transports {
            udp: Vec::new(),
            udp_closed: false,
            udp_next: 0,
            conns: ConnTable::default(),
            next_conn: Arc::new(AtomicU64::new(1)),
            events,
            listeners: Vec::new(),
            workers: workers.clone(),
            bound: Vec::new(),
        };
        for &addr in &cfg.udp {
            let sock = bind_udp(addr).map_err(|source| TransportError::Bind {
                transport: Transport::Udp,
                addr,
                source,
            })?;
            let local = sock.local_addr().unwrap_or(addr);
            t.udp.push((local, sock));
            t.bound.push((Transport::Udp, local));
        }
        let tls = if cfg.tls.is_empty() && cfg.wss.is_empty() {
            None
        } else {
            Some(tls_acceptor(cfg)?)
        };
        for (transport, addrs) in [
            (Transport::Tcp, &cfg.tcp),
            (Transport::Tls, &cfg.tls),
            (Transport::Ws, &cfg.ws),
            (Transport::Wss, &cfg.wss),
        ] {
            for &addr in addrs {
                let l = workers
                    .spawn(TcpListener::bind(addr))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                    .map_err(|source| TransportError::Bind {
                        transport,
                        addr,
                        source,
                    })?;
                let local = l.local_addr().unwrap_or(addr);
                t.bound.push((transport, local));
                let ctx = ConnCtx {
                    conns: t.conns.clone(),
                    next: t.next_conn.clone(),
                    events: t.events.clone(),
                };
                t.listeners
                    .push(workers.spawn(accept_loop(l, transport, local, ctx, tls.clone())));
            }
        }
        Ok(t)
    }

    /// Stops accepting new connections and datagrams; live connections stay.
    pub fn stop_listening(&mut self) {
        for h in self.listeners.drain(..) {
            h.abort();
        }
        self.udp_closed = true;
    }

    /// Resolves with the index of a UDP socket that has datagrams waiting
    /// (for [`Transports::read_udp`]), the sockets taking turns; never,
    /// once listening stopped. Cancel-safe.
    pub async fn udp_readable(&mut self) -> usize {
        std::future::poll_fn(|cx| {
            let n = self.udp.len();
            if self.udp_closed || n == 0 {
                return std::task::Poll::Pending;
            }
            for k in 0..n {
                let i = (self.udp_next + k) % n;
                // An error (ICMP port unreachable on some systems) is left
                // for the read to take.
                if self.udp[i].1.poll_recv_ready(cx).is_ready() {
                    self.udp_next = (i + 1) % n;
                    return std::task::Poll::Ready(i);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// How many UDP sockets there are (indices for [`Transports::read_udp`]).
    pub fn udp_count(&self) -> usize {
        self.udp.len()
    }

    /// Reads up to `max` datagrams waiting on UDP socket `i` into `buf`
    /// (64 KiB holds any), handing each SIP message to `on_message`; lone
    /// CRLF keepalives are dropped. Never blocks.
    pub fn read_udp(
        &self,
        i: usize,
        buf: &mut [u8],
        max: usize,
        mut on_message: impl FnMut(Flow, &[u8]),
    ) {
        let Some((local, sock)) = self.udp.get(i) else {
            return;
        };
        for _ in 0..max {
            match sock.try_recv_from(buf) {
                Ok((n, remote)) => {
                    let data = &buf[..n];
                    // Lone CRLF keepalives (RFC 5626 for UDP uses STUN; phones send CRLF).
                    if data.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let flow = Flow {
                        transport: Transport::Udp,
                        local: *local,
                        remote,
                        conn: None,
                    };
                    on_message(flow, data);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP port unreachable surfaces here on some systems; keep reading.
                Err(e) => tracing::debug!(error = %e, "UDP receive error"),
            }
        }
    }

    /// Sends a message along `flow`. Never blocks; failures are logged.
    pub fn send(&self, flow: &Flow, data: Bytes) {
        if flow.transport == Transport::Udp {
            let sock = self
                .udp
                .iter()
                .find(|(a, _)| *a == flow.local)
                .or_else(|| {
                    self.udp
                        .iter()
                        .find(|(a, _)| a.is_ipv4() == flow.remote.is_ipv4())
                })
                .or_else(|| self.udp.first());
            match sock {
                Some((_, s)) => {
                    if let Err(e) = s.try_send_to(&data, flow.remote) {
                        tracing::debug!(remote = %flow.remote, error = %e, "UDP send failed");
                    }
                }
                None => tracing::warn!(remote = %flow.remote, "no UDP socket to send from"),
            }
            return;
        }
        let sender = {
            let table = lock(&self.conns);
            let id = flow
                .conn
                .filter(|id| table.by_id.contains_key(id))
                .or_else(|| table.by_remote.get(&(flow.transport, flow.remote)).copied());
            id.and_then(|id| table.by_id.get(&id))
                .map(|(_, tx)| tx.clone())
        };
        match sender {
            Some(tx) => {
                if tx.send(data).is_err() {
                    tracing::debug!(remote = %flow.remote, "connection closed while sending");
                }
            }
            None if flow.transport == Transport::Tcp => self.connect_tcp(flow.remote, data),
            None => tracing::info!(
                transport = %flow.transport,
                remote = %flow.remote,
                "no connection to send on; outbound {} is not opened by the gateway",
                flow.transport
            ),
        }
    }

    fn connect_tcp(&self, remote: SocketAddr, first: Bytes) {
        let ctx = ConnCtx {
            conns: self.conns.clone(),
            next: self.next_conn.clone(),
            events: self.events.clone(),
        };
        self.workers.spawn(async move {
            match TcpStream::connect(remote).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(remote);
                    let (id, tx, rx) = ctx.register(Transport::Tcp, local, remote);
                    let _ = tx.send(first);
                    run_stream(stream, id, ctx, rx, Transport::Tcp, local, remote).await;
                }
                Err(e) => tracing::info!(%remote, error = %e, "TCP connect failed"),
            }
        });
    }
}

#[derive(Clone)]
struct ConnCtx {
    conns: ConnTable,
    next: Arc<AtomicU64>,
    events: mpsc::Sender<TransportEvent>,
}

impl ConnCtx {
    fn register(
        &self,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> (
        ConnId,
        mpsc::UnboundedSender<Bytes>,
        mpsc::UnboundedReceiver<Bytes>,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let flow = Flow {
            transport,
            local,
            remote,
            conn: Some(id),
        };
        let mut t = lock(&self.conns);
        t.by_id.insert(id, (flow, tx.clone()));
        t.by_remote.insert((transport, remote), id);
        (id, tx, rx)
    }

    async fn unregister(&self, id: ConnId) {
        {
            let mut t = lock(&self.conns);
            if let Some((flow, _)) = t.by_id.remove(&id)
                && t.by_remote.get(&(flow.transport, flow.remote)) == Some(&id)
            {
                t.by_remote.remove(&(flow.transport, flow.remote));
            }
        }
        let _ = self.events.send(TransportEvent::Closed(id)).await;
    }
}

async fn accept_loop(
    l: TcpListener,
    transport: Transport,
    local: SocketAddr,
    ctx: ConnCtx,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, remote) = match l.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %transport, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let handshake = std::time::Duration::from_secs(10);
            match (transport, tls) {
                (Transport::Tcp, _) => {
                    let (id, _, rx) = ctx.register(transport, local, remote);
                    run_stream(stream, id, ctx, rx, transport, local, remote).await;
                }
                (Transport::Tls, Some(acc)) => {
                    match tokio::time::timeout(handshake, acc.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let (id, _, rx) = ctx.register(transport, local, remote);
                            run_stream(s, id, ctx, rx, transport, local, remote).await;
                        }
                        _ => tracing::info!(%remote, "TLS handshake failed"),
                    }
                }
                (Transport::Ws, _) => run_ws(stream, ctx, transport, local, remote).await,
                (Transport::Wss, Some(acc)) => {
                    match tokio::time::timeout(handshake, acc.accept(stream)).await {
                        Ok(Ok(s)) => run_ws(s, ctx, transport, local, remote).await,
                        _ => tracing::info!(%remote, "TLS handshake failed"),
                    }
                }
                _ => {}
            }
        });
    }
}

async fn run_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    id: ConnId,
    ctx: ConnCtx,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let flow = Flow {
        transport,
        local,
        remote,
        conn: Some(id),
    };
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<()>();
    let writer = async {
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(data) => if wr.write_all(&data).await.is_err() { break },
                    None => break,
                },
                Some(()) = pong_rx.recv() => if wr.write_all(b"\r\n").await.is_err() { break },
            }
        }
        let _ = wr.shutdown().await;
    };
    let reader = async {
        let mut framer = Framer::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            framer.push(&buf[..n]);
            loop {
                match framer.next_frame() {
                    Ok(Some(Frame::Message(data))) => {
                        if ctx
                            .events
                            .send(TransportEvent::Message { flow, data })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(Some(Frame::Ping)) => {
                        let _ = pong_tx.send(());
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(%remote, reason = e.0, "closing unframeable stream");
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
    ctx.unregister(id).await;
}

async fn run_ws<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    ctx: ConnCtx,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
) {
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
    #[allow(clippy::result_large_err)] // the signature is tungstenite's
    let check = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let offers_sip = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("sip"));
        if !offers_sip {
            let mut e = ErrorResponse::new(Some("subprotocol \"sip\" required".into()));
            *e.status_mut() = StatusCode::BAD_REQUEST;
            return Err(e);
        }
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
        Ok(resp)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(stream, check).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::info!(%remote, error = %e, "WebSocket handshake failed");
            return;
        }
    };
    let (id, _, mut rx) = ctx.register(transport, local, remote);
    let flow = Flow {
        transport,
        local,
        remote,
        conn: Some(id),
    };
    let (mut sink, mut source) = ws.split();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(data) => {
                    let msg = match std::str::from_utf8(&data) {
                        Ok(text) => WsMessage::text(text),
                        Err(_) => WsMessage::binary(data),
                    };
                    if sink.send(msg).await.is_err() { break }
                }
                None => break,
            },
            inc = source.next() => match inc {
                Some(Ok(WsMessage::Text(t))) => {
                    let data = Bytes::copy_from_slice(t.as_bytes());
                    if ctx.events.send(TransportEvent::Message { flow, data }).await.is_err() { break }
                }
                Some(Ok(WsMessage::Binary(b))) => {
                    if ctx.events.send(TransportEvent::Message { flow, data: b }).await.is_err() { break }
                }
                Some(Ok(WsMessage::Ping(p))) => { let _ = sink.send(WsMessage::Pong(p)).await; }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    ctx.unregister(id).await;
}

fn tls_acceptor(cfg: &SipConfig) -> Result<tokio_rustls::TlsAcceptor, TransportError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Err(TransportError::Tls(
            "sip.tls_cert and sip.tls_key are required".into(),
        ));
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| TransportError::Tls(format!("{}: {e}", p.display())))
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TransportError::Tls(format!("{}: {e}", cert.display())))?;
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| TransportError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| TransportError::Tls(format!("{}: no private key found", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Socket buffers asked for on a UDP socket that many peers share (a SIP
/// socket, the WebRTC socket): Linux's default 208 KiB holds only a few
/// hundred small datagrams (each costs about 1 KiB of buffer), a few
/// milliseconds of a busy gateway's signalling or media, and a burst
/// beyond it is dropped. The kernel caps the request at
/// `net.core.rmem_max` / `wmem_max`.
pub const UDP_SOCKET_BUFFER: usize = 4 << 20;

/// Binds a UDP socket with [`UDP_SOCKET_BUFFER`] each way (a warning, not
/// an error, when the kernel refuses).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if let Err(e) = s
        .set_recv_buffer_size(UDP_SOCKET_BUFFER)
        .and_then(|()| s.set_send_buffer_size(UDP_SOCKET_BUFFER))
    {
        tracing::warn!(%addr, error = %e, "cannot enlarge a UDP socket's buffers");
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_sockets_take_turns_and_keepalives_are_dropped() {
        let cfg = SipConfig {
            udp: vec![
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            ],
            tcp: Vec::new(),
            ..SipConfig::default()
        };
        let (tx, _rx) = mpsc::channel(1);
        let handle = tokio::runtime::Handle::current();
        let mut t = Transports::start(&cfg, tx, &handle).await.unwrap();
        let [(_, a), (_, b)] = t.bound[..] else {
            panic!("{:?}", t.bound)
        };
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Socket a is busy; b has a message, then a keepalive.
        for _ in 0..3 {
            peer.send_to(b"OPTIONS a", a).unwrap();
        }
        peer.send_to(b"OPTIONS b", b).unwrap();
        peer.send_to(b"\r\n\r\n", b).unwrap();
        let mut buf = vec![0u8; 65_536];
        let mut got = Vec::new();
        // One datagram per turn, then two: b is served although a still
        // has messages waiting.
        for max in [1, 1, 2, 1] {
            let i = t.udp_readable().await;
            t.read_udp(i, &mut buf, max, |flow, data| {
                got.push((flow.local, String::from_utf8_lossy(data).into_owned()));
            });
        }
        assert_eq!(
            got,
            [
                (a, "OPTIONS a".to_string()),
                (b, "OPTIONS b".to_string()),
                (a, "OPTIONS a".to_string()),
                (a, "OPTIONS a".to_string()),
            ]
        );
        // The last turn read b's keepalive and dropped it: a turn each
        // finds nothing more (readiness lasts until a read would block),
        // and then neither socket is ready.
        for _ in 0..2 {
            let i = t.udp_readable().await;
            t.read_udp(i, &mut buf, 64, |_, data| {
                panic!("{}", String::from_utf8_lossy(data))
            });
        }
        let idle = std::time::Duration::from_millis(100);
        assert!(tokio::time::timeout(idle, t.udp_readable()).await.is_err());
    }
}
