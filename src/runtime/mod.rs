//! The tokio shell: binds sockets, owns the one task that drives the sans-IO
//! [`Gateway`], the store writer threads and the HTTP server, and handles
//! shutdown.
//!
//! Two runtimes: the signalling loop ([`run`]) runs on a current-thread
//! runtime of its own and reads the SIP UDP sockets itself; media relays,
//! WebRTC, HTTP, SIP stream connections and every other task run on a
//! multi-thread worker runtime, entered around whatever the loop does.
//!
//! This is the only place (with `sip::transport`) that reads clocks, spawns
//! tasks or touches the disk for state. It must not make protocol decisions:
//! everything it does is move bytes, time and queries between the pieces.

mod alarm;
pub mod bridge;
pub mod media;
mod relay;
pub mod routing;
mod rtp_end;
mod sip_video;
mod video;
pub mod webrtc;

use crate::api::{self, ApiState, Query};
use crate::config::Config;
use crate::dialplan::LoadContext;
use crate::gateway::{Counters, Gateway, GwOutput};
use crate::policy::{Decision, PolicyClient};
use crate::registrar::store::{LocationStore, SqliteStore, StoreOp};
use crate::sip::Transport;
use crate::sip::transaction::TxKey;
use crate::sip::transport::{TransportEvent, Transports};
use crate::trunks::TrunkTarget;
use media::MediaCalls;
use routing::{AliasService, PlanSource};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Current unix time in milliseconds (call records).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Current unix time in seconds, signed (routing and alias times).
pub fn wall_i64() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

/// What the gateway ended up listening on.
#[derive(Debug, Clone)]
pub struct Listening {
    /// SIP listeners.
    pub sip: Vec<(Transport, SocketAddr)>,
    /// HTTP server.
    pub http: SocketAddr,
    /// RTP port range.
    pub media: (u16, u16),
    /// The WebRTC UDP socket.
    pub webrtc: SocketAddr,
    /// Admin bearer token.
    pub admin_token: String,
    /// Whether the token was generated on this start.
    pub token_generated: bool,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A SIP listener failed.
    #[error(transparent)]
    Transport(#[from] crate::sip::transport::TransportError),
    /// The HTTP listener failed.
    #[error("cannot listen on HTTP {0}: {1}")]
    Http(SocketAddr, std::io::Error),
    /// The data directory or database failed.
    #[error("storage in {0}: {1}")]
    Storage(String, String),
    /// The WebRTC socket or certificate failed.
    #[error("{0}")]
    Webrtc(String),
    /// The configured dialplan does not load.
    #[error("the dialplan has errors:\n{0}")]
    Dialplan(String),
}

/// The admin token from config, or the one stored in the data dir, or a new one.
fn admin_token(cfg: &Config) -> Result<(String, bool), StartError> {
    if let Some(t) = &cfg.admin.token {
        return Ok((t.clone(), false));
    }
    let dir = &cfg.storage.data_dir;
    let path = dir.join("admin_token");
    let err = |e: std::io::Error| StartError::Storage(dir.display().to_string(), e.to_string());
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok((t.trim().to_string(), false));
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let token = hex::encode(rand::random::<[u8; 24]>());
    std::fs::write(&path, format!("{token}\n")).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok((token, true))
}

enum WriterMsg {
    Ops(Vec<StoreOp>),
    Purge(u64),
}

/// How long a store's writer lets changes gather after the first before
/// writing them in one transaction: a commit costs far more than a row,
/// and a sender does not wake a writer that is not waiting.
const WRITE_GATHER: Duration = Duration::from_millis(50);

/// A thread that hands `write` whatever queued up in [`WRITE_GATHER`]
/// after the first item, so a store writes in batches (one transaction
/// each) off the async runtime. It ends, having written everything sent,
/// when the sender is dropped.
fn spawn_writer<T: Send + 'static>(
    mut write: impl FnMut(Vec<T>) + Send + 'static,
) -> (std::sync::mpsc::Sender<T>, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel::<T>();
    let handle = std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            std::thread::sleep(WRITE_GATHER);
            write(std::iter::once(first).chain(rx.try_iter()).collect());
        }
    });
    (tx, handle)
}

