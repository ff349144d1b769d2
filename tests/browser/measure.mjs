// What a page's call sounds like: the dominant frequency of the received
// audio (WebAudio FFT summed over the listening time) and getStats' audio
// counters. Shared by call.mjs and answer.mjs.

/** Dominant received frequency in Hz over `seconds` of listening. */
export function listen(page, seconds) {
  return page.evaluate(async (seconds) => {
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
}

/** Audio in and out as getStats reports them. */
export function audioStats(page) {
  return page.evaluate(async () => {
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
}

/** Video in and out as getStats reports them (null when none). */
export function videoStats(page) {
  return page.evaluate(async () => {
    const out = { videoIn: null, videoOut: null };
    const report = await window.causeway.pc.getStats();
    const codecs = {};
    report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out.videoIn = {
          codec: codecs[s.codecId], packets: s.packetsReceived, framesDecoded: s.framesDecoded,
          keyFramesDecoded: s.keyFramesDecoded, width: s.frameWidth, height: s.frameHeight,
          pli: s.pliCount, fir: s.firCount,
        };
      }
      if (s.type === "outbound-rtp" && s.kind === "video") {
        out.videoOut = {
          codec: codecs[s.codecId], packets: s.packetsSent, framesEncoded: s.framesEncoded,
          width: s.frameWidth, height: s.frameHeight, pli: s.pliCount, fir: s.firCount,
        };
      }
    });
    return out;
  });
}

/** The first call_state event that ends a call, or null after `ms`. */
export function ended(page, ms = 15000) {
  return page.waitForFunction(
    () => window.causeway.received.find(
      (e) => e.name === "call_state" && (e.data.state === "disconnected" || e.data.state === "failed"),
    )?.data,
    null,
    { timeout: ms },
  ).then((h) => h.jsonValue(), () => null);
}
