import { describe, expect, it } from "vitest";
import { visible } from "./visible";

describe("visible", () => {
  it("marks bidi overrides and isolates, so a name reads in the order it is stored", () => {
    expect(visible("invoice\u202Egnp.js")).toBe("invoice⟨U+202E⟩gnp.js");
    expect(visible("a\u2066b\u2069c\u200F")).toBe("a⟨U+2066⟩b⟨U+2069⟩c⟨U+200F⟩");
  });

  it("shows control characters (an ANSI escape, NUL, BEL, DEL) as control pictures", () => {
    expect(visible("\u001b[31mred\u001b[0m\u0000\u0007\u007f")).toBe("␛[31mred␛[0m␀␇␡");
  });

  it("keeps newlines, tabs, carriage returns, markup characters and other scripts as they are", () => {
    const text = "line 1\n\tline 2\r\n<img src=x onerror=alert(1)> שלום 你好";
    expect(visible(text)).toBe(text);
  });
});
