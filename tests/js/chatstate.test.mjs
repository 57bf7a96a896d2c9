// The chat device's bookkeeping: cursors, epochs, stamps, gaps, outbox, summaries, pages.
// Mirrors huddle/chat.py (ChatClient) and docs/chat.md.
import assert from "node:assert/strict";
import { test } from "node:test";

import * as s from "../../huddle/web/sdk/chatstate.js";

const msg = (conv, ev, seq, extra = {}) => ({
  type: "chat.message",
  conv,
  ev,
  epoch: "e1",
  stamp: `st${ev}`,
  message: { seq, ts: 1000 + seq, sender: "bob", kind: "text", text: `m${seq}`, ...extra },
});

test("a first start sends no cursors", () => {
  assert.deepEqual(s.syncRequest(s.emptyCursors()), {});
});

test("events move the cursor with their epoch and stamp, never back within an epoch", () => {
  const c = s.emptyCursors();
  assert.deepEqual(s.applyEvent(c, msg("g-1", 3, 2)), { kind: "conv", conv: "g-1" });
  assert.equal(c.cursors["g-1"], 3);
  assert.equal(c.epochs["g-1"], "e1");
  assert.equal(c.stamps["g-1"], "st3");
  s.applyEvent(c, msg("g-1", 2, 1));
  assert.equal(c.cursors["g-1"], 3, "an older event leaves the cursor");
  assert.equal(c.stamps["g-1"], "st3");
  // Another epoch replaces the cursor even with a smaller number.
  s.applyEvent(c, { ...msg("g-1", 1, 1), epoch: "e2", stamp: "x" });
  assert.deepEqual([c.cursors["g-1"], c.epochs["g-1"], c.stamps["g-1"]], [1, "e2", "x"]);
  // An event without a stamp drops the kept one: it belongs to another event.
  s.applyEvent(c, { ...msg("g-1", 2, 2), epoch: "e2", stamp: undefined });
  assert.equal(c.stamps["g-1"], undefined);
});

test("feed events move the feed cursor; a receipt with fev is a feed event", () => {
  const c = s.emptyCursors();
  const joined = { type: "chat.joined", fev: 4, feed_epoch: "f1", stamp: "fs4", conv: "g-1", ev: 1, info: {} };
  assert.equal(s.applyEvent(c, joined).kind, "feed");
  assert.deepEqual([c.feed, c.feedEpoch, c.feedStamp], [4, "f1", "fs4"]);
  assert.equal(c.cursors["g-1"], undefined, "a join does not move the conversation's cursor");
  const receipt = { type: "chat.receipt", conv: "c-1", ev: null, fev: 5, feed_epoch: "f1", stamp: "fs5", user: "me", read_seq: 2 };
  assert.equal(s.applyEvent(c, receipt).kind, "feed");
  assert.equal(c.feed, 5);
  assert.equal(s.applyEvent(c, { type: "chat.user_typing", conv: "g-1", user: "bob", typing: true }).kind, "none");
});

test("the sync request carries cursors, epochs and stamps of those cursors only", () => {
  const c = s.emptyCursors();
  s.applyEvent(c, msg("g-1", 3, 2));
  s.applyEvent(c, { type: "chat.joined", fev: 4, feed_epoch: "f1", stamp: "fs4", conv: "g-1", ev: 1, info: {} });
  c.epochs["gone"] = "zz";
  assert.deepEqual(s.syncRequest(c), {
    cursors: { "g-1": 3 },
    epochs: { "g-1": "e1" },
    stamps: { "g-1": "st3" },
    feed: 4,
    feed_epoch: "f1",
    feed_stamp: "fs4",
  });
});

test("a sync reply: heads, gaps, removed and new conversations", () => {
  const c = s.emptyCursors();
  s.applyEvent(c, msg("g-1", 3, 2));
  s.applyEvent(c, msg("g-2", 7, 5));
  s.applyEvent(c, msg("g-3", 2, 2));
  s.applyEvent(c, msg("g-5", 2, 2));
  s.applyEvent(c, { type: "chat.joined", fev: 4, feed_epoch: "f1", stamp: "fs4", conv: "g-1", ev: 1, info: {} });
  const outcome = s.applySyncReply(c, {
    heads: { "g-1": 3, "g-2": 90, "g-4": 6, "g-5": 4 },
    feed: 4,
    gaps: ["g-2"],
    removed: ["g-3"],
    feed_gap: false,
    epochs: { "g-1": "e1", "g-2": "e9", "g-4": "e4", "g-5": "e1" },
    feed_epoch: "f1",
  });
  assert.deepEqual(outcome, { gaps: ["g-2"], fresh: [], removed: ["g-3"], reloadList: false });
  // Where the replay ended, the stamp stays; a gap jumps to the head without one.
  assert.deepEqual([c.cursors["g-1"], c.stamps["g-1"]], [3, "st3"]);
  assert.deepEqual([c.cursors["g-2"], c.epochs["g-2"], c.stamps["g-2"]], [90, "e9", undefined]);
  assert.equal(c.cursors["g-3"], undefined);
  // A head past the cursor came without its event: the stamp no longer matches it.
  assert.deepEqual([c.cursors["g-5"], c.epochs["g-5"], c.stamps["g-5"]], [4, "e1", undefined]);
  // A conversation whose join was replayed starts where the server says, without a stamp.
  assert.deepEqual([c.cursors["g-4"], c.epochs["g-4"], c.stamps["g-4"]], [6, "e4", undefined]);
  assert.equal(c.feedStamp, "fs4", "the feed did not move");
});

