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

async function withLock(fn) {
  if (navigator.locks) return navigator.locks.request(LOCK_NAME, fn);
  return fn();
}

/**
 * Gets a new access token with the refresh cookie, unless another tab already did while this one
 * waited: `stale` is the token the caller found wanting (null when there is none).
 */
function refresh(stale) {
  if (!inflight) {
    inflight = withLock(async () => {
      if (access && access.token !== stale && Date.now() < refreshAt(access)) return access;
      const res = await fetch(`${API}/refresh`, { method: "POST", headers: CSRF_HEADER, credentials: "same-origin" });
      const body = await res.json().catch(() => null);
      if (res.ok && body && body.success) {
        adopt(fromResponse(body.data));
        channel?.postMessage({ type: "token", access });
        return access;
      }
      const code = body?.error?.code;
      if (res.status === 401 || code === "MISSING_TOKEN") throw new SessionEnded(code);
      throw new ApiError(code ?? "UNAVAILABLE", body?.error?.message ?? `The server answered ${res.status}`);
    }).finally(() => {
      inflight = null;
    });
  }
  return inflight;
}

/** Calls the API with the access token: refreshed first when due, refreshed once on a 401. */
async function api(path, { method = "GET" } = {}) {
  if (!access) throw new SessionEnded("NO_TOKEN");
  let token = Date.now() >= refreshAt(access) ? (await refresh(access.token)).token : access.token;
  const send = (t) => fetch(`${API}${path}`, { method, headers: { Authorization: `Bearer ${t}`, ...CSRF_HEADER } });
  let res = await send(token);
  if (res.status === 401) {
    token = (await refresh(token)).token;
    res = await send(token);
    if (res.status === 401) throw new SessionEnded("UNAUTHORIZED");
  }
  const body = await res.json().catch(() => null);
  if (!body || !body.success) {
    throw new ApiError(body?.error?.code ?? "UNAVAILABLE", body?.error?.message ?? `The server answered ${res.status}`);
  }
  return body.data;
}

async function post(path, payload) {
  const res = await fetch(`${API}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify(payload),
  });
  const body = await res.json().catch(() => null);
  if (!body || !body.success) {
    throw new ApiError(body?.error?.code ?? "UNAVAILABLE", body?.error?.message ?? `The server answered ${res.status}`);
  }
  return body.data;
}

// ---- views --------------------------------------------------------------------------------

function show(name, focus = true) {
  view = name;
  for (const id of ["loading", "signin", "account", "ended"]) $(id).hidden = id !== name;
  if (name !== "account") {
    clearTimeout(refreshTimer);
    access = name === "ended" || name === "signin" ? null : access;
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

async function loadAccount(focus) {
  me = await api("/me");
  $("who").textContent = me.email;
  $("session-id").textContent = me.session_id;
  show("account", focus);
  renderTimeLeft();
  renderSessions((await api("/sessions")).sessions);
}

// ---- actions ------------------------------------------------------------------------------

async function signIn(event, register) {
  event?.preventDefault();
  const email = $("email").value.trim();
  const password = $("password").value;
  $("form-error").textContent = "";
  if (!email || !password) {
    $("form-error").textContent = "Enter your email and password.";
    return;
  }
  for (const b of [$("signin-button"), $("register-button")]) b.disabled = true;
  try {
    if (register) await post("/register", { email, password });
    const data = await post("/login", { email, password, refresh_transport: "cookie" });
    $("password").value = "";
    notice(register ? "Your account is ready." : null);
    adopt(fromResponse(data));
    await loadAccount(true);
    channel?.postMessage({ type: "signed-in" });
  } catch (error) {
    $("form-error").textContent = error instanceof ApiError ? error.message : `Could not reach the server: ${error.message}`;
  } finally {
    for (const b of [$("signin-button"), $("register-button")]) b.disabled = false;
  }
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
  if (data?.type === "signed-in" && view !== "account") restore();
});

async function restore() {
  try {
    await refresh(null);
    await loadAccount(false);
  } catch (error) {
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
$("reload-sessions").addEventListener("click", () => loadAccount(false).catch(onFailure));
$("signout").addEventListener("click", () => signOut(false));
$("signout-all").addEventListener("click", () => signOut(true));
$("signin-again").addEventListener("click", () => {
  notice(null);
  show("signin");
});
setInterval(renderTimeLeft, 1000);
restore();
