// The web app's messages inside one conversation: replies (quoted, the quote jumps to its
// root), jumping to any message (`ui.jumpTo`, also used by search), reactions, edits with
// their history, recalls, threads in a side panel, @mentions offered while typing, and who
// has read a message. Everything goes through the SDK's ChatDevice (chat.js), which keeps
// the messages right across replays and reloads; this module only draws and asks.

import { mentionParts, mentionQuery, mentionsIn } from "/web/sdk/chatstate.js";
import { stylesheet } from "./dom.js";
import { composing, messageBox } from "./textbox.js";

// Its styles come with it, in place before anything it draws is shown.
await stylesheet(new URL("./messages.css", import.meta.url));

// Glyphs the common fonts carry too, so that a machine without an emoji font still shows them.
export const REACTIONS = ["❤️", "😂", "😮", "😢", "✌️", "✔️"];
export const HIGHLIGHT_MS = 4000;
export const ERROR_SHOW_MS = 6000;
const NEAR_BOTTOM_PX = 80;
const MENTION_OFFERS = 8;
// Long enough for a click on an offer to land before the list closes with the input's blur.
const MENTION_BLUR_MS = 150;

const STRINGS = {
  en: {
    msgActions: "Message actions",
    msgReply: "Reply",
    msgReplyThread: "Reply in thread",
    msgReact: "React with {emoji}",
    msgEdit: "Edit",
    msgRecall: "Recall",
    msgReadBy: "Read by…",
    msgEdited: "edited",
    msgEditedLabel: "Edited: show earlier versions",
    msgReplyingTo: "Replying to {user}: {text}",
    msgEditing: "Editing your message",
    msgCancelReply: "Cancel reply",
    msgCancelEdit: "Cancel edit",
    msgQuoteLabel: "Reply to {user}: {text}. Show it",
    msgLoading: "…",
    msgReplies: "{n} replies",
    msgOneReply: "1 reply",
    msgThread: "Thread",
    msgCloseThread: "Close thread",
    msgThreadReply: "Reply in thread",
    msgSendReply: "Reply",
    msgReactionUsers: "{emoji} {n}: {users}",
    msgReactedYou: "you",
    msgVersions: "Earlier versions",
    msgNow: "Now",
    msgOriginal: "Original",
    msgReadersTitle: "Read by",
    msgNoReaders: "Nobody has read it yet.",
    msgClose: "Close",
    msgFailed: "That did not work: {error}",
    msgMentionsYou: "Mentions you",
    msgMentionOffers: "Members to mention",
    msgToLatest: "Jump to the latest",
  },
  zh: {
    msgActions: "消息操作",
    msgReply: "回复",
    msgReplyThread: "在话题中回复",
    msgReact: "用 {emoji} 回应",
    msgEdit: "编辑",
    msgRecall: "撤回",
    msgReadBy: "已读成员…",
    msgEdited: "已编辑",
    msgEditedLabel: "已编辑：查看之前的版本",
    msgReplyingTo: "回复 {user}：{text}",
    msgEditing: "正在编辑你的消息",
    msgCancelReply: "取消回复",
    msgCancelEdit: "取消编辑",
    msgQuoteLabel: "回复 {user}：{text}。跳转到原消息",
    msgLoading: "…",
    msgReplies: "{n} 条回复",
    msgOneReply: "1 条回复",
    msgThread: "话题",
    msgCloseThread: "关闭话题",
    msgThreadReply: "在话题中回复",
    msgSendReply: "回复",
    msgReactionUsers: "{emoji} {n}：{users}",
    msgReactedYou: "你",
    msgVersions: "之前的版本",
    msgNow: "现在",
    msgOriginal: "原始版本",
    msgReadersTitle: "已读成员",
    msgNoReaders: "还没有人读过。",
    msgClose: "关闭",
    msgFailed: "操作失败：{error}",
    msgMentionsYou: "提到了你",
    msgMentionOffers: "可提及的成员",
    msgToLatest: "跳到最新消息",
  },
};

/** @type {any} what app.js gives feature modules */
let ui = null;

