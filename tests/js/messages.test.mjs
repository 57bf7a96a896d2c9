// What a conversation's messages go through on a device: replies and threads, jumping into
// history and walking back to the end, edits, recalls and reactions that come again in a
// sync's replay, mentions, and who has read what (kept with the cursors across a reload).
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatDevice } from "../../huddle/web/sdk/chat.js";
import * as s from "../../huddle/web/sdk/chatstate.js";
import { memoryStore } from "../../huddle/web/sdk/store.js";

const message = (seq, sender = "bob", extra = {}) => ({ seq, ts: seq, sender, kind: "text", text: `m${seq}`, ...extra });
const ev = (conv, n, type, fields) => ({ type, conv, ev: n, epoch: "e1", stamp: `s${n}`, ...fields });
const newMessage = (conv, n, m) => ev(conv, n, "chat.message", { message: m });

// ---- pure bookkeeping ----

test("a reply counts once in its root's thread, even when replayed", () => {
  let page = [message(1), message(2)];
  page = s.applyToMessages(page, newMessage("g", 3, message(3, "ada", { reply_to: 1 })));
  assert.deepEqual(page[0].thread, { count: 1, last_seq: 3 });
  page = s.applyToMessages(page, newMessage("g", 3, message(3, "ada", { reply_to: 1 })));
  assert.deepEqual(page[0].thread, { count: 1, last_seq: 3 }, "the replay of the same reply");
  // A page read after the reply already counts it: its replay changes nothing.
  const loaded = [message(1, "bob", { thread: { count: 2, last_seq: 5 } })];
  assert.deepEqual(s.applyToMessages(loaded, newMessage("g", 4, message(4, "ada", { reply_to: 1 })), { append: "no" })[0].thread, { count: 2, last_seq: 5 });
});

test("a replayed message or older edit does not undo a newer page", () => {
  const page = [message(1, "bob", { text: "new", edited: true, edited_ts: 20, reactions: { "👍": ["ada"] } })];
  const again = s.applyToMessages(page, newMessage("g", 1, message(1, "bob", { text: "old" })));
  assert.equal(again[0].text, "new");
  assert.deepEqual(again[0].reactions, { "👍": ["ada"] });
  const older = s.applyToMessages(page, ev("g", 2, "chat.edited", { msg_seq: 1, text: "middle", mentions: null, edited_ts: 10 }));
  assert.equal(older[0].text, "new");
  const newer = s.applyToMessages(page, ev("g", 3, "chat.edited", { msg_seq: 1, text: "@ada newest", mentions: ["ada"], edited_ts: 30 }));
  assert.deepEqual([newer[0].text, newer[0].mentions, newer[0].edited_ts], ["@ada newest", ["ada"], 30]);
});

test("a recall keeps reactions and the thread, and no edit comes back over it", () => {
  let page = [message(1, "bob", { text: "x", reactions: { "🎉": ["ada"] }, thread: { count: 1, last_seq: 2 }, mentions: ["ada"] })];
  page = s.applyToMessages(page, ev("g", 5, "chat.recalled", { msg_seq: 1, by: "bob" }));
  assert.deepEqual(page[0], { seq: 1, ts: 1, sender: "bob", kind: "text", client_id: undefined, reply_to: undefined, recalled: true, recalled_by: "bob", thread: { count: 1, last_seq: 2 }, reactions: { "🎉": ["ada"] } });
  page = s.applyToMessages(page, ev("g", 4, "chat.edited", { msg_seq: 1, text: "y", mentions: null, edited_ts: 9 }));
  assert.equal(page[0].text, undefined);
});

test("a window away from the end takes only the message that continues it", () => {
  const window = [message(10), message(11)];
  assert.deepEqual(s.applyToMessages(window, newMessage("g", 50, message(40)), { append: "contiguous" }).map((m) => m.seq), [10, 11]);
  assert.deepEqual(s.applyToMessages(window, newMessage("g", 12, message(12)), { append: "contiguous" }).map((m) => m.seq), [10, 11, 12]);
  assert.deepEqual(s.pageWindow(window, 40), { hasOlder: true, live: false });
  assert.deepEqual(s.pageWindow([message(1), message(2)], 2), { hasOlder: false, live: true });
  assert.deepEqual(s.pageWindow([], 0), { hasOlder: false, live: true });
});

