// The connection against a scripted in-process WebSocket: hello, replies matched by id,
// errors as codes, timeouts, reconnect with a new hello, fatal closes, token refresh.
import assert from "node:assert/strict";
import { test } from "node:test";

import { HuddleConnection, HuddleError } from "../../huddle/web/sdk/connection.js";

/** A fake node: each socket answers hello (or what `answer` says) and records frames. */
function fakeNode(answer = defaultAnswer) {
  const node = { sockets: [], frames: [] };
  globalThis.WebSocket = class {
    constructor(url) {
      this.url = url;
      this.closedWith = null;
      node.sockets.push(this);
      setTimeout(() => this.onopen?.(), 0);
    }
    send(data) {
      const frame = JSON.parse(data);
      node.frames.push(frame);
      const reply = answer(frame, node);
      if (reply) setTimeout(() => this.onmessage?.({ data: JSON.stringify({ re: frame.id, ...reply }) }), 0);
    }
    close(code) {
      this.closedWith = code;
    }
    // The server side drops or closes the connection.
    drop(code = 1006, reason = "") {
      this.onclose?.({ code, reason });
    }
    push(event) {
      this.onmessage?.({ data: JSON.stringify(event) });
    }
  };
  return node;
}

function defaultAnswer(frame) {
  if (frame.type === "hello") {
    return { type: "ok", protocol: 1, identity: "ada", name: "Ada", device: frame.device, session: "s", node: "n", heartbeat_s: 20, token_expires_at: Math.floor(Date.now() / 1000) + 3600, server_time_ms: Date.now() };
  }
  if (frame.type === "chat.read") return { type: "error", code: "not_member", message: "you are not a member" };
  if (frame.type === "ping") return { type: "ok", server_time_ms: Date.now() };
  if (frame.type === "auth.refresh") return { type: "ok", token_expires_at: Math.floor(Date.now() / 1000) + 7200 };
  if (frame.type === "chat.list") return { type: "ok", conversations: [] };
  return null; // no reply: the request times out
}

const until = async (check, what) => {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail(`timed out waiting for ${what}`);
};

const options = (extra = {}) => ({ baseUrl: "http://127.0.0.1:9", token: "t1", device: "dev1", backoff: { baseMs: 1, maxMs: 5 }, ...extra });

test("hello carries the token, device and protocol; states go connecting → open", async () => {
  const node = fakeNode();
  const conn = new HuddleConnection(options());
  const states = [];
  conn.on("state", (s) => states.push(s.state));
  const hello = await conn.connect();
  assert.equal(node.sockets[0].url, "ws://127.0.0.1:9/v1/ws");
  assert.deepEqual(
    { type: node.frames[0].type, token: node.frames[0].token, device: node.frames[0].device, protocol: node.frames[0].protocol },
    { type: "hello", token: "t1", device: "dev1", protocol: 1 },
  );
  assert.equal(hello.identity, "ada");
  assert.equal(conn.identity, "ada");
  assert.deepEqual(states, ["connecting", "open"]);
  conn.close();
  assert.equal(conn.state, "closed");
});

test("replies are matched by id; error replies reject with their code; no reply times out", async () => {
  fakeNode();
  const conn = new HuddleConnection(options({ requestTimeoutMs: 30 }));
  await conn.connect();
  const [list, read, silent] = await Promise.allSettled([
    conn.request("chat.list", { limit: 5 }),
    conn.request("chat.read", { conv: "g-1", seq: 1 }),
    conn.request("chat.history", { conv: "g-1" }),
  ]);
  assert.deepEqual(list.value.conversations, []);
  assert.ok(read.reason instanceof HuddleError);
  assert.equal(read.reason.code, "not_member");
  assert.equal(silent.reason.code, "timeout");
  conn.close();
  await assert.rejects(conn.request("ping"), (e) => e.code === "not_connected");
});

test("events are dispatched by type and to '*'", async () => {
  const node = fakeNode();
  const conn = new HuddleConnection(options());
  await conn.connect();
  const got = [];
  conn.on("chat.message", (e) => got.push(["typed", e.seq]));
  const off = conn.on("*", (e) => got.push(["any", e.type]));
  node.sockets[0].push({ type: "chat.message", seq: 1, conv: "g-1" });
  off();
  node.sockets[0].push({ type: "chat.message", seq: 2, conv: "g-1" });
  assert.deepEqual(got, [["typed", 1], ["any", "chat.message"], ["typed", 2]]);
  conn.close();
});

