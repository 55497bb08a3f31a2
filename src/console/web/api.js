// The JSON API under /api/v1/ (docs/console.md): one fetch wrapper that turns every failure
// into an ApiError carrying the API's error code and message, so pages can show them as-is.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** 503s are retriable (a coordinator or leader is moving): the next poll may succeed. */
  get retriable() {
    return this.status === 503 || this.status === 0;
  }
}

export async function api(method, path, body) {
  // Same-origin credentials: on a listener with authentication the browser asks for a user
  // name and password once (the 401's `WWW-Authenticate: Basic`) and sends them with every
  // call after; `same-origin` is fetch's default, spelled out so no change of default drops it.
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  // Every write declares JSON, a DELETE without a body too: the API refuses writes without it
  // (a cross-site page cannot send it without a CORS preflight the server never grants).
  if (method !== "GET" && method !== "HEAD") init.headers["Content-Type"] = "application/json";
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch("/api/v1" + path, init);
  } catch (e) {
    throw new ApiError(0, "NETWORK_ERROR", `Cannot reach the broker's HTTP listener (${e.message}).`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && typeof data === "object" ? data.error ?? data : null;
    const code = (error && error.code) || `HTTP_${response.status}`;
    let message = (error && (error.message || (typeof error === "string" ? error : ""))) || text || response.statusText;
    if (response.status === 401) {
      message = `${message} Reload the page to sign in again.`;
    } else if (response.status === 403 && error && error.operation) {
      // An ACL refusal: the message names the missing operation and resource.
      message = `Not allowed: ${message}`;
    }
    throw new ApiError(response.status, code, message);
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

/** Encodes one path segment (topic names may hold dots, group ids almost anything). */
export const seg = (s) => encodeURIComponent(s);
