/**
 * tessera-frame.js — the script of tessera's hidden frame, `GET /tessera-frame.html`.
 *
 * Web Locks and BroadcastChannel are per origin. A page of another origin of the same site
 * (listed in tessera's `--allowed-origins`) that uses tessera.js shares the refresh cookie with
 * tessera's own page, but not its lock: both could present one refresh token at once, and
 * tessera, which rotates strictly, would end the session as a theft. So tessera.js on such a
 * page loads this frame (origin: tessera's) and takes tessera's lock through it for everything
 * that rotates, sets or clears the cookie; the frame also relays tessera's tab channel both ways.
 * A same-site frame shares the storage partition of tessera's own tabs, so every page of one
 * browser — tessera's tabs and the app's — queues on one lock and hears one channel.
 *
 * The frame answers only its parent, and only when the parent's origin is one of the allowed
 * origins, which tessera writes into the page (`<meta name="tessera-allowed-origins">`); the
 * page's CSP (`frame-ancestors`) lets only those origins frame it in the first place.
 *
 * Protocol (window.postMessage; every message is an object with a `tessera` field):
 *   frame → parent  {tessera: "ready"}           once loaded (sent to each allowed origin: only
 *                                                the parent's own is delivered)
 *   parent → frame  {tessera: "hello"}           the frame answers only this origin from now on
 *   parent → frame  {tessera: "lock", id}        take tessera's refresh lock for the parent
 *   frame → parent  {tessera: "locked", id}      held, until:
 *   parent → frame  {tessera: "unlock", id}      (also cancels a request not yet granted)
 *   frame → parent  {tessera: "lock_failed", id} the frame could not take the lock
 *   parent → frame  {tessera: "broadcast", message}  posted on tessera's tab channel
 *   frame → parent  {tessera: "event", message}  a message of tessera's tab channel
 * The lock dies with the frame: a parent that closes or navigates releases it.
 */

/** The tab-channel messages of tessera.js that the frame relays. */
const RELAYED = new Set(["token", "signed_in", "user", "signed_out", "ended"]);

const validId = (id) => (typeof id === "number" && Number.isFinite(id)) || typeof id === "string";

/**
 * Serves the frame protocol. Options (defaults for the browser; the others are for tests):
 *   allowedOrigins  the origins whose pages may use the frame (never "*")
 *   window          the frame's window (default: globalThis.window)
 *   origin          tessera's origin (default: window.location.origin)
 *   locks           a LockManager-like object (default: navigator.locks; null: a queue)
 *   channel         a BroadcastChannel-like object (default: tessera.js's channel of `origin`)
 * Returns `{close()}`.
 */
export function serveFrame(options = {}) {
  const win = options.window ?? globalThis.window;
  const parent = win.parent;
  const origin = options.origin ?? win.location.origin;
  const allowed = new Set((options.allowedOrigins ?? []).filter((o) => typeof o === "string" && /^[a-z][a-z0-9+.-]*:\/\/[^/\s]+$/i.test(o)));
  const locks = options.locks !== undefined ? options.locks : (globalThis.navigator?.locks ?? null);
  const ownsChannel = options.channel === undefined;
  const channel = !ownsChannel
    ? options.channel
    : typeof globalThis.BroadcastChannel === "function"
      ? new globalThis.BroadcastChannel(`tessera ${origin}`)
      : null;
  // The names tessera.js gives its lock and channel on tessera's own page (url = its origin).
  const lockName = `tessera-refresh ${origin}`;
  let parentOrigin = null;
  /** id → {release, cancelled}: the locks held (or asked for) on the parent's behalf. */
  const held = new Map();
  let queue = Promise.resolve();

  function send(message) {
    if (parentOrigin === null) return;
    try {
      parent.postMessage(message, parentOrigin);
    } catch {
      // The parent is gone.
    }
  }

  function lock(id) {
    if (!validId(id) || held.has(id)) return;
    let release;
    const released = new Promise((resolve) => (release = resolve));
    const entry = { release, cancelled: false };
    held.set(id, entry);
    const hold = () => {
      if (entry.cancelled) return undefined;
      send({ tessera: "locked", id });
      return released;
    };
    let run;
    if (locks) {
      try {
        run = Promise.resolve(locks.request(lockName, hold));
      } catch (error) {
        run = Promise.reject(error);
      }
    } else {
      run = queue.then(hold);
      queue = run.catch(() => {});
    }
    run
      .catch(() => {
        if (!entry.cancelled) send({ tessera: "lock_failed", id });
      })
      .finally(() => {
        if (held.get(id) === entry) held.delete(id);
      });
  }

  function unlock(id) {
    const entry = held.get(id);
    if (!entry) return;
    entry.cancelled = true;
    entry.release();
  }

  const onWindowMessage = (event) => {
    if (event.source !== parent || !allowed.has(event.origin)) return;
    if (parentOrigin !== null && event.origin !== parentOrigin) return;
    const data = event.data;
    if (!data || typeof data !== "object") return;
    parentOrigin = event.origin;
    switch (data.tessera) {
      case "lock":
        lock(data.id);
        break;
      case "unlock":
        unlock(data.id);
        break;
      case "broadcast":
        if (data.message && typeof data.message === "object" && RELAYED.has(data.message.type)) {
          try {
            channel?.postMessage(data.message);
          } catch {
            // A closed channel.
          }
        }
        break;
    }
  };

  const onChannelMessage = (event) => {
    const message = event?.data;
    if (message && typeof message === "object" && RELAYED.has(message.type)) send({ tessera: "event", message });
  };

  win.addEventListener("message", onWindowMessage);
  if (channel) {
    if (typeof channel.addEventListener === "function") channel.addEventListener("message", onChannelMessage);
    else channel.onmessage = onChannelMessage;
  }
  if (parent && parent !== win) {
    for (const target of allowed) {
      try {
        parent.postMessage({ tessera: "ready" }, target);
      } catch {
        // Not a valid target origin: skipped.
      }
    }
  }

  return {
    close() {
      win.removeEventListener("message", onWindowMessage);
      for (const id of [...held.keys()]) unlock(id);
      if (channel) {
        if (typeof channel.removeEventListener === "function") channel.removeEventListener("message", onChannelMessage);
        if (ownsChannel) channel.close?.();
      }
    },
  };
}

// In tessera's frame page: serve. (Imported elsewhere, as by the unit tests, it does nothing.)
const meta = globalThis.document?.querySelector?.('meta[name="tessera-allowed-origins"]');
if (meta && globalThis.window) {
  serveFrame({ allowedOrigins: (meta.getAttribute("content") ?? "").split(/\s+/).filter(Boolean) });
}