test("a drop fails pending requests, reconnects with a new hello and fires ready again", async () => {
  const node = fakeNode();
  const conn = new HuddleConnection(options());
  const states = [];
  let ready = 0;
  conn.on("state", (s) => states.push(s.state));
  conn.on("ready", () => ready++);
  await conn.connect();
  const pending = conn.request("chat.history", { conv: "g-1" });
  node.sockets[0].drop(1006);
  await assert.rejects(pending, (e) => e.code === "disconnected");
  await until(() => ready === 2, "the second ready");
  assert.equal(node.sockets.length, 2);
  const hellos = node.frames.filter((f) => f.type === "hello");
  assert.deepEqual(hellos.map((h) => h.device), ["dev1", "dev1"], "the same device id again");
  assert.deepEqual(states, ["connecting", "open", "reconnecting", "open"]);
  conn.close();
});

test("being replaced by the same device elsewhere ends the connection for good", async () => {
  const node = fakeNode();
  const conn = new HuddleConnection(options());
  const closed = [];
  conn.on("closed", (c) => closed.push(c.code));
  await conn.connect();
  node.sockets[0].drop(4009, "replaced");
  assert.equal(conn.state, "closed");
  assert.equal(conn.closeReason, "replaced");
  assert.deepEqual(closed, ["replaced"]);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(node.sockets.length, 1, "no reconnect");
});

test("a refused token without a provider closes; with one, the next hello has a fresh token", async () => {
  const refuse = (frame) => (frame.type === "hello" && frame.token === "old" ? { type: "error", code: "token_expired", message: "expired" } : defaultAnswer(frame));
  fakeNode(refuse);
  const plain = new HuddleConnection(options({ token: "old" }));
  await assert.rejects(plain.connect(), (e) => e.code === "token_expired");
  assert.equal(plain.state, "closed");

  const node = fakeNode(refuse);
  let calls = 0;
  const conn = new HuddleConnection(options({ token: "old", tokenProvider: async () => `new${++calls}` }));
  const connected = conn.connect();
  await until(() => node.sockets.length === 1 && node.frames.length === 1, "the first hello");
  node.sockets[0].drop(4001, "auth failed"); // what the server does after the error
  const hello = await connected;
  assert.equal(hello.identity, "ada");
  assert.deepEqual(node.frames.filter((f) => f.type === "hello").map((f) => f.token), ["old", "new1"]);
  conn.close();
});

test("auth.expiring makes the connection refresh its token from the provider", async () => {
  const node = fakeNode();
  const conn = new HuddleConnection(options({ tokenProvider: async () => "t2" }));
  await conn.connect();
  const refreshed = new Promise((resolve) => conn.on("auth.refreshed", resolve));
  node.sockets[0].push({ type: "auth.expiring", seq: 1, expires_at: Date.now() / 1000 + 0.05 });
  const reply = await refreshed;
  assert.ok(reply.token_expires_at > Date.now() / 1000 + 3600);
  assert.deepEqual(node.frames.filter((f) => f.type === "auth.refresh").map((f) => f.token), ["t2"]);
  assert.equal(conn.token, "t2");
  conn.close();
});

test("short-lived tokens are refreshed at half their life, not in a loop", async () => {
  const lifeS = 0.2;
  const node = fakeNode((frame, n) => {
    if (frame.type === "auth.refresh") {
      // The node warns at once about a token shorter-lived than its notice time.
      setTimeout(() => n.sockets[0].push({ type: "auth.expiring", seq: 9, expires_at: Date.now() / 1000 + lifeS }), 1);
      return { type: "ok", token_expires_at: Date.now() / 1000 + lifeS };
    }
    const reply = defaultAnswer(frame);
    if (frame.type === "hello") reply.token_expires_at = Date.now() / 1000 + lifeS;
    return reply;
  });
  let tokens = 0;
  const conn = new HuddleConnection(options({ tokenProvider: async () => `t${++tokens}` }));
  await conn.connect();
  await new Promise((r) => setTimeout(r, 450));
  conn.close();
  const refreshes = node.frames.filter((f) => f.type === "auth.refresh").length;
  // About one refresh per 100 ms (half of each token's 200 ms): never a burst.
  assert.ok(refreshes >= 2 && refreshes <= 8, `${refreshes} refreshes in 450 ms`);
});

