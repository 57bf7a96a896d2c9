// Calls in the web app, the part on the first screen: the call button of a conversation's
// header, the words of the calls that chat records (call_started, call_ended, call_missed),
// and the watch for incoming calls. Everything else (the incoming-call sheet, the call view,
// and the SDK's calls.js under them) is callview.js, imported on first use: the first call
// placed, or the first call that rings.
//
// Which room: a direct conversation's call rings the peer (the SDK's Ringing, docs/protocol.md
// "Ringing calls") and its room is the one the server gives; a group's call is the room
// `conv:GROUP` (groupRoom), which every member joins from the group's header or from the
// `call_started` message the server writes in the group when the room opens. A member who is
// not looking at the group when that message arrives live gets a notice with a Join button.

import { icon } from "./dom.js";

/** The ringing events the call view needs to see from the start (they may come while it loads). */
const RINGING_EVENTS = ["incoming", "outgoing", "accepted", "merged", "answered_elsewhere", "declined", "cancelled", "missed", "ended", "updated", "left"];

/** A group call's start this old (server time) is history, not news: no notice for it. */
export const GROUP_NOTICE_FRESH_MS = 60_000;

/** The room of a group conversation's call (docs/protocol.md, `call.join`). */
export function groupRoom(conv) {
  return `conv:${conv}`;
}

/**
 * Whether a call record is of a group's call: its `call_started` names only who opened the
 * room, its `call_ended` has no reason (a 1:1 call's records name both users, and a reason).
 * @param {Record<string, any>} system
 */
export function isGroupCall(system) {
  if (system.event === "call_started") return (system.users ?? []).length < 2;
  if (system.event === "call_ended") return !system.reason;
  return false;
}

/**
 * Whether `messages` (of one conversation) hold the end of `call`.
 * @param {Record<string, any>[]} messages
 * @param {string} call
 */
export function callEnded(messages, call) {
  return messages.some((m) => m.kind === "system" && m.system?.event === "call_ended" && m.system.call === call);
}

/**
 * What a live `chat.message` event says about a group's call for this user: `{started}` (a
 * call someone else opened just now in a group), `{ended}` (a group's call ended), or null.
 * @param {Record<string, any>} event
 * @param {{me: string | null, nowMs: number, kind: string | undefined}} context the user, the
 *   server's time now, and the kind of the event's conversation
 */
export function groupCallNews(event, { me, nowMs, kind }) {
  const m = event.message;
  const system = m?.kind === "system" ? m.system : null;
  if (!system || kind !== "group" || !isGroupCall(system)) return null;
  if (system.event === "call_ended") return { ended: system.call };
  if (system.by === me || nowMs - m.ts > GROUP_NOTICE_FRESH_MS) return null;
  return { started: { conv: event.conv, call: system.call, by: system.by } };
}

/** @type {any} */
let ui = null;
/** @type {Promise<any> | null} */
let loading = null;
/** @type {any} the loaded call view */
let view = null;
/** Events that came before the call view had loaded, handed to it once it has. */
let early = [];
let stopWatching = () => {};

/** The call view (callview.js and the SDK's calls.js), loaded once, on first use. */
function callView() {
  if (!loading) {
    loading = import("./callview.js").then((module) => {
      module.start(ui, early);
      early = [];
      view = module;
      return module;
    });
    loading.catch(() => (loading = null));
  }
  return loading;
}

function watchCalls() {
  const conn = ui.app.conn;
  const stops = RINGING_EVENTS.map((name) =>
    conn.on(`call.${name}`, (/** @type {any} */ event) => {
      if (view) return; // it listens itself
      early.push(event);
      if (event.type === "call.incoming") callView();
    }),
  );
  stops.push(conn.on("chat.message", onChatMessage));
  stopWatching = () => stops.forEach((stop) => stop());
}

/** A group's call started or ended: a notice for members not looking at the group. */
function onChatMessage(/** @type {any} */ event) {
  const summary = ui.app.chat?.conversation(event.conv);
  const news = groupCallNews(event, {
    me: ui.app.chat?.me ?? null,
    nowMs: Date.now() + (ui.app.conn?.clockOffsetMs ?? 0),
    kind: summary?.kind,
  });
  if (!news) return;
  if (news.ended) {
    view?.hideGroupNotice(news.ended);
    return;
  }
  const started = news.started;
  if (!started || summary.muted || ui.app.current === started.conv) return;
  if (view?.current()?.conv === started.conv) return;
  callView().then((module) => module.showGroupNotice(summary, started));
}

/**
 * A group's `call_started` message gets a Join button while the call goes on.
 * @param {HTMLElement} li
 * @param {Record<string, any>} m
 */
function joinButton(li, m) {
  const system = m.system;
  if (m.kind !== "system" || !system || system.event !== "call_started" || !isGroupCall(system)) return;
  const conv = ui.app.current;
  const summary = conv ? ui.app.chat?.conversation(conv) : null;
  if (!summary || summary.kind !== "group" || callEnded(ui.app.chat.messages(conv), system.call)) return;
  if (view?.current()?.conv === conv) return; // in it already
  li.append(
    ui.h("button", {
      type: "button",
      class: "call-join",
      "data-call": system.call,
      onclick: () => callView().then((module) => module.startFrom(summary)),
      text: ui.t("callJoin"),
    }),
  );
}

