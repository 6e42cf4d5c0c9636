// End to end: the sandboxes page creates a sandbox, the exec console runs a command in it and shows
// its output, the sandbox's own timeline shows the command live, and Stop ends it (state badge).
import { accessibilityProblems, artifacts, env, launch } from "./lib.mjs";

const API = env("API_URL");
const KEY = env("API_KEY");
const out = artifacts();
const browser = await launch();
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
try {
  await page.goto(API);
  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "Sandboxes" }).click();
  await page.getByRole("button", { name: "New sandbox" }).click();
  await page.waitForURL((u) => /^\/sandboxes\/[^/]+$/.test(u.pathname));
  await page.locator('[data-state="ready"]').first().waitFor({ timeout: 120_000 });
  const command = page.getByLabel("Command to run");
  await command.fill("echo hello from $(whoami); uname -s");
  await command.press("Enter");
  const consoleLog = page.getByRole("log", { name: "Console output" });
  await consoleLog.getByText("exit 0").waitFor({ timeout: 60_000 });
  if (!(await consoleLog.innerText()).includes("hello from")) throw new Error(`console: ${await consoleLog.innerText()}`);
  await page.locator('[data-type="exec.output"]').getByText("hello from").first().waitFor();
  const problems = await accessibilityProblems(page);
  await out.shot(page, "11-sandbox-console");
  await page.getByRole("button", { name: "Stop" }).click();
  // it asks first: declining keeps the sandbox, confirming stops it
  const confirm = page.getByRole("alertdialog", { name: "Stop this sandbox?" });
  await confirm.getByRole("button", { name: "Keep it running" }).click();
  await confirm.waitFor({ state: "detached" });
  if ((await page.locator("[data-state]").first().getAttribute("data-state")) !== "ready") throw new Error("declining the stop changed the sandbox");
  await page.getByRole("button", { name: "Stop" }).click();
  await confirm.getByRole("button", { name: "Stop sandbox" }).click();
  await page.locator('[data-state="terminated"]').first().waitFor({ timeout: 60_000 });
  await page.getByRole("link", { name: "Sandboxes" }).click();
  await page.getByRole("table", { name: "Sandboxes" }).waitFor();
  await out.shot(page, "12-sandboxes");
  if (problems.length) throw new Error(`accessibility: ${JSON.stringify(problems)}`);
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  await out.shot(page, "sandboxes-failure", { fullPage: true }).catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