/**
 * What this module draws from (module state; the messages themselves live in the SDK).
 * @type {{replyTo: {conv: string, seq: number} | null, editing: {conv: string, seq: number, draft: string, text: string} | null, menu: {conv: string, seq: number} | null, highlight: {conv: string, seq: number} | null, highlightTimer: any, thread: {conv: string, root: number} | null, members: Map<string, string[]>, missing: Set<string>, mention: {input: HTMLTextAreaElement, items: string[], active: number, start: number} | null, loadingNewer: boolean, errorTimer: any, offs: (() => void)[]}}
 */
const state = {
  replyTo: null,
  editing: null,
  menu: null,
  highlight: null,
  highlightTimer: null,
  thread: null,
  members: new Map(),
  missing: new Set(),
  mention: null,
  loadingNewer: false,
  errorTimer: null,
  offs: [],
};

/** @param {any} from app.js's `ui` */
export function init(from) {
  ui = from;
  ui.jumpTo = jumpTo;
  ui.addStrings(STRINGS);
  ui.hooks.signedIn.push(signedIn);
  ui.hooks.signedOut.push(signedOut);
  ui.hooks.header.push(header);
  ui.hooks.composer.push(composer);
  ui.hooks.message.push(decorate);
  ui.hooks.send.push(beforeSend);
  // The text of a message being edited is not the draft: the draft waits for the edit's end.
  ui.hooks.draft.push(() => !editingHere());
  // The history list is drawn anew with each conversation: listen where it always reaches.
  document.addEventListener("scroll", onScroll, true);
  // app.js's "Read by N" under the user's last message opens the list too (the menu's
  // "Read by…" is the way by keyboard).
  document.addEventListener("click", (e) => {
    const target = /** @type {HTMLElement} */ (e.target);
    const li = target instanceof HTMLElement && target.matches("#messages li.mine .read-state") ? target.closest("li[data-seq]") : null;
    const conv = ui.app.current;
    if (!li || !conv || chat()?.conversation(conv)?.kind !== "group") return;
    const m = chat().message(conv, Number(li.getAttribute("data-seq")));
    if (m) showReaders(conv, m);
  });
}

const t = (/** @type {string} */ key, /** @type {Record<string, any>} */ vars = {}) => ui.t(key, vars);
const chat = () => ui.app.chat;

function signedIn() {
  const c = chat();
  state.offs.push(
    c.on("thread", (/** @type {{conv: string, root: number}} */ { conv, root }) => {
      if (state.thread && state.thread.conv === conv && state.thread.root === root) renderThread();
    }),
    c.on("outbox", () => state.thread && renderThread()),
    c.on("messages", (/** @type {{conv: string}} */ { conv }) => {
      if (state.thread?.conv === conv) renderThread();
      if (conv === ui.app.current) updateToLatest();
    }),
  );
}

function signedOut() {
  for (const off of state.offs.splice(0)) off();
  state.replyTo = state.editing = state.menu = state.highlight = state.thread = state.mention = null;
  state.members.clear();
  state.missing.clear();
}

// ---- the conversation's header: a new conversation is on screen ----

/**
 * @param {HTMLElement} _el
 * @param {Record<string, any> | null} summary
 */
function header(_el, summary) {
  const conv = summary?.conv ?? null;
  if (state.replyTo?.conv !== conv) state.replyTo = null;
  if (state.editing?.conv !== conv) state.editing = null;
  if (state.thread && state.thread.conv !== conv) closeThread(false);
  if (conv) loadMembers(conv);
}

/** @param {string} conv */
function loadMembers(conv) {
  chat()
    ?.members(conv)
    .then((/** @type {{user: string}[]} */ list) => state.members.set(conv, list.map((m) => m.user)))
    .catch(() => {});
}

// ---- composer: reply and edit bar, mentions ----

/** @param {HTMLElement} form */
function composer(form) {
  const { h } = ui;
  const input = /** @type {HTMLTextAreaElement | null} */ (form.querySelector("#composer-text"));
  if (!input) return;
  form.classList.add("with-bar");
  const bar = h("div", { id: "compose-bar", class: "compose-bar", hidden: true });
  const error = h("p", { id: "msg-error", class: "msg-error", role: "alert", hidden: true });
  const latest = h("button", { type: "button", id: "to-latest", class: "to-latest", hidden: true, text: t("msgToLatest"), onclick: toLatest });
  form.prepend(error, bar, latest, mentionOffers(input, "mention-list"));
  form.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !state.mention && (state.replyTo || state.editing)) cancelBar();
  });
  // A composer drawn anew (the language changed, back to the latest) shows the kept draft:
  // during an edit, the edit goes on instead.
  if (state.editing && editingHere()) input.value = state.editing.text;
  input.addEventListener("input", () => {
    if (state.editing && editingHere()) state.editing.text = input.value;
  });
  // The bar is drawn once the form is in the page.
  queueMicrotask(() => {
    renderBar();
    updateToLatest();
  });
}

