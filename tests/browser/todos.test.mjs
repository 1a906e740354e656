// The todo app's page (`tessera-todos`, crates/todos/web) against a real tessera, in real
// Chromium: tessera and tessera-todos on two ports of 127.0.0.1 (two origins of one site), with
// 4-second access tokens, so that every test lives through several refreshes.
//
// Each test picks a free port for tessera-todos first, starts `tessera serve` on a random port
// with `--allowed-origins http://127.0.0.1:<todos port>` (CORS with credentials) and
// `--insecure-cookies` (plain http), then starts `tessera-todos --issuer <tessera>` on the
// picked port (it fetches tessera's keys and revocation feed at start). Screenshots go to
// target/browser-tests/.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { join } from "node:path";
import { PASSWORD, callApi, emails, launchChromium, shots, sleep, startLogging, startTessera, stopAll, todosBinary } from "./harness.mjs";

const uniqueEmail = emails("todos");

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  stopAll();
});

/** A free loopback port: bound, closed, reused (tessera must know it before todos starts). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** tessera and tessera-todos, wired to each other: `{tessera, todos, audit(event)}`. */
async function startBoth() {
  const todosPort = await freePort();
  const todosOrigin = `http://127.0.0.1:${todosPort}`;
  const auth = startTessera(["--access-ttl", "4s", "--allowed-origins", todosOrigin]);
  const tessera = await auth.started;
  const app = startLogging(todosBinary, ["--listen", `127.0.0.1:${todosPort}`, "--issuer", tessera, "--log-format", "json"], "tessera-todos");
  const todos = await app.started;
  assert.equal(todos, todosOrigin);
  return {
    tessera,
    todos,
    nodeLogins: 0,
    audit: auth.audit,
    stop: () => { app.stop(); auth.stop(); },
  };
}

/** tessera's API, from node: `{status, body}`. */
const call = (env, path, options) => callApi(env.tessera, path, options);

async function register(env, email) {
  const { status, body } = await call(env, "/register", { method: "POST", json: { email, password: PASSWORD } });
  assert.equal(status, 201, JSON.stringify(body));
}

