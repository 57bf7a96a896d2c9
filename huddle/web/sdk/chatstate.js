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
 */

/** @returns {Cursors} */
export function emptyCursors() {
  return { cursors: {}, epochs: {}, stamps: {}, feed: null, feedEpoch: null, feedStamp: null };
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

// ---- outbox ----

/**
 * @typedef {object} OutboxItem
 * @property {string} client_id
 * @property {string | null} conv
 * @property {string | null} [to]
 * @property {string} text the text, or the caption of a file ("" for none)
 * @property {"text" | "image" | "file" | "voice"} [kind] text when left out
 * @property {string} [media] the id of the file the message carries (files.js)
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
    }
    // Your own sends move your read position, without a receipt.
    if (m.sender === me) s.read_seq = Math.max(s.read_seq ?? 0, m.seq);
    if (m.kind === "system" && m.system?.event === "renamed" && m.system.name) s.name = m.system.name;
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
  return [...list].sort((a, b) => (b.last_ts ?? 0) - (a.last_ts ?? 0) || String(a.conv).localeCompare(String(b.conv)));
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
 * A message list updated by an edit, recall or reaction event.
 * @param {Record<string, any>[]} kept
 * @param {Record<string, any>} event
 */
export function applyToMessages(kept, event) {
  if (event.type === "chat.message") return mergeMessages(kept, [event.message]);
  return kept.map((m) => {
    if (m.seq !== event.msg_seq) return m;
    if (event.type === "chat.edited") {
      return { ...m, text: event.text, mentions: event.mentions, edited: true, edited_ts: event.edited_ts };
    }
    if (event.type === "chat.recalled") return recallStub(m, event.by);
    if (event.type === "chat.reaction") {
      const reactions = { ...(m.reactions || {}) };
      if (event.users.length) reactions[event.emoji] = event.users;
      else delete reactions[event.emoji];
      return { ...m, reactions };
    }
    return m;
  });
}

/**
 * @param {Record<string, any>} m
 * @param {string} by
 */
function recallStub(m, by) {
  const { seq, ts, sender, kind, client_id, reply_to } = m;
  return { seq, ts, sender, kind, client_id, reply_to, recalled: true, recalled_by: by };
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
