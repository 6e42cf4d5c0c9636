import { describe as suite, expect, it } from "vitest";
import { oneLine } from "./describe";

suite("oneLine", () => {
  it("marks every newline, also in text longer than a row holds (it used to keep them raw)", () => {
    const long = `first\n${"x".repeat(600)}\nlast`;
    const row = oneLine(long);
    expect(row).not.toMatch(/[\r\n]/);
    expect(row.startsWith("first⏎ xxx")).toBe(true);
    expect(oneLine("a\r\nb\nc")).toBe("a⏎ b⏎ c");
  });
});
