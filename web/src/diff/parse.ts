/** A unified diff (git's format) split into files, hunks and numbered lines. */

export interface DiffLine {
  kind: "context" | "add" | "del";
  text: string;
  oldNo: number | null;
  newNo: number | null;
}

export interface Hunk {
  header: string;
  lines: DiffLine[];
}

export interface FileDiff {
  oldPath: string | null;
  newPath: string | null;
  binary: boolean;
  hunks: Hunk[];
}

export function fileName(f: FileDiff): string {
  return f.newPath ?? f.oldPath ?? "?";
}

const ESCAPES: Record<string, number> = { a: 7, b: 8, t: 9, n: 10, v: 11, f: 12, r: 13, '"': 34, "\\": 92 };

/**
 * A path as git writes it in a `---`/`+++` line: without its `a/`/`b/` prefix, the tab git adds after
 * a name with a space, and git's C-style quoting (a name with a quote, a backslash, a control or a
 * non-ASCII character: `"b/\342\200\256gnp.js"` is `\u202Egnp.js`) undone, UTF-8 decoded.
 */
export function gitPath(raw: string, prefix: string): string {
  let path = raw.replace(/\t$/, "");
  if (path.length >= 2 && path.startsWith('"') && path.endsWith('"')) {
    const bytes: number[] = [];
    const body = path.slice(1, -1);
    for (let i = 0; i < body.length; i++) {
      const c = body[i];
      if (c !== "\\" || i + 1 >= body.length) {
        bytes.push(...new TextEncoder().encode(c));
        continue;
      }
      const next = body[++i];
      const octal = /^[0-7]{3}/.exec(body.slice(i, i + 3));
      if (octal) {
        bytes.push(parseInt(octal[0], 8) & 0xff);
        i += 2;
      } else bytes.push(ESCAPES[next] ?? next.charCodeAt(0));
    }
    path = new TextDecoder().decode(new Uint8Array(bytes));
  }
  return path.startsWith(prefix) ? path.slice(prefix.length) : path;
}

export function parsePatch(patch: string): FileDiff[] {
  const files: FileDiff[] = [];
  let file: FileDiff | null = null;
  let hunk: Hunk | null = null;
  let oldNo = 0;
  let newNo = 0;
  for (const line of patch.split("\n")) {
    if (line.startsWith("diff --git ")) {
      const m = /^diff --git a\/(.*) b\/(.*)$/.exec(line);
      file = { oldPath: m?.[1] ?? null, newPath: m?.[2] ?? null, binary: false, hunks: [] };
      files.push(file);
      hunk = null;
    } else if (!file) {
      continue;
    } else if (line.startsWith("@@")) {
      const m = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(line);
      oldNo = m ? Number(m[1]) : 0;
      newNo = m ? Number(m[2]) : 0;
      hunk = { header: line, lines: [] };
      file.hunks.push(hunk);
    } else if (hunk) {
      if (line.startsWith("+")) hunk.lines.push({ kind: "add", text: line.slice(1), oldNo: null, newNo: newNo++ });
      else if (line.startsWith("-")) hunk.lines.push({ kind: "del", text: line.slice(1), oldNo: oldNo++, newNo: null });
      else if (line.startsWith(" ")) hunk.lines.push({ kind: "context", text: line.slice(1), oldNo: oldNo++, newNo: newNo++ });
      // "\ No newline at end of file" and the trailing empty line carry no content
    } else if (line.startsWith("--- ")) {
      file.oldPath = line === "--- /dev/null" ? null : gitPath(line.slice(4), "a/");
    } else if (line.startsWith("+++ ")) {
      file.newPath = line === "+++ /dev/null" ? null : gitPath(line.slice(4), "b/");
    } else if (line.startsWith("Binary files") || line === "GIT binary patch") {
      file.binary = true;
    }
  }
  return files;
}

export interface SplitRow {
  left: DiffLine | null;
  right: DiffLine | null;
}

/** Side-by-side rows: a run of deletions is paired with the additions that follow it. */
export function splitRows(hunk: Hunk): SplitRow[] {
  const rows: SplitRow[] = [];
  const lines = hunk.lines;
  let i = 0;
  while (i < lines.length) {
    if (lines[i].kind === "context") {
      rows.push({ left: lines[i], right: lines[i] });
      i++;
      continue;
    }
    const dels: DiffLine[] = [];
    const adds: DiffLine[] = [];
    while (i < lines.length && lines[i].kind === "del") dels.push(lines[i++]);
    while (i < lines.length && lines[i].kind === "add") adds.push(lines[i++]);
    for (let j = 0; j < Math.max(dels.length, adds.length); j++) rows.push({ left: dels[j] ?? null, right: adds[j] ?? null });
  }
  return rows;
}
