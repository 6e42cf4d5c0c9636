// End to end: the alerts page lists the integration (no secret on screen), the Sentry alert it
// received, the decision "run started" and a link to that run, which opens the run view.
import { accessibilityProblems, artifacts, env, launch } from "./lib.mjs";

const API = env("API_URL");
const KEY = env("API_KEY");
const SECRET = env("CLIENT_SECRET");
const out = artifacts();
const browser = await launch();
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(String(e.stack ?? e)));
try {
  await page.goto(API);
  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "Alerts" }).click();
  const row = page.locator('tr[data-decision="alert.run_started"]');
  await row.waitFor({ timeout: 120_000 });
  const link = row.locator('a[href^="/runs/"]');
  const runId = (await link.innerText()).trim();
  if ((await page.content()).includes(SECRET)) throw new Error("the integration's secret is on the page");
  const problems = await accessibilityProblems(page);
  await out.shot(page, "31-alerts");
  await link.click();
  await page.waitForURL((u) => u.pathname === `/runs/${runId}`);
  await page.locator('[data-type="run.accepted"], [data-type^="run."]').first().waitFor({ timeout: 60_000 });
  await out.shot(page, "32-alert-run");
  if (problems.length) throw new Error(`accessibility: ${JSON.stringify(problems)}`);
  console.log(JSON.stringify({ ok: true, runId }));
} catch (e) {
  await out.shot(page, "alerts-failure", { fullPage: true }).catch(() => {});
  console.error(e, errors);
  process.exitCode = 1;
} finally {
  await browser.close();
}
