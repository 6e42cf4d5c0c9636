// End to end: a DeepAgent conversation in the browser. The new-conversation form starts one on a new
// sandbox; a message gets a reply driven by the scripted model server: the write_file tool call shows
// with its result, the reply's text streams in (the model server holds the turn after its first
// token until this script prints STREAMING, so the partial text is seen deterministically), and the
// file the agent wrote is read back in the sandbox's console; a second reply is cancelled mid-stream.
import { accessibilityProblems, artifacts, env, launch } from "./lib.mjs";

const API = env("API_URL");
const KEY = env("API_KEY");
const out = artifacts();
const browser = await launch();
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(String(e.stack ?? e)));
page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
try {
  await page.goto(API);
  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "Conversations" }).click();
  await page.getByLabel("Title").fill("calc in the browser");
  await page.getByLabel("Model", { exact: true }).fill("stub-model");
  await page.getByLabel("System prompt").fill("You write small Python files.");
  const problems = await accessibilityProblems(page);
  await page.getByRole("button", { name: "Start conversation" }).click();
  await page.waitForURL((u) => /^\/conversations\/cv-[^/]+$/.test(u.pathname));
  await page.getByLabel("Message", { exact: true }).fill("Write calc.py with add()");
  await page.getByRole("button", { name: "Send" }).click();
  const transcript = page.getByTestId("transcript");
  await transcript.locator('[data-kind="user"]').getByText("Write calc.py with add()").waitFor();
  const tool = transcript.locator('[data-kind="tool"][data-tool="write_file"]');
  await tool.getByText("done").waitFor({ timeout: 180_000 }); // the sandbox starts first
  const streaming = transcript.locator('[data-kind="assistant"][data-streaming="true"]');
  await streaming.waitFor({ timeout: 60_000 });
  const partial = await streaming.innerText();
  await page.getByRole("button", { name: "Cancel reply" }).waitFor();
  if (!(await page.getByRole("button", { name: "Cancel reply" }).isEnabled())) throw new Error("cancel disabled mid-reply");
  await out.shot(page, "21-conversation-streaming");
  console.log("STREAMING"); // the test releases the model's turn now
  const settled = transcript.locator('[data-kind="assistant"][data-streaming="false"]').getByText("calc.py is written and adds two numbers.");
  await settled.waitFor({ timeout: 60_000 });
  await transcript.locator('[data-kind="reply"][data-state="completed"]').waitFor();
  await tool.locator("summary").click();
  await tool.getByText("/workspace/calc.py").first().waitFor();
  problems.push(...(await accessibilityProblems(page)));
  await out.shot(page, "22-conversation-replied", { fullPage: true });
  // a second reply, held by the model server after its first token, cancelled from the page
  await page.getByLabel("Message", { exact: true }).fill("Now count to a thousand");
  await page.getByRole("button", { name: "Send" }).click();
  await transcript.locator('[data-kind="assistant"][data-streaming="true"]').waitFor({ timeout: 60_000 });
  await page.getByRole("button", { name: "Cancel reply" }).click();
  await transcript.locator('[data-kind="reply"][data-state="cancelled"]').waitFor({ timeout: 60_000 });
  if (await transcript.locator('[data-streaming="true"]').count()) throw new Error("a cancelled turn still streams");
  // the file it wrote, read in its sandbox's console
  await page.locator('a[href^="/sandboxes/"]').first().click();
  const command = page.getByLabel("Command to run");
  await command.fill("cat /workspace/calc.py");
  await command.press("Enter");
  const consoleLog = page.getByRole("log", { name: "Console output" });
  await consoleLog.getByText("exit 0").waitFor({ timeout: 60_000 });
  if (!(await consoleLog.innerText()).includes("def add(a, b):")) throw new Error(`console: ${await consoleLog.innerText()}`);
  await out.shot(page, "23-conversation-file");
  if (problems.length) throw new Error(`accessibility: ${JSON.stringify(problems)}`);
  console.log(JSON.stringify({ ok: true, partial }));
} catch (e) {
  await out.shot(page, "conversation-failure", { fullPage: true }).catch(() => {});
  console.error(e, errors);
  process.exitCode = 1;
} finally {
  await browser.close();
}
