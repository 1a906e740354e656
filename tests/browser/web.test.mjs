// The web page of `tessera serve`, driven in real Chromium against a real server.
//
// Each test starts `target/debug/tessera serve` on a random loopback port with a fresh data
// directory, `--insecure-cookies` (plain http) and the flags it needs (the access lifetime,
// `--allow-anonymous`). Screenshots go to target/browser-tests/.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { PASSWORD, callApi, emails, launchChromium, shots, sleep, stopAll, tesseraServer as startServer } from "./harness.mjs";

const uniqueEmail = emails("web");

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  stopAll();
});

/** Calls the API directly from node, as another client would: `{status, body}`. */
const call = (server, path, options) => callApi(server.base, path, options);

async function register(server, email, fields = { email }) {
  const { status } = await call(server, "/register", { method: "POST", json: { ...fields, password: PASSWORD } });
  assert.equal(status, 201);
}

/** A second session of the user, signed in from node (tokens in the body): `{token, refresh_token}`. */
async function loginElsewhere(server, email, password = PASSWORD) {
  const { status, body } = await call(server, "/login", { method: "POST", json: { email, password } });
  assert.equal(status, 200, JSON.stringify(body));
  return body.data;
}

/** The claims of a JWT, read without checking it (the server already did). */
const claims = (jwt) => JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString());

/** The next JSON answer the page gets from `/api/auth{path}` (start waiting before the action). */
function nextAnswer(page, path, method) {
  return page
    .waitForResponse((r) => new URL(r.url()).pathname === `/api/auth${path}` && (!method || r.request().method() === method))
    .then((r) => r.json());
}

async function openPage(context, server) {
  const page = await context.newPage();
  await page.goto(server.base);
  return page;
}

/** The sign-in form's fields (the account view has password fields of its own). */
const signinField = (page, label) => page.locator("#signin-form").getByLabel(label, { exact: true });

async function signIn(page, name, password = PASSWORD) {
  await signinField(page, "Email or username").fill(name);
  await signinField(page, "Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#account").waitFor({ state: "visible" });
  assert.equal(await page.locator("#who").textContent(), name);
}

const visible = (page, id) => page.locator(`#${id}`).isVisible();

/** A new user, signed in on the page of a fresh browser context. */
async function signedIn(server) {
  const email = uniqueEmail();
  await register(server, email);
  const context = await browser.newContext();
  const page = await openPage(context, server);
  await page.locator("#signin").waitFor({ state: "visible" });
  await signIn(page, email);
  return { email, context, page };
}

/** Uses the page like a person for `ms`: reloads the session list every `every` ms. */
async function keepUsing(pages, ms, every = 1500) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    for (const page of pages) {
      assert.ok(await visible(page, "account"), "the page asked to sign in again");
      await page.locator("#reload-sessions").click();
    }
    await sleep(every);
  }
  for (const page of pages) {
    assert.ok(await visible(page, "account"));
    assert.ok(!(await visible(page, "ended")) && !(await visible(page, "signin")));
  }
}

