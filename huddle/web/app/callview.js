// The web app's calls, loaded on first use by calls.js: the incoming-call sheet (accept,
// decline; it goes away on every device once one answers), the outgoing "calling..." state,
// and the call view: a tile per participant (name, muted marks, network quality), a grid or
// an active-speaker layout, and the controls (microphone, camera, screen share, devices,
// layout, leave). Built on the SDK's calls.js (Call, Ringing) alone.

import { Call, Ringing, networkQuality, receiveQuality } from "/web/sdk/calls.js";
import { groupRoom } from "./calls.js";
import * as sheets from "./callsheets.js";
import { stylesheet } from "./dom.js";

// Its styles come with it, in place before anything it draws is shown.
await stylesheet(new URL("./callview.css", import.meta.url));

/** How often each tile's network quality is measured again. */
export const QUALITY_INTERVAL_MS = 2000;
/** How long a call that ended without being joined (declined, busy, no answer) stays shown. */
export const OUTCOME_SHOWN_MS = 4000;

const STRINGS = {
  en: {
    callIncoming: "{name} is calling",
    callGroupNotice: "{name} started a call in {group}",
    callDismiss: "Dismiss",
    callIncomingMedia_video: "Video call",
    callIncomingMedia_audio: "Voice call",
    callAccept: "Accept",
    callDecline: "Decline",
    callCalling: "Calling {name}…",
    callConnecting: "Connecting…",
    callReconnecting: "Connection lost, the call goes on. Reconnecting…",
    callDeclinedBy: "{name} declined the call.",
    callNoAnswerFrom: "{name} did not answer.",
    callBusy: "{name} is in another call.",
    callEndedShort: "The call has ended.",
    callFailed: "The call failed: {error}",
    callView: "Call: {name}",
    callMic: "Mute microphone",
    callMicOn: "Unmute microphone",
    callCam: "Turn camera off",
    callCamOn: "Turn camera on",
    callScreen: "Share screen",
    callScreenStop: "Stop sharing",
    callDevices: "Devices",
    callMicDevice: "Microphone",
    callCamDevice: "Camera",
    callLayoutSpeaker: "Speaker view",
    callLayoutGrid: "Grid view",
    callLeave: "Leave",
    callClose: "Close",
    callMinimise: "Back to chat",
    callRestore: "Show call",
    callYouTile: "{name} (you)",
    callScreenOf: "{name}'s screen",
    callMicMuted: "microphone off",
    callCamMuted: "camera off",
    callSpeaking: "speaking",
    callQuality: "Network: {quality}",
    callQuality_good: "good",
    callQuality_fair: "fair",
    callQuality_poor: "poor",
    callQuality_unknown: "measuring",
    callParticipants: "{n} in the call",
    callVideoPaused: "Video paused: weak connection",
    callVideoUnselected: "Video off: not among the latest speakers",
  },
  zh: {
    callIncoming: "{name} 来电",
    callGroupNotice: "{name} 在 {group} 发起了通话",
    callDismiss: "忽略",
    callIncomingMedia_video: "视频通话",
    callIncomingMedia_audio: "语音通话",
    callAccept: "接听",
    callDecline: "拒绝",
    callCalling: "正在呼叫 {name}…",
    callConnecting: "正在连接…",
    callReconnecting: "连接中断，通话继续。正在重新连接…",
    callDeclinedBy: "{name} 拒绝了通话。",
    callNoAnswerFrom: "{name} 未接听。",
    callBusy: "{name} 正在另一个通话中。",
    callEndedShort: "通话已结束。",
    callFailed: "通话失败：{error}",
    callView: "通话：{name}",
    callMic: "关闭麦克风",
    callMicOn: "打开麦克风",
    callCam: "关闭摄像头",
    callCamOn: "打开摄像头",
    callScreen: "共享屏幕",
    callScreenStop: "停止共享",
    callDevices: "设备",
    callMicDevice: "麦克风",
    callCamDevice: "摄像头",
    callLayoutSpeaker: "演讲者视图",
    callLayoutGrid: "网格视图",
    callLeave: "离开",
    callClose: "关闭",
    callMinimise: "返回聊天",
    callRestore: "显示通话",
    callYouTile: "{name}（你）",
    callScreenOf: "{name} 的屏幕",
    callMicMuted: "麦克风已关闭",
    callCamMuted: "摄像头已关闭",
    callSpeaking: "正在讲话",
    callQuality: "网络：{quality}",
    callQuality_good: "良好",
    callQuality_fair: "一般",
    callQuality_poor: "较差",
    callQuality_unknown: "测量中",
    callParticipants: "{n} 人在通话中",
    callVideoPaused: "视频已暂停：网络较弱",
    callVideoUnselected: "视频未显示：不是最近的发言者",
  },
};

