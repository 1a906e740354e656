// Unit tests of tessera's frame (crates/server/web/tessera-frame.js) and of tessera.js on a page
// of another origin, which takes tessera's refresh lock and hears tessera's tab channel through
// it. The fakes stand for one browser: tessera's origin has its lock and its channel hub, the
// app's origin its own; the frame's window is wired to the client with postMessage-like
// functions that check origins as a browser does.

import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { createClient, TesseraError } from "../../../crates/server/web/tessera.js";
import { serveFrame } from "../../../crates/server/web/tessera-frame.js";
import { ORIGIN, PASSWORD, fakeClock, fakeHub, fakeLocks, fakeTessera, flush } from "./fake.mjs";

const APP = "https://app.example";
const EVIL = "https://evil.example";

const closers = [];
afterEach(() => {
  for (const c of closers.splice(0)) c.close();
});

/**
 * A frame window whose parent is a page of `parentOrigin`: `post(data, {origin, source})`
 * delivers a message to the frame as if sent by that origin (by its parent unless `source` says
 * otherwise); `received` holds what the frame posted to the parent that the browser delivered.
 */
function frameWindow(parentOrigin, deliver) {
  const listeners = new Set();
  const parent = {
    targets: [],
    postMessage(data, target) {
      parent.targets.push(target);
      if (target === parentOrigin) {
        const copy = structuredClone(data);
        queueMicrotask(() => deliver(copy));
      }
    },
  };
  const win = {
    parent,
    location: { origin: ORIGIN },
    addEventListener(type, fn) {
      if (type === "message") listeners.add(fn);
    },
    removeEventListener(type, fn) {
      listeners.delete(fn);
    },
    post(data, { origin = parentOrigin, source = parent } = {}) {
      const copy = structuredClone(data);
      queueMicrotask(() => {
        for (const fn of listeners) fn({ data: copy, origin, source });
      });
    },
  };
  return win;
}

/**
 * The `frame` option of a client on `parentOrigin`: serves the real frame protocol against
 * tessera's origin's lock and channel hub. `answer: false` stands for a frame that never speaks
 * (refused by frame-ancestors, or an older tessera): it only loads.
 */
function frameOption(tesseraOrigin, { parentOrigin = APP, allowed = [APP], answer = true } = {}) {
  const frames = [];
  const open = (src, onMessage, onLoad) => {
    assert.equal(src, `${ORIGIN}/tessera-frame.html`);
    const win = frameWindow(parentOrigin, onMessage);
    const served = answer ? serveFrame({ window: win, allowedOrigins: allowed, locks: tesseraOrigin.locks, channel: tesseraOrigin.hub.channel() }) : null;
    frames.push({ win, served });
    queueMicrotask(onLoad);
    return {
      send: (data) => win.post(data),
      remove: () => served?.close(),
    };
  };
  open.frames = frames;
  return open;
}

/** One browser: tessera, a clock, tessera's origin (lock, channel hub) and the app's origin. */
function browser(options = {}) {
  const clock = fakeClock();
  const server = fakeTessera(clock, options);
  const tesseraOrigin = { locks: fakeLocks(), hub: fakeHub() };
  const appOrigin = { locks: fakeLocks(), hub: fakeHub() };
  const make = (origin, frame) => {
    const client = createClient({
      url: ORIGIN,
      fetch: server.fetch,
      now: clock.now,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      locks: origin.locks,
      channel: origin.hub.channel(),
      frame,
    });
    closers.push(client);
    return client;
  };
  /** A tab of tessera's own page (no frame). */
  const tesseraTab = () => make(tesseraOrigin, null);
  /** A tab of the app's page; `frame`: the frame option (default: a working frame; null: none). */
  const appTab = (frame = frameOption(tesseraOrigin)) => make(appOrigin, frame);
  return { clock, server, tesseraOrigin, appOrigin, tesseraTab, appTab };
}

function record(client) {
  const seen = [];
  for (const name of ["signed_in", "token_refreshed", "signed_out", "session_ended", "error"]) {
    client.on(name, (detail) => seen.push({ name, detail }));
  }
  return { of: (name) => seen.filter((e) => e.name === name).map((e) => e.detail) };
}

// ---- the client through the frame ----------------------------------------------------------

