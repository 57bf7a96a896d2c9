// The chat device's bookkeeping as pure functions (no I/O, no browser): cursors with their
// epochs and stamps, the outbox's order and retry rules, conversation summaries and message
// pages. chat.js does the I/O around them; tests/js tests them under Node.
//
// The rules are those of docs/chat.md and of the Python reference, huddle/chat.py
// (ChatClient): a cursor of another epoch replaces the kept one, a cursor never moves back
// within an epoch, and a position that came without its event (a sync head, a gap) has no
// stamp.

/**
 * @typedef {object} Cursors
 * @property {Record<string, number>} cursors conversation → highest `ev` received
 * @property {Record<string, string>} epochs conversation → the epoch of its cursor
 * @property {Record<string, string>} stamps conversation → the stamp of the event at its cursor
 * @property {number | null} feed highest `fev` of the user's feed (null: never synced)
 * @property {string | null} feedEpoch
 * @property {string | null} feedStamp
 * @property {Record<string, Record<string, number>>} [reads] conversation → member → how far
 *   they have read, from the receipts up to the cursor (kept with the cursors, so that a sync
 *   replays exactly the receipts the device is missing)
 */

/** @returns {Cursors} */
export function emptyCursors() {
  return { cursors: {}, epochs: {}, stamps: {}, feed: null, feedEpoch: null, feedStamp: null, reads: {} };
}

/**
 * The fields of the `chat.sync` request for these cursors (none on a first start).
 * @param {Cursors} c
 * @returns {Record<string, any>}
 */
export function syncRequest(c) {
  /** @type {Record<string, any>} */
  const fields = {};
  const convs = Object.keys(c.cursors);
  if (convs.length) {
    fields.cursors = { ...c.cursors };
    fields.epochs = pick(c.epochs, convs);
    fields.stamps = pick(c.stamps, convs);
  }
  if (c.feed !== null) {
    fields.feed = c.feed;
    if (c.feedEpoch) fields.feed_epoch = c.feedEpoch;
    if (c.feedStamp) fields.feed_stamp = c.feedStamp;
  }
  return fields;
}

/**
 * Move the cursors for one received chat event. Returns what it was: `conv` (a conversation
 * event), `feed` (a feed event), `gap` (a `chat.gap`: reload `conv`, or the list when `conv`
 * is null) or `none` (ephemeral, such as typing).
 * @param {Cursors} c mutated
 * @param {Record<string, any>} event
 * @returns {{kind: "conv" | "feed" | "gap" | "none", conv: string | null}}
 */
export function applyEvent(c, event) {
  if (event.type === "chat.gap") {
    if (event.conv == null) {
      c.feed = event.fev ?? 0;
      c.feedEpoch = event.feed_epoch ?? null;
      c.feedStamp = null;
    } else {
      c.cursors[event.conv] = event.ev ?? 0;
      delete c.epochs[event.conv];
      delete c.stamps[event.conv];
      if (event.epoch) c.epochs[event.conv] = event.epoch;
    }
    return { kind: "gap", conv: event.conv ?? null };
  }
  if (event.type === "chat.receipt" && event.conv && event.user) noteRead(c, event.conv, event.user, event.read_seq);
  const stamp = event.stamp || null;
  if (Number.isInteger(event.fev)) {
    if (event.feed_epoch && event.feed_epoch !== c.feedEpoch) {
      c.feed = event.fev;
      c.feedEpoch = event.feed_epoch;
    } else if (event.fev >= (c.feed ?? 0)) {
      c.feed = event.fev;
    } else {
      return { kind: "feed", conv: event.conv ?? null };
    }
    c.feedStamp = stamp;
    return { kind: "feed", conv: event.conv ?? null };
  }
  if (Number.isInteger(event.ev) && event.conv) {
    const conv = event.conv;
    if (event.epoch && event.epoch !== c.epochs[conv]) {
      c.cursors[conv] = event.ev;
      c.epochs[conv] = event.epoch;
    } else if (event.ev >= (c.cursors[conv] ?? 0)) {
      c.cursors[conv] = event.ev;
    } else {
      return { kind: "conv", conv };
    }
    if (stamp) c.stamps[conv] = stamp;
    else delete c.stamps[conv];
    return { kind: "conv", conv };
  }
  return { kind: "none", conv: event.conv ?? null };
}

