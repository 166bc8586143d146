// HTTP helpers shared by the pages: JSON in, JSON out, errors as ApiError with the contract's code.

/** A refused or failed request: `code` is the contract's error code (or "network_error"). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function send(url, options) {
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", ...options });
  } catch (error) {
    throw new ApiError(0, "network_error", "The server cannot be reached.");
  }
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    throw new ApiError(
      response.status,
      body?.error ?? `http_${response.status}`,
      body?.message ?? response.statusText,
      Number.isFinite(retryAfter) ? retryAfter : null,
    );
  }
  return body;
}

/** POST a JSON body (JSON needs no CSRF token: a cross-site page cannot send one). */
export function postJSON(url, payload) {
  return send(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(payload),
  });
}

export function getJSON(url) {
  return send(url, { headers: { Accept: "application/json" } });
}

/** A one-shot notice carried to the next page (e.g. "You have logged out") without the URL. */
export const handoff = {
  set(text) {
    try {
      sessionStorage.setItem("chat.notice", text);
    } catch {
      // Storage can be disabled; the notice is a courtesy.
    }
  },
  take() {
    try {
      const text = sessionStorage.getItem("chat.notice");
      sessionStorage.removeItem("chat.notice");
      return text;
    } catch {
      return null;
    }
  },
};
