// A service in another language behind `tessera gateway`, for the end-to-end tests. It trusts
// the gateway's X-Tessera-* headers and nothing else, and tells the tests what it saw:
//
//   GET  /echo, /public/...  {method, path, headers}: the request as it arrived
//   POST /upload             {bytes, sha256} of the body, read as a stream
//   GET  /sse                three server-sent events, 300 ms apart
//   GET  /slow               answers after 3 s
//   WS   /ws                 echoes text; its first message says who the gateway says it is
//   GET  /ws-closes          [{code, reason, user}] of the sockets that closed, in order
//   GET  /seen               every request target it received (upgrades included), in order
//
// Prints `listening <port>` once it listens on 127.0.0.1 (port 0: any free one).
import { createServer } from "node:http";
import { createHash } from "node:crypto";
import { WebSocketServer } from "ws";

const closes = [];
const seen = [];
const json = (res, status, body) => {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
};

const server = createServer((req, res) => {
  const path = new URL(req.url, "http://upstream").pathname;
  if (path === "/seen") {
    json(res, 200, seen);
    return;
  }
  seen.push(req.url);
  if (req.method === "POST" && path === "/upload") {
    const hash = createHash("sha256");
    let bytes = 0;
    req.on("data", (chunk) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    req.on("end", () => json(res, 200, { bytes, sha256: hash.digest("hex") }));
    return;
  }
  if (path === "/sse") {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    let n = 0;
    const tick = () => {
      n += 1;
      res.write(`data: ${n}\n\n`);
      if (n === 3) res.end();
      else setTimeout(tick, 300);
    };
    tick();
    return;
  }
  if (path === "/slow") {
    setTimeout(() => json(res, 200, { slow: true }), 3000);
    return;
  }
  if (path === "/ws-closes") {
    json(res, 200, closes);
    return;
  }
  json(res, 200, { method: req.method, path: req.url, headers: req.headers });
});

const sockets = new WebSocketServer({ noServer: true });
server.on("upgrade", (req, socket, head) => {
  seen.push(req.url);
  if (new URL(req.url, "http://upstream").pathname !== "/ws") {
    socket.destroy();
    return;
  }
  sockets.handleUpgrade(req, socket, head, (ws) => {
    const user = req.headers["x-tessera-user-id"] ?? null;
    ws.send(JSON.stringify({ user, session: req.headers["x-tessera-session-id"] ?? null, protocol: ws.protocol, offered: req.headers["sec-websocket-protocol"] ?? null }));
    ws.on("message", (data) => ws.send(data.toString()));
    ws.on("close", (code, reason) => closes.push({ code, reason: reason.toString(), user }));
  });
});

server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
