// Headless Chromium calls the gateway's `echo` alias twice: once through the
// built-in web page (client API + SSE), once through WHIP from a page
// script. Prints one JSON object with what getStats saw; the Rust test
// (tests/interop_browser.rs) asserts on it.
//
// Usage: node echo.mjs http://127.0.0.1:PORT [seconds-of-media]
import { launch } from "./launch.mjs";

const base = process.argv[2];
const seconds = Number(process.argv[3] || 4);
if (!base) {
  console.error("usage: node echo.mjs BASE_URL [SECONDS]");
  process.exit(2);
}

const browser = await launch();

// Summarises a page's RTCPeerConnection stats (runs in the page).
const summarise = async (pc) => {
  const out = { audioIn: null, videoIn: null, audioOut: null, videoOut: null, pair: null };
  const report = await pc.getStats();
  const codecs = {};
  report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      const v = {
        codec: codecs[s.codecId],
        packets: s.packetsReceived,
        lost: s.packetsLost,
        bytes: s.bytesReceived,
        framesDecoded: s.framesDecoded,
        width: s.frameWidth,
        audioEnergy: s.totalAudioEnergy,
        audioLevel: s.audioLevel,
      };
      if (s.kind === "audio") out.audioIn = v; else out.videoIn = v;
    }
    if (s.type === "outbound-rtp") {
      const v = { codec: codecs[s.codecId], packets: s.packetsSent, framesEncoded: s.framesEncoded };
      if (s.kind === "audio") out.audioOut = v; else out.videoOut = v;
    }
    if (s.type === "candidate-pair" && s.nominated) {
      out.pair = { state: s.state, rtt: s.currentRoundTripTime };
    }
  });
  return out;
};

const result = { page: null, whip: null, errors: [] };
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => result.errors.push(`page error: ${e.message}`));
  // The WHIP part DELETEs a session twice on purpose; the second 404 is expected.
  let expect404 = false;
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (expect404 && m.text().includes("status of 404")) return;
    result.errors.push(`console: ${m.text()}`);
  });
  await page.goto(`${base}/?alias=echo&name=Chromium`);

  // 1. The built-in page, as a user would use it.
  await page.click("#call");
  await page.waitForFunction(() => window.causeway.state === "connected", null, { timeout: 15000 });
  await page.waitForTimeout(seconds * 1000);
  // A keypad press goes through the client API and comes back as an SSE event.
  await page.click("#keypad button:nth-child(5)");
  await page.waitForFunction(
    () => window.causeway.received.some((e) => e.name === "dtmf" && e.data.digit === "5"),
    null,
    { timeout: 5000 },
  );
  const stats = await page.evaluate(`(${summarise})(window.causeway.pc)`);
  const statsShown = await page.textContent("#s-video-in");
  await page.click("#hangup");
  await page.waitForFunction(() => window.causeway.state === "idle", null, { timeout: 5000 });
  const disconnected = await page.waitForFunction(
    () => window.causeway.received.some((e) => e.name === "call_state" && e.data.state === "disconnected"),
    null,
    { timeout: 5000 },
  ).then(() => true, () => false);
  result.page = {
    stats,
    statsShown,
    disconnected,
    events: await page.evaluate(() => window.causeway.received.map((e) => `${e.name}:${e.data.state || e.data.digit || ""}`)),
  };

  // 2. WHIP from a page script: offer, 201 + Location, media, DELETE.
  expect404 = true;
  result.whip = await page.evaluate(async ({ seconds, summarise }) => {
    const summary = eval(`(${summarise})`);
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, autoGainControl: false, noiseSuppression: false },
      video: { width: 320, height: 180 },
    });
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    for (const t of media.getTracks()) pc.addTrack(t, media);
    const remote = new MediaStream();
    const audio = new Audio();
    audio.autoplay = true;
    pc.ontrack = (e) => { remote.addTrack(e.track); audio.srcObject = remote; };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => {
      if (pc.iceGatheringState === "complete") return r();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r();
      setTimeout(r, 2000);
    });
    const res = await fetch("/whip/echo", {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    const out = { status: res.status, contentType: res.headers.get("content-type"), location: res.headers.get("location") };
    if (res.status !== 201) { out.body = await res.text(); return out; }
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
    const t0 = Date.now();
    while (pc.connectionState !== "connected" && Date.now() - t0 < 15000) {
      await new Promise((r) => setTimeout(r, 100));
    }
    out.connection = pc.connectionState;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    out.stats = await summary(pc);
    const del = await fetch(out.location, { method: "DELETE" });
    out.deleteStatus = del.status;
    const again = await fetch(out.location, { method: "DELETE" });
    out.deleteAgainStatus = again.status;
    pc.close();
    media.getTracks().forEach((t) => t.stop());
    return out;
  }, { seconds, summarise: summarise.toString() });
} catch (e) {
  result.errors.push(String(e && e.stack || e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