/**
 * Apply a `chat.sync` reply. Returns what to reload: `gaps` (reload by page), `fresh`
 * (conversations new to the device that nothing was replayed of), `removed`, and
 * `reloadList` (the conversation list must come from `chat.list`).
 * @param {Cursors} c mutated
 * @param {Record<string, any>} reply
 * @returns {{gaps: string[], fresh: string[], removed: string[], reloadList: boolean}}
 */
export function applySyncReply(c, reply) {
  const hadFeed = c.feed !== null;
  const known = new Set(Object.keys(c.cursors));
  const gaps = new Set(reply.gaps || []);
  const epochs = reply.epochs || {};
  /** @type {string[]} */
  const fresh = [];
  for (const [conv, head] of Object.entries(reply.heads || {})) {
    const epoch = epochs[conv];
    if (!known.has(conv) && (!hadFeed || reply.feed_gap)) fresh.push(conv);
    if (gaps.has(conv) || (epoch && epoch !== c.epochs[conv])) {
      c.cursors[conv] = head;
      delete c.epochs[conv];
      delete c.stamps[conv];
    } else if (head !== c.cursors[conv]) {
      c.cursors[conv] = Math.max(c.cursors[conv] ?? 0, head);
      delete c.stamps[conv];
    }
    if (epoch) c.epochs[conv] = epoch;
  }
  const removed = reply.removed || [];
  for (const conv of removed) {
    if (c.reads) delete c.reads[conv];
    delete c.cursors[conv];
    delete c.epochs[conv];
    delete c.stamps[conv];
  }
  if (reply.feed_gap) {
    c.feed = reply.feed;
    c.feedEpoch = reply.feed_epoch ?? null;
    c.feedStamp = null;
  } else {
    if (reply.feed !== c.feed) c.feedStamp = null;
    c.feed = Math.max(c.feed ?? 0, reply.feed);
    c.feedEpoch = reply.feed_epoch || c.feedEpoch;
  }
  return {
    gaps: [...gaps],
    fresh,
    removed,
    reloadList: !hadFeed || Boolean(reply.feed_gap),
  };
}

/**
 * Record that `user` has read `conv` up to `seq` (read positions never move back).
 * @param {Cursors} c mutated
 * @param {string} conv
 * @param {string} user
 * @param {number} seq
 */
export function noteRead(c, conv, user, seq) {
  if (!Number.isInteger(seq)) return;
  c.reads ??= {};
  const reads = (c.reads[conv] ??= {});
  reads[user] = Math.max(reads[user] ?? 0, seq);
}

/**
 * Who has read message `seq` of a conversation: its members whose read position reached it,
 * except `sender` (who wrote it) and `me`.
 * @param {Record<string, number> | Map<string, number> | undefined} reads member → read_seq
 * @param {number} seq
 * @param {string} sender
 * @param {string} me
 * @returns {string[]}
 */
export function readersOf(reads, seq, sender, me) {
  const entries = reads instanceof Map ? [...reads.entries()] : Object.entries(reads ?? {});
  return entries
    .filter(([user, read]) => read >= seq && user !== sender && user !== me)
    .map(([user]) => user)
    .sort();
}

// ---- outbox ----

/**
 * @typedef {object} OutboxItem
 * @property {string} client_id
 * @property {string | null} conv
 * @property {string | null} [to]
 * @property {string} text the text, or the caption of a file ("" for none)
 * @property {"text" | "image" | "file" | "voice"} [kind] text when left out
 * @property {string} [media] the id of the file the message carries (files.js)
 * @property {number | null} [reply_to] the seq of the message it answers (its thread)
 * @property {string[] | null} [mentions] the identities its text mentions
 * @property {number} order the order the user sent them in
 * @property {number} created ms since the epoch
 * @property {string | null} [error] the last retryable error
 */