function composerInput() {
  return /** @type {HTMLTextAreaElement | null} */ (document.getElementById("composer-text"));
}

function editingHere() {
  return Boolean(state.editing && state.editing.conv === ui.app.current);
}

/**
 * The edit is over (saved or cancelled): the composer gets back the draft it had before.
 * @param {HTMLTextAreaElement | null} input
 */
function endEdit(input) {
  const draft = state.editing?.draft ?? "";
  state.editing = null;
  if (input) {
    input.value = draft;
    input.dispatchEvent(new Event("input"));
  }
}

function renderBar() {
  const bar = document.getElementById("compose-bar");
  if (!bar) return;
  const { h } = ui;
  const conv = ui.app.current;
  if (state.editing && state.editing.conv === conv) {
    bar.replaceChildren(
      h("span", { class: "bar-text", text: t("msgEditing") }),
      h("button", { type: "button", id: "cancel-edit", class: "bar-cancel", "aria-label": t("msgCancelEdit"), title: t("msgCancelEdit"), text: "×", onclick: cancelBar }),
    );
    bar.hidden = false;
    bar.className = "compose-bar editing";
  } else if (state.replyTo && state.replyTo.conv === conv) {
    const m = chat()?.message(conv, state.replyTo.seq);
    bar.replaceChildren(
      h("span", { class: "bar-text", text: t("msgReplyingTo", { user: m ? senderName(m) : "", text: m ? ui.preview(m) : "" }) }),
      h("button", { type: "button", id: "cancel-reply", class: "bar-cancel", "aria-label": t("msgCancelReply"), title: t("msgCancelReply"), text: "×", onclick: cancelBar }),
    );
    bar.hidden = false;
    bar.className = "compose-bar replying";
  } else {
    bar.replaceChildren();
    bar.hidden = true;
  }
}

function cancelBar() {
  const input = composerInput();
  if (state.editing) endEdit(input);
  state.replyTo = null;
  renderBar();
  input?.focus();
}

/**
 * The composer is sending `text`: an edit is done here; a reply and mentions go with it.
 * @param {string} text
 * @param {Record<string, any>} options
 */
function beforeSend(text, options) {
  try {
    const conv = ui.app.current;
    const c = chat();
    if (state.editing && conv && state.editing.conv === conv) {
      const { seq } = state.editing;
      endEdit(composerInput());
      renderBar();
      c.edit(conv, seq, text, mentionsFor(conv, text)).catch(showError);
      return true;
    }
    const mentions = conv ? mentionsFor(conv, text) : null;
    if (mentions) options.mentions = mentions;
    // A window back in history would not show what is sent now: go to the end first.
    if (conv && c.hasNewer(conv)) queueMicrotask(toLatest);
    if (state.replyTo && state.replyTo.conv === conv) {
      options.reply_to = state.replyTo.seq;
      state.replyTo = null;
      renderBar();
    }
  } catch (error) {
    console.error("messages: before send", error);
  }
  return false;
}

/**
 * @param {string} conv
 * @param {string} text
 */
function mentionsFor(conv, text) {
  return mentionsIn(text, state.members.get(conv) ?? []);
}

/**
 * Make `input` offer the conversation's members after an `@`: a list box (returned, to place
 * beside it) that the arrow keys move through and Enter or Tab picks from.
 * @param {HTMLTextAreaElement} input
 * @param {string} id the list's id
 */
function mentionOffers(input, id) {
  const list = ui.h("ul", { id, class: "mention-list", role: "listbox", "aria-label": t("msgMentionOffers"), hidden: true });
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", id);
  input.setAttribute("aria-expanded", "false");
  input.addEventListener("input", () => offerMentions(input));
  input.addEventListener("click", () => offerMentions(input));
  input.addEventListener("keydown", (e) => mentionKeys(e, input));
  input.addEventListener("blur", () => setTimeout(() => state.mention?.input === input && closeMentions(input), MENTION_BLUR_MS));
  return list;
}