/** @type {any} what app.js gives feature modules */
let ui = null;
/** @type {Ringing | null} */
let ringing = null;

/**
 * The call this device is in (or placing), if any.
 * @typedef {{conv: string | null, kind: "direct" | "group", title: string, peer: string | null,
 *   ringId: string | null, room: string | null, call: Call | null, phase: string,
 *   outcome: string, layout: "grid" | "speaker", speaker: string | null,
 *   tiles: Map<string, Tile>, quality: any, lastStats: any, timer: any, stops: (() => void)[],
 *   early: [(e: any) => void, any][]}} Session
 * @typedef {{el: HTMLElement, video: HTMLVideoElement, audio: HTMLAudioElement, name: HTMLElement,
 *   marks: HTMLElement, bars: HTMLElement, placeholder: HTMLElement, initial: HTMLElement,
 *   participant: string, screen: boolean, track?: string, told?: number}} Tile
 */
/** @type {Session | null} */
let session = null;

/**
 * Called once calls.js has loaded this module: `early` are ringing events that came meanwhile.
 * @param {any} from
 * @param {any[]} early
 */
export function start(from, early) {
  ui = from;
  ui.addStrings(STRINGS);
  sheets.init(ui);
  ringing = new Ringing(ui.app.conn);
  ringing.on("incoming", showIncoming);
  ringing.on("stopped", ({ call }) => sheets.hide(call));
  ringing.on("accepted", outgoing((e) => {
    if (session && session.ringId === e.call && !session.call) joinRoom(e.room);
  }));
  ringing.on("merged", outgoing((e) => {
    // Both called at once: ours gave way to theirs, which the node answered on this device.
    if (!session || session.ringId !== e.call || session.call) return;
    session.ringId = e.into;
    joinRoom(e.room);
  }));
  ringing.on("declined", outgoing((e) => endOutgoing(e.call, "callDeclinedBy")));
  ringing.on("ended", outgoing((e) => {
    if (!session || session.ringId !== e.call) return;
    if (e.reason === "no_answer") endOutgoing(e.call, "callNoAnswerFrom");
    else if (session.call) leave(false);
    else endOutgoing(e.call, "callEndedShort");
  }));
  for (const event of early) ringing.handle(event);
  // A tab closed (or a page left) leaves the call it is in, and gives up a call it places:
  // otherwise the node waits call_resume_s (30 s) for the device to come back, and the
  // others keep a frozen tile of it, or the callee's devices ring on, all that time.
  window.addEventListener("pagehide", () => leave(true));
  // @ts-ignore: a debug hook, as window.huddleApp
  window.huddleCalls = { ringing, session: () => session };
}

/**
 * A handler of what happens to the call this device places. Such an event may come before
 * the reply to the invite that tells the call's id (the callee answers while the reply is on
 * its way): it is kept, and handled once the reply is in.
 * @param {(e: any) => void} handler
 * @returns {(e: any) => void}
 */
function outgoing(handler) {
  return (e) => {
    if (session && session.kind === "direct" && session.phase === "calling" && !session.ringId) {
      session.early.push([handler, e]);
      return;
    }
    handler(e);
  };
}

/** Signed out: leave the call and forget the ringing. */
export function stop() {
  if (session) leave(true);
  sheets.hideAll();
  ringing?.close();
  ringing = null;
}

/** The call this device is in, for calls.js's header button. */
export function current() {
  return session ? { conv: session.conv } : null;
}

/**
 * The header's call button: in a direct conversation ring the peer, in a group join its call.
 * @param {Record<string, any>} summary
 */
export async function startFrom(summary) {
  if (session) {
    // One call at a time: the button brings the call back to the front.
    setMinimised(false);
    return;
  }
  if (summary.kind === "group") {
    hideGroupNotice(null, summary.conv);
    session = newSession(summary, "group");
    render();
    await joinRoom(groupRoom(summary.conv));
    return;
  }
  session = newSession(summary, "direct");
  session.phase = "calling";
  render();
  const mine = session;
  try {
    const placed = await /** @type {Ringing} */ (ringing).invite(summary.peer, "video");
    if (session !== mine) {
      // Left before the invite was answered: give the call up.
      ringing?.cancel(placed.call).catch(() => {});
      return;
    }
    mine.ringId = placed.call;
    mine.room = placed.room;
    for (const [handler, e] of mine.early.splice(0)) handler(e);
    if (session !== mine) return;
    // The peer was calling us at that moment: the node answered their call instead.
    if (placed.answered) await joinRoom(placed.room);
  } catch (error) {
    if (session !== mine) return;
    const code = /** @type {any} */ (error).code;
    finish(code === "busy" ? ui.t("callBusy", { name: mine.title }) : ui.t("callFailed", { error: errorText(error) }));
  }
}

