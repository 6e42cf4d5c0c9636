// Browser-side measurements for bench/web.py (never a pass/fail test): first contentful paint of
// the runs list and of a static page with the same table (the raw baseline), and the 100k-record
// timeline: time until every record is held, then frame times while scrolling through it.
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
const started = Date.now();
await page.goto(`${BASE}/audit/${STREAM}`);
await page.waitForFunction((n) => Number(document.querySelector("[data-testid=timeline-count]")?.dataset.count) === n, N, { timeout: 600_000, polling: 200 });
const loadMs = Date.now() - started;
const scroll = await page.evaluate(() => new Promise((resolve) => {
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
    if (log.scrollTop + log.clientHeight >= log.scrollHeight - 1 || frames.length > 600) return resolve({ frames, rows });
    log.scrollTop += log.scrollHeight / 300; // through the whole run in about 300 frames
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}));
const frames = scroll.frames.slice(1).sort((a, b) => a - b);
console.log(JSON.stringify({
  fcpRunsListMs: median(result.runsList),
  firstPageRowsMs: median(result.runsRows),
  fcpBaselineMs: median(result.baseline),
  timelineLoadMs: loadMs,
  scrollFrames: frames.length,
  frameP50Ms: frames[Math.floor(frames.length * 0.5)],
  frameP95Ms: frames[Math.floor(frames.length * 0.95)],
  frameMaxMs: frames[frames.length - 1],
  rowsInDomMax: scroll.rows,
}));
await browser.close();
