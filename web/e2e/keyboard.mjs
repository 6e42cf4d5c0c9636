// End to end with the keyboard alone (Tab, Shift+Tab, Enter, Space, Escape, arrows; no click, no
// element.focus()): sign in, the runs list, a run (its diff in both layouts, the rerun dialog opened
// and closed with focus back on its button, a reject and a cancel asked and declined, approval), a sandbox (a
// command in the console, Stop confirmed), a conversation (a message and its reply). Every element
// focus stops on draws a focus indicator; a page change moves focus to its heading and announces it.
import { artifacts, env, focused, launch, tabTo, until } from "./lib.mjs";

const API = env("API_URL");
const KEY = env("API_KEY");
const RUN_ID = env("RUN_ID");
const RUN_TITLE = env("RUN_TITLE");
const REPLY = env("REPLY");
const out = artifacts();
const browser = await launch();
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
const unringed = [];
const tab = (name, opts = {}) => tabTo(page, name, { unringed, ...opts });
const press = (key) => page.keyboard.press(key);
const expectFocus = async (what, test) => {
  const f = await focused(page);
  if (!test(f)) throw new Error(`focus after ${what}: ${JSON.stringify(f)}`);
  return f;
};
/** A page change by the router: focus on the new page's heading, and its name announced. */
const arrived = async (heading) => {
  await page.getByRole("heading", { level: 1, name: heading }).waitFor();
  await until(`focus on the heading ${heading}`, async () => {
    const f = await focused(page);
    return f.tag === "h1" && heading.test(f.name);
  }, 10_000);
  await until(`"${heading}" announced`, async () => heading.test((await page.getByTestId("route-announcer").textContent()).replace(/ page$/, "")), 10_000);
};

try {
  // sign in
  await page.goto(API);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await tab("API key");
  await page.keyboard.type(KEY);
  await press("Enter");
  await arrived(/^Runs$/);

  // the runs list, then the run
  await tab(RUN_TITLE);
  await press("Enter");
  await page.waitForURL((u) => u.pathname === `/runs/${RUN_ID}`);
  await arrived(new RegExp(RUN_TITLE.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
  await page.locator('[data-state="awaiting_review"]').first().waitFor({ timeout: 60_000 });

  // its diff: the tab list by arrows, the layout toggle by arrows and Space
  await tab("Timeline");
  await press("ArrowRight");
  await expectFocus("ArrowRight in the tab list", (f) => f.role === "tab" && f.name === "Changes");
  await page.locator('[data-file="calc.py"]').waitFor();
  await tab("Unified");
  await press("ArrowRight");
  await expectFocus("ArrowRight in the layout toggle", (f) => f.name === "Side by side");
  await press("Space");
  await page.locator('[role="radio"][data-state="on"]', { hasText: "Side by side" }).waitFor();
  await out.shot(page, "61-keyboard-diff-split", { fullPage: true });

  // the rerun dialog: opened, closed with Escape, focus back on its button
  await tab("Rerun with guidance…", { back: true });
  await press("Enter");
  await page.getByRole("dialog", { name: "Rerun with guidance" }).waitFor();
  await expectFocus("opening the rerun dialog", (f) => f.inDialog);
  await press("Escape");
  await page.getByRole("dialog").waitFor({ state: "detached" });
  await until("focus back on the rerun button", async () => (await focused(page)).name === "Rerun with guidance…", 5_000);

  // reject asks first; Escape keeps the run under review
  await tab("Reject", { back: true });
  await press("Enter");
  await page.getByRole("alertdialog", { name: "Reject this run?" }).waitFor();
  await expectFocus("opening the reject confirmation", (f) => f.inDialog && f.name === "Keep reviewing");
  await press("Tab");
  await press("Tab"); // focus is trapped: past the last choice it comes back to the first
  await expectFocus("Tab twice in the confirmation", (f) => f.inDialog && f.name === "Keep reviewing");
  await press("Escape");
  await page.getByRole("alertdialog").waitFor({ state: "detached" });
  await until("focus back on Reject", async () => (await focused(page)).name === "Reject", 5_000);
  if ((await page.locator('[data-state]').first().getAttribute("data-state")) !== "awaiting_review") throw new Error("the declined reject changed the run");

  // cancelling the run asks first too; Escape keeps it
  await tab("Cancel run");
  await press("Enter");
  await page.getByRole("alertdialog", { name: "Cancel this run?" }).waitFor();
  await expectFocus("opening the cancel confirmation", (f) => f.inDialog && f.name === "Keep the run");
  await press("Escape");
  await page.getByRole("alertdialog").waitFor({ state: "detached" });
  await until("focus back on Cancel run", async () => (await focused(page)).name === "Cancel run", 5_000);

  // approve
  await tab("Approve", { back: true });
  await press("Enter");
  await page.locator('[data-state="merged"]').first().waitFor({ timeout: 120_000 });
  await until("focus on the page after the approval disabled its button", async () => (await focused(page)).tag === "h1", 10_000);
  await out.shot(page, "62-keyboard-approved");

  // a sandbox: created, a command in its console, stopped after a confirmation
  await tab("Sandboxes", { back: true });
  await press("Enter");
  await arrived(/^Sandboxes$/);
  await tab("New sandbox");
  await press("Enter");
  await page.waitForURL((u) => /^\/sandboxes\/[^/]+$/.test(u.pathname));
  await page.locator('[data-state="ready"]').first().waitFor({ timeout: 120_000 });
  await tab("Command to run");
  await page.keyboard.type("echo typed at the keyboard");
  await press("Enter");
  const consoleLog = page.getByRole("log", { name: "Console output" });
  await consoleLog.getByText("exit 0").waitFor({ timeout: 60_000 });
  if (!(await consoleLog.innerText()).includes("typed at the keyboard")) throw new Error(`console: ${await consoleLog.innerText()}`);
  await tab("Stop", { back: true });
  await press("Enter");
  await page.getByRole("alertdialog", { name: "Stop this sandbox?" }).waitFor();
  await press("Tab");
  await expectFocus("Tab in the stop confirmation", (f) => f.name === "Stop sandbox");
  await out.shot(page, "63-keyboard-stop-confirm");
  await press("Enter");
  await page.locator('[data-state="terminated"]').first().waitFor({ timeout: 60_000 });
  await expectFocus("the stop confirmation closing", (f) => f.tag !== "body");

  // a conversation: started from the form, a message sent, the reply shown
  await tab("Conversations", { back: true });
  await press("Enter");
  await arrived(/^Conversations$/);
  await tab("Model");
  await page.keyboard.type("stub-model");
  await tab("Start conversation");
  await press("Enter");
  await page.waitForURL((u) => /^\/conversations\/cv-[^/]+$/.test(u.pathname));
  await tab("Message");
  await page.keyboard.type("Say hello to the keyboard");
  await tab("Send");
  await press("Enter");
  // Send is disabled while the box is empty: focus goes back to the box for the next message
  await until("focus back on the message box after sending", async () => (await focused(page)).name === "Message", 10_000);
  await page.getByTestId("transcript").locator('[data-kind="assistant"][data-streaming="false"]').getByText(REPLY).waitFor({ timeout: 180_000 });
  await out.shot(page, "64-keyboard-conversation");

  if (unringed.length) throw new Error(`focus without a visible indicator: ${JSON.stringify([...new Set(unringed)])}`);
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  await out.shot(page, "keyboard-failure", { fullPage: true }).catch(() => {});
  console.error(e, JSON.stringify(await focused(page).catch(() => null)));
  process.exitCode = 1;
} finally {
  await browser.close();
}
