import { beforeAll, describe, expect, it, vi } from "vitest";

let Page: typeof import("./App").Page;

beforeAll(async () => {
  vi.stubGlobal("window", new EventTarget()); // the router listens for popstate when it loads
  ({ Page } = await import("./App"));
});

describe("Page", () => {
  it("mounts a fresh page per run, sandbox, conversation and audited stream", () => {
    for (const base of ["/runs", "/sandboxes", "/conversations", "/audit"]) {
      const a = Page({ path: `${base}/one` });
      const b = Page({ path: `${base}/two` });
      expect(a.type).toBe(b.type);
      expect([a.key, b.key]).toEqual(["one", "two"]);
    }
  });
});
