// Unit tests of tessera.js's single-flight refresh, its retry on a 401 and the end of a
// session, against a fake tessera (test/fake.mjs) through the client's advanced options:
// `fetch`, `now`, `setTimeout`/`clearTimeout`, `locks` and `channel`.

import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { createClient, SessionEndedError, TesseraError } from "../../../crates/server/web/tessera.js";
import { API, ORIGIN, PASSWORD, fakeClock, fakeHub, fakeLocks, fakeTessera, flush } from "./fake.mjs";

const clients = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

/** A browser: one fake tessera, clock, lock and channel hub, and as many tabs as asked. */
function browser(options = {}) {
  const clock = fakeClock();
  const server = fakeTessera(clock, options);
  const locks = options.locks === null ? null : fakeLocks();
  const hub = fakeHub();
  const tab = ({ channel = true } = {}) => {
    const client = createClient({
      url: ORIGIN,
      fetch: server.fetch,
      now: clock.now,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      locks,
      channel: channel && options.channel !== null ? hub.channel() : null,
    });
    clients.push(client);
    return client;
  };
  return { clock, server, locks, tab };
}

/** Records a client's events: `events.of("session_ended")` → the details, in order. */
function record(client) {
  const seen = [];
  for (const name of ["signed_in", "token_refreshed", "user_updated", "signed_out", "session_ended", "error"]) {
    client.on(name, (detail) => seen.push({ name, detail }));
  }
  return { all: seen, of: (name) => seen.filter((e) => e.name === name).map((e) => e.detail) };
}

const bearer = (request) => request.headers.get("authorization");
const resourceCalls = (server) => server.requests.filter((r) => r.url.startsWith(API));

// ---- single flight -------------------------------------------------------------------------

test("concurrent fetch calls during expiry cause exactly one refresh", async () => {
  const { clock, server, tab, locks } = browser();
  const client = tab();
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  const first = client.expiresAt;
  const lockRequests = locks.requests;
  // The tab slept through its refresh timer: the token is now past its refresh point.
  clock.jump(14 * 60 * 1000);
  const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => client.fetch(`${API}/todos/${i}`)));
  assert.equal(server.count("/refresh"), 1, "one refresh for ten callers");
  assert.equal(locks.requests - lockRequests, 1, "the ten callers shared one promise: one lock request");
  assert.ok(answers.every((res) => res.status === 200));
  const tokens = new Set(resourceCalls(server).map(bearer));
  assert.equal(tokens.size, 1, "every call went out with the one new token");
  assert.ok(client.expiresAt > first);
  assert.equal(server.reused, 0);
});

test("two tabs due at once: one refresh, the other tab takes the token from the channel", async () => {
  const { clock, server, tab } = browser();
  const a = tab();
  const b = tab();
  await a.signIn({ email: "ada@example.com", password: PASSWORD });
  await flush();
  assert.equal(b.state, "signed_in", "the other tab took up the sign-in");
  clock.jump(14 * 60 * 1000);
  const [ta, tb] = await Promise.all([a.getToken(), b.getToken()]);
  assert.equal(server.count("/refresh"), 1);
  assert.equal(ta, tb);
  assert.equal(server.reused, 0);
});

test("without a channel, tabs still rotate one at a time under the lock: never a reused token", async () => {
  const { clock, server, tab } = browser({ channel: null });
  const a = tab();
  const b = tab();
  await a.signIn({ email: "ada@example.com", password: PASSWORD });
  await b.restore();
  clock.jump(14 * 60 * 1000);
  await Promise.all([a.getToken(), b.getToken(), a.fetch(`${API}/x`), b.fetch(`${API}/y`)]);
  assert.equal(server.maxRefreshesInFlight, 1, "never two rotations of the cookie at once");
  assert.equal(server.reused, 0);
  assert.equal(a.state, "signed_in");
  assert.equal(b.state, "signed_in");
});

