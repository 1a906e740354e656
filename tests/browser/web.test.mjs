// The web page of `tessera serve`, driven in real Chromium against a real server.
//
// Each test starts `target/debug/tessera serve` on a random loopback port with a fresh data
// directory, `--insecure-cookies` (plain http) and the access lifetime it needs. Screenshots go
// to target/browser-tests/.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const binary = process.env.TESSERA_BIN ?? join(root, "target", "debug", "tessera");
const shots = join(root, "target", "browser-tests");
mkdirSync(shots, { recursive: true });
const PASSWORD = "correct horse battery";
let counter = 0;
const uniqueEmail = () => `web${process.pid}-${counter++}@example.com`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let browser;
const servers = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  for (const s of servers) s.stop();
});

async function startServer(extra = []) {
  const dataDir = mkdtempSync(join(tmpdir(), "tessera-web-"));
  const args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--insecure-cookies", "--log-format", "json",
    "--login-rate-limit", "off", "--argon2-memory-kib", "1024", "--argon2-iterations", "1", ...extra];
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "info" } });
  const logs = [];
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("tessera serve did not start")), 20_000);
    child.on("exit", (code) => reject(new Error(`tessera serve exited with ${code}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      logs.push(line);
      try {
        const v = JSON.parse(line);
        if (v.message === "listening") {
          clearTimeout(timer);
          resolve(`http://${v.addr}`);
        }
      } catch {}
    });
  });
  const server = {
    base,
    audit: (event) => logs.map((l) => { try { return JSON.parse(l); } catch { return null; } })
      .filter((v) => v && v.target === "audit" && v.event === event),
    stop: () => child.kill("SIGKILL"),
  };
  servers.push(server);
  return server;
}

async function register(server, email) {
  const res = await fetch(`${server.base}/api/auth/register`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password: PASSWORD }),
  });
  assert.equal(res.status, 201);
}

async function openPage(context, server) {
  const page = await context.newPage();
  await page.goto(server.base);
  return page;
}

async function signIn(page, email) {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#account").waitFor({ state: "visible" });
  assert.equal(await page.locator("#who").textContent(), email);
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
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("short");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.locator("#form-error", { hasText: /at least 8/ }).waitFor();
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByLabel("Password").press("Tab"); // → Sign in
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