test("an unanswered ping drops the connection and reconnects", async () => {
  const node = fakeNode((frame, n) => (frame.type === "ping" && n.sockets.length === 1 ? null : defaultAnswer(frame)));
  const conn = new HuddleConnection(options({ pingIntervalMs: 10, pingTimeoutMs: 20 }));
  let ready = 0;
  conn.on("ready", () => ready++);
  await conn.connect();
  await until(() => ready === 2, "a reconnect after the silent ping");
  assert.equal(node.sockets[0].closedWith !== null, true, "the dead socket was closed");
  conn.close();
});

test("a frame over the limit is refused here and never sent; the node's hello sets the limit", async () => {
  const node = fakeNode((frame) => {
    const reply = defaultAnswer(frame);
    if (frame.type === "hello") reply.max_frame_bytes = 4096;
    return reply ?? { type: "ok" };
  });
  const conn = new HuddleConnection(options());
  assert.equal(conn.frameLimit, 65536, "the node's default before any hello");
  await conn.connect();
  assert.equal(conn.frameLimit, 4096);
  await assert.rejects(conn.request("chat.send", { text: "€".repeat(1400) }), (e) => e.code === "frame_too_large"); // 4200 bytes
  await conn.request("chat.send", { text: "x".repeat(1400) });
  assert.deepEqual(node.frames.filter((f) => f.type === "chat.send").map((f) => f.text.length), [1400]);
  assert.equal(conn.state, "open");
  conn.maxFrameBytes = 1024; // an option below the node's wins
  await assert.rejects(conn.request("chat.send", { text: "x".repeat(1400) }), (e) => e.code === "frame_too_large");
  conn.close();
});

test("a 1009 close fails the request that caused it; the others fail as disconnected", async () => {
  // The node takes less than this side thinks (no limit in its hello).
  const node = fakeNode((frame, n) => {
    if (JSON.stringify(frame).length > 2000) {
      setTimeout(() => n.sockets.at(-1).drop(1009, "message too big"), 1);
      return null;
    }
    return defaultAnswer(frame);
  });
  const conn = new HuddleConnection(options({ maxFrameBytes: 1_000_000 }));
  await conn.connect();
  const small = conn.request("chat.history", { conv: "g-1" });
  const big = conn.request("chat.send", { text: "x".repeat(5000) });
  await assert.rejects(big, (e) => e.code === "frame_too_large");
  await assert.rejects(small, (e) => e.code === "disconnected");
  await until(() => conn.state === "open" && node.sockets.length === 2, "the reconnect");
  conn.close();
});

test("a node that closes right after each hello is not hammered: the backoff keeps growing", async () => {
  const node = fakeNode((frame, n) => {
    if (frame.type === "hello") {
      const socket = n.sockets.at(-1);
      setTimeout(() => socket.drop(1009, "message too big"), 2);
    }
    return defaultAnswer(frame);
  });
  const conn = new HuddleConnection(options({ backoff: { baseMs: 1, maxMs: 3 } }));
  await conn.connect();
  await until(() => node.sockets.length >= 5, "five connections");
  // Each hello used to set the attempt back to 0: the first, shortest delay every time.
  assert.ok(conn.attempt >= 4, `attempt ${conn.attempt} after ${node.sockets.length} connections`);
  conn.close();
});

test("close() settles a pending connect(); a second connect() is the same promise", async () => {
  fakeNode(() => null); // the node never answers hello
  const conn = new HuddleConnection(options());
  const first = conn.connect();
  assert.equal(conn.connect(), first);
  await new Promise((r) => setTimeout(r, 5));
  conn.close();
  await assert.rejects(first, (e) => e instanceof HuddleError && e.code === "closed");

  // A token provider that fails: retried with backoff, each failure told as a warning.
  fakeNode();
  const failing = new HuddleConnection(options({ token: undefined, tokenProvider: async () => Promise.reject(new Error("backend down")) }));
  const warnings = [];
  failing.on("warning", (w) => warnings.push([w.what, w.error.message]));
  const pending = failing.connect();
  await until(() => warnings.length >= 2, "warnings");
  assert.deepEqual(warnings[0], ["tokenProvider", "backend down"]);
  failing.close();
  await assert.rejects(pending, (e) => e.code === "closed");

  // Once open, connect() resolves with the hello at once.
  fakeNode();
  const open = new HuddleConnection(options());
  const hello = await open.connect();
  assert.equal(await open.connect(), hello);
  open.close();
});
