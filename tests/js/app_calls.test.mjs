// The web app's calls module, the parts without a page: call durations as the chat shows
// them, and the room of a group's call.
import assert from "node:assert/strict";
import { test } from "node:test";

import { GROUP_NOTICE_FRESH_MS, callEnded, formatDuration, groupCallNews, groupRoom, isGroupCall } from "../../huddle/web/app/calls.js";

test("call durations read as m:ss, or h:mm:ss from an hour on", () => {
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(59.6), "1:00");
  assert.equal(formatDuration(754), "12:34");
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(undefined), "0:00");
  assert.equal(formatDuration(-3), "0:00");
});

test("a group's call room is a valid room name made from the group's id", () => {
  const room = groupRoom("g-7hQ2xKp9LmZ4vT1c");
  assert.equal(room, "conv:g-7hQ2xKp9LmZ4vT1c"); // docs/protocol.md, call.join
  assert.match(room, /^[A-Za-z0-9._:-]{1,128}$/);
});

const groupStarted = (ts, by = "alice") => ({
  type: "chat.message",
  conv: "g-1",
  message: { seq: 9, ts, sender: by, kind: "system", system: { event: "call_started", by, users: [by], call: "c1", media: "video" } },
});

test("a group's call records are told from a 1:1 call's", () => {
  assert.equal(isGroupCall({ event: "call_started", by: "alice", users: ["alice"] }), true);
  assert.equal(isGroupCall({ event: "call_ended", by: "alice", users: ["alice", "bob", "carol"], duration_s: 60 }), true);
  assert.equal(isGroupCall({ event: "call_started", by: "bob", users: ["alice", "bob"] }), false);
  assert.equal(isGroupCall({ event: "call_ended", by: "bob", users: ["alice", "bob"], reason: "hangup" }), false);
  assert.equal(isGroupCall({ event: "call_missed", by: "alice", users: ["alice", "bob"], reason: "no_answer" }), false);
});

test("a group's call started by someone else just now is news; an old one, our own or a 1:1 is not", () => {
  const now = 1_000_000;
  const context = { me: "bob", nowMs: now, kind: "group" };
  assert.deepEqual(groupCallNews(groupStarted(now - 500), context), { started: { conv: "g-1", call: "c1", by: "alice" } });
  assert.equal(groupCallNews(groupStarted(now - GROUP_NOTICE_FRESH_MS - 1), context), null, "replayed history");
  assert.equal(groupCallNews(groupStarted(now, "bob"), context), null, "we opened it");
  assert.equal(groupCallNews(groupStarted(now), { ...context, kind: "direct" }), null);
  assert.equal(groupCallNews({ type: "chat.message", conv: "g-1", message: { kind: "text", ts: now, text: "hi" } }, context), null);
  const ended = { type: "chat.message", conv: "g-1", message: { ts: now, kind: "system", system: { event: "call_ended", by: "alice", users: ["alice"], call: "c1", duration_s: 5 } } };
  assert.deepEqual(groupCallNews(ended, context), { ended: "c1" });
});

test("a call counts as ended once its call_ended is among the messages", () => {
  const started = groupStarted(1).message;
  const ended = { kind: "system", system: { event: "call_ended", call: "c1" } };
  assert.equal(callEnded([started], "c1"), false);
  assert.equal(callEnded([started, ended], "c1"), true);
  assert.equal(callEnded([started, ended], "c2"), false);
});
