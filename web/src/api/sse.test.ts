import { describe, expect, it } from "vitest";
import { SseParser } from "./sse";

describe("SseParser", () => {
  it("parses frames split anywhere, with comments, multi-line data and CRLF", () => {
    const text = ": ping\n\nid: 4\nevent: exec.output\ndata: {\"a\":\ndata: 1}\n\r\nid: 5\r\nevent: chat.message\r\ndata: x\r\n\r\n";
    for (let cut = 0; cut <= text.length; cut++) {
      const p = new SseParser();
      const got = [...p.feed(text.slice(0, cut)), ...p.feed(text.slice(cut))];
      expect(got).toEqual([
        { id: "4", event: "exec.output", data: '{"a":\n1}' },
        { id: "5", event: "chat.message", data: "x" },
      ]);
    }
  });

  it("keeps the last id for frames without one and defaults the event name", () => {
    const p = new SseParser();
    expect(p.feed("id: 7\ndata: a\n\ndata: b\n\n")).toEqual([
      { id: "7", event: "message", data: "a" },
      { id: "7", event: "message", data: "b" },
    ]);
  });
});
