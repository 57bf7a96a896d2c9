// Groups and channels: new group, new channel and follow a channel (over the conversation
// list); mute and details from a conversation's header; the details panel lists members with
// their roles and offers what the user's role may do (rename, add, remove, change roles,
// leave or unfollow). Followers of a channel see that it is read-only instead of a composer.
// The server judges every request: what it refuses is shown in words, never dropped.

import { allowed } from "/web/sdk/roles.js";
import { stylesheet } from "./dom.js";
import { typedIdentities } from "./identity.js";

await stylesheet(new URL("./groups.css", import.meta.url));

/** @type {any} what app.js gives feature modules */
let ui = null;
/** Conversations in the list at the last change, to tell "removed" from "not yet listed". */
let known = new Map();
/** The conversation the user just left here, so that its pane says "you left". */
let leaving = "";
/** The details panel (groups-panel.js), loaded the first time one is opened. */
/** @type {any} */
let panelModule = null;
/** @type {Promise<any> | null} */
let panelLoading = null;

/** @param {any} from */
export function init(from) {
  ui = from;
  ui.addStrings(STRINGS);
  ui.hooks.sidebar.push(sidebarButtons);
  ui.hooks.header.push(headerControls);
  ui.hooks.composer.push(composerState);
  ui.hooks.signedIn.push(() => {
    const chat = ui.app.chat;
    known = new Map();
    chat.on("conversations", changed);
    chat.on("message", (/** @type {{conv: string, message: Record<string, any>}} */ { conv, message }) =>
      panelModule?.messageCame(conv, message),
    );
  });
  ui.hooks.signedOut.push(() => {
    panelModule?.closePanel();
    known = new Map();
  });
}

const t = (/** @type {string} */ key, /** @type {Record<string, any>} */ vars = {}) => ui.t(key, vars);

/**
 * The identities typed in a members field, as signing in makes them (identity.js); `bad`
 * lists what cannot be one.
 * @param {string} text
 */
export function identities(text) {
  return typedIdentities(text, ui.app.session?.mode === "dev");
}

/**
 * A refusal in words: the server's code, said for what was tried.
 * @param {any} error
 * @param {string} action rename, add, remove, role, leave, follow, create, mute
 */
export function refusal(error, action) {
  const code = error?.code ?? "";
  const message = error?.message ?? String(error);
  const key = {
    forbidden: `forbidden_${action}`,
    unknown_conversation: "unknownChannel",
    conversation_full: "conversationFull",
    conflict: "conflictRetry",
  }[/** @type {string} */ (code)];
  // A key with no words for this action (the translator gives the key back) says the server's.
  const reason = key && t(key) !== key ? t(key) : "";
  return t("refused", { reason: reason || (code ? `${message} (${code})` : message) });
}

// ---- over the conversation list ----

/** @param {HTMLElement} actions */
function sidebarButtons(actions) {
  actions.append(
    ui.h("button", { type: "button", id: "new-group", onclick: () => createForm("group"), text: t("newGroup") }),
    ui.h("button", { type: "button", id: "new-channel", onclick: () => createForm("channel"), text: t("newChannel") }),
    ui.h("button", { type: "button", id: "follow-channel", onclick: followForm, text: t("followChannel") }),
  );
}

/**
 * A form in the list's form slot, with its error line.
 * @param {string} id
 * @param {(Node | null)[]} fields
 * @param {string} submit
 * @param {(error: HTMLElement, button: HTMLButtonElement) => Promise<void>} onsubmit
 */
function slotForm(id, fields, submit, onsubmit) {
  const { h } = ui;
  const slot = /** @type {HTMLElement} */ (document.getElementById("form-slot"));
  const error = h("p", { class: "form-error", role: "alert", id: `${id}-error` });
  const button = /** @type {HTMLButtonElement} */ (h("button", { type: "submit", text: submit }));
  const form = h("form", {
    id,
    class: "inline-form",
    onsubmit: async (/** @type {Event} */ e) => {
      e.preventDefault();
      error.textContent = "";
      button.disabled = true;
      try {
        await onsubmit(error, button);
      } finally {
        button.disabled = false;
      }
    },
  }, [...fields, error, h("span", { class: "form-buttons" }, [button, h("button", { type: "button", onclick: () => slot.replaceChildren(), text: t("cancel") })])]);
  slot.replaceChildren(form);
  /** @type {HTMLElement | null} */ (form.querySelector("input"))?.focus();
}