/** @param {HTMLTextAreaElement} input */
function offerMentions(input) {
  const conv = ui.app.current;
  const q = conv ? mentionQuery(input.value, input.selectionStart ?? input.value.length) : null;
  const me = chat()?.me;
  const query = q?.query.toLowerCase() ?? "";
  const names = q ? (state.members.get(/** @type {string} */ (conv)) ?? []).filter((u) => u !== me && u.toLowerCase().startsWith(query)).slice(0, MENTION_OFFERS) : [];
  if (!q || !names.length) {
    closeMentions(input);
    return;
  }
  const active = state.mention && state.mention.input === input && state.mention.start === q.start ? Math.min(state.mention.active, names.length - 1) : 0;
  state.mention = { input, items: names, active, start: q.start };
  renderMentions(input);
}

/** @param {HTMLTextAreaElement} input */
function renderMentions(input) {
  const list = document.getElementById(input.getAttribute("aria-controls") ?? "");
  if (!list || !state.mention) return;
  const { h } = ui;
  const { items, active } = state.mention;
  list.replaceChildren(
    ...items.map((user, i) =>
      h("li", {
        id: `mention-opt-${i}`,
        role: "option",
        class: "mention-opt" + (i === active ? " active" : ""),
        "aria-selected": i === active ? "true" : "false",
        text: "@" + user,
        // Before the input's blur, so the pick lands.
        onmousedown: (/** @type {Event} */ e) => {
          e.preventDefault();
          pickMention(input, i);
        },
      }),
    ),
  );
  list.hidden = false;
  input.setAttribute("aria-expanded", "true");
  input.setAttribute("aria-activedescendant", `mention-opt-${active}`);
}

/** @param {HTMLTextAreaElement} input */
function closeMentions(input) {
  if (state.mention?.input === input) state.mention = null;
  const list = document.getElementById(input.getAttribute("aria-controls") ?? "");
  if (list) {
    list.hidden = true;
    list.replaceChildren();
  }
  input.setAttribute("aria-expanded", "false");
  input.removeAttribute("aria-activedescendant");
}

/**
 * @param {KeyboardEvent} e
 * @param {HTMLTextAreaElement} input
 */
function mentionKeys(e, input) {
  const offer = state.mention;
  // An input method's Enter takes its candidate, not an offered member.
  if (!offer || offer.input !== input || composing(e)) return;
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    const step = e.key === "ArrowDown" ? 1 : -1;
    offer.active = (offer.active + step + offer.items.length) % offer.items.length;
    renderMentions(input);
  } else if (e.key === "Enter" || e.key === "Tab") {
    e.preventDefault();
    pickMention(input, offer.active);
  } else if (e.key === "Escape") {
    e.preventDefault();
    e.stopPropagation();
    closeMentions(input);
  }
}

/**
 * @param {HTMLTextAreaElement} input
 * @param {number} index
 */
function pickMention(input, index) {
  const offer = state.mention;
  if (!offer) return;
  const caret = input.selectionStart ?? input.value.length;
  const insert = `@${offer.items[index]} `;
  input.value = input.value.slice(0, offer.start) + insert + input.value.slice(caret);
  const at = offer.start + insert.length;
  input.setSelectionRange(at, at);
  closeMentions(input);
  input.dispatchEvent(new Event("input"));
  input.focus();
}

// ---- one message in the history ----

/** @param {Record<string, any>} m */
function senderName(m) {
  return m.sender === chat()?.me ? t("you") : m.sender;
}

/**
 * The text of a message with its mentions marked.
 * @param {Record<string, any>} m
 * @returns {(Node | string)[]}
 */
function textParts(m) {
  const { h } = ui;
  const me = chat()?.me;
  return mentionParts(m.text ?? "", m.mentions).map((part) =>
    part.user ? h("span", { class: "mention" + (part.user === me ? " me" : ""), text: part.text }) : part.text,
  );
}

/**
 * @param {HTMLElement} li
 * @param {Record<string, any>} m
 * @param {boolean} mine
 */
