// Causeway web client: calls an alias through the client API
// (/api/client/v1), with call events over Server-Sent Events.
// Plain JavaScript, no build step. `window.causeway` exposes the state for
// scripted checks.
"use strict";

const $ = (id) => document.getElementById(id);
const api = (alias, path) => `/api/client/v1/aliases/${encodeURIComponent(alias)}/${path}`;

/** A token and its event stream: one for calls placed, one for the registration. */
function session() {
  return { alias: null, token: null, participant: null, iceServers: [], refreshTimer: null, events: null };
}

const params = new URLSearchParams(location.search);

const app = {
  out: session(), // calls this page places
  reg: session(), // the registration that lets SIP endpoints call this page
  active: null, // the session of the current call
  incoming: null, // the incoming_call being offered
  ringer: null,
  pc: null,
  local: null,
  call: null,
  state: "idle",
  received: [], // SSE events, newest last
  states: {}, // latest call_state per call UUID
  lastStats: null,
  statsTimer: null,
};
window.causeway = app;

function log(text, error = false) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  if (error) li.className = "error";
  $("log").prepend(li);
}

function setState(state, label) {
  app.state = state;
  const s = $("status");
  s.className = `status ${state}`;
  s.textContent = label;
  const inCall = state === "calling" || state === "connected";
  $("in-call-controls").hidden = !inCall;
  $("local").hidden = !inCall;
  for (const b of $("keypad").querySelectorAll("button")) b.disabled = state !== "connected";
  $("call").disabled = inCall;
  $("placeholder").hidden = state === "connected";
}

async function post(url, body, s = app.active || app.out) {
  const headers = { "Content-Type": "application/json" };
  if (s && s.token) headers.token = s.token;
  const res = await fetch(url, { method: "POST", headers, body: JSON.stringify(body ?? {}) });
  let json = null;
  try { json = await res.json(); } catch (_) { /* empty body */ }
  if (!res.ok || !json || json.status !== "success") {
    const reason = (json && (json.reason || json.result)) || `${res.status} ${res.statusText}`;
    const err = new Error(reason);
    err.status = res.status;
    throw err;
  }
  return json.result;
}

function started(s, alias, r) {
  s.alias = alias;
  s.token = r.token;
  s.participant = r.participant_uuid;
  s.iceServers = r.ice_servers || [];
  scheduleRefresh(s, r.expires);
  openEvents(s);
}

async function requestToken(alias, name, pin) {
  const body = { display_name: name || "Guest" };
  if (pin) body.pin = pin;
  started(app.out, alias, await post(api(alias, "request_token"), body, null));
}

/** Registers the alias with the user's SIP credentials: calls to it ring here. */
async function register(alias, password) {
  const status = $("reg-status");
  status.hidden = false;
  status.className = "hint";
  status.textContent = "Registering…";
  try {
    const r = await post("/api/client/v1/registrations", { alias, password }, null);
    started(app.reg, r.alias, r);
    status.className = "hint registered";
    status.textContent = `Registered as ${r.alias}: calls to it ring here.`;
    log(`registered as ${r.alias}`);
  } catch (e) {
    status.className = "hint";
    status.textContent = `Not registered: ${e.message}`;
    log(`registration failed: ${e.message}`, true);
  }
}

function scheduleRefresh(s, expires) {
  clearTimeout(s.refreshTimer);
  s.refreshTimer = setTimeout(async () => {
    try {
      const r = await post(api(s.alias, "refresh_token"), {}, s);
      s.token = r.token;
      scheduleRefresh(s, r.expires);
      // The stream's URL carries the token: a reconnect must not use an expired one.
      openEvents(s);
    } catch (e) {
      log(`token refresh failed: ${e.message}`, true);
    }
  }, Math.max(1, expires / 2) * 1000);
}

function openEvents(s) {
  if (s.events) s.events.close();
  const url = `${api(s.alias, "events")}?token=${encodeURIComponent(s.token)}`;
  s.events = new EventSource(url);
  for (const name of ["call_state", "dtmf", "stats", "incoming_call"]) {
    s.events.addEventListener(name, (e) => onEvent(name, JSON.parse(e.data)));
  }
}