/** @param {"group" | "channel"} kind */
function createForm(kind) {
  const { h } = ui;
  const name = /** @type {HTMLInputElement} */ (h("input", { id: `${kind}-name`, required: true, maxlength: 128 }));
  const members = /** @type {HTMLInputElement} */ (h("input", { id: `${kind}-members`, placeholder: "bob, carol", autocomplete: "off" }));
  slotForm(`${kind}-form`, [
    h("label", { for: `${kind}-name`, text: t(kind === "group" ? "groupName" : "channelName") }),
    name,
    h("label", { for: `${kind}-members`, text: t(kind === "group" ? "members" : "channelAdmins") }),
    members,
  ], t("create"), async (error) => {
    const { users, bad } = identities(members.value);
    if (bad.length) {
      error.textContent = t("notAnIdentity", { text: bad[0] });
      members.focus();
      return;
    }
    try {
      const summary = await ui.app.chat.create(kind, name.value.trim(), users);
      document.getElementById("form-slot")?.replaceChildren();
      ui.openConversation(summary.conv);
    } catch (e) {
      error.textContent = refusal(e, "create");
    }
  });
}

function followForm() {
  const { h } = ui;
  const id = /** @type {HTMLInputElement} */ (h("input", { id: "follow-id", required: true, maxlength: 64, autocomplete: "off", placeholder: "c-…", spellcheck: "false" }));
  slotForm("follow-form", [h("label", { for: "follow-id", text: t("channelId") }), id], t("follow"), async (error) => {
    try {
      const summary = await ui.app.chat.follow(id.value.trim());
      document.getElementById("form-slot")?.replaceChildren();
      ui.openConversation(summary.conv);
    } catch (e) {
      error.textContent = refusal(e, "follow");
    }
  });
}

// ---- a conversation's header and composer ----

/**
 * @param {HTMLElement} header
 * @param {Record<string, any> | null} summary
 */
function headerControls(header, summary) {
  if (!summary) return;
  const { h } = ui;
  const shared = summary.kind === "group" || summary.kind === "channel";
  header.append(
    h("span", { class: "conv-tools" }, [
      h("button", { type: "button", id: "mute-toggle", onclick: () => toggleMute(summary.conv) }),
      shared
        ? h("button", { type: "button", id: "details-open", "aria-haspopup": "dialog", onclick: () => openDetails(summary.conv), text: t("details") })
        : null,
    ]),
    h("p", { id: "conv-notice", class: "conv-notice", role: "alert" }),
  );
  showMute(header, summary);
}

/**
 * @param {ParentNode} where
 * @param {Record<string, any>} summary
 */
function showMute(where, summary) {
  const button = where.querySelector("#mute-toggle");
  if (!button) return;
  button.textContent = t(summary.muted ? "unmute" : "mute");
  button.setAttribute("aria-pressed", summary.muted ? "true" : "false");
  button.setAttribute("title", t(summary.muted ? "mutedHint" : "muteHint"));
}

/** @param {string} conv */
async function toggleMute(conv) {
  const chat = ui.app.chat;
  const summary = chat?.conversation(conv);
  if (!summary) return;
  const notice = document.getElementById("conv-notice");
  if (notice) notice.textContent = "";
  try {
    await chat.mute(conv, !summary.muted);
  } catch (e) {
    if (notice && ui.app.current === conv) notice.textContent = refusal(e, "mute");
  }
}

/** @param {HTMLElement} form */
function composerState(form) {
  const summary = ui.app.current ? ui.app.chat?.conversation(ui.app.current) : null;
  form.append(
    ui.h("p", { class: "readonly-note", id: "readonly-note" }, [
      ui.h("span", { text: t("readOnly") }),
      " ",
      ui.h("button", { type: "button", id: "unfollow-inline", onclick: unfollowHere, text: t("unfollow") }),
    ]),
  );
  showComposer(form, summary);
}

/**
 * @param {HTMLElement} form
 * @param {Record<string, any> | null | undefined} summary
 */
function showComposer(form, summary) {
  // Followers only read; a follower made admin or member posts from then on.
  const readOnly = Boolean(summary) && !allowed(summary?.kind, summary?.role).send;
  form.classList.toggle("readonly", readOnly);
  const input = /** @type {HTMLInputElement | null} */ (form.querySelector("#composer-text"));
  if (input) input.disabled = readOnly;
}

/** The list changed: the header, composer and panel follow; a conversation taken away closes. */
function changed() {
  const { app } = ui;
  const chat = app.chat;
  const now = new Map(chat.conversations().map((/** @type {Record<string, any>} */ c) => [c.conv, c]));
  const current = app.current;
  if (current && known.has(current) && !now.has(current)) gone(current, known.get(current).name);
  else if (current && now.has(current)) {
    const summary = now.get(current);
    showMute(document, summary);
    const form = document.getElementById("composer");
    if (form) showComposer(form, summary);
  }
  panelModule?.listChanged(now);
  known = now;
}

