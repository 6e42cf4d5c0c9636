// End to end: hostile text from outside (a Sentry alert's title, which an attacker who can raise an
// error chooses) rendered on the alerts page runs no script, and the page's CSP (a response header)
// blocks inline script even if markup were ever injected.
import { artifacts, env, launch } from "./lib.mjs";

const API = env("API_URL");
const KEY = env("API_KEY");
const out = artifacts();
const browser = await launch();
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
const dialogs = [];
page.on("dialog", (d) => {
  dialogs.push(d.message());
  d.dismiss();
});
try {
  const first = await page.goto(API);
  const csp = first.headers()["content-security-policy"] ?? "";
  if (!csp.includes("script-src 'self'") || csp.includes("unsafe-inline'; connect")) throw new Error(`CSP: ${csp}`);
  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "Alerts" }).click();
  await page.locator('tr[data-decision="alert.run_started"]').waitFor({ timeout: 120_000 });
  if (!(await page.locator("main").innerText()).includes("<img src=x")) throw new Error("the title is not shown as text");
  await out.shot(page, "51-hostile-alert-title");
  // the CSP applies: an inline script put into the DOM does not run, and Chromium reports the violation
  const blocked = await page.evaluate(
    () =>
      new Promise((resolve) => {
        document.addEventListener("securitypolicyviolation", (e) => resolve(e.violatedDirective), { once: true });
        const s = document.createElement("script");
        s.textContent = "window.__pwned = 'inline';";
        document.body.append(s);
        setTimeout(() => resolve(null), 2000);
      }),
  );
  const pwned = await page.evaluate(() => window.__pwned ?? null);
  if (pwned !== null || dialogs.length) throw new Error(`script ran: ${pwned} ${dialogs}`);
  if (!String(blocked).startsWith("script-src")) throw new Error(`no CSP violation reported: ${blocked}`);
  console.log(JSON.stringify({ ok: true, blocked }));
} catch (e) {
  await out.shot(page, "xss-failure", { fullPage: true }).catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