function onEvent(name, data) {
  app.received.push({ name, data });
  if (name === "incoming_call") {
    onIncoming(data);
    return;
  }
  if (name === "call_state" && app.incoming && data.call_uuid === app.incoming.call_uuid &&
      (data.state === "disconnected" || data.state === "failed")) {
    log(`missed call from ${app.incoming.remote_display_name || "unknown"}`);
    stopRinging();
  }
  if (name === "call_state" && data.call_uuid) {
    // A bridged call may ring or answer before the POST that placed it returns.
    app.states[data.call_uuid] = data;
    if (app.call && data.call_uuid === app.call) onCallState(data);
  } else if (name === "dtmf") {
    log(`DTMF ${data.digit} received`);
  }
}

function onCallState(data) {
  if (data.state === "ringing") setState("calling", "Ringing…");
  if (data.state === "connected") {
    setState("connected", "Connected");
    if (data.remote_codec) log(`answered (far end: ${data.remote_codec})`);
  }
  if (data.state === "disconnected" || data.state === "failed") {
    const who = data.by === "sip" ? "by the far end" : data.by === "gateway" ? "by the gateway" : "";
    log(`call ended ${who} (${data.reason})`, data.state === "failed");
    teardown();
    if (data.state === "failed") setState("failed", data.status === 486 ? "Busy" : "Call failed");
  }
}

async function getMedia() {
  const audio = { echoCancellation: false, autoGainControl: false, noiseSuppression: false };
  try {
    return await navigator.mediaDevices.getUserMedia({ audio, video: { width: 640, height: 360 } });
  } catch (e) {
    log(`camera unavailable (${e.name}); calling with audio only`);
    return navigator.mediaDevices.getUserMedia({ audio });
  }
}

/** Waits for ICE gathering: the gateway is ICE-lite and takes no trickle. */
function gathered(pc, ms = 2000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(t); resolve(); };
    const t = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") done();
    });
  });
}

/** A peer connection wired to the page: remote media shown, failure hangs up. */
function newPeer(iceServers) {
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
  app.pc = pc;
  const remote = new MediaStream();
  pc.ontrack = (e) => {
    remote.addTrack(e.track);
    $("remote").srcObject = remote;
    $("remote-audio").srcObject = remote;
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed") {
      log("media connection failed", true);
      hangup();
    }
  };
  return pc;
}

function onIncoming(data) {
  if (app.call || app.incoming) {
    // Busy here: decline the second call.
    post(api(app.reg.alias, `calls/${data.call_uuid}/disconnect`), {}, app.reg).catch(() => {});
    return;
  }
  app.incoming = data;
  $("ring-from").textContent = data.remote_display_name || "unknown caller";
  $("ring").hidden = false;
  setState("calling", "Incoming call");
  startRinging();
  log(`incoming call from ${data.remote_display_name || "unknown caller"}`);
}

/** A soft two-tone ring (WebAudio, no sound file). */
function startRinging() {
  try {
    const ctx = new AudioContext();
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    for (const f of [440, 480]) {
      const o = ctx.createOscillator();
      o.frequency.value = f;
      o.connect(gain);
      o.start();
    }
    const burst = () => {
      const t = ctx.currentTime;
      gain.gain.setValueAtTime(0.08, t);
      gain.gain.setValueAtTime(0, t + 1.5);
    };
    burst();
    app.ringer = { ctx, timer: setInterval(burst, 4000) };
  } catch (_) { /* no audio output: the banner still shows */ }
}

function stopRinging() {
  $("ring").hidden = true;
  app.incoming = null;
  if (app.ringer) {
    clearInterval(app.ringer.timer);
    app.ringer.ctx.close();
    app.ringer = null;
  }
  if (!app.call && app.state === "calling") setState("idle", "Ready");
}