test("the first sync and a feed gap reload the list and every new conversation", () => {
  const c = s.emptyCursors();
  const first = s.applySyncReply(c, { heads: { "g-1": 5 }, feed: 9, gaps: [], removed: [], epochs: {}, feed_epoch: "f1" });
  assert.deepEqual(first, { gaps: [], fresh: ["g-1"], removed: [], reloadList: true });
  assert.deepEqual([c.feed, c.feedEpoch, c.cursors["g-1"]], [9, "f1", 5]);
  c.feedStamp = "fs9";
  const gap = s.applySyncReply(c, { heads: { "g-1": 5, "g-2": 1 }, feed: 3, gaps: [], removed: [], feed_gap: true, epochs: {}, feed_epoch: "f2" });
  assert.deepEqual(gap, { gaps: [], fresh: ["g-2"], removed: [], reloadList: true });
  assert.deepEqual([c.feed, c.feedEpoch, c.feedStamp], [3, "f2", null], "a feed gap may move the feed back");
});

test("chat.gap sets the cursor to its position, with its epoch and no stamp", () => {
  const c = s.emptyCursors();
  s.applyEvent(c, msg("g-1", 30, 20));
  assert.deepEqual(s.applyEvent(c, { type: "chat.gap", conv: "g-1", ev: 9, epoch: "e7", fev: null, feed_epoch: null, reason: "epoch_changed" }), { kind: "gap", conv: "g-1" });
  assert.deepEqual([c.cursors["g-1"], c.epochs["g-1"], c.stamps["g-1"]], [9, "e7", undefined]);
  c.feedStamp = "x";
  assert.deepEqual(s.applyEvent(c, { type: "chat.gap", conv: null, ev: null, epoch: null, fev: 2, feed_epoch: "f3", reason: "trimmed" }), { kind: "gap", conv: null });
  assert.deepEqual([c.feed, c.feedEpoch, c.feedStamp], [2, "f3", null]);
});

test("the outbox goes in the order the user sent, and keeps only what may pass", () => {
  const items = [
    { client_id: "c", conv: "g-1", text: "3", order: 3, created: 1 },
    { client_id: "a", conv: "g-1", text: "1", order: 1, created: 9 },
    { client_id: "b", conv: "g-2", text: "2", order: 2, created: 5 },
  ];
  assert.deepEqual(s.outboxOrder(items).map((i) => i.client_id), ["a", "b", "c"]);
  assert.equal(s.nextOrder(items), 4);
  assert.equal(s.nextOrder([]), 1);
  for (const code of ["rate_limited", "unavailable", "conflict", "timeout", "disconnected", "not_connected"]) {
    assert.equal(s.sendOutcome(code), "retry", code);
  }
  for (const code of ["not_member", "forbidden", "silenced", "blocked", "message_too_large", "content_filtered"]) {
    assert.equal(s.sendOutcome(code), "refused", code);
  }
});

test("a message is the echo of an outbox item only when it is ours with its client_id", () => {
  const items = [{ client_id: "a", conv: "g-1", text: "x", order: 1, created: 1 }, { client_id: "d", conv: null, to: "bob", text: "y", order: 2, created: 2 }];
  assert.equal(s.outboxMatch(items, "me", "g-1", { sender: "me", client_id: "a", seq: 1 }), items[0]);
  assert.equal(s.outboxMatch(items, "me", "g-1", { sender: "bob", client_id: "a", seq: 1 }), undefined);
  assert.equal(s.outboxMatch(items, "me", "g-2", { sender: "me", client_id: "a", seq: 1 }), undefined);
  assert.equal(s.outboxMatch(items, "me", "d-9", { sender: "me", client_id: "d", seq: 1 }), items[1], "a send with `to` learns its conversation from the echo");
});