/**
 * @param {Record<string, any> | null} summary
 * @param {"direct" | "group"} kind
 * @returns {Session}
 */
function newSession(summary, kind) {
  return {
    conv: summary?.conv ?? null,
    kind,
    title: summary?.name ?? "",
    peer: summary?.peer ?? null,
    ringId: null,
    early: [],
    room: null,
    call: null,
    phase: "connecting",
    outcome: "",
    layout: "grid",
    speaker: null,
    tiles: new Map(),
    quality: new Map(),
    lastStats: null,
    timer: null,
    stops: [],
  };
}

/** @param {unknown} error */
function errorText(error) {
  const e = /** @type {any} */ (error);
  return e?.code ?? e?.message ?? String(error);
}

// ---- incoming ----

/** @param {any} event a call.incoming */
function showIncoming(event) {
  sheets.showRing(event, {
    accept: () => acceptIncoming(event),
    decline: () => ringing?.decline(event.call).catch(() => {}),
  });
}

/**
 * Someone started a group's call (its `call_started` arrived live): a notice with Join,
 * unless this device is in that call already.
 * @param {Record<string, any>} summary the group
 * @param {{conv: string, call: string, by: string}} started
 */
export function showGroupNotice(summary, started) {
  if (session?.conv === started.conv) return;
  sheets.showGroupNotice(summary, started, () => startFrom(summary));
}

export const hideGroupNotice = sheets.hideGroupNotice;

/** @param {any} event a call.incoming */
async function acceptIncoming(event) {
  sheets.hide(event.call);
  if (session) leave(true); // one call at a time: the new one takes over
  const direct = ui.app.chat?.conversations().find((/** @type {any} */ c) => c.kind === "direct" && c.peer === event.from);
  const mine = (session = newSession(direct ?? { name: event.from_name || event.from, peer: event.from }, "direct"));
  mine.ringId = event.call;
  render();
  try {
    const answered = await /** @type {Ringing} */ (ringing).accept(event.call);
    if (session !== mine) return;
    await joinRoom(answered.room);
  } catch (error) {
    if (session === mine) finish(ui.t("callFailed", { error: errorText(error) }));
  }
}

/**
 * A placed call that ended before anyone joined: say why, then close.
 * @param {string} call
 * @param {string} key
 */
function endOutgoing(call, key) {
  if (!session || session.ringId !== call || session.call) return;
  finish(ui.t(key, { name: session.title }));
}

/** Shows `text` in place of the call, then closes the view. @param {string} text */
function finish(text) {
  if (!session) return;
  const mine = session;
  mine.phase = "over";
  mine.outcome = text;
  render();
  setTimeout(() => {
    if (session === mine) close();
  }, OUTCOME_SHOWN_MS);
}

// ---- in the call ----

/** @param {string} room */
async function joinRoom(room) {
  if (!session) return;
  const mine = session;
  const call = new Call(ui.app.conn, room);
  mine.call = call;
  mine.room = room;
  mine.phase = "connecting";
  render();
  call.on("participants", () => session === mine && renderTiles());
  call.on("track", (/** @type {any} */ e) => session === mine && onTrack(e));
  call.on("trackended", (/** @type {any} */ e) => session === mine && onTrackEnded(e.info));
  call.on("speakers", (/** @type {any[]} */ list) => {
    if (session !== mine) return;
    // The big tile shows the loudest of the others: people do not want to watch themselves
    // while they speak; the last one who spoke stays until another does.
    const loudest = list.find((entry) => entry.participant !== call.participant)?.participant;
    if (loudest) mine.speaker = loudest;
    markSpeakers(list);
  });
  call.on("paused", () => session === mine && showPaused());
  call.on("suspended", () => session === mine && setPhase("reconnecting"));
  call.on("resumed", () => session === mine && setPhase("in"));
  call.on("removed", () => session === mine && leave(false));
  call.on("error", (/** @type {any} */ error) => console.warn("[huddle] call:", error));
  try {
    await call.join();
    if (session !== mine) return;
    mine.phase = "in";
    render();
    const stream = await publishWhatWeCan(call);
    if (session !== mine) return;
    const own = tileFor("local", ownTileName(), false);
    own.video.srcObject = stream;
    own.video.muted = true;
    own.el.classList.toggle("video-off", !stream?.getVideoTracks().length);
    renderControls();
    mine.timer = setInterval(() => measure(mine), QUALITY_INTERVAL_MS);
  } catch (error) {
    if (session !== mine) return;
    // A rung call this device took but cannot be in: hang up, so the others are not left waiting.
    if (mine.ringId) ringing?.hangup(mine.ringId).catch(() => {});
    call.leave().catch(() => {});
    finish(ui.t("callFailed", { error: errorText(error) }));
  }
}

