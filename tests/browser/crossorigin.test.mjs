// tessera.js on a page of another origin of the same site, in real Chromium: the app page (a tiny
// static node server on one port of 127.0.0.1) imports tessera.js from tessera (another port)
// and shares the refresh cookie with tessera's own page. Web Locks and BroadcastChannel are per
// origin, so the library takes tessera's lock through tessera's hidden frame
// (/tessera-frame.html); these tests show that two app tabs and a tab of tessera's page, all
// refreshing at the same moments, never present one refresh token twice, and that a sign-out on
// tessera's page reaches the app page at once.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { PASSWORD, emails, launchChromium, onStopAll, sleep, stopAll, tesseraServer as startTessera } from "./harness.mjs";

const uniqueEmail = emails("cross");

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  stopAll();
});

/**
 * The app's origin: a static page that imports tessera.js from `tessera` (filled in later, once
 * tessera runs), exposes its client as `window.t`, and records the client's events. `?frame=off`
 * turns the frame off (the client then coordinates with its own origin only).
 */
async function startApp() {
  const app = { tessera: null };
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname !== "/") {
      res.writeHead(404).end();
      return;
    }
    const frame = url.searchParams.get("frame") === "off" ? ", frame: null" : "";
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
    res.end(`<!doctype html><html><head><meta charset="utf-8"><title>app</title>
<script type="module">
import { createClient } from "${app.tessera}/tessera.js";
const t = createClient({ url: "${app.tessera}"${frame} });
window.t = t;
window.events = [];
for (const name of ["signed_in", "token_refreshed", "signed_out", "session_ended", "error"]) {
  t.on(name, (detail) => window.events.push({ name, detail: JSON.parse(JSON.stringify(detail ?? {})), at: Date.now() }));
}
window.restored = t.restore().then((user) => user && user.email, (error) => "error: " + error.message);
</script></head><body><p>app</p></body></html>`);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  app.origin = `http://127.0.0.1:${server.address().port}`;
  onStopAll(() => server.close());
  return app;
}

