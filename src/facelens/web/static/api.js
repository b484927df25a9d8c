// Talking to the REST API: the key in sessionStorage, a fetch wrapper that sends it, errors.
const KEY = "facelens.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (key) => sessionStorage.setItem(KEY, key);
export const clearKey = () => sessionStorage.removeItem(KEY);

// Called on 401 (key unknown or revoked); app.js sets it to go back to the sign-in page.
let onUnauthorized = () => {};
export const setUnauthorizedHandler = (fn) => { onUnauthorized = fn; };

async function errorOf(response) {
  let code = "http_" + response.status;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

// raw(path, options) -> Response (ok) or throws ApiError. options: method, json, form, key,
// signal (an AbortSignal: a stream stops when its page closes).
export async function raw(path, { method = "GET", json, form, key = getKey(), signal } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // FormData: the browser sets the multipart boundary
  }
  // "overloaded" (inference queue full, 429) is retried twice after Retry-After (capped).
  for (let attempt = 0; ; attempt += 1) {
    let response;
    try {
      response = await fetch(path, { method, headers, body, signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "network", `cannot reach the service: ${e.message}`);
    }
    if (response.ok) return response;
    const error = await errorOf(response);
    const wait = Number(response.headers.get("Retry-After") || 1);
    if (error.code === "overloaded" && attempt < 2 && wait <= 5) {
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      continue;
    }
    if (response.status === 401 && key === getKey()) onUnauthorized(error);
    throw error;
  }
}

// api(path, options) -> parsed JSON, or null for 204.
export async function api(path, options) {
  const response = await raw(path, options);
  return response.status === 204 ? null : response.json();
}

export const enc = encodeURIComponent;