test("mentions: members named with @, not inside longer names or addresses", () => {
  const members = ["bob", "bobby", "ada.l", "李雷"];
  assert.deepEqual(s.mentionsIn("@bob, @bobby and @ada.l. mail bob@bob.example @bob", members), ["bob", "bobby", "ada.l"]);
  assert.deepEqual(s.mentionsIn("@李雷 你好", members), ["李雷"]);
  assert.equal(s.mentionsIn("@carol hi", members), null);
  assert.deepEqual(s.mentionParts("hi @bob!", ["bob"]), [{ text: "hi " }, { text: "@bob", user: "bob" }, { text: "!" }]);
  assert.deepEqual(s.mentionParts("hi @bob!", null), [{ text: "hi @bob!" }]);
  assert.deepEqual(s.mentionQuery("hello @bo", 9), { start: 6, query: "bo" });
  assert.deepEqual(s.mentionQuery("@", 1), { start: 0, query: "" });
  assert.equal(s.mentionQuery("mail a@bo", 9), null);
  assert.equal(s.mentionQuery("@bob done", 9), null);
});

test("read positions come from receipts, never move back, and leave with the conversation", () => {
  const c = s.emptyCursors();
  s.applyEvent(c, ev("g", 3, "chat.receipt", { fev: null, user: "bob", read_seq: 5 }));
  s.applyEvent(c, ev("g", 4, "chat.receipt", { fev: null, user: "carol", read_seq: 2 }));
  s.applyEvent(c, ev("g", 2, "chat.receipt", { fev: null, user: "bob", read_seq: 3 }));
  assert.deepEqual(c.reads, { g: { bob: 5, carol: 2 } });
  assert.deepEqual(s.readersOf(c.reads.g, 2, "ada", "ada"), ["bob", "carol"]);
  assert.deepEqual(s.readersOf(c.reads.g, 4, "ada", "ada"), ["bob"]);
  assert.deepEqual(s.readersOf(c.reads.g, 4, "bob", "ada"), [], "the sender is not a reader");
  s.applySyncReply(c, { heads: {}, feed: 0, gaps: [], removed: ["g"], epochs: {} });
  assert.deepEqual(c.reads, {});
});

// ---- the device ----

