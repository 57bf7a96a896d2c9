// One device's signaling connection to a Huddle node (docs/protocol.md).
//
// Opens `GET /v1/ws`, authenticates with `hello`, matches replies to requests by id (with a
// timeout), dispatches server events by type, refreshes the token before it expires, and
// after a drop reconnects with exponential backoff and full jitter, sending `hello` again with
// the same device id. Every successful `hello` fires `ready`; the chat device listens for it
// to send `chat.sync`, which is what makes a reconnect lossless.

import { backoffDelay } from "./backoff.js";

/** @typedef {import("./types.js").HelloOk} HelloOk */
/** @typedef {"idle" | "connecting" | "open" | "reconnecting" | "closed"} ConnectionState */
/** @typedef {() => Promise<string>} TokenProvider */

export const PROTOCOL = 1;
export const CLIENT_NAME = "huddle-web/0.1";
export const REQUEST_TIMEOUT_MS = 15000;
// Refresh this long before the token's expiry (the server warns 60 s before it).
export const REFRESH_LEAD_MS = 90000;
export const PING_TIMEOUT_MS = 10000;
export const REFRESH_RETRY_MS = 1000;
// The node's default `max_frame_bytes` (docs/protocol.md), until a hello tells its own.
export const MAX_FRAME_BYTES = 64 * 1024;
// A connection counts as good once it has stayed open this long: only then does the backoff
// start again from its first step, so a node that accepts the hello and then closes at once
// (a frame it refuses, a flood) is not hammered in a loop.
export const STABLE_AFTER_MS = 10000;
// No node takes less (max_frame_bytes ≥ 1024): a frame this small cannot be why it closed with 1009.
const MIN_FRAME_LIMIT = 1024;
export const DEVICE_STORAGE_KEY = "huddle.device";

// Closes after which reconnecting cannot help (a token provider may fix the auth ones).
const AUTH_CLOSE_CODES = new Set([4001, 4003]);
const FATAL_CLOSE_CODES = new Set([4000, 4009]);
const AUTH_ERRORS = new Set(["invalid_token", "token_expired"]);

/** An `error` reply, or a request that could not be answered (`timeout`, `disconnected`). */
export class HuddleError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "HuddleError";
    this.code = code;
    this.detail = message;
  }
}

/**
 * A token from the node's development login (`POST /v1/dev/login`; off in production).
 * @param {string} baseUrl the node, e.g. `http://127.0.0.1:8080` ("" for the page's origin)
 * @param {string} name display name; the identity is derived from it
 * @returns {Promise<{token: string, identity: string, name: string, expires_at: number}>}
 */
