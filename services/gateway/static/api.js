// The gateway's REST API as the dashboard uses it: JSON in and out, and every
// failure turned into an ApiError carrying the message of Shoal's error envelope
// ({"error": {"code", "message", "details"}}) so the page can show it.

/** Most rows a list is read to: the page stays usable on a very large cluster. */
export const MAX_LIST_ROWS = 5000;

/** A request that failed: the envelope's code and message, or what went wrong. */
export class ApiError extends Error {
  constructor(method, path, status, code, message) {
    super(`${method} ${path}: ${message}${code ? ` (${code})` : ''}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** Fetches `path`; a network failure becomes an ApiError. Returns {response, text}. */
async function send(method, path, init) {
  let response;
  try {
    response = await fetch(path, { ...init, method });
  } catch (e) {
    throw new ApiError(method, path, 0, 'unreachable', `the gateway did not answer (${e.message})`);
  }
  return { response, text: await response.text() };
}

/** The ApiError for a reply that is not a success: the envelope's, or the body's start. */
function failure(method, path, response, text) {
  let envelope = null;
  try {
    envelope = JSON.parse(text).error;
  } catch {
    // Not JSON: the body itself is the message.
  }
  if (envelope && envelope.message) {
    return new ApiError(method, path, response.status, envelope.code, envelope.message);
  }
  const detail = text.trim().slice(0, 200) || response.statusText || 'no body';
  return new ApiError(method, path, response.status, `http_${response.status}`, detail);
}

/** Sends `method path` and returns the parsed JSON body, or throws an ApiError. */
export async function request(method, path, body) {
  const init = { headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const { response, text } = await send(method, path, init);
  if (!response.ok) throw failure(method, path, response, text);
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(method, path, response.status, 'bad_reply', 'the reply was not JSON');
  }
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body);

/** `/api/cluster/health`: its report whether healthy (200) or not (503). */
export async function health() {
  const path = '/api/cluster/health';
  const { response, text } = await send('GET', path, { headers: { Accept: 'application/json' } });
  if (response.status !== 200 && response.status !== 503) throw failure('GET', path, response, text);
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError('GET', path, response.status, 'bad_reply', 'the reply was not JSON');
  }
}

/** `path` with the query parameters that have a value. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(key, String(value));
  }
  const q = query.toString();
  return q ? `${path}?${q}` : path;
}

/**
 * Every row of a paged list (`{<key>: [...], count, next?}`), following `next`
 * through `after=` up to MAX_LIST_ROWS. Returns {rows, truncated}.
 */
export async function listAll(path, key, params = {}) {
  const rows = [];
  let after;
  for (;;) {
    const page = await get(withQuery(path, { ...params, after }));
    rows.push(...(page[key] || []));
    if (!page.next || rows.length >= MAX_LIST_ROWS) {
      return { rows, truncated: Boolean(page.next) };
    }
    after = page.next;
  }
}

export const api = {
  nodes: () => listAll('/api/cluster/nodes', 'nodes'),
  assignments: () => listAll('/api/cluster/assignments', 'assignments'),
  leader: () => get('/api/cluster/leader'),
  strategy: () => get('/api/cluster/balance'),
  setStrategy: (s) => post(withQuery('/api/cluster/balance', { strategy: s })),
  drain: (id) => post(`/api/cluster/nodes/${encodeURIComponent(id)}/drain`),
  undrain: (id) => post(`/api/cluster/nodes/${encodeURIComponent(id)}/undrain`),
  history: (agent) => get(withQuery('/api/cluster/history', { agent })),
  events: () => new EventSource('/api/cluster/events'),
};

/** `/metrics` as text; `null` when the gateway serves none (404). */
export async function metricsText() {
  const accept = 'application/openmetrics-text, text/plain';
  const { response, text } = await send('GET', '/metrics', { headers: { Accept: accept } });
  if (response.status === 404) return null;
  if (!response.ok) throw failure('GET', '/metrics', response, text);
  return text;
}
