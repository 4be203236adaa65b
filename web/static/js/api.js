// The dashboard's only way to the cluster: the public HTTP API, with the
// token from sessionStorage in the Authorization header.
const KEY = 'dispatcher_token';

export const status = { node: '', onNode: () => {}, onUnauthorized: () => {} };

export class ApiError extends Error {
  constructor(code, message) { super(message); this.code = code; }
  // missing tells whether the route itself is absent on this server (not yet
  // built, or an older node), rather than the resource.
  get missing() { return this.code === 405 || (this.code === 404 && /^Not found: /.test(this.message)); }
}

function cookieToken() {
  const m = document.cookie.match(/(?:^|;\s*)dispatcher_token=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : '';
}

export function token() {
  let t = sessionStorage.getItem(KEY);
  if (!t) { t = cookieToken(); if (t) sessionStorage.setItem(KEY, t); }
  return t || '';
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
  document.cookie = `${KEY}=${encodeURIComponent(t)}; Path=/; SameSite=Strict`;
}

// api fetches /v1<path> and returns the decoded JSON (null for an empty
// body); any non-2xx answer throws an ApiError with Flink's error text.
export async function api(path, { method = 'GET', body, form } = {}) {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let payload;
  if (form) payload = form;
  else if (body !== undefined) { headers['Content-Type'] = 'application/json'; payload = JSON.stringify(body); }
  let resp;
  try {
    resp = await fetch('/v1' + path, { method, headers, body: payload, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'This node cannot be reached: ' + e.message);
  }
  const node = resp.headers.get('X-Dispatcher-Node');
  if (node && node !== status.node) { status.node = node; status.onNode(node); }
  const text = await resp.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = text; } }
  if (resp.status === 401) { status.onUnauthorized(); throw new ApiError(401, 'The API token was not accepted.'); }
  if (!resp.ok) {
    const msg = data && data.errors ? data.errors.join('; ') : `HTTP ${resp.status}`;
    throw new ApiError(resp.status, msg);
  }
  return data;
}

// optional returns fallback when the route is absent on this server.
export async function optional(path, fallback = undefined) {
  try { return await api(path); } catch (e) { if (e.missing) return fallback; throw e; }
}
