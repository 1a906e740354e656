// tessera's web page, built on tessera.js — the same client library any web app can import
// from tessera (`/tessera.js`). The library does everything about tokens:
// - the refresh token lives only in the HttpOnly cookie, the access token only in memory;
// - refresh before expiry, one at a time in a tab and across tabs (Web Locks), the new access
//   token shared with the other tabs (BroadcastChannel), one refresh and one retry on a 401;
// - when the session has truly ended it says so once (`session_ended`) and stops: it never
//   carries on as a guest or as someone else, and never retries a dead refresh token.
// This page only shows what happens and turns clicks into calls.
//
// Guests: when the server allows it (GET /settings), the sign-in view offers "Continue as guest".
// A guest session starts only from that click — never on the page's own initiative, least of all
// when a registered user's session has ended. A guest can save the account (tessera.upgrade(),
// which the library runs under the refresh lock, since the server rotates the refresh token),
// and the page carries on in the same session as the same user.

import { createClient, SessionEndedError, TesseraError } from "/tessera.js";

const tessera = createClient();

let me = null;
let view = "loading";
/** Resolves once the server's settings are known (or could not be read). */
let settingsLoaded = null;

const $ = (id) => document.getElementById(id);

/** `{email}` when the text has an `@`, else `{username}`. */
const names = (identifier) => (identifier.includes("@") ? { email: identifier } : { username: identifier });

/** What the page calls a user: the email, else the username, else "Guest". */
const displayName = (user) => user?.email || user?.username || "Guest";

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
  if (name !== "account") resetAccountForms();
  if (focus) $(`${name}-title`)?.focus();
}

function notice(text) {
  $("notice").textContent = text ?? "";
  $("notice").hidden = !text;
}

function endedMessage(reason) {
  switch (reason) {
    case "signed_out_elsewhere":
      return "You signed out in another tab.";
    case "account_deleted":
      return "The account was deleted in another tab.";
    case "cookie_missing":
      return "This browser no longer holds your session (you signed out, or the sign-in cookie was cleared).";
    case "replaced":
      return "Someone signed in on another page of this site in this browser; this page's session is over.";
    case "cookie_conflict":
      return "This browser held two sign-in cookies for this server: another site on the same host set one. They were removed; please sign in again.";
    default:
      return "You were signed out elsewhere, the session was revoked, or it expired.";
  }
}

/** What the sign-in page says about a session that could not be resumed. */
function restoreMessage(reason) {
  return reason === "cookie_conflict" ? endedMessage(reason) : "Your previous session has ended. Please sign in again.";
}

function sessionEnded(reason) {
  if (view === "ended" || view === "signin") return;
  me = null;
  notice(null);
  $("ended-reason").textContent = endedMessage(reason);
  show("ended");
}

function onFailure(error) {
  if (error instanceof SessionEndedError) {
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
  const expiresAt = tessera.expiresAt;
  if (expiresAt === null || view !== "account") return;
  const left = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
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

/** Shows the account: `user` when it was just read from /me, else read now. */
async function loadAccount(focus, user) {
  const previous = me?.id;
  me = user ?? (await tessera.getUser());
  if (previous !== me.id) resetAccountForms();
  renderMe();
  show("account", focus);
  renderTimeLeft();
  renderSessions(await tessera.listSessions());
}

// ---- actions ------------------------------------------------------------------------------

const failure = (error) => (error instanceof TesseraError ? error.message : `Could not reach the server: ${error.message}`);

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
    if (register) await tessera.signUp({ ...who, password });
    else await tessera.signIn({ ...who, password });
    $("password").value = "";
    notice(register ? "Your account is ready." : null);
    await loadAccount(true);
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
    await tessera.signInAsGuest();
    $("password").value = "";
    notice(null);
    await loadAccount(true);
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
    await tessera.upgrade({ ...names(identifier), password });
    $("upgrade-form").reset();
    await loadAccount(true);
    notice(`Your account is saved as ${displayName(me)}. You are still signed in, in the same session.`);
  } catch (error) {
    if (error instanceof SessionEndedError) return onFailure(error);
    if (error instanceof TesseraError && error.code === "ALREADY_REGISTERED") {
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
    const result = await tessera.changePassword(current, next);
    $("password-form").reset();
    $("password-change").open = false;
    const n = result.sessions_ended;
    notice(`Your password was changed. ${n === 0 ? "No other session was signed in." : n === 1 ? "1 other session was signed out." : `${n} other sessions were signed out.`} This one stays signed in.`);
    renderSessions(await tessera.listSessions());
  } catch (error) {
    if (error instanceof SessionEndedError) return onFailure(error);
    $("password-error").textContent =
      error instanceof TesseraError && error.code === "INVALID_CREDENTIALS" ? "That is not your current password." : failure(error);
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
    await tessera.deleteAccount(guest ? undefined : password);
  } catch (error) {
    $("delete-button").disabled = false;
    if (error instanceof SessionEndedError) return onFailure(error);
    $("delete-error").textContent =
      error instanceof TesseraError && error.code === "INVALID_CREDENTIALS" ? "That is not your password." : failure(error);
    return;
  }
  $("delete-button").disabled = false;
  me = null;
  show("signin");
  notice("Your account was deleted, and every one of its sessions has ended.");
}

async function revoke(id, button) {
  button.disabled = true;
  try {
    await tessera.revokeSession(id);
    notice("The session was revoked.");
    renderSessions(await tessera.listSessions());
  } catch (error) {
    button.disabled = false;
    onFailure(error);
  }
}

async function signOut(everywhere) {
  try {
    await tessera.signOut({ everywhere });
  } catch (error) {
    return onFailure(error);
  }
  me = null;
  show("signin");
  notice(everywhere ? "You are signed out on every device." : "You are signed out.");
}

// ---- start --------------------------------------------------------------------------------

tessera.on("session_ended", ({ reason }) => sessionEnded(reason));
tessera.on("token_refreshed", () => renderTimeLeft());
// A background refresh that failed for another reason than the session's end (it is retried).
tessera.on("error", ({ error }) => onFailure(error));
// Another tab signed in (the library never follows a tab that says "ended" into a guest
// session), or saved its guest account: show the account as it is now.
tessera.on("signed_in", ({ otherTab }) => {
  if (!otherTab) return;
  notice(null);
  loadAccount(false).catch(onFailure);
});
tessera.on("user_updated", ({ otherTab }) => {
  if (otherTab && view === "account") loadAccount(false).catch(onFailure);
});

/** Shows "Continue as guest" only when the server allows guests. */
async function loadSettings() {
  try {
    $("guest").hidden = (await tessera.settings()).allow_anonymous !== true;
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
    const user = await tessera.restore();
    if (user) return await loadAccount(false, user);
    await settingsLoaded;
    if (view === "account") return; // another tab's sign-in was taken up meanwhile
    show("signin", false);
    // A dead cookie is worth saying; no cookie at all is simply a signed-out browser.
    if (tessera.state === "ended") notice(restoreMessage(tessera.endReason));
  } catch (error) {
    await settingsLoaded;
    show("signin", false);
    notice(error instanceof SessionEndedError ? restoreMessage(error.reason) : failure(error));
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