test("the refresh timer renews ahead of expiry, for hours, with one refresh per lifetime", async () => {
  const { clock, server, tab } = browser({ accessTtl: 4 });
  const a = tab();
  const b = tab();
  const events = record(a);
  await a.signIn({ username: "ada", password: PASSWORD });
  await flush();
  await clock.advance(60 * 60 * 1000);
  // 4-second tokens are renewed at 80 % of their life: every 3.2 s, by one of the two tabs.
  const refreshes = server.count("/refresh");
  assert.ok(refreshes >= 1000 && refreshes <= 1130, `refreshes: ${refreshes}`);
  assert.equal(server.reused, 0);
  assert.equal(a.state, "signed_in");
  assert.equal(b.state, "signed_in");
  assert.ok(a.expiresAt > clock.now(), "the token in hand is valid");
  assert.equal(events.of("session_ended").length, 0);
});

test("tokens are renewed 5 minutes before expiry, or at 80 % of their life when that is later", async () => {
  for (const [ttl, at] of [[900, 12 * 60 * 1000], [3600, 55 * 60 * 1000]]) {
    const { clock, server, tab } = browser({ accessTtl: ttl });
    const client = tab();
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    await clock.advance(at - 1);
    assert.equal(server.count("/refresh"), 0, `${ttl} s tokens: not before ${at} ms`);
    await clock.advance(1);
    assert.equal(server.count("/refresh"), 1, `${ttl} s tokens: at ${at} ms`);
  }
});

test("getToken gives a valid token on every call, refreshing only when due or forced", async () => {
  const { clock, server, tab } = browser();
  const client = tab();
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  const t1 = await client.getToken();
  assert.equal(await client.getToken(), t1);
  assert.equal(server.count("/refresh"), 0);
  clock.jump(12 * 60 * 1000);
  const t2 = await client.getToken();
  assert.notEqual(t2, t1);
  assert.equal(server.count("/refresh"), 1);
  const [t3, t4] = await Promise.all([client.getToken({ forceRefresh: true }), client.getToken({ forceRefresh: true })]);
  assert.equal(t3, t4, "forced refreshes at once share one");
  assert.equal(server.count("/refresh"), 2);
});

test("socketProtocols carries a valid token for each connect, and refuses after the session ended", async () => {
  const { clock, server, tab } = browser();
  const client = tab();
  await assert.rejects(client.socketProtocols(), SessionEndedError, "nobody is signed in");
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  const [protocol, bearer] = await client.socketProtocols();
  assert.equal(protocol, "tessera");
  assert.equal(bearer, `tessera.bearer.${await client.getToken()}`);
  clock.jump(12 * 60 * 1000);
  const [, fresh] = await client.socketProtocols();
  assert.notEqual(fresh, bearer, "a reconnect after the token was due gets a fresh one");
  assert.equal(server.count("/refresh"), 1);
  await client.signOut();
  await assert.rejects(client.socketProtocols(), SessionEndedError, "never a socket for nobody");
});

// ---- retry on 401 --------------------------------------------------------------------------

test("a 401 UNAUTHORIZED refreshes once and retries once", async () => {
  const { server, tab } = browser();
  const client = tab();
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  const old = await client.getToken();
  server.resourceAnswers.push(() => new Response(JSON.stringify({ success: false, error: { code: "UNAUTHORIZED", message: "Invalid or expired token" } }), { status: 401 }));
  const res = await client.fetch(`${API}/todos`, { method: "POST", body: JSON.stringify({ title: "milk" }), headers: { "content-type": "application/json" } });
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).body, { title: "milk" }, "the retry sent the same body");
  const calls = resourceCalls(server);
  assert.equal(calls.length, 2);
  assert.equal(bearer(calls[0]), `Bearer ${old}`);
  assert.notEqual(bearer(calls[1]), `Bearer ${old}`);
  assert.equal(calls[1].headers.get("content-type"), "application/json", "the caller's headers are kept");
  assert.equal(server.count("/refresh"), 1);
});

test("a non-JSON 401 with WWW-Authenticate: Bearer error=\"invalid_token\" is retried once; a second 401 is returned as is", async () => {
  const { server, tab } = browser();
  const client = tab();
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  const challenge = () => new Response("expired", { status: 401, headers: { "www-authenticate": 'Bearer error="invalid_token"' } });
  server.resourceAnswers.push(challenge, challenge);
  const res = await client.fetch(new Request(`${API}/todos`, { method: "PUT", body: "x" }));
  assert.equal(res.status, 401, "the retry's answer is returned");
  assert.equal(await res.text(), "expired", "and its body is still readable");
  assert.equal(resourceCalls(server).length, 2, "one retry, no more");
  assert.equal(server.count("/refresh"), 1, "one refresh, no more");
  assert.equal(client.state, "signed_in", "a resource server's 401 does not end the session");
});