test("summaries follow messages, own sends, receipts and mutes", () => {
  let sum = { conv: "g-1", last_seq: 4, last_ts: 4, read_seq: 4, unread: 0 };
  sum = s.applyToSummary(sum, msg("g-1", 9, 5), "me");
  assert.deepEqual([sum.last_seq, sum.unread, sum.last.text, sum.ev], [5, 1, "m5", 9]);
  sum = s.applyToSummary(sum, msg("g-1", 10, 6, { sender: "me" }), "me");
  assert.deepEqual([sum.read_seq, sum.unread], [6, 0], "an own send reads everything before it");
  sum = s.applyToSummary(sum, msg("g-1", 11, 7), "me");
  sum = s.applyToSummary(sum, { type: "chat.receipt", conv: "g-1", ev: 12, user: "bob", read_seq: 7 }, "me");
  assert.equal(sum.unread, 1, "another member's receipt is not ours");
  sum = s.applyToSummary(sum, { type: "chat.receipt", conv: "g-1", ev: 13, user: "me", read_seq: 7 }, "me");
  assert.equal(sum.unread, 0);
  sum = s.applyToSummary(sum, { type: "chat.muted", fev: 3, conv: "g-1", muted: true }, "me");
  assert.equal(sum.muted, true);
  const same = s.applyToSummary(sum, { type: "chat.user_typing", conv: "g-1" }, "me");
  assert.equal(same, sum);
  const renamed = s.applyToSummary(sum, msg("g-1", 14, 8, { kind: "system", system: { event: "renamed", name: "Trip" } }), "me");
  assert.equal(renamed.name, "Trip");
});

test("conversations sort by their last message, newest first", () => {
  const list = s.sortConversations([{ conv: "a", last_ts: 1 }, { conv: "b", last_ts: 3 }, { conv: "c" }]);
  assert.deepEqual(list.map((x) => x.conv), ["b", "a", "c"]);
});

test("pages merge by seq once each; edits, recalls and reactions apply", () => {
  let page = s.mergeMessages([], [{ seq: 3, text: "c" }, { seq: 1, text: "a" }]);
  page = s.mergeMessages(page, [{ seq: 2, text: "b" }, { seq: 3, text: "c2" }]);
  assert.deepEqual(page.map((m) => [m.seq, m.text]), [[1, "a"], [2, "b"], [3, "c2"]]);
  page = s.applyToMessages(page, msg("g-1", 9, 3));
  assert.equal(page.length, 3, "a message received again is kept once");
  page = s.applyToMessages(page, { type: "chat.edited", conv: "g-1", msg_seq: 1, text: "A", mentions: null, edited_ts: 5 });
  assert.deepEqual([page[0].text, page[0].edited], ["A", true]);
  page = s.applyToMessages(page, { type: "chat.reaction", conv: "g-1", msg_seq: 2, emoji: "🌸", users: ["bob"] });
  assert.deepEqual(page[1].reactions, { "🌸": ["bob"] });
  page = s.applyToMessages(page, { type: "chat.reaction", conv: "g-1", msg_seq: 2, emoji: "🌸", users: [] });
  assert.deepEqual(page[1].reactions, {});
  page = s.applyToMessages(page, { type: "chat.recalled", conv: "g-1", msg_seq: 1, by: "bob" });
  assert.deepEqual([page[0].recalled, page[0].text, page[0].recalled_by], [true, undefined, "bob"]);
});

test("system messages change the user's role and the member count, once each", () => {
  const sys = (ev, seq, system) => msg("g-1", ev, seq, { kind: "system", sender: system.by, system });
  let sum = { conv: "g-1", kind: "group", role: "member", members: 3, last_seq: 2, read_seq: 2 };
  sum = s.applyToSummary(sum, sys(5, 3, { event: "member_joined", by: "ann", users: ["dan", "eve"] }), "me");
  assert.equal(sum.members, 5);
  sum = s.applyToSummary(sum, sys(6, 4, { event: "role_changed", by: "ann", users: ["me"], role: "admin" }), "me");
  assert.equal(sum.role, "admin");
  sum = s.applyToSummary(sum, sys(7, 5, { event: "role_changed", by: "ann", users: ["dan"], role: "admin" }), "me");
  assert.equal(sum.role, "admin", "another's role is not mine");
  sum = s.applyToSummary(sum, sys(8, 6, { event: "member_removed", by: "me", users: ["eve"] }), "me");
  assert.equal(sum.members, 4);
  // The owner leaves and hands over to me.
  sum = s.applyToSummary(sum, sys(9, 7, { event: "member_left", by: "ann", users: ["me"], role: "owner" }), "me");
  assert.equal(sum.role, "owner");
  assert.equal(sum.members, 3);
  // A replayed message the summary already counted changes nothing.
  const again = s.applyToSummary(sum, sys(8, 6, { event: "member_removed", by: "me", users: ["eve"] }), "me");
  assert.equal(again.members, 3);
});

test("a rename replayed after a newer one does not bring the old name back", () => {
  const renamed = (ev, seq, name) => msg("g-1", ev, seq, { sender: "bob", kind: "system", text: undefined, system: { event: "renamed", by: "bob", name } });
  let sum = { conv: "g-1", name: "Trip", last_seq: 4, last_ts: 4, read_seq: 4, unread: 0 };
  sum = s.applyToSummary(sum, renamed(9, 5, "Kyoto"), "me");
  sum = s.applyToSummary(sum, renamed(10, 6, "京都"), "me");
  assert.equal(sum.name, "京都");
  sum = s.applyToSummary(sum, renamed(9, 5, "Kyoto"), "me");
  assert.equal(sum.name, "京都");
});