/**
 * Camera and microphone; without a camera (or its permission) the microphone alone; without
 * either, the call goes on receive-only. @param {Call} call
 * @returns {Promise<MediaStream | null>}
 */
async function publishWhatWeCan(call) {
  for (const what of [{ audio: true, video: true }, { audio: true, video: false }]) {
    try {
      return await call.publish(what);
    } catch (error) {
      console.warn("[huddle] could not publish", what, error);
      if (call.state !== "joined") throw error;
    }
  }
  return null;
}

/** @param {string} phase */
function setPhase(phase) {
  if (!session) return;
  session.phase = phase;
  const status = document.getElementById("call-status");
  if (status) status.textContent = statusText();
}

function statusText() {
  if (!session) return "";
  const { t } = ui;
  switch (session.phase) {
    case "calling":
      return t("callCalling", { name: session.title });
    case "connecting":
      return t("callConnecting");
    case "reconnecting":
      return t("callReconnecting");
    case "over":
      return session.outcome;
    default:
      return t("callParticipants", { n: (session.call?.participants.size ?? 0) + 1 });
  }
}

/**
 * Leaves the call (and, for a rung call, hangs up or cancels it), then closes the view.
 * @param {boolean} tellRinging whether this device ends the rung call (not when the server
 *   already said it ended)
 */
function leave(tellRinging = true) {
  const mine = session;
  if (!mine) return;
  close();
  mine.call?.leave().catch(() => {});
  if (tellRinging && mine.ringId && ringing) {
    const id = mine.ringId;
    (mine.call ? ringing.hangup(id) : ringing.cancel(id)).catch(() => {});
  }
}

function close() {
  const mine = session;
  if (!mine) return;
  session = null;
  clearInterval(mine.timer);
  sizeWatch?.disconnect();
  for (const stop of mine.stops) stop();
  for (const tile of mine.tiles.values()) {
    tile.video.srcObject = null;
    tile.audio.srcObject = null;
  }
  document.getElementById("call-view")?.remove();
  document.body.classList.remove("in-call");
  document.getElementById("app")?.removeAttribute("inert");
  document.getElementById("call-start")?.focus();
}

// ---- drawing ----

function render() {
  if (!session) return;
  const { h, t } = ui;
  let view = document.getElementById("call-view");
  if (!view) {
    view = h("section", { id: "call-view", class: "call-view", role: "region", "aria-label": t("callView", { name: session.title }) }, [
      h("header", { class: "call-top" }, [
        h("h2", { class: "call-title", text: session.title }),
        h("p", { id: "call-status", class: "call-status", role: "status" }),
      ]),
      h("div", { id: "call-tiles", class: "call-tiles layout-grid" }),
      h("div", { id: "call-devices", class: "call-devices", hidden: true }),
      h("div", { id: "call-controls", class: "call-controls", role: "toolbar", "aria-label": t("callView", { name: session.title }) }),
    ]);
    document.body.append(view);
    document.body.classList.add("in-call");
    // The chat underneath is out of reach while the call covers it: Tab stays in the call.
    setMinimised(false);
    setPhase(session.phase);
    renderControls();
    renderTiles();
    document.getElementById("call-leave")?.focus();
    return;
  }
  setPhase(session.phase);
  renderControls();
  renderTiles();
}

/**
 * A minimised call is a bar over the chat, which is usable again; restored, the call covers
 * the chat and keeps the keyboard.
 * @param {boolean} minimised
 */
function setMinimised(minimised) {
  const view = document.getElementById("call-view");
  if (!view) return;
  view.classList.toggle("minimised", minimised);
  document.body.classList.toggle("in-call", !minimised);
  const app = document.getElementById("app");
  if (minimised) app?.removeAttribute("inert");
  else app?.setAttribute("inert", "");
  renderControls();
  if (!minimised) document.getElementById("call-leave")?.focus();
}

