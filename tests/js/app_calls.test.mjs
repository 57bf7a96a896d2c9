// The web app's calls module, the parts without a page: call durations as the chat shows
// them, and the room of a group's call.
import assert from "node:assert/strict";
import { test } from "node:test";

import { formatDuration, groupRoom } from "../../huddle/web/app/calls.js";

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
  assert.equal(room, "conv-g-7hQ2xKp9LmZ4vT1c");
  assert.match(room, /^[A-Za-z0-9._:-]{1,128}$/);
});
