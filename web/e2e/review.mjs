// End to end against the real platform: sign in (keyboard only), submit a script-agent run from
// the form, watch it live, read its diff, cut the network mid-run and check the timeline resumes
// with Last-Event-ID (no duplicate, no gap), approve it in the UI, see the merge request link, and
// verify the stream on the audit page. Screenshots go to $ARTIFACTS. Exits non-zero on any failure.
import { accessibilityProblems, allEvents, apiGet, artifacts, cuttableProxy, env, launch, until } from "./lib.mjs";

const API = env("API_URL");
const KEY = env("API_KEY");
const REPO = env("REPO");
const out = artifacts();
const proxy = await cuttableProxy(API);
const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, colorScheme: "light" });
const page = await context.newPage();
const consoleErrors = [];
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
page.on("pageerror", (e) => consoleErrors.push(String(e)));
const sseRequests = [];
page.on("request", (r) => r.url().includes("/events/sse") && sseRequests.push({ url: r.url(), lastEventId: r.headers()["last-event-id"] ?? null }));
const a11y = {};
const check = async (name) => {
  a11y[name] = await accessibilityProblems(page);
};

try {
  // 1. sign in with the keyboard alone
  await page.goto(proxy.url);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  // skip link, home link, theme switch, then the key field
  for (let i = 0; i < 4 && (await page.evaluate(() => document.activeElement?.getAttribute("type"))) !== "password"; i++)
    await page.keyboard.press("Tab");
  if ((await page.evaluate(() => document.activeElement?.getAttribute("type"))) !== "password") throw new Error("Tab order: the key field is not reached");
  await page.keyboard.type(KEY);
  await check("sign-in");
  await out.shot(page, "01-sign-in");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Runs" }).waitFor();
  if (page.url().includes(KEY)) throw new Error("the key is in the URL");
  if ((await page.evaluate(() => sessionStorage.getItem("astraforge.apiKey"))) !== KEY) throw new Error("key not in sessionStorage");

  // 2. a new run from the form
  await page.getByRole("link", { name: "New run" }).first().click();
  await page.getByLabel("Title").fill("Fix add() from the browser");
  await page.getByLabel("Request").fill("Fix add() in calc.py and say so.");
  await page.getByLabel("Repository").fill(REPO);
  await page.getByLabel("Step 1 kind").selectOption("write");
  await page.getByLabel("Step 1 path").fill("calc.py");
  await page.getByLabel("Step 1 content").fill("def add(a, b):\n    return a + b\n");
  await page.getByRole("button", { name: "Add step" }).click();
  await page.getByLabel("Step 2 command").fill("for i in 1 2 3 4 5; do echo working $i; done; echo fixed > NOTES.md");
  await page.getByLabel("Test command").fill("python -m unittest -v");
  await check("new-run");
  await out.shot(page, "02-new-run", { fullPage: true });
  await page.getByRole("button", { name: "Start run" }).click();
  await page.waitForURL((u) => /^\/runs\/(?!new$)[^/]+$/.test(u.pathname));
  const runId = decodeURIComponent(page.url().split("/").pop());

  // 3. live: the state badge and the timeline follow the run to review
  await page.locator('[data-state="awaiting_review"]').first().waitFor({ timeout: 180_000 });
  await page.locator('[data-type="exec.output"]').first().waitFor();
  await page.locator('[data-type="test.result"]').first().waitFor();
  await page.getByText("working 5").first().waitFor();
  await check("run-timeline");
  await out.shot(page, "03-run-awaiting-review");

  // 4. the diff, unified then side by side
  await page.getByRole("tab", { name: "Changes" }).click();
  await page.locator('[data-file="calc.py"]').waitFor();
  if (!(await page.locator('[data-file="calc.py"] td[data-kind="add"]').first().innerText()).includes("a + b")) throw new Error("diff: the added line is missing");
  await out.shot(page, "04-diff-unified", { fullPage: true });
  await page.getByRole("radio", { name: "Side by side" }).click();
  await out.shot(page, "05-diff-split", { fullPage: true });
  await check("diff");
  await page.getByRole("tab", { name: "Timeline" }).click();

  // 5. the network drops mid-run: while the page is cut off, the run's second attempt (a rerun
  //    with guidance, asked straight from the API) appends its records; after the network comes
  //    back the timeline resumes with Last-Event-ID and holds every record exactly once
  const count = page.getByTestId("timeline-count");
  await page.locator('[data-type="sandbox.terminated"]').first().waitFor(); // attempt 1 is wholly over
  const lastBefore = Number(await count.getAttribute("data-last-offset"));
  const before = sseRequests.length;
  proxy.cut();
  await until("the SSE reconnect, held by the cut network", () => proxy.held > 0 && sseRequests.length > before, 30_000);
  const rerun = await fetch(`${API}/v1/runs/${runId}/review`, {
    method: "POST",
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json", "Idempotency-Key": `rerun-${runId}` },
    body: JSON.stringify({ decision: "rerun", comment: "once more", guidance: "once more" }),
  });
  if (rerun.status !== 202) throw new Error(`rerun: HTTP ${rerun.status} ${await rerun.text()}`);
  // attempt 2 is over once its sandbox is gone: nothing more is appended until the approval
  await until("attempt 2 awaiting review, its sandbox terminated", async () => {
    const r = await apiGet(API, KEY, `/v1/runs/${runId}`);
    if (r.attempt !== 2 || r.state !== "awaiting_review") return false;
    const events = await allEvents(API, KEY, runId);
    return events.some((e) => e.offset > lastBefore && e.type === "sandbox.terminated");
  }, 180_000, 200);
  const missed = (await allEvents(API, KEY, runId)).filter((e) => e.offset > lastBefore).length;
  proxy.restore();
  const events = await allEvents(API, KEY, runId);
  const lastOffset = events[events.length - 1].offset;
  await until("the timeline to reach the stream's last record", async () => Number(await count.getAttribute("data-last-offset")) === lastOffset, 60_000);
  const shown = { count: Number(await count.getAttribute("data-count")), sum: Number(await count.getAttribute("data-offset-sum")) };
  const expected = { count: events.length, sum: events.reduce((n, e) => n + e.offset, 0) };
  if (shown.count !== expected.count || shown.sum !== expected.sum) throw new Error(`timeline ${JSON.stringify(shown)} != stream ${JSON.stringify(expected)}`);
  const resumed = sseRequests.slice(before);
  if (!resumed.length || resumed[0].lastEventId !== String(lastBefore)) throw new Error(`reconnect sent Last-Event-ID ${resumed[0]?.lastEventId}, expected ${lastBefore}`);
  await page.getByTestId("connection").and(page.locator('[data-connection="live"]')).waitFor();
  await out.shot(page, "06-resumed-after-cut");

  // 6. approve in the UI: the merge request link appears
  await page.locator('[data-state="awaiting_review"]').first().waitFor();
  await page.getByRole("button", { name: "Approve" }).click();
  const mr = page.getByTestId("mr-link");
  await mr.waitFor({ timeout: 120_000 });
  const href = await mr.getAttribute("href");
  if (!href.endsWith(`#astraforge/${runId}`)) throw new Error(`merge request link ${href}`);
  await page.locator('[data-state="merged"]').first().waitFor({ timeout: 60_000 });
  await check("run-merged");
  await out.shot(page, "07-run-merged");

  // 7. dark theme, by keyboard
  await page.getByRole("button", { name: /Switch to dark theme/ }).focus();
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.documentElement.classList.contains("dark"));
  await check("run-merged-dark");
  await out.shot(page, "08-run-merged-dark");
  await page.getByRole("button", { name: /Switch to light theme/ }).click();

  // 8. the runs list shows it, filtered; the audit page verifies its stream against Kafka
  await page.getByRole("link", { name: "Runs" }).first().click();
  await page.getByLabel("State").selectOption("merged");
  await page.getByLabel("Text").fill("from the browser");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.locator(`[data-run="${runId}"] [data-state="merged"]`).waitFor();
  await check("runs-list");
  await out.shot(page, "09-runs-list");
  await page.goto(`${proxy.url}/audit/${runId}`);
  await page.getByRole("button", { name: "Verify against Kafka" }).click();
  const verified = page.getByTestId("verify-result");
  await verified.waitFor({ timeout: 60_000 });
  if ((await verified.getAttribute("data-ok")) !== "true") throw new Error(`verify: ${await verified.innerText()}`);
  await out.shot(page, "10-audit");

  const problems = Object.entries(a11y).filter(([, p]) => p.length);
  const errors = consoleErrors.filter((e) => !/ERR_CONNECTION|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_NETWORK|Failed to fetch/.test(e));
  console.log(JSON.stringify({ runId, lastBefore, missedWhileCut: missed, records: events.length, reconnects: resumed.length, a11y: problems, consoleErrors: errors, mr: href }));
  if (problems.length) throw new Error(`accessibility: ${JSON.stringify(problems)}`);
  if (errors.length) throw new Error(`console errors: ${errors.join(" | ")}`);
} catch (e) {
  await out.shot(page, "failure", { fullPage: true }).catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
  await proxy.close();
}
