// Search results (sdk/search.js) and the rules of roles (sdk/roles.js): a snippet cut into
// highlighted parts by code-point ranges (CJK and emoji included), pages of hits merged
// without repeats, hits grouped by conversation, and what each role may do.
import assert from "node:assert/strict";
import { test } from "node:test";

import { allowed, mayChangeRole, mayRemove } from "../../huddle/web/sdk/roles.js";
import { groupHits, mergeHits, nextPageBefore, snippetParts } from "../../huddle/web/sdk/search.js";

const marked = (parts) => parts.filter((p) => p.match).map((p) => p.text);
const whole = (parts) => parts.map((p) => p.text).join("");

test("a snippet is cut at its ranges into plain and matched parts", () => {
  const parts = snippetParts("The ryokan from last year", [[4, 10]]);
  assert.deepEqual(parts, [
    { text: "The ", match: false },
    { text: "ryokan", match: true },
    { text: " from last year", match: false },
  ]);
});

test("ranges count code points: CJK and an emoji before a match do not shift it", () => {
  // "👋" is two UTF-16 units but one code point; the server counts code points.
  const snippet = "👋 去京都駅から、京都タワー";
  const parts = snippetParts(snippet, [[3, 5], [9, 11]]);
  assert.deepEqual(marked(parts), ["京都", "京都"]);
  assert.equal(whole(parts), snippet);
});

test("a match at either edge, adjacent matches, and no ranges", () => {
  assert.deepEqual(snippetParts("京都", [[0, 2]]), [{ text: "京都", match: true }]);
  assert.deepEqual(marked(snippetParts("ab cd", [[0, 2], [3, 5]])), ["ab", "cd"]);
  assert.deepEqual(snippetParts("plain", []), [{ text: "plain", match: false }]);
  assert.deepEqual(snippetParts("plain", null), [{ text: "plain", match: false }]);
  assert.deepEqual(snippetParts("", [[0, 3]]), []);
});

test("bad ranges are clipped or skipped, and the snippet is always whole", () => {
  const snippet = "…near Kiyomizu-dera for April…";
  const cases = [
    [[20, 25], [0, 2]], // out of order
    [[1, 6], [3, 9]], // overlapping
    [[8, 3]], // backwards
    [[25, 500]], // past the end
    [[-4, 2]], // before the start
    [["a", 2], [1], null], // not ranges at all
  ];
  for (const ranges of cases) {
    const parts = snippetParts(snippet, ranges);
    assert.equal(whole(parts), snippet, JSON.stringify(ranges));
    assert.ok(parts.every((p) => p.text.length > 0), JSON.stringify(ranges));
  }
  assert.deepEqual(marked(snippetParts("abcdefghij", [[1, 6], [3, 9]])), ["bcdef", "ghi"]);
  assert.deepEqual(marked(snippetParts("abcdef", [[4, 500]])), ["ef"]);
});

const hit = (conv, seq, ts) => ({ conv, message: { seq, ts, sender: "bob", kind: "text", text: "x" }, snippet: "x", ranges: [] });

test("pages of hits merge without repeats, and the next page starts one past the oldest", () => {
  const first = [hit("g-1", 9, 900), hit("g-2", 4, 800), hit("g-1", 7, 700)];
  assert.equal(nextPageBefore(first), 701);
  assert.equal(nextPageBefore([]), null);
  // The next page repeats the hit at ts 700 (before_ts is exclusive, so 701 asks again).
  const second = [hit("g-1", 7, 700), hit("g-3", 2, 700), hit("g-2", 1, 600)];
  const { hits, added } = mergeHits(first, second);
  assert.equal(added, 2);
  assert.deepEqual(
    hits.map((h) => [h.conv, h.message.seq]),
    [["g-1", 9], ["g-2", 4], ["g-1", 7], ["g-3", 2], ["g-2", 1]],
  );
  assert.equal(mergeHits(first, first).added, 0);
});

test("hits are grouped by conversation in the order of each one's newest hit", () => {
  const groups = groupHits([hit("g-1", 9, 900), hit("g-2", 4, 800), hit("g-1", 7, 700), hit("c-9", 1, 100)]);
  assert.deepEqual(
    groups.map((g) => [g.conv, g.hits.map((h) => h.message.seq)]),
    [["g-1", [9, 7]], ["g-2", [4]], ["c-9", [1]]],
  );
  assert.deepEqual(groupHits([]), []);
});

test("what each role may do, as docs/protocol.md's table says", () => {
  assert.deepEqual(allowed("group", "owner"), { send: true, rename: true, add: true, leave: true, unfollow: false, manage: true });
  assert.deepEqual(allowed("group", "member"), { send: true, rename: false, add: false, leave: true, unfollow: false, manage: false });
  // Channels take no added members: users follow them; followers only read, and unfollow.
  assert.deepEqual(allowed("channel", "admin"), { send: true, rename: true, add: false, leave: true, unfollow: false, manage: true });
  assert.deepEqual(allowed("channel", "follower"), { send: false, rename: false, add: false, leave: false, unfollow: true, manage: false });
  // Direct conversations have no admins: nothing to manage, nobody leaves.
  assert.deepEqual(allowed("direct", "member"), { send: true, rename: false, add: false, leave: false, unfollow: false, manage: false });
  assert.equal(allowed("group", undefined).send, false);
});

test("who may remove whom and change roles", () => {
  assert.equal(mayRemove("group", "owner", "admin"), true);
  assert.equal(mayRemove("group", "admin", "member"), true);
  assert.equal(mayRemove("channel", "admin", "follower"), true);
  assert.equal(mayRemove("group", "admin", "admin"), false, "only the owner removes admins");
  assert.equal(mayRemove("group", "owner", "owner"), false, "nobody removes the owner");
  assert.equal(mayRemove("group", "admin", "admin", true), false, "an admin leaves, not removes itself");
  assert.equal(mayRemove("group", "member", "member"), false);
  assert.equal(mayRemove("direct", "member", "member"), false);
  assert.equal(mayChangeRole("group", "owner", "member"), true);
  assert.equal(mayChangeRole("channel", "owner", "follower"), true);
  assert.equal(mayChangeRole("group", "owner", "owner"), false);
  assert.equal(mayChangeRole("group", "admin", "member"), false, "only the owner gives roles");
});
