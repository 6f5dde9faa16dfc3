// The REST client: the session (tokens kept per tab), requests with problem+json errors,
// and refreshing the access token once when it has expired.
//
// Tokens live in sessionStorage, not localStorage: each browser tab (window) holds its
// own session, so a patient and a provider can be signed in side by side, and closing
// the tab forgets the tokens.

const SESSION_KEY = "carewire.session";

/** A failed request, with the server's problem document when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `request failed (${status})`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
    this.code = problem?.code;
  }
}

let session = load();
let refreshing = null;
const listeners = new Set();

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY)) ?? null;
  } catch {
    return null;
  }
}

function store(next) {
  session = next;
  if (next) sessionStorage.setItem(SESSION_KEY, JSON.stringify(next));
  else sessionStorage.removeItem(SESSION_KEY);
  for (const listener of listeners) listener(session);
}

/** The signed-in session (`{access, refresh, account_id, role}`), or null. */
export const currentSession = () => session;

/** Calls `listener(session)` whenever the session starts or ends. */
export function onSessionChange(listener) {
  listeners.add(listener);
}

function fromTokens(tokens) {
  return {
    access: tokens.access_token,
    refresh: tokens.refresh_token,
    account_id: tokens.account_id,
    role: tokens.role,
  };
}

/** Ends the session locally (the server side is ended by `logout`). */
export function forget() {
  store(null);
}

async function refresh() {
  if (!session?.refresh) throw new ApiError(401, { title: "Unauthorized", detail: "Please sign in again." });
  // One refresh at a time: the refresh token rotates, and presenting a spent one ends
  // the whole session family on the server.
  refreshing ??= (async () => {
    try {
      const res = await fetch("/v1/auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: session.refresh }),
      });
      if (!res.ok) {
        forget();
        throw new ApiError(res.status, await problemOf(res));
      }
      store(fromTokens(await res.json()));
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function problemOf(res) {
  try {
    return await res.json();
  } catch {
    return { title: res.statusText, status: res.status };
  }
}

/**
 * Sends a request. `body` is sent as JSON; `etag` becomes If-Match; `key` becomes
 * Idempotency-Key. Resolves to `{data, etag}`; rejects with an ApiError.
 */
export async function request(method, path, { body, etag, key, auth = true } = {}) {
  const attempt = async () => {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (etag !== undefined) headers["if-match"] = etag;
    if (key) headers["idempotency-key"] = key;
    if (auth && session?.access) headers.authorization = `Bearer ${session.access}`;
    return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  };
  let res = await attempt();
  if (res.status === 401 && auth && session?.refresh) {
    await refresh();
    res = await attempt();
  }
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  const data = res.status === 204 ? null : await res.json();
  return { data, etag: res.headers.get("etag") };
}

export const get = async (path) => (await request("GET", path)).data;
export const post = async (path, body, options = {}) => (await request("POST", path, { ...options, body })).data;

/** Signs in; the session starts. */
export async function login(email, password) {
  const { data } = await request("POST", "/v1/auth/login", { body: { email, password }, auth: false });
  store(fromTokens(data));
  return session;
}

/** Creates a patient account, then signs in with it. */
export async function register(email, password) {
  await request("POST", "/v1/auth/register", { body: { email, password }, auth: false });
  return login(email, password);
}

/** Ends the session on the server and here. */
export async function logout() {
  try {
    if (session) await request("POST", "/v1/auth/logout");
  } finally {
    forget();
  }
}

/** A single-use ticket for one WebSocket handshake. */
export async function wsTicket() {
  return (await post("/v1/ws/ticket")).ticket;
}

/** The ws:// or wss:// URL of a path on this server. */
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}
