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
// `send_failed` ({item, error}), `gap` ({conv}), `synced` ({request, reply, replayed}),
// `thread` ({conv, root}: an open thread changed).
//
// Besides the newest page, a device keeps a window of a conversation anywhere in its history
// (`loadAround`, to jump to a message; `loadNewer` then walks back to the end), single
// messages outside it (`fetchMessage`: the roots that replies quote), and open threads.
// Every stored event is applied to all of them, replayed ones too, and events that arrive
// while a page is on its way are applied again to the page when it lands.

import * as state from "./chatstate.js";
import { HuddleError, MAX_FRAME_BYTES, frameBytes, randomId } from "./connection.js";
import { memoryStore, openStore, storeName } from "./store.js";
import { mergeHits, nextPageBefore } from "./search.js";

export const PAGE_SIZE = 50;
export const TYPING_SEND_EVERY_MS = 3000;
export const TYPING_SHOW_MS = 5000;
export const SEND_RETRY_MS = 2000;
export const LIST_LIMIT = 500;
export const SEARCH_PAGE = 20;
export const RECALL_WINDOW_MS = 120_000;
export const THREAD_PAGE = 100;
export const THREAD_MAX_PAGES = 10;

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
 * @property {number} [recallWindowMs] how long after sending a message its sender may recall
 *   it: the node's `chat_recall_window_s` (for showing the action; the node decides)
 */

