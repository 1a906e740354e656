/**
 * tessera.js — the browser client of tessera.
 *
 * An ES module with no dependencies and no build step. tessera serves it at `GET /tessera.js`
 * (with `Access-Control-Allow-Origin: *`, so a page of another origin can import it); the same
 * file is the `tessera-js` package (packages/tessera-js), with type declarations.
 *
 * (One file of about 870 lines, 170 of them documentation and comments, because one file with
 * no build step is what a page imports: the helpers, then `createClient` and its client.)
 *
 *     import { createClient } from "https://auth.example.com/tessera.js";
 *     const tessera = createClient({ url: "https://auth.example.com" });
 *     tessera.on("session_ended", ({ reason }) => showSignIn("Your session has ended"));
 *     const user = await tessera.restore();          // null: nobody is signed in
 *     const res = await tessera.fetch("/api/todos");  // Authorization: Bearer …
 *
 * Where the tokens live: the refresh token only in tessera's `HttpOnly` cookie (every sign-in
 * asks for `"refresh_transport": "cookie"`); the access token only in this module's memory.
 * Nothing is written to localStorage, sessionStorage or a script-readable cookie.
 *
 * API
 *
 *   createClient({ url = location.origin, ...advanced }) → client
 *     All auth calls go to `${url}/api/auth/…` with `credentials: "include"`; the calls the
 *     refresh cookie authenticates (refresh, logout, upgrade) send `X-Requested-With: tessera`.
 *
 *   client.restore() → Promise<User | null>
 *     On page load: resumes the session the cookie holds (one refresh, then GET /me). Resolves
 *     null when there is none: no cookie (`client.state` is "signed_out") or a cookie tessera
 *     refused (`client.state` is "ended", `client.endReason` "ended"). Never starts a guest.
 *   client.signIn({ email | username, password }) → Promise<User>
 *   client.signUp({ email?, username?, password }) → Promise<User>   registers, then signs in
 *   client.signInAsGuest() → Promise<User>      only ever when called: the library never does
 *   client.upgrade({ email?, username?, password }) → Promise<User>
 *     Saves a guest's account in place (same user, same session). tessera rotates the refresh
 *     token in the same step, so this runs under the refresh lock.
 *   client.signOut({ everywhere = false } = {}) → Promise<void>
 *   client.changePassword(current, next) → Promise<{password_changed, sessions_ended}>
 *   client.deleteAccount(password?) → Promise<{deleted}>   (a guest gives no password)
 *   client.listSessions() → Promise<Session[]>;  client.revokeSession(id) → Promise<{revoked}>
 *   client.settings() → Promise<{allow_anonymous}>
 *   client.user        the last known user: the sign-in's `user`, or the last GET /me (which
 *                      adds `session_id`); null when signed out or ended
 *   client.getUser() → Promise<User>   GET /me
 *   client.fetch(input, init) → Promise<Response>
 *     `fetch` with `Authorization: Bearer <access token>`, for tessera or any resource server.
 *     Refreshes first when the token is due. On a 401 that says the token is no good — an
 *     `UNAUTHORIZED` error code, `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750), or
 *     a 401 without tessera's error envelope — it refreshes once and retries once. Any other
 *     401 (`INVALID_CREDENTIALS`: a wrong password) is returned as it is, and so is the retry's
 *     answer. (A retry resends `init`; a `ReadableStream` body cannot be sent twice.)
 *   client.getToken({ forceRefresh = false } = {}) → Promise<string>
 *     A valid access token on every call, refreshed when due — for WebSockets, EventSource
 *     URLs and other transports. `forceRefresh`: the token you hold was refused; get a new one
 *     (unless another caller already did).
 *   client.socketProtocols() → Promise<string[]>
 *     `["tessera", "tessera.bearer.<access token>"]` with a valid token, for each (re)connect of a
 *     WebSocket or Socket.IO client through `tessera gateway` (or any server that reads the token
 *     from the subprotocol): `new WebSocket(url, await client.socketProtocols())`, or Socket.IO's
 *     `protocols` option with `transports: ["websocket"]`. Ask again before every reconnect;
 *     after the session ended it rejects with `SessionEndedError` — stop reconnecting and say so.
 *   client.on(name, callback) → unsubscribe()
 *     "signed_in"       {user, restored?, otherTab?}
 *     "token_refreshed" {expiresAt, otherTab?}
 *     "user_updated"    {user, otherTab?}   (a guest saved its account)
 *     "signed_out"      {everywhere?, reason?}   this client signed out (reason
 *                       "account_deleted" after deleteAccount)
 *     "session_ended"   {reason}, once per session, then nothing more: no refresh, no retry.
 *        "ended"                tessera refused the refresh token: revoked, reused, signed out
 *                               in another browser or app, or expired (tessera does not say which)
 *        "cookie_missing"       the browser no longer sends the refresh cookie: it was
 *                               cleared, expired, or a sign-out on a page of another origin
 *                               deleted it
 *        "signed_out_elsewhere" another tab of this origin signed out
 *        "account_deleted"      another tab of this origin deleted the account
 *        "replaced"             the cookie now holds another session (a sign-in on a page of
 *                               another origin): this client never carries on as someone else
 *        "cookie_conflict"      the browser sent several refresh cookies — another site of
 *                               tessera's host (another port) set one — and tessera cleared
 *                               them: sign in again; tessera needs a hostname of its own
 *     "error"           {error}   a background refresh failed for a reason that is not the
 *                                 session's end (network, 5xx, 429); it is retried with backoff
 *   client.state      "signed_out" | "signed_in" | "ended";  client.endReason
 *   client.expiresAt  when the access token expires (ms since the epoch), or null
 *   client.close()    stops timers and leaves the tab channel
 *
 * Errors: `TesseraError` {code, message, status, requestId} for tessera's error answers;
 * `SessionEndedError` {reason} when there is no session to act for (reason: the `session_ended`
 * reason, or "not_signed_in" when this client has not signed in, or has signed out). Network
 * failures reject with fetch's own TypeError.
 *
 * Refresh. Due 5 minutes before expiry, or at 80 % of the token's lifetime when that is later;
 * a timer refreshes then, and any call that finds the token due refreshes first. One refresh
 * at a time: within a tab every caller shares one promise; across tabs of the origin a Web Lock
 * (`navigator.locks`, named after tessera's URL) lets one tab rotate the cookie at a time, and a
 * BroadcastChannel hands the new access token to the other tabs, which then skip their own
 * refresh. tessera rotates refresh tokens strictly, so a second rotation with a spent token
 * would end the session as a theft; this is what keeps that from ever happening. Without Web
 * Locks, rotations are serialised within the tab only; without BroadcastChannel, each tab
 * refreshes on its own (still one at a time). Sign-in, upgrade, sign-out and deletion, which
 * set or clear the cookie, hold the same lock.
 *
 * Never a silent downgrade. When the session ends, `session_ended` fires once, the access token
 * is forgotten, refreshing stops, and every later call rejects with `SessionEndedError` without
 * a request. The library never retries a dead refresh token, never signs in (as a guest or
 * anyone) by itself, and never carries on as another user. Only an explicit call — `restore()`,
 * `signIn()`, `signUp()`, `signInAsGuest()` — starts again. Tabs follow each other: a sign-in
 * in one tab is taken up by the others (`signed_in` with `otherTab: true`), except that a tab
 * whose session ended, or that holds a session, never follows another tab into a guest session.
 *
 * Advanced options of createClient, for tests and unusual hosts:
 *   fetch        the fetch to use (default: the global one)
 *   now          () => milliseconds since the epoch (default: Date.now)
 *   setTimeout, clearTimeout   timers (default: the global ones)
 *   locks        a LockManager-like `{request(name, callback)}`; null: no cross-tab lock
 *   channel      a BroadcastChannel-like `{postMessage, addEventListener}`; null: no tab channel
 *   frame        the link to tessera's frame (below): `(src, onMessage, onLoad) → {send, remove}`;
 *                null: no frame (default: a hidden iframe when `url` is of another origin)
 *
 * Deployments: same origin (tessera behind the app's proxy, or tessera's own page), or another
 * origin of the same site listed in tessera's `--allowed-origins` (CORS with credentials). Not
 * cross-site: the refresh cookie is `SameSite=Strict`.
 *
 * Pages of another origin: tessera's frame. Web Locks and BroadcastChannel are per origin, but
 * the refresh cookie is shared by tessera's own page and every allowed origin's page of the
 * browser; two of them rotating it at once would end the session as a reuse. So when `url` is
 * of another origin than the page's, the client loads tessera's `/tessera-frame.html` in a
 * hidden iframe (lazily: at the first call that needs the lock, or when a session begins) and
 * takes *tessera's origin's* lock through it — the lock tessera's own tabs use, shared with the
 * frame because a same-site frame is in their storage partition. Everything that rotates, sets
 * or clears the cookie runs under that lock: refresh, restore, sign-in, upgrade, sign-out and
 * deletion. The requests themselves still go from this page (CORS with credentials): the frame
 * only holds the lock, and its holding dies with the page. The frame also relays tessera's tab
 * channel both ways, so a sign-out or a refresh on tessera's page reaches this page at once
 * (`session_ended` "signed_out_elsewhere"), and this page's reach tessera's tabs. The client
 * keeps its own origin's channel as well. If the frame does not answer (not an allowed origin,
 * a tessera without the frame, a page CSP whose `frame-src` leaves tessera out) within 1 s of
 * its load or 5 s in all, the client does without it: its own origin's lock and channel, as
 * before — pages of one origin then never race each other, but may race tessera's own page.
 * A lock that the frame does not grant within 30 s fails the call (a background refresh retries
 * with backoff). An app page with a CSP must allow `frame-src <tessera's origin>`.
 */