const STRINGS = {
  en: {
    callStart: "Call",
    callStartLabel: "Call {name}",
    callJoin: "Join call",
    callGroupLabel: "Start or join the call of {name}",
    callOngoing: "In call",
    callStarted: "{by} answered a {media} call",
    callGroupStarted: "{by} started a {media} call",
    callGroupYouStarted: "You started a {media} call",
    callGroupEnded: "Call ended ({duration}). Joined: {users}",
    callYouAnswered: "You answered a {media} call from {from}",
    callEnded: "{media} call with {users} ended ({duration})",
    callMissed: "Missed {media} call from {from}",
    callYouDeclined: "You declined a {media} call from {from}",
    callNoAnswer: "{to} did not answer your {media} call",
    callTheyDeclined: "{to} declined your {media} call",
    callYouCancelled: "You cancelled a {media} call to {to}",
    callMedia_video: "Video",
    callMedia_audio: "Voice",
    callMediaLower_video: "video",
    callMediaLower_audio: "voice",
  },
  zh: {
    callStart: "通话",
    callStartLabel: "呼叫 {name}",
    callJoin: "加入通话",
    callGroupLabel: "发起或加入 {name} 的通话",
    callOngoing: "通话中",
    callStarted: "{by} 接听了{media}通话",
    callGroupStarted: "{by} 发起了{media}通话",
    callGroupYouStarted: "你发起了{media}通话",
    callGroupEnded: "通话已结束（{duration}）。参与者：{users}",
    callYouAnswered: "你接听了 {from} 的{media}通话",
    callEnded: "与 {users} 的{media}通话已结束（{duration}）",
    callMissed: "未接来电：{from} 的{media}通话",
    callYouDeclined: "你拒绝了 {from} 的{media}通话",
    callNoAnswer: "{to} 未接听你的{media}通话",
    callTheyDeclined: "{to} 拒绝了你的{media}通话",
    callYouCancelled: "你取消了对 {to} 的{media}通话",
    callMedia_video: "视频",
    callMedia_audio: "语音",
    callMediaLower_video: "视频",
    callMediaLower_audio: "语音",
  },
};

/** 754 -> "12:34", 3725 -> "1:02:05". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds || 0));
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  return hours ? `${hours}:${pad(minutes)}:${pad(s % 60)}` : `${minutes}:${pad(s % 60)}`;
}

/** @param {Record<string, any>} m */
function callSystemText(m) {
  const s = m.system ?? {};
  const t = ui.t;
  const media = t(`callMediaLower_${s.media === "audio" ? "audio" : "video"}`);
  const Media = t(`callMedia_${s.media === "audio" ? "audio" : "video"}`);
  const me = ui.app.chat?.me;
  // Who the call was with: the others (all of them, for a record of other people's call).
  const others = (s.users ?? []).filter((/** @type {string} */ u) => u !== me);
  const users = (others.length ? others : (s.users ?? [])).join(", ");
  if (isGroupCall(s)) {
    if (s.event === "call_ended") return t("callGroupEnded", { duration: formatDuration(s.duration_s), users: (s.users ?? []).join(", ") });
    return s.by === me ? t("callGroupYouStarted", { media }) : t("callGroupStarted", { by: s.by, media });
  }
  switch (s.event) {
    case "call_started":
      return s.by === me ? t("callYouAnswered", { media, from: m.sender }) : t("callStarted", { by: s.by, media });
    case "call_ended":
      return t("callEnded", { media: Media, users, duration: formatDuration(s.duration_s) });
    default: {
      // call_missed. The caller is the message's sender; the callee the other of `users`.
      const from = m.sender ?? "";
      const to = (s.users ?? []).find((/** @type {string} */ u) => u !== from) ?? "";
      if (from === me) {
        const key = s.reason === "declined" ? "callTheyDeclined" : s.reason === "cancelled" ? "callYouCancelled" : "callNoAnswer";
        return t(key, { media, to });
      }
      return t(s.reason === "declined" ? "callYouDeclined" : "callMissed", { media, from });
    }
  }
}

/** A handset, drawn (not every system has an emoji font). */
function phoneIcon() {
  return icon("M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25 11.4 11.4 0 0 0 3.6.57 1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1z");
}

/**
 * @param {HTMLElement} header
 * @param {Record<string, any> | null} summary
 */
function headerButton(header, summary) {
  if (!summary || (summary.kind !== "direct" && summary.kind !== "group")) return;
  const inCall = view?.current();
  const here = inCall && inCall.conv === summary.conv;
  const label = summary.kind === "direct" ? ui.t("callStartLabel", { name: summary.name }) : ui.t("callGroupLabel", { name: summary.name });
  header.append(
    ui.h("button", {
      type: "button",
      id: "call-start",
      class: "call-start",
      "aria-label": here ? ui.t("callOngoing") : label,
      title: here ? ui.t("callOngoing") : label,
      "data-kind": summary.kind,
      onclick: () => callView().then((module) => module.startFrom(summary)),
    }, [phoneIcon(), ui.h("span", { text: here ? ui.t("callOngoing") : ui.t("callStart") })]),
  );
}

/** @param {any} from what app.js gives feature modules */
export function init(from) {
  ui = from;
  ui.addStrings(STRINGS);
  for (const event of ["call_started", "call_ended", "call_missed"]) ui.systemTexts[event] = callSystemText;
  ui.hooks.signedIn.push(watchCalls);
  ui.hooks.signedOut.push(() => {
    stopWatching();
    early = [];
    view?.stop();
    view = null;
    loading = null;
  });
  ui.hooks.header.push(headerButton);
  ui.hooks.header.push((/** @type {HTMLElement} */ _header, /** @type {any} */ summary) => {
    if (summary) view?.hideGroupNotice(null, summary.conv); // the group is open: its message shows it
  });
  ui.hooks.message.push(joinButton);
  ui.hooks.language.push(() => view?.relabel());
}