/**
 * @param {string} id
 * @param {string} label
 * @param {() => void} onclick
 * @param {boolean | null} [pressed]
 */
function control(id, label, onclick, pressed = null) {
  return ui.h("button", {
    type: "button",
    id,
    "aria-label": label,
    title: label,
    "aria-pressed": pressed === null ? null : String(pressed),
    onclick,
    text: label,
  });
}

function renderControls() {
  const bar = document.getElementById("call-controls");
  if (!bar || !session) return;
  const { t } = ui;
  const call = session.call;
  const live = Boolean(call && call.state === "joined" && call.localStream);
  const buttons = [];
  const minimised = document.getElementById("call-view")?.classList.contains("minimised") ?? false;
  if (live && call && minimised) {
    buttons.push(control("call-mic", call.audioMuted ? t("callMicOn") : t("callMic"), () => toggleMic(), call.audioMuted));
  } else if (live && call) {
    buttons.push(
      control("call-mic", call.audioMuted ? t("callMicOn") : t("callMic"), () => toggleMic(), call.audioMuted),
      control("call-cam", call.videoMuted ? t("callCamOn") : t("callCam"), () => toggleCam(), call.videoMuted),
      control("call-screen", call.screenStream ? t("callScreenStop") : t("callScreen"), () => toggleScreen(), Boolean(call.screenStream)),
      control("call-devices-toggle", t("callDevices"), () => toggleDevices(), !document.getElementById("call-devices")?.hidden),
      control("call-layout", session.layout === "grid" ? t("callLayoutSpeaker") : t("callLayoutGrid"), () => toggleLayout(), session.layout === "speaker"),
    );
  }
  buttons.push(control("call-minimise", minimised ? t("callRestore") : t("callMinimise"), () => setMinimised(!minimised)));
  const over = session.phase === "over";
  const end = control("call-leave", over ? t("callClose") : t("callLeave"), () => (over ? close() : leave(true)));
  end.classList.add("call-end");
  buttons.push(end);
  const focused = document.activeElement?.id;
  bar.replaceChildren(...buttons);
  if (focused) document.getElementById(focused)?.focus();
}

/**
 * The tile of a participant (or "local", or PARTICIPANT:screen), made if needed.
 * @param {string} key
 * @param {string} name
 * @param {boolean} screen
 * @returns {Tile}
 */
function tileFor(key, name, screen) {
  const s = /** @type {Session} */ (session);
  let tile = s.tiles.get(key);
  if (!tile) {
    const { h } = ui;
    const video = /** @type {HTMLVideoElement} */ (h("video", { autoplay: true, playsinline: true }));
    const audio = /** @type {HTMLAudioElement} */ (h("audio", { autoplay: true }));
    const nameEl = h("span", { class: "tile-name" });
    const marks = h("span", { class: "tile-marks" });
    const bars = h("span", { class: "tile-quality", role: "img", "data-quality": "unknown" }, [h("i"), h("i"), h("i")]);
    // In place of the last frame while the SFU holds the video back (sfu.paused).
    const initial = h("span", { class: "tile-initial", "aria-hidden": "true" });
    const placeholder = h("div", { class: "tile-placeholder", role: "status" }, [initial, h("span", { class: "tile-paused-text", text: ui.t("callVideoPaused") })]);
    placeholder.hidden = true;
    const el = h("figure", { class: "tile" + (key === "local" ? " local" : "") + (screen ? " screen" : ""), "data-key": key }, [
      video,
      placeholder,
      audio,
      h("figcaption", {}, [nameEl, marks, bars]),
    ]);
    tile = { el, video, audio, name: nameEl, marks, bars, placeholder, initial, participant: key.split(":")[0], screen };
    s.tiles.set(key, tile);
    document.getElementById("call-tiles")?.append(el);
  }
  tile.name.textContent = name;
  tile.initial.textContent = [...name.trim()][0]?.toUpperCase() ?? "";
  tile.el.setAttribute("aria-label", name);
  return tile;
}

function ownTileName() {
  return ui.t("callYouTile", { name: ui.app.conn?.hello?.name ?? ui.app.session?.identity ?? "" });
}

/** The app's language changed: the call view and the sheets say everything again in it. */
export function relabel() {
  sheets.relabel();
  const s = session;
  const view = document.getElementById("call-view");
  if (!s || !view) return;
  const label = ui.t("callView", { name: s.title });
  view.setAttribute("aria-label", label);
  document.getElementById("call-controls")?.setAttribute("aria-label", label);
  if (s.tiles.has("local")) tileFor("local", ownTileName(), false);
  // The placeholders' words come again with the tiles (showPaused).
  for (const tile of s.tiles.values()) setQuality(tile, tile.bars.dataset.quality ?? "unknown");
  render();
}