const REFRESH_MARGIN_MS = 5 * 60 * 1000;
const REFRESH_FRACTION = 0.2;
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The WebSocket subprotocols of tessera (README, "Protecting your API"): the token rides in
 * `tessera.bearer.<jwt>`, and the server (or `tessera gateway`) selects `tessera`. */
const SOCKET_PROTOCOL = "tessera";
const SOCKET_TOKEN_PREFIX = "tessera.bearer.";
const EVENTS = ["signed_in", "token_refreshed", "user_updated", "signed_out", "session_ended", "error"];
/** How long tessera's frame may take to load before the client does without it. */
const FRAME_LOAD_MS = 5000;
/** After the frame's `load` event, how long its first message may still take. */
const FRAME_GRACE_MS = 1000;
/** How long to wait for tessera's refresh lock through the frame before giving up (an error). */
const FRAME_LOCK_MS = 30_000;

/** tessera answered with an error envelope (or not with one at all). */
export class TesseraError extends Error {
  constructor(code, message, status, requestId) {
    super(message);
    this.name = "TesseraError";
    this.code = code;
    this.status = status;
    this.requestId = requestId;
  }
}

/** There is no session to act for: it ended, this client signed out, or never signed in. */
export class SessionEndedError extends Error {
  constructor(reason) {
    super(reason === "not_signed_in" ? "Not signed in" : `The session has ended (${reason})`);
    this.name = "SessionEndedError";
    this.reason = reason;
  }
}

