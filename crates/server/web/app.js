// tessera's web page.
//
// The refresh token lives only in the HttpOnly cookie the server sets at login
// ("refresh_transport": "cookie"); the access token lives only in this module's memory. Nothing
// is written to localStorage, sessionStorage or a script-readable cookie.
//
// Refreshing is coordinated so that the server's strict rotation never sees a token twice:
// - inside a tab, one refresh at a time (a shared promise);
// - across tabs, the Web Locks API lets one tab refresh at a time, and a BroadcastChannel hands
//   the new access token to the others, which then skip their own refresh;
// - the token is refreshed before it expires: 5 minutes before, or at 80 % of its lifetime when
//   that comes later; a 401 triggers one refresh and one retry.
// When the session has truly ended the page says so and offers to sign in again; it never
// carries on as a guest or as someone else.
//
// Guests: when the server allows it (GET /settings), the sign-in view offers "Continue as guest".
// A guest session starts only from that click — never on the page's own initiative, least of all
// when a registered user's session has ended. A guest can save the account (POST /upgrade): the
// server rotates the session's refresh token, so the upgrade runs under the same lock as a
// refresh, and the page carries on in the same session as the same user.

const API = "/api/auth";
const CSRF_HEADER = { "X-Requested-With": "tessera" };
const LOCK_NAME = "tessera-refresh";
const channel = "BroadcastChannel" in window ? new BroadcastChannel("tessera-auth") : null;

/** @type {{token: string, expiresAt: number, lifetime: number} | null} */
let access = null;
let me = null;
let inflight = null;
let refreshTimer = null;
let view = "loading";
/** Resolves once the server's settings are known (or could not be read). */
let settingsLoaded = null;

class SessionEnded extends Error {
  constructor(reason) {
    super(reason);
    this.reason = reason;
  }
}

class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const $ = (id) => document.getElementById(id);

/** `{email}` when the text has an `@`, else `{username}`. */
const names = (identifier) => (identifier.includes("@") ? { email: identifier } : { username: identifier });

/** What the page calls a user: the email, else the username, else "Guest". */
const displayName = (user) => user?.email || user?.username || "Guest";

async function readBody(res) {
  return res.json().catch(() => null);
}

function apiError(res, body) {
  return new ApiError(body?.error?.code ?? "UNAVAILABLE", body?.error?.message ?? `The server answered ${res.status}`);
}

/**
 * A 401 that means the access token is no good (expired, or its session gone) — not a wrong
 * password, which is a 401 `INVALID_CREDENTIALS` about the request, not the session.
 */
function deadAccess(res, body) {
  return res.status === 401 && (body?.error?.code ?? "UNAUTHORIZED") === "UNAUTHORIZED";
}

// ---- tokens -------------------------------------------------------------------------------

function fromResponse(data) {
  const lifetime = data.expires_in * 1000;
  return { token: data.token, expiresAt: Date.now() + lifetime, lifetime };
}

/** When a token should be replaced: 5 minutes before expiry, or at 80 % of its lifetime. */
function refreshAt(a) {
  return a.expiresAt - Math.min(5 * 60 * 1000, a.lifetime * 0.2);
}

function adopt(next) {
  if (access && next.expiresAt <= access.expiresAt && next.token !== access.token) return;
  access = next;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    refresh(access && access.token).catch(onFailure);
  }, Math.max(0, refreshAt(access) - Date.now()));
  renderTimeLeft();
}

// Without the Web Locks API, a queue keeps this tab's rotations one at a time.
let localQueue = Promise.resolve();

async function withLock(fn) {
  if (navigator.locks) return navigator.locks.request(LOCK_NAME, () => fn());
  const run = localQueue.then(() => fn());
  localQueue = run.catch(() => {});
  return run;
}

/** Rotates the refresh cookie for a new access token. Only ever called holding the lock. */
async function rotate() {
  const res = await fetch(`${API}/refresh`, { method: "POST", headers: CSRF_HEADER, credentials: "same-origin" });
  const body = await readBody(res);
  if (res.ok && body && body.success) {
    adopt(fromResponse(body.data));
    channel?.postMessage({ type: "token", access });
    return access;
  }
  const code = body?.error?.code;
  if (res.status === 401 || code === "MISSING_TOKEN") throw new SessionEnded(code);
  throw apiError(res, body);
}

/**
 * Gets a new access token with the refresh cookie, unless another tab already did while this one
 * waited: `stale` is the token the caller found wanting (null when there is none).
 */
function refresh(stale) {
  if (!inflight) {
    inflight = withLock(async () => {
      if (access && access.token !== stale && Date.now() < refreshAt(access)) return access;
      return rotate();
    }).finally(() => {
      inflight = null;
    });
  }
  return inflight;
}

