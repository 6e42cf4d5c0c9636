import { describe, expect, it } from "vitest";
import { gitPath, parsePatch, splitRows } from "./parse";

const PATCH = `diff --git a/calc.py b/calc.py
index 1..2 100644
--- a/calc.py
+++ b/calc.py
@@ -1,3 +1,3 @@
 def add(a, b):
-    return a - b
+    return a + b
 # end
diff --git a/old.txt b/old.txt
deleted file mode 100644
--- a/old.txt
+++ /dev/null
@@ -1 +0,0 @@
-to be deleted
diff --git a/data.bin b/data.bin
new file mode 100644
Binary files /dev/null and b/data.bin differ
`;

describe("parsePatch", () => {
  it("splits files and numbers lines on both sides", () => {
    const files = parsePatch(PATCH);
    expect(files.map((f) => [f.oldPath, f.newPath, f.binary])).toEqual([
      ["calc.py", "calc.py", false],
      ["old.txt", null, false],
      ["data.bin", "data.bin", true],
    ]);
    expect(files[0].hunks[0].lines).toEqual([
      { kind: "context", text: "def add(a, b):", oldNo: 1, newNo: 1 },
      { kind: "del", text: "    return a - b", oldNo: 2, newNo: null },
      { kind: "add", text: "    return a + b", oldNo: null, newNo: 2 },
      { kind: "context", text: "# end", oldNo: 3, newNo: 3 },
    ]);
  });

  it("pairs deletions with the additions after them side by side", () => {
    const rows = splitRows(parsePatch(PATCH)[0].hunks[0]);
    expect(rows.map((r) => [r.left?.oldNo ?? null, r.right?.newNo ?? null])).toEqual([[1, 1], [2, 2], [3, 3]]);
  });
});

describe("gitPath", () => {
  it("undoes git's quoting of names with non-ASCII or control characters, and drops the prefix", () => {
    expect(gitPath('"b/<img src=x onerror=alert(1)>\\342\\200\\256gnp.js"', "b/")).toBe("<img src=x onerror=alert(1)>\u202Egnp.js");
    expect(gitPath('"a/say \\"hi\\"\\tthere\\\\.txt"', "a/")).toBe('say "hi"\tthere\\.txt');
    expect(gitPath('"b/caf\\303\\251.md"', "b/")).toBe("café.md");
  });

  it("takes plain names as they are, without the tab git adds after a name with a space", () => {
    expect(gitPath("b/my file.txt\t", "b/")).toBe("my file.txt");
    expect(gitPath("b/calc.py", "b/")).toBe("calc.py");
  });

  it("reads a quoted name in a whole patch", () => {
    const patch = 'diff --git "a/\\342\\200\\256x.js" "b/\\342\\200\\256x.js"\nnew file mode 100644\n--- /dev/null\n+++ "b/\\342\\200\\256x.js"\n@@ -0,0 +1 @@\n+1\n';
    expect(parsePatch(patch).map((f) => [f.oldPath, f.newPath])).toEqual([[null, "\u202Ex.js"]]);
  });
});
