// The todo app's page: signs in with tessera through tessera.js (loaded from tessera itself),
// lists and adds todos through the library's fetch, and follows the list live over a WebSocket
// that gets a fresh token on every (re)connect and renews it on the open socket before expiry.
// When the session ends — here, on tessera's page, anywhere — the page says so and shows
// nothing of the user any more; it never becomes a guest.

const tesseraUrl = document.querySelector('meta[name="tessera-url"]').content.replace(/\/+$/, "");
const { createClient } = await import(`${tesseraUrl}/tessera.js`);
const auth = createClient({ url: tesseraUrl });

const $ = (id) => document.getElementById(id);
const views = ["loading", "signin", "app", "ended"];

function show(view) {
  for (const v of views) $(v).hidden = v !== view;
  const heading = $(view).querySelector("h2");
  if (heading) heading.focus();
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

function nameOf(user) {
  return (user && (user.email || user.username)) || "you";
}

// --- the list ---------------------------------------------------------------------------

function render(todos) {
  const list = $("todos");
  list.replaceChildren(...todos.map(item));
}

function item(todo) {
  const li = document.createElement("li");
  li.dataset.id = String(todo.id);
  li.textContent = todo.title;
  return li;
}

function append(todo) {
  const list = $("todos");
  if (!list.querySelector(`li[data-id="${CSS.escape(String(todo.id))}"]`)) list.append(item(todo));
}

async function load() {
  const response = await auth.fetch("/todos");
  if (response.ok) render(await response.json());
}

// --- the live socket ----------------------------------------------------------------------

let socket = null;
let renewTimer = null;
let reconnectTimer = null;
let live = false;

function expiryOf(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return { iat: payload.iat * 1000, exp: payload.exp * 1000 };
  } catch {
    return null;
  }
}

function scheduleRenewal(token) {
  clearTimeout(renewTimer);
  const times = expiryOf(token);
  if (!times) return;
  // After the library's own refresh point (80 % of the lifetime), before expiry.
  const at = times.iat + (times.exp - times.iat) * 0.9;
  renewTimer = setTimeout(renew, Math.max(at - Date.now(), 200));
}

/**
 * A token for the socket with life left in it by its own `exp`. The todo service judges a token
 * by `exp`, which is in whole seconds, so it can end up to a second before the library reckons
 * (it counts `expires_in` from when the answer came); and a renewal can come due before the
 * library's own refresh. Either way the token the library holds would die on the socket too
 * soon: ask for a new one instead (`forceRefresh` rotates once, under the library's lock, unless
 * another caller already did).
 */
async function socketToken(previous) {
  const token = await auth.getToken();
  const times = expiryOf(token);
  const margin = times ? Math.min(5000, (times.exp - times.iat) / 4) : 0;
  if (token !== previous && (!times || times.exp - Date.now() > margin)) return token;
  return auth.getToken({ forceRefresh: true });
}

async function renew() {
  const ws = socket;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  try {
    const token = await socketToken(ws.token);
    if (socket !== ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ type: "token", token }));
    ws.token = token;
    scheduleRenewal(token);
  } catch {
    // The session ended: the library says so through its event.
  }
}

async function connect() {
  clearTimeout(reconnectTimer);
  if (!live) return;
  let token;
  try {
    token = await socketToken(null);
  } catch {
    return;
  }
  if (!live) return;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/todos/ws`;
  const ws = new WebSocket(url, ["tessera", `tessera.bearer.${token}`]);
  ws.token = token;
  socket = ws;
  $("socket-state").textContent = "connecting";
  ws.addEventListener("open", () => {
    $("socket-state").textContent = "connected";
    scheduleRenewal(token);
  });
  ws.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "todos") render(message.todos);
    if (message.type === "todo_added") append(message.todo);
  });
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return;
    socket = null;
    clearTimeout(renewTimer);
    $("socket-state").textContent = "disconnected";
    if (!live) return;
    if (event.code === 4001) {
      // The todo service heard from tessera that the session ended: ask tessera, which ends
      // the session here too (the library's refresh is refused and it says so).
      auth.getUser().catch(() => {});
      return;
    }
    // Expired token (4002), refused renewal (4003), a stopping server or a lost network:
    // reconnect, with a fresh token.
    reconnectTimer = setTimeout(connect, event.code === 4002 || event.code === 4003 ? 0 : 1000);
  });
}

function stopLive() {
  live = false;
  clearTimeout(renewTimer);
  clearTimeout(reconnectTimer);
  if (socket) {
    const ws = socket;
    socket = null;
    ws.close(1000, "signed out");
  }
  $("socket-state").textContent = "disconnected";
}

// --- the session ----------------------------------------------------------------------------

async function enter(user) {
  $("who").textContent = nameOf(user);
  show("app");
  live = true;
  await load();
  connect();
}

function ended() {
  stopLive();
  $("todos").replaceChildren();
  $("who").textContent = "";
  notice("");
  show("ended");
}

auth.on("session_ended", ended);
auth.on("signed_out", () => {
  stopLive();
  $("todos").replaceChildren();
  show("signin");
});

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").textContent = "";
  const identifier = $("identifier").value.trim();
  const password = $("password").value;
  const who = identifier.includes("@") ? { email: identifier } : { username: identifier };
  try {
    const user = await auth.signIn({ ...who, password });
    $("password").value = "";
    notice("");
    await enter(user);
  } catch (error) {
    $("signin-error").textContent = error && error.message ? error.message : "Sign-in failed";
  }
});

$("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("add-error").textContent = "";
  const title = $("title").value.trim();
  if (!title) return;
  const response = await auth.fetch("/todos", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title }),
  });
  if (response.ok) {
    append(await response.json());
    $("title").value = "";
  } else if (response.status !== 401) {
    $("add-error").textContent = "Could not add the todo";
  }
});

$("signout-button").addEventListener("click", () => auth.signOut());
$("again-button").addEventListener("click", () => show("signin"));

const user = await auth.restore().catch(() => null);
if (user) await enter(user);
else show("signin");