/** tessera and the app, the app's origin allowed; a registered user. */
async function setUp() {
  const app = await startApp();
  const tessera = await startTessera(["--allowed-origins", app.origin, "--access-ttl", "4s"]);
  app.tessera = tessera.base;
  const email = uniqueEmail();
  const res = await fetch(`${tessera.base}/api/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password: PASSWORD }),
  });
  assert.equal(res.status, 201);
  return { app, tessera, email };
}

/** Signs in on tessera's own page, in a new browser context. */
async function signedInOnTessera(tessera, email) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(tessera.base);
  const form = page.locator("#signin-form");
  await form.getByLabel("Email or username", { exact: true }).fill(email);
  await form.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#account").waitFor({ state: "visible" });
  return { context, page };
}

async function openApp(context, app, query = "") {
  const page = await context.newPage();
  await page.goto(`${app.origin}/${query}`);
  await page.waitForFunction(() => window.restored !== undefined);
  return page;
}

/**
 * `rounds` times, every tab forces a refresh at the same moment (tessera's tab through a second
 * client of tessera.js on its own origin, as its page's client would), and the app tabs call
 * tessera's API through `fetch` between rounds.
 */
async function refreshTogether(tesseraPage, appPages, tessera, rounds) {
  await tesseraPage.evaluate(async () => {
    const { createClient } = await import("/tessera.js");
    window.extra = createClient();
    await window.extra.restore();
  });
  for (let i = 0; i < rounds; i++) {
    const forced = [
      tesseraPage.evaluate(() => window.extra.getToken({ forceRefresh: true }).then(() => "ok", (e) => `${e.name}: ${e.message}`)),
      ...appPages.map((p) => p.evaluate(() => window.t.getToken({ forceRefresh: true }).then(() => "ok", (e) => `${e.name}: ${e.message}`))),
    ];
    const results = await Promise.all(forced);
    assert.deepEqual(results, results.map(() => "ok"), `round ${i}: ${results.join(", ")}`);
    for (const p of appPages) {
      const status = await p.evaluate((base) => window.t.fetch(`${base}/api/auth/me`).then((r) => r.status), tessera.base);
      assert.equal(status, 200);
    }
    await sleep(400 + (i % 3) * 300);
  }
}

test("two app tabs and tessera's page refresh at the same moments for 20 s without reuse", async () => {
  const { app, tessera, email } = await setUp();
  const { context, page: tesseraPage } = await signedInOnTessera(tessera, email);
  const first = await openApp(context, app);
  const second = await openApp(context, app);
  for (const p of [first, second]) assert.equal(await p.evaluate(() => window.restored), email);
  assert.equal(await first.locator("iframe[src$='/tessera-frame.html']").count(), 1, "the app page loaded tessera's frame");

  const end = Date.now() + 20_000;
  let rounds = 0;
  while (Date.now() < end) {
    await refreshTogether(tesseraPage, [first, second], tessera, 1);
    rounds += 1;
  }
  assert.equal(tessera.audit("refresh_token_reused").length, 0, "a tab presented a rotated refresh token");
  assert.ok(tessera.audit("token_refreshed").length >= rounds, `refreshes: ${tessera.audit("token_refreshed").length}`);
  for (const p of [first, second]) {
    assert.equal(await p.evaluate(() => window.t.state), "signed_in");
    assert.deepEqual(await p.evaluate(() => window.events.filter((e) => e.name === "session_ended" || e.name === "error")), []);
  }
  await tesseraPage.locator("#reload-sessions").click();
  assert.ok(await tesseraPage.locator("#account").isVisible(), "tessera's page is still signed in");
  await context.close();
});

test("without the frame, the same load does reuse a refresh token (the check can fail)", async () => {
  const { app, tessera, email } = await setUp();
  const { context, page: tesseraPage } = await signedInOnTessera(tessera, email);
  const first = await openApp(context, app, "?frame=off");
  const second = await openApp(context, app, "?frame=off");
  for (const p of [first, second]) assert.equal(await p.evaluate(() => window.restored), email);
  await tesseraPage.evaluate(async () => {
    const { createClient } = await import("/tessera.js");
    window.extra = createClient();
    await window.extra.restore();
  });
  const end = Date.now() + 20_000;
  while (Date.now() < end && tessera.audit("refresh_token_reused").length === 0) {
    await Promise.all([
      tesseraPage.evaluate(() => window.extra.getToken({ forceRefresh: true }).catch(() => null)),
      first.evaluate(() => window.t.getToken({ forceRefresh: true }).catch(() => null)),
    ]);
    await sleep(50);
  }
  assert.ok(tessera.audit("refresh_token_reused").length >= 1, "two origins raced without the frame, yet no reuse was seen");
  await context.close();
});

test("signing out on tessera's page ends the app page's session within 2 s", async () => {
  const { app, tessera, email } = await setUp();
  const { context, page: tesseraPage } = await signedInOnTessera(tessera, email);
  const appPage = await openApp(context, app);
  assert.equal(await appPage.evaluate(() => window.restored), email);
  await sleep(300); // the frame is loaded by the restore; let it settle
  const clicked = Date.now();
  await tesseraPage.locator("#signout").click();
  await appPage.waitForFunction(() => window.t.state === "ended", null, { timeout: 2000 });
  const ended = await appPage.evaluate(() => window.events.find((e) => e.name === "session_ended"));
  assert.equal(ended.detail.reason, "signed_out_elsewhere");
  assert.ok(ended.at - clicked < 2000);
  assert.equal(tessera.audit("refresh_token_reused").length, 0);
  await context.close();
});

test("a sign-out on the app page reaches tessera's page at once", async () => {
  const { app, tessera, email } = await setUp();
  const { context, page: tesseraPage } = await signedInOnTessera(tessera, email);
  const appPage = await openApp(context, app);
  assert.equal(await appPage.evaluate(() => window.restored), email);
  await appPage.evaluate(() => window.t.signOut());
  await tesseraPage.locator("#ended").waitFor({ state: "visible", timeout: 2000 });
  await context.close();
});

test("an origin that is not allowed gets no frame, and the client does without it", async () => {
  const app = await startApp();
  const tessera = await startTessera(["--allowed-origins", "http://127.0.0.1:1", "--access-ttl", "4s"]);
  app.tessera = tessera.base;
  const context = await browser.newContext();
  const page = await openApp(context, app);
  const started = Date.now();
  // The frame is refused (frame-ancestors), so the client gives it up after its load and a
  // grace second and calls tessera directly, which CORS refuses too: restore settles, it does
  // not hang.
  const restored = await page.evaluate(() => window.restored);
  assert.match(String(restored), /^error: /);
  assert.ok(Date.now() - started < 6000, `restore took ${Date.now() - started} ms`);
  await context.close();
});