test("two app tabs and tessera's tab, due at once, never present one refresh token twice", async () => {
  const { clock, server, tesseraOrigin, tesseraTab, appTab } = browser();
  const home = tesseraTab();
  await home.signIn({ email: "ada@example.com", password: PASSWORD });
  const first = appTab();
  const second = appTab();
  assert.equal((await first.restore()).email, "ada@example.com");
  assert.equal((await second.restore()).email, "ada@example.com");
  for (let round = 0; round < 5; round++) {
    clock.jump(14 * 60 * 1000);
    const tokens = await Promise.all([home.getToken(), first.getToken(), second.getToken(), first.getToken({ forceRefresh: true })]);
    assert.ok(tokens.every((t) => typeof t === "string"));
  }
  assert.equal(server.reused, 0, "a refresh token was presented twice");
  assert.equal(server.maxRefreshesInFlight, 1, "rotations of the three tabs never overlapped");
  assert.equal(tesseraOrigin.locks.maxHeld, 1);
  for (const c of [home, first, second]) assert.equal(c.state, "signed_in");
});

test("without the frame, the same three tabs do present a token twice (the fake catches it)", async () => {
  const { clock, server, tesseraTab, appTab } = browser();
  const home = tesseraTab();
  await home.signIn({ email: "ada@example.com", password: PASSWORD });
  const first = appTab(null);
  await first.restore();
  clock.jump(14 * 60 * 1000);
  await Promise.allSettled([home.getToken(), first.getToken()]);
  assert.equal(server.reused, 1);
});

test("tessera's tab refreshes and the app tab takes the token over the relayed channel", async () => {
  const { clock, server, tesseraTab, appTab } = browser();
  const home = tesseraTab();
  await home.signIn({ email: "ada@example.com", password: PASSWORD });
  const app = appTab();
  await app.restore();
  const events = record(app);
  clock.jump(14 * 60 * 1000);
  const fresh = await home.getToken();
  await flush();
  const refreshes = server.count("/refresh");
  assert.equal(await app.getToken(), fresh, "the app tab holds tessera's tab's new token");
  assert.equal(server.count("/refresh"), refreshes, "without a refresh of its own");
  assert.deepEqual(events.of("token_refreshed"), [{ expiresAt: app.expiresAt, otherTab: true }]);
});

test("signing out on tessera's page ends the app page's session at once", async () => {
  const { server, tesseraTab, appTab } = browser();
  const home = tesseraTab();
  await home.signIn({ email: "ada@example.com", password: PASSWORD });
  const app = appTab();
  await app.restore();
  const events = record(app);
  await home.signOut();
  await flush();
  assert.equal(app.state, "ended");
  assert.deepEqual(events.of("session_ended"), [{ reason: "signed_out_elsewhere" }]);
  const before = server.requests.length;
  await assert.rejects(app.getToken(), { name: "SessionEndedError" });
  assert.equal(server.requests.length, before, "no request after the end");
});

test("signing out on the app page reaches tessera's tabs through the frame", async () => {
  const { tesseraTab, appTab } = browser();
  const home = tesseraTab();
  await home.signIn({ email: "ada@example.com", password: PASSWORD });
  const app = appTab();
  await app.restore();
  const events = record(home);
  await app.signOut();
  await flush();
  assert.equal(home.state, "ended");
  assert.deepEqual(events.of("session_ended"), [{ reason: "signed_out_elsewhere" }]);
});

test("a frame that never answers is given up a second after its load: the client does without it", async () => {
  const { clock, server, tesseraOrigin, appOrigin, appTab } = browser();
  server.seedSession();
  const app = appTab(frameOption(tesseraOrigin, { answer: false }));
  let restored;
  app.restore().then((user) => (restored = user));
  await flush();
  assert.equal(server.count("/refresh"), 0, "waiting for the frame");
  await clock.advance(999);
  assert.equal(restored, undefined);
  await clock.advance(1);
  assert.equal(restored?.is_anonymous, false);
  assert.equal(server.count("/refresh"), 1);
  assert.equal(appOrigin.locks.requests, 1, "the app origin's own lock, instead");
});