function bearer(token, withBody) {
  return { Authorization: `Bearer ${token}`, ...CSRF_HEADER, ...(withBody ? { "Content-Type": "application/json" } : {}) };
}

/**
 * Calls the API with the access token: refreshed first when due, refreshed once on a 401 that
 * says the token is no good. Any other 401 (a wrong password) is an answer, not a session end.
 */
async function api(path, { method = "GET", json } = {}) {
  if (!access) throw new SessionEnded("NO_TOKEN");
  let token = Date.now() >= refreshAt(access) ? (await refresh(access.token)).token : access.token;
  const withBody = json !== undefined;
  const send = async (t) => {
    const res = await fetch(`${API}${path}`, { method, headers: bearer(t, withBody), body: withBody ? JSON.stringify(json) : undefined });
    return { res, body: await readBody(res) };
  };
  let { res, body } = await send(token);
  if (deadAccess(res, body)) {
    token = (await refresh(token)).token;
    ({ res, body } = await send(token));
    if (deadAccess(res, body)) throw new SessionEnded("UNAUTHORIZED");
  }
  if (!body || !body.success) throw apiError(res, body);
  return body.data;
}

async function post(path, payload) {
  const res = await fetch(`${API}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify(payload),
  });
  const body = await readBody(res);
  if (!body || !body.success) throw apiError(res, body);
  return body.data;
}

/**
 * Saves a guest's account. The server rotates the session's refresh token in the same step, so
 * this holds the refresh lock throughout: no tab refreshes meanwhile with the old cookie.
 */
function upgradeSession(payload) {
  return withLock(async () => {
    if (!access) throw new SessionEnded("NO_TOKEN");
    if (Date.now() >= refreshAt(access)) await rotate();
    const send = async () => {
      const res = await fetch(`${API}/upgrade`, {
        method: "POST",
        headers: bearer(access.token, true),
        credentials: "same-origin",
        body: JSON.stringify({ ...payload, refresh_transport: "cookie" }),
      });
      return { res, body: await readBody(res) };
    };
    let { res, body } = await send();
    if (deadAccess(res, body)) {
      await rotate();
      ({ res, body } = await send());
      if (deadAccess(res, body)) throw new SessionEnded("UNAUTHORIZED");
    }
    if (res.ok && body && body.success) {
      adopt(fromResponse(body.data));
      channel?.postMessage({ type: "token", access });
      return body.data;
    }
    // The session's refresh token is gone or no longer current: the session has ended.
    const code = body?.error?.code;
    if (code === "INVALID_TOKEN" || code === "MISSING_TOKEN") throw new SessionEnded(code);
    throw apiError(res, body);
  });
}

// ---- views --------------------------------------------------------------------------------

const ACCOUNT_FORMS = ["upgrade-form", "password-form", "delete-form"];

/** Empties the account's forms (passwords included) and closes its folded sections. */
function resetAccountForms() {
  for (const id of ACCOUNT_FORMS) $(id).reset();
  for (const id of ["upgrade-error", "password-error", "delete-error"]) $(id).textContent = "";
  for (const id of ["password-change", "delete"]) $(id).open = false;
}

function show(name, focus = true) {
  view = name;
  for (const id of ["loading", "signin", "account", "ended"]) $(id).hidden = id !== name;
  if (name !== "account") {
    clearTimeout(refreshTimer);
    access = name === "ended" || name === "signin" ? null : access;
    resetAccountForms();
  }
  if (focus) $(`${name}-title`)?.focus();
}

function notice(text) {
  $("notice").textContent = text ?? "";
  $("notice").hidden = !text;
}

function endedMessage(reason) {
  switch (reason) {
    case "signed-out-elsewhere":
      return "You signed out in another tab.";
    case "account-deleted":
      return "The account was deleted in another tab.";
    case "MISSING_TOKEN":
      return "This browser no longer holds your session (you signed out, or the sign-in cookie was cleared).";
    default:
      return "You were signed out elsewhere, the session was revoked, or it expired.";
  }
}

function sessionEnded(reason) {
  if (view === "ended" || view === "signin") return;
  me = null;
  notice(null);
  $("ended-reason").textContent = endedMessage(reason);
  show("ended");
}

function onFailure(error) {
  if (error instanceof SessionEnded) {
    sessionEnded(error.reason);
  } else {
    notice(`Something went wrong: ${error.message}. Your session is unchanged; try again.`);
  }
}

function formatTime(rfc3339) {
  const d = new Date(rfc3339);
  return Number.isNaN(d.getTime()) ? rfc3339 : d.toLocaleString();
}

function renderTimeLeft() {
  if (!access || view !== "account") return;
  const left = Math.max(0, Math.round((access.expiresAt - Date.now()) / 1000));
  const text = left >= 60 ? `${Math.floor(left / 60)} min ${left % 60} s` : `${left} s`;
  $("time-left").textContent = `valid for ${text} (renewed automatically)`;
}

function renderSessions(sessions) {
  const body = $("sessions").querySelector("tbody");
  body.replaceChildren();
  for (const s of sessions) {
    const row = document.createElement("tr");
    const cell = (label, text, cls) => {
      const td = document.createElement("td");
      td.dataset.label = label;
      td.textContent = text;
      if (cls) td.className = cls;
      row.append(td);
      return td;
    };
    const device = cell("Device", s.user_agent || "Unknown device", "device");
    if (s.current) {
      const tag = document.createElement("span");
      tag.className = "current-tag";
      tag.textContent = "this browser";
      device.append(" ", tag);
    }
    cell("IP", s.ip || "—");
    cell("Signed in", formatTime(s.created_at));
    cell("Last used", formatTime(s.last_used_at));
    const action = cell("Action", "");
    if (!s.current) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "danger";
      button.textContent = "Revoke";
      button.setAttribute("aria-label", `Revoke the session of ${s.user_agent || "an unknown device"} from ${s.ip || "an unknown address"}`);
      button.addEventListener("click", () => revoke(s.id, button));
      action.append(button);
    }
    row.dataset.sessionId = s.id;
    body.append(row);
  }
}

function renderMe() {
  const guest = me.is_anonymous === true;
  $("who").textContent = displayName(me);
  $("guest-tag").hidden = !guest;
  $("upgrade").hidden = !guest;
  $("password-change").hidden = guest;
  $("delete-password-field").hidden = guest;
  $("session-id").textContent = me.session_id;
}

async function loadAccount(focus) {
  const previous = me?.id;
  me = await api("/me");
  if (previous !== me.id) resetAccountForms();
  renderMe();
  show("account", focus);
  renderTimeLeft();
  renderSessions((await api("/sessions")).sessions);
}

// ---- actions ------------------------------------------------------------------------------

const failure = (error) => (error instanceof ApiError ? error.message : `Could not reach the server: ${error.message}`);

const signinButtons = () => [$("signin-button"), $("register-button"), $("guest-button")];

async function signIn(event, register) {
  event?.preventDefault();
  const identifier = $("identifier").value.trim();
  const password = $("password").value;
  $("form-error").textContent = "";
  if (!identifier || !password) {
    $("form-error").textContent = "Enter your email or username, and your password.";
    return;
  }
  for (const b of signinButtons()) b.disabled = true;
  try {
    const who = names(identifier);
    if (register) await post("/register", { ...who, password });
    const data = await post("/login", { ...who, password, refresh_transport: "cookie" });
    $("password").value = "";
    notice(register ? "Your account is ready." : null);
    adopt(fromResponse(data));
    await loadAccount(true);
    channel?.postMessage({ type: "signed-in" });
  } catch (error) {
    $("form-error").textContent = failure(error);
  } finally {
    for (const b of signinButtons()) b.disabled = false;
  }
}

/** Starts a guest session: only ever from the user's click on "Continue as guest". */
async function continueAsGuest() {
  $("form-error").textContent = "";
  for (const b of signinButtons()) b.disabled = true;
  try {
    const data = await post("/anonymous", { refresh_transport: "cookie" });
    $("password").value = "";
    notice(null);
    adopt(fromResponse(data));
    await loadAccount(true);
    channel?.postMessage({ type: "signed-in", guest: true });
  } catch (error) {
    $("form-error").textContent = failure(error);
  } finally {
    for (const b of signinButtons()) b.disabled = false;
  }
}

/** A guest saves the account: same user, same session, now with a name and a password. */
async function saveAccount(event) {
  event.preventDefault();
  const identifier = $("upgrade-identifier").value.trim();
  const password = $("upgrade-password").value;
  $("upgrade-error").textContent = "";
  if (!identifier || !password) {
    $("upgrade-error").textContent = "Enter an email or a username, and a password.";
    return;
  }
  $("upgrade-button").disabled = true;
  try {
    await upgradeSession({ ...names(identifier), password });
    $("upgrade-form").reset();
    await loadAccount(true);
    notice(`Your account is saved as ${displayName(me)}. You are still signed in, in the same session.`);
    channel?.postMessage({ type: "account-changed" });
  } catch (error) {
    if (error instanceof SessionEnded) return onFailure(error);
    if (error instanceof ApiError && error.code === "ALREADY_REGISTERED") {
      // Saved already (in another tab, say): show the account as it is now.
      await loadAccount(false).catch(onFailure);
      notice("This account is saved already.");
      return;
    }
    $("upgrade-error").textContent = failure(error);
  } finally {
    $("upgrade-button").disabled = false;
  }
}

async function changePassword(event) {
  event.preventDefault();
  const current = $("current-password").value;
  const next = $("new-password").value;
  $("password-error").textContent = "";
  if (!current || !next) {
    $("password-error").textContent = "Enter your current password and a new one.";
    return;
  }
  $("password-button").disabled = true;
  try {
    const result = await api("/password", { method: "POST", json: { current_password: current, new_password: next } });
    $("password-form").reset();
    $("password-change").open = false;
    const n = result.sessions_ended;
    notice(`Your password was changed. ${n === 0 ? "No other session was signed in." : n === 1 ? "1 other session was signed out." : `${n} other sessions were signed out.`} This one stays signed in.`);
    renderSessions((await api("/sessions")).sessions);
  } catch (error) {
    if (error instanceof SessionEnded) return onFailure(error);
    $("password-error").textContent =
      error instanceof ApiError && error.code === "INVALID_CREDENTIALS" ? "That is not your current password." : failure(error);
  } finally {
    $("password-button").disabled = false;
  }
}

async function deleteAccount(event) {
  event.preventDefault();
  const guest = me?.is_anonymous === true;
  const password = $("delete-password").value;
  $("delete-error").textContent = "";
  if (!guest && !password) {
    $("delete-error").textContent = "Enter your password to delete the account.";
    return;
  }
  $("delete-button").disabled = true;
  try {
    await api("/account", { method: "DELETE", json: guest ? {} : { password } });
  } catch (error) {
    $("delete-button").disabled = false;
    if (error instanceof SessionEnded) return onFailure(error);
    $("delete-error").textContent =
      error instanceof ApiError && error.code === "INVALID_CREDENTIALS" ? "That is not your password." : failure(error);
    return;
  }
  $("delete-button").disabled = false;
  channel?.postMessage({ type: "ended", reason: "account-deleted" });
  me = null;
  show("signin");
  notice("Your account was deleted, and every one of its sessions has ended.");
}

async function revoke(id, button) {
  button.disabled = true;
  try {
    await api(`/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
    notice("The session was revoked.");
    renderSessions((await api("/sessions")).sessions);
  } catch (error) {
    button.disabled = false;
    onFailure(error);
  }
}