async function answerIncoming() {
  const offer = app.incoming;
  if (!offer) return;
  stopRinging();
  app.active = app.reg;
  app.call = offer.call_uuid;
  setState("calling", "Connecting…");
  try {
    // The gateway offers video when the caller sent some: answer with the
    // camera then (or receive only, without one).
    const video = /^m=video [1-9]/m.test(offer.sdp);
    app.local = video ? await getMedia() : await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, autoGainControl: false, noiseSuppression: false },
    });
    $("local").srcObject = app.local;
    const pc = newPeer(app.reg.iceServers);
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    for (const track of app.local.getTracks()) pc.addTrack(track, app.local);
    preferVideoCodec(pc, params.get("video_codec"));
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    await post(api(app.reg.alias, `calls/${offer.call_uuid}/answer`), { sdp: pc.localDescription.sdp });
    log(`answered ${offer.remote_display_name || "the call"}`);
    if (app.states[app.call]) onCallState(app.states[app.call]);
    app.statsTimer = setInterval(updateStats, 1000);
  } catch (e) {
    log(`answer failed: ${e.message}`, true);
    hangup();
  }
}

async function declineIncoming() {
  const offer = app.incoming;
  stopRinging();
  if (offer) {
    try { await post(api(app.reg.alias, `calls/${offer.call_uuid}/disconnect`), {}, app.reg); } catch (_) { /* gone */ }
    log("call declined");
  }
}

async function startCall(alias, name, pin) {
  setState("calling", `Calling ${alias}…`);
  try {
    if (!app.out.token || app.out.alias !== alias) await requestToken(alias, name, pin);
    app.active = app.out;
    app.local = await getMedia();
    $("local").srcObject = app.local;
    const pc = newPeer(app.out.iceServers);
    for (const track of app.local.getTracks()) pc.addTrack(track, app.local);
    if (!app.local.getVideoTracks().length) pc.addTransceiver("video", { direction: "recvonly" });
    preferVideoCodec(pc, params.get("video_codec"));
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const r = await post(api(alias, "calls"), { sdp: pc.localDescription.sdp });
    app.call = r.call_uuid;
    await pc.setRemoteDescription({ type: "answer", sdp: r.sdp });
    log(`call to ${alias} placed`);
    if (app.states[app.call]) onCallState(app.states[app.call]);
    app.statsTimer = setInterval(updateStats, 1000);
  } catch (e) {
    log(`call failed: ${e.message}`, true);
    if (e.status === 401 || e.status === 403) app.out.token = null;
    teardown();
    setState("failed", e.status === 404 ? "No such alias" : "Call failed");
  }
}

/**
 * Offers (or answers) only one video codec (`/?video_codec=H264` or `VP8`):
 * a call with a SIP endpoint that has that codec is then relayed without
 * transcoding, and one without it is transcoded.
 */
function preferVideoCodec(pc, name) {
  if (!name || !RTCRtpReceiver.getCapabilities) return;
  const mime = `video/${name}`.toLowerCase();
  const codecs = RTCRtpReceiver.getCapabilities("video").codecs
    .filter((c) => c.mimeType.toLowerCase() === mime);
  if (!codecs.length) {
    log(`this browser cannot send ${name}; offering its default video codecs`, true);
    return;
  }
  for (const t of pc.getTransceivers()) {
    if (t.receiver.track.kind === "video") t.setCodecPreferences(codecs);
  }
}

async function hangup() {
  const call = app.call;
  if (call && app.active) {
    try { await post(api(app.active.alias, `calls/${call}/disconnect`)); } catch (_) { /* gone already */ }
  }
  teardown();
}

function teardown() {
  clearInterval(app.statsTimer);
  if (app.pc) app.pc.close();
  if (app.local) app.local.getTracks().forEach((t) => t.stop());
  app.pc = null;
  app.local = null;
  app.call = null;
  app.active = null;
  $("remote").srcObject = null;
  $("local").srcObject = null;
  for (const b of ["mute-audio", "mute-video"]) $(b).setAttribute("aria-pressed", "false");
  if (app.state !== "failed") setState("idle", "Ready");
}