/** @param {any} participant */
function displayName(participant) {
  return participant?.name || participant?.identity || "";
}

function renderTiles() {
  const s = session;
  const call = s?.call;
  const holder = document.getElementById("call-tiles");
  if (!s || !call || !holder) return;
  const { t } = ui;
  for (const p of call.participants.values()) tileFor(p.participant, displayName(p), false);
  for (const [key, tile] of [...s.tiles]) {
    // This page's own tiles: its camera ("local") and its screen ("local:screen"), which
    // went whenever the list was drawn again (someone muted) while the screen was shared.
    if (tile.participant === "local") continue;
    if (!call.participants.has(tile.participant)) {
      sizeWatch?.unobserve(tile.el);
      tile.el.remove();
      s.tiles.delete(key);
    }
  }
  for (const [key, tile] of s.tiles) {
    if (tile.screen) {
      tile.name.textContent = t("callScreenOf", { name: displayName(call.participants.get(tile.participant)) || t("you") });
      continue;
    }
    const state = key === "local" ? { audio_muted: call.audioMuted, video_muted: call.videoMuted } : call.participants.get(key) ?? {};
    const marks = [];
    if (state.audio_muted) marks.push(ui.h("span", { class: "mark mic-off", text: t("callMicMuted") }));
    if (state.video_muted) marks.push(ui.h("span", { class: "mark cam-off", text: t("callCamMuted") }));
    tile.marks.replaceChildren(...marks);
    tile.el.classList.toggle("video-off", Boolean(state.video_muted));
  }
  showPaused();
  layout();
  setPhase(s.phase);
}

/**
 * Whether the SFU holds back the video of a remote tile for lack of downlink.
 * @param {Session} s
 * @param {Tile} tile
 */
function videoPaused(s, tile) {
  const call = s.call;
  return Boolean(call?.pausedTracks.size) && videoHeld(s, tile, (track) => call.isTrackPaused(track));
}

/**
 * Whether the SFU leaves the tile's video out because the room sends the video of its latest
 * speakers only (stream selection): no network matter.
 * @param {Session} s
 * @param {Tile} tile
 */
function videoUnselected(s, tile) {
  const call = s.call;
  return Boolean(call?.unselectedTracks.size) && videoHeld(s, tile, (track) => call.isTrackUnselected(track));
}

/**
 * Whether `held` says so of the tile's video track (its camera's or its screen's).
 * @param {Session} s
 * @param {Tile} tile
 * @param {(track: any) => boolean} held
 */
function videoHeld(s, tile, held) {
  for (const info of Object.values(s.call?.tracks ?? {})) {
    if (info.participant !== tile.participant || info.kind !== "video") continue;
    if ((info.source === "screen") === tile.screen && held(info)) return true;
  }
  // Held back before its offer came: the track id still names the camera source.
  return !tile.screen && held(`${tile.participant}:cam`);
}

/** A tile whose video is paused shows the placeholder (its audio goes on) and a poor network. */
function showPaused() {
  const s = session;
  if (!s) return;
  for (const [key, tile] of s.tiles) {
    const paused = key !== "local" && videoPaused(s, tile);
    // Left out by stream selection: the same placeholder (not a frozen or black picture),
    // saying why, and nothing about the network.
    const unselected = key !== "local" && !paused && videoUnselected(s, tile);
    const was = tile.el.classList.contains("video-paused");
    tile.el.classList.toggle("video-paused", paused || unselected);
    tile.el.classList.toggle("video-unselected", unselected);
    tile.placeholder.hidden = !(paused || unselected);
    const text = tile.placeholder.querySelector(".tile-paused-text");
    if (text) text.textContent = ui.t(unselected ? "callVideoUnselected" : "callVideoPaused");
    if (paused) setQuality(tile, "poor");
    else if (was) setQuality(tile, "unknown"); // measured again within QUALITY_INTERVAL_MS
  }
}

/**
 * @param {Tile} tile
 * @param {string} quality
 */
function setQuality(tile, quality) {
  tile.bars.dataset.quality = quality;
  const label = ui.t("callQuality", { quality: ui.t(`callQuality_${quality}`) });
  tile.bars.setAttribute("aria-label", label);
  tile.bars.setAttribute("title", label);
}

