// Headless Chromium registers an alias from the built-in page (the user's
// SIP credentials through the client API), touches READY_FILE once its
// event stream is open, and waits for a call. It answers from the
// `incoming_call` event, measures what it hears (as call.mjs does), then
// presses keypad 5 and hangs up (`browser`) or waits for the caller to (`remote`); `decline`
// declines the call instead, and `vanish` closes the browser while it rings.
// With VIDEO_CODEC=H264 or VP8 set, the page answers video only in that
// codec. Prints one JSON object; the Rust test asserts on it.
//
// Usage: node answer.mjs BASE_URL ALIAS PASSWORD SECONDS browser|remote|decline|vanish READY_FILE [FAKE_AUDIO.wav]
import { writeFileSync } from "node:fs";
import { launch } from "./launch.mjs";
import { audioStats, ended, listen, videoStats } from "./measure.mjs";

const [base, alias, password, secondsArg, mode, ready, wav] = process.argv.slice(2);
const seconds = Number(secondsArg || 4);
if (!base || !alias || !ready || !["browser", "remote", "decline", "vanish"].includes(mode)) {
  console.error("usage: node answer.mjs BASE_URL ALIAS PASSWORD SECONDS browser|remote|decline|vanish READY_FILE [FAKE_AUDIO.wav]");
  process.exit(2);
}

const browser = await launch(wav ? [`--use-file-for-fake-audio-capture=${wav}`] : []);

let page = null;
const result = { page_log: [], registered: false, incoming: null, connected: false, frequency: null, stats: null, video: null, ended: null, errors: [] };
try {
  page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => result.errors.push(`page error: ${e.message}`));
  const video = process.env.VIDEO_CODEC ? `&video_codec=${process.env.VIDEO_CODEC}` : "";
  await page.goto(`${base}/?register=${encodeURIComponent(alias)}${video}`);
  await page.fill("#reg-password", password);
  await page.click("#reg-submit");
  await page.waitForFunction(() => window.causeway.reg.events?.readyState === EventSource.OPEN, null, { timeout: 10000 });
  result.registered = true;
  writeFileSync(ready, "registered\n");
  await page.waitForFunction(() => window.causeway.incoming !== null, null, { timeout: 30000 });
  result.incoming = await page.evaluate(() => {
    const { call_uuid, remote_display_name, sdp } = window.causeway.incoming;
    return {
      call_uuid,
      remote_display_name,
      offer_has_audio: sdp.includes("m=audio"),
      offer_has_video: sdp.includes("m=video"),
    };
  });
  if (mode === "vanish") {
    // Closing the browser (below) is all it does.
  } else if (mode === "decline") {
    await page.click("#decline");
    // The decline is a request: closing the browser before it is sent
    // would leave the call ringing.
    await page.waitForFunction(() => [...document.querySelectorAll("#log li")]
      .some((li) => li.textContent.includes("call declined")), null, { timeout: 10000 });
  } else {
    await page.click("#answer");
    await page.waitForFunction(() => window.causeway.state === "connected", null, { timeout: 20000 });
    result.connected = true;
    result.frequency = await listen(page, seconds);
    result.stats = await audioStats(page);
    result.video = await videoStats(page);
    if (mode === "browser") {
      // A keypad digit reaches the caller as an RFC 4733 event.
      await page.click("#keypad button:nth-child(5)");
      await page.waitForTimeout(1000);
      await page.click("#hangup");
    }
    result.ended = await ended(page);
  }
} catch (e) {
  result.errors.push(String(e));
  // The page's own log says what it saw (answer refused, media failed...).
  result.page_log = await page?.evaluate(() => [...document.querySelectorAll("#log li")]
    .map((li) => li.textContent)).catch(() => []) ?? [];
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