async function signOut(everywhere) {
  try {
    await api(everywhere ? "/logout-all" : "/logout", { method: "POST" });
  } catch (error) {
    if (!(error instanceof SessionEnded)) return onFailure(error);
  }
  channel?.postMessage({ type: "ended", reason: "signed-out-elsewhere" });
  me = null;
  show("signin");
  notice(everywhere ? "You are signed out on every device." : "You are signed out.");
}

// ---- start --------------------------------------------------------------------------------

channel?.addEventListener("message", ({ data }) => {
  if (data?.type === "token" && data.access && view === "account") adopt(data.access);
  if (data?.type === "ended") sessionEnded(data.reason);
  if (data?.type === "account-changed" && view === "account") loadAccount(false).catch(onFailure);
  // A tab that says a session ended keeps saying so until asked: a guest session started in
  // another tab does not quietly take its place.
  if (data?.type === "signed-in" && (view === "signin" || view === "loading" || (view === "ended" && !data.guest))) restore();
});

/** Shows "Continue as guest" only when the server allows guests. */
async function loadSettings() {
  try {
    const res = await fetch(`${API}/settings`);
    const body = await readBody(res);
    $("guest").hidden = !(res.ok && body?.success && body.data?.allow_anonymous === true);
  } catch {
    $("guest").hidden = true;
  }
}