/** Grid: every tile alike. Speaker: a screen share, else the loudest, large; the rest in a strip. */
function layout() {
  const s = session;
  const holder = document.getElementById("call-tiles");
  if (!s || !holder) return;
  holder.className = `call-tiles layout-${s.layout}`;
  holder.dataset.count = String(s.tiles.size);
  let featured = null;
  if (s.layout === "speaker") {
    const screen = [...s.tiles.entries()].find(([, tile]) => tile.screen);
    const remote = [...s.tiles.keys()].find((key) => key !== "local");
    featured = screen?.[0] ?? (s.speaker && s.tiles.has(s.speaker) ? s.speaker : remote ?? "local");
  }
  for (const [key, tile] of s.tiles) tile.el.classList.toggle("featured", key === featured);
}

/** @param {any[]} list the call.speakers list */
function markSpeakers(list) {
  const s = session;
  if (!s || !s.call) return;
  const speaking = new Set(list.map((x) => (x.participant === s.call?.participant ? "local" : x.participant)));
  for (const [key, tile] of s.tiles) {
    const on = !tile.screen && speaking.has(key);
    tile.el.classList.toggle("speaking", on);
  }
  if (s.layout === "speaker") layout();
}

/** @param {any} e the Call's track event */
function onTrack({ track, info, stream }) {
  const s = /** @type {Session} */ (session);
  const participant = s.call?.participants.get(info.participant);
  const screen = info.source === "screen" || info.source === "screen_audio";
  const key = screen ? `${info.participant}:screen` : info.participant;
  const tile = tileFor(key, displayName(participant) || info.identity, screen);
  if (track.kind === "video") {
    tile.video.srcObject = stream;
    // Ask for the layer that fits the tile (the SFU forwards the largest that fits), and
    // again whenever the tile's size changes (a layout, the featured speaker, the window).
    if (!screen) {
      tile.track = info.track;
      tellHeight(tile);
      sizes().observe(tile.el);
    }
  } else {
    tile.audio.srcObject = stream;
  }
  renderTiles();
}

/** Tiles by element, for the size watch. @type {WeakMap<Element, Tile>} */
const tileOf = new WeakMap();
/** @type {ResizeObserver | null} */
let sizeWatch = null;

/** The watch of camera tiles' sizes: a tile that grows asks for a larger layer, one that
 * shrinks for a smaller (it only costs the downlink). */
function sizes() {
  sizeWatch ??= new ResizeObserver((entries) => {
    for (const entry of entries) {
      const tile = tileOf.get(entry.target);
      if (tile && tile.el.isConnected) tellHeight(tile);
    }
  });
  return sizeWatch;
}

/**
 * Tells the SFU the tile's height when it changed by a fifth or more since it last did (a
 * hidden tile, 0 high, tells nothing once it has told).
 * @param {Tile} tile
 */
function tellHeight(tile) {
  tileOf.set(tile.el, tile);
  if (!tile.track || (tile.told && !tile.el.getBoundingClientRect().height)) return;
  const height = tileHeight(tile);
  if (tile.told && Math.abs(height - tile.told) < tile.told / 5) return;
  tile.told = height;
  session?.call?.setTileHeight(tile.track, height).catch(() => {});
}

/** @param {Tile} tile */
function tileHeight(tile) {
  const height = Math.round(tile.el.getBoundingClientRect().height * (window.devicePixelRatio || 1));
  return height > 0 ? Math.max(180, height) : 360;
}

/** @param {any} info */
function onTrackEnded(info) {
  const s = session;
  if (!s) return;
  const screen = info.source === "screen" || info.source === "screen_audio";
  const key = screen ? `${info.participant}:screen` : info.participant;
  const tile = s.tiles.get(key);
  if (!tile) return;
  if (screen) {
    if (info.kind === "video") {
      sizeWatch?.unobserve(tile.el);
      tile.el.remove();
      s.tiles.delete(key);
      layout();
    }
    return;
  }
  if (info.kind === "video") tile.video.srcObject = null;
  else tile.audio.srcObject = null;
}

async function toggleMic() {
  const call = session?.call;
  if (!call) return;
  await call.setMicrophoneMuted(!call.audioMuted).catch((error) => console.warn(error));
  renderControls();
  renderTiles();
}

async function toggleCam() {
  const call = session?.call;
  if (!call) return;
  await call.setCameraMuted(!call.videoMuted).catch((error) => console.warn(error));
  renderControls();
  renderTiles();
}

