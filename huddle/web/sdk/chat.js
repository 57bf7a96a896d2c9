// A chat device (docs/chat.md), the browser twin of huddle/chat.py's ChatClient.
//
// After every `hello` it sends `chat.sync` with the cursors it keeps (with their epochs and
// stamps), applies the replayed and live events, reloads by page what the server reports as
// a gap, and sends what is still in its outbox. Cursors, the conversation list and the outbox
// live in a DeviceStore (IndexedDB in the browser), so a reload syncs only what was missed,
// and a message sent while offline is sent once the connection is back, even after a reload:
// each carries its `client_id`, and the server stores a repeated one once.
//
// Events (`on(type, handler)`): `conversations` (the list changed), `message` ({conv,
// message}), `messages` ({conv}: the kept page of a conversation changed), `receipt` ({conv,
// user, read_seq}), `typing` ({conv, users}), `outbox` (items waiting), `sent` ({item, reply}),
// `send_failed` ({item, error}), `gap` ({conv}), `synced` ({request, reply, replayed}).

import * as state from "./chatstate.js";
import { HuddleError, randomId } from "./connection.js";
import { memoryStore, openStore, storeName } from "./store.js";
import { mergeHits, nextPageBefore } from "./search.js";

export const PAGE_SIZE = 50;
export const TYPING_SEND_EVERY_MS = 3000;
export const TYPING_SHOW_MS = 5000;
export const SEND_RETRY_MS = 2000;
export const LIST_LIMIT = 500;
export const SEARCH_PAGE = 20;

/**
 * @typedef {object} ChatOptions
 * @property {import("./store.js").DeviceStore | "memory"} [store] IndexedDB of the user's
 *   device when left out
 * @property {string} [identity] the user's identity, to open the store before the first
 *   `hello` (e.g. `tokenIdentity(token)`); the connection's once it is open
 * @property {number} [pageSize]
 * @property {number} [typingSendEveryMs]
 * @property {number} [typingShowMs]
 * @property {number} [sendRetryMs]
 * @property {number} [listPageSize] conversations per `chat.list` page (at most 500)
 */

export class ChatDevice extends EventTarget {
  /**
   * @param {import("./connection.js").HuddleConnection} connection
   * @param {ChatOptions} [options]
   */
  constructor(connection, options = {}) {
    super();
    this.connection = connection;
    this.options = options;
    this.pageSize = options.pageSize ?? PAGE_SIZE;
    this.typingSendEveryMs = options.typingSendEveryMs ?? TYPING_SEND_EVERY_MS;
    this.typingShowMs = options.typingShowMs ?? TYPING_SHOW_MS;
    this.sendRetryMs = options.sendRetryMs ?? SEND_RETRY_MS;
    this.listPageSize = options.listPageSize ?? LIST_LIMIT;
    /** @type {import("./store.js").DeviceStore | null} */
    this.store = null;
    /** @type {import("./chatstate.js").Cursors} */
    this.cursors = state.emptyCursors();
    /** @type {Map<string, Record<string, any>>} conversation id → summary */
    this.summaries = new Map();
    /** @type {Map<string, Record<string, any>[]>} conversation id → kept messages, by seq */
    this.pages = new Map();
    /** @type {Map<string, {oldest: number, last_seq: number}>} */
    this.pageInfo = new Map();
    /** @type {Map<string, Map<string, number>>} conversation id → user → read_seq */
    this.reads = new Map();
    /** @type {Map<string, Map<string, any>>} conversation id → typing user → expiry timer */
    this.typingUsers = new Map();
    /** @type {import("./chatstate.js").OutboxItem[]} */
    this.outbox = [];
    /** Every `chat.sync` of this device: what it asked, how many events came back, the reply. */
    /** @type {{request: Record<string, any>, replayed: number, reply: Record<string, any> | null}[]} */
    this.syncs = [];
    this._replayed = 0;
    this._flushing = false;
    this._flushAgain = false;
    this._retryTimer = null;
    this._lastTypingSent = new Map();
    this._saving = Promise.resolve();
    this._unsubscribe = /** @type {(() => void)[]} */ ([]);
  }

