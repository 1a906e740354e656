// The seed's kind of web app, behind `tessera gateway`: a Socket.IO server that knows its user
// only from the gateway's X-Tessera-User-Id, and a page that signs in with tessera.js and keeps
// its socket connected as the same user, reconnecting with a fresh token each time.
//
//   GET /app                  the page (the gateway lets it through as a public path); ?tessera=<url>
//   GET /socket.io/socket.io.js   the Socket.IO client (public too); the socket itself is not
//   GET /connections          [{user, at}] of every socket the app accepted, in order
//
// Env: PORT (0: any free one). Prints `listening <port>` once it listens on 127.0.0.1.
import { createServer } from "node:http";
import { Server } from "socket.io";

const connections = [];

const page = (tessera) => `<!doctype html><html><head><meta charset="utf-8"><title>socket app</title>
<script src="/socket.io/socket.io.js"></script>
<script type="module">
import { createClient, SessionEndedError } from "${tessera}/tessera.js";
const t = createClient({ url: "${tessera}" });
window.t = t;
window.users = [];
const status = document.getElementById("status");
let socket = null;
async function connect() {
  let protocols;
  try {
    protocols = await t.socketProtocols();
  } catch (error) {
    status.textContent = error instanceof SessionEndedError ? "session ended" : "error: " + error.message;
    return;
  }
  socket = io({ transports: ["websocket"], protocols, reconnection: false });
  socket.on("hello", ({ user }) => {
    window.users.push(user);
    status.textContent = "connected as " + user;
  });
  socket.on("disconnect", () => {
    status.textContent = "reconnecting";
    setTimeout(connect, 100);
  });
  socket.on("connect_error", () => setTimeout(connect, 500));
}
t.on("session_ended", () => { status.textContent = "session ended"; });
window.start = async (email, password) => {
  await t.signIn({ email, password });
  await connect();
};
</script></head><body><p id="status">signed out</p></body></html>`;

const server = createServer((req, res) => {
  const url = new URL(req.url, "http://app");
  if (url.pathname === "/app") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
    res.end(page(url.searchParams.get("tessera")));
    return;
  }
  if (url.pathname === "/connections") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(connections));
    return;
  }
  res.writeHead(404).end();
});

const io = new Server(server, { transports: ["websocket"], serveClient: true });
io.on("connection", (socket) => {
  const user = socket.request.headers["x-tessera-user-id"] ?? null;
  connections.push({ user, at: Date.now() });
  if (!user) {
    socket.disconnect(true);
    return;
  }
  socket.emit("hello", { user });
});

server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
