// End to end: one browser tab, two tenants. Tenant A signs in, sees its integration on the alerts
// page, signs out; tenant B signs in in the same tab. B's first paint of the alerts page (caught
// while B's own request is held) must show nothing of A's, and the key is never in a URL, the
// Referer or localStorage, and sign-out removes it from sessionStorage.
import { artifacts, env, launch } from "./lib.mjs";

const API = env("API_URL");
const KEY_A = env("API_KEY");
const KEY_B = env("OTHER_API_KEY");
const NAME_A = env("INTEGRATION_NAME");
const out = artifacts();
const browser = await launch();
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
const leaks = [];
page.on("request", (r) => {
  const seen = r.url() + (r.headers()["referer"] ?? "");
  if (seen.includes(KEY_A) || seen.includes(KEY_B)) leaks.push(r.url());
});
const storage = () => page.evaluate(() => ({ session: { ...sessionStorage }, local: { ...localStorage } }));
try {
  await page.goto(API);
  await page.getByLabel("API key").fill(KEY_A);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "Alerts" }).click();
  await page.getByText(NAME_A).first().waitFor({ timeout: 60_000 });
  const signedIn = await storage();
  if (!Object.values(signedIn.session).includes(KEY_A)) throw new Error("the key is not in sessionStorage");
  if (JSON.stringify(signedIn.local).includes(KEY_A)) throw new Error("the key is in localStorage");

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API key").waitFor();
  if (JSON.stringify(await storage()).includes(KEY_A)) throw new Error("sign-out left the key in storage");

  // hold B's list request: whatever is on screen meanwhile came from the tab's memory, not from B's answer
  let held;
  const asked = new Promise((resolve) => {
    page.route("**/v1/integrations?*", (route) => {
      held = route;
      resolve();
    });
  });
  await page.getByLabel("API key").fill(KEY_B);
  await page.getByRole("button", { name: "Sign in" }).click();
  await asked;
  await page.getByRole("heading", { name: "Alerts" }).waitFor();
  const firstPaint = await page.locator("main").innerText();
  await out.shot(page, "41-other-tenant-first-paint");
  if (firstPaint.includes(NAME_A)) throw new Error(`tenant B's page shows tenant A's integration: ${firstPaint}`);
  await held.continue();
  await page.getByText("No integrations").waitFor({ timeout: 30_000 });
  if (leaks.length) throw new Error(`the API key travelled in a URL or Referer: ${leaks}`);
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  await out.shot(page, "signout-failure", { fullPage: true }).catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