/** When a token should be replaced: 5 minutes before expiry, or at 80 % of its lifetime. */
function refreshAt(access) {
  return access.expiresAt - Math.min(REFRESH_MARGIN_MS, access.lifetime * REFRESH_FRACTION);
}

/** The claims of a JWT, read without checking it (tessera and the resource servers do). */
function claimsOf(jwt) {
  try {
    const part = String(jwt).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(part + "=".repeat((4 - (part.length % 4)) % 4));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
  } catch {
    return {};
  }
}

/** Two tokens of different sessions (or users); unknown claims never count as different. */
function differentSession(a, b) {
  return Boolean((a.sid && b.sid && a.sid !== b.sid) || (a.sub && b.sub && a.sub !== b.sub));
}

/** The error code of tessera's envelope, if the body is one. */
function envelopeCode(body) {
  const error = body?.error;
  return error && typeof error === "object" && typeof error.code === "string" ? error.code : undefined;
}

/**
 * A 401 that says the access token is no good (expired, or its session gone) — as opposed to a
 * 401 about the request itself, such as `INVALID_CREDENTIALS` for a wrong password.
 */
function deadAccess(status, wwwAuthenticate, body) {
  if (status !== 401) return false;
  if (/error\s*=\s*"?invalid_token/i.test(wwwAuthenticate ?? "")) return true;
  const code = envelopeCode(body);
  return code === undefined || code === "UNAUTHORIZED";
}

function errorOf(res, body) {
  const error = body?.error;
  const code = envelopeCode(body) ?? "UNAVAILABLE";
  const message = (error && typeof error === "object" && error.message) || `tessera answered ${res.status}`;
  return new TesseraError(code, message, res.status, error?.request_id);
}

/**
 * The default link to tessera's frame: a hidden iframe of `src` in this document, spoken to with
 * postMessage. Only messages from that iframe's window and tessera's origin are passed on.
 */
function iframeLink(src, onMessage, onLoad) {
  const target = new URL(src).origin;
  const iframe = document.createElement("iframe");
  iframe.src = src;
  iframe.title = "tessera";
  iframe.hidden = true;
  iframe.tabIndex = -1;
  iframe.setAttribute("aria-hidden", "true");
  const listener = (event) => {
    if (event.source === iframe.contentWindow && event.origin === target) onMessage(event.data);
  };
  window.addEventListener("message", listener);
  iframe.addEventListener("load", () => onLoad());
  (document.body ?? document.documentElement).appendChild(iframe);
  return {
    send(message) {
      iframe.contentWindow?.postMessage(message, target);
    },
    remove() {
      window.removeEventListener("message", listener);
      iframe.remove();
    },
  };
}

/** The frame link a client at `url` uses by default: the iframe on a page of another origin. */
function defaultFrame(url) {
  if (typeof window !== "object" || typeof document !== "object" || !globalThis.location?.origin) return null;
  let origin;
  try {
    origin = new URL(url).origin;
  } catch {
    return null;
  }
  return origin === globalThis.location.origin ? null : iframeLink;
}

function reportListenerError(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error(error);
}

/**
 * A tessera client. See the header of this file for the API.
 * @param {{url?: string, fetch?: typeof fetch, now?: () => number, setTimeout?: Function,
 *   clearTimeout?: Function, locks?: object | null, channel?: object | null}} [options]
 */
export function createClient(options = {}) {
  const url = String(options.url ?? globalThis.location?.origin ?? "").replace(/\/+$/, "");
  if (!url) throw new TypeError("createClient: pass { url } (tessera's base URL)");
  const api = `${url}/api/auth`;
  const fetchImpl = options.fetch ?? ((...args) => globalThis.fetch(...args));
  const now = options.now ?? (() => Date.now());
  const setTimer = options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
  const clearTimer = options.clearTimeout ?? ((id) => globalThis.clearTimeout(id));
  const locks = options.locks !== undefined ? options.locks : (globalThis.navigator?.locks ?? null);
  const lockName = `tessera-refresh ${url}`;
  const ownsChannel = options.channel === undefined;
  const channel = !ownsChannel
    ? options.channel
    : typeof globalThis.BroadcastChannel === "function"
      ? new globalThis.BroadcastChannel(`tessera ${url}`)
      : null;

  /** @type {"signed_out" | "signed_in" | "ended"} */
  let state = "signed_out";
  let endReason = null;
  /** @type {{token: string, expiresAt: number, lifetime: number, sid?: string, sub?: string, anonymous: boolean} | null} */
  let access = null;
  let user = null;
  /** The refresh under way in this tab, which every caller shares. */
  let inflight = null;
  let timer = null;
  let failures = 0;
  let closed = false;
  /** Set while signing out: a session found dead meanwhile is simply signed out, not "ended". */
  let quiet = false;
  const listeners = new Map(EVENTS.map((name) => [name, new Set()]));
  /** Opens the link to tessera's frame, or null: no frame (same origin, or not a browser). */
  const openFrame = options.frame !== undefined ? options.frame : defaultFrame(url);
  /** The frame, once asked for: `{ready: Promise<remote | null>, remote, link, timer}`. */
  let frame = null;

  function emit(name, detail) {
    for (const callback of [...listeners.get(name)]) {
      try {
        callback(detail);
      } catch (error) {
        reportListenerError(error);
      }
    }
  }

  function post(message) {
    try {
      channel?.postMessage(message);
    } catch {
      // A closed channel: other tabs learn at their next refresh instead.
    }
    frame?.remote?.broadcast(message);
  }

  // ---- locking --------------------------------------------------------------------------------

  // Without Web Locks, a queue keeps this tab's rotations one at a time.
  let queue = Promise.resolve();

  function localLock(fn) {
    if (locks) return locks.request(lockName, () => fn());
    const run = queue.then(() => fn());
    queue = run.catch(() => {});
    return run;
  }

  /**
   * Runs `fn` holding the refresh lock: this origin's, or — on a page of another origin — the
   * lock of tessera's origin, taken through tessera's frame, so that this page's rotations queue
   * with those of tessera's own tabs (and of other origins' pages). Without the frame (it did
   * not load), this origin's lock.
   */
  function withLock(fn) {
    if (!openFrame) return localLock(fn);
    return useFrame().then(async (remote) => {
      const release = remote ? await remote.acquire() : null;
      if (!release) return localLock(fn);
      try {
        return await fn();
      } finally {
        release();
      }
    });
  }

  // ---- tessera's frame (pages of another origin) --------------------------------------------

  /** The frame's remote, once loaded; null when it did not load (then this origin's lock). */
  function useFrame() {
    if (!frame) frame = startFrame();
    return frame.ready;
  }

  function startFrame() {
    const f = { ready: null, remote: null, link: null, timer: null };
    let settle;
    f.ready = new Promise((resolve) => (settle = resolve));
    if (closed) {
      settle(null);
      return f;
    }
    const waiting = new Map();
    let nextId = 1;
    let usable = true;

    const giveUp = () => {
      if (f.timer !== null) clearTimer(f.timer);
      f.timer = null;
      usable = false;
      f.remote = null;
      settle(null);
      for (const [id, w] of waiting) {
        waiting.delete(id);
        clearTimer(w.timer);
        w.resolve(null);
      }
    };
    const send = (message) => {
      try {
        f.link?.send(message);
      } catch {
        // The frame is gone: lock requests time out, broadcasts are lost.
      }
    };
    const remote = {
      /** Resolves with the lock's release, or null: do without the frame. */
      acquire() {
        if (!usable) return Promise.resolve(null);
        const id = nextId++;
        return new Promise((resolve, reject) => {
          const timer = setTimer(() => {
            waiting.delete(id);
            send({ tessera: "unlock", id });
            reject(new TesseraError("UNAVAILABLE", "tessera's frame did not grant the refresh lock in time", 0));
          }, FRAME_LOCK_MS);
          waiting.set(id, { resolve, timer });
          send({ tessera: "lock", id });
        });
      },
      broadcast(message) {
        if (usable) send({ tessera: "broadcast", message });
      },
    };
    const onFrameMessage = (data) => {
      if (!data || typeof data !== "object") return;
      switch (data.tessera) {
        case "ready":
          if (usable && f.remote === null) {
            if (f.timer !== null) clearTimer(f.timer);
            f.timer = null;
            f.remote = remote;
            send({ tessera: "hello" });
            settle(remote);
          }
          break;
        case "locked": {
          const w = waiting.get(data.id);
          if (!w) {
            send({ tessera: "unlock", id: data.id }); // given up on meanwhile
            break;
          }
          waiting.delete(data.id);
          clearTimer(w.timer);
          let released = false;
          w.resolve(() => {
            if (!released) send({ tessera: "unlock", id: data.id });
            released = true;
          });
          break;
        }
        case "lock_failed":
          giveUp();
          break;
        case "event":
          onMessage(data.message);
          break;
      }
    };
    const onLoad = () => {
      // The frame's script runs before its load event: if it has not said "ready" soon after,
      // the frame was refused (not an allowed origin, an older tessera) and never will.
      if (f.remote !== null || !usable) return;
      if (f.timer !== null) clearTimer(f.timer);
      f.timer = setTimer(giveUp, FRAME_GRACE_MS);
    };
    f.timer = setTimer(giveUp, FRAME_LOAD_MS);
    try {
      f.link = openFrame(`${url}/tessera-frame.html`, onFrameMessage, onLoad);
    } catch {
      giveUp();
    }
    if (!f.link) giveUp();
    f.close = () => {
      giveUp();
      try {
        f.link?.remove?.();
      } catch {
        // Already gone.
      }
    };
    return f;
  }

  // ---- the session ----------------------------------------------------------------------------

  function fromTokenResponse(data) {
    const lifetime = Number(data.expires_in) * 1000;
    const claims = claimsOf(data.token);
    return {
      token: data.token,
      expiresAt: now() + lifetime,
      lifetime,
      sid: claims.sid,
      sub: claims.sub,
      anonymous: claims.is_anonymous === true || data.user?.is_anonymous === true,
    };
  }

  function schedule() {
    if (timer !== null) clearTimer(timer);
    timer = null;
    if (closed || state !== "signed_in" || !access) return;
    const delay = failures === 0 ? refreshAt(access) - now() : Math.min(60_000, 1000 * 2 ** (failures - 1));
    timer = setTimer(onTimer, Math.min(MAX_TIMER_MS, Math.max(0, delay)));
  }

  function onTimer() {
    timer = null;
    if (closed || state !== "signed_in" || !access) return;
    refresh(access.token).catch((error) => {
      if (error instanceof SessionEndedError || state !== "signed_in") return;
      failures += 1;
      emit("error", { error });
      schedule();
    });
  }

  function notSignedIn() {
    return new SessionEndedError(state === "ended" ? endReason : "not_signed_in");
  }

  /** Starts a session in this client (a sign-in here or in another tab, or a restore). */
  function begin(next, who) {
    // On a page of another origin, tessera's frame relays sign-outs on tessera's own page.
    if (openFrame) useFrame();
    state = "signed_in";
    endReason = null;
    access = next;
    user = who ?? null;
    failures = 0;
    schedule();
  }

  /** Ends the session: says so once, forgets the token, stops refreshing. */
  function endSession(reason, broadcast) {
    if (state === "signed_in") {
      const held = access;
      state = "ended";
      endReason = reason;
      access = null;
      user = null;
      schedule();
      if (broadcast) post({ type: "ended", reason, sid: held?.sid, sub: held?.sub });
      if (!quiet) emit("session_ended", { reason });
    }
    return notSignedIn();
  }

  function signedOut(detail, message) {
    const held = access;
    state = "signed_out";
    endReason = null;
    access = null;
    user = null;
    schedule();
    post({ ...message, sid: held?.sid, sub: held?.sub });
    emit("signed_out", detail);
  }

  // ---- requests to tessera --------------------------------------------------------------------

  async function call(path, { method = "GET", json, token, cookie = false } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (cookie) headers["X-Requested-With"] = "tessera";
    if (json !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetchImpl(`${api}${path}`, {
      method,
      headers,
      credentials: "include",
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    const body = await res.json().catch(() => null);
    return { res, body };
  }

  function dataOf({ res, body }) {
    if (res.ok && body?.success === true) return body.data;
    throw errorOf(res, body);
  }

  /** Rotates the refresh cookie. Only ever called holding the lock. */
  async function rotate() {
    const r = await call("/refresh", { method: "POST", cookie: true });
    if (r.res.ok && r.body?.success === true) return { access: fromTokenResponse(r.body.data) };
    if (envelopeCode(r.body) === "MISSING_TOKEN") return { ended: "cookie_missing" };
    // Another site of tessera's host planted a second refresh cookie; tessera cleared them all.
    if (envelopeCode(r.body) === "CONFLICTING_COOKIES") return { ended: "cookie_conflict" };
    if (r.res.status === 401) return { ended: "ended" };
    throw errorOf(r.res, r.body);
  }

  /**
   * A fresh access token, holding the lock: the current one unless it is `stale` (the token the
   * caller found wanting) or due, in which case the cookie is rotated. Another tab may have
   * refreshed while this one waited for the lock; its token came over the channel.
   */
  async function renewLocked(stale) {
    if (state !== "signed_in") throw notSignedIn();
    if (access.token !== stale && now() < refreshAt(access)) return access;
    const held = access;
    const outcome = await rotate();
    if (state !== "signed_in") throw notSignedIn();
    if (outcome.ended) throw endSession(outcome.ended, true);
    if (differentSession(held, outcome.access)) throw endSession("replaced", true);
    access = outcome.access;
    failures = 0;
    schedule();
    post({ type: "token", access });
    emit("token_refreshed", { expiresAt: access.expiresAt });
    return access;
  }

  /** `renewLocked` under the lock, one at a time in this tab: every caller shares the promise. */
  function refresh(stale) {
    if (state !== "signed_in") return Promise.reject(notSignedIn());
    if (!inflight) {
      inflight = withLock(() => renewLocked(stale)).finally(() => {
        inflight = null;
      });
    }
    return inflight;
  }

  /** The access token to send now: refreshed first when due. */
  async function currentToken(renew) {
    if (state !== "signed_in") throw notSignedIn();
    if (now() >= refreshAt(access)) return (await renew(access.token)).token;
    return access.token;
  }

  /**
   * A call of the auth API with the access token, refreshed first when due and once more, then
   * retried once, on a 401 that says the token is no good. `locked`: the caller holds the lock,
   * so renewals rotate directly (Web Locks are not reentrant).
   */
  async function authed(path, init, locked = false) {
    const renew = locked ? renewLocked : refresh;
    let token = await currentToken(renew);
    let r = await call(path, { ...init, token });
    if (deadAccess(r.res.status, r.res.headers?.get?.("www-authenticate"), r.body)) {
      token = (await renew(token)).token;
      r = await call(path, { ...init, token });
    }
    return r;
  }

  /** Signs in through `path` (login or anonymous), holding the lock: the answer sets the cookie. */
  function startSession(path, payload) {
    return withLock(async () => {
      const data = dataOf(await call(path, { method: "POST", json: { ...payload, refresh_transport: "cookie" } }));
      begin(fromTokenResponse(data), data.user);
      post({ type: "signed_in", access, user });
      emit("signed_in", { user });
      return user;
    });
  }

  // ---- other tabs -----------------------------------------------------------------------------

  function sameSession(message) {
    return access !== null && !differentSession(access, message);
  }

  function onMessage(message) {
    if (closed || !message || typeof message !== "object") return;
    switch (message.type) {
      case "token":
        if (state === "signed_in" && sameSession(message.access) && message.access.expiresAt > access.expiresAt) {
          access = message.access;
          failures = 0;
          schedule();
          emit("token_refreshed", { expiresAt: access.expiresAt, otherTab: true });
        }
        break;
      case "signed_in": {
        const next = message.access;
        if (!next?.token || (state === "signed_in" && sameSession(next))) break;
        // A tab that holds or held a session never follows another tab into a guest session.
        if (next.anonymous && state !== "signed_out") break;
        begin(next, message.user);
        emit("signed_in", { user, otherTab: true });
        break;
      }
      case "user":
        if (state === "signed_in" && sameSession(message)) {
          user = message.user;
          emit("user_updated", { user, otherTab: true });
        }
        break;
      case "signed_out":
        if (state === "signed_in" && (sameSession(message) || (message.everywhere && access.sub === message.sub))) {
          endSession("signed_out_elsewhere", false);
        }
        break;
      case "ended":
        if (state === "signed_in" && (sameSession(message) || (message.reason === "account_deleted" && access.sub === message.sub))) {
          endSession(message.reason, false);
        }
        break;
    }
  }

  const onChannelMessage = (event) => onMessage(event?.data);
  if (channel) {
    if (typeof channel.addEventListener === "function") channel.addEventListener("message", onChannelMessage);
    else channel.onmessage = onChannelMessage;
  }

  // ---- the client -----------------------------------------------------------------------------

  const client = {
    get url() {
      return url;
    },
    get user() {
      return user;
    },
    get state() {
      return state;
    },
    get endReason() {
      return endReason;
    },
    get expiresAt() {
      return access ? access.expiresAt : null;
    },

    on(name, callback) {
      const set = listeners.get(name);
      if (!set) throw new TypeError(`tessera.js: no event named ${JSON.stringify(name)} (${EVENTS.join(", ")})`);
      set.add(callback);
      return () => set.delete(callback);
    },

    async restore() {
      if (state === "signed_in") return client.getUser();
      const restored = await withLock(async () => {
        if (state === "signed_in") return false; // another tab's sign-in was taken up meanwhile
        const outcome = await rotate();
        if (state === "signed_in") return false;
        if (outcome.ended) {
          // No cookie: simply signed out. A cookie tessera refused: that session has ended.
          state = outcome.ended === "cookie_missing" ? "signed_out" : "ended";
          endReason = state === "ended" ? outcome.ended : null;
          return false;
        }
        begin(outcome.access, null);
        post({ type: "token", access });
        return true;
      });
      if (state !== "signed_in") return null;
      const me = await client.getUser();
      if (restored) emit("signed_in", { user: me, restored: true });
      return me;
    },

    signIn(credentials) {
      const { email, username, password } = credentials ?? {};
      return startSession("/login", { email, username, password });
    },

    async signUp(fields) {
      const { email, username, password } = fields ?? {};
      dataOf(await call("/register", { method: "POST", json: { email, username, password } }));
      return startSession("/login", { email, username, password });
    },

    signInAsGuest() {
      return startSession("/anonymous", {});
    },

    upgrade(fields) {
      const { email, username, password } = fields ?? {};
      return withLock(async () => {
        const r = await authed("/upgrade", { method: "POST", json: { email, username, password, refresh_transport: "cookie" }, cookie: true }, true);
        if (r.res.ok && r.body?.success === true) {
          access = fromTokenResponse(r.body.data);
          user = r.body.data.user ?? user;
          failures = 0;
          schedule();
          post({ type: "token", access });
          post({ type: "user", user, sid: access.sid, sub: access.sub });
          emit("token_refreshed", { expiresAt: access.expiresAt });
          emit("user_updated", { user });
          return user;
        }
        // The session's refresh token is gone or no longer current: the session has ended.
        const code = envelopeCode(r.body);
        if (code === "INVALID_TOKEN") throw endSession("ended", true);
        if (code === "MISSING_TOKEN") throw endSession("cookie_missing", true);
        throw errorOf(r.res, r.body);
      });
    },

    async signOut({ everywhere = false } = {}) {
      if (state !== "signed_in") {
        state = "signed_out";
        endReason = null;
        return;
      }
      await withLock(async () => {
        if (state !== "signed_in") return;
        quiet = true;
        try {
          const r = await authed(everywhere ? "/logout-all" : "/logout", { method: "POST", cookie: !everywhere }, true);
          // A 401 here means the session was over already: signed out all the same.
          if (!(r.res.ok && r.body?.success === true) && !deadAccess(r.res.status, r.res.headers?.get?.("www-authenticate"), r.body)) {
            throw errorOf(r.res, r.body);
          }
        } catch (error) {
          if (!(error instanceof SessionEndedError)) throw error;
        } finally {
          quiet = false;
        }
        signedOut({ everywhere }, { type: "signed_out", everywhere });
      });
    },

    async changePassword(current, next) {
      return dataOf(await authed("/password", { method: "POST", json: { current_password: current, new_password: next } }));
    },

    deleteAccount(password) {
      return withLock(async () => {
        const r = await authed("/account", { method: "DELETE", json: password === undefined || password === null ? {} : { password } }, true);
        const data = dataOf(r);
        signedOut({ reason: "account_deleted" }, { type: "ended", reason: "account_deleted" });
        return data;
      });
    },

    async listSessions() {
      return dataOf(await authed("/sessions", { method: "GET" })).sessions;
    },

    async revokeSession(id) {
      return dataOf(await authed(`/sessions/${encodeURIComponent(id)}`, { method: "DELETE" }));
    },

    async settings() {
      return dataOf(await call("/settings"));
    },

    async getUser() {
      const me = dataOf(await authed("/me", { method: "GET" }));
      if (state === "signed_in") user = me;
      return me;
    },

    async getToken({ forceRefresh = false } = {}) {
      if (state !== "signed_in") throw notSignedIn();
      if (forceRefresh) return (await refresh(access.token)).token;
      return currentToken(refresh);
    },

    async socketProtocols() {
      return [SOCKET_PROTOCOL, SOCKET_TOKEN_PREFIX + (await this.getToken())];
    },

    async fetch(input, init) {
      init = init ?? {};
      let token = await currentToken(refresh);
      const isRequest = typeof Request === "function" && input instanceof Request;
      // A Request's body can be read once: keep a copy for the retry.
      const spare = isRequest ? input.clone() : input;
      const send = (target, t) => {
        const headers = new Headers(init.headers ?? (isRequest ? target.headers : undefined));
        headers.set("Authorization", `Bearer ${t}`);
        return fetchImpl(target, { ...init, headers });
      };
      let res = await send(input, token);
      if (res.status === 401) {
        const body = await res.clone().json().catch(() => null);
        if (deadAccess(res.status, res.headers.get("www-authenticate"), body)) {
          token = (await refresh(token)).token;
          res = await send(spare, token);
        }
      }
      return res;
    },

    close() {
      closed = true;
      if (timer !== null) clearTimer(timer);
      timer = null;
      frame?.close?.();
      if (channel) {
        if (typeof channel.removeEventListener === "function") channel.removeEventListener("message", onChannelMessage);
        if (ownsChannel) channel.close?.();
      }
    },
  };
  return client;
}
