/** The API client: the key lives in sessionStorage (gone with the tab) and travels only as a header. */

const KEY = "astraforge.apiKey";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = null,
  ) {
    super(message);
  }
}

export function getKey(): string | null {
  return globalThis.sessionStorage?.getItem(KEY) ?? null; // none outside a browser (unit tests)
}

export function setKey(key: string): void {
  sessionStorage.setItem(KEY, key);
  window.dispatchEvent(new Event("astraforge:auth"));
}

export function clearKey(): void {
  sessionStorage.removeItem(KEY);
  window.dispatchEvent(new Event("astraforge:auth"));
}

export function authHeaders(key = getKey()): Record<string, string> {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** JSON request against the API; an error answer becomes an ApiError with the API's code and message. */
export async function api<T>(path: string, init: RequestInit & { json?: unknown; key?: string } = {}): Promise<T> {
  const { json, key, ...rest } = init;
  const headers: Record<string, string> = { ...authHeaders(key ?? getKey()), ...(rest.headers as Record<string, string>) };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { ...rest, headers, body: json !== undefined ? JSON.stringify(json) : rest.body });
  const text = await r.text();
  const body = text ? safeJson(text) : null;
  if (!r.ok) {
    const err = body?.error ?? {};
    if (r.status === 401 && key === undefined) clearKey();
    throw new ApiError(r.status, err.code ?? `http_${r.status}`, err.message ?? (text || r.statusText), err.details);
  }
  return body as T;
}

function safeJson(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export function query(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A fresh Idempotency-Key per user action, so a retried click never starts twice. */
export function idempotencyKey(): string {
  return crypto.randomUUID();
}