export async function devLogin(baseUrl, name) {
  const response = await fetch(`${baseUrl.replace(/\/$/, "")}/v1/dev/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    throw new HuddleError(error.code || "http_" + response.status, error.message || "dev login refused");
  }
  return body;
}

/**
 * A stable id for this browser's device, kept in localStorage (random when there is none).
 * Reconnects with the same id replace a stale connection at once instead of waiting for
 * the heartbeat to drop it.
 * @param {string} [key]
 * @returns {string}
 */
export function deviceId(key = DEVICE_STORAGE_KEY) {
  const fresh = () => "w-" + randomId(12);
  try {
    let id = globalThis.localStorage.getItem(key);
    if (!id) {
      id = fresh();
      globalThis.localStorage.setItem(key, id);
    }
    return id;
  } catch {
    return fresh();
  }
}

/**
 * The identity (`sub`) an access token is for, read without checking it (the node checks).
 * @param {string} token
 * @returns {string | null}
 */
export function tokenIdentity(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}

/**
 * @param {number} length
 * @returns {string}
 */
export function randomId(length) {
  const bytes = new Uint8Array(Math.ceil(length / 2));
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, length);
}

/**
 * @typedef {object} ConnectionOptions
 * @property {string} [baseUrl] the node's HTTP origin; the page's origin when left out
 * @property {string} [token] an access token (from the integrator's backend or `devLogin`)
 * @property {TokenProvider} [tokenProvider] returns a fresh token: called before expiry, and
 *   when the node refuses the current one
 * @property {string} [device] this device's id; `deviceId()` when left out
 * @property {"online" | "away"} [status]
 * @property {number} [requestTimeoutMs]
 * @property {number} [refreshLeadMs]
 * @property {number} [pingIntervalMs] app-level ping period; the hello's `heartbeat_s` when left out
 * @property {number} [pingTimeoutMs]
 * @property {import("./backoff.js").BackoffOptions} [backoff]
 * @property {number} [maxFrameBytes] the largest frame to send, in bytes; the node's
 *   (hello's `max_frame_bytes`) when smaller, MAX_FRAME_BYTES before any hello
 */

export class HuddleConnection extends EventTarget {
  /** @param {ConnectionOptions} options */
  constructor(options = {}) {
    super();
    this.baseUrl = (options.baseUrl ?? globalThis.location.origin).replace(/\/$/, "");
    this.token = options.token ?? null;
    this.tokenProvider = options.tokenProvider ?? null;
    this.device = options.device ?? deviceId();
    this.status = options.status ?? "online";
    this.requestTimeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    this.refreshLeadMs = options.refreshLeadMs ?? REFRESH_LEAD_MS;
    this.pingIntervalMs = options.pingIntervalMs ?? null;
    this.pingTimeoutMs = options.pingTimeoutMs ?? PING_TIMEOUT_MS;
    this.backoff = options.backoff ?? {};
    this.maxFrameBytes = options.maxFrameBytes ?? null;
    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {HelloOk | null} */
    this.hello = null;
    /** @type {string | null} */
    this.identity = null;
    /** Why the connection is closed for good (an error code or close code), if it is. */
    this.closeReason = null;
    /** Server clock minus local clock, in ms, from the last hello. */
    this.clockOffsetMs = 0;
    this.attempt = 0;
    /** @type {WebSocket | null} */
    this._ws = null;
    this._ids = 0;
    /** @type {Map<string, {resolve: (v: any) => void, reject: (e: Error) => void, timer: any, type: string, bytes: number}>} */
    this._pending = new Map();
    this._timers = { reconnect: null, refresh: null, ping: null, stable: null };
    this._stopped = false;
    this._needFreshToken = false;
    this._opening = false;
    /** @type {((v: HelloOk) => void) | null} */
    this._firstOpen = null;
    /** @type {((e: Error) => void) | null} */
    this._firstFail = null;
    /** @type {Promise<HelloOk> | null} the pending `connect()` */
    this._connecting = null;
    this._onOnline = () => {
      if (this.state === "reconnecting") this._reconnectNow();
    };
    // The browser knows before any heartbeat that the network is gone: drop the socket now,
    // so requests fail fast (and the outbox keeps what they carried) instead of hanging.
    this._onOffline = () => {
      if (this._ws) this._drop(this._ws, "offline");
    };
  }

  get wsUrl() {
    return this.baseUrl.replace(/^http/, "ws") + "/v1/ws";
  }

  /** The largest frame this side sends, in bytes of UTF-8 (a larger one the node would close on). */
  get frameLimit() {
    const limits = [this.maxFrameBytes, this.hello?.max_frame_bytes].filter((n) => typeof n === "number" && n > 0);
    return limits.length ? Math.min(.../** @type {number[]} */ (limits)) : MAX_FRAME_BYTES;
  }

  /**
   * Open the connection; resolves with the first `hello` reply. Later drops reconnect on
   * their own (watch the `state` event). While one is pending, another call returns the same
   * promise; once open, the last `hello` reply.
   * @returns {Promise<HelloOk>}
   */
  connect() {
    if (this._connecting) return this._connecting;
    if (this.state === "open" && this.hello) return Promise.resolve(this.hello);
    this._stopped = false;
    this.closeReason = null;
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
    this._connecting = new Promise((resolve, reject) => {
      this._firstOpen = resolve;
      this._firstFail = reject;
    });
    const connecting = this._connecting;
    this._open();
    return connecting;
  }

  /** Close for good: no reconnect. A `connect()` still pending rejects with `closed`. */
  close() {
    this._stopped = true;
    this._settleFirst(new HuddleError("closed", "connection closed before it opened"));
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
    const ws = this._ws;
    this._ws = null;
    this._clearTimers();
    this._failPending("closed", "connection closed");
    if (ws) {
      detach(ws);
      ws.close(1000);
    }
    this._setState("closed");
  }

  /**
   * Listen to a server event type (e.g. `chat.message`), or to `state`, `ready`, `closed`,
   * `auth.refreshed`, or `*` for every server event. Returns a function that stops listening.
   * @param {string} type
   * @param {(detail: any) => void} handler
   * @returns {() => void}
   */
  on(type, handler) {
    /** @param {Event} event */
    const listener = (event) => handler(/** @type {CustomEvent} */ (event).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Send a request and wait for its reply: resolves with the `ok` frame, rejects with a
   * `HuddleError` carrying the error's `code` (or `timeout`, `disconnected`, `not_connected`).
   * @param {string} type
   * @param {Record<string, any>} [fields]
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<any>}
   */
  request(type, fields = {}, options = {}) {
    if (this.state !== "open" || !this._ws) {
      return Promise.reject(new HuddleError("not_connected", `not connected (${this.state})`));
    }
    return this._send(this._ws, type, fields, options.timeoutMs ?? this.requestTimeoutMs);
  }

  /**
   * Replace the connection's token (`auth.refresh`): with `token`, or one from the provider.
   * @param {string} [token]
   */
  async refreshToken(token) {
    const fresh = token ?? (this.tokenProvider ? await this.tokenProvider() : null);
    if (!fresh) throw new HuddleError("no_token", "no token to refresh with");
    const reply = await this.request("auth.refresh", { token: fresh });
    this.token = fresh;
    this._scheduleRefresh(reply.token_expires_at);
    this._emit("auth.refreshed", reply);
    return reply;
  }

  /**
   * @param {WebSocket} ws
   * @param {string} type
   * @param {Record<string, any>} fields
   * @param {number} timeoutMs
   */
  _send(ws, type, fields, timeoutMs) {
    const id = `r${++this._ids}`;
    const data = JSON.stringify({ ...fields, id, type });
    // The node closes the connection on a frame over its limit, and a reconnect would only
    // send it again: refuse it here.
    const limit = this.frameLimit;
    const bytes = frameBytes(data);
    if (bytes > limit) {
      return Promise.reject(new HuddleError("frame_too_large", `${type} is ${bytes} bytes; the node takes at most ${limit}`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new HuddleError("timeout", `no reply to ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer, type, bytes });
      try {
        ws.send(data);
      } catch (error) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(new HuddleError("disconnected", String(error)));
      }
    });
  }

  async _open() {
    // One socket at a time: a second one for the same device would replace the first.
    if (this._stopped || this._ws || this._opening) return;
    this._opening = true;
    try {
      this._setState(this.attempt === 0 && !this.hello ? "connecting" : "reconnecting");
      if ((this._needFreshToken || !this.token) && this.tokenProvider) {
        try {
          this.token = await this.tokenProvider();
          this._needFreshToken = false;
        } catch (error) {
          // Retried with backoff like a drop; the page may want to say why nothing connects.
          this._emit("warning", { what: "tokenProvider", error });
          this._scheduleReconnect();
          return;
        }
      }
      if (!this.token) {
        this._fail("no_token", "no token given and no token provider");
        return;
      }
      if (this._stopped) return;
      const ws = new WebSocket(this.wsUrl);
      this._ws = ws;
      ws.onmessage = (message) => this._receive(message.data);
      ws.onclose = (event) => this._closed(ws, event.code, event.reason);
      ws.onerror = () => {}; // a close event always follows
      ws.onopen = () => this._hello(ws);
    } catch (error) {
      this._scheduleReconnect();
    } finally {
      this._opening = false;
    }
  }

  /** @param {WebSocket} ws */
  async _hello(ws) {
    /** @type {HelloOk} */
    let reply;
    try {
      reply = await this._send(
        ws,
        "hello",
        { token: this.token, protocol: PROTOCOL, device: this.device, client: CLIENT_NAME, status: this.status },
        this.requestTimeoutMs,
      );
    } catch (error) {
      if (ws !== this._ws) return;
      const code = error instanceof HuddleError ? error.code : "internal";
      if (AUTH_ERRORS.has(code) && this.tokenProvider) {
        this._needFreshToken = true; // the close that follows reconnects with a new token
      } else if (AUTH_ERRORS.has(code) || code === "unsupported_protocol") {
        this._fail(code, error instanceof Error ? error.message : String(error));
      } else {
        this._drop(ws, code);
      }
      return;
    }
    if (ws !== this._ws) return;
    this.hello = reply;
    this.identity = reply.identity;
    this.device = reply.device;
    this.clockOffsetMs = reply.server_time_ms - Date.now();
    this._setState("open");
    this._timers.stable = setTimeout(() => (this.attempt = 0), STABLE_AFTER_MS);
    this._scheduleRefresh(reply.token_expires_at);
    this._schedulePing(ws, (this.pingIntervalMs ?? reply.heartbeat_s * 1000) || 20000);
    this._settleFirst(null, reply);
    this._emit("ready", reply);
  }

  /** @param {string} data */
  _receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "ok" || frame.type === "error") {
      const pending = this._pending.get(frame.re);
      if (!pending) return;
      this._pending.delete(frame.re);
      clearTimeout(pending.timer);
      if (frame.type === "ok") pending.resolve(frame);
      else pending.reject(new HuddleError(frame.code, frame.message));
      return;
    }
    if (frame.type === "auth.expiring") this._scheduleRefresh(frame.expires_at);
    this._emit(frame.type, frame);
    this._emit("*", frame);
  }

  /**
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   */
  _closed(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._clearTimers();
    if (code === 1009) this._failTooLarge();
    this._failPending("disconnected", `connection closed (${code})`);
    if (this._stopped) return;
    if (FATAL_CLOSE_CODES.has(code)) {
      this._fail(code === 4009 ? "replaced" : `close_${code}`, reason || `closed with ${code}`);
      return;
    }
    if (AUTH_CLOSE_CODES.has(code) || this._needFreshToken) {
      if (!this.tokenProvider) {
        this._fail(code === 4003 ? "token_expired" : "invalid_token", reason || "token refused");
        return;
      }
      this._needFreshToken = true;
    }
    this._scheduleReconnect();
  }

  /**
   * Give up on a socket that looks dead, without waiting for its close handshake.
   * @param {WebSocket} ws
   * @param {string} why
   */
  _drop(ws, why) {
    detach(ws);
    try {
      ws.close(4000 + 999, why.slice(0, 60));
    } catch {
      // already closing
    }
    this._closed(ws, 1006, why);
  }

  _scheduleReconnect() {
    if (this._stopped) return;
    this._setState("reconnecting");
    const delay = backoffDelay(this.attempt++, this.backoff);
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = setTimeout(() => {
      // Offline: wait for the browser's `online` event (or the next attempt) instead.
      if (globalThis.navigator?.onLine === false) this._scheduleReconnect();
      else this._open();
    }, delay);
  }

  _reconnectNow() {
    // A socket still opening would be orphaned (and, with the same device id, would then
    // replace the new one): let it finish instead.
    if (this._ws || this._opening) return;
    clearTimeout(this._timers.reconnect);
    this.attempt = 0;
    this._open();
  }

  /**
   * Ask the provider for a new token `refreshLeadMs` before `expiresAt`, or at half the
   * token's remaining life if that is later: a token that lives shorter than the lead (or an
   * `auth.expiring` that comes at once after each refresh) then never turns into a loop.
   * @param {number} expiresAt token expiry, s since the epoch (server clock)
   * @param {number} [minDelayMs]
   */
  _scheduleRefresh(expiresAt, minDelayMs = 0) {
    clearTimeout(this._timers.refresh);
    if (!this.tokenProvider || !expiresAt) return;
    const remaining = expiresAt * 1000 - this.clockOffsetMs - Date.now();
    const delay = Math.max(minDelayMs, remaining - this.refreshLeadMs, remaining / 2);
    this._timers.refresh = setTimeout(() => {
      this.refreshToken().catch((error) => {
        this._emit("warning", { what: "auth.refresh", error });
        // Try again while the token lasts; the node closes with 4003 at its expiry.
        if (this.state === "open") this._scheduleRefresh(expiresAt, REFRESH_RETRY_MS);
      });
    }, Math.min(delay, 2 ** 31 - 1));
  }

  /**
   * Browsers cannot see WebSocket pings: an app-level ping that goes unanswered is how this
   * side notices a dead connection.
   * @param {WebSocket} ws
   * @param {number} intervalMs
   */
  _schedulePing(ws, intervalMs) {
    clearTimeout(this._timers.ping);
    this._timers.ping = setTimeout(async () => {
      if (ws !== this._ws) return;
      try {
        await this._send(ws, "ping", {}, this.pingTimeoutMs);
      } catch (error) {
        if (ws === this._ws) this._drop(ws, "ping_timeout");
        return;
      }
      if (ws === this._ws) this._schedulePing(ws, intervalMs);
    }, intervalMs);
  }

  /**
   * @param {string} code
   * @param {string} message
   */
  _fail(code, message) {
    this.closeReason = code;
    this._settleFirst(new HuddleError(code, message));
    const ws = this._ws;
    this._stopped = true;
    this._ws = null;
    this._clearTimers();
    if (ws) {
      detach(ws);
      ws.close(1000);
    }
    this._setState("closed");
    this._emit("closed", { code, message });
  }

  /**
   * Settle the pending `connect()`, if any: with `error`, or with the hello `reply`.
   * @param {Error | null} error
   * @param {HelloOk} [reply]
   */
  _settleFirst(error, reply) {
    const open = this._firstOpen;
    const fail = this._firstFail;
    this._firstOpen = this._firstFail = null;
    this._connecting = null;
    if (error) fail?.(error);
    else if (reply) open?.(reply);
  }

  /**
   * The node closed with 1009: a frame was over its limit (smaller than this side's, or this
   * side had none yet). The largest request in flight is the one: it fails for good, so
   * whoever sent it does not send it again after the reconnect.
   */
  _failTooLarge() {
    let largest = null;
    for (const [id, pending] of this._pending) {
      if (pending.bytes > MIN_FRAME_LIMIT && (!largest || pending.bytes > largest[1].bytes)) largest = [id, pending];
    }
    if (!largest) return;
    const [id, pending] = largest;
    this._pending.delete(id);
    clearTimeout(pending.timer);
    pending.reject(new HuddleError("frame_too_large", `the node closed on ${pending.type} (${pending.bytes} bytes) as too large`));
  }

  /**
   * @param {string} code
   * @param {string} message
   */
  _failPending(code, message) {
    for (const [id, pending] of this._pending) {
      clearTimeout(pending.timer);
      pending.reject(new HuddleError(code, message));
      this._pending.delete(id);
    }
  }

  _clearTimers() {
    for (const key of /** @type {const} */ (["reconnect", "refresh", "ping", "stable"])) {
      clearTimeout(this._timers[key]);
      this._timers[key] = null;
    }
  }

  /** @param {ConnectionState} state */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state, attempt: this.attempt });
  }

  /**
   * @param {string} type
   * @param {any} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * The size of a frame on the wire: bytes of UTF-8, which is what the node's
 * `max_frame_bytes` counts.
 * @param {string} data
 * @returns {number}
 */
export function frameBytes(data) {
  return new TextEncoder().encode(data).length;
}

/** @param {WebSocket} ws */
function detach(ws) {
  ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
}
