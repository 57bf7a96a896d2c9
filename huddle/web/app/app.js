// Huddle's web app: chat and presence, built only on the SDK's public exports
// (/web/sdk/huddle.js). Plain DOM, no framework. `window.huddleApp` exposes the
// connection, chat device and presence watcher (for a console, and for the browser tests).

// The SDK's modules one by one rather than its entry (huddle.js), so that the chat screen does
// not load the files and calls modules it does not use.
import { ChatDevice } from "/web/sdk/chat.js";
import { HuddleConnection, devLogin, tokenIdentity } from "/web/sdk/connection.js";
import { PresenceWatcher } from "/web/sdk/presence.js";
import { leaveRoomsLeftBehind } from "/web/sdk/rooms.js";
import { LANGUAGES, addStrings, keepLanguage, pickLanguage, translator } from "./i18n.js";
import { icon } from "./dom.js";
import { typedIdentity } from "./identity.js";
import { messageBox, setMaxTextChars } from "./textbox.js";

// The app's feature modules, each `export function init(ui)` registering on `ui.hooks` (below).
// They load before the first screen is drawn; a feature that is heavy loads its own parts later.
const FEATURES = /** @type {string[]} */ ([
  "./calls.js",
  "./media.js",
  "./search.js",
  "./groups.js",
  "./messages.js",
]);

const SESSION_KEY = "huddle.session";
// Messages the node refused for good, kept per user (see keepFailed).
const FAILED_KEY = "huddle.failed.";
// The conversation open in this tab, per user (see keepOpen).
const OPEN_KEY = "huddle.open.";
const NEAR_TOP_PX = 40;

/** @type {{lang: string, t: (k: string, v?: Record<string, any>) => string, session: any, conn: HuddleConnection | null, chat: ChatDevice | null, presence: PresenceWatcher | null, current: string | null, draftTo: string | null, failed: Map<string, {item: Record<string, any>, code: string}>, loadingOlder: boolean, files: Promise<{sdk: any, files: any}> | null, uploads: Map<number, {name: string, conv: string | null, to: string | null, sent: number, total: number, error: string}>, signed: Map<string, {full: string, thumb: string, expires: number}>}} */
const app = {
  lang: "en",
  t: translator("en"),
  session: null,
  conn: null,
  chat: null,
  presence: null,
  current: null,
  draftTo: null,
  failed: new Map(),
  loadingOlder: false,
  files: null,
  uploads: new Map(),
  signed: new Map(),
};
// @ts-ignore: a debug hook
window.huddleApp = app;

/**
 * Where feature modules hook into the screens app.js draws. Each is a list of functions,
 * called in order with the element just built (and what it shows):
 * - signedIn(): after sign-in, the chat device and presence watcher exist; signedOut() before they go.
 * - top(header): the top bar; sidebar(actions): the conversation list's action row;
 * - listItem(button, summary): one conversation in the list;
 * - header(header, summary | null): an open conversation's header (summary null for a draft);
 * - composer(form): the message form; message(li, m, mine): one message in the history.
 * - send(text, options): the composer is about to send `text`; a hook may add to `options`
 *   (ChatDevice.send's: reply_to, mentions) or return true when it took the text itself (it
 *   then puts in the composer what should be there: the draft is neither sent nor dropped).
 * - draft(): the composer's text changed; a hook returns false when that text is not the
 *   conversation's draft (a message being edited): it is then not kept, nor shown as typing.
 * - language(): the user picked another language; the main screen is drawn again in it
 *   already, a hook says again in it what it drew itself.
 * A control inside a message that has a `data-focus` key keeps the focus when the history is drawn again.
 * @type {{signedIn: (() => void)[], signedOut: (() => void)[], top: ((el: HTMLElement) => void)[], sidebar: ((el: HTMLElement) => void)[], listItem: ((el: HTMLElement, summary: Record<string, any>) => void)[], header: ((el: HTMLElement, summary: Record<string, any> | null) => void)[], composer: ((el: HTMLElement) => void)[], message: ((el: HTMLElement, m: Record<string, any>, mine: boolean) => void)[], send: ((text: string, options: Record<string, any>) => boolean | void)[], draft: (() => boolean | void)[], language: (() => void)[]}}
 */
const hooks = { signedIn: [], signedOut: [], top: [], sidebar: [], listItem: [], header: [], composer: [], message: [], send: [], draft: [], language: [] };

/**
 * @template {any[]} A
 * @param {((...args: A) => void)[]} list
 * @param {A} args
 */
function runHooks(list, ...args) {
  for (const hook of list) {
    try {
      hook(...args);
    } catch (error) {
      console.error("app hook failed", error);
    }
  }
}

/**
 * Whether any hook of `list` answers `answer` (one that throws does not).
 * @template {any[]} A
 * @param {((...args: A) => boolean | void)[]} list
 * @param {boolean} answer
 * @param {A} args
 */