function decorate(li, m, mine) {
  const conv = ui.app.current;
  const c = chat();
  if (!conv || !c || m.kind === "system") return;
  const { h } = ui;
  li.id = `msg-${m.seq}`;
  li.tabIndex = -1;
  if (state.highlight && state.highlight.conv === conv && state.highlight.seq === m.seq) li.classList.add("highlight");
  if (!mine && !m.recalled && m.mentions?.includes(c.me)) {
    li.classList.add("mentions-me");
    li.prepend(h("span", { class: "mention-flag", text: t("msgMentionsYou") }));
  }
  const text = li.querySelector(".text");
  if (m.reply_to) li.insertBefore(quote(conv, m.reply_to), text);
  if (text && !m.recalled && m.text && m.mentions?.length) text.replaceChildren(...textParts(m));
  if (m.edited && !m.recalled) {
    text?.after(
      h("button", { type: "button", class: "edited-mark", "data-focus": "edited", "aria-label": t("msgEditedLabel"), title: t("msgEditedLabel"), text: t("msgEdited"), onclick: () => showEdits(conv, m) }),
    );
  }
  const reactions = reactionRow(conv, m);
  if (reactions) li.append(reactions);
  if (m.thread?.count) {
    li.append(
      h("button", {
        type: "button",
        class: "thread-count",
        "data-focus": "thread-count",
        text: m.thread.count === 1 ? t("msgOneReply") : t("msgReplies", { n: m.thread.count }),
        onclick: () => openThread(conv, m.seq),
      }),
    );
  }
  if (!m.recalled) li.append(actions(conv, m, mine));
}

/**
 * The quote of a reply's root: its sender and text; it jumps to the root.
 * @param {string} conv
 * @param {number} root
 */
function quote(conv, root) {
  const { h } = ui;
  const c = chat();
  const r = c.message(conv, root);
  const key = `${conv} ${root}`;
  if (!r && !state.missing.has(key)) {
    state.missing.add(key);
    c.fetchMessage(conv, root)
      .then((/** @type {any} */ found) => found && state.missing.delete(key))
      .catch(() => state.missing.delete(key));
  }
  const who = r ? senderName(r) : "";
  const what = r ? ui.preview(r) : t("msgLoading");
  return h("button", {
    type: "button",
    class: "quote",
    "data-focus": "quote",
    "data-root": root,
    "aria-label": t("msgQuoteLabel", { user: who, text: what }),
    onclick: () => jumpTo(conv, root),
  }, [h("span", { class: "quote-sender", text: who }), h("span", { class: "quote-text", text: what })]);
}

/**
 * @param {string} conv
 * @param {Record<string, any>} m
 */
function reactionRow(conv, m) {
  const entries = Object.entries(m.reactions ?? {}).filter(([, users]) => users.length);
  if (!entries.length) return null;
  const { h } = ui;
  const me = chat().me;
  return h("span", { class: "reactions" }, entries.map(([emoji, users]) => {
    const mineToo = users.includes(me);
    const names = users.map((/** @type {string} */ u) => (u === me ? t("msgReactedYou") : u)).join(", ");
    const label = t("msgReactionUsers", { emoji, n: users.length, users: names });
    return h("button", {
      type: "button",
      class: "reaction" + (mineToo ? " mine" : ""),
      "data-focus": `reaction-${emoji}`,
      "data-emoji": emoji,
      "aria-pressed": mineToo ? "true" : "false",
      "aria-label": label,
      title: label,
      onclick: () => chat().react(conv, m.seq, emoji, mineToo).catch(showError),
    }, [h("span", { class: "emoji", text: emoji }), h("span", { class: "count", text: String(users.length) })]);
  }));
}

/**
 * The actions of one message, behind a "⋯" button (one tab stop per message).
 * @param {string} conv
 * @param {Record<string, any>} m
 * @param {boolean} mine
 */
