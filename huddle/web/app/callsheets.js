// The call view's sheets over the app (callview.js): a call that rings this device (accept,
// decline; it takes the keyboard) and the notice of a group's call someone started (join,
// dismiss; it takes nothing). Sheets are kept by key: the ringing call's id, or
// `group:CALL` for a notice.

/** @type {any} what app.js gives feature modules */
let ui = null;
/** @type {Map<string, HTMLElement>} */
const shown = new Map();
/** @type {Map<string, () => void>} how each shown sheet is drawn again */
const redraw = new Map();

/** @param {any} from */
export function init(from) {
  ui = from;
}

function holder() {
  let el = document.getElementById("call-sheets");
  if (!el) {
    el = ui.h("div", { id: "call-sheets", class: "call-sheets", "aria-live": "assertive" });
    document.body.append(el);
  }
  return /** @type {HTMLElement} */ (el);
}

/** @param {string} key */
export function hide(key) {
  shown.get(key)?.remove();
  shown.delete(key);
  redraw.delete(key);
}

/** The app's language changed: every sheet shown is drawn again in it, in its place. */
export function relabel() {
  for (const [key, draw] of [...redraw]) {
    const old = shown.get(key);
    shown.delete(key);
    draw();
    const fresh = shown.get(key);
    if (old && fresh) old.replaceWith(fresh);
    else old?.remove();
  }
}

export function hideAll() {
  for (const key of [...shown.keys()]) hide(key);
}

/**
 * @param {any} event a call.incoming
 * @param {{accept: () => void, decline: () => void}} actions
 */
export function showRing(event, { accept, decline }) {
  if (shown.has(event.call)) return;
  redraw.set(event.call, () => showRing(event, { accept, decline }));
  const { h, t } = ui;
  const titleId = `call-sheet-title-${event.call}`;
  const acceptButton = h("button", {
    type: "button",
    class: "call-accept",
    "data-action": "accept",
    onclick: () => {
      hide(event.call);
      accept();
    },
    text: t("callAccept"),
  });
  const sheet = h("section", {
    class: "call-sheet",
    role: "alertdialog",
    "aria-labelledby": titleId,
    "data-call": event.call,
  }, [
    h("p", { id: titleId, class: "call-sheet-title", text: t("callIncoming", { name: event.from_name || event.from }) }),
    h("p", { class: "call-sheet-media", text: t(event.media === "audio" ? "callIncomingMedia_audio" : "callIncomingMedia_video") }),
    h("div", { class: "call-sheet-actions" }, [
      h("button", {
        type: "button",
        class: "call-decline",
        "data-action": "decline",
        onclick: () => {
          hide(event.call);
          decline();
        },
        text: t("callDecline"),
      }),
      acceptButton,
    ]),
  ]);
  shown.set(event.call, sheet);
  holder().append(sheet);
  acceptButton.focus();
}

/**
 * Someone started a group's call: a notice with Join. Unlike a ring it takes no focus; it
 * goes when the call ends or the group is opened (hideGroupNotice).
 * @param {Record<string, any>} summary the group
 * @param {{conv: string, call: string, by: string}} started
 * @param {() => void} join
 */
export function showGroupNotice(summary, started, join) {
  const key = `group:${started.call}`;
  if (shown.has(key)) return;
  redraw.set(key, () => showGroupNotice(summary, started, join));
  const { h, t } = ui;
  const titleId = `call-sheet-title-${started.call}`;
  const sheet = h("section", {
    class: "call-sheet group-notice",
    role: "region",
    "aria-labelledby": titleId,
    "data-call": started.call,
    "data-conv": started.conv,
  }, [
    h("p", { id: titleId, class: "call-sheet-title", text: t("callGroupNotice", { name: started.by, group: summary.name }) }),
    h("div", { class: "call-sheet-actions" }, [
      h("button", { type: "button", "data-action": "dismiss", onclick: () => hide(key), text: t("callDismiss") }),
      h("button", {
        type: "button",
        class: "call-accept",
        "data-action": "join",
        onclick: () => {
          hide(key);
          join();
        },
        text: t("callJoin"),
      }),
    ]),
  ]);
  shown.set(key, sheet);
  holder().append(sheet);
}

/**
 * Takes away the notice of a group's call: the one of `call`, or any of conversation `conv`.
 * @param {string | null} call
 * @param {string} [conv]
 */
export function hideGroupNotice(call, conv) {
  for (const [key, sheet] of [...shown]) {
    if (!key.startsWith("group:")) continue;
    if ((call && key === `group:${call}`) || (conv && sheet.dataset.conv === conv)) hide(key);
  }
}
