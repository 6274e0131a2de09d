// The API as the pages use it: JSON in and out, problem documents (RFC 9457) thrown as
// `Problem`, and the server's clock kept so countdowns never trust the device's.

/** A problem document the server answered with (or a network failure, status 0). */
export class Problem extends Error {
  constructor(status, body, retryAfter = null) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    /** Seconds to wait before trying again (the Retry-After header), when the server said. */
    this.retryAfter = retryAfter === null ? null : Number(retryAfter);
    this.code = body?.code || (status === 0 ? 'network' : 'unknown');
    this.body = body || {};
  }
}

let offsetMs = 0;

/** Remembers how far the device's clock is from the server's (from any `server_time`). */
export function syncClock(serverTime) {
  if (serverTime) offsetMs = Date.parse(serverTime) - Date.now();
}

/** The server's clock now, in ms since the epoch. */
export function serverNow() {
  return Date.now() + offsetMs;
}

/**
 * Calls the API. `token` goes in the Authorization header; `headers` adds others.
 * Resolves to the JSON body (null for an empty one), throws a `Problem` otherwise.
 */
export async function api(path, { method = 'GET', body, token, headers = {} } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new Problem(0, { detail: String(e) });
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) throw new Problem(response.status, json, response.headers.get('Retry-After'));
  if (json && typeof json === 'object' && 'server_time' in json) syncClock(json.server_time);
  return { body: json, status: response.status, headers: response.headers };
}

/** A random key for one purchase attempt (Idempotency-Key: visible ASCII). */
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** `h:mm:ss` or `m:ss` for a number of milliseconds (never negative). */
export function clock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** An element with attributes and children (strings become text, never HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
