// Reports the initial JavaScript (the entry chunk and what index.html preloads) gzipped, against
// the 250 KB budget; lazily loaded pages are listed apart. Exits 1 over budget.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const out = process.env.ASTRAFORGE_WEB_OUT ?? "dist";
const BUDGET = 250 * 1024;
const html = readFileSync(join(out, "index.html"), "utf8");
const initial = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.js)"/g)].map((m) => m[1]);
const gz = (f) => gzipSync(readFileSync(join(out, f))).length;
const total = initial.reduce((n, f) => n + gz(f), 0);
const lazy = readdirSync(join(out, "assets")).filter((f) => f.endsWith(".js") && !initial.includes(`assets/${f}`));
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
console.log(`initial JS (gzip): ${kb(total)} of ${kb(BUDGET)} budget [${initial.join(", ")}]`);
console.log(`lazy chunks (gzip): ${lazy.map((f) => `${f} ${kb(gz(`assets/${f}`))}`).join(", ")}`);
if (total > BUDGET) {
  console.error("initial JS over budget");
  process.exit(1);
}
