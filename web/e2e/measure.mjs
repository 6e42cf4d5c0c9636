// Browser-side measurements for bench/web.py (never a pass/fail test): first contentful paint of
// the runs list and of a static page with the same table (the raw baseline), and the 100k-record
// timeline: time until every record is held, the JS heap it takes (after a forced GC, against the
// same page before the stream is opened), frame times while scrolling through it, and the time to
// show the oldest record whole (fetched: the timeline keeps only the newest records' payloads).
import { env, launch } from "./lib.mjs";

const BASE = env("BASE_URL");
const KEY = env("API_KEY");
const STREAM = env("STREAM");
const N = Number(env("RECORDS"));
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
// a bench shortcut: the key is put where the sign-in page would put it
await context.addInitScript((key) => sessionStorage.setItem("astraforge.apiKey", key), KEY);

const fcp = (page) =>
  page.evaluate(() => new Promise((resolve) => {
    const seen = performance.getEntriesByName("first-contentful-paint")[0];
    if (seen) return resolve(seen.startTime);
    new PerformanceObserver((l) => resolve(l.getEntries()[0].startTime)).observe({ type: "paint", buffered: true });
  }));

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const result = { runsList: [], runsRows: [], baseline: [] };
for (let i = 0; i < ROUNDS; i++) {
  const page = await context.newPage();
  await page.goto(`${BASE}/assets/baseline.html`);
  result.baseline.push(await fcp(page));
  await page.goto(`${BASE}/runs`);
  await page.locator("table[aria-label=Runs] tbody tr").nth(99).waitFor();
  result.runsList.push(await fcp(page));
  result.runsRows.push(await page.evaluate(() => performance.now()));
  await page.close();
}

const page = await context.newPage();
/** Bytes of JS heap in use after a full garbage collection (CDP, as DevTools' memory panel reads it). */
const heapUsed = async () => {
  const cdp = await context.newCDPSession(page);
  try {
    await cdp.send("HeapProfiler.collectGarbage");
    return (await cdp.send("Runtime.getHeapUsage")).usedSize;
  } finally {
    await cdp.detach();
  }
};
await page.goto(`${BASE}/audit`);
await page.getByRole("heading", { name: "Audit" }).waitFor();
const heapEmpty = await heapUsed();
const started = Date.now();
await page.goto(`${BASE}/audit/${STREAM}`);
await page.waitForFunction((n) => Number(document.querySelector("[data-testid=timeline-count]")?.dataset.count) === n, N, { timeout: 600_000, polling: 200 });
const loadMs = Date.now() - started;
const heapHeld = await heapUsed();
// two ways through the list: wheel-like steps (10 rows a frame) and jumps (the whole run in 300 frames,
// a scrollbar drag: every frame shows rows never shown before)
const scrollWith = (stepRows) =>
  page.evaluate((stepRows) => new Promise((resolve) => {
    const log = document.querySelector("[role=log][aria-label=Timeline]");
    log.scrollTop = 0;
    const frames = [];
    let last = performance.now();
    let rows = 0;
    const step = () => {
      const now = performance.now();
      frames.push(now - last);
      last = now;
      rows = Math.max(rows, log.querySelectorAll("[data-offset]").length);
      if (log.scrollTop + log.clientHeight >= log.scrollHeight - 1 || frames.length > 300) return resolve({ frames: frames.slice(1).sort((a, b) => a - b), rows });
      log.scrollTop += stepRows ? stepRows * 24 : log.scrollHeight / 300;
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }), stepRows);
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const wheel = await scrollWith(10);
const jumps = await scrollWith(0);
// the oldest record, whole: its payload was dropped long ago, so selecting it fetches it
await page.evaluate(() => { document.querySelector("[role=log][aria-label=Timeline]").scrollTop = 0; });
const first = page.locator("[role=log][aria-label=Timeline] [data-offset]").first();
const firstOffset = await first.getAttribute("data-offset");
const asked = Date.now();
await first.click();
await page.locator(`aside[aria-label="Record ${firstOffset}"] details pre`).waitFor({ state: "attached" });
const oldRecordMs = Date.now() - asked;
// the raw baseline: a static page whose 5,000 rows of the same text are all in the DOM, no script
await page.goto(`${BASE}/assets/baseline-scroll.html`);
const still = await scrollWith(10);
console.log(JSON.stringify({
  fcpRunsListMs: median(result.runsList),
  firstPageRowsMs: median(result.runsRows),
  fcpBaselineMs: median(result.baseline),
  timelineLoadMs: loadMs,
  heapEmptyBytes: heapEmpty,
  heapHeldBytes: heapHeld,
  oldRecordMs,
  wheel: { p50: pct(wheel.frames, 0.5), p95: pct(wheel.frames, 0.95), max: pct(wheel.frames, 1), n: wheel.frames.length },
  staticWheel: { p50: pct(still.frames, 0.5), p95: pct(still.frames, 0.95), max: pct(still.frames, 1), n: still.frames.length },
  jumps: { p50: pct(jumps.frames, 0.5), p95: pct(jumps.frames, 0.95), max: pct(jumps.frames, 1), n: jumps.frames.length },
  rowsInDomMax: Math.max(wheel.rows, jumps.rows),
}));
await browser.close();