test("concurrent 401s share one refresh", async () => {
  const { server, tab } = browser();
  const client = tab();
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  server.revoke([...server.sessions.keys()][0]);
  server.seedSession(); // (a fresh cookie so the refresh succeeds: only the access token was dead)
  // The cookie now names another session: the refresh answers with that session's token, which
  // the client refuses to use as if it were its own.
  const results = await Promise.allSettled([client.fetch(`${API}/a`), client.fetch(`${API}/b`), client.fetch(`${API}/c`)]);
  assert.equal(server.count("/refresh"), 1);
  assert.ok(results.every((r) => r.status === "rejected" && r.reason instanceof SessionEndedError && r.reason.reason === "replaced"));
});

test("a 401 INVALID_CREDENTIALS is not retried and does not touch the session", async () => {
  const { server, tab } = browser();
  const client = tab();
  const events = record(client);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  await assert.rejects(client.changePassword("not the password", "a brand new password"), (error) => {
    assert.ok(error instanceof TesseraError);
    assert.equal(error.code, "INVALID_CREDENTIALS");
    assert.equal(error.status, 401);
    return true;
  });
  assert.equal(server.count("/password"), 1, "not retried");
  assert.equal(server.count("/refresh"), 0, "no refresh");
  assert.equal(client.state, "signed_in");
  assert.equal(events.of("session_ended").length, 0);

  // The same through client.fetch: the answer comes back as it is.
  server.resourceAnswers.push(() => new Response(JSON.stringify({ success: false, error: { code: "INVALID_CREDENTIALS", message: "Wrong password" } }), { status: 401 }));
  const res = await client.fetch(`${API}/confirm`);
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, "INVALID_CREDENTIALS");
  assert.equal(resourceCalls(server).length, 1);
  assert.equal(server.count("/refresh"), 0);

  // A wrong password at sign-in is an answer too.
  await assert.rejects(client.signIn({ email: "ada@example.com", password: "nope" }), { code: "INVALID_CREDENTIALS" });
  assert.equal(server.count("/login"), 2);
});

// ---- the end of a session ------------------------------------------------------------------

test("a refresh refused with INVALID_TOKEN emits session_ended once; later calls reject without a request", async () => {
  const { clock, server, tab } = browser();
  const a = tab();
  const b = tab();
  const eventsA = record(a);
  const eventsB = record(b);
  await a.signIn({ email: "ada@example.com", password: PASSWORD });
  await flush();
  server.revoke([...server.sessions.keys()][0]);
  clock.jump(14 * 60 * 1000);
  const results = await Promise.allSettled([a.fetch(`${API}/x`), a.fetch(`${API}/y`), a.getToken(), a.getUser()]);
  for (const r of results) {
    assert.equal(r.status, "rejected");
    assert.ok(r.reason instanceof SessionEndedError);
    assert.equal(r.reason.reason, "ended");
  }
  await flush();
  assert.deepEqual(eventsA.of("session_ended"), [{ reason: "ended" }], "said once");
  assert.deepEqual(eventsB.of("session_ended"), [{ reason: "ended" }], "the other tab was told, with the reason");
  assert.equal(server.count("/refresh"), 1, "one refresh found the session over");
  assert.equal(a.state, "ended");
  assert.equal(a.endReason, "ended");
  assert.equal(a.user, null);
  assert.equal(a.expiresAt, null, "the access token is forgotten");

  const before = server.requests.length;
  for (const call of [() => a.fetch(`${API}/z`), () => a.getToken(), () => a.getToken({ forceRefresh: true }), () => a.getUser(), () => a.listSessions(), () => a.changePassword(PASSWORD, "another password"), () => b.fetch(`${API}/z`), () => a.upgrade({ email: "x@example.com", password: PASSWORD })]) {
    await assert.rejects(call(), (error) => error instanceof SessionEndedError && error.reason === "ended");
  }
  await clock.advance(24 * 60 * 60 * 1000);
  assert.equal(server.requests.length, before, "no request at all: no retry of the dead token, no timer");
  assert.equal(clock.pending(), 0, "no timer left");
  assert.equal(eventsA.of("session_ended").length, 1);
  assert.equal(server.count("/anonymous"), 0);
});