  /** The identity of this device's user. */
  get me() {
    return this.connection.identity ?? this.options.identity ?? "";
  }

  /**
   * Load what the device kept, then sync now (if connected) and after every reconnect.
   * Call after the connection's first `hello`, or before it with the `identity` option (the
   * kept conversations and outbox are then shown while the connection comes up).
   */
  async start() {
    const option = this.options.store;
    if (option === "memory") this.store = memoryStore();
    else if (option) this.store = option;
    else if (!this.me) throw new Error("ChatDevice.start: no identity yet (connect first, or pass `identity`)");
    else {
      try {
        this.store = await openStore(storeName(this.me, this.connection.device));
      } catch (error) {
        // No IndexedDB (some private windows): a device that forgets on reload still works.
        this.store = memoryStore();
        this._emit("warning", { what: "store", error });
      }
    }
    const kept = await this.store.load();
    if (kept.cursors) this.cursors = kept.cursors;
    for (const s of kept.conversations) this.summaries.set(s.conv, s);
    this.outbox = state.outboxOrder(kept.outbox);
    this._unsubscribe.push(
      this.connection.on("*", (event) => {
        if (typeof event.type === "string" && event.type.startsWith("chat.")) this._event(event);
      }),
      this.connection.on("ready", () => {
        this.sync().catch((error) => this._emit("warning", { what: "chat.sync", error }));
      }),
    );
    this._emit("conversations", this.conversations());
    if (this.outbox.length) this._emit("outbox", this.outbox);
    if (this.connection.state === "open") await this.sync();
  }

  stop() {
    for (const off of this._unsubscribe.splice(0)) off();
    clearTimeout(this._retryTimer);
    this.store?.close();
  }