// Errors after which the same send may succeed later (docs/chat.md, Sending), plus this
// side's own: no reply, or no connection.
export const RETRYABLE_SEND_ERRORS = new Set([
  "rate_limited",
  "unavailable",
  "conflict",
  "timeout",
  "disconnected",
  "not_connected",
  "closed",
]);

/**
 * @param {string} code
 * @returns {"retry" | "refused"}
 */
export function sendOutcome(code) {
  return RETRYABLE_SEND_ERRORS.has(code) ? "retry" : "refused";
}

/**
 * The outbox in the order to send it: the order the user pressed send.
 * @param {OutboxItem[]} items
 * @returns {OutboxItem[]}
 */
export function outboxOrder(items) {
  return [...items].sort((a, b) => a.order - b.order || a.created - b.created);
}

/**
 * The next `order` for a new item.
 * @param {OutboxItem[]} items
 */
export function nextOrder(items) {
  return items.reduce((max, item) => Math.max(max, item.order), 0) + 1;
}

/**
 * Is this message the echo of an outbox item (so the item is done)?
 * @param {OutboxItem[]} items
 * @param {string} me
 * @param {string} conv
 * @param {Record<string, any>} message
 * @returns {OutboxItem | undefined}
 */
export function outboxMatch(items, me, conv, message) {
  if (message.sender !== me || !message.client_id) return undefined;
  return items.find((item) => item.client_id === message.client_id && (item.conv === conv || item.conv === null));
}

// ---- conversation summaries ----

/**
 * A summary updated by one conversation event (returns a new object, or the same when
 * nothing changed). `me` is the device's identity.
 * @param {Record<string, any>} summary
 * @param {Record<string, any>} event
 * @param {string} me
 * @returns {Record<string, any>}
 */
export function applyToSummary(summary, event, me) {
  const s = { ...summary };
  if (Number.isInteger(event.ev)) s.ev = Math.max(s.ev ?? 0, event.ev);
  if (event.type === "chat.message") {
    const m = event.message;
    if (m.seq > (s.last_seq ?? 0)) {
      s.last_seq = m.seq;
      s.last_ts = m.ts;
      s.last = m;
      // Only a message the summary has not counted yet changes roles and counts.
      if (m.kind === "system") applySystem(s, m.system ?? {}, me);
      // A rename replayed after a newer one (a sync's replay) does not bring the old name back.
      if (m.kind === "system" && m.system?.event === "renamed" && m.system.name) s.name = m.system.name;
    }
    // Your own sends move your read position, without a receipt.
    if (m.sender === me) s.read_seq = Math.max(s.read_seq ?? 0, m.seq);
  } else if (event.type === "chat.receipt" && event.user === me) {
    s.read_seq = Math.max(s.read_seq ?? 0, event.read_seq);
  } else if (event.type === "chat.muted") {
    s.muted = event.muted;
  } else if (event.type === "chat.recalled" && s.last && s.last.seq === event.msg_seq) {
    s.last = recallStub(s.last, event.by);
  } else if (event.type === "chat.edited" && s.last && s.last.seq === event.msg_seq) {
    s.last = { ...s.last, text: event.text, mentions: event.mentions, edited: true, edited_ts: event.edited_ts };
  } else {
    return summary;
  }
  s.unread = Math.max(0, (s.last_seq ?? 0) - (s.read_seq ?? 0));
  return s;
}

/**
 * What a system message changes in the summary besides its last message: the user's own role
 * (`role_changed`, an owner who left and handed over) and the member count.
 * @param {Record<string, any>} s the summary, changed in place
 * @param {Record<string, any>} system
 * @param {string} me
 */
function applySystem(s, system, me) {
  const users = Array.isArray(system.users) ? system.users : [];
  const handedTo = system.event === "member_left" || system.event === "role_changed";
  if (handedTo && system.role && users.includes(me)) s.role = system.role;
  if (typeof s.members !== "number") return;
  if (system.event === "member_joined") s.members += users.length;
  else if (system.event === "member_removed") s.members = Math.max(0, s.members - users.length);
  else if (system.event === "member_left") s.members = Math.max(0, s.members - 1);
}