/// Applies location store changes, and purges expired bindings when asked.
fn spawn_store_writer(
    mut store: Box<dyn LocationStore>,
) -> (
    std::sync::mpsc::Sender<WriterMsg>,
    std::thread::JoinHandle<()>,
) {
    spawn_writer(move |msgs: Vec<WriterMsg>| {
        let mut batch = Vec::new();
        let mut purge = None;
        for m in msgs {
            match m {
                WriterMsg::Ops(ops) => batch.extend(ops),
                WriterMsg::Purge(now) => purge = Some(now),
            }
        }
        if !batch.is_empty()
            && let Err(e) = store.apply(&batch)
        {
            tracing::error!(error = %e, "could not persist registrations");
        }
        if let Some(now) = purge {
            match store.purge_expired(now) {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "expired bindings purged"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "could not purge bindings"),
            }
        }
    })
}

/// Keeps finished call records (at 1,000 calls a second, one transaction
/// per record was a tenth of the gateway's CPU).
fn spawn_record_writer(
    store: Arc<crate::cdr::store::CdrStore>,
) -> (
    std::sync::mpsc::Sender<crate::cdr::CallRecord>,
    std::thread::JoinHandle<()>,
) {
    spawn_writer(move |batch: Vec<crate::cdr::CallRecord>| {
        if let Err(e) = store.put(&batch) {
            tracing::error!(records = batch.len(), error = %e, "could not keep call records");
        }
    })
}