class FakeConnection extends EventTarget {
  constructor(answer) {
    super();
    this.answer = answer;
    this.identity = "me";
    this.device = "d1";
    this.state = "open";
    this.requests = [];
    this.hold = null;
  }
  on(type, handler) {
    const listener = (event) => handler(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }
  async request(type, fields = {}) {
    this.requests.push({ type, ...structuredClone(fields) });
    const reply = { type: "ok", ...this.answer(type, fields, this) };
    if (this.hold && this.hold.type === type) await this.hold.until;
    await Promise.resolve();
    return reply;
  }
  event(frame) {
    this.dispatchEvent(new CustomEvent("*", { detail: frame }));
  }
}

let LAST = 300;
const summary = { conv: "g-1", kind: "group", name: "g", role: "member", members: 3, ev: 400, last_seq: LAST, last_ts: LAST, read_seq: LAST, unread: 0 };

/** A conversation of LAST messages, paged as the node pages it (docs/protocol.md, chat.history). */
function history(fields) {
  const limit = fields.limit ?? 50;
  let from;
  if (fields.around) from = Math.max(1, fields.around - Math.floor(limit / 2));
  else if (fields.before) from = Math.max(1, fields.before - limit);
  else if (fields.after !== undefined) from = fields.after + 1;
  else from = Math.max(1, LAST - limit + 1);
  const to = fields.before ? Math.min(fields.before - 1, from + limit - 1) : Math.min(LAST, from + limit - 1);
  const messages = [];
  for (let seq = from; seq <= to; seq++) messages.push(message(seq, seq % 2 ? "bob" : "me"));
  return { conv: fields.conv, messages, last_seq: LAST };
}

function server(extra = {}) {
  return (type, fields, conn) => {
    if (extra[type]) return extra[type](fields, conn);
    switch (type) {
      case "chat.sync":
        return { heads: { "g-1": 400 }, feed: 1, gaps: [], removed: [], feed_gap: false, epochs: { "g-1": "e1" }, feed_epoch: "f1" };
      case "chat.list":
        return { conversations: [summary] };
      case "chat.history":
        return history(fields);
      case "chat.thread":
        return { conv: fields.conv, messages: [message(302, "bob", { reply_to: fields.root })], last_seq: LAST };
      case "chat.info":
        return { conv: summary, members: [{ user: "me", role: "owner" }, { user: "bob", role: "member" }] };
      default:
        return {};
    }
  };
}

async function started(extra) {
  const conn = new FakeConnection(server(extra));
  const chat = new ChatDevice(conn, { store: "memory" });
  await chat.start();
  return { conn, chat };
}

test("jumping to a message keeps a window around it; newer pages lead back to the live end", async () => {
  const { conn, chat } = await started();
  await chat.loadAround("g-1", 100);
  assert.deepEqual(conn.requests.at(-1), { type: "chat.history", conv: "g-1", limit: 50, around: 100 });
  const seqs = () => chat.messages("g-1").map((m) => m.seq);
  assert.deepEqual([seqs()[0], seqs().at(-1)], [75, 124]);
  assert.equal(chat.hasNewer("g-1"), true);
  assert.equal(chat.hasOlder("g-1"), true);
  // A live message far beyond the window does not join it (that would leave a hole).
  LAST = 301;
  conn.event(newMessage("g-1", 401, message(301)));
  assert.equal(seqs().at(-1), 124);
  let pages = 0;
  while (chat.hasNewer("g-1")) {
    await chat.loadNewer("g-1");
    assert.ok(++pages < 10, "loadNewer reaches the end");
  }
  assert.equal(seqs().at(-1), 301);
  LAST = 300;
  const all = seqs();
  assert.deepEqual(all, Array.from({ length: all.length }, (_, i) => 75 + i), "no holes, no repeats");
});

test("an edit that arrives while a page is on its way is applied to the page", async () => {
  const { conn, chat } = await started();
  let release;
  conn.hold = { type: "chat.history", until: new Promise((resolve) => (release = resolve)) };
  const opening = chat.openConversation("g-1");
  await Promise.resolve();
  conn.event(ev("g-1", 401, "chat.edited", { msg_seq: 290, text: "fixed", mentions: null, edited_ts: 999 }));
  conn.event(ev("g-1", 402, "chat.reaction", { msg_seq: 291, emoji: "👍", user: "bob", added: true, users: ["bob"] }));
  conn.event(ev("g-1", 403, "chat.recalled", { msg_seq: 292, by: "me" }));
  release();
  await opening;
  assert.equal(chat.message("g-1", 290).text, "fixed");
  assert.deepEqual(chat.message("g-1", 291).reactions, { "👍": ["bob"] });
  assert.equal(chat.message("g-1", 292).recalled, true);
});

test("a quoted root outside the window is fetched once and follows events", async () => {
  const { conn, chat } = await started();
  await chat.openConversation("g-1");
  const [a, b] = await Promise.all([chat.fetchMessage("g-1", 7), chat.fetchMessage("g-1", 7)]);
  assert.equal(a.seq, 7);
  assert.equal(b, a);
  assert.equal(conn.requests.filter((r) => r.type === "chat.history" && r.around === 7).length, 1);
  assert.deepEqual(conn.requests.at(-1), { type: "chat.history", conv: "g-1", around: 7, limit: 1 });
  conn.event(ev("g-1", 401, "chat.edited", { msg_seq: 7, text: "seven", mentions: null, edited_ts: 5 }));
  assert.equal(chat.message("g-1", 7).text, "seven");
  conn.event(newMessage("g-1", 402, message(301, "bob", { reply_to: 7 })));
  assert.deepEqual(chat.message("g-1", 7).thread, { count: 1, last_seq: 301 });
  assert.equal(chat.messages("g-1").some((m) => m.seq === 7), false, "the window keeps no hole");
});

test("an open thread keeps its replies live; the root counts them", async () => {
  const { conn, chat } = await started();
  await chat.openConversation("g-1");
  const threads = [];
  chat.on("thread", (detail) => threads.push(detail));
  const opened = await chat.openThread("g-1", 280);
  assert.equal(opened.root.seq, 280);
  assert.deepEqual(opened.replies.map((m) => m.seq), [302]);
  conn.event(newMessage("g-1", 401, message(301, "me", { reply_to: 280 })));
  conn.event(newMessage("g-1", 402, message(303, "bob")));
  assert.deepEqual(chat.thread("g-1", 280).replies.map((m) => m.seq), [301, 302]);
  assert.deepEqual(chat.message("g-1", 280).thread, { count: 1, last_seq: 301 });
  conn.event(ev("g-1", 403, "chat.reaction", { msg_seq: 302, emoji: "❤️", user: "me", added: true, users: ["me"] }));
  assert.deepEqual(chat.thread("g-1", 280).replies[1].reactions, { "❤️": ["me"] });
  assert.ok(threads.length >= 3);
  chat.closeThread("g-1", 280);
  assert.deepEqual(chat.thread("g-1", 280).replies, []);
});

test("replies and mentions go out with the message; edits, reactions and recalls as requests", async () => {
  const { conn, chat } = await started({ "chat.send": () => ({ conv: "g-1", seq: 301, ts: 1, duplicate: false }), "chat.edits": (f) => ({ conv: f.conv, seq: f.seq, versions: [message(f.seq)] }) });
  const members = (await chat.members("g-1")).map((m) => m.user);
  await chat.members("g-1");
  assert.equal(conn.requests.filter((r) => r.type === "chat.info").length, 1, "members are kept");
  await chat.send("g-1", "@bob look", { reply_to: 12, mentions: s.mentionsIn("@bob look", members) });
  await new Promise((resolve) => setTimeout(resolve, 5));
  const send = conn.requests.find((r) => r.type === "chat.send");
  assert.deepEqual([send.reply_to, send.mentions], [12, ["bob"]]);
  await chat.react("g-1", 12, "👍");
  await chat.react("g-1", 12, "👍", true);
  await chat.edit("g-1", 301, "@bob look again", ["bob"]);
  await chat.recall("g-1", 301);
  assert.deepEqual((await chat.edits("g-1", 301)).map((m) => m.seq), [301]);
  assert.deepEqual(
    conn.requests.filter((r) => ["chat.react", "chat.edit", "chat.recall"].includes(r.type)),
    [
      { type: "chat.react", conv: "g-1", seq: 12, emoji: "👍", remove: false },
      { type: "chat.react", conv: "g-1", seq: 12, emoji: "👍", remove: true },
      { type: "chat.edit", conv: "g-1", seq: 301, text: "@bob look again", mentions: ["bob"] },
      { type: "chat.recall", conv: "g-1", seq: 301 },
    ],
  );
  assert.equal(chat.canRecall({ sender: "me", ts: Date.now() - 1000, kind: "text" }), true);
  assert.equal(chat.canRecall({ sender: "me", ts: Date.now() - 121_000, kind: "text" }), false);
  assert.equal(chat.canRecall({ sender: "bob", ts: Date.now(), kind: "text" }), false);
  // A system message (someone added) makes the members be asked again.
  conn.event(newMessage("g-1", 401, { seq: 302, ts: 2, sender: "me", kind: "system", system: { event: "member_joined", by: "me", users: ["carol"] } }));
  await chat.members("g-1");
  assert.equal(conn.requests.filter((r) => r.type === "chat.info").length, 2);
});

test("who has read what survives a reload, and the sync replays only the receipts missed", async () => {
  const store = memoryStore();
  const conn = new FakeConnection(server());
  const chat = new ChatDevice(conn, { store });
  await chat.start();
  conn.event(ev("g-1", 401, "chat.receipt", { fev: null, user: "bob", read_seq: 290 }));
  await chat.flushed();
  chat.stop();
  const later = new FakeConnection(
    server({
      "chat.sync": (fields, c) => {
        assert.equal(fields.cursors["g-1"], 401);
        c.event(ev("g-1", 402, "chat.receipt", { fev: null, user: "carol", read_seq: 295 }));
        return { heads: { "g-1": 402 }, feed: 1, gaps: [], removed: [], feed_gap: false, epochs: { "g-1": "e1" }, feed_epoch: "f1" };
      },
    }),
  );
  const again = new ChatDevice(later, { store });
  await again.start();
  assert.deepEqual(Object.fromEntries(again.readBy("g-1")), { bob: 290, carol: 295 });
  assert.deepEqual(again.readersOf("g-1", message(292, "me")), ["carol"]);
});

test("a gap reads an open thread again: what it missed shows", async () => {
  let replies = [message(302, "bob", { reply_to: 280 })];
  const { conn, chat } = await started({ "chat.thread": (f) => ({ conv: f.conv, messages: replies, last_seq: LAST }) });
  await chat.openConversation("g-1");
  await chat.openThread("g-1", 280);
  // Events lost while the log was rebuilt: a second reply and an edit of the first.
  replies = [message(302, "bob", { reply_to: 280, text: "edited", edited: true, edited_ts: 9 }), message(304, "bob", { reply_to: 280 })];
  conn.event({ type: "chat.gap", conv: "g-1", ev: 500, epoch: "e2" });
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(chat.thread("g-1", 280).replies.map((m) => [m.seq, m.text]), [[302, "edited"], [304, "m304"]]);
});

test("a new device learns who has read what from the members' read positions", async () => {
  const members = [{ user: "me", role: "owner", read: 300 }, { user: "bob", role: "member", read: 120 }, { user: "carol", role: "member", read: 0 }];
  const { conn, chat } = await started({ "chat.info": () => ({ conv: summary, members }) });
  const seen = [];
  chat.on("receipt", (e) => seen.push(e));
  assert.deepEqual([...chat.readBy("g-1")], []);
  await chat.members("g-1");
  assert.deepEqual(Object.fromEntries(chat.readBy("g-1")), { me: 300, bob: 120 });
  assert.deepEqual(seen, [{ conv: "g-1" }]);
  // A receipt after it moves a position on; an older position never moves it back.
  conn.event(ev("g-1", 401, "chat.receipt", { user: "bob", read_seq: 200 }));
  assert.equal(chat.readBy("g-1").get("bob"), 200);
  chat._members.delete("g-1");
  await chat.members("g-1");
  assert.equal(chat.readBy("g-1").get("bob"), 200);
  assert.equal(seen.length, 2, "nothing new: no second receipt event from members()");
});