function anyHook(list, answer, ...args) {
  return list.some((hook) => {
    try {
      return hook(...args) === answer;
    } catch (error) {
      console.error("app hook failed", error);
      return false;
    }
  });
}

const root = /** @type {HTMLElement} */ (document.getElementById("app"));
const banner = /** @type {HTMLElement} */ (document.getElementById("banner"));

/**
 * A small element builder.
 * @param {string} tag
 * @param {Record<string, any>} [props]
 * @param {(Node | string | null | undefined | false)[]} [children]
 */
function h(tag, props = {}, children = []) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

// ---- language ----

/** @param {string} lang */
function setLanguage(lang) {
  app.lang = lang;
  app.t = translator(lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = app.t("appName");
}

// ---- sign in ----

function renderSignIn(error = "") {
  const { t } = app;
  const nameInput = h("input", { id: "signin-name", name: "name", required: true, maxlength: 64, autocomplete: "nickname" });
  const tokenInput = h("textarea", { id: "signin-token", name: "token", rows: 3, spellcheck: "false" });
  const status = h("p", { id: "signin-status", role: "alert", text: error });
  root.replaceChildren(
    h("section", { class: "signin" }, [
      h("h1", { text: t("appName") }),
      languagePicker(),
      h("h2", { text: t("signInTitle") }),
      h("form", {
        id: "signin-dev",
        onsubmit: (/** @type {Event} */ e) => {
          e.preventDefault();
          status.textContent = t("signingIn");
          signIn({ mode: "dev", name: /** @type {HTMLInputElement} */ (nameInput).value.trim() }).catch((err) =>
            renderSignIn(t("signInFailed", { error: err.message })),
          );
        },
      }, [
        h("label", { for: "signin-name", text: t("nameLabel") }),
        nameInput,
        h("button", { type: "submit", text: t("signIn") }),
        h("p", { class: "hint", text: t("devHint") }),
      ]),
      h("form", {
        id: "signin-token-form",
        onsubmit: (/** @type {Event} */ e) => {
          e.preventDefault();
          status.textContent = t("signingIn");
          signIn({ mode: "token", token: /** @type {HTMLTextAreaElement} */ (tokenInput).value.trim() }).catch((err) =>
            renderSignIn(t("signInFailed", { error: err.message })),
          );
        },
      }, [
        h("label", { for: "signin-token", text: t("tokenLabel") }),
        tokenInput,
        h("button", { type: "submit", text: t("useToken") }),
      ]),
      status,
    ]),
  );
  nameInput.focus();
}

/**
 * Sign in, or resume a kept session (`resume`): a resumed session shows what the device kept
 * (conversations, unsent messages) at once, while the connection comes up.
 * @param {{mode: "dev" | "token", name?: string, token: string, identity?: string}} session
 * @param {{resume?: boolean}} [options]
 */
async function signIn(session, options = {}) {
  if (session.mode === "dev" && !session.token) {
    const login = await devLogin("", session.name ?? "");
    session = { ...session, token: login.token, identity: login.identity };
  }
  const identity = session.identity ?? tokenIdentity(session.token);
  if (!identity) throw new Error("not a Huddle access token");
  session = { ...session, identity };
  const name = session.name ?? "";
  const tokenProvider = session.mode === "dev" ? async () => (await devLogin("", name)).token : undefined;
  const conn = new HuddleConnection({ token: session.token, tokenProvider });
  // A page reloaded mid-call is still in the call for the node, without its media: leave it
  // (the others saw a frozen tile, and joining again was refused). Before connect: the node
  // says so right after the hello reply.
  leaveRoomsLeftBehind(conn);
  conn.on("state", () => updateBanner());
  conn.on("closed", () => updateBanner());
  conn.on("ready", () => {
    // The node's text limit, for the message boxes' counters (each hello tells it anew).
    setMaxTextChars(conn.hello?.max_text_chars);
    renderMe();
  });
  const connected = conn.connect();
  if (options.resume) {
    // "closed": the user signed out while it came up, which is no failure to report.
    connected.catch((error) => {
      if (error?.code !== "closed") signOut(app.t("signInFailed", { error: error.message }));
    });
  } else {
    await connected;
  }
  await featuresReady;
  app.session = session;
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  loadFailed();
  app.conn = conn;
  app.presence = new PresenceWatcher(conn);
  app.chat = new ChatDevice(conn, { identity });
  const chat = app.chat;
  renderMain();
  updateBanner();
  chat.on("conversations", () => {
    renderList();
    watchPeers();
    if (app.current) renderHeader();
  });
  chat.on("messages", ({ conv }) => conv === app.current && renderMessages());
  chat.on("outbox", () => (app.current || app.draftTo) && renderMessages());
  chat.on("receipt", ({ conv }) => conv === app.current && renderMessages());
  chat.on("typing", ({ conv }) => conv === app.current && renderTyping());
  chat.on("gap", ({ conv }) => conv === app.current && renderMessages());
  chat.on("sent", ({ item, reply }) => {
    if (item.to && app.draftTo === item.to) openConversation(reply.conv);
  });
  chat.on("send_failed", ({ item, error }) => {
    app.failed.set(item.client_id, { item, code: `${error?.code ?? "internal"}` });
    keepFailed();
    renderMessages();
  });
  chat.on("synced", () => {
    if (app.current) markRead();
  });
  const firstSync = chat.on("synced", () => {
    firstSync();
    reopen();
  });
  app.presence.on("presence", () => {
    renderList();
    if (app.current) renderHeader();
  });
  runHooks(hooks.signedIn);
  await chat.start();
}

/** @param {string} [error] */
function signOut(error = "") {
  if (app.session) keepOpen(null);
  if (app.chat) runHooks(hooks.signedOut);
  app.chat?.stop();
  app.presence?.stop();
  app.conn?.close();
  app.conn = app.chat = app.presence = null;
  app.current = app.draftTo = null;
  app.failed.clear();
  app.files = null;
  app.uploads.clear();
  app.signed.clear();
  localStorage.removeItem(SESSION_KEY);
  updateBanner();
  renderSignIn(error);
}

// ---- main view ----

function languagePicker() {
  const select = h(
    "select",
    {
      id: "lang",
      onchange: (/** @type {Event} */ e) => {
        const lang = /** @type {HTMLSelectElement} */ (e.target).value;
        keepLanguage(lang);
        setLanguage(lang);
        if (app.chat) {
          renderMain();
          renderList();
          if (app.current) openConversation(app.current, false);
        } else renderSignIn();
        updateBanner();
        runHooks(hooks.language);
      },
    },
    Object.entries(LANGUAGES).map(([code, label]) => h("option", { value: code, selected: code === app.lang, text: label })),
  );
  return h("span", { class: "lang" }, [h("label", { for: "lang", class: "sr-only", text: app.t("language") }), select]);
}

function renderMe() {
  const me = document.getElementById("me");
  if (me) me.textContent = app.t("signedInAs", { name: app.conn?.hello?.name ?? app.session?.name ?? app.session?.identity ?? "" });
}

function renderMain() {
  const { t } = app;
  const status = h(
    "select",
    {
      id: "my-status",
      onchange: (/** @type {Event} */ e) =>
        app.presence?.setStatus(/** @type {any} */ (e.target).value).catch(() => {}),
    },
    ["online", "away"].map((s) => h("option", { value: s, selected: app.conn?.status === s, text: t(s) })),
  );
  const top = h("header", { class: "top" }, [
    h("h1", { text: t("appName") }),
    h("span", { class: "me", id: "me" }),
    h("span", {}, [h("label", { for: "my-status", class: "sr-only", text: t("status") }), status]),
    languagePicker(),
    h("button", { type: "button", id: "signout", onclick: () => signOut(), text: t("signOut") }),
  ]);
  const actions = h("div", { class: "actions" }, [
    h("button", { type: "button", id: "new-chat", onclick: () => showForm("chat"), text: t("newChat") }),
  ]);
  runHooks(hooks.top, top);
  runHooks(hooks.sidebar, actions);
  root.replaceChildren(
    top,
    h("div", { class: "panes" }, [
      h("nav", { class: "sidebar", "aria-labelledby": "convs-title" }, [
        h("h2", { id: "convs-title", text: t("conversations") }),
        actions,
        h("div", { id: "form-slot" }),
        h("ul", { id: "convs", class: "convs" }),
      ]),
      h("section", { class: "conversation", id: "conversation", "aria-live": "off" }, [
        h("p", { class: "empty", text: t("noConversation") }),
      ]),
    ]),
  );
  renderMe();
}

/** @param {"chat"} which the forms of groups and channels are groups.js's */
function showForm(which) {
  const { t } = app;
  const slot = /** @type {HTMLElement} */ (document.getElementById("form-slot"));
  const close = () => slot.replaceChildren();
  if (which === "chat") {
    const peer = h("input", { id: "chat-peer", required: true, maxlength: 128, "aria-describedby": "chat-form-error" });
    const error = h("p", { id: "chat-form-error", class: "form-error", role: "alert" });
    slot.replaceChildren(
      h("form", {
        id: "chat-form",
        class: "inline-form",
        onsubmit: (/** @type {Event} */ e) => {
          e.preventDefault();
          const typed = /** @type {HTMLInputElement} */ (peer).value.trim();
          // Said here, before anything is written: the node would refuse the first message.
          const to = typedIdentity(typed, app.session?.mode === "dev");
          error.textContent = !to ? t("notAnIdentity", { text: typed }) : to === app.chat?.me ? t("chatWithYourself") : "";
          if (error.textContent) {
            peer.focus();
            return;
          }
          close();
          const existing = app.chat?.conversations().find((c) => c.kind === "direct" && c.peer === to);
          if (existing) openConversation(existing.conv);
          else openDraft(to);
        },
      }, [
        h("label", { for: "chat-peer", text: t("chatWith") }),
        peer,
        error,
        h("button", { type: "submit", text: t("start") }),
        h("button", { type: "button", onclick: close, text: t("cancel") }),
      ]),
    );
    peer.focus();
  }
}

// ---- conversation list ----

/** @param {Record<string, any>} summary */
function presenceDot(summary) {
  if (summary.kind !== "direct" || !summary.peer) return null;
  const status = app.presence?.status(summary.peer) ?? "offline";
  const label = app.t(status === "offline" ? "offlineStatus" : status);
  return h("span", { class: `dot ${status}`, role: "img", "aria-label": label, title: label });
}

/** @param {Record<string, any> | null | undefined} m */
function preview(m) {
  if (!m) return "";
  if (m.recalled) return app.t("recalled");
  if (m.kind === "system") return systemText(m);
  if (m.media && !m.text && m.kind === "voice") return app.t("mediaVoiceMessage");
  if (m.media && !m.text) return app.t(m.kind === "image" ? "photo" : "fileNamed", { name: m.media.name });
  return m.text ?? app.t("attachment", { kind: m.kind });
}

/**
 * How feature modules word the system messages of their own events (`system.event` -> text).
 * @type {Record<string, (m: Record<string, any>) => string>}
 */
const systemTexts = {};

/** @param {Record<string, any>} m */
function systemText(m) {
  const s = m.system ?? {};
  if (systemTexts[s.event]) return systemTexts[s.event](m);
  const users = (s.users ?? []).join(", ");
  switch (s.event) {
    case "created":
      return app.t("created", { by: s.by, name: s.name });
    case "renamed":
      return app.t("renamed", { by: s.by, name: s.name });
    case "member_joined":
      return app.t("joined", { by: s.by, users });
    case "member_removed":
      return app.t("removed", { by: s.by, users });
    case "member_left":
      return s.role === "owner" && s.users?.length ? app.t("leftOwner", { by: s.by, users }) : app.t("left", { by: s.by });
    case "role_changed":
      return app.t(s.role === "admin" ? "madeAdmin" : "madeMember", { by: s.by, users });
    default:
      return app.t("systemOther", { by: s.by ?? m.sender, event: s.event });
  }
}

function renderList() {
  const list = document.getElementById("convs");
  if (!list || !app.chat) return;
  const convs = app.chat.conversations();
  if (!convs.length) {
    list.replaceChildren(h("li", { class: "empty", text: app.t("noConversations") }));
    return;
  }
  list.replaceChildren(
    ...convs.map((c) => {
      const button = h("button", {
        type: "button",
        class: "conv" + (c.conv === app.current ? " current" : ""),
        "data-conv": c.conv,
        "aria-current": c.conv === app.current ? "true" : null,
        onclick: () => openConversation(c.conv),
      }, [
        presenceDot(c),
        h("span", { class: "conv-name", text: c.name }, [
          c.muted ? h("span", { class: "muted", role: "img", "aria-label": app.t("muted"), text: " 🔕" }) : null,
        ]),
        c.unread && c.conv !== app.current
          ? h("span", { class: "badge", "aria-label": app.t("unread", { n: c.unread }), text: String(c.unread) })
          : null,
        h("span", { class: "conv-last", text: preview(c.last) }),
      ]);
      runHooks(hooks.listItem, button, c);
      return h("li", {}, [button]);
    }),
  );
}

function watchPeers() {
  const peers = (app.chat?.conversations() ?? []).filter((c) => c.kind === "direct" && c.peer).map((c) => c.peer);
  if (peers.length) app.presence?.subscribe(peers).catch(() => {});
}

// ---- what was open, across a reload ----

/**
 * Remember what is open, for a reload to open it again: per tab (sessionStorage, another tab
 * has its own) and per user.
 * @param {string | null} what a conversation's id, "to:" and a user for a draft, or null
 */
function keepOpen(what) {
  if (what) sessionStorage.setItem(openKey(), what);
  else sessionStorage.removeItem(openKey());
}

function openKey() {
  return OPEN_KEY + (app.session?.identity ?? "");
}

/**
 * Open again what was open before the reload, once the first sync has said what exists: a
 * conversation the user is still in, or the draft to a user (their conversation if one has
 * come since). Not when the user has opened something meanwhile.
 */
function reopen() {
  const kept = sessionStorage.getItem(openKey());
  if (!kept || !app.chat || app.current || app.draftTo) return;
  const to = kept.startsWith("to:") ? kept.slice(3) : null;
  const conv = to ? app.chat.conversations().find((c) => c.kind === "direct" && c.peer === to)?.conv : kept;
  if (conv && app.chat.conversation(conv)) openConversation(conv);
  else if (to) openDraft(to);
  else keepOpen(null);
}

// ---- one conversation ----

/** @param {string} to */
function openDraft(to) {
  app.current = null;
  app.draftTo = to;
  keepOpen("to:" + to);
  document.body.classList.add("show-conversation");
  renderConversationShell(to);
  renderMessages();
}

/**
 * @param {string} conv
 * @param {boolean} [load]
 */
async function openConversation(conv, load = true) {
  if (!app.chat) return;
  app.current = conv;
  app.draftTo = null;
  keepOpen(conv);
  document.body.classList.add("show-conversation");
  const summary = app.chat.conversation(conv);
  renderConversationShell(summary?.name ?? conv);
  renderList();
  // The members' read positions ("read by"), for what was read before this device came.
  if (summary && summary.kind !== "channel") app.chat.members(conv).catch(() => {});
  if (load || !app.chat.messages(conv).length) await app.chat.openConversation(conv);
  if (app.current !== conv) return;
  renderMessages(true);
  markRead();
}

/** @param {string} title */
function renderConversationShell(title) {
  const { t } = app;
  const pane = document.getElementById("conversation");
  if (!pane) return;
  // What is typed but not sent survives a reload: kept per user and conversation.
  const draftKey = `huddle.draft.${app.session?.identity}.${app.current ?? "to:" + app.draftTo}`;
  const messages = h("ol", { id: "messages", class: "messages", "aria-label": t("messages"), tabindex: 0 });
  messages.addEventListener("scroll", () => {
    if (messages.scrollTop < NEAR_TOP_PX) loadOlder();
  });
  const header = h("header", { class: "conv-header" }, [
    h("button", {
      type: "button",
      class: "back",
      onclick: () => {
        document.body.classList.remove("show-conversation");
        // The user went back to the list: a reload stays there.
        keepOpen(null);
        document.getElementById("convs")?.querySelector("button")?.focus();
      },
      text: t("back"),
    }),
    h("h2", { id: "conv-title", text: title }),
    h("span", { id: "conv-status", class: "conv-status" }),
  ]);
  const composer = /** @type {HTMLFormElement} */ (h("form", {
    id: "composer",
    class: "composer",
    onsubmit: (/** @type {Event} */ e) => {
      e.preventDefault();
      const text = input.value;
      if (!text.trim() || !app.chat || box.refused()) return;
      /** @type {Record<string, any>} */
      const options = {};
      // Before the composer is emptied: text a hook takes (an edit) was not the draft.
      if (anyHook(hooks.send, true, text, options)) return;
      input.value = "";
      box.refresh();
      localStorage.removeItem(draftKey);
      if (app.current) app.chat.send(app.current, text, options);
      else if (app.draftTo) app.chat.send(null, text, { ...options, to: app.draftTo });
    },
  }));
  const box = messageBox(composer, { id: "composer-text", h, t, lang: app.lang });
  const input = box.input;
  input.addEventListener("input", () => {
    if (anyHook(hooks.draft, false)) return;
    if (input.value) localStorage.setItem(draftKey, input.value);
    else localStorage.removeItem(draftKey);
    if (app.current) app.chat?.typing(app.current, Boolean(input.value));
  });
  input.value = localStorage.getItem(draftKey) ?? "";
  composer.append(
    box.count,
    h("input", {
      type: "file",
      id: "attach-input",
      class: "sr-only",
      multiple: true,
      tabindex: -1,
      "aria-label": t("attach"),
      onchange: (/** @type {Event} */ e) => {
        const picker = /** @type {HTMLInputElement} */ (e.target);
        sendFiles([...(picker.files ?? [])]);
        picker.value = "";
      },
    }),
    h("button", {
      type: "button",
      id: "attach",
      class: "attach",
      "aria-label": t("attach"),
      title: t("attach"),
      onclick: () => document.getElementById("attach-input")?.click(),
    }, [clipIcon()]),
    h("label", { for: "composer-text", class: "sr-only", text: t("message") }),
    input,
    h("button", { type: "submit", text: t("send") }),
  );
  runHooks(hooks.header, header, app.current ? (app.chat?.conversation(app.current) ?? null) : null);
  runHooks(hooks.composer, composer);
  // Counted once the hooks are done: one may have put other text there (an edit going on).
  box.refresh();
  pane.replaceChildren(
    header,
    h("button", { type: "button", id: "load-older", class: "load-older", onclick: () => loadOlder(), text: t("loadOlder") }),
    messages,
    h("p", { id: "typing", class: "typing", "aria-live": "polite" }),
    h("ul", { id: "uploads", class: "uploads", "aria-label": t("uploads"), hidden: true }),
    composer,
  );
  pane.ondragover = (e) => {
    if (!e.dataTransfer?.types.includes("Files")) return;
    e.preventDefault();
    pane.classList.add("dropping");
  };
  pane.ondragleave = (e) => {
    if (e.target === pane) pane.classList.remove("dropping");
  };
  pane.ondrop = (e) => {
    pane.classList.remove("dropping");
    const dropped = [...(e.dataTransfer?.files ?? [])];
    if (!dropped.length) return;
    e.preventDefault();
    sendFiles(dropped);
  };
  pane.onpaste = (e) => {
    const pasted = [...(e.clipboardData?.files ?? [])];
    if (!pasted.length) return;
    e.preventDefault();
    sendFiles(pasted);
  };
  attachmentsModule?.renderUploads();
  renderHeader();
  input.focus();
}

function renderHeader() {
  const title = document.getElementById("conv-title");
  const status = document.getElementById("conv-status");
  if (!title || !status || !app.chat) return;
  const summary = app.current ? app.chat.conversation(app.current) : null;
  if (summary) title.textContent = summary.name;
  const peer = summary?.kind === "direct" ? summary.peer : app.draftTo;
  if (!peer || !app.presence) {
    status.textContent = "";
    return;
  }
  const state = app.presence.status(peer);
  const seen = app.presence.lastSeen(peer);
  status.textContent =
    state === "offline" && seen
      ? app.t("lastSeen", { time: formatTime(seen.getTime(), true) })
      : app.t(state === "offline" ? "offlineStatus" : state);
}

/**
 * @param {number} ms
 * @param {boolean} [withDate]
 */
function formatTime(ms, withDate = false) {
  const options = withDate
    ? /** @type {const} */ ({ month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })
    : /** @type {const} */ ({ hour: "2-digit", minute: "2-digit" });
  return new Intl.DateTimeFormat(app.lang === "zh" ? "zh-CN" : "en", options).format(new Date(ms));
}

/** @param {boolean} [toBottom] */
function renderMessages(toBottom = false) {
  const list = /** @type {HTMLOListElement | null} */ (document.getElementById("messages"));
  if (!list || !app.chat) return;
  const chat = app.chat;
  const conv = app.current;
  const me = chat.me;
  const atBottom = toBottom || list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  const oldHeight = list.scrollHeight;
  const oldTop = list.scrollTop;
  const firstBefore = list.querySelector("li[data-seq]")?.getAttribute("data-seq");
  const focused = document.activeElement;
  const focusAt = focused && list.contains(focused)
    ? { seq: focused.closest("li[data-seq]")?.getAttribute("data-seq"), key: focused.getAttribute("data-focus") }
    : null;
  const messages = conv ? chat.messages(conv) : [];
  const pending = chat.outbox.filter(onScreen);
  const summary = conv ? chat.conversation(conv) : null;
  const reads = conv ? chat.readBy(conv) : new Map();
  const lastMine = [...messages].reverse().find((m) => m.sender === me && m.kind !== "system");
  const items = messages.map((m) => {
    const mine = m.sender === me;
    const li = h("li", { class: "msg" + (mine ? " mine" : "") + (m.kind === "system" ? " system" : ""), "data-seq": m.seq }, [
      m.kind === "system" ? null : h("span", { class: "sender", text: mine ? app.t("you") : m.sender }),
      m.media && !m.recalled ? mediaSlot(m) : null,
      h("span", { class: "text", text: m.kind === "system" ? systemText(m) : m.media ? (m.text ?? "") : preview(m) }),
      h("time", { datetime: new Date(m.ts).toISOString(), text: formatTime(m.ts) }),
    ]);
    runHooks(hooks.message, li, m, mine);
    if (m === lastMine) {
      const readers = [...reads.entries()].filter(([user, seq]) => user !== me && seq >= m.seq).length;
      if (readers) {
        const text = summary?.kind === "direct" ? app.t("read") : app.t("readBy", { n: readers });
        li.append(h("span", { class: "read-state", text }));
      }
    }
    return li;
  });
  for (const item of pending) {
    items.push(
      h("li", { class: "msg mine pending", "data-client-id": item.client_id }, [
        h("span", { class: "sender", text: app.t("you") }),
        h("span", { class: "text", text: outboxText(item) }),
        h("span", { class: "read-state", text: app.t("sending") }),
      ]),
    );
  }
  for (const { item, code } of app.failed.values()) {
    if (onScreen(item) && !pending.some((i) => i.client_id === item.client_id)) items.push(failedItem(item, code));
  }
  if (!items.length) items.push(h("li", { class: "empty", text: app.t("noMessages") }));
  list.replaceChildren(...items);
  if (focusAt?.seq && focusAt.key) {
    const again = list.querySelector(`li[data-seq="${focusAt.seq}"] [data-focus="${focusAt.key}"]`);
    if (again instanceof HTMLElement) again.focus({ preventScroll: true });
  }
  const older = document.getElementById("load-older");
  if (older) older.hidden = !conv || !chat.hasOlder(conv);
  const firstAfter = list.querySelector("li[data-seq]")?.getAttribute("data-seq");
  if (atBottom) list.scrollTop = list.scrollHeight;
  else if (firstBefore && firstAfter !== firstBefore) list.scrollTop = oldTop + (list.scrollHeight - oldHeight);
  renderTyping();
  if (conv && document.visibilityState === "visible") markRead();
  // Pages that do not fill the list yet leave nothing to scroll up by: load more now.
  if (conv && chat.hasOlder(conv) && list.scrollHeight <= list.clientHeight + NEAR_TOP_PX) loadOlder();
}

/**
 * Whether an outbox item belongs to the conversation on screen: one sent `to` a user, to the
 * draft with that user or to the direct conversation with them.
 * @param {Record<string, any>} item
 */
function onScreen(item) {
  if (!app.current) return !item.conv && item.to === app.draftTo;
  if (item.conv) return item.conv === app.current;
  const summary = app.chat?.conversation(app.current);
  return summary?.kind === "direct" && item.to === summary.peer;
}

/** @param {Record<string, any>} item */
function outboxText(item) {
  return item.text || (item.kind === "voice" ? app.t("mediaVoiceMessage") : item.media ? app.t("attachment", { kind: item.kind }) : "");
}

// ---- messages refused for good ----

// The SDK drops a message the node refused from its outbox and says why (send_failed). The
// app keeps it, text and all, until the user sends it again, takes it back to edit, or
// deletes it; across a reload too.

function failedKey() {
  return FAILED_KEY + (app.session?.identity ?? "");
}

function loadFailed() {
  app.failed.clear();
  try {
    for (const entry of JSON.parse(localStorage.getItem(failedKey()) ?? "[]")) app.failed.set(entry.item.client_id, entry);
  } catch (error) {
    console.error("kept unsent messages unreadable", error);
  }
}

function keepFailed() {
  if (app.failed.size) localStorage.setItem(failedKey(), JSON.stringify([...app.failed.values()]));
  else localStorage.removeItem(failedKey());
}

/**
 * Why a message was not sent, in words (the code where there are none).
 * @param {string} code
 */
function sendError(code) {
  const key = `sendError_${code}`;
  const words = app.t(key);
  return words === key ? code : words;
}

/**
 * @param {Record<string, any>} item
 * @param {string} code
 */
function failedItem(item, code) {
  const id = item.client_id;
  const action = (/** @type {string} */ key, /** @type {() => void} */ run) =>
    h("button", { type: "button", class: `failed-action ${key}`, "data-action": key, text: app.t(`failed_${key}`), onclick: run });
  return h("li", { class: "msg mine failed", "data-client-id": id }, [
    h("span", { class: "sender", text: app.t("you") }),
    h("span", { class: "text", text: outboxText(item) }),
    h("span", { class: "send-error", text: app.t("notSent", { error: sendError(code) }) }),
    h("span", { class: "failed-actions" }, [
      action("retry", () => retryFailed(id)),
      // Text only: a file's message is sent again as it was, or deleted.
      item.media ? null : action("edit", () => editFailed(id)),
      action("delete", () => dropFailed(id)),
    ]),
  ]);
}

/**
 * Take a refused message out of the list, and give the composer the focus its button had.
 * @param {string} clientId
 */
function dropFailed(clientId) {
  const entry = app.failed.get(clientId);
  app.failed.delete(clientId);
  keepFailed();
  renderMessages();
  document.getElementById("composer-text")?.focus();
  return entry;
}

/**
 * Send a refused message again, as it was: with its `client_id`, so that the node stores it
 * once even if the refusal was an `internal` error after all.
 * @param {string} clientId
 */
function retryFailed(clientId) {
  const entry = dropFailed(clientId);
  if (!entry || !app.chat) return;
  const { item } = entry;
  app.chat
    .send(item.conv, item.text, { to: item.to ?? undefined, kind: item.kind, media: item.media, reply_to: item.reply_to, mentions: item.mentions, client_id: item.client_id })
    .catch((/** @type {any} */ error) => console.error("send again failed", error));
  renderMessages(true);
}

/**
 * Put a refused message's text back in the composer, after what is typed there (a draft is
 * never overwritten), to change it and send it anew.
 * @param {string} clientId
 */
function editFailed(clientId) {
  const input = /** @type {HTMLTextAreaElement | null} */ (document.getElementById("composer-text"));
  if (!input) return;
  const entry = dropFailed(clientId);
  if (!entry) return;
  const typed = input.value.trimEnd();
  input.value = (typed ? typed + " " : "") + entry.item.text;
  input.dispatchEvent(new Event("input"));
  input.setSelectionRange(input.value.length, input.value.length);
}

// ---- files (attachments.js, loaded on first use) ----

/** @type {any} */
let attachmentsModule = null;
/** @type {Promise<any> | null} */
let attachmentsLoading = null;

/** The files UI, and through it the SDK's files module: neither is part of the first screen. */
function attachments() {
  if (!attachmentsLoading) {
    attachmentsLoading = import("./attachments.js").then((module) => {
      module.init({ app, h });
      attachmentsModule = module;
      return module;
    });
    attachmentsLoading.catch(() => (attachmentsLoading = null));
  }
  return attachmentsLoading;
}

/** @param {File[]} list */
function sendFiles(list) {
  if (list.length) attachments().then((module) => module.sendFiles(list));
}

/**
 * A message's file, or a placeholder with its name until the files UI has loaded.
 * @param {Record<string, any>} m
 */
function mediaSlot(m) {
  if (attachmentsModule) return attachmentsModule.mediaView(m);
  attachments().then(() => renderMessages(), () => {});
  return h("span", { class: "media-loading", text: m.media.name ?? "" });
}

/** A paper clip, drawn rather than an emoji (not every system has an emoji font). */
function clipIcon() {
  return icon("M21 11.5l-8.5 8.5a5 5 0 0 1-7-7L14 4.5a3.5 3.5 0 0 1 5 5L10.5 18a2 2 0 0 1-3-3L15 7.5", { stroked: true });
}

async function loadOlder() {
  const conv = app.current;
  if (!conv || !app.chat || app.loadingOlder || !app.chat.hasOlder(conv)) return;
  app.loadingOlder = true;
  try {
    await app.chat.loadOlder(conv);
  } finally {
    app.loadingOlder = false;
  }
  if (app.current === conv) renderMessages();
}

function renderTyping() {
  const line = document.getElementById("typing");
  if (!line || !app.chat || !app.current) return;
  const users = app.chat.typingIn(app.current);
  line.textContent = !users.length
    ? ""
    : users.length === 1
      ? app.t("typingOne", { user: users[0] })
      : app.t("typingMany", { users: users.join(", ") });
}

function markRead() {
  const conv = app.current;
  if (!conv || !app.chat) return;
  const messages = app.chat.messages(conv);
  const last = messages[messages.length - 1];
  if (last) app.chat.read(conv, last.seq).catch(() => {});
}

// ---- banner ----

function updateBanner() {
  const conn = app.conn;
  let text = "";
  if (conn && conn.state === "closed" && conn.closeReason) {
    text = conn.closeReason === "replaced" ? app.t("replaced") : app.t("closed", { reason: conn.closeReason });
  } else if (conn && navigator.onLine === false) {
    text = app.t("offline");
  } else if (conn && (conn.state === "reconnecting" || conn.state === "connecting")) {
    text = app.t("reconnecting");
  }
  banner.replaceChildren(text);
  if (conn && conn.state === "closed" && conn.closeReason === "replaced") {
    // The other tab keeps working; this one may take the device back.
    const again = h("button", { type: "button", id: "use-here", text: app.t("useHere") });
    again.addEventListener("click", () => {
      conn.connect().catch(() => {});
      updateBanner();
    });
    banner.append(" ", again);
  }
  banner.hidden = !text;
}

window.addEventListener("online", updateBanner);
window.addEventListener("offline", updateBanner);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") markRead();
});

// ---- feature modules ----

/** What feature modules get from app.js (see FEATURES and hooks above). */
const ui = {
  app,
  h,
  hooks,
  addStrings,
  t: (/** @type {string} */ key, /** @type {Record<string, any>} */ vars = {}) => app.t(key, vars),
  formatTime,
  preview,
  systemText,
  systemTexts,
  renderList,
  renderHeader,
  renderMessages,
  openConversation,
  openDraft,
  markRead,
  attachments,
};

// ---- start ----

// Feature modules load while the sign-in screen shows or the connection comes up; the main
// screen waits for them (signIn).
const featuresReady = Promise.all(FEATURES.map(async (path) => (await import(path)).init(ui)));
featuresReady.catch((error) => console.error("app feature failed to load", error));
setLanguage(pickLanguage());
const kept = localStorage.getItem(SESSION_KEY);
if (kept) {
  signIn(JSON.parse(kept), { resume: true }).catch((error) => {
    localStorage.removeItem(SESSION_KEY);
    renderSignIn(app.t("signInFailed", { error: error.message }));
  });
} else {
  renderSignIn();
}