test("signing in shows the user, and no token is readable by scripts", async () => {
  const server = await startServer();
  const email = uniqueEmail();
  await register(server, email);
  const context = await browser.newContext();
  const page = await openPage(context, server);
  await page.locator("#signin").waitFor({ state: "visible" });
  assert.ok(!(await visible(page, "notice")), "a browser that never signed in gets no alarming notice");
  await signIn(page, email);
  assert.match(await page.locator("#session-id").textContent(), /^[0-9a-f-]{36}$/);
  assert.match(await page.locator("#time-left").textContent(), /valid for/);
  await page.locator("#sessions tbody tr").first().waitFor();

  const cookies = await context.cookies();
  const refresh = cookies.find((c) => c.name === "tessera_refresh");
  assert.ok(refresh, "the refresh cookie is set");
  assert.equal(refresh.httpOnly, true);
  assert.equal(refresh.sameSite, "Strict");
  assert.equal(refresh.path, "/api/auth");
  const exposed = await page.evaluate(() => ({
    cookie: document.cookie,
    local: JSON.stringify({ ...localStorage }),
    session: JSON.stringify({ ...sessionStorage }),
  }));
  assert.equal(exposed.cookie, "", "no script-readable cookie");
  assert.equal(exposed.local, "{}", "nothing in localStorage");
  assert.equal(exposed.session, "{}", "nothing in sessionStorage");
  assert.ok(!exposed.cookie.includes(refresh.value));
  await page.screenshot({ path: join(shots, "signed-in.png"), fullPage: true });

  await page.setViewportSize({ width: 375, height: 740 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow}px too wide)`);
  await page.screenshot({ path: join(shots, "signed-in-phone.png"), fullPage: true });
  await context.close();
});

test("an account can be created from the page, using only the keyboard", async () => {
  const server = await startServer();
  const context = await browser.newContext();
  const page = await openPage(context, server);
  await page.locator("#signin").waitFor({ state: "visible" });
  const email = uniqueEmail();
  await signinField(page, "Email or username").fill(email);
  await signinField(page, "Password").fill("short");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.locator("#form-error", { hasText: /at least 8/ }).waitFor();
  await signinField(page, "Password").fill(PASSWORD);
  await signinField(page, "Password").press("Tab"); // → Sign in
  await page.keyboard.press("Tab"); // → Create account
  assert.equal(await page.evaluate(() => document.activeElement.id), "register-button");
  await page.keyboard.press("Enter");
  await page.locator("#account").waitFor({ state: "visible" });
  assert.equal(await page.locator("#who").textContent(), email);
  await context.close();
});

test("with 4-second tokens the page stays signed in for 20 seconds, refreshing", async () => {
  const server = await startServer(["--access-ttl", "4s"]);
  const { email, context, page } = await signedIn(server);
  await keepUsing([page], 20_000);
  assert.ok(server.audit("token_refreshed").length >= 4, `refreshes: ${server.audit("token_refreshed").length}`);
  assert.equal(server.audit("refresh_token_reused").length, 0);
  await context.close();
});

test("two tabs of one session never race each other's refresh", async () => {
  const server = await startServer(["--access-ttl", "4s"]);
  const { context, page: first } = await signedIn(server);
  const second = await openPage(context, server);
  await second.locator("#account").waitFor({ state: "visible" });
  assert.equal(await second.locator("#session-id").textContent(), await first.locator("#session-id").textContent());
  await keepUsing([first, second], 20_000, 700);
  assert.equal(server.audit("refresh_token_reused").length, 0, "a tab presented a rotated token");
  assert.ok(server.audit("token_refreshed").length >= 4);
  await context.close();
});

test("a reload restores the session from the cookie", async () => {
  const server = await startServer();
  const { email, context, page } = await signedIn(server);
  const sessionId = await page.locator("#session-id").textContent();
  await page.reload();
  await page.locator("#account").waitFor({ state: "visible" });
  assert.equal(await page.locator("#session-id").textContent(), sessionId);
  assert.equal(await page.locator("#who").textContent(), email);
  await context.close();
});

test("signing out in one tab tells the other its session ended", async () => {
  const server = await startServer();
  const { context, page: first } = await signedIn(server);
  const second = await openPage(context, server);
  await second.locator("#account").waitFor({ state: "visible" });

  await first.getByRole("button", { name: "Sign out", exact: true }).click();
  await first.locator("#signin").waitFor({ state: "visible" });
  await first.locator("#notice", { hasText: /signed out/ }).waitFor();

  if (await visible(second, "account")) await second.locator("#reload-sessions").click();
  await second.locator("#ended").waitFor({ state: "visible" });
  assert.match(await second.locator("#ended-title").textContent(), /session has ended/);
  assert.ok(!(await visible(second, "account")), "no silent carrying on");
  await second.screenshot({ path: join(shots, "session-ended.png"), fullPage: true });
  await second.getByRole("button", { name: "Sign in again" }).click();
  await second.locator("#signin").waitFor({ state: "visible" });
  await context.close();
});

test("revoking a session from the list ends it in that browser", async () => {
  const server = await startServer();
  const email = uniqueEmail();
  await register(server, email);
  const laptop = await browser.newContext({ userAgent: "Laptop browser" });
  const phone = await browser.newContext({ userAgent: "Phone browser" });
  const laptopPage = await openPage(laptop, server);
  await laptopPage.locator("#signin").waitFor({ state: "visible" });
  await signIn(laptopPage, email);
  const phonePage = await openPage(phone, server);
  await phonePage.locator("#signin").waitFor({ state: "visible" });
  await signIn(phonePage, email);

  await laptopPage.locator("#reload-sessions").click();
  const phoneRow = laptopPage.locator("#sessions tbody tr", { hasText: "Phone browser" });
  await phoneRow.waitFor();
  await phoneRow.getByRole("button", { name: /Revoke/ }).click();
  await laptopPage.locator("#sessions tbody tr", { hasText: "Phone browser" }).waitFor({ state: "detached" });
  assert.ok(await visible(laptopPage, "account"), "the laptop stays signed in");

  await phonePage.locator("#reload-sessions").click();
  await phonePage.locator("#ended").waitFor({ state: "visible" });
  assert.match(await phonePage.locator("#ended-reason").textContent(), /revoked|signed out|expired/);
  assert.equal(server.audit("session_revoked").length, 1);
  await laptop.close();
  await phone.close();
});

test("a guest saves the account and carries on in the same session, as the same user", async () => {
  const server = await startServer(["--allow-anonymous"]);
  const taken = uniqueEmail();
  await register(server, taken);
  const context = await browser.newContext();
  const page = await openPage(context, server);
  await page.locator("#signin").waitFor({ state: "visible" });
  const guestButton = page.getByRole("button", { name: "Continue as guest" });
  assert.ok(await guestButton.isVisible(), "the server allows guests: the page offers it");
  await page.screenshot({ path: join(shots, "signin-with-guest.png"), fullPage: true });
  assert.equal(server.audit("anonymous_signed_in").length, 0, "no guest session without the click");

  const started = nextAnswer(page, "/anonymous", "POST");
  const meAsGuest = nextAnswer(page, "/me");
  await guestButton.click();
  await page.locator("#account").waitFor({ state: "visible" });
  const guest = (await meAsGuest).data;
  const guestToken = (await started).data;
  assert.equal(guest.is_anonymous, true);
  assert.equal(guestToken.user.is_anonymous, true);
  assert.equal(await page.locator("#who").textContent(), "Guest");
  assert.ok(await visible(page, "guest-tag"), "the page says it is a guest account");
  assert.ok(await visible(page, "upgrade"), "a guest is offered to save the account");
  assert.ok(!(await visible(page, "password-change")), "a guest has no password to change");
  assert.equal(await page.locator("#session-id").textContent(), guest.session_id);
  await page.locator("#sessions tbody tr").first().waitFor();
  await page.screenshot({ path: join(shots, "guest.png"), fullPage: true });
  await page.setViewportSize({ width: 375, height: 740 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow}px too wide)`);
  await page.screenshot({ path: join(shots, "guest-phone.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 720 });

  const save = page.locator("#upgrade-form");
  // A taken email is refused, and the guest's session carries on untouched.
  await save.getByLabel("Email or username").fill(taken);
  await save.getByLabel("Choose a password").fill(PASSWORD);
  await save.getByRole("button", { name: "Save account" }).click();
  await page.locator("#upgrade-error", { hasText: /./ }).waitFor();
  assert.ok(await visible(page, "account"));
  assert.equal(await page.locator("#who").textContent(), "Guest");

  const email = uniqueEmail();
  const upgraded = nextAnswer(page, "/upgrade", "POST");
  const meSaved = nextAnswer(page, "/me");
  await save.getByLabel("Email or username").fill(email);
  await save.getByLabel("Choose a password").fill(PASSWORD);
  await save.getByRole("button", { name: "Save account" }).click();
  await page.locator("#who", { hasText: email }).waitFor();
  const saved = (await meSaved).data;
  const savedToken = (await upgraded).data;
  assert.equal(saved.id, guest.id, "the same user");
  assert.equal(saved.session_id, guest.session_id, "the same session");
  assert.equal(saved.email, email);
  assert.equal(saved.is_anonymous, false);
  assert.equal(claims(savedToken.token).sid, claims(guestToken.token).sid, "the new access token is of the same session");
  assert.equal(claims(savedToken.token).sub, claims(guestToken.token).sub);
  assert.equal(await page.locator("#session-id").textContent(), guest.session_id);
  assert.ok(!(await visible(page, "guest-tag")) && !(await visible(page, "upgrade")));
  assert.ok(await visible(page, "password-change"), "a registered user can change the password");
  await page.locator("#notice", { hasText: /saved/ }).waitFor();
  await page.locator("#reload-sessions").click();
  await page.locator("#sessions tbody tr").first().waitFor();
  assert.equal(await page.locator("#sessions tbody tr").count(), 1, "one session: no new sign-in");
  assert.equal(server.audit("user_upgraded").length, 1);
  assert.equal(server.audit("anonymous_signed_in").length, 1);
  assert.equal(server.audit("login_succeeded").length, 0, "no new sign-in happened");
  assert.equal(server.audit("refresh_token_reused").length, 0);
  await page.screenshot({ path: join(shots, "upgraded.png"), fullPage: true });

  // The rotated cookie carries the session on after a reload, and the saved account signs in.
  await page.reload();
  await page.locator("#account").waitFor({ state: "visible" });
  assert.equal(await page.locator("#who").textContent(), email);
  assert.equal(await page.locator("#session-id").textContent(), guest.session_id);
  await loginElsewhere(server, email);
  await context.close();
});

test("without --allow-anonymous there is no guest button; a username signs in", async () => {
  const server = await startServer();
  const username = uniqueEmail().split("@")[0];
  await register(server, null, { username });
  const context = await browser.newContext();
  const page = await openPage(context, server);
  await page.locator("#signin").waitFor({ state: "visible" });
  // The page shows the sign-in form only once it knows the server's settings.
  assert.ok(!(await visible(page, "guest")));
  assert.equal(await page.getByRole("button", { name: "Continue as guest" }).count(), 0);
  assert.equal((await call(server, "/anonymous", { method: "POST", json: {} })).status, 403);
  await signIn(page, username);
  assert.ok(!(await visible(page, "guest-tag")));
  await context.close();
});

test("a user changes the password (other sessions end) and deletes the account", async () => {
  const server = await startServer();
  const { email, context, page } = await signedIn(server);
  const elsewhere = await loginElsewhere(server, email);
  await page.locator("#reload-sessions").click();
  await page.locator("#sessions tbody tr").nth(1).waitFor();

  const change = page.locator("#password-form");
  await page.locator("#password-change summary").click();
  // A wrong current password is a wrong answer, not the end of the session.
  await change.getByLabel("Current password").fill("not the password");
  await change.getByLabel("New password").fill("a brand new password");
  await change.getByRole("button", { name: "Change password" }).click();
  await page.locator("#password-error", { hasText: /not your current password/ }).waitFor();
  assert.ok(await visible(page, "account"), "still signed in");
  assert.ok(!(await visible(page, "ended")));
  assert.equal((await call(server, "/me", { token: elsewhere.token })).status, 200, "nothing changed");
  await page.screenshot({ path: join(shots, "change-password.png"), fullPage: true });

  const NEW = "a brand new password";
  await change.getByLabel("Current password").fill(PASSWORD);
  await change.getByLabel("New password").fill(NEW);
  await change.getByRole("button", { name: "Change password" }).click();
  await page.locator("#notice", { hasText: /password was changed.*1 other session was signed out/ }).waitFor();
  assert.equal(server.audit("password_changed").length, 1);
  assert.equal((await call(server, "/me", { token: elsewhere.token })).status, 401, "the other session ended");
  const refreshed = await call(server, "/refresh", { method: "POST", json: { refresh_token: elsewhere.refresh_token } });
  assert.equal(refreshed.status, 401);
  await page.locator("#reload-sessions").click();
  await page.locator("#sessions tbody tr").nth(1).waitFor({ state: "detached" });
  assert.equal(await page.locator("#sessions tbody tr").count(), 1);
  assert.ok(await visible(page, "account"), "the page's own session lives on");
  assert.equal((await call(server, "/login", { method: "POST", json: { email, password: PASSWORD } })).status, 401);
  const another = await loginElsewhere(server, email, NEW);

  const remove = page.locator("#delete-form");
  await page.locator("#delete summary").click();
  await remove.getByLabel("Your password").fill(PASSWORD);
  await remove.getByRole("button", { name: "Delete account" }).click();
  await page.locator("#delete-error", { hasText: /not your password/ }).waitFor();
  assert.ok(await visible(page, "account"), "a wrong password deletes nothing");
  await remove.getByLabel("Your password").fill(NEW);
  await remove.getByRole("button", { name: "Delete account" }).click();
  await page.locator("#signin").waitFor({ state: "visible" });
  await page.locator("#notice", { hasText: /deleted/ }).waitFor();
  assert.equal(server.audit("account_deleted").length, 1);
  assert.equal((await call(server, "/me", { token: another.token })).status, 401, "every session ended");
  assert.ok(!(await context.cookies()).some((c) => c.name === "tessera_refresh"), "the cookie is cleared");

  // The email is free again.
  await signinField(page, "Email or username").fill(email);
  await signinField(page, "Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.locator("#account").waitFor({ state: "visible" });
  assert.equal(await page.locator("#who").textContent(), email);
  await context.close();
});

test("a registered user whose session is revoked elsewhere sees 'session ended', never a guest page", async () => {
  const server = await startServer(["--allow-anonymous", "--access-ttl", "4s"]);
  const { email, context, page } = await signedIn(server);
  const sessionId = await page.locator("#session-id").textContent();
  const elsewhere = await loginElsewhere(server, email);
  const revoked = await call(server, `/sessions/${sessionId}`, { method: "DELETE", token: elsewhere.token });
  assert.equal(revoked.status, 200, JSON.stringify(revoked.body));

  // Nobody touches the page: its own scheduled refresh finds the session gone.
  await page.locator("#ended").waitFor({ state: "visible", timeout: 10_000 });
  assert.match(await page.locator("#ended-reason").textContent(), /revoked|signed out|expired/);
  await sleep(1500);
  assert.ok(await visible(page, "ended"), "it keeps saying so");
  assert.ok(!(await visible(page, "account")), "no guest (or any other) account view");
  assert.equal(server.audit("anonymous_signed_in").length, 0, "no guest session was started");

  // The dead cookie was deleted at that refresh: a reload asks to sign in, and only offers a
  // guest session.
  assert.ok(!(await context.cookies()).some((c) => c.name === "tessera_refresh"));
  await page.reload();
  await page.locator("#signin").waitFor({ state: "visible" });
  assert.ok(await page.getByRole("button", { name: "Continue as guest" }).isVisible());
  await sleep(500);
  assert.ok(!(await visible(page, "account")));
  assert.equal(server.audit("anonymous_signed_in").length, 0);
  await context.close();
});

test("a guest whose session ends sees 'session ended' too; deleting a guest account ends it everywhere", async () => {
  const server = await startServer(["--allow-anonymous"]);
  const context = await browser.newContext();
  const first = await openPage(context, server);
  await first.locator("#signin").waitFor({ state: "visible" });
  await first.getByRole("button", { name: "Continue as guest" }).click();
  await first.locator("#account").waitFor({ state: "visible" });
  const second = await openPage(context, server);
  await second.locator("#account").waitFor({ state: "visible" });
  assert.equal(await second.locator("#who").textContent(), "Guest");

  await first.getByRole("button", { name: "Sign out", exact: true }).click();
  await first.locator("#signin").waitFor({ state: "visible" });
  if (await visible(second, "account")) await second.locator("#reload-sessions").click();
  await second.locator("#ended").waitFor({ state: "visible" });
  assert.match(await second.locator("#ended-title").textContent(), /session has ended/);
  assert.equal(server.audit("anonymous_signed_in").length, 1, "no new guest session by itself");

  // A new guest, by the user's click; the tab that says "ended" keeps saying so.
  await first.getByRole("button", { name: "Continue as guest" }).click();
  await first.locator("#account").waitFor({ state: "visible" });
  await sleep(500);
  assert.ok(await visible(second, "ended"));
  await first.locator("#delete summary").click();
  assert.ok(!(await first.locator("#delete-form").getByLabel("Your password").isVisible()), "a guest has no password to give");
  await first.locator("#delete-form").getByRole("button", { name: "Delete account" }).click();
  await first.locator("#signin").waitFor({ state: "visible" });
  await first.locator("#notice", { hasText: /deleted/ }).waitFor();
  assert.equal(server.audit("account_deleted").length, 1);
  assert.ok(!(await visible(first, "account")));
  await context.close();
});

test("a cookie planted by another port of tessera's host is cleared, and the page says what happened", async () => {
  const server = await startServer();
  const { email, context, page } = await signedIn(server);
  // Another app on tessera's host, another port: cookies do not respect ports (RFC 6265 §8.5),
  // so the cookie it sets reaches tessera's /api/auth/refresh ahead of the user's own.
  const other = createServer((req, res) => {
    res.setHeader("Set-Cookie", "tessera_refresh=planted-by-another-port; Path=/api/auth/refresh; HttpOnly; SameSite=Strict");
    res.end("<p>another app</p>");
  });
  await new Promise((resolve) => other.listen(0, "127.0.0.1", resolve));
  try {
    const elsewhere = await context.newPage();
    await elsewhere.goto(`http://127.0.0.1:${other.address().port}/`);
    await elsewhere.close();
    assert.equal((await context.cookies()).filter((c) => c.name === "tessera_refresh").length, 2);

    const answer = nextAnswer(page, "/refresh", "POST");
    await page.reload();
    assert.equal((await answer).error.code, "CONFLICTING_COOKIES");
    await page.locator("#signin").waitFor({ state: "visible" });
    const said = await page.locator("#notice").textContent();
    assert.match(said, /two sign-in cookies/, said);
    assert.doesNotMatch(said, /Could not reach/);
    await page.screenshot({ path: join(shots, "cookie-conflict.png"), fullPage: true });
    assert.equal((await context.cookies()).filter((c) => c.name === "tessera_refresh").length, 0, "all cleared");

    // Recovered: signing in again works, and stays signed in across a reload.
    await signIn(page, email);
    await page.reload();
    await page.locator("#account").waitFor({ state: "visible" });
  } finally {
    other.close();
    await context.close();
  }
});