// Events that change messages (not only cursors or summaries).
const MESSAGE_EVENTS = new Set(["chat.message", "chat.edited", "chat.recalled", "chat.reaction"]);

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
    this.recallWindowMs = options.recallWindowMs ?? RECALL_WINDOW_MS;
    /** @type {import("./store.js").DeviceStore | null} */
    this.store = null;
    /** @type {import("./chatstate.js").Cursors} */
    this.cursors = state.emptyCursors();
    /** @type {Map<string, Record<string, any>>} conversation id → summary */
    this.summaries = new Map();
    /** @type {Map<string, Record<string, any>[]>} conversation id → kept messages, by seq */
    this.pages = new Map();
    /** @type {Map<string, {last_seq: number, hasOlder: boolean, live: boolean}>} */
    this.pageInfo = new Map();
    /** @type {Map<string, Record<string, any>[]>} conversation id → messages kept outside its page */
    this.extras = new Map();
    /** @type {Map<string, {conv: string, root: number, replies: Record<string, any>[]}>} open threads */
    this.threads = new Map();
    /** @type {Map<string, Promise<{user: string, role: string}[]>>} conversation id → its members */
    this._members = new Map();
    /** @type {Map<string, Promise<Record<string, any> | null>>} */
    this._fetching = new Map();
    /** @type {Map<string, Record<string, any>[][]>} conversation id → events seen while a load is on its way */
    this._loads = new Map();
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
    // A kept item too large to ever go fails now, not after the connection is back.
    this._failTooLarge();
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
    // A gap skipped events that move summaries (last message, unread): only the list (the
    // user's own read positions are in it, not in chat.info) brings them up to date.
    const stale = outcome.gaps.some((conv) => this.summaries.has(conv));
    if (outcome.reloadList || unknown || stale) await this.refreshList();
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
      if (page.length < this.listPageSize || !last) break;
      // The next page goes on after the last one received: conversations sharing its
      // last_ts (several without a message have 0) are split across pages, none skipped.
      fields = { limit: this.listPageSize, before_ts: last.last_ts, before_conv: last.conv };
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
    return info ? info.hasOlder : true;
  }

  /**
   * Whether the kept window ends before the conversation does (after `loadAround`): new
   * messages do not join it until `loadNewer` has reached the end.
   * @param {string} conv
   */
  hasNewer(conv) {
    const info = this.pageInfo.get(conv);
    return info ? !info.live : false;
  }

  /**
   * Load the newest page of a conversation (drops what was kept of it).
   * @param {string} conv
   */
  async openConversation(conv) {
    await this._loadPage(conv, {}, true);
    return this.messages(conv);
  }

  /**
   * Load the page around message `seq` (drops what was kept of the conversation): to jump to
   * a message. `loadNewer` then walks forward to the conversation's end.
   * @param {string} conv
   * @param {number} seq
   */
  async loadAround(conv, seq) {
    await this._loadPage(conv, { around: seq }, true);
    return this.messages(conv);
  }

  /**
   * Load the page before the oldest kept message; returns the messages added.
   * @param {string} conv
   */
  async loadOlder(conv) {
    const kept = this.messages(conv);
    if (!kept.length) return this.openConversation(conv);
    return (await this._loadPage(conv, { before: kept[0].seq }, false)).messages;
  }

  /**
   * Load the page after the newest kept message; returns the messages added.
   * @param {string} conv
   */
  async loadNewer(conv) {
    const kept = this.messages(conv);
    if (!kept.length) return this.openConversation(conv);
    return (await this._loadPage(conv, { after: kept[kept.length - 1].seq }, false)).messages;
  }

  /**
   * A message this device keeps: in the conversation's window, or fetched on its own.
   * @param {string} conv
   * @param {number} seq
   */
  message(conv, seq) {
    return this.messages(conv).find((m) => m.seq === seq) ?? this.extras.get(conv)?.find((m) => m.seq === seq);
  }

  /**
   * Fetch one message (e.g. the root a reply quotes) and keep it, kept up to date by events
   * like the window; `messages` follows. Resolves with it (null if there is none).
   * @param {string} conv
   * @param {number} seq
   */
  fetchMessage(conv, seq) {
    const key = `${conv} ${seq}`;
    let pending = this._fetching.get(key);
    if (!pending) {
      pending = this._withEvents(conv, async () => {
        const reply = await this.connection.request("chat.history", { conv, around: seq, limit: 1 });
        return reply.messages.find((/** @type {any} */ m) => m.seq === seq) ?? null;
      }).then(({ value, events }) => {
        if (!value) return null;
        let list = state.mergeMessages(this.extras.get(conv) ?? [], [value]);
        for (const event of events) list = state.applyToMessages(list, event, { append: "no" });
        this.extras.set(conv, list);
        this._emit("messages", { conv });
        return this.message(conv, seq) ?? null;
      });
      pending.finally(() => this._fetching.delete(key)).catch(() => {});
      this._fetching.set(key, pending);
    }
    return pending;
  }

  /**
   * Open the thread of message `root`: its replies (`chat.thread`, up to
   * THREAD_PAGE × THREAD_MAX_PAGES of them) are kept and follow events until `closeThread`;
   * `thread` events tell when they changed.
   * @param {string} conv
   * @param {number} root
   */
  async openThread(conv, root) {
    const key = `${conv} ${root}`;
    const entry = { conv, root, replies: /** @type {Record<string, any>[]} */ ([]) };
    this.threads.set(key, entry);
    if (!this.message(conv, root)) await this.fetchMessage(conv, root);
    const { value, events } = await this._withEvents(conv, async () => {
      /** @type {Record<string, any>[]} */
      const replies = [];
      for (let page = 0, after = 0; page < THREAD_MAX_PAGES; page++) {
        const reply = await this.connection.request("chat.thread", { conv, root, after, limit: THREAD_PAGE });
        replies.push(...reply.messages);
        if (reply.messages.length < THREAD_PAGE) break;
        after = reply.messages[reply.messages.length - 1].seq;
      }
      return replies;
    });
    if (this.threads.get(key) !== entry) return this.thread(conv, root);
    entry.replies = state.mergeMessages(entry.replies, value);
    for (const event of events) this._applyToThread(entry, event);
    this._emit("thread", { conv, root });
    return this.thread(conv, root);
  }

  /**
   * An open thread: its root (null until fetched) and the replies kept.
   * @param {string} conv
   * @param {number} root
   */
  thread(conv, root) {
    return { root: this.message(conv, root) ?? null, replies: this.threads.get(`${conv} ${root}`)?.replies ?? [] };
  }

  /**
   * @param {string} conv
   * @param {number} root
   */
  closeThread(conv, root) {
    this.threads.delete(`${conv} ${root}`);
  }

  /**
   * The members of a conversation and their roles (`chat.info`), kept until they change.
   * Their read positions join those the receipts bring (`readBy`, `readers`).
   * @param {string} conv
   * @returns {Promise<{user: string, role: string}[]>}
   */
  members(conv) {
    let pending = this._members.get(conv);
    if (!pending) {
      pending = this.connection.request("chat.info", { conv }).then((reply) => {
        // A new device learns here who has read what before it came (receipts after it).
        let moved = false;
        for (const member of reply.members) {
          if (!member.read) continue;
          const before = this.cursors.reads?.[conv]?.[member.user] ?? 0;
          state.noteRead(this.cursors, conv, member.user, member.read);
          moved ||= member.read > before;
        }
        if (moved) {
          this._saveCursors();
          this._emit("receipt", { conv });
        }
        return reply.members;
      });
      pending.catch(() => this._members.delete(conv));
      this._members.set(conv, pending);
    }
    return pending;
  }

  /**
   * Add the user's reaction `emoji` to message `seq`, or take it back (`remove`).
   * @param {string} conv
   * @param {number} seq
   * @param {string} emoji
   * @param {boolean} [remove]
   */
  react(conv, seq, emoji, remove = false) {
    return this.connection.request("chat.react", { conv, seq, emoji, remove });
  }

  /**
   * Replace the text of one of the user's own text messages; the earlier version is kept.
   * @param {string} conv
   * @param {number} seq
   * @param {string} text
   * @param {string[] | null} [mentions] the new text's mentions (none when left out)
   */
  edit(conv, seq, text, mentions = null) {
    return this.connection.request("chat.edit", { conv, seq, text, mentions: mentions?.length ? mentions : null });
  }

  /**
   * The earlier versions of an edited message, oldest first.
   * @param {string} conv
   * @param {number} seq
   * @returns {Promise<Record<string, any>[]>}
   */
  async edits(conv, seq) {
    return (await this.connection.request("chat.edits", { conv, seq })).versions;
  }

  /**
   * Take a message back (its sender within `recallWindowMs`, or an admin).
   * @param {string} conv
   * @param {number} seq
   */
  recall(conv, seq) {
    return this.connection.request("chat.recall", { conv, seq });
  }

  /**
   * Whether the user may still recall their message `m` (the node has the last word).
   * @param {Record<string, any>} m
   * @param {number} [now]
   */
  canRecall(m, now = Date.now()) {
    return m.sender === this.me && !m.recalled && m.kind !== "system" && now - m.ts < this.recallWindowMs;
  }

  /**
   * Send a text message to `conv` (or to the user `to`, in a direct conversation). It goes
   * to the outbox first; the promise resolves with the outbox item once it is stored there,
   * and `sent` or `send_failed` follows.
   * With `kind` ("image", "file" or "voice") and `media` (the id of an uploaded file, see
   * files.js), the message carries that file and `text` is its caption ("" for none).
   * `reply_to` (a message's seq) puts it in that message's thread; `mentions` lists the
   * identities the text mentions (see `mentionsIn` in chatstate.js).
   * `client_id` (1 to 64 characters) replaces the random one: a caller that may send the same
   * message again after a reload (e.g. one derived from an upload's id) gets it stored once;
   * while an item with that id is still in the outbox, that item is returned instead.
   * @param {string | null} conv
   * @param {string} text
   * @param {{to?: string, kind?: "text" | "image" | "file" | "voice", media?: string, reply_to?: number | null, mentions?: string[] | null, client_id?: string}} [options]
   */
  async send(conv, text, options = {}) {
    const waiting = options.client_id ? this.outbox.find((i) => i.client_id === options.client_id) : undefined;
    if (waiting) return waiting;
    /** @type {import("./chatstate.js").OutboxItem} */
    const item = {
      client_id: options.client_id || "w-" + randomId(16),
      conv,
      to: options.to ?? null,
      text,
      ...(options.media ? { kind: options.kind ?? "file", media: options.media } : {}),
      ...(options.reply_to ? { reply_to: options.reply_to } : {}),
      ...(options.mentions?.length ? { mentions: options.mentions } : {}),
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
    return new Map(Object.entries(this.cursors.reads?.[conv] ?? {}));
  }

  /**
   * Who has read message `m` of `conv` (not its sender nor this user), as far as this
   * device has seen receipts.
   * @param {string} conv
   * @param {Record<string, any>} m
   */
  readersOf(conv, m) {
    return state.readersOf(this.cursors.reads?.[conv], m.seq, m.sender, this.me);
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
      // The conversation's summary missed events too: the list brings it up to date.
      this.refreshList().catch(() => {});
      if (moved.conv !== null) this._reload(moved.conv).catch(() => {});
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
      case "chat.receipt":
        // Recorded with the cursors (chatstate.applyEvent), and stored with them.
        this._emit("receipt", { conv, user: event.user, read_seq: event.read_seq });
        break;
      case "chat.message": {
        // Our own message, whose reply did not come (a drop): it is stored all the same.
        const done = state.outboxMatch(this.outbox, this.me, conv, event.message);
        if (done && this._dropOutbox(done)) {
          const { seq, ts } = event.message;
          this._emit("sent", { item: done, reply: { type: "ok", conv, seq, ts, duplicate: false } });
        }
        if (event.message.sender !== this.me) this._typingEvent(conv, event.message.sender, false);
        if (event.message.kind === "system") this._members.delete(conv);
        break;
      }
    }
    const summary = this.summaries.get(conv);
    if (summary) {
      const next = state.applyToSummary(summary, event, this.me);
      if (next !== summary) this._setSummary(next);
    }
    if (event.type === "chat.receipt") {
      // nothing kept of messages changes
    } else if (MESSAGE_EVENTS.has(event.type)) {
      this._applyToKept(conv, event);
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

  /**
   * Apply one message event to everything kept of `conv`: its window, the messages kept
   * outside it, its open threads, and the loads on their way.
   * @param {string} conv
   * @param {Record<string, any>} event
   */
  _applyToKept(conv, event) {
    for (const buffer of this._loads.get(conv) ?? []) buffer.push(event);
    let changed = false;
    if (this.pages.has(conv)) {
      const info = this.pageInfo.get(conv);
      if (info && event.type === "chat.message") info.last_seq = Math.max(info.last_seq, event.message.seq);
      // A window away from the end takes only what continues it.
      const page = state.applyToMessages(this.messages(conv), event, { append: info && !info.live ? "contiguous" : "yes" });
      this.pages.set(conv, page);
      if (info) Object.assign(info, state.pageWindow(page, info.last_seq));
      changed = true;
    }
    const extras = this.extras.get(conv);
    if (extras) {
      this.extras.set(conv, state.applyToMessages(extras, event, { append: "no" }));
      changed = true;
    }
    if (changed) this._emit("messages", { conv });
    for (const entry of this.threads.values()) {
      if (entry.conv === conv && this._applyToThread(entry, event)) this._emit("thread", { conv, root: entry.root });
    }
  }

  /**
   * @param {{conv: string, root: number, replies: Record<string, any>[]}} entry
   * @param {Record<string, any>} event
   * @returns {boolean} whether the thread changed
   */
  _applyToThread(entry, event) {
    const before = entry.replies;
    if (event.type === "chat.message") {
      if (event.message.reply_to !== entry.root || before.some((m) => m.seq === event.message.seq)) return event.message.seq === entry.root;
      entry.replies = state.mergeMessages(before, [event.message]);
    } else {
      entry.replies = state.applyToMessages(before, event, { append: "no" });
    }
    return entry.replies !== before || event.msg_seq === entry.root;
  }

  /**
   * Run a load of `conv`, collecting the message events that arrive meanwhile: the reply
   * may have been read before them, so they are applied to it again once it lands.
   * @template T
   * @param {string} conv
   * @param {() => Promise<T>} load
   * @returns {Promise<{value: T, events: Record<string, any>[]}>}
   */
  async _withEvents(conv, load) {
    /** @type {Record<string, any>[]} */
    const events = [];
    const loads = this._loads.get(conv) ?? [];
    loads.push(events);
    this._loads.set(conv, loads);
    try {
      return { value: await load(), events };
    } finally {
      loads.splice(loads.indexOf(events), 1);
      if (!loads.length && this._loads.get(conv) === loads) this._loads.delete(conv);
    }
  }

  /**
   * Load a page of `conv` (`chat.history` with `fields`) into its window: in place of it
   * (`replace`), or merged with it.
   * @param {string} conv
   * @param {Record<string, any>} fields
   * @param {boolean} replace
   */
  async _loadPage(conv, fields, replace) {
    const { value: reply, events } = await this._withEvents(conv, () =>
      this.connection.request("chat.history", { conv, limit: this.pageSize, ...fields }),
    );
    let page = state.mergeMessages(replace ? [] : this.messages(conv), reply.messages);
    for (const event of events) page = state.applyToMessages(page, event, { append: "contiguous" });
    this.pages.set(conv, page);
    this._pageLoaded(conv, reply);
    // Nothing after the newest kept message: the node's word beats what events suggested.
    const info = this.pageInfo.get(conv);
    if (info && fields.after !== undefined && !reply.messages.length) info.live = true;
    return reply;
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
    this._failTooLarge();
    // One at a time, in the order the user pressed send, so the conversation keeps it.
    for (const item of state.outboxOrder(this.outbox)) {
      if (this.connection.state !== "open") return;
      if (!this.outbox.includes(item)) continue;
      try {
        const reply = await this.connection.request("chat.send", sendFields(item));
        // Once: its own message may have come first (then it said `sent`).
        if (this._dropOutbox(item)) this._emit("sent", { item, reply });
      } catch (caught) {
        // The node closed on its frame (its limit is below this side's): refused for good.
        const error =
          caught instanceof HuddleError && caught.code === "frame_too_large" ? new HuddleError("message_too_large", caught.detail) : caught;
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

  /**
   * Refuse what the node would refuse for its size, connected or not: a text over the node's
   * `max_text_chars`, a frame over its `max_frame_bytes` (which would close the connection,
   * and a kept outbox sends it again after every reconnect).
   */
  _failTooLarge() {
    const hello = this.connection.hello;
    const maxChars = hello?.max_text_chars;
    const maxBytes = this.connection.frameLimit ?? MAX_FRAME_BYTES;
    for (const item of state.outboxOrder(this.outbox)) {
      const chars = [...(item.text ?? "")].length;
      // The connection adds its request id (a few characters) to the frame; a UTF-16 unit
      // is at most 3 bytes, so most frames need no encoding to be sure.
      const frame = JSON.stringify({ ...sendFields(item), id: "r0000000000", type: "chat.send" });
      const bytes = frame.length * 3 <= maxBytes ? frame.length : frameBytes(frame);
      let why = null;
      if (typeof maxChars === "number" && chars > maxChars) why = `text is ${chars} characters; at most ${maxChars}`;
      else if (bytes > maxBytes) why = `the message is ${bytes} bytes; the node takes at most ${maxBytes}`;
      if (why === null) continue;
      this._dropOutbox(item);
      this._emit("send_failed", { item, error: new HuddleError("message_too_large", why) });
    }
  }

  /**
   * @param {import("./chatstate.js").OutboxItem} item
   * @returns {boolean} whether it was still there
   */
  _dropOutbox(item) {
    const index = this.outbox.indexOf(item);
    if (index < 0) return false;
    this.outbox.splice(index, 1);
    this.store?.deleteOutbox(item.client_id).catch(() => {});
    this._emit("outbox", this.outbox);
    return true;
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
    this.extras.delete(conv);
    this._members.delete(conv);
    this._emit("gap", { conv });
    // Open threads may have missed replies, edits and reactions too: read them again.
    const threads = [...this.threads.values()].filter((entry) => entry.conv === conv);
    if (open) {
      await this.openConversation(conv);
      this._emit("messages", { conv });
    }
    for (const { root } of threads) await this.openThread(conv, root);
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
    this.extras.delete(conv);
    this._members.delete(conv);
    if (this.cursors.reads) delete this.cursors.reads[conv];
  }

  /**
   * @param {string} conv
   * @param {Record<string, any>} reply a chat.history reply
   */
  _pageLoaded(conv, reply) {
    // The newest number known: a message event may have come before the page did.
    const last = Math.max(reply.last_seq, this.pageInfo.get(conv)?.last_seq ?? 0, this.summaries.get(conv)?.last_seq ?? 0);
    this.pageInfo.set(conv, { last_seq: last, ...state.pageWindow(this.messages(conv), last) });
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

/**
 * The fields of the `chat.send` of an outbox item.
 * @param {import("./chatstate.js").OutboxItem} item
 */
function sendFields(item) {
  return {
    conv: item.conv,
    to: item.to ?? null,
    client_id: item.client_id,
    kind: item.kind ?? "text",
    text: item.media && !item.text ? null : item.text,
    media: item.media ?? null,
    reply_to: item.reply_to ?? null,
    mentions: item.mentions ?? null,
  };
}