/** Adds a todo as `email` from node, through a session of its own (as another app would). */
async function addFromNode(env, email, title) {
  const login = await call(env, "/login", { method: "POST", json: { email, password: PASSWORD } });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  env.nodeLogins += 1;
  const res = await fetch(`${env.todos}/todos`, {
    method: "POST",
    headers: { Authorization: `Bearer ${login.body.data.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ title }),
  });
  assert.ok(res.ok, `POST /todos from node: ${res.status}`);
  return res.json();
}

/**
 * Watches a page: every answer of 400 or more, every failed request, console error and page
 * error is recorded in `problems` (from the moment of the call); every WebSocket in `sockets`.
 */
function watch(page) {
  const problems = [];
  const sockets = [];
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`${r.request().method()} ${r.url()} → ${r.status()}`);
  });
  page.on("requestfailed", (r) => {
    // A navigation (reload) aborts what the old document had in flight; that is no failure.
    if (r.failure()?.errorText !== "net::ERR_ABORTED") problems.push(`${r.method()} ${r.url()} failed: ${r.failure()?.errorText}`);
  });
  // (The browser's own request for /favicon.ico, which neither server has, is no request of the page.)
  page.on("console", (m) => { if (m.type() === "error" && !m.location().url.endsWith("/favicon.ico")) problems.push(`console of ${page.url()}: ${m.text()} (${m.location().url})`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("websocket", (ws) => {
    const socket = { closed: false };
    sockets.push(socket);
    ws.on("close", () => { socket.closed = true; });
    ws.on("socketerror", (e) => problems.push(`socket error: ${e}`));
  });
  return { problems, sockets };
}

const visible = (page, id) => page.locator(`#${id}`).isVisible();

async function openTodos(context, env) {
  const page = await context.newPage();
  await page.goto(env.todos);
  return page;
}

async function signIn(page, email) {
  await page.locator("#signin").waitFor({ state: "visible" });
  await page.getByLabel("Email or username").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#app").waitFor({ state: "visible" });
  assert.equal(await page.locator("#who").textContent(), email);
}

/** A new user, signed in on the todo page of a fresh browser context. */
async function signedIn(env) {
  const email = uniqueEmail();
  await register(env, email);
  const context = await browser.newContext();
  const page = await context.newPage();
  const watched = watch(page);
  await page.goto(env.todos);
  await signIn(page, email);
  await page.locator("#socket-state", { hasText: "connected" }).waitFor();
  // Before the sign-in, the page's restore() was refused (no cookie yet): that is expected.
  watched.problems.length = 0;
  return { email, context, page, ...watched };
}

/** Adds a todo through the page's form and waits for it in the list. */
async function addOnPage(page, title) {
  await page.getByLabel("New todo").fill(title);
  await page.getByRole("button", { name: "Add" }).click();
  await page.locator("#todos li", { hasText: title }).waitFor();
  assert.equal(await page.locator("#add-error").textContent(), "");
}

/** The titles the page lists. */
const titles = (page) => page.locator("#todos li").allTextContents();

/**
 * Uses todo pages like a person for `ms`: adds a todo on each every `every` ms, and one from
 * node now and then, which must show up live (over the socket) on every page.
 */
async function keepUsing(env, email, pages, ms, every = 2000, tesseraPages = []) {
  const end = Date.now() + ms;
  let n = 0;
  while (Date.now() < end) {
    for (const page of pages) {
      assert.ok(await visible(page, "app"), "the todo page left the signed-in view");
      await addOnPage(page, `from the page ${n++}`);
    }
    for (const page of tesseraPages) {
      assert.ok(await visible(page, "account"), "tessera's page asked to sign in again");
      await page.locator("#reload-sessions").click();
    }
    if (n % 3 === 0 || n % 3 === 1) {
      const title = `from node ${n++}`;
      await addFromNode(env, email, title);
      for (const page of pages) {
        // No reload, no add here: only the socket can bring it.
        await page.locator("#todos li", { hasText: title }).waitFor({ timeout: 3000 });
      }
    }
    await sleep(every);
  }
  for (const page of pages) {
    assert.ok(await visible(page, "app"));
    assert.ok(!(await visible(page, "ended")) && !(await visible(page, "signin")));
  }
}

test("with 4-second tokens the todo page stays signed in for 20 seconds of use", async () => {
  const env = await startBoth();
  const { email, context, page, problems, sockets } = await signedIn(env);
  await addOnPage(page, "first");
  await page.screenshot({ path: join(shots, "todos-signed-in.png"), fullPage: true });

  await keepUsing(env, email, [page], 20_000);

  assert.deepEqual(problems, [], "no failed request, no error");
  assert.equal(env.audit("refresh_token_reused").length, 0, "no refresh token was presented twice");
  assert.ok(env.audit("token_refreshed").length >= 4, `refreshes: ${env.audit("token_refreshed").length}`);
  assert.equal(env.audit("login_succeeded").length, 1 + env.nodeLogins, "the page never signed in again");
  // The socket is alive, or was replaced by one opened with a fresh token.
  assert.equal(await page.locator("#socket-state").textContent(), "connected");
  assert.ok(sockets.filter((s) => !s.closed).length === 1, `open sockets: ${JSON.stringify(sockets)}`);
  const listed = await titles(page);
  assert.ok(listed.length >= 10, `todos listed: ${listed.length}`);
  assert.equal(new Set(listed).size, listed.length, "no todo listed twice");
  await context.close();
  env.stop();
});

test("two todo tabs and tessera's page share one session without refresh-token reuse", async () => {
  const env = await startBoth();
  const { email, context, page: first, problems: firstProblems } = await signedIn(env);
  const second = await openTodos(context, env);
  const secondWatch = watch(second);
  await second.locator("#app").waitFor({ state: "visible" });
  assert.equal(await second.locator("#who").textContent(), email, "the second tab restored the session");
  const accountPage = await context.newPage();
  const accountWatch = watch(accountPage);
  await accountPage.goto(env.tessera);
  await accountPage.locator("#account").waitFor({ state: "visible" });
  assert.equal(await accountPage.locator("#who").textContent(), email, "tessera's page restored the same session");
  const sessionId = await accountPage.locator("#session-id").textContent();

  await keepUsing(env, email, [first, second], 20_000, 1000, [accountPage]);

  assert.equal(env.audit("refresh_token_reused").length, 0, "a tab presented a rotated refresh token");
  assert.deepEqual([...firstProblems, ...secondWatch.problems, ...accountWatch.problems], [], "no failed request, no error");
  assert.equal(await accountPage.locator("#session-id").textContent(), sessionId, "still the one session");
  assert.equal(env.audit("login_succeeded").length, 1 + env.nodeLogins, "one sign-in in the browser: the other tabs restored it");
  await context.close();
  env.stop();
});

test("signing out on tessera's page ends the todo page's session within 2 seconds, for good", async () => {
  const env = await startBoth();
  const { email, context, page, sockets } = await signedIn(env);
  await addOnPage(page, "a private todo");
  const accountPage = await context.newPage();
  await accountPage.goto(env.tessera);
  await accountPage.locator("#account").waitFor({ state: "visible" });
  assert.equal(await accountPage.locator("#who").textContent(), email);

  // Record, inside the page, whether the signed-in view or a todo ever shows again.
  await page.evaluate(() => {
    window.__seen = [];
    const check = () => {
      if (!document.getElementById("app").hidden) window.__seen.push("app visible");
      if (document.querySelectorAll("#todos li").length) window.__seen.push("todos listed");
      if (!document.getElementById("signin").hidden && document.getElementById("ended").hidden) window.__seen.push("sign-in form without 'ended'");
    };
    new MutationObserver(check).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  });

  await accountPage.getByRole("button", { name: "Sign out", exact: true }).click();
  const signedOutAt = Date.now();
  await accountPage.locator("#signin").waitFor({ state: "visible" });
  await page.locator("#ended").waitFor({ state: "visible", timeout: 2000 });
  const took = Date.now() - signedOutAt;
  assert.ok(took <= 2000, `the todo page noticed after ${took} ms`);
  assert.match(await page.locator("#ended-title").textContent(), /Your session has ended/);
  assert.ok(!(await visible(page, "app")), "no signed-in view");
  assert.equal((await titles(page)).length, 0, "no todo of the old user");
  assert.equal(await page.locator("#who").textContent(), "");
  assert.equal(await page.locator("#socket-state").textContent(), "disconnected", "the page says its socket is closed");
  // And it is: every socket the page opened is closed (the close handshake takes a moment).
  for (let i = 0; i < 20 && !sockets.every((s) => s.closed); i++) await sleep(50);
  assert.ok(sockets.length >= 1 && sockets.every((s) => s.closed), `every socket is closed: ${JSON.stringify(sockets)}`);
  await page.evaluate(() => { window.__seen = []; });
  await page.screenshot({ path: join(shots, "todos-ended.png"), fullPage: true });

  // The user's other session (node's) adds a todo: a live socket would bring it. It must not.
  await addFromNode(env, email, "added after the sign-out");
  // Past the access token's lifetime, so that any leftover timer would have fired.
  await sleep(5000);
  assert.ok(await visible(page, "ended"), "it keeps saying the session ended");
  assert.ok(!(await visible(page, "app")));
  assert.equal((await titles(page)).length, 0);
  assert.deepEqual(await page.evaluate(() => window.__seen), [], "the old user's view never came back");
  assert.ok(sockets.length >= 1 && sockets.every((s) => s.closed), `every socket is closed: ${JSON.stringify(sockets)}`);
  assert.equal(env.audit("anonymous_signed_in").length, 0, "no guest session was started");
  assert.equal(env.audit("refresh_token_reused").length, 0);

  // Only the user starts again: "Sign in again" shows the form.
  await page.getByRole("button", { name: "Sign in again" }).click();
  await page.locator("#signin").waitFor({ state: "visible" });
  await context.close();
  env.stop();
});

test("a reload of the todo page restores the session without a password", async () => {
  const env = await startBoth();
  const { email, context, page, problems } = await signedIn(env);
  await addOnPage(page, "survives a reload");
  assert.equal(env.audit("login_succeeded").length, 1);
  await sleep(4500); // past the first access token's expiry
  await page.reload();
  await page.locator("#app").waitFor({ state: "visible" });
  assert.ok(!(await visible(page, "signin")), "no password asked");
  assert.equal(await page.locator("#who").textContent(), email);
  await page.locator("#todos li", { hasText: "survives a reload" }).waitFor();
  await page.locator("#socket-state", { hasText: "connected" }).waitFor();
  await addOnPage(page, "after the reload");
  assert.equal(env.audit("login_succeeded").length, 1, "no new sign-in");
  assert.deepEqual(problems, []);
  assert.equal(env.audit("refresh_token_reused").length, 0);
  await context.close();
  env.stop();
});