/// Starts everything, calls `ready` once listening, and runs until
/// `shutdown` resolves.
///
/// Run it on a current-thread runtime of its own: that thread reads the
/// SIP sockets and drives the gateway, woken by its own event loop, while
/// media, HTTP and every other task run on `workers` (a multi-thread
/// runtime). Waking the signalling loop from another thread's event loop
/// cost a futex wakeup per batch of messages.
pub async fn run(
    cfg: Config,
    workers: tokio::runtime::Handle,
    ready: impl FnOnce(&Listening),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    // Tasks spawned and sockets opened from here on are the workers',
    // except the SIP transports (below) and the loop's own timers.
    let on_workers = workers.enter();
    let counters = Arc::new(Counters::default());
    let mut gw = Gateway::new(&cfg, counters.clone());

    let db = cfg.storage.data_dir.join("causeway.db");
    let storage_err = |e: crate::registrar::store::StoreError| {
        StartError::Storage(cfg.storage.data_dir.display().to_string(), e.to_string())
    };
    let mut store = SqliteStore::open(&db).map_err(storage_err)?;
    let restored = store.load(unix_now()).map_err(storage_err)?;
    tracing::info!(bindings = restored.len(), db = %db.display(), "location store opened");
    gw.registrar_mut().restore(restored);
    let (writer, writer_thread) = spawn_store_writer(Box::new(store));

    let ctx = LoadContext::from_config(&cfg);
    let (plan_source, routing) =
        PlanSource::open(cfg.dialplan.path.clone(), ctx.clone(), unix_now()).map_err(|errors| {
            StartError::Dialplan(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
    let status = plan_source.status();
    tracing::info!(
        path = status.path.as_deref().unwrap_or("<embedded default>"),
        rules = status.rules,
        "dialplan loaded"
    );
    let aliases = Arc::new(
        AliasService::open(&db, routing.clone(), ctx.clone(), wall_i64()).map_err(|e| {
            StartError::Storage(cfg.storage.data_dir.display().to_string(), e.to_string())
        })?,
    );
    let cdrs = Arc::new(crate::cdr::store::CdrStore::open(&db).map_err(|e| {
        StartError::Storage(cfg.storage.data_dir.display().to_string(), e.to_string())
    })?);
    let policy = Arc::new(PolicyClient::new(&cfg.policy, ctx));
    let (decided_tx, mut decided) = mpsc::channel::<(TxKey, Decision)>(1024);
    let watcher = (cfg.dialplan.watch && plan_source.watchable()).then(|| {
        let source = plan_source.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let source = source.clone();
                let _ =
                    tokio::task::spawn_blocking(move || source.reload_if_changed(unix_now())).await;
            }
        })
    });

    let (token, token_generated) = admin_token(&cfg)?;
    let (events_tx, mut events) = mpsc::channel::<TransportEvent>(4096);
    // The SIP UDP sockets are this thread's: the loop below reads them.
    drop(on_workers);
    let mut transports = Transports::start(&cfg.sip, events_tx, &workers).await?;
    let on_workers = workers.enter();

    let (peer_events_tx, peer_events) = mpsc::unbounded_channel();
    let (webrtc, webrtc_addr, webrtc_task) = webrtc::start(&cfg, peer_events_tx)
        .await
        .map_err(StartError::Webrtc)?;
    let (query_tx, mut queries) = mpsc::channel::<Query>(64);
    let (call_tx, mut call_cmds) = mpsc::unbounded_channel();
    let client = api::client::ClientApi::new(
        &cfg,
        webrtc.clone(),
        routing.clone(),
        policy.clone(),
        query_tx.clone(),
        call_tx,
        gw.registrar().shared_authenticator(),
    );
    let dispatcher = tokio::spawn(client.clone().dispatch(peer_events));
    let http = tokio::net::TcpListener::bind(cfg.http.bind)
        .await
        .map_err(|e| StartError::Http(cfg.http.bind, e))?;
    let http_addr = http.local_addr().unwrap_or(cfg.http.bind);
    let state = ApiState {
        admin_token: token.clone().into(),
        queries: query_tx,
        counters: counters.clone(),
        started: Instant::now(),
        plan: plan_source.clone(),
        routing: routing.clone(),
        aliases: aliases.clone(),
        cdrs: cdrs.clone(),
        client: client.clone(),
    };
    let (http_stop_tx, http_stop) = oneshot::channel::<()>();
    let http_client = client.clone();
    let http_task = tokio::spawn(async move {
        let app =
            api::router(state, http_client).into_make_service_with_connect_info::<SocketAddr>();
        let serve =
            axum::serve(http, app).with_graceful_shutdown(async { http_stop.await.unwrap_or(()) });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    ready(&Listening {
        sip: transports.bound.clone(),
        http: http_addr,
        media: (*cfg.media.port_min.get_ref(), *cfg.media.port_max.get_ref()),
        webrtc: webrtc_addr,
        admin_token: token,
        token_generated,
    });

    let (silent_tx, mut silent) = mpsc::unbounded_channel();
    let mut media = MediaCalls::new(
        *cfg.media.port_min.get_ref(),
        *cfg.media.port_max.get_ref(),
        silent_tx,
        cfg.media.silence(),
    );
    let (media_done_tx, mut media_done) = mpsc::unbounded_channel();
    let mut bridges = bridge::Bridges::new(
        media_done_tx,
        bridge::Silence::new(cfg.media.silence(), cfg.media.held_silence()),
        *cfg.media.opus_complexity.get_ref(),
    );
    let mut records = crate::cdr::Records::default();
    let (record_writer, record_thread) = spawn_record_writer(cdrs);
    let keep = move |r: crate::cdr::CallRecord| {
        let _ = record_writer.send(r);
    };
    let flush = |gw: &mut Gateway,
                 transports: &Transports,
                 media: &mut MediaCalls,
                 bridges: &mut bridge::Bridges,
                 records: &mut crate::cdr::Records| {
        while let Some(o) = gw.poll_output() {
            match o {
                GwOutput::Call(o) => {
                    if let Some(done) = records.on_notice(unix_ms(), &o) {
                        keep(done);
                    }
                    if let Some((call, plan)) = on_call_output(o, &client, &webrtc, bridges) {
                        records.media(&call, plan);
                    }
                }
                GwOutput::CallStarted { call, parties } => records.start(unix_ms(), &call, parties),
                GwOutput::OpenMedia { dialog, answer } => {
                    let ip = gw.media_address(dialog);
                    let ports = ip
                        .ok_or_else(|| "the call is gone".to_string())
                        .and_then(|ip| media.open_echo(dialog, &answer, ip));
                    gw.media_ready(Instant::now(), unix_now(), dialog, ports);
                }
                GwOutput::CloseMedia { dialog } => media.close(dialog),
                GwOutput::BridgeMedia {
                    call,
                    ip,
                    video,
                    callee_video,
                } => {
                    let ports = bridges
                        .reserve_sip(media, &call, ip, (video, callee_video))
                        .map_err(|e| e.to_string());
                    gw.bridge_ready(Instant::now(), unix_now(), &call, ports);
                }
                GwOutput::Transmit { flow, data } => transports.send(&flow, data),
                GwOutput::Store(ops) => {
                    let _ = writer.send(WriterMsg::Ops(ops));
                }
                GwOutput::Route { key, call } => {
                    match crate::policy::decide_local(&routing, &call) {
                        Ok(decision) => gw.routed(Instant::now(), unix_now(), &key, decision),
                        Err(ask) => {
                            let (policy, done) = (policy.clone(), decided_tx.clone());
                            tokio::spawn(async move {
                                let decision = ask.decide(&policy, &call).await;
                                let _ = done.send((key, decision)).await;
                            });
                        }
                    }
                }
            }
        }
    };

    gw.set_listeners(transports.bound.clone());
    for t in cfg.trunks.iter().map(toml::Spanned::get_ref) {
        match resolve_trunk(t, &transports.bound).await {
            Ok(target) => {
                gw.add_trunk_peer(target.clone());
                if t.register {
                    gw.add_trunk(Instant::now(), unix_now(), target);
                }
            }
            Err(e) => tracing::error!(trunk = %t.name, error = %e, "trunk unusable"),
        }
    }
    flush(&mut gw, &transports, &mut media, &mut bridges, &mut records);

    let keepalive = u64::from(cfg.registrar.keepalive_interval);
    drop(on_workers);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    let mut datagram = vec![0u8; 65_536];
    let mut read_udp = |gw: &mut Gateway, transports: &Transports, i: usize| {
        // Everything queued, up to a bound, before flushing: fewer wakeups
        // under load.
        transports.read_udp(i, &mut datagram, 64, |flow, data| {
            gw.handle_datagram(Instant::now(), unix_now(), flow, data);
        });
    };
    tokio::pin!(shutdown);
    loop {
        let deadline = gw
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        // Only the waiting happens on this thread's runtime: what the
        // gateway then does spawns and registers on the workers.
        let woke = tokio::select! {
            i = transports.udp_readable() => Woke::Datagram(i),
            ev = events.recv() => match ev {
                Some(ev) => Woke::Stream(ev),
                None => break,
            },
            () = tokio::time::sleep_until(deadline.into()) => Woke::Timeout,
            Some((key, decision)) = decided.recv() => Woke::Routed(key, decision),
            Some(cmd) = call_cmds.recv() => Woke::CallCmd(cmd),
            Some(report) = media_done.recv() => Woke::Media(report),
            Some(dialog) = silent.recv() => Woke::Silent(dialog),
            Some(q) = queries.recv() => Woke::Query(q),
            _ = tick.tick() => Woke::Tick,
            () = &mut shutdown => break,
        };
        let _on_workers = workers.enter();
        match woke {
            Woke::Datagram(i) => read_udp(&mut gw, &transports, i),
            Woke::Stream(ev) => {
                handle_event(&mut gw, ev);
                // Take whatever else is queued before flushing: fewer wakeups under load.
                for _ in 0..64 {
                    match events.try_recv() {
                        Ok(ev) => handle_event(&mut gw, ev),
                        Err(_) => break,
                    }
                }
            }
            Woke::Timeout => gw.handle_timeout(Instant::now(), unix_now()),
            Woke::Routed(key, decision) => gw.routed(Instant::now(), unix_now(), &key, decision),
            Woke::CallCmd(cmd) => on_call_cmd(&mut gw, cmd, &mut media, &mut bridges),
            Woke::Media(report) => match report {
                bridge::MediaReport::Progress(call, totals) => {
                    records.media_progress(&call, totals)
                }
                bridge::MediaReport::Stopped(call, totals) => {
                    if let Some(done) = records.media_stopped(&call, totals) {
                        keep(done);
                    }
                }
                bridge::MediaReport::Replanned(call, plan) => records.media_replanned(&call, plan),
                bridge::MediaReport::Silent { call, from } => {
                    gw.media_silent(Instant::now(), unix_now(), &call, from);
                }
                bridge::MediaReport::Digit { call, from, digit } => {
                    gw.media_digit(Instant::now(), unix_now(), &call, from, digit);
                }
                bridge::MediaReport::KeyframeWanted { call, of } => {
                    gw.media_wants_keyframe(Instant::now(), unix_now(), &call, of);
                }
            },
            Woke::Silent(dialog) => gw.media_timeout(Instant::now(), unix_now(), dialog),
            Woke::Query(q) => match q {
                Query::Registrations(reply) => {
                    let _ = reply.send(gw.registrar().all(unix_now()).cloned().collect());
                }
                Query::Trunks(reply) => {
                    let _ = reply.send(gw.trunk_status());
                }
                Query::Registered(alias, reply) => {
                    let _ = reply.send(gw.is_registered(&alias, unix_now()));
                }
                Query::Calls(reply) => {
                    let mut calls = records.active();
                    for c in &mut calls {
                        c.legs = gw.call_legs(&c.id);
                    }
                    let _ = reply.send(calls);
                }
                Query::HangUp(call, reply) => {
                    let _ = reply.send(gw.hang_up_call(Instant::now(), unix_now(), &call));
                }
            },
            Woke::Tick => {
                ticks += 1;
                let wall = unix_now();
                gw.tick(wall);
                if ticks.is_multiple_of(60) {
                    let _ = writer.send(WriterMsg::Purge(wall));
                    let aliases = aliases.clone();
                    tokio::task::spawn_blocking(move || aliases.purge(wall_i64()));
                }
                if keepalive > 0 && ticks.is_multiple_of(keepalive) {
                    gw.send_keepalives(Instant::now(), wall);
                }
            }
        }
        flush(&mut gw, &transports, &mut media, &mut bridges, &mut records);
    }

    tracing::info!("shutting down: no new requests");
    let _on_workers = workers.enter();
    if let Some(w) = watcher {
        w.abort();
    }
    transports.stop_listening();
    let _ = http_stop_tx.send(());
    // Finish what already arrived, briefly.
    let grace = Instant::now() + Duration::from_millis(500);
    for i in 0..transports.udp_count() {
        read_udp(&mut gw, &transports, i);
    }
    while let Ok(ev) = events.try_recv() {
        handle_event(&mut gw, ev);
        flush(&mut gw, &transports, &mut media, &mut bridges, &mut records);
        if Instant::now() > grace {
            break;
        }
    }
    flush(&mut gw, &transports, &mut media, &mut bridges, &mut records);
    media.close_all();
    bridges.close_all();
    webrtc_task.abort();
    dispatcher.abort();
    // Let connection writers drain.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The writers end once everything sent to them is kept.
    drop(keep);
    drop(writer);
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    let _ = tokio::task::spawn_blocking(move || record_thread.join()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), http_task).await;
    tracing::info!("stopped");
    Ok(())
}

/// What woke the signalling loop.
enum Woke {
    /// UDP socket `i` has datagrams.
    Datagram(usize),
    /// A stream connection's message or close.
    Stream(TransportEvent),
    /// A gateway timer is due.
    Timeout,
    /// A policy server decided a call's route.
    Routed(TxKey, Decision),
    /// The client API about a bridged call.
    CallCmd(api::client::CallCmd),
    /// A bridged call's media task reported.
    Media(bridge::MediaReport),
    /// An echo call's media went silent.
    Silent(crate::sip::dialog::DialogId),
    /// The admin API asks.
    Query(Query),
    /// The one-second tick.
    Tick,
}

/// Carries out what the call layer decided about a bridged call; returns
/// the media started, if any, for the call's record.
fn on_call_output(
    n: crate::b2bua::Notice,
    client: &Arc<api::client::ClientApi>,
    webrtc: &webrtc::WebrtcHandle,
    bridges: &mut bridge::Bridges,
) -> Option<(String, crate::cdr::MediaPlan)> {
    use crate::b2bua::Notice;
    match n {
        Notice::Event(call, ev) => client.call_event(&call, &ev),
        Notice::StartMedia {
            call,
            caller,
            callee,
        } => match bridges.start(&call, caller, callee, webrtc) {
            Ok(plan) => return Some((call, plan)),
            Err(e) => {
                tracing::warn!(call = %call, error = %e, "cannot bridge media");
            }
        },
        Notice::RingBrowser {
            fork,
            participant,
            from,
            audio,
            video,
        } => client.ring(fork, participant, from, (audio, video)),
        Notice::DtmfToBrowser { peer, digit } => client.far_end_dtmf(peer, digit),
        Notice::PlayDigit { call, to, digit } => {
            if !bridges.play_digits(&call, to, digit.digit.to_string(), digit.duration_ms) {
                tracing::info!(call = %call, "a digit for a call without media dropped");
            }
        }
        Notice::UpdateMedia { call, party, media } => {
            if !bridges.update(&call, party, *media) {
                tracing::warn!(call = %call, "no media to move to the answer");
            }
        }
        Notice::Hold { call, party, held } => {
            if !bridges.hold(&call, party, held) {
                tracing::info!(call = %call, "a hold for a call without media");
            }
        }
        Notice::KeyframeWanted { call, from } => {
            bridges.keyframe_wanted(&call, from);
        }
        Notice::Release { call, peer } => {
            bridges.close(&call);
            if let Some(peer) = peer {
                let webrtc = webrtc.clone();
                tokio::spawn(async move { webrtc.close(peer).await });
            }
        }
    }
    None
}

/// A request from the client API about a bridged call.
fn on_call_cmd(
    gw: &mut Gateway,
    cmd: api::client::CallCmd,
    media: &mut MediaCalls,
    bridges: &mut bridge::Bridges,
) {
    use api::client::CallCmd;
    let (now, wall) = (Instant::now(), unix_now());
    match cmd {
        CallCmd::Dial {
            id,
            peer,
            alias,
            target,
            rule,
            display_name,
            codecs,
            video,
            formats,
            dtmf,
            srtp,
        } => {
            let ip = gw.media_ip();
            let ports = bridges
                .reserve(media, &id, ip, formats, !video.is_empty())
                .map_err(
                    |e| tracing::warn!(call = %id, error = %e, "no media port for a bridged call"),
                )
                .ok();
            let mut offer =
                crate::sdp::Offer::audio(&codecs, dtmf != crate::dialplan::DtmfMode::Info)
                    .with_srtp_if(srtp);
            if let Some((_, Some(port))) = ports {
                offer = offer.with_video(&video, port);
            }
            gw.dial(
                now,
                wall,
                crate::gateway::BrowserDial {
                    id,
                    peer,
                    alias,
                    target,
                    rule,
                    display_name,
                    offer,
                    dtmf,
                    media_port: ports.map(|(audio, _)| audio),
                },
            );
        }
        CallCmd::Gone { id, reason } => gw.browser_gone(now, wall, &id, reason),
        CallCmd::Register {
            alias,
            participant,
            until,
        } => gw.register_browser(&alias, &participant, until),
        CallCmd::Unregister { participant } => gw.unregister_browser(&participant),
        CallCmd::Offered { fork, result } => gw.browser_offered(now, wall, &fork, result),
        CallCmd::Answered { fork, formats } => gw.browser_answered(now, wall, &fork, formats),
        CallCmd::Dtmf { id, digits } => {
            // By SIP INFO, else as events on the media toward the SIP side
            // (a browser's call has one: `to` is not looked at).
            if !gw.browser_digits(now, wall, &id, &digits, bridge::DIGIT_MS)
                && !bridges.play_digits(
                    gw.media_call(&id),
                    crate::b2bua::Party::Callee,
                    digits,
                    bridge::DIGIT_MS,
                )
            {
                tracing::info!(call = %id, "digits for a call not answered yet dropped");
            }
        }
    }
}

/// Resolves a trunk's registrar and picks our listener toward it.
async fn resolve_trunk(
    t: &crate::config::TrunkConfig,
    bound: &[(Transport, SocketAddr)],
) -> Result<TrunkTarget, String> {
    let uri = crate::sip::msg::Uri::parse(&t.uri).map_err(|_| format!("bad URI {:?}", t.uri))?;
    let transport = match uri.param("transport").flatten() {
        None => Transport::Udp,
        Some(name) => {
            Transport::parse(name).ok_or_else(|| format!("unknown transport {name:?}"))?
        }
    };
    if !matches!(transport, Transport::Udp | Transport::Tcp) {
        return Err(format!(
            "registering over {transport} is not supported (the gateway opens only UDP and TCP toward peers)"
        ));
    }
    let port = uri.port.unwrap_or(5060);
    let remote = tokio::net::lookup_host((uri.host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", uri.host))?
        .find(|a| {
            bound
                .iter()
                .any(|(tr, l)| *tr == transport && l.is_ipv4() == a.is_ipv4())
        })
        .ok_or_else(|| {
            format!(
                "no {transport} listener of the same address family as {}",
                uri.host
            )
        })?;
    let local = bound
        .iter()
        .find(|(tr, l)| *tr == transport && l.is_ipv4() == remote.is_ipv4())
        .map(|(_, l)| *l)
        .ok_or_else(|| format!("no {transport} listener"))?;
    let host = match (uri.host.contains(':'), uri.port) {
        (true, Some(p)) => format!("[{}]:{p}", uri.host),
        (true, None) => format!("[{}]", uri.host),
        (false, Some(p)) => format!("{}:{p}", uri.host),
        (false, None) => uri.host.clone(),
    };
    Ok(TrunkTarget {
        name: t.name.clone(),
        host,
        remote,
        transport,
        local,
        username: t.username.clone().unwrap_or_default(),
        password: t.password.clone().unwrap_or_default(),
        expires: t.expires,
    })
}

fn handle_event(gw: &mut Gateway, ev: TransportEvent) {
    match ev {
        TransportEvent::Message { flow, data } => {
            gw.handle_datagram(Instant::now(), unix_now(), flow, &data);
        }
        TransportEvent::Closed(conn) => gw.connection_closed(conn),
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// How a configuration source is named in messages: the path, or the embedded defaults.
pub fn describe(path: Option<&Path>) -> String {
    path.map_or_else(
        || "embedded defaults".to_string(),
        |p| p.display().to_string(),
    )
}
