// What the browser tests share: Debian's Chromium through playwright-core, the real binaries
// started on random loopback ports (each test file runs in a process of its own, so the
// processes started here are this file's, and `stopAll` ends them), and the API called from node.

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const tesseraBinary = process.env.TESSERA_BIN ?? join(root, "target", "debug", "tessera");
export const todosBinary = process.env.TESSERA_TODOS_BIN ?? join(root, "target", "debug", "tessera-todos");
/** Where screenshots go. */
export const shots = join(root, "target", "browser-tests");
mkdirSync(shots, { recursive: true });
export const PASSWORD = "correct horse battery";
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A function giving a new email on each call, `<prefix><pid>-<n>@example.com`. */
export function emails(prefix) {
  let counter = 0;
  return () => `${prefix}${process.pid}-${counter++}@example.com`;
}

/** Headless Chromium with the flags this machine's closed network needs. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

const stops = [];

/** Runs `stop` at `stopAll` (a server of the test's own, say). */
export function onStopAll(stop) {
  stops.push(stop);
}

/** Kills every process started here and runs what `onStopAll` was given. */
export function stopAll() {
  for (const stop of stops.splice(0)) stop();
}

/**
 * Starts a binary that logs JSON lines to stdout: `{child, logs, started, audit(event), stop()}`,
 * `started` resolving to `http://<addr>` once it logs "listening".
 */
export function startLogging(binary, args, name) {
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "info" } });
  const stop = () => child.kill("SIGKILL");
  onStopAll(stop);
  const logs = [];
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start`)), 30_000);
    child.on("exit", (code) => reject(new Error(`${name} exited with ${code}`)));
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
  const audit = (event) =>
    logs.map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter((v) => v && v.target === "audit" && v.event === event);
  return { child, logs, started, audit, stop };
}

/**
 * `tessera serve` on a random port with a fresh data directory, plain-http cookies, cheap argon2
 * and no login rate limit, plus `extra` flags: what `startLogging` gives, `started` included.
 */
export function startTessera(extra = []) {
  const dataDir = mkdtempSync(join(tmpdir(), "tessera-browser-"));
  const args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--insecure-cookies", "--log-format", "json",
    "--login-rate-limit", "off", "--argon2-memory-kib", "1024", "--argon2-iterations", "1", ...extra];
  return startLogging(tesseraBinary, args, "tessera serve");
}

/** `startTessera`, once it listens: `{base, audit(event)}`. */
export async function tesseraServer(extra = []) {
  const tessera = startTessera(extra);
  return { base: await tessera.started, audit: tessera.audit };
}

/** tessera's API at `base`, called from node as another client would: `{status, body}`. */
export async function callApi(base, path, { method = "GET", token, json } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${base}/api/auth${path}`, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
  return { status: res.status, body: await res.json().catch(() => null) };
}