test("a 401 on a call whose session is gone ends it at the refresh; a revoked session via the timer too", async () => {
  const { clock, server, tab } = browser();
  const client = tab();
  const events = record(client);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  server.revoke([...server.sessions.keys()][0]);
  await assert.rejects(client.getUser(), { name: "SessionEndedError", reason: "ended" });
  assert.equal(server.count("/me"), 1, "no retry after the refresh failed");
  assert.equal(server.count("/refresh"), 1);
  assert.equal(events.of("session_ended").length, 1);

  const other = browser();
  const c = other.tab();
  const ev = record(c);
  await c.signIn({ email: "bob@example.com", password: PASSWORD });
  other.server.revoke([...other.server.sessions.keys()][0]);
  await other.clock.advance(20 * 60 * 1000);
  assert.deepEqual(ev.of("session_ended"), [{ reason: "ended" }], "found by the scheduled refresh, nobody calling");
  assert.equal(other.server.count("/refresh"), 1);
});

test("a refresh without the cookie says cookie_missing", async () => {
  const { clock, server, tab } = browser();
  const client = tab();
  const events = record(client);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  server.jar = null; // cleared by the user, or by a sign-out on a page of another origin
  await clock.advance(12 * 60 * 1000);
  assert.deepEqual(events.of("session_ended"), [{ reason: "cookie_missing" }]);
});

test("conflicting refresh cookies end the session as cookie_conflict, never as a network failure", async () => {
  const { clock, server, tab } = browser();
  const client = tab();
  const events = record(client);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  server.plantedCookie = true; // a server on another port of tessera's host set one
  await clock.advance(12 * 60 * 1000);
  assert.deepEqual(events.of("session_ended"), [{ reason: "cookie_conflict" }]);
  assert.deepEqual(events.of("error"), [], "not reported as a failure to retry");
  await assert.rejects(client.fetch(`${API}/x`), { reason: "cookie_conflict" });
});

test("a restore that meets conflicting cookies says so", async () => {
  const { server, tab } = browser();
  server.seedSession();
  server.plantedCookie = true;
  const client = tab();
  assert.equal(await client.restore(), null);
  assert.equal(client.state, "ended");
  assert.equal(client.endReason, "cookie_conflict");
});

test("a refresh that brings another session's token ends this one as replaced; the token is not used", async () => {
  const { clock, server, tab } = browser();
  const client = tab();
  const events = record(client);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  server.signInElsewhere();
  clock.jump(12 * 60 * 1000);
  await assert.rejects(client.fetch(`${API}/x`), { reason: "replaced" });
  assert.equal(resourceCalls(server).length, 0, "nothing was sent with the other user's token");
  assert.deepEqual(events.of("session_ended"), [{ reason: "replaced" }]);
  // The app may take up the new session when the user asks.
  const user = await client.restore();
  assert.ok(user);
  assert.equal(client.state, "signed_in");
});

test("signing out tells the other tabs: signed_out here, session_ended there", async () => {
  const { server, tab } = browser();
  const a = tab();
  const b = tab();
  const eventsA = record(a);
  const eventsB = record(b);
  await a.signIn({ email: "ada@example.com", password: PASSWORD });
  await flush();
  await a.signOut();
  await flush();
  const logout = server.requests.find((r) => r.path === "/api/auth/logout");
  assert.equal(logout.headers.get("x-requested-with"), "tessera");
  assert.equal(logout.credentials, "include");
  assert.deepEqual(eventsA.of("signed_out"), [{ everywhere: false }]);
  assert.equal(eventsA.of("session_ended").length, 0);
  assert.deepEqual(eventsB.of("session_ended"), [{ reason: "signed_out_elsewhere" }]);
  assert.equal(a.state, "signed_out");
  await assert.rejects(a.getToken(), { reason: "not_signed_in" });
  assert.equal(b.state, "ended");
});