function actions(conv, m, mine) {
  const { h } = ui;
  const c = chat();
  const open = state.menu?.conv === conv && state.menu.seq === m.seq;
  const summary = c.conversation(conv);
  const admin = summary && summary.kind !== "direct" && (summary.role === "owner" || summary.role === "admin");
  // A channel's followers read and react; they do not post (the node refuses it).
  const posts = summary?.role !== "follower";
  const toggle = h("button", {
    type: "button",
    class: "msg-more",
    "data-focus": "more",
    "aria-label": t("msgActions"),
    title: t("msgActions"),
    "aria-expanded": open ? "true" : "false",
    text: "⋯",
    onclick: () => {
      state.menu = open ? null : { conv, seq: m.seq };
      ui.renderMessages();
    },
  });
  const wrap = h("span", { class: "msg-actions" + (open ? " open" : "") }, [toggle]);
  if (!open) return wrap;
  /**
   * @param {string} key
   * @param {string} label
   * @param {() => void} run
   * @param {string} [text]
   */
  const action = (key, label, run, text) =>
    h("button", {
      type: "button",
      class: `msg-action ${key}`,
      "data-focus": key,
      "aria-label": label,
      title: label,
      text: text ?? label,
      onclick: () => {
        state.menu = null;
        run();
        ui.renderMessages();
        // The menu is gone: its message's toggle takes the focus, unless the action moved it.
        if (!document.activeElement || document.activeElement === document.body) {
          /** @type {HTMLElement | null} */ (document.querySelector(`#messages li[data-seq="${m.seq}"] .msg-more`))?.focus();
        }
      },
    });
  const menu = h("span", {
    class: "msg-menu",
    role: "group",
    "aria-label": t("msgActions"),
    onkeydown: (/** @type {KeyboardEvent} */ e) => {
      if (e.key !== "Escape") return;
      state.menu = null;
      ui.renderMessages();
      /** @type {HTMLElement | null} */ (document.querySelector(`#messages li[data-seq="${m.seq}"] .msg-more`))?.focus();
    },
  }, [
    ...REACTIONS.map((emoji) => {
      const had = (m.reactions?.[emoji] ?? []).includes(c.me);
      return action(`react-${emoji}`, t("msgReact", { emoji }), () => c.react(conv, m.seq, emoji, had).catch(showError), emoji);
    }),
    posts ? action("reply", t("msgReply"), () => startReply(conv, m.seq)) : null,
    action("thread", t("msgReplyThread"), () => openThread(conv, m.reply_to ?? m.seq)),
    mine && m.kind === "text" ? action("edit", t("msgEdit"), () => startEdit(conv, m)) : null,
    c.canRecall(m) || admin ? action("recall", t("msgRecall"), () => c.recall(conv, m.seq).catch(showError)) : null,
    mine && summary?.kind === "group" ? action("read-by", t("msgReadBy"), () => showReaders(conv, m)) : null,
  ]);
  wrap.append(menu);
  return wrap;
}

/**
 * @param {string} conv
 * @param {number} seq
 */
function startReply(conv, seq) {
  state.editing = null;
  state.replyTo = { conv, seq };
  renderBar();
  composerInput()?.focus();
}

/**
 * @param {string} conv
 * @param {Record<string, any>} m
 */