async function toggleScreen() {
  const s = session;
  const call = s?.call;
  if (!s || !call) return;
  try {
    if (call.screenStream) {
      await call.stopScreenShare();
      s.tiles.get("local:screen")?.el.remove();
      s.tiles.delete("local:screen");
    } else {
      const stream = await call.shareScreen();
      const tile = tileFor("local:screen", ui.t("callScreenOf", { name: ui.t("you") }), true);
      tile.video.srcObject = stream;
      tile.video.muted = true;
      stream.getVideoTracks()[0]?.addEventListener("ended", () => {
        s.tiles.get("local:screen")?.el.remove();
        s.tiles.delete("local:screen");
        renderControls();
        layout();
      });
    }
  } catch (error) {
    console.warn("[huddle] screen share:", error); // the user closed the picker, say
  }
  renderControls();
  layout();
}

function toggleLayout() {
  if (!session) return;
  session.layout = session.layout === "grid" ? "speaker" : "grid";
  renderControls();
  layout();
}

async function toggleDevices() {
  const panel = document.getElementById("call-devices");
  const call = session?.call;
  if (!panel || !call) return;
  if (!panel.hidden) {
    panel.hidden = true;
    renderControls();
    return;
  }
  const { h, t } = ui;
  const devices = await navigator.mediaDevices.enumerateDevices();
  /** @param {"audio" | "video"} kind */
  const picker = (kind) => {
    const id = kind === "audio" ? "call-mic-select" : "call-cam-select";
    const inUse = (kind === "audio" ? call.localStream?.getAudioTracks() : call.localStream?.getVideoTracks())?.[0]?.getSettings().deviceId;
    const options = devices
      .filter((d) => d.kind === (kind === "audio" ? "audioinput" : "videoinput"))
      .map((d, i) => h("option", { value: d.deviceId, selected: d.deviceId === inUse, text: d.label || `${t(kind === "audio" ? "callMicDevice" : "callCamDevice")} ${i + 1}` }));
    const select = h("select", {
      id,
      onchange: async (/** @type {Event} */ e) => {
        const value = /** @type {HTMLSelectElement} */ (e.target).value;
        try {
          await call.switchDevice(kind, value);
          const own = session?.tiles.get("local");
          if (own && call.localStream) own.video.srcObject = call.localStream;
        } catch (error) {
          console.warn("[huddle] device switch:", error);
        }
      },
    }, options);
    return h("span", { class: "call-device" }, [h("label", { for: id, text: t(kind === "audio" ? "callMicDevice" : "callCamDevice") }), select]);
  };
  panel.replaceChildren(picker("audio"), picker("video"));
  panel.hidden = false;
  renderControls();
  /** @type {HTMLElement | null} */ (panel.querySelector("select"))?.focus();
}

/**
 * Each tile's network quality: a remote tile from what the subscriber connection receives
 * of that participant (loss, bitrate, round trip), the own tile from what the SFU reports
 * back about what this device sends (loss and round trip of the publisher connection).
 * @param {Session} mine
 */
async function measure(mine) {
  const call = mine.call;
  if (session !== mine || !call || call.state !== "joined" || mine.phase === "reconnecting") return;
  let stats;
  try {
    stats = await call.stats();
  } catch {
    return;
  }
  if (session !== mine) return;
  const received = stats.subscriber ? receiveQuality(stats.subscriber, mine.lastStats) : new Map();
  mine.lastStats = stats.subscriber;
  /** @type {Map<string, string>} */
  const byParticipant = new Map();
  for (const info of Object.values(call.tracks)) {
    const q = received.get(info.mid);
    if (!q || (byParticipant.has(info.participant) && info.kind === "audio")) continue;
    // Video the SFU leaves out (stream selection) is not expected: its absence is no loss.
    const expecting = info.kind === "video" && !call.participants.get(info.participant)?.video_muted && !call.isTrackUnselected?.(info);
    byParticipant.set(info.participant, networkQuality({ ...q, expecting }));
  }
  let loss = null;
  let rttMs = null;
  stats.publisher?.forEach((/** @type {any} */ s) => {
    if (s.type !== "remote-inbound-rtp") return;
    if (typeof s.fractionLost === "number") loss = Math.max(loss ?? 0, s.fractionLost);
    if (typeof s.roundTripTime === "number") rttMs = Math.max(rttMs ?? 0, Math.round(s.roundTripTime * 1000));
  });
  byParticipant.set("local", networkQuality({ loss, rttMs }));
  for (const [key, tile] of mine.tiles) {
    if (tile.screen) continue;
    // Video held back for this side's downlink: whatever else gets through, it is poor.
    const quality = key !== "local" && videoPaused(mine, tile) ? "poor" : byParticipant.get(key) ?? "unknown";
    setQuality(tile, quality);
  }
}
