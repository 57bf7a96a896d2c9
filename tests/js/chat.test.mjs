// The chat device (chat.js) against a scripted connection and a memory store: what it asks
// in chat.sync, how a resumed device continues from kept cursors, the outbox's order and
// retries across a reconnect, echoes, and gaps reloaded by page.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatDevice } from "../../huddle/web/sdk/chat.js";
import { HuddleError } from "../../huddle/web/sdk/connection.js";
import { memoryStore } from "../../huddle/web/sdk/store.js";

/** A connection whose replies come from `answer(type, fields)` (a value, or a thrown error). */
class FakeConnection extends EventTarget {
  constructor(answer) {
    super();
    this.answer = answer;
    this.identity = "me";
    this.device = "d1";
    this.state = "open";
    this.requests = [];
  }
  on(type, handler) {
    const listener = (event) => handler(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }
  async request(type, fields = {}) {
    if (this.state !== "open") throw new HuddleError("not_connected", "not connected");
    this.requests.push({ type, ...structuredClone(fields) });
    await Promise.resolve();
    return { type: "ok", ...this.answer(type, fields, this) };
  }
  event(frame) {
    this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
    this.dispatchEvent(new CustomEvent("*", { detail: frame }));
  }
  reconnect() {
    this.state = "open";
    this.dispatchEvent(new CustomEvent("ready", { detail: {} }));
  }
}

const summary = (conv, last_seq) => ({ conv, kind: "group", name: conv, role: "member", members: 2, ev: last_seq, last_seq, last_ts: last_seq, read_seq: 0, unread: last_seq });
const message = (seq, sender = "bob", extra = {}) => ({ seq, ts: seq, sender, kind: "text", text: `m${seq}`, ...extra });
const settle = () => new Promise((resolve) => setTimeout(resolve, 5));
const sent = (conn) => conn.requests.filter((r) => r.type === "chat.send");

function server(overrides = {}) {
  return (type, fields, conn) => {
    if (overrides[type]) return overrides[type](fields, conn);
    switch (type) {
      case "chat.sync":
        return { heads: { "g-1": 3 }, feed: 2, gaps: [], removed: [], feed_gap: false, epochs: { "g-1": "e1" }, feed_epoch: "f1" };
      case "chat.list":
        return { conversations: [summary("g-1", 2)] };
      case "chat.history":
        return { conv: fields.conv, messages: [message(1), message(2)], last_seq: 2 };
      case "chat.send":
        return { conv: fields.conv ?? "d-x", seq: 10, ts: 10, duplicate: false };
      default:
        return {};
    }
  };
}

test("a first start syncs without cursors, loads the list, and keeps the cursors", async () => {
  const store = memoryStore();
  const conn = new FakeConnection(server());
  const chat = new ChatDevice(conn, { store });
  await chat.start();
  assert.deepEqual(conn.requests.map((r) => r.type), ["chat.sync", "chat.list"]);
  assert.deepEqual(conn.requests[0], { type: "chat.sync" });
  assert.deepEqual(chat.conversations().map((c) => c.conv), ["g-1"]);
  await chat.flushed();
  const kept = await store.load();
  assert.deepEqual([kept.cursors.cursors, kept.cursors.feed, kept.cursors.feedEpoch], [{ "g-1": 3 }, 2, "f1"]);
  assert.deepEqual(kept.conversations.map((c) => c.conv), ["g-1"]);

  // The next device start on the same store asks from there, and needs no list.
  const again = new FakeConnection(server());
  const resumed = new ChatDevice(again, { store });
  await resumed.start();
  assert.deepEqual(again.requests, [
    { type: "chat.sync", cursors: { "g-1": 3 }, epochs: { "g-1": "e1" }, stamps: {}, feed: 2, feed_epoch: "f1" },
  ]);
});

test("replayed events count for the sync, move cursors, update the list and the open page", async () => {
  const conn = new FakeConnection(
    server({
      "chat.sync": (_, c) => {
        c.event({ type: "chat.message", seq: 1, conv: "g-1", ev: 4, epoch: "e1", stamp: "s4", message: message(3) });
        return { heads: { "g-1": 4 }, feed: 2, gaps: [], removed: [], epochs: { "g-1": "e1" }, feed_epoch: "f1" };
      },
      "chat.history": (fields) => ({ conv: fields.conv, messages: [message(1), message(2), message(3)], last_seq: 3 }),
    }),
  );
  const store = memoryStore();
  await store.saveCursors({ cursors: { "g-1": 3 }, epochs: { "g-1": "e1" }, stamps: {}, feed: 2, feedEpoch: "f1", feedStamp: null });
  await store.putConversations([summary("g-1", 2)]);
  const chat = new ChatDevice(conn, { store });
  await chat.start();
  assert.equal(chat.syncs[0].replayed, 1);
  assert.deepEqual([chat.cursors.cursors["g-1"], chat.cursors.stamps["g-1"]], [4, "s4"]);
  assert.equal(chat.conversation("g-1").unread, 3);
  await chat.openConversation("g-1");
  conn.event({ type: "chat.message", seq: 2, conv: "g-1", ev: 5, epoch: "e1", stamp: "s5", message: message(4) });
  assert.deepEqual(chat.messages("g-1").map((m) => m.seq), [1, 2, 3, 4]);
});

test("sends made while disconnected wait in the outbox, then go in order after the next sync", async () => {
  const store = memoryStore();
  const conn = new FakeConnection(server());
  const chat = new ChatDevice(conn, { store });
  await chat.start();
  conn.state = "reconnecting";
  const first = await chat.send("g-1", "first");
  const second = await chat.send("g-1", "second");
  await settle();
  assert.equal(sent(conn).length, 0);
  assert.deepEqual((await store.load()).outbox.map((i) => i.text), ["first", "second"], "stored before sending");

  conn.reconnect();
  await settle();
  const types = conn.requests.map((r) => r.type);
  assert.ok(types.lastIndexOf("chat.sync") < types.indexOf("chat.send"), "the sync comes first");
  assert.deepEqual(sent(conn).map((r) => [r.text, r.client_id]), [["first", first.client_id], ["second", second.client_id]]);
  assert.deepEqual(chat.outbox, []);
  assert.deepEqual((await store.load()).outbox, []);
});

test("a send that may pass is retried with the same client_id; a refused one is dropped", async () => {
  let attempts = 0;
  const conn = new FakeConnection(
    server({
      "chat.send": (fields) => {
        if (fields.text === "refused") throw new HuddleError("not_member", "no");
        if (++attempts === 1) throw new HuddleError("rate_limited", "slow down");
        return { conv: fields.conv, seq: 7, ts: 7, duplicate: attempts > 2 };
      },
    }),
  );
  const chat = new ChatDevice(conn, { store: "memory", sendRetryMs: 10 });
  await chat.start();
  const failed = [];
  chat.on("send_failed", ({ item, error }) => failed.push([item.text, error.code]));
  const item = await chat.send("g-1", "hello");
  await settle();
  assert.equal(chat.outbox[0]?.error, "rate_limited", "kept after rate_limited");
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.deepEqual(sent(conn).map((r) => r.client_id), [item.client_id, item.client_id]);
  assert.deepEqual(chat.outbox, []);
  await chat.send("g-1", "refused");
  await settle();
  assert.deepEqual(failed, [["refused", "not_member"]]);
  assert.deepEqual(chat.outbox, []);
});

test("the echo of a send ends its outbox item even when the reply was lost", async () => {
  const conn = new FakeConnection(server({ "chat.send": () => { throw new HuddleError("disconnected", "gone"); } }));
  const chat = new ChatDevice(conn, { store: "memory" });
  await chat.start();
  const item = await chat.send("g-1", "hi");
  await settle();
  assert.equal(chat.outbox.length, 1);
  const said = [];
  chat.on("sent", ({ item: done, reply }) => said.push([done.client_id, reply.conv, reply.seq, reply.ts]));
  conn.event({ type: "chat.message", seq: 3, conv: "g-1", ev: 6, epoch: "e1", message: message(9, "me", { client_id: item.client_id }) });
  assert.deepEqual(chat.outbox, []);
  assert.equal(chat.conversation("g-1").unread, 0, "an own message reads everything before it");
  assert.deepEqual(said, [[item.client_id, "g-1", 9, 9]], "sent, though no reply came");
});

test("a send whose own message comes before its reply says sent once", async () => {
  let answer;
  const conn = new FakeConnection(server({ "chat.send": () => ({ conv: "g-1", seq: 11, ts: 11, duplicate: false }) }));
  const request = conn.request.bind(conn);
  conn.request = async (type, fields) => {
    if (type === "chat.send") await new Promise((resolve) => (answer = resolve));
    return request(type, fields);
  };
  const chat = new ChatDevice(conn, { store: "memory" });
  await chat.start();
  const said = [];
  chat.on("sent", ({ reply }) => said.push(reply.seq));
  const item = await chat.send("g-1", "hi");
  await settle();
  conn.event({ type: "chat.message", seq: 3, conv: "g-1", ev: 6, epoch: "e1", message: message(11, "me", { client_id: item.client_id }) });
  answer();
  await settle();
  assert.deepEqual(said, [11]);
  assert.deepEqual(chat.outbox, []);
});

test("a gap drops the open conversation's page and reloads it; a feed gap reloads the list", async () => {
  const conn = new FakeConnection(server());
  const chat = new ChatDevice(conn, { store: "memory" });
  await chat.start();
  await chat.openConversation("g-1");
  conn.event({ type: "chat.message", seq: 2, conv: "g-1", ev: 4, epoch: "e1", message: message(3) });
  assert.deepEqual(chat.messages("g-1").map((m) => m.seq), [1, 2, 3]);
  const before = conn.requests.length;
  conn.event({ type: "chat.gap", seq: 3, conv: "g-1", ev: 2, epoch: "e2", fev: null, feed_epoch: null, reason: "epoch_changed" });
  await settle();
  // The summary missed events too: the list (with the user's own read positions) comes again.
  assert.deepEqual(conn.requests.slice(before).map((r) => r.type), ["chat.list", "chat.history"]);
  assert.deepEqual(chat.messages("g-1").map((m) => m.seq), [1, 2], "what the server has now");
  assert.deepEqual([chat.cursors.cursors["g-1"], chat.cursors.epochs["g-1"]], [2, "e2"]);
  conn.event({ type: "chat.gap", seq: 4, conv: null, ev: null, epoch: null, fev: 1, feed_epoch: "f9", reason: "trimmed" });
  await settle();
  assert.equal(conn.requests.at(-1).type, "chat.list");
});

test("history pages go back from the oldest kept message until the start", async () => {
  const conn = new FakeConnection(
    server({
      "chat.history": (fields) => {
        const end = fields.before ? fields.before - 1 : 5;
        const start = Math.max(1, end - fields.limit + 1);
        const messages = [];
        for (let seq = start; seq <= end; seq++) messages.push(message(seq));
        return { conv: fields.conv, messages, last_seq: 5 };
      },
    }),
  );
  const chat = new ChatDevice(conn, { store: "memory", pageSize: 2 });
  await chat.start();
  await chat.openConversation("g-1");
  assert.deepEqual(chat.messages("g-1").map((m) => m.seq), [4, 5]);
  assert.ok(chat.hasOlder("g-1"));
  await chat.loadOlder("g-1");
  await chat.loadOlder("g-1");
  assert.deepEqual(chat.messages("g-1").map((m) => m.seq), [1, 2, 3, 4, 5]);
  assert.equal(chat.hasOlder("g-1"), false);
  assert.deepEqual(conn.requests.filter((r) => r.type === "chat.history").map((r) => r.before ?? null), [null, 4, 2]);
});

test("without IndexedDB the device keeps its state in memory and says so", async () => {
  assert.equal(globalThis.indexedDB, undefined, "Node has no IndexedDB");
  const conn = new FakeConnection(server());
  const chat = new ChatDevice(conn);
  const warnings = [];
  chat.on("warning", ({ what }) => warnings.push(what));
  await chat.start();
  assert.deepEqual(warnings, ["store"]);
  assert.deepEqual(chat.conversations().map((c) => c.conv), ["g-1"]);
  await chat.flushed();
  assert.deepEqual((await chat.store.load()).cursors.cursors, { "g-1": 3 });
});

test("the list is loaded page by page, after each page's last conversation, none skipped", async () => {
  // Ordered as the node orders them: last_ts, then conv, both descending. Three share a
  // last_ts across a page boundary, three have no message yet (last_ts 0).
  const times = { "g-5": 500, "g-4c": 400, "g-4b": 400, "g-4a": 400, "g-2": 200, "d-z": 0, "d-y": 0, "d-x": 0 };
  const all = Object.entries(times).map(([conv, ts]) => ({ ...summary(conv, 1), last_ts: ts }));
  const after = (s, f) => f.before_ts == null || s.last_ts < f.before_ts || (s.last_ts === f.before_ts && s.conv < (f.before_conv ?? ""));
  const conn = new FakeConnection(
    server({
      "chat.list": (fields) => ({ conversations: all.filter((s) => after(s, fields)).slice(0, fields.limit) }),
    }),
  );
  const chat = new ChatDevice(conn, { store: "memory", listPageSize: 2 });
  await chat.start();
  assert.deepEqual(
    chat.conversations().map((c) => c.conv),
    Object.keys(times),
  );
  const lists = conn.requests.filter((r) => r.type === "chat.list").map((r) => (r.before_ts == null ? null : `${r.before_ts}/${r.before_conv}`));
  assert.deepEqual(lists, [null, "400/g-4c", "400/g-4a", "0/d-z", "0/d-x"]);
});

test("a message carrying a file sends its kind and media id, with a caption or none", async () => {
  const store = memoryStore();
  const conn = new FakeConnection(server());
  const chat = new ChatDevice(conn, { store });
  await chat.start();
  conn.state = "reconnecting";
  await chat.send("g-1", "", { kind: "image", media: "f-img" });
  await chat.send(null, "the report", { to: "bob", kind: "file", media: "f-doc" });
  await chat.send("g-1", "plain");
  assert.deepEqual((await store.load()).outbox.map((i) => i.media ?? null), ["f-img", "f-doc", null], "kept with the file");
  conn.reconnect();
  await settle();
  assert.deepEqual(
    sent(conn).map((r) => [r.conv, r.to, r.kind, r.text, r.media]),
    [
      ["g-1", null, "image", null, "f-img"],
      [null, "bob", "file", "the report", "f-doc"],
      ["g-1", null, "text", "plain", null],
    ],
  );
});

test("search pages ask one past the oldest hit and return only hits not seen yet", async () => {
  const hit = (conv, seq, ts) => ({ conv, message: message(seq, "bob", { ts }), snippet: "京都", ranges: [[0, 2]] });
  const pages = [
    [hit("g-1", 9, 900), hit("g-2", 4, 800)],
    [hit("g-2", 4, 800), hit("g-1", 3, 800)],
    [hit("g-1", 3, 800)],
  ];
  const conn = new FakeConnection(server({ "chat.search": () => ({ hits: pages.shift() }) }));
  const chat = new ChatDevice(conn, { store: "memory" });
  await chat.start();
  const first = await chat.search("京都", { limit: 2 });
  assert.deepEqual(first.hits.map((h) => h.message.seq), [9, 4]);
  assert.equal(first.done, false, "a full page may have more after it");
  const second = await chat.search("京都", { limit: 2, more: first.hits });
  assert.deepEqual(second.hits.map((h) => h.message.seq), [3], "the repeated hit is dropped");
  assert.equal(second.done, false);
  const third = await chat.search("京都", { limit: 2, more: [...first.hits, ...second.hits] });
  assert.deepEqual(third.hits, []);
  assert.equal(third.done, true);
  const asked = conn.requests.filter((r) => r.type === "chat.search").map((r) => [r.query, r.limit, r.before_ts ?? null]);
  assert.deepEqual(asked, [["京都", 2, null], ["京都", 2, 801], ["京都", 2, 801]]);
});

test("leave, unfollow and mute change the list at once; follow adds the channel", async () => {
  const channel = { ...summary("c-1", 4), kind: "channel", role: "follower" };
  const conn = new FakeConnection(server({ "chat.follow": () => ({ conv: channel }) }));
  const chat = new ChatDevice(conn, { store: "memory" });
  await chat.start();
  await chat.mute("g-1", true);
  assert.equal(chat.conversation("g-1").muted, true);
  await chat.mute("g-1", false);
  assert.equal(chat.conversation("g-1").muted, false);
  assert.deepEqual(conn.requests.filter((r) => r.type === "chat.mute").map((r) => r.muted), [true, false]);
  const followed = await chat.follow("c-1");
  assert.equal(followed.role, "follower");
  assert.equal(chat.conversation("c-1").unread, 4, "every message of the channel is unread");
  await chat.unfollow("c-1");
  assert.equal(chat.conversation("c-1"), undefined);
  await chat.leave("g-1");
  assert.deepEqual(chat.conversations(), []);
  // The chat.left that follows on the user's devices changes nothing more.
  conn.event({ type: "chat.left", fev: 9, conv: "g-1", reason: "left" });
  assert.deepEqual(chat.conversations(), []);
});

test("a refused management request rejects with the server's code, and the list stays", async () => {
  const refuse = () => {
    throw new HuddleError("forbidden", "cannot rename: forbidden");
  };
  const conn = new FakeConnection(server({ "chat.rename": refuse, "chat.leave": refuse }));
  conn.request = async function (type, fields = {}) {
    this.requests.push({ type, ...fields });
    return { type: "ok", ...this.answer(type, fields, this) };
  };
  const chat = new ChatDevice(conn, { store: "memory" });
  await chat.start();
  await assert.rejects(chat.rename("g-1", "New"), (e) => e.code === "forbidden");
  await assert.rejects(chat.leave("g-1"), (e) => e.code === "forbidden");
  assert.ok(chat.conversation("g-1"), "a refused leave keeps the conversation");
});

test("a caller's client_id is the one sent, and sending it again while it waits adds nothing", async () => {
  const store = memoryStore();
  const conn = new FakeConnection(server());
  const chat = new ChatDevice(conn, { store });
  await chat.start();
  conn.state = "reconnecting";
  const item = await chat.send("g-1", "caption", { kind: "file", media: "F1", client_id: "f-F1" });
  const again = await chat.send("g-1", "caption", { kind: "file", media: "F1", client_id: "f-F1" });
  assert.equal(again, item);
  assert.deepEqual((await store.load()).outbox.map((i) => i.client_id), ["f-F1"]);

  conn.reconnect();
  await settle();
  assert.deepEqual(sent(conn).map((r) => [r.client_id, r.media, r.text]), [["f-F1", "F1", "caption"]]);
  assert.deepEqual(chat.outbox, []);
});

test("a message too large for the node fails at once, is never sent, and later ones still go", async () => {
  const store = memoryStore();
  const conn = new FakeConnection(server());
  conn.hello = { max_frame_bytes: 65536, max_text_chars: 4000 };
  const chat = new ChatDevice(conn, { store });
  const failed = [];
  chat.on("send_failed", ({ item, error }) => failed.push([item.text.length, error.code]));
  await chat.start();
  conn.state = "reconnecting"; // no connection needed to know
  await chat.send("g-1", "x".repeat(100_000)); // over the frame limit (the node would close)
  await chat.send("g-1", "é".repeat(4001)); // over max_text_chars (a code point each)
  await chat.send("g-1", "after");
  assert.deepEqual(failed, [[100_000, "message_too_large"], [4001, "message_too_large"]]);
  assert.deepEqual((await store.load()).outbox.map((i) => i.text), ["after"], "not kept for a reload either");
  conn.reconnect();
  await settle();
  assert.deepEqual(sent(conn).map((r) => r.text), ["after"]);

  // Without a hello (a kept outbox before the connection is up) the frame limit is the
  // node's default; 40000 "€" are 120000 bytes of UTF-8 in 40000 characters.
  const kept = memoryStore();
  await kept.putOutbox({ client_id: "c-big", conv: "g-1", text: "€".repeat(40_000), order: 1, created: 1, error: null });
  const offline = new FakeConnection(server());
  offline.state = "connecting";
  const restarted = new ChatDevice(offline, { store: kept });
  const gone = [];
  restarted.on("send_failed", ({ item, error }) => gone.push([item.client_id, error.code]));
  await restarted.start();
  assert.deepEqual(gone, [["c-big", "message_too_large"]]);
  assert.deepEqual(restarted.outbox, []);
});

test("a send the node closed the connection on (frame_too_large) is refused, not sent again", async () => {
  const conn = new FakeConnection(
    server({
      "chat.send": (fields) => {
        if (fields.text === "big") throw new HuddleError("frame_too_large", "the node closed on chat.send");
        return { conv: fields.conv, seq: 10, ts: 10, duplicate: false };
      },
    }),
  );
  const chat = new ChatDevice(conn, { store: "memory" });
  const failed = [];
  chat.on("send_failed", ({ item, error }) => failed.push([item.text, error.code]));
  await chat.start();
  await chat.send("g-1", "big");
  await chat.send("g-1", "small");
  await settle();
  assert.deepEqual(failed, [["big", "message_too_large"]]);
  assert.deepEqual(sent(conn).map((r) => r.text), ["big", "small"]);
  conn.reconnect();
  await settle();
  assert.deepEqual(sent(conn).map((r) => r.text), ["big", "small"], "nothing sent again");
});

test("a sync gap on a known conversation reloads the list, so its summary and unread are current", async () => {
  const store = memoryStore();
  await store.saveCursors({ cursors: { "g-1": 3 }, epochs: { "g-1": "e1" }, stamps: {}, feed: 2, feedEpoch: "f1", feedStamp: null });
  await store.putConversations([summary("g-1", 2)]);
  const conn = new FakeConnection(
    server({
      "chat.sync": () => ({ heads: { "g-1": 40 }, feed: 2, gaps: ["g-1"], removed: [], feed_gap: false, epochs: { "g-1": "e1" }, feed_epoch: "f1" }),
      "chat.list": () => ({ conversations: [{ ...summary("g-1", 30), read_seq: 25, unread: 5 }] }),
    }),
  );
  const chat = new ChatDevice(conn, { store });
  await chat.start();
  assert.deepEqual(conn.requests.map((r) => r.type), ["chat.sync", "chat.list"]);
  assert.deepEqual([chat.conversation("g-1").last_seq, chat.conversation("g-1").unread], [30, 5]);
});
