// The seed's bug, fixed end to end in real Chromium: a page using the real `socket.io-client`
// and tessera.js talks to a real Socket.IO server (Node's `socket.io`, tests/upstream/socketio.mjs)
// behind `tessera gateway`. With 4-second tokens the page stays signed in and its socket
// reconnects as the same user; signing out on tessera's own page closes the socket within a
// second and the page says the session ended; the app never sees a connection without a user.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { PASSWORD, emails, launchChromium, onStopAll, root, startLogging, stopAll, tesseraBinary, tesseraServer } from "./harness.mjs";

const uniqueEmail = emails("gateway");

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  stopAll();
});

async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The Socket.IO app, from tests/upstream (its node_modules are installed by scripts/test). */
async function startSocketApp() {
  const child = spawn("node", ["socketio.mjs"], { cwd: join(root, "tests", "upstream"), stdio: ["ignore", "pipe", "inherit"] });
  onStopAll(() => child.kill("SIGKILL"));
  const port = await new Promise((resolve, reject) => {
    child.on("exit", (code) => reject(new Error(`the Socket.IO app exited with ${code} (npm ci in tests/upstream?)`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const match = line.match(/^listening (\d+)$/);
      if (match) resolve(match[1]);
    });
  });
  return `http://127.0.0.1:${port}`;
}

test("a Socket.IO page behind the gateway stays its user across token expiries, and its socket ends with the session", async () => {
  const gatewayPort = await freePort();
  const gatewayOrigin = `http://127.0.0.1:${gatewayPort}`;
  const tessera = await tesseraServer(["--allowed-origins", gatewayOrigin, "--access-ttl", "4s"]);
  const app = await startSocketApp();
  const gateway = startLogging(
    tesseraBinary,
    ["gateway", "--listen", `127.0.0.1:${gatewayPort}`, "--upstream", app, "--issuer", tessera.base,
      "--public", "/app", "--public", "/socket.io/socket.io.js", "--log-format", "json"],
    "tessera gateway",
  );
  await gateway.started;
  const email = uniqueEmail();
  const registered = await fetch(`${tessera.base}/api/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password: PASSWORD }),
  });
  assert.equal(registered.status, 201);

  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${gatewayOrigin}/app?tessera=${encodeURIComponent(tessera.base)}`);
  await page.evaluate(([e, p]) => window.start(e, p), [email, PASSWORD]);
  await page.waitForFunction(() => window.users.length >= 1, null, { timeout: 10_000 });
  // Tokens live 4 s: the gateway closes the socket at each expiry (4002), and the page
  // reconnects with a fresh token, as the same user.
  await page.waitForFunction(() => window.users.length >= 3, null, { timeout: 20_000 });
  const users = await page.evaluate(() => window.users);
  assert.ok(users.every((u) => u && u === users[0]), `always the same user: ${users}`);

  // Sign out on tessera's own page, in the same browser.
  const tesseraPage = await context.newPage();
  await tesseraPage.goto(tessera.base);
  await tesseraPage.locator("#account").waitFor({ state: "visible" });
  await tesseraPage.locator("#signout").click();
  const signedOut = Date.now();
  await page.waitForFunction(() => document.getElementById("status").textContent === "session ended", null, { timeout: 5_000 });
  const took = Date.now() - signedOut;
  await page.screenshot({ path: join(root, "target", "browser-tests", "gateway-session-ended.png") });
  assert.ok(took < 3_000, `the page learned of the sign-out after ${took} ms`);

  // The page may learn of the sign-out from tessera's tab first; the gateway closes the socket
  // too (4001), which the app sees as a disconnect.
  let closedAtTheEnd = "";
  for (let i = 0; i < 30 && !/reason="session_ended"\} [1-9]/.test(closedAtTheEnd); i++) {
    await new Promise((r) => setTimeout(r, 100));
    closedAtTheEnd = await (await fetch(`${gatewayOrigin}/.tessera/metrics`)).text();
  }
  assert.match(closedAtTheEnd, /tessera_gateway_sockets_closed_total\{reason="session_ended"\} [1-9]/);
  const connections = await (await fetch(`${app}/connections`)).json();
  assert.ok(connections.length >= 3, JSON.stringify(connections));
  assert.ok(connections.every((c) => c.user === users[0]), `the app never saw a connection without its user: ${JSON.stringify(connections)}`);
  const metrics = await (await fetch(`${gatewayOrigin}/.tessera/metrics`)).text();
  assert.match(metrics, /tessera_gateway_sockets_closed_total\{reason="token_expired"\} [1-9]/);
  await context.close();
});