test("signing out of a session that already ended is a quiet sign-out", async () => {
  const { clock, server, tab } = browser();
  const client = tab();
  const events = record(client);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  server.revoke([...server.sessions.keys()][0]);
  clock.jump(12 * 60 * 1000);
  await client.signOut({ everywhere: true });
  assert.equal(client.state, "signed_out");
  assert.equal(events.of("session_ended").length, 0);
  assert.deepEqual(events.of("signed_out"), [{ everywhere: true }]);
});

test("a network failure of a background refresh is an error event and is retried; the session lives on", async () => {
  const { clock, server, tab } = browser();
  const client = tab();
  const events = record(client);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  server.failNextRefresh = 2;
  await clock.advance(12 * 60 * 1000 + 5000);
  assert.equal(events.of("error").length, 2);
  assert.equal(server.count("/refresh"), 3);
  assert.equal(events.of("token_refreshed").length, 1);
  assert.equal(client.state, "signed_in");
  assert.equal(events.of("session_ended").length, 0);
});

// ---- never a guest on its own --------------------------------------------------------------

test("no guest sign-in ever happens on its own", async () => {
  const { clock, server, tab } = browser({ allowAnonymous: true });
  const client = tab();
  const events = record(client);
  assert.equal((await client.settings()).allow_anonymous, true);

  // No cookie: restore finds nobody, and stays so.
  assert.equal(await client.restore(), null);
  assert.equal(client.state, "signed_out");
  await assert.rejects(client.fetch(`${API}/x`), { reason: "not_signed_in" });
  await assert.rejects(client.getToken(), SessionEndedError);

  // A registered user's session ends: still no guest.
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  server.revoke([...server.sessions.keys()][0]);
  await clock.advance(24 * 60 * 60 * 1000);
  assert.equal(client.state, "ended");

  // A reload finds the dead cookie deleted: nobody, again.
  const reloaded = tab();
  assert.equal(await reloaded.restore(), null);
  await clock.advance(24 * 60 * 60 * 1000);
  assert.equal(server.count("/anonymous"), 0, "never a guest sign-in");
  assert.equal(events.of("signed_in").length, 1, "only the user's own sign-in");
});

test("a tab that held a session does not follow another tab into a guest session", async () => {
  const { server, tab } = browser();
  const a = tab();
  const b = tab();
  const fresh = tab();
  const eventsB = record(b);
  await a.signInAsGuest();
  await flush();
  assert.equal(b.state, "signed_in");
  await a.signOut();
  await flush();
  assert.equal(b.state, "ended");
  assert.equal(fresh.state, "ended");

  // A new guest, by the user's click in tab A: B keeps saying its session ended.
  await a.signInAsGuest();
  await flush();
  assert.equal(b.state, "ended");
  assert.deepEqual(eventsB.of("session_ended"), [{ reason: "signed_out_elsewhere" }]);
  assert.equal(server.count("/anonymous"), 2, "both by the user's own call");

  // A registered sign-in is taken up, with an event.
  await a.signIn({ email: "ada@example.com", password: PASSWORD });
  await flush();
  assert.equal(b.state, "signed_in");
  assert.deepEqual(eventsB.of("signed_in").at(-1).otherTab, true);
});

// ---- sign-in, restore, upgrade, requests -------------------------------------------------

test("sign-in and refresh use the cookie transport; only cookie-authenticated calls send X-Requested-With", async () => {
  const { clock, server, tab } = browser();
  const client = tab();
  const events = record(client);
  const user = await client.signIn({ email: "ada@example.com", password: PASSWORD });
  assert.equal(user.email, "ada@example.com");
  assert.equal(client.user.email, "ada@example.com");
  assert.deepEqual(events.of("signed_in"), [{ user }]);
  const login = server.requests.find((r) => r.path === "/api/auth/login");
  assert.equal(login.json.refresh_transport, "cookie");
  assert.equal(login.credentials, "include");
  assert.equal(login.url, `${ORIGIN}/api/auth/login`);
  clock.jump(12 * 60 * 1000);
  const me = await client.getUser();
  assert.equal(me.session_id, [...server.sessions.keys()][0]);
  const refresh = server.requests.find((r) => r.path === "/api/auth/refresh");
  assert.equal(refresh.headers.get("x-requested-with"), "tessera");
  assert.equal(refresh.credentials, "include");
  const meRequest = server.requests.find((r) => r.path === "/api/auth/me");
  assert.equal(meRequest.headers.get("x-requested-with"), null);
  assert.match(meRequest.headers.get("authorization"), /^Bearer /);
  assert.equal(events.of("token_refreshed").length, 1);
});