test("a lock the frame does not grant within 30 s fails the call; the late grant is handed back", async () => {
  const { clock, server, tesseraOrigin, tesseraTab, appTab } = browser();
  const home = tesseraTab();
  await home.signIn({ email: "ada@example.com", password: PASSWORD });
  const app = appTab();
  await app.restore();
  // Something in tessera's tabs holds the lock and does not let go.
  let letGo;
  tesseraOrigin.locks.request(`tessera-refresh ${ORIGIN}`, () => new Promise((r) => (letGo = r)));
  await flush();
  const failed = app.getToken({ forceRefresh: true }).then(
    () => null,
    (e) => e,
  );
  await clock.advance(30_000);
  const error = await failed;
  assert.ok(error instanceof TesseraError);
  assert.equal(error.code, "UNAVAILABLE");
  letGo();
  await flush();
  // The frame was granted the lock for a request given up on: it is handed back at once, so
  // tessera's tab can still refresh.
  clock.jump(14 * 60 * 1000);
  await home.getToken();
  assert.equal(app.state, "signed_in");
  assert.equal(server.reused, 0);
});

// ---- the frame on its own ------------------------------------------------------------------

test("the frame says ready only to the allowed origins, and answers only its parent on them", async () => {
  const got = [];
  const win = frameWindow(APP, (m) => got.push(m));
  const locks = fakeLocks();
  closers.push(serveFrame({ window: win, allowedOrigins: [APP, "*", "null", "https://other.example"], locks, channel: null }));
  assert.deepEqual(win.parent.targets, [APP, "https://other.example"], "never '*'");
  await flush();
  assert.deepEqual(got, [{ tessera: "ready" }]);
  // Not an allowed origin, or not the parent: ignored.
  win.post({ tessera: "lock", id: 1 }, { origin: EVIL });
  win.post({ tessera: "lock", id: 2 }, { source: {} });
  await flush();
  assert.equal(locks.requests, 0);
  win.post({ tessera: "lock", id: 3 });
  await flush();
  assert.deepEqual(got.at(-1), { tessera: "locked", id: 3 });
  assert.equal(locks.held, 1);
  win.post({ tessera: "unlock", id: 3 }, { origin: EVIL });
  await flush();
  assert.equal(locks.held, 1, "another origin cannot let go of the parent's lock");
  win.post({ tessera: "unlock", id: 3 });
  await flush();
  assert.equal(locks.held, 0);
});

test("the frame relays tessera's tab channel both ways, and only tessera.js's messages", async () => {
  const got = [];
  const win = frameWindow(APP, (m) => got.push(m));
  const hub = fakeHub();
  const tesseraTabChannel = hub.channel();
  const heard = [];
  tesseraTabChannel.addEventListener("message", (e) => heard.push(e.data));
  closers.push(serveFrame({ window: win, allowedOrigins: [APP], locks: fakeLocks(), channel: hub.channel() }));
  win.post({ tessera: "hello" });
  await flush();
  tesseraTabChannel.postMessage({ type: "signed_out", sid: "s1", sub: "u1" });
  tesseraTabChannel.postMessage({ type: "something else" });
  win.post({ tessera: "broadcast", message: { type: "token", access: { token: "t" } } });
  win.post({ tessera: "broadcast", message: { type: "bogus" } });
  win.post({ tessera: "broadcast", message: { type: "ended", reason: "x" } }, { origin: EVIL });
  await flush();
  assert.deepEqual(got.slice(1), [{ tessera: "event", message: { type: "signed_out", sid: "s1", sub: "u1" } }]);
  assert.deepEqual(heard, [{ type: "token", access: { token: "t" } }]);
});

test("a request cancelled before the grant never holds the lock; closing the frame lets go", async () => {
  const got = [];
  const win = frameWindow(APP, (m) => got.push(m));
  const locks = fakeLocks();
  let letGo;
  locks.request(`tessera-refresh ${ORIGIN}`, () => new Promise((r) => (letGo = r)));
  const frame = serveFrame({ window: win, allowedOrigins: [APP], locks, channel: null });
  win.post({ tessera: "lock", id: "a" });
  win.post({ tessera: "unlock", id: "a" });
  win.post({ tessera: "lock", id: "b" });
  await flush();
  letGo();
  await flush();
  assert.deepEqual(got.slice(1), [{ tessera: "locked", id: "b" }], "'a' was given up before its grant");
  assert.equal(locks.held, 1);
  frame.close();
  await flush();
  assert.equal(locks.held, 0);
});
