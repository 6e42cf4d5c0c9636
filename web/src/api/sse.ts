/**
 * Server-sent events over fetch. EventSource cannot send an Authorization header, and the API key
 * must never travel in a URL, so the stream is read with fetch and parsed here.
 */

export interface SseMessage {
  id: string | null;
  event: string;
  data: string;
}

/** An incremental SSE parser (the WHATWG rules we need: id, event, data, comments, CR/LF/CRLF). */
export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";
  private id: string | null = null;

  /** Feed a decoded chunk; returns the messages it completed (a chunk may end mid-line). */
  feed(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const out: SseMessage[] = [];
    let start = 0;
    // our server writes plain LF: then a line end is one indexOf, never a scan for a CR that is not there
    const lfOnly = !this.buffer.includes("\r");
    for (;;) {
      const nl = lfOnly ? this.buffer.indexOf("\n", start) : this.nextLineEnd(start);
      if (nl < 0) break;
      const line = this.buffer.slice(start, nl);
      // a CR at the very end may be the first half of a CRLF still in flight: keep it
      if (this.buffer[nl] === "\r" && nl + 1 === this.buffer.length) break;
      start = nl + (this.buffer[nl] === "\r" && this.buffer[nl + 1] === "\n" ? 2 : 1);
      this.line(line, out);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  private nextLineEnd(from: number): number {
    const lf = this.buffer.indexOf("\n", from);
    const cr = this.buffer.indexOf("\r", from);
    if (lf < 0) return cr;
    if (cr < 0) return lf;
    return Math.min(lf, cr);
  }

  private line(line: string, out: SseMessage[]): void {
    if (line === "") {
      if (this.data.length) out.push({ id: this.id, event: this.event || "message", data: this.data.join("\n") });
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's keep-alive ping
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }
}
