// Headless Chromium calls an alias from the built-in page and measures what
// it hears: the dominant frequency of the received audio (WebAudio FFT) and
// getStats. Then it presses keypad 5 and hangs up (`browser`), or waits for
// the far end to hang up (`remote`). Prints one JSON object; the Rust test asserts on it.
//
// Usage: node call.mjs BASE_URL ALIAS SECONDS browser|remote [FAKE_AUDIO.wav]
// With VIDEO_CODEC=H264 or VP8 set, the page offers only that video codec.
import { launch } from "./launch.mjs";
import { audioStats, ended, listen, videoStats } from "./measure.mjs";

const [base, alias, secondsArg, hangup, wav] = process.argv.slice(2);
const seconds = Number(secondsArg || 4);
if (!base || !alias || !["browser", "remote"].includes(hangup)) {
  console.error("usage: node call.mjs BASE_URL ALIAS SECONDS browser|remote [FAKE_AUDIO.wav]");
  process.exit(2);
}

const browser = await launch(wav ? [`--use-file-for-fake-audio-capture=${wav}`] : []);

const result = { connected: false, frequency: null, stats: null, video: null, ended: null, events: [], dtmf: [], errors: [] };
try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => result.errors.push(`page error: ${e.message}`));
  const video = process.env.VIDEO_CODEC ? `&video_codec=${process.env.VIDEO_CODEC}` : "";
  await page.goto(`${base}/?alias=${encodeURIComponent(alias)}&name=Chromium${video}`);
  await page.click("#call");
  await page.waitForFunction(() => window.causeway.state === "connected", null, { timeout: 20000 });
  result.connected = true;
  result.frequency = await listen(page, seconds);
  result.stats = await audioStats(page);
  result.video = await videoStats(page);
  if (hangup === "browser") {
    // A keypad digit goes through the client API to the far end (RFC 4733).
    await page.click("#keypad button:nth-child(5)");
    await page.waitForTimeout(1000);
    await page.click("#hangup");
  }
  result.ended = await ended(page);
  result.events = await page.evaluate(() => window.causeway.received
    .filter((e) => e.name === "call_state")
    .map((e) => e.data.state));
  // Digits the far end sent, as the page's event stream reported them.
  result.dtmf = await page.evaluate(() => window.causeway.received
    .filter((e) => e.name === "dtmf")
    .map((e) => e.data.digit));
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