/**
 * Resumes the session the refresh cookie holds, whatever it is (a guest's too: the user started
 * it). Without one the page asks to sign in; it never opens a session of its own accord.
 */
async function restore() {
  try {
    await refresh(null);
    await loadAccount(false);
  } catch (error) {
    await settingsLoaded;
    if (error instanceof SessionEnded) {
      // A dead cookie is worth saying; no cookie at all is simply a signed-out browser.
      show("signin", false);
      if (error.reason !== "MISSING_TOKEN") notice("Your previous session has ended. Please sign in again.");
    } else {
      show("signin", false);
      notice(`Could not reach the server: ${error.message}`);
    }
  }
}

$("signin-form").addEventListener("submit", (e) => signIn(e, false));
$("register-button").addEventListener("click", (e) => signIn(e, true));
$("guest-button").addEventListener("click", () => continueAsGuest());
$("upgrade-form").addEventListener("submit", saveAccount);
$("password-form").addEventListener("submit", changePassword);
$("delete-form").addEventListener("submit", deleteAccount);
$("reload-sessions").addEventListener("click", () => loadAccount(false).catch(onFailure));
$("signout").addEventListener("click", () => signOut(false));
$("signout-all").addEventListener("click", () => signOut(true));
$("signin-again").addEventListener("click", () => {
  notice(null);
  show("signin");
});
setInterval(renderTimeLeft, 1000);
settingsLoaded = loadSettings();
restore();