function toggle(kind, button) {
  if (!app.local) return;
  const tracks = kind === "audio" ? app.local.getAudioTracks() : app.local.getVideoTracks();
  const muted = button.getAttribute("aria-pressed") !== "true";
  tracks.forEach((t) => { t.enabled = !muted; });
  button.setAttribute("aria-pressed", String(muted));
}

async function sendDigit(digit) {
  if (!app.call) return;
  try {
    await post(api(app.active.alias, `calls/${app.call}/dtmf`), { digits: digit });
  } catch (e) {
    log(`DTMF failed: ${e.message}`, true);
  }
}

function rate(bytes, prevBytes, ms) {
  if (prevBytes === undefined || ms <= 0) return "";
  return `${Math.round(((bytes - prevBytes) * 8) / ms)} kbit/s`;
}

async function updateStats() {
  if (!app.pc) return;
  const report = await app.pc.getStats();
  const prev = app.lastStats || {};
  const now = {};
  const codecs = {};
  report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType.split("/")[1]; });
  report.forEach((s) => {
    const key = `${s.type}-${s.kind}`;
    if (s.type === "inbound-rtp" || s.type === "outbound-rtp") {
      now[key] = {
        bytes: s.type === "inbound-rtp" ? s.bytesReceived : s.bytesSent,
        packets: s.type === "inbound-rtp" ? s.packetsReceived : s.packetsSent,
        lost: s.packetsLost || 0,
        codec: codecs[s.codecId] || "",
        framesDecoded: s.framesDecoded,
        audioEnergy: s.totalAudioEnergy,
        width: s.frameWidth,
        height: s.frameHeight,
      };
    }
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
      now.rtt = s.currentRoundTripTime;
    }
  });
  now.at = performance.now();
  const ms = now.at - (prev.at || now.at);
  const show = (id, key) => {
    const s = now[key];
    if (!s) { $(id).textContent = "–"; return; }
    const size = s.width ? ` ${s.width}×${s.height}` : "";
    $(id).textContent = `${s.codec}${size} ${rate(s.bytes, prev[key] && prev[key].bytes, ms)}`.trim();
  };
  show("s-audio-in", "inbound-rtp-audio");
  show("s-audio-out", "outbound-rtp-audio");
  show("s-video-in", "inbound-rtp-video");
  show("s-video-out", "outbound-rtp-video");
  $("s-rtt").textContent = now.rtt !== undefined ? `${Math.round(now.rtt * 1000)} ms` : "–";
  const a = now["inbound-rtp-audio"];
  if (a && a.packets + a.lost > 0) {
    $("s-loss").textContent = `${((100 * a.lost) / (a.packets + a.lost)).toFixed(1)} %`;
  }
  app.lastStats = now;
}

$("dial").addEventListener("submit", (e) => {
  e.preventDefault();
  const alias = $("alias").value.trim();
  if (alias) startCall(alias, $("name").value.trim(), $("pin").value.trim());
});
$("hangup").addEventListener("click", hangup);
$("register").addEventListener("submit", (e) => {
  e.preventDefault();
  const alias = $("reg-alias").value.trim();
  if (alias) register(alias, $("reg-password").value);
});
$("answer").addEventListener("click", answerIncoming);
$("decline").addEventListener("click", declineIncoming);
$("mute-audio").addEventListener("click", (e) => toggle("audio", e.currentTarget));
$("mute-video").addEventListener("click", (e) => toggle("video", e.currentTarget));
$("keypad").addEventListener("click", (e) => {
  if (e.target instanceof HTMLButtonElement) sendDigit(e.target.textContent);
});
window.addEventListener("beforeunload", () => {
  if (app.call) hangup();
});

if (params.get("alias")) $("alias").value = params.get("alias");
if (params.get("name")) $("name").value = params.get("name");
if (params.get("register")) {
  $("reg-alias").value = params.get("register");
  $("reg-box").open = true;
}
// A link such as /?alias=room1&autocall=1 dials as soon as the page opens.
if (params.get("autocall") === "1" && $("alias").value) {
  startCall($("alias").value.trim(), $("name").value.trim(), params.get("pin") || "");
}
