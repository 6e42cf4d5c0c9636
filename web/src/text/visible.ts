/**
 * Agent and tenant text (commands, their output, file names, diff lines, titles, chat) shown as what
 * it is. React already renders it as text, never markup; this also makes invisible characters
 * visible: a bidi override or isolate (U+202E makes `invoice\u202Egnp.js` read as `invoicesj.png`) becomes
 * a `⟨U+202E⟩` mark, and a control character (an ANSI escape's ESC, NUL, BEL, DEL) its Unicode
 * "control picture" (`␛`). Newlines, tabs and carriage returns are kept.
 */
const BIDI = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g;

export function visible(text: string): string {
  return text
    .replace(BIDI, (c) => `⟨U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`)
    .replace(CONTROL, (c) => String.fromCharCode(c === "\u007F" ? 0x2421 : 0x2400 + c.charCodeAt(0)));
}
