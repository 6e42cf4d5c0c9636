// End to end: hostile content from agents and tenants, put in through the public API (a run's title,
// request, commands, their output and the files they wrote; a sandbox console's command and output;
// a conversation's title, messages, tool call and result), loaded page by page in Chromium. On every
// page: no script ran (a flag the payloads would set, no dialog), no element came from the payloads
// (no <img>, <script>, javascript: link in the page), the markup is on screen as text, invisible
// characters (a right-to-left override, ANSI escapes) are shown as marks, and a very long line does
// not widen the page.
import { artifacts, env, launch } from "./lib.mjs";

const API = env("API_URL");
const KEY = env("API_KEY");
const RUN_ID = env("RUN_ID");
const SANDBOX_ID = env("SANDBOX_ID");
const CONVERSATION_ID = env("CONVERSATION_ID");
const out = artifacts();
const browser = await launch();
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
const dialogs = [];
page.on("dialog", (d) => {
  dialogs.push(d.message());
  d.dismiss();
});
const problems = [];

/** What is wrong with the page now, as a list (empty: nothing). */
async function inspect(where, { rtl = true, ansi = true } = {}) {
  const seen = await page.evaluate(() => {
    const main = document.getElementById("main");
    const text = main.innerText;
    return {
      pwned: window.__pwned ?? null,
      injected: [...main.querySelectorAll("img, script, iframe, object, embed, [onerror], [onload], a[href^='javascript:' i]")].map((e) => e.outerHTML.slice(0, 100)),
      markupAsText: text.includes("<img src=x onerror="),
      rawRtl: text.includes("\u202E"),
      markedRtl: text.includes("⟨U+202E⟩"),
      rawEsc: text.includes("\u001b"),
      markedEsc: text.includes("␛[31m"),
      overflow: document.documentElement.scrollWidth - window.innerWidth,
    };
  });
  const found = [];
  if (seen.pwned !== null || dialogs.length) found.push(`script ran: ${seen.pwned} ${dialogs}`);
  if (seen.injected.length) found.push(`elements from the payload: ${seen.injected.join(" ")}`);
  if (!seen.markupAsText) found.push("the markup is not shown as text");
  if (seen.rawRtl) found.push("a raw right-to-left override reorders the text");
  if (rtl && !seen.markedRtl) found.push("the right-to-left override is not shown");
  if (seen.rawEsc) found.push("a raw ESC character is on screen");
  if (ansi && !seen.markedEsc) found.push("the ANSI escape is not shown");
  if (seen.overflow > 0) found.push(`the page is ${seen.overflow}px wider than the window`);
  problems.push(...found.map((f) => `${where}: ${f}`));
  await out.shot(page, `7x-hostile-${where}`, { fullPage: true });
}

try {
  await page.goto(API);
  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator(`[data-run="${RUN_ID}"]`).waitFor({ timeout: 60_000 });
  await inspect("runs-list", { ansi: false });

  await page.locator(`[data-run="${RUN_ID}"] a`).click();
  await page.locator('[data-state="awaiting_review"]').first().waitFor({ timeout: 60_000 });
  await page.locator('[data-type="exec.output"]').first().waitFor();
  await inspect("run-timeline");
  await page.locator('[data-type="exec.output"]').first().click(); // the record in full, beside the list
  await page.getByRole("complementary").waitFor();
  await inspect("run-record");
  await page.getByRole("tab", { name: "Changes" }).click();
  await page.locator("[data-file]").first().waitFor();
  // the file's name as it is in the repository: not git's quoted form, its override marked
  const names = await page.locator("[data-file] > summary").allInnerTexts();
  if (!names.some((n) => n.startsWith("<img src=x onerror=window.__pwned=1>⟨U+202E⟩gnp.js"))) problems.push(`diff file names: ${JSON.stringify(names)}`);
  await inspect("run-diff-unified");
  await page.getByRole("radio", { name: "Side by side" }).click();
  await inspect("run-diff-split");
  await page.getByRole("tab", { name: "Request" }).click();
  await inspect("run-request", { ansi: false });

  await page.goto(`${API}/sandboxes/${SANDBOX_ID}`);
  await page.locator('[data-state="ready"]').first().waitFor({ timeout: 120_000 });
  const command = page.getByLabel("Command to run");
  await command.fill(`printf '<img src=x onerror=window.__pwned=1> \\033[31mred\\033[0m \\342\\200\\256evil\\n'; printf 'A%.0s' $(seq 1 3000); echo`);
  await command.press("Enter");
  await page.getByRole("log", { name: "Console output" }).getByText("exit 0").waitFor({ timeout: 60_000 });
  await page.locator('[data-type="exec.output"]').first().waitFor();
  await inspect("sandbox-console");

  await page.goto(`${API}/conversations/${CONVERSATION_ID}`);
  const transcript = page.getByTestId("transcript");
  await transcript.locator('[data-kind="reply"][data-state="completed"]').waitFor({ timeout: 180_000 });
  for (const summary of await transcript.locator('[data-kind="tool"] summary').all()) await summary.click();
  await transcript.getByTestId("tool-result").first().waitFor();
  await inspect("conversation", { ansi: false });

  if (problems.length) throw new Error(problems.join("\n"));
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  await out.shot(page, "hostile-failure", { fullPage: true }).catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
