// Headless Chromium calls an alias from the built-in page and measures what
// it hears: the dominant frequency of the received audio (WebAudio FFT) and
// getStats. Then it presses keypad 5 and hangs up (`browser`), or waits for
// the far end to hang up (`remote`). Prints one JSON object; the Rust test asserts on it.
//
// Usage: node call.mjs BASE_URL ALIAS SECONDS browser|remote [FAKE_AUDIO.wav]
import { launch } from "./launch.mjs";

const [base, alias, secondsArg, hangup, wav] = process.argv.slice(2);
const seconds = Number(secondsArg || 4);
if (!base || !alias || !["browser", "remote"].includes(hangup)) {
  console.error("usage: node call.mjs BASE_URL ALIAS SECONDS browser|remote [FAKE_AUDIO.wav]");
  process.exit(2);
}

const browser = await launch(wav ? [`--use-file-for-fake-audio-capture=${wav}`] : []);

const result = { connected: false, frequency: null, stats: null, ended: null, events: [], errors: [] };
try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => result.errors.push(`page error: ${e.message}`));
  await page.goto(`${base}/?alias=${encodeURIComponent(alias)}&name=Chromium`);
  await page.click("#call");
  await page.waitForFunction(() => window.causeway.state === "connected", null, { timeout: 20000 });
  result.connected = true;
  // Sum magnitude spectra of the received audio over the listening time.
  result.frequency = await page.evaluate(async (seconds) => {
    const pc = window.causeway.pc;
    const track = pc.getReceivers().map((r) => r.track).find((t) => t && t.kind === "audio");
    const ctx = new AudioContext();
    await ctx.resume();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    const sum = new Float64Array(analyser.frequencyBinCount);
    const t0 = Date.now();
    while (Date.now() - t0 < seconds * 1000) {
      await new Promise((r) => setTimeout(r, 100));
      analyser.getFloatFrequencyData(bins);
      bins.forEach((db, i) => { if (Number.isFinite(db)) sum[i] += Math.pow(10, db / 20); });
    }
    let best = 1;
    for (let i = 2; i < sum.length; i++) if (sum[i] > sum[best]) best = i;
    return best * ctx.sampleRate / analyser.fftSize;
  }, seconds);
  result.stats = await page.evaluate(async () => {
    const out = { audioIn: null, audioOut: null };
    const report = await window.causeway.pc.getStats();
    const codecs = {};
    report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        out.audioIn = { codec: codecs[s.codecId], packets: s.packetsReceived, lost: s.packetsLost, audioEnergy: s.totalAudioEnergy };
      }
      if (s.type === "outbound-rtp" && s.kind === "audio") {
        out.audioOut = { codec: codecs[s.codecId], packets: s.packetsSent };
      }
    });
    return out;
  });
  if (hangup === "browser") {
    // A keypad digit goes through the client API to the far end (RFC 4733).
    await page.click("#keypad button:nth-child(5)");
    await page.waitForTimeout(1000);
    await page.click("#hangup");
  }
  result.ended = await page.waitForFunction(
    () => window.causeway.received.find(
      (e) => e.name === "call_state" && (e.data.state === "disconnected" || e.data.state === "failed"),
    )?.data,
    null,
    { timeout: 15000 },
  ).then((h) => h.jsonValue(), () => null);
  result.events = await page.evaluate(() => window.causeway.received
    .filter((e) => e.name === "call_state")
    .map((e) => e.data.state));
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
