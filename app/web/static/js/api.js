// PicFilter API client: tokens, silent refresh, one error type for every error shape.
const BASE = "/api/v1";
const KEY = "picfilter.session";
const listeners = new Set();
let session = load();
let refreshTimer = null;
let refreshing = null;

function load() {
  try { return JSON.parse(localStorage.getItem(KEY)) || null; } catch { return null; }
}
function save(s) {
  session = s;
  if (s) localStorage.setItem(KEY, JSON.stringify(s)); else localStorage.removeItem(KEY);
  schedule();
  listeners.forEach((fn) => fn(s));
}
export function onSession(fn) { listeners.add(fn); }
export function currentSession() { return session; }

/** An API error, whatever its shape: {error:{code,message,details}}, FastAPI's {detail},
 *  a plain-text body from a proxy, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, details, retryAfter) {
    super(message);
    this.status = status; this.code = code; this.details = details || null;
    this.retryAfter = retryAfter;
  }
}

export async function errorFrom(resp) {
  let body = null; let text = "";
  try { text = await resp.text(); body = JSON.parse(text); } catch { /* not JSON */ }
  const ra = resp.headers.get("Retry-After");
  const retryAfter = ra ? (Number.isFinite(+ra) ? +ra : Math.max(0, (Date.parse(ra) - Date.now()) / 1000)) : null;
  if (body && body.error) {
    return new ApiError(resp.status, body.error.code, body.error.message, body.error.details, retryAfter);
  }
  if (body && body.detail) {
    const msg = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    return new ApiError(resp.status, "http_error", msg, null, retryAfter);
  }
  return new ApiError(resp.status, "http_error", text.slice(0, 200) || resp.statusText, null, retryAfter);
}

// Tabs share the session (localStorage). Refresh tokens rotate and a reused one revokes the
// whole session, so a tab adopts what another tab stored, re-reads it before refreshing, and
// the timers are jittered so that two tabs rarely refresh at the same moment.
window.addEventListener("storage", (e) => {
  if (e.key !== KEY) return;
  session = load();
  schedule();
  listeners.forEach((fn) => fn(session));
});

function schedule() {
  clearTimeout(refreshTimer);
  if (!session) return;
  const wait = Math.max(5000, session.expiresAt - Date.now() - 60000 - Math.random() * 30000);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.min(wait, 2 ** 31 - 1));
}

function store(pair, user) {
  save({
    access: pair.access_token, refresh: pair.refresh_token,
    expiresAt: Date.now() + pair.expires_in * 1000, user: user || (session && session.user),
  });
}

/** Rotate the refresh token; one refresh at a time. A failure ends the session. */
export function refresh() {
  if (!session) return Promise.reject(new ApiError(401, "not_authenticated", "Not logged in"));
  const stored = load();
  if (stored && stored.refresh !== session.refresh && stored.expiresAt > Date.now() + 30000) {
    session = stored; schedule(); // another tab already rotated the tokens
    return Promise.resolve();
  }
  if (!refreshing) {
    refreshing = raw("POST", "/auth/refresh", { refresh_token: session.refresh }, false)
      .then((pair) => store(pair))
      .catch((e) => {
        if (e.status === 401) save(null);
        throw e;
      })
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function raw(method, path, body, auth = true, extra = {}) {
  const headers = { ...(extra.headers || {}) };
  if (auth && session) headers.Authorization = `Bearer ${session.access}`;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path.startsWith("/api") ? path : BASE + path, { method, headers, body: payload, signal: extra.signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network_error", "The server cannot be reached. Check your connection and try again.");
  }
  if (!resp.ok) throw await errorFrom(resp);
  if (extra.raw) return resp;
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.blob();
}

/** A request with the access token; a 401 refreshes once and retries. */
export async function api(method, path, body, extra = {}) {
  try {
    return await raw(method, path, body, true, extra);
  } catch (e) {
    if (e.status === 401 && session && !extra.noRetry) {
      await refresh();
      return raw(method, path, body, true, extra);
    }
    throw e;
  }
}

export async function login(email, password) {
  const pair = await raw("POST", "/auth/login", { email, password }, false);
  store(pair, null);
  const me = await api("GET", "/auth/me");
  store(pair, me);
  return me;
}
export async function register(email, username, password) {
  await raw("POST", "/auth/register", { email, username, password }, false);
  return login(email, password);
}
export async function logout() {
  const s = session;
  save(null);
  if (s) await raw("POST", "/auth/logout", { refresh_token: s.refresh }, false).catch(() => {});
}

let schemaPromise = null;
/** The OpenAPI document, fetched once when a screen needs to know what the server offers. */
export function openapi() {
  if (!schemaPromise) schemaPromise = fetch(BASE + "/openapi.json").then((r) => r.json()).catch(() => null);
  return schemaPromise;
}
export async function schemaEnum(schema, prop) {
  const doc = await openapi();
  const s = doc && doc.components && doc.components.schemas && doc.components.schemas[schema];
  const p = s && s.properties && s.properties[prop];
  if (!p) return null;
  const pick = (x) => (x.enum ? x.enum : x.const !== undefined ? [x.const] : []);
  let values = pick(p);
  for (const alt of p.anyOf || p.oneOf || []) values = values.concat(pick(alt));
  return { values, default: p.default };
}

/** Follow a job until it finishes: the SSE stream (fetch, so the token is sent), else polling. */
export async function watchJob(id, onUpdate, pollMs = 1000) {
  const done = (j) => ["completed", "failed", "cancelled"].includes(j.status);
  try {
    const resp = await api("GET", `/jobs/${id}/events`, undefined, { raw: true });
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = ""; let last = null;
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
        const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
        if (!data) continue;
        last = JSON.parse(data);
        onUpdate(last, "live");
        if (done(last)) { reader.cancel().catch(() => {}); return last; }
      }
    }
    if (last && done(last)) return last;
  } catch (e) {
    if (e.status === 404) throw e;
  }
  for (;;) {
    const j = await api("GET", `/jobs/${id}`);
    onUpdate(j, "polling");
    if (done(j)) return j;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

schedule();