  /**
   * @param {string} type
   * @param {(detail: any) => void} handler
   * @returns {() => void}
   */
  on(type, handler) {
    /** @param {Event} event */
    const listener = (event) => handler(/** @type {CustomEvent} */ (event).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Catch up from the cursors, then stay live; then send the outbox. */
  async sync() {
    const request = state.syncRequest(this.cursors);
    const record = { request, replayed: 0, reply: /** @type {Record<string, any> | null} */ (null) };
    this.syncs.push(record);
    this._replayed = 0;
    const reply = await this.connection.request("chat.sync", request);
    record.replayed = this._replayed;
    record.reply = reply;
    const outcome = state.applySyncReply(this.cursors, reply);
    this._saveCursors();
    if (outcome.removed.length) {
      for (const conv of outcome.removed) this._forget(conv);
      this.store?.deleteConversations(outcome.removed).catch(() => {});
    }
    const unknown = Object.keys(reply.heads).some((conv) => !this.summaries.has(conv));
    if (outcome.reloadList || unknown) await this.refreshList();
    for (const conv of [...outcome.gaps, ...outcome.fresh]) await this._reload(conv);
    this._emit("synced", record);
    this._flush();
    return reply;
  }

  /** The conversation list, the most recently active first. */
  conversations() {
    return state.sortConversations([...this.summaries.values()]);
  }

  /** @param {string} conv */
  conversation(conv) {
    return this.summaries.get(conv);
  }

  /** Reload the list from the server (`chat.list`). */
  async refreshList() {
    /** @type {Record<string, any>[]} */
    const all = [];
    /** @type {Record<string, any>} */
    let fields = { limit: this.listPageSize };
    for (;;) {
      const page = (await this.connection.request("chat.list", fields)).conversations;
      all.push(...page);
      const last = page[page.length - 1];
      // Paged by the last message's time; conversations without a message (last_ts 0)
      // all come in the page that reaches them.
      if (page.length < this.listPageSize || !last?.last_ts) break;
      fields = { limit: this.listPageSize, before_ts: last.last_ts };
    }
    const fresh = new Map(all.map((s) => [s.conv, s]));
    const gone = [...this.summaries.keys()].filter((conv) => !fresh.has(conv));
    this.summaries = fresh;
    if (gone.length) this.store?.deleteConversations(gone).catch(() => {});
    this.store?.putConversations(all).catch(() => {});
    this._emit("conversations", this.conversations());
  }

  /**
   * The kept messages of a conversation (loaded pages and live ones), by seq.
   * @param {string} conv
   */
  messages(conv) {
    return this.pages.get(conv) ?? [];
  }

  /**
   * Whether older messages than the kept ones exist.
   * @param {string} conv
   */
  hasOlder(conv) {
    const info = this.pageInfo.get(conv);
    return info ? info.oldest > 1 : true;
  }

  /**
   * Load the newest page of a conversation (drops what was kept of it).
   * @param {string} conv
   */
  async openConversation(conv) {
    const reply = await this.connection.request("chat.history", { conv, limit: this.pageSize });
    this.pages.set(conv, state.mergeMessages([], reply.messages));
    this.pageInfo.delete(conv);
    this._pageLoaded(conv, reply);
    return this.messages(conv);
  }

  /**
   * Load the page before the oldest kept message; returns the messages added.
   * @param {string} conv
   */
  async loadOlder(conv) {
    const kept = this.messages(conv);
    if (!kept.length) return this.openConversation(conv);
    const reply = await this.connection.request("chat.history", { conv, before: kept[0].seq, limit: this.pageSize });
    this.pages.set(conv, state.mergeMessages(this.messages(conv), reply.messages));
    this._pageLoaded(conv, reply);
    return reply.messages;
  }

  /**
   * Send a text message to `conv` (or to the user `to`, in a direct conversation). It goes
   * to the outbox first; the promise resolves with the outbox item once it is stored there,
   * and `sent` or `send_failed` follows.
   * With `kind` ("image", "file" or "voice") and `media` (the id of an uploaded file, see
   * files.js), the message carries that file and `text` is its caption ("" for none).
   * @param {string | null} conv
   * @param {string} text
   * @param {{to?: string, kind?: "text" | "image" | "file" | "voice", media?: string}} [options]
   */
  async send(conv, text, options = {}) {
    /** @type {import("./chatstate.js").OutboxItem} */
    const item = {
      client_id: "w-" + randomId(16),
      conv,
      to: options.to ?? null,
      text,
      ...(options.media ? { kind: options.kind ?? "file", media: options.media } : {}),
      order: state.nextOrder(this.outbox),
      created: Date.now(),
      error: null,
    };
    this.outbox.push(item);
    await this.store?.putOutbox(item);
    this._emit("outbox", this.outbox);
    if (conv) this.typing(conv, false);
    this._flush();
    return item;
  }

  /**
   * Mark messages up to `seq` read (harmless to repeat).
   * @param {string} conv
   * @param {number} seq
   */
  async read(conv, seq) {
    const summary = this.summaries.get(conv);
    if (summary && (summary.read_seq ?? 0) >= seq) return;
    await this.connection.request("chat.read", { conv, seq });
    if (summary) this._setSummary(state.applyToSummary(summary, { type: "chat.receipt", user: this.me, read_seq: seq }, this.me));
  }

  /**
   * Tell the others the user is typing (throttled) or stopped.
   * @param {string} conv
   * @param {boolean} typing
   */
  typing(conv, typing) {
    const last = this._lastTypingSent.get(conv) ?? 0;
    if (typing && Date.now() - last < this.typingSendEveryMs) return;
    if (!typing && !last) return;
    this._lastTypingSent.set(conv, typing ? Date.now() : 0);
    this.connection.request("chat.typing", { conv, typing }).catch(() => {});
  }

  /**
   * Who is typing in `conv` now.
   * @param {string} conv
   */
  typingIn(conv) {
    return [...(this.typingUsers.get(conv)?.keys() ?? [])];
  }

  /**
   * How far each member has read `conv`, as far as this device has seen receipts.
   * @param {string} conv
   * @returns {Map<string, number>}
   */
  readBy(conv) {
    return this.reads.get(conv) ?? new Map();
  }

  /**
   * Create a group with `members` (identities); returns its summary.
   * @param {string} name
   * @param {string[]} members
   */
  async createGroup(name, members) {
    return this.create("group", name, members);
  }

  /**
   * Create a group (`members` join as members) or a broadcast channel (`members` join as its
   * admins, who post with the owner; others follow it by its id); returns its summary.
   * @param {"group" | "channel"} kind
   * @param {string} name
   * @param {string[]} [members]
   */
  async create(kind, name, members = []) {
    const reply = await this.connection.request("chat.create", { kind, name, members });
    if (!this.summaries.has(reply.conv.conv)) this._setSummary({ ...reply.conv, read_seq: 0, unread: 0 });
    return reply.conv;
  }

  /**
   * A conversation's summary and its members with their roles (at most 500 listed).
   * @param {string} conv
   * @returns {Promise<{conv: Record<string, any>, members: {user: string, role: string}[]}>}
   */
  async info(conv) {
    const reply = await this.connection.request("chat.info", { conv });
    return { conv: reply.conv, members: reply.members };
  }

  /**
   * Add users to a group (owner and admins).
   * @param {string} conv
   * @param {string[]} users
   */
  async add(conv, users) {
    await this.connection.request("chat.add", { conv, users });
  }

  /**
   * Remove members or followers (owner and admins; only the owner removes admins).
   * @param {string} conv
   * @param {string[]} users
   */
  async remove(conv, users) {
    await this.connection.request("chat.remove", { conv, users });
  }

  /**
   * Rename a group or channel (owner and admins).
   * @param {string} conv
   * @param {string} name
   */
  async rename(conv, name) {
    await this.connection.request("chat.rename", { conv, name });
  }

  /**
   * Make a member an admin or a plain member (the owner only).
   * @param {string} conv
   * @param {string} user
   * @param {"admin" | "member"} role
   */
  async setRole(conv, user, role) {
    await this.connection.request("chat.role", { conv, user, role });
  }

  /**
   * Leave a group or channel (a follower unfollows). The conversation leaves the list at once;
   * the `chat.left` event that follows on every device of the user does the same there.
   * @param {string} conv
   */
  async leave(conv) {
    await this.connection.request("chat.leave", { conv });
    this._gone(conv);
  }

  /**
   * Follow a channel by its id; returns its summary. Its past is not replayed: open it to
   * load history.
   * @param {string} conv
   */
  async follow(conv) {
    const reply = await this.connection.request("chat.follow", { conv });
    if (!this.summaries.has(reply.conv.conv)) this._setSummary({ ...reply.conv, read_seq: 0 });
    return reply.conv;
  }

  /**
   * Stop following a channel.
   * @param {string} conv
   */
  async unfollow(conv) {
    await this.connection.request("chat.unfollow", { conv });
    this._gone(conv);
  }

  /**
   * Mute or unmute a conversation for all of the user's devices (they learn of it by
   * `chat.muted`; this device shows it at once).
   * @param {string} conv
   * @param {boolean} [muted]
   */
  async mute(conv, muted = true) {
    await this.connection.request("chat.mute", { conv, muted });
    const summary = this.summaries.get(conv);
    if (summary && Boolean(summary.muted) !== muted) this._setSummary({ ...summary, muted });
  }

  /**
   * Search messages (`chat.search`: all words must match; CJK by substring). For the next
   * page pass the hits so far as `more`: the reply then holds only hits not among them.
   * `done` is true when no more hits are to be had.
   * @param {string} query
   * @param {{conv?: string | null, sender?: string | null, after_ts?: number | null, limit?: number, more?: Record<string, any>[]}} [options]
   * @returns {Promise<{hits: Record<string, any>[], done: boolean}>}
   */
  async search(query, options = {}) {
    const { more = [], limit = SEARCH_PAGE, ...filters } = options;
    /** @type {Record<string, any>} */
    const fields = { query, limit, ...filters };
    const before = nextPageBefore(more);
    if (before !== null) fields.before_ts = before;
    const reply = await this.connection.request("chat.search", fields);
    const { hits, added } = mergeHits(more, reply.hits);
    return { hits: hits.slice(more.length), done: reply.hits.length < limit || added === 0 };
  }

  /**
   * Any other chat request (`chat.edit`, `chat.react`, `chat.search`, ...).
   * @param {string} type
   * @param {Record<string, any>} fields
   */
  request(type, fields) {
    return this.connection.request(type, fields);
  }

  // ---- events ----

  /** @param {Record<string, any>} event */
  _event(event) {
    const moved = state.applyEvent(this.cursors, event);
    if (moved.kind === "conv" || moved.kind === "feed") {
      this._replayed += 1;
      this._saveCursors();
    }
    if (moved.kind === "gap") {
      this._saveCursors();
      if (moved.conv === null) this.refreshList().catch(() => {});
      else this._reload(moved.conv).catch(() => {});
      return;
    }
    const conv = event.conv;
    switch (event.type) {
      case "chat.joined": {
        // The summary's own read position is not the user's (docs/chat.md): keep ours.
        const info = event.info;
        const mine = info.last?.sender === this.me ? info.last_seq : 0;
        const read = Math.max(this.summaries.get(conv)?.read_seq ?? 0, mine);
        this._setSummary({ ...info, read_seq: read, unread: Math.max(0, (info.last_seq ?? 0) - read) });
        return;
      }
      case "chat.left":
        this._forget(conv);
        this.store?.deleteConversations([conv]).catch(() => {});
        this._emit("conversations", this.conversations());
        return;
      case "chat.user_typing":
        this._typingEvent(conv, event.user, event.typing);
        return;
      case "chat.receipt": {
        const reads = this.reads.get(conv) ?? new Map();
        reads.set(event.user, Math.max(reads.get(event.user) ?? 0, event.read_seq));
        this.reads.set(conv, reads);
        this._emit("receipt", { conv, user: event.user, read_seq: event.read_seq });
        break;
      }
      case "chat.message": {
        const done = state.outboxMatch(this.outbox, this.me, conv, event.message);
        if (done) this._dropOutbox(done);
        if (event.message.sender !== this.me) this._typingEvent(conv, event.message.sender, false);
        break;
      }
    }
    const summary = this.summaries.get(conv);
    if (summary) {
      const next = state.applyToSummary(summary, event, this.me);
      if (next !== summary) this._setSummary(next);
    }
    if (this.pages.has(conv) && event.type !== "chat.receipt") {
      this.pages.set(conv, state.applyToMessages(this.messages(conv), event));
      const info = this.pageInfo.get(conv);
      if (info && event.type === "chat.message") info.last_seq = Math.max(info.last_seq, event.message.seq);
      this._emit("messages", { conv });
    }
    if (event.type === "chat.message") this._emit("message", { conv, message: event.message });
  }

  /**
   * @param {string} conv
   * @param {string} user
   * @param {boolean} typing
   */
  _typingEvent(conv, user, typing) {
    const users = this.typingUsers.get(conv) ?? new Map();
    const had = users.has(user);
    clearTimeout(users.get(user));
    users.delete(user);
    if (typing) users.set(user, setTimeout(() => this._typingEvent(conv, user, false), this.typingShowMs));
    this.typingUsers.set(conv, users);
    if (typing || had) this._emit("typing", { conv, users: [...users.keys()] });
  }

  // ---- outbox ----

  _flush() {
    if (this._flushing) {
      this._flushAgain = true;
      return;
    }
    this._flushing = true;
    this._flushOnce()
      .catch((error) => this._emit("warning", { what: "outbox", error }))
      .finally(() => {
        this._flushing = false;
        if (this._flushAgain) {
          this._flushAgain = false;
          this._flush();
        }
      });
  }

  async _flushOnce() {
    // One at a time, in the order the user pressed send, so the conversation keeps it.
    for (const item of state.outboxOrder(this.outbox)) {
      if (this.connection.state !== "open") return;
      if (!this.outbox.includes(item)) continue;
      try {
        const reply = await this.connection.request("chat.send", {
          conv: item.conv,
          to: item.to ?? null,
          client_id: item.client_id,
          kind: item.kind ?? "text",
          text: item.media && !item.text ? null : item.text,
          media: item.media ?? null,
        });
        this._dropOutbox(item);
        this._emit("sent", { item, reply });
      } catch (error) {
        const code = error instanceof HuddleError ? error.code : "internal";
        if (state.sendOutcome(code) === "retry") {
          item.error = code;
          this.store?.putOutbox(item).catch(() => {});
          this._emit("outbox", this.outbox);
          // A drop retries on the next `ready`; a refusal that may pass retries soon.
          if (this.connection.state === "open") {
            clearTimeout(this._retryTimer);
            this._retryTimer = setTimeout(() => this._flush(), this.sendRetryMs);
          }
          return;
        }
        this._dropOutbox(item);
        this._emit("send_failed", { item, error });
      }
    }
  }

  /** @param {import("./chatstate.js").OutboxItem} item */
  _dropOutbox(item) {
    const index = this.outbox.indexOf(item);
    if (index < 0) return;
    this.outbox.splice(index, 1);
    this.store?.deleteOutbox(item.client_id).catch(() => {});
    this._emit("outbox", this.outbox);
  }

  // ---- keeping ----

  /**
   * Drop what is kept of `conv` and reload its newest page when it was open.
   * @param {string} conv
   */
  async _reload(conv) {
    const open = this.pages.has(conv);
    this.pages.delete(conv);
    this.pageInfo.delete(conv);
    this._emit("gap", { conv });
    if (open) {
      await this.openConversation(conv);
      this._emit("messages", { conv });
    }
  }

  /**
   * The user is no longer in `conv`.
   * @param {string} conv
   */
  _gone(conv) {
    if (!this.summaries.has(conv)) return;
    this._forget(conv);
    this.store?.deleteConversations([conv]).catch(() => {});
    this._emit("conversations", this.conversations());
  }

  /** @param {string} conv */
  _forget(conv) {
    this.summaries.delete(conv);
    this.pages.delete(conv);
    this.pageInfo.delete(conv);
    this.reads.delete(conv);
  }

  /**
   * @param {string} conv
   * @param {Record<string, any>} reply a chat.history reply
   */
  _pageLoaded(conv, reply) {
    const kept = this.messages(conv);
    const info = this.pageInfo.get(conv);
    const oldest = kept.length ? kept[0].seq : reply.last_seq + 1;
    // An empty page before the oldest kept message means the start was reached.
    const reachedStart = reply.messages.length < this.pageSize;
    this.pageInfo.set(conv, {
      oldest: reachedStart ? 1 : Math.min(oldest, info?.oldest ?? oldest),
      last_seq: reply.last_seq,
    });
  }

  /** @param {Record<string, any>} summary */
  _setSummary(summary) {
    this.summaries.set(summary.conv, summary);
    this.store?.putConversations([summary]).catch(() => {});
    this._emit("conversations", this.conversations());
  }

  _saveCursors() {
    // Writes are chained so that an older snapshot never lands after a newer one.
    const snapshot = structuredClone(this.cursors);
    const store = this.store;
    if (!store) return;
    this._saving = this._saving.then(() => store.saveCursors(snapshot)).catch(() => {});
  }

  /** Resolves once every cursor change so far is stored. */
  flushed() {
    return this._saving;
  }

  /**
   * @param {string} type
   * @param {any} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