function startEdit(conv, m) {
  const input = composerInput();
  if (!input) return;
  state.replyTo = null;
  state.editing = { conv, seq: m.seq, draft: state.editing ? state.editing.draft : input.value, text: m.text ?? "" };
  input.value = state.editing.text;
  // As typed: counted, and never taken for the draft (the draft hook says so).
  input.dispatchEvent(new Event("input"));
  renderBar();
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

// ---- dialogs: earlier versions, readers ----

/**
 * @param {string} title
 * @param {HTMLElement} body
 */
function showDialog(title, body) {
  const { h } = ui;
  const back = document.activeElement;
  const dialog = /** @type {HTMLDialogElement} */ (
    h("dialog", { class: "msg-dialog", "aria-labelledby": "msg-dialog-title" }, [
      h("h3", { id: "msg-dialog-title", text: title }),
      body,
      h("form", { method: "dialog" }, [h("button", { type: "submit", class: "dialog-close", text: t("msgClose") })]),
    ])
  );
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (back instanceof HTMLElement && back.isConnected) back.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/**
 * @param {string} conv
 * @param {Record<string, any>} m
 */
async function showEdits(conv, m) {
  const { h } = ui;
  let versions;
  try {
    versions = await chat().edits(conv, m.seq);
  } catch (error) {
    showError(error);
    return;
  }
  const current = chat().message(conv, m.seq) ?? m;
  /**
   * @param {string} label
   * @param {Record<string, any>} v
   * @param {number} when
   */
  const item = (label, v, when) =>
    h("li", { class: "version" }, [
      h("span", { class: "version-label", text: label }),
      h("time", { datetime: new Date(when).toISOString(), text: ui.formatTime(when, true) }),
      h("p", { class: "version-text", text: v.text ?? "" }),
    ]);
  const list = h("ol", { class: "versions", id: "edit-versions" }, [
    current.recalled ? null : item(t("msgNow"), current, current.edited_ts ?? current.ts),
    ...[...versions].reverse().map((v, i) => item(i === versions.length - 1 ? t("msgOriginal") : "", v, v.edited_ts ?? v.ts)),
  ]);
  showDialog(t("msgVersions"), list);
}

/**
 * @param {string} conv
 * @param {Record<string, any>} m
 */
function showReaders(conv, m) {
  const { h } = ui;
  const readers = chat().readersOf(conv, m);
  const body = readers.length
    ? h("ul", { class: "readers", id: "readers" }, readers.map((/** @type {string} */ u) => h("li", { text: u })))
    : h("p", { class: "readers-none", id: "readers", text: t("msgNoReaders") });
  showDialog(t("msgReadersTitle"), body);
}

/** @param {any} error */
function showError(error) {
  const line = document.getElementById("msg-error");
  if (!line) return;
  line.textContent = t("msgFailed", { error: error?.code ?? error?.message ?? String(error) });
  line.hidden = false;
  clearTimeout(state.errorTimer);
  state.errorTimer = setTimeout(() => {
    line.hidden = true;
    line.textContent = "";
  }, ERROR_SHOW_MS);
}

// ---- jumping to a message, and back to the live end ----

/**
 * Open `conv` with the page around message `seq`, scroll to it and highlight it. Scrolling
 * down then loads the newer pages back to the live end.
 * @param {string} conv
 * @param {number} seq
 */
export async function jumpTo(conv, seq) {
  const c = chat();
  if (!c) return;
  if (!c.messages(conv).some((/** @type {any} */ m) => m.seq === seq)) {
    try {
      await c.loadAround(conv, seq);
    } catch (error) {
      showError(error);
      return;
    }
  }
  if (ui.app.current !== conv) await ui.openConversation(conv, false);
  if (ui.app.current !== conv) return;
  state.highlight = { conv, seq };
  clearTimeout(state.highlightTimer);
  state.highlightTimer = setTimeout(() => {
    state.highlight = null;
    document.querySelector("#messages li.highlight")?.classList.remove("highlight");
  }, HIGHLIGHT_MS);
  ui.renderMessages();
  const li = /** @type {HTMLElement | null} */ (document.querySelector(`#messages li[data-seq="${seq}"]`));
  if (li) {
    li.scrollIntoView({ block: "center" });
    li.focus({ preventScroll: true });
  }
  updateToLatest();
}

/** @param {Event} e */
function onScroll(e) {
  const list = /** @type {HTMLElement} */ (e.target);
  if (!(list instanceof HTMLElement) || list.id !== "messages") return;
  const conv = ui.app.current;
  const c = chat();
  if (!conv || !c || state.loadingNewer || !c.hasNewer(conv)) return;
  if (list.scrollHeight - list.scrollTop - list.clientHeight > NEAR_BOTTOM_PX) return;
  loadNewer(conv, list);
}

/**
 * @param {string} conv
 * @param {HTMLElement} list
 */
async function loadNewer(conv, list) {
  state.loadingNewer = true;
  try {
    await chat().loadNewer(conv);
  } catch (error) {
    showError(error);
  } finally {
    state.loadingNewer = false;
  }
  if (ui.app.current !== conv) return;
  // Stay where the reader is: the new page comes in below.
  const top = list.scrollTop;
  ui.renderMessages();
  list.scrollTop = top;
  updateToLatest();
}

function updateToLatest() {
  const button = document.getElementById("to-latest");
  const conv = ui.app.current;
  if (button) button.hidden = !conv || !chat()?.hasNewer(conv);
}

function toLatest() {
  const conv = ui.app.current;
  if (conv) ui.openConversation(conv).then(updateToLatest, showError);
}

// ---- threads ----

/**
 * @param {string} conv
 * @param {number} root
 */
async function openThread(conv, root) {
  if (state.thread) closeThread(false);
  state.thread = { conv, root };
  buildThreadPanel();
  renderThread();
  try {
    await chat().openThread(conv, root);
  } catch (error) {
    showError(error);
  }
  renderThread();
  /** @type {HTMLElement | null} */ (document.getElementById("thread-text"))?.focus();
}

/** @param {boolean} [refocus] */
function closeThread(refocus = true) {
  const open = state.thread;
  if (!open) return;
  chat()?.closeThread(open.conv, open.root);
  state.thread = null;
  document.getElementById("thread-panel")?.remove();
  if (refocus) /** @type {HTMLElement | null} */ (document.querySelector(`#messages li[data-seq="${open.root}"] .thread-count, #messages li[data-seq="${open.root}"] .msg-more`))?.focus();
}

function buildThreadPanel() {
  const pane = document.getElementById("conversation");
  const open = state.thread;
  if (!pane || !open) return;
  const { h } = ui;
  const form = /** @type {HTMLFormElement} */ (h("form", {
    id: "thread-form",
    class: "thread-form",
    onsubmit: (/** @type {Event} */ e) => {
      e.preventDefault();
      const text = input.value;
      if (!text.trim() || !state.thread || box.refused()) return;
      input.value = "";
      box.refresh();
      const { conv, root } = state.thread;
      const mentions = mentionsFor(conv, text);
      chat().send(conv, text, { reply_to: root, ...(mentions ? { mentions } : {}) });
    },
  }));
  // The composer's box (textbox.js): lines, Enter sends, the length the node takes.
  const box = messageBox(form, { id: "thread-text", h, t, lang: ui.app.lang });
  const input = box.input;
  form.append(
    box.count,
    h("label", { for: "thread-text", class: "sr-only", text: t("msgThreadReply") }),
    mentionOffers(input, "thread-mention-list"),
    input,
    h("button", { type: "submit", text: t("msgSendReply") }),
  );
  const panel = h("aside", {
    id: "thread-panel",
    class: "thread-panel",
    "aria-labelledby": "thread-title",
    onkeydown: (/** @type {KeyboardEvent} */ e) => {
      if (e.key === "Escape" && !e.defaultPrevented) closeThread();
    },
  }, [
    h("header", { class: "thread-header" }, [
      h("h3", { id: "thread-title", text: t("msgThread") }),
      h("button", { type: "button", id: "close-thread", "aria-label": t("msgCloseThread"), title: t("msgCloseThread"), text: "×", onclick: () => closeThread() }),
    ]),
    h("ol", { id: "thread-messages", class: "thread-messages", "aria-label": t("msgThread") }),
    form,
  ]);
  if (chat().conversation(open.conv)?.role === "follower") form.remove();
  pane.append(panel);
}

function renderThread() {
  const open = state.thread;
  const list = document.getElementById("thread-messages");
  if (!open || !list) return;
  const { h } = ui;
  const { root, replies } = chat().thread(open.conv, open.root);
  const pending = chat().outbox.filter((/** @type {any} */ i) => i.conv === open.conv && i.reply_to === open.root);
  /** @param {Record<string, any>} m */
  const item = (m) => {
    const li = h("li", { class: "msg" + (m.sender === chat().me ? " mine" : "") + (m === root ? " root" : ""), "data-seq": m.seq }, [
      h("span", { class: "sender", text: senderName(m) }),
      h("span", { class: "text" }, m.recalled ? [ui.preview(m)] : textParts(m)),
      m.edited && !m.recalled ? h("span", { class: "edited-mark", text: t("msgEdited") }) : null,
      h("time", { datetime: new Date(m.ts).toISOString(), text: ui.formatTime(m.ts) }),
    ]);
    const reactions = reactionRow(open.conv, m);
    if (reactions) li.append(reactions);
    return li;
  };
  list.replaceChildren(
    ...(root ? [item(root)] : [h("li", { class: "empty", text: t("msgLoading") })]),
    ...replies.map(item),
    ...pending.map((/** @type {any} */ i) => h("li", { class: "msg mine pending" }, [h("span", { class: "sender", text: t("you") }), h("span", { class: "text", text: i.text })])),
  );
  list.scrollTop = list.scrollHeight;
}
