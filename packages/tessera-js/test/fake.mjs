// Test doubles for tessera.js: a fake tessera (with strict refresh-token rotation, a cookie jar
// shared by the "tabs" of one browser, and a resource server), a fake clock with timers, a
// Web Locks-like lock and a BroadcastChannel-like hub. Nothing here touches the network.

export const ORIGIN = "https://auth.example";
export const API = "https://api.example";
export const PASSWORD = "correct horse battery";

/** Lets pending promise callbacks and queued messages run. */
export async function flush(rounds = 30) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A clock that moves only when told, with timers that fire as it moves. */
export function fakeClock(start = 1_700_000_000_000) {
  let t = start;
  let nextId = 1;
  const timers = new Map();
  const clock = {
    now: () => t,
    setTimeout(fn, ms) {
      const id = nextId++;
      timers.set(id, { at: t + Math.max(0, ms), fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    /** Moves time on without running any timer (a tab asleep, a late timer). */
    jump(ms) {
      t += ms;
    },
    /** Moves time on by `ms`, firing each timer at its time, in order. */
    async advance(ms) {
      const end = t + ms;
      for (;;) {
        await flush();
        let due = null;
        for (const [id, timer] of timers) if (timer.at <= end && (!due || timer.at < due[1].at)) due = [id, timer];
        if (!due) break;
        timers.delete(due[0]);
        t = Math.max(t, due[1].at);
        due[1].fn();
      }
      t = end;
      await flush();
    },
    pending: () => timers.size,
  };
  return clock;
}

/** A lock like `navigator.locks`: one holder per name at a time, shared by the tabs given it. */
export function fakeLocks() {
  const tails = new Map();
  const locks = {
    held: 0,
    maxHeld: 0,
    requests: 0,
    request(name, fn) {
      locks.requests += 1;
      const previous = tails.get(name) ?? Promise.resolve();
      const run = previous.then(async () => {
        locks.held += 1;
        locks.maxHeld = Math.max(locks.maxHeld, locks.held);
        try {
          return await fn();
        } finally {
          locks.held -= 1;
        }
      });
      tails.set(name, run.catch(() => {}));
      return run;
    },
  };
  return locks;
}

/** BroadcastChannel-like channels: a message reaches every other channel of the hub, later. */
export function fakeHub() {
  const channels = new Set();
  return {
    channel() {
      const listeners = new Set();
      const ch = {
        postMessage(data) {
          const copy = structuredClone(data);
          for (const other of channels) if (other !== ch) queueMicrotask(() => other.deliver(copy));
        },
        addEventListener(type, fn) {
          if (type === "message") listeners.add(fn);
        },
        removeEventListener(type, fn) {
          listeners.delete(fn);
        },
        close() {
          channels.delete(ch);
        },
        deliver(data) {
          for (const fn of listeners) fn({ data });
        },
      };
      channels.add(ch);
      return ch;
    },
  };
}

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

function envelope(status, data, headers = {}) {
  return new Response(JSON.stringify({ success: true, data }), { status, headers: { "content-type": "application/json", ...headers } });
}

function failure(status, code, message = code, headers = {}) {
  return new Response(JSON.stringify({ success: false, error: { code, message } }), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/**
 * A fake tessera and resource server behind one `fetch`. Sessions rotate strictly: a refresh
 * presenting a spent generation is reuse, which ends the session (as tessera does). The cookie
 * is read when a request leaves and written when its answer arrives, as a browser does, so two
 * overlapping refreshes of one session are caught.
 */
export function fakeTessera(clock, { accessTtl = 900, allowAnonymous = true, delay = 2 } = {}) {
  const sessions = new Map();
  const users = new Map();
  let nextSession = 1;
  let nextJti = 1;
  const server = {
    /** The browser's refresh cookie: `{sid, gen}` or null. */
    jar: null,
    requests: [],
    reused: 0,
    refreshesInFlight: 0,
    maxRefreshesInFlight: 0,
    /** Answers of the resource server, in order, before it checks tokens itself. */
    resourceAnswers: [],
    /** Set to make the next refresh fail at the network level. */
    failNextRefresh: 0,
    /** Set when another site of the host planted a second refresh cookie (cleared on refresh). */
    plantedCookie: false,
    count(path, method) {
      return server.requests.filter((r) => r.path === `/api/auth${path}` && (!method || r.method === method)).length;
    },
    sessions,
    /** Starts a session as if signed in elsewhere in this browser (for restore). */
    seedSession({ anonymous = false } = {}) {
      const s = openSession(anonymous);
      server.jar = { sid: s.id, gen: s.gen };
      return s;
    },
  };

  function openSession(anonymous, name) {
    const id = `s${nextSession++}`;
    const user = { id: `u-${id}`, email: anonymous ? null : (name?.email ?? null), username: anonymous ? null : (name?.username ?? null), is_anonymous: anonymous };
    users.set(user.id, user);
    const session = { id, gen: 0, alive: true, user };
    sessions.set(id, session);
    return session;
  }

  function mint(session) {
    const exp = clock.now() + accessTtl * 1000;
    const claims = { sub: session.user.id, sid: session.id, is_anonymous: session.user.is_anonymous, jti: String(nextJti++), exp };
    const token = `${b64({ alg: "ES256" })}.${b64(claims)}.sig`;
    return { token, expires_in: accessTtl, token_type: "Bearer" };
  }

  /** The session of a valid access token, or null. */
  function caller(headers) {
    const auth = headers.get("authorization") ?? "";
    if (!auth.startsWith("Bearer ")) return null;
    try {
      const claims = JSON.parse(Buffer.from(auth.slice(7).split(".")[1], "base64url"));
      const session = sessions.get(claims.sid);
      if (!session || !session.alive || clock.now() >= claims.exp) return null;
      return session;
    } catch {
      return null;
    }
  }

  const unauthorized = () => failure(401, "UNAUTHORIZED", "Invalid or expired token", { "www-authenticate": 'Bearer realm="tessera", error="invalid_token"' });

  server.fetch = async (input, init = {}) => {
    const request = input instanceof Request ? input : null;
    const url = new URL(request ? request.url : String(input));
    const method = init.method ?? request?.method ?? "GET";
    const headers = new Headers(init.headers ?? request?.headers);
    const text = init.body ?? (request ? await request.text() : undefined);
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = text;
    }
    const sendsCookie = url.origin === ORIGIN && url.pathname.startsWith("/api/auth") && init.credentials === "include";
    const cookie = sendsCookie ? server.jar : null;
    const record = { path: url.pathname, method, headers, json, credentials: init.credentials, url: url.href };
    server.requests.push(record);

    if (url.origin === API) {
      await flush(delay);
      const scripted = server.resourceAnswers.shift();
      if (scripted) return scripted();
      const session = caller(headers);
      if (!session) {
        return new Response(JSON.stringify({ error: "invalid_token", error_description: "the access token has expired" }), {
          status: 401,
          headers: { "content-type": "application/json", "www-authenticate": 'Bearer error="invalid_token"' },
        });
      }
      return new Response(JSON.stringify({ ok: true, user: session.user.id, body: json ?? null }), { status: 200, headers: { "content-type": "application/json" } });
    }

    const path = url.pathname.replace(/^\/api\/auth/, "");
    const isRefresh = path === "/refresh";
    if (isRefresh) {
      server.refreshesInFlight += 1;
      server.maxRefreshesInFlight = Math.max(server.maxRefreshesInFlight, server.refreshesInFlight);
    }
    try {
      await flush(delay);
      if (isRefresh && server.failNextRefresh > 0) {
        server.failNextRefresh -= 1;
        throw new TypeError("Failed to fetch");
      }
      return route(path, method, headers, json, cookie);
    } finally {
      if (isRefresh) server.refreshesInFlight -= 1;
    }
  };

  function tokenAnswer(session, transport, withUser) {
    const pair = mint(session);
    if (transport === "cookie") server.jar = { sid: session.id, gen: session.gen };
    return envelope(200, { ...pair, ...(transport === "cookie" ? {} : { refresh_token: `${session.id}.${session.gen}` }), ...(withUser ? { user: session.user } : {}) });
  }

  /** Checks the cookie's refresh token; rotates it. Returns the session or an error answer. */
  function rotateCookie(headers, cookie) {
    if (headers.get("x-requested-with") !== "tessera") return failure(403, "CSRF_REJECTED");
    if (!cookie) return failure(400, "MISSING_TOKEN");
    if (server.plantedCookie) {
      server.plantedCookie = false;
      server.jar = null;
      return failure(400, "CONFLICTING_COOKIES", "The browser sent several refresh cookies");
    }
    const session = sessions.get(cookie.sid);
    if (!session || !session.alive) {
      server.jar = null;
      return failure(401, "INVALID_TOKEN", "Invalid or expired refresh token");
    }
    if (cookie.gen !== session.gen) {
      server.reused += 1;
      session.alive = false;
      server.jar = null;
      return failure(401, "INVALID_TOKEN", "Invalid or expired refresh token");
    }
    session.gen += 1;
    return session;
  }

  function route(path, method, headers, json, cookie) {
    switch (`${method} ${path}`) {
      case "GET /settings":
        return envelope(200, { allow_anonymous: allowAnonymous });
      case "POST /register":
        if ((json.password ?? "").length < 8) return failure(400, "WEAK_PASSWORD", "The password must be at least 8 characters");
        return envelope(201, { user: { id: "new", email: json.email ?? null, username: json.username ?? null } });
      case "POST /login": {
        if (json.password !== PASSWORD) return failure(401, "INVALID_CREDENTIALS", "Wrong email or password", { "www-authenticate": 'Bearer realm="tessera"' });
        return tokenAnswer(openSession(false, json), json.refresh_transport, true);
      }
      case "POST /anonymous":
        if (!allowAnonymous) return failure(403, "ANONYMOUS_DISABLED");
        return tokenAnswer(openSession(true), json?.refresh_transport, true);
      case "POST /refresh": {
        const session = rotateCookie(headers, cookie);
        if (session instanceof Response) return session;
        return tokenAnswer(session, "cookie", false);
      }
      case "POST /upgrade": {
        const session = caller(headers);
        if (!session) return unauthorized();
        if (!session.user.is_anonymous) return failure(409, "ALREADY_REGISTERED");
        if (json.email === "taken@example.com") return failure(409, "EMAIL_TAKEN", "That email is taken");
        const rotated = rotateCookie(headers, cookie);
        if (rotated instanceof Response) return rotated;
        Object.assign(session.user, { email: json.email ?? null, username: json.username ?? null, is_anonymous: false });
        return tokenAnswer(session, "cookie", true);
      }
      case "GET /me": {
        const session = caller(headers);
        if (!session) return unauthorized();
        return envelope(200, { ...session.user, session_id: session.id });
      }
      case "GET /sessions": {
        const session = caller(headers);
        if (!session) return unauthorized();
        return envelope(200, { sessions: [{ id: session.id, current: true }] });
      }
      case "POST /password": {
        const session = caller(headers);
        if (!session) return unauthorized();
        if (json.current_password !== PASSWORD) return failure(401, "INVALID_CREDENTIALS", "Wrong password", { "www-authenticate": 'Bearer realm="tessera"' });
        return envelope(200, { password_changed: true, sessions_ended: 0 });
      }
      case "POST /logout":
      case "POST /logout-all": {
        const session = caller(headers);
        if (!session) return unauthorized();
        session.alive = false;
        server.jar = null;
        return envelope(200, path === "/logout" ? { logged_out: true } : { sessions_ended: 1 });
      }
      case "DELETE /account": {
        const session = caller(headers);
        if (!session) return unauthorized();
        if (!session.user.is_anonymous && json?.password !== PASSWORD) return failure(401, "INVALID_CREDENTIALS", "Wrong password");
        session.alive = false;
        server.jar = null;
        return envelope(200, { deleted: true });
      }
      default:
        return failure(404, "NOT_FOUND");
    }
  }

  /** Ends a session as a revocation elsewhere would. */
  server.revoke = (sid) => {
    sessions.get(sid).alive = false;
  };
  /** Replaces the browser's cookie with a new session, as a sign-in on a page of another origin would. */
  server.signInElsewhere = () => server.seedSession();
  return server;
}