test("restore resumes the cookie's session with one refresh, and signUp registers then signs in", async () => {
  const { server, tab } = browser();
  const seeded = server.seedSession();
  const client = tab();
  const events = record(client);
  const user = await client.restore();
  assert.equal(user.session_id, seeded.id);
  assert.equal(server.count("/refresh"), 1);
  assert.equal(events.of("signed_in")[0].restored, true);
  assert.equal((await client.restore()).session_id, seeded.id);
  assert.equal(server.count("/refresh"), 1, "a second restore does not rotate again");

  const other = tab();
  await assert.rejects(other.signUp({ email: "new@example.com", password: "short" }), { code: "WEAK_PASSWORD" });
  const created = await other.signUp({ email: "new@example.com", password: PASSWORD });
  assert.equal(created.email, "new@example.com");
  assert.equal(server.count("/register"), 2);
});

test("upgrade saves a guest in place under the lock: no refresh of another tab overlaps it", async () => {
  const { clock, server, tab, locks } = browser({ channel: null });
  const a = tab();
  const b = tab();
  const events = record(a);
  await a.signInAsGuest();
  await b.restore();
  await assert.rejects(a.upgrade({ email: "taken@example.com", password: PASSWORD }), { code: "EMAIL_TAKEN" });
  assert.equal(a.user.is_anonymous, true, "the guest carries on");
  clock.jump(12 * 60 * 1000);
  const [user] = await Promise.all([a.upgrade({ email: "ada@example.com", password: PASSWORD }), b.getToken(), b.getToken()]);
  assert.equal(user.is_anonymous, false);
  assert.equal(user.email, "ada@example.com");
  assert.equal(server.reused, 0, "the upgrade's rotation and the other tab's never overlapped");
  assert.equal(locks.maxHeld, 1);
  assert.equal(a.state, "signed_in");
  assert.equal(b.state, "signed_in");
  assert.equal(events.of("user_updated").length, 1);
  const upgrade = server.requests.filter((r) => r.path === "/api/auth/upgrade").at(-1);
  assert.equal(upgrade.headers.get("x-requested-with"), "tessera");
  assert.equal(upgrade.json.refresh_transport, "cookie");
});

test("deleting the account signs this tab out and tells the others", async () => {
  const { server, tab } = browser();
  const a = tab();
  const b = tab();
  const eventsA = record(a);
  const eventsB = record(b);
  await a.signIn({ email: "ada@example.com", password: PASSWORD });
  await flush();
  await assert.rejects(a.deleteAccount("wrong password"), { code: "INVALID_CREDENTIALS" });
  assert.equal(a.state, "signed_in");
  await a.deleteAccount(PASSWORD);
  await flush();
  assert.deepEqual(eventsA.of("signed_out"), [{ reason: "account_deleted" }]);
  assert.deepEqual(eventsB.of("session_ended"), [{ reason: "account_deleted" }]);
  assert.equal(server.jar, null);
});

test("without Web Locks and BroadcastChannel the client still works in its tab", async () => {
  const { clock, server, tab } = browser({ locks: null, channel: null });
  const client = tab();
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  clock.jump(12 * 60 * 1000);
  await Promise.all([client.getToken(), client.fetch(`${API}/x`), client.getUser()]);
  assert.equal(server.count("/refresh"), 1);
  assert.equal(server.reused, 0);
});

test("on() refuses unknown events and returns an unsubscribe function", async () => {
  const { tab } = browser();
  const client = tab();
  assert.throws(() => client.on("signedIn", () => {}), TypeError);
  let calls = 0;
  const off = client.on("signed_in", () => calls++);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  off();
  await client.signOut();
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  assert.equal(calls, 1);
});
