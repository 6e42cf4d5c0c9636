// Shared pieces of the end-to-end scripts: Debian's Chromium through playwright-core (no browser
// download), a TCP proxy in front of the API that can cut the network, and small checks.
import { mkdirSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    // root on CI: Chromium's own sandbox needs user namespaces it may not get there
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

export function artifacts() {
  const dir = env("ARTIFACTS");
  mkdirSync(dir, { recursive: true });
  return {
    dir,
    shot: (page, name, opts = {}) => page.screenshot({ path: join(dir, `${name}.png`), ...opts }),
  };
}

/**
 * A TCP proxy to the API. `cut()` destroys every open connection (the network drops) and holds
 * new ones until `restore()`; `held` counts the connections waiting.
 */
export async function cuttableProxy(target) {
  const { hostname, port } = new URL(target);
  const open = new Set();
  let down = false;
  let waiting = [];
  const pipe = (client) => {
    const upstream = net.connect(Number(port), hostname);
    open.add(client).add(upstream);
    const close = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on("error", close).on("close", close);
    upstream.on("error", close).on("close", close);
    client.pipe(upstream).pipe(client);
  };
  const server = net.createServer((client) => {
    if (down) {
      client.pause();
      client.on("error", () => {});
      waiting.push(client);
    } else pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    get held() {
      return waiting.length;
    },
    cut() {
      down = true;
      for (const s of open) s.destroy();
      open.clear();
    },
    restore() {
      down = false;
      const clients = waiting;
      waiting = [];
      for (const c of clients) {
        pipe(c);
        c.resume();
      }
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

export async function until(what, fn, timeoutMs = 120_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function apiGet(apiUrl, key, path) {
  const r = await fetch(`${apiUrl}${path}`, { headers: { Authorization: `Bearer ${key}` } });
  if (!r.ok) throw new Error(`GET ${path}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
}

/** Every record of a stream from the REST API (the reference the timeline is compared with). */
export async function allEvents(apiUrl, key, streamId) {
  const items = [];
  let after = -1;
  for (;;) {
    const page = await apiGet(apiUrl, key, `/v1/streams/${streamId}/events?limit=1000&after=${after}`);
    items.push(...page.items);
    if (page.next_after === null) return items;
    after = page.next_after;
  }
}

/**
 * Accessibility checks of what is on screen: every form control has a label, every button a name,
 * and text meets WCAG AA contrast against the background it sits on (4.5:1; 3:1 for large text).
 */
export async function accessibilityProblems(page) {
  return page.evaluate(() => {
    const problems = [];
    for (const el of document.querySelectorAll("input, select, textarea")) {
      if (el.type === "hidden") continue;
      const named = el.labels?.length || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
      if (!named) problems.push(`unlabelled ${el.tagName.toLowerCase()} ${el.outerHTML.slice(0, 80)}`);
    }
    for (const el of document.querySelectorAll("button, a[href]")) {
      if (!(el.textContent?.trim() || el.getAttribute("aria-label"))) problems.push(`unnamed ${el.outerHTML.slice(0, 80)}`);
    }
    // any CSS colour (Tailwind 4 writes oklch) to sRGB + alpha, by painting one pixel
    const ctx = Object.assign(document.createElement("canvas"), { width: 1, height: 1 }).getContext("2d", { willReadFrequently: true });
    const rgb = (s) => {
      ctx.clearRect(0, 0, 1, 1);
      ctx.fillStyle = s;
      ctx.fillRect(0, 0, 1, 1);
      const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
      return [r, g, b, a / 255];
    };
    const lum = ([r, g, b]) => {
      const c = [r, g, b].map((v) => {
        v /= 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c[3] > 0.5) return c;
      }
      return [255, 255, 255];
    };
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    while (walker.nextNode()) {
      const node = walker.currentNode;
      const el = node.parentElement;
      if (!el || seen.has(el) || !node.textContent.trim()) continue;
      seen.add(el);
      const style = getComputedStyle(el);
      const box = el.getBoundingClientRect();
      if (box.width === 0 || box.height === 0 || style.visibility === "hidden" || el.closest(".sr-only, [aria-hidden=true]"))
        continue;
      if (el.closest("button:disabled, [disabled]")) continue; // WCAG exempts inactive controls
      const fg = lum(rgb(style.color));
      const bg = lum(background(el));
      const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) problems.push(`contrast ${ratio.toFixed(2)} "${node.textContent.trim().slice(0, 40)}"`);
    }
    return problems;
  });
}

/** What has focus, seen from the page: its tag, role, accessible name (roughly) and whether a focus
 * indicator is drawn (an outline or a ring box-shadow in its computed style). */
export async function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return { tag: "body", name: "", visible: false, interactive: false };
    const style = getComputedStyle(el);
    const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 1;
    const ring = style.boxShadow && style.boxShadow !== "none";
    const label = el.getAttribute("aria-label") || (el.labels && el.labels[0]?.textContent) || el.textContent || "";
    const interactive = el.matches("a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex='-1']), [role=tab], [role=radio]");
    return {
      tag: el.tagName.toLowerCase(),
      role: el.getAttribute("role") ?? "",
      type: el.getAttribute("type") ?? "",
      name: label.replace(/\s+/g, " ").trim(),
      visible: Boolean(outline || ring),
      interactive,
      inDialog: Boolean(el.closest("[role=dialog], [role=alertdialog]")),
      html: el.outerHTML.slice(0, 120),
    };
  });
}

/**
 * Keyboard only: presses Tab (Shift+Tab with `back`) until the focused element's name matches, at most
 * `max` times. Every element focus stops on must show a focus indicator; those that do not are
 * collected in `unringed`.
 */
export async function tabTo(page, name, { back = false, max = 80, unringed = [] } = {}) {
  const wanted = name instanceof RegExp ? name : new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? "Shift+Tab" : "Tab");
    const f = await focused(page);
    if (f.interactive && !f.visible) unringed.push(f.html);
    if (wanted.test(f.name)) return f;
  }
  throw new Error(`keyboard: ${max} ${back ? "Shift+Tab" : "Tab"} presses never reached ${wanted}`);
}