/**
 * The user is no longer in the open conversation (removed, left, unfollowed).
 * @param {string} conv
 * @param {string} name
 */
function gone(conv, name) {
  const { app, h } = ui;
  app.current = null;
  const pane = document.getElementById("conversation");
  // The pane says so, on a phone too (where it is the screen shown), with the way back.
  const back = h("button", {
    type: "button",
    class: "back",
    onclick: () => {
      document.body.classList.remove("show-conversation");
      /** @type {HTMLElement | null} */ (document.querySelector("#convs button"))?.focus();
    },
    text: t("back"),
  });
  pane?.replaceChildren(
    h("header", { class: "conv-header" }, [back]),
    h("p", { class: "empty", id: "conv-gone", role: "status", text: t(leaving === conv ? "youLeft" : "noLongerIn", { name }) }),
  );
  leaving = "";
  ui.renderList();
}

/**
 * Leave or unfollow `conv`, so that its pane then says "you left".
 * @param {string} conv
 * @param {"leave" | "unfollow"} how
 */
export async function leave(conv, how) {
  leaving = conv;
  try {
    await (how === "leave" ? ui.app.chat.leave(conv) : ui.app.chat.unfollow(conv));
  } catch (e) {
    leaving = "";
    throw e;
  }
}

/** The read-only note's own button: unfollow the open channel. */
async function unfollowHere() {
  const conv = ui.app.current;
  if (!conv) return;
  try {
    await leave(conv, "unfollow");
  } catch (e) {
    const notice = document.getElementById("conv-notice");
    if (notice) notice.textContent = refusal(e, "leave");
  }
}

/** @param {string} conv */
async function openDetails(conv) {
  if (!panelLoading) {
    panelLoading = import("./groups-panel.js").then((module) => {
      module.init(ui);
      panelModule = module;
      return module;
    });
    panelLoading.catch(() => (panelLoading = null));
  }
  try {
    (await panelLoading).openPanel(conv);
  } catch (e) {
    const notice = document.getElementById("conv-notice");
    if (notice) notice.textContent = refusal(e, "details");
  }
}

const STRINGS = {
  en: {
    newChannel: "New channel",
    followChannel: "Follow a channel",
    channelName: "Channel name",
    channelAdmins: "Admins who post with you (identities, separated by commas)",
    channelId: "Channel id",
    follow: "Follow",
    unfollow: "Unfollow",
    mute: "Mute",
    unmute: "Unmute",
    muteHint: "Mute this conversation on all your devices",
    mutedHint: "Muted on all your devices",
    details: "Details",
    readOnly: "Only the channel's admins post here; you follow it.",
    youLeft: "You left “{name}”.",
    noLongerIn: "You are no longer in “{name}”.",
    refused: "Not done: {reason}",
    forbidden_rename: "only the owner or an admin can rename it.",
    forbidden_add: "only the owner or an admin can add members.",
    forbidden_remove: "only the owner or an admin can remove members, and only the owner can remove an admin.",
    forbidden_role: "only the owner can change roles.",
    forbidden_leave: "you cannot leave this conversation.",
    forbidden_follow: "you are already in this conversation, which is not a channel to follow.",
    unknownChannel: "no channel has this id.",
    conversationFull: "the group is full.",
    conflictRetry: "the group changed at the same moment; try again.",
  },
  zh: {
    newChannel: "新建频道",
    followChannel: "关注频道",
    channelName: "频道名称",
    channelAdmins: "和你一起发言的管理员（身份标识，用逗号分隔）",
    channelId: "频道 ID",
    follow: "关注",
    unfollow: "取消关注",
    mute: "静音",
    unmute: "取消静音",
    muteHint: "在你的所有设备上将此会话静音",
    mutedHint: "已在你的所有设备上静音",
    details: "详情",
    readOnly: "只有频道管理员可以在此发言；你正在关注此频道。",
    youLeft: "你已退出“{name}”。",
    noLongerIn: "你已不在“{name}”中。",
    refused: "未完成：{reason}",
    forbidden_rename: "只有所有者或管理员可以改名。",
    forbidden_add: "只有所有者或管理员可以添加成员。",
    forbidden_remove: "只有所有者或管理员可以移除成员，且只有所有者可以移除管理员。",
    forbidden_role: "只有所有者可以更改角色。",
    forbidden_leave: "你不能退出此会话。",
    forbidden_follow: "你已在此会话中，它不是可关注的频道。",
    unknownChannel: "没有此 ID 的频道。",
    conversationFull: "群组已满。",
    conflictRetry: "群组同时发生了变化，请重试。",
  },
};