/**
 * Conversations, the most recently active first (as `chat.list` orders them).
 * @param {Record<string, any>[]} list
 */
export function sortConversations(list) {
  // Ties as the node breaks them: by conv, descending, comparing code points.
  const byConv = (/** @type {string} */ a, /** @type {string} */ b) => (a < b ? 1 : a > b ? -1 : 0);
  return [...list].sort((a, b) => (b.last_ts ?? 0) - (a.last_ts ?? 0) || byConv(String(a.conv), String(b.conv)));
}

// ---- messages ----

/**
 * Merge messages into a list kept in `seq` order with one entry per `seq`; a message that
 * comes again replaces the kept one (a history page is newer than an event's copy).
 * @param {Record<string, any>[]} kept
 * @param {Record<string, any>[]} incoming
 * @returns {Record<string, any>[]}
 */
export function mergeMessages(kept, incoming) {
  const bySeq = new Map(kept.map((m) => [m.seq, m]));
  for (const m of incoming) bySeq.set(m.seq, m);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

/**
 * A message list updated by one conversation event: a new message, an edit, a recall or a
 * reaction. `append` says where a new message may go: anywhere (`yes`, the default: the list
 * reaches the conversation's end), only right after the last kept one (`contiguous`: a
 * window away from the end, which must stay without holes), or nowhere (`no`: single
 * messages, a thread's replies).
 *
 * Events may come again (a sync replays what came after the cursor, which may be older than
 * a page loaded since), so each rule leaves a newer state alone: a message already kept is
 * not replaced by an event's copy (a page's copy is at least as new, and carries `thread`
 * and `reactions`, which events leave out); an edit older than the kept one is ignored; a
 * reply counts in its root's `thread` only when it is newer than the thread's `last_seq`.
 * @param {Record<string, any>[]} kept
 * @param {Record<string, any>} event
 * @param {{append?: "yes" | "contiguous" | "no"}} [options]
 * @returns {Record<string, any>[]}
 */
export function applyToMessages(kept, event, options = {}) {
  if (event.type === "chat.message") {
    const m = event.message;
    let list = kept;
    if (m.reply_to) list = list.map((root) => (root.seq === m.reply_to ? countReply(root, m.seq) : root));
    if (list.some((k) => k.seq === m.seq)) return list;
    const append = options.append ?? "yes";
    if (append === "no") return list;
    if (append === "contiguous" && list.length && m.seq !== list[list.length - 1].seq + 1) return list;
    return mergeMessages(list, [m]);
  }
  return kept.map((m) => (m.seq === event.msg_seq ? applyToMessage(m, event) : m));
}

/**
 * One message updated by an edit, recall or reaction event about it.
 * @param {Record<string, any>} m
 * @param {Record<string, any>} event
 * @returns {Record<string, any>}
 */
export function applyToMessage(m, event) {
  if (event.type === "chat.edited") {
    if (m.recalled || (m.edited_ts ?? 0) > (event.edited_ts ?? 0)) return m;
    const next = { ...m, text: event.text, edited: true, edited_ts: event.edited_ts };
    if (event.mentions?.length) next.mentions = event.mentions;
    else delete next.mentions;
    return next;
  }
  if (event.type === "chat.recalled") return m.recalled ? m : recallStub(m, event.by);
  if (event.type === "chat.reaction") {
    const reactions = { ...(m.reactions || {}) };
    if (event.users.length) reactions[event.emoji] = event.users;
    else delete reactions[event.emoji];
    return { ...m, reactions };
  }
  return m;
}

/**
 * @param {Record<string, any>} root
 * @param {number} seq a reply's seq
 */
function countReply(root, seq) {
  const thread = root.thread ?? { count: 0, last_seq: 0 };
  if (seq <= thread.last_seq) return root;
  return { ...root, thread: { count: thread.count + 1, last_seq: seq } };
}

/**
 * What the kept window of a conversation allows: whether older messages exist, and whether
 * it reaches the conversation's end (`live`: new messages join it). Messages are numbered
 * from 1 with no holes, so the kept seqs alone tell.
 * @param {Record<string, any>[]} kept by seq
 * @param {number} lastSeq the conversation's last message, as far as the device knows
 * @returns {{hasOlder: boolean, live: boolean}}
 */
export function pageWindow(kept, lastSeq) {
  if (!kept.length) return { hasOlder: lastSeq > 0, live: true };
  return { hasOlder: kept[0].seq > 1, live: kept[kept.length - 1].seq >= lastSeq };
}

/**
 * @param {Record<string, any>} m
 * @param {string} by
 */
function recallStub(m, by) {
  // A recall keeps the message's reactions and thread (docs/protocol.md, chat.recall).
  const { seq, ts, sender, kind, client_id, reply_to, thread, reactions } = m;
  /** @type {Record<string, any>} */
  const stub = { seq, ts, sender, kind, client_id, reply_to, recalled: true, recalled_by: by };
  if (thread) stub.thread = thread;
  if (reactions) stub.reactions = reactions;
  return stub;
}

// ---- mentions ----

// A character that may continue an identity's name, so "@bob" does not match in "@bobby".
const NAME_CHAR = /[A-Za-z0-9_]/;

/**
 * Where `@user` of one of `users` stands in `text`: each at the start or after a character
 * that is not part of a name, and not followed by one (so "@bob," and "@bob." mention bob).
 * The longest user wins where several match.
 * @param {string} text
 * @param {Iterable<string>} users
 * @returns {{start: number, end: number, user: string}[]}
 */
export function findMentions(text, users) {
  const names = [...new Set(users)].filter(Boolean).sort((a, b) => b.length - a.length);
  /** @type {{start: number, end: number, user: string}[]} */
  const found = [];
  if (!names.length || !text) return found;
  for (let i = text.indexOf("@"); i >= 0; i = text.indexOf("@", i + 1)) {
    if (i > 0 && /[A-Za-z0-9._@:+-]/.test(text[i - 1])) continue;
    const user = names.find((name) => text.startsWith(name, i + 1) && !NAME_CHAR.test(text[i + 1 + name.length] ?? ""));
    if (!user) continue;
    found.push({ start: i, end: i + 1 + user.length, user });
    i += user.length;
  }
  return found;
}

/**
 * The identities among `members` that `text` mentions, once each, in order (the `mentions`
 * of `chat.send` and `chat.edit`); null for none.
 * @param {string} text
 * @param {Iterable<string>} members
 * @returns {string[] | null}
 */
export function mentionsIn(text, members) {
  const users = [...new Set(findMentions(text, members).map((f) => f.user))];
  return users.length ? users : null;
}

/**
 * A text cut into plain parts and the mentions of `mentions` in it, to draw.
 * @param {string} text
 * @param {string[] | null | undefined} mentions
 * @returns {{text: string, user?: string}[]}
 */
export function mentionParts(text, mentions) {
  /** @type {{text: string, user?: string}[]} */
  const parts = [];
  let at = 0;
  for (const f of findMentions(text ?? "", mentions ?? [])) {
    if (f.start > at) parts.push({ text: text.slice(at, f.start) });
    parts.push({ text: text.slice(f.start, f.end), user: f.user });
    at = f.end;
  }
  if (at < (text ?? "").length) parts.push({ text: text.slice(at) });
  return parts;
}

/**
 * The `@` word being typed just before the caret, to offer members for: its start and what
 * follows the `@` so far, or null when the caret is not in one.
 * @param {string} text
 * @param {number} caret
 * @returns {{start: number, query: string} | null}
 */
export function mentionQuery(text, caret) {
  const before = text.slice(0, caret);
  const match = /(^|[^A-Za-z0-9._@:+-])@([A-Za-z0-9._:+-]*)$/.exec(before);
  if (!match) return null;
  return { start: caret - match[2].length - 1, query: match[2] };
}

/**
 * @param {Record<string, string>} map
 * @param {string[]} keys
 */
function pick(map, keys) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const key of keys) if (map[key]) out[key] = map[key];
  return out;
}
