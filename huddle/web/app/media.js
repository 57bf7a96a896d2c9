// Voice notes, the image viewer, PDF previews, upload retry and captions: what of them the
// first screen needs, which is the record button in the composer and the strings. The rest
// loads on first use: voice.js when a recording starts; attachments.js (with voice.js, and
// viewer.js on the first click on a thumbnail) when a file is shown or sent.
//
// The record button works held or pressed: held down (pointer) for HOLD_MS or longer, the
// note is sent on release; a shorter press (or Enter/Space) starts a recording that the next
// press sends. While recording, a bar shows the time with Cancel and Send; Escape cancels.
//
// Uploads a reload or a closed tab cut come back after sign-in (attachments.js resumes them);
// the files UI loads for that only when uploadrecords.js says there are some.

import { hasRecords } from "./uploadrecords.js";
import { icon } from "./dom.js";

/** A press at least this long is a hold: releasing it sends the note. */
export const HOLD_MS = 400;

const STRINGS = {
  en: {
    mediaRecordVoice: "Record a voice message",
    mediaRecordHint: "Hold to record, or press to start and press again to send",
    mediaStopVoice: "Stop and send the voice message",
    mediaRecording: "Recording…",
    mediaCancelRecording: "Cancel",
    mediaSendVoice: "Send",
    mediaRecordFailed: "Cannot record: {error}",
    mediaVoiceMessage: "[Voice message]",
    mediaPlayVoice: "Play voice message",
    mediaPauseVoice: "Pause voice message",
    mediaVoicePosition: "Position in the voice message",
    mediaVoiceAt: "{at} of {total}",
    mediaImageViewer: "Image viewer",
    mediaCloseViewer: "Close",
    mediaPrevImage: "Previous image",
    mediaNextImage: "Next image",
    mediaImageCount: "{n} of {total}",
    mediaPdfPreview: "First page of {name}",
    mediaRetry: "Retry",
    mediaRemoveUpload: "Remove {name}",
    mediaCaption: "Caption for {name}",
    mediaCaptionPlaceholder: "Add a caption",
    mediaConnectionLost: "the connection was lost",
    mediaOverQuota: "over your storage quota",
    mediaTooLarge: "the file is too large",
    mediaFileNotKept: "the file was not kept on this device; attach it again",
    mediaFileGone: "File no longer available",
  },
  zh: {
    mediaRecordVoice: "录制语音消息",
    mediaRecordHint: "按住录音，或按一下开始、再按一下发送",
    mediaStopVoice: "停止并发送语音消息",
    mediaRecording: "正在录音…",
    mediaCancelRecording: "取消",
    mediaSendVoice: "发送",
    mediaRecordFailed: "无法录音：{error}",
    mediaVoiceMessage: "[语音消息]",
    mediaPlayVoice: "播放语音消息",
    mediaPauseVoice: "暂停语音消息",
    mediaVoicePosition: "语音消息播放位置",
    mediaVoiceAt: "{at} / {total}",
    mediaImageViewer: "图片查看器",
    mediaCloseViewer: "关闭",
    mediaPrevImage: "上一张",
    mediaNextImage: "下一张",
    mediaImageCount: "第 {n} 张，共 {total} 张",
    mediaPdfPreview: "{name} 的第一页",
    mediaRetry: "重试",
    mediaRemoveUpload: "移除 {name}",
    mediaCaption: "{name} 的说明",
    mediaCaptionPlaceholder: "添加说明",
    mediaConnectionLost: "连接中断",
    mediaOverQuota: "超出存储配额",
    mediaTooLarge: "文件过大",
    mediaFileNotKept: "此设备未保留该文件，请重新添加",
    mediaFileGone: "文件已不可用",
  },
};

/** @param {any} ui app.js's feature interface */
export function init(ui) {
  ui.addStrings(STRINGS);
  ui.hooks.signedIn.push(() => {
    const identity = ui.app.session?.identity;
    if (identity && hasRecords(identity)) {
      ui.attachments().then((/** @type {any} */ module) => module.resumeUploads(), () => {});
    }
  });
  // Signing out stops the uploads under way and sends nothing more from this session; they
  // stay remembered and resumable for the same user's next sign-in.
  ui.hooks.signedOut.push(() => {
    for (const upload of ui.app.uploads.values()) {
      upload.removed = true;
      upload.handle?.abort(false).catch(() => {});
    }
  });
  ui.hooks.composer.push((/** @type {HTMLElement} */ form) => {
    const attach = form.querySelector("#attach");
    if (attach) attach.after(recordButton(ui));
    else form.prepend(recordButton(ui));
  });
}

/** @param {any} ui */
function recordButton(ui) {
  const button = /** @type {HTMLButtonElement} */ (
    ui.h("button", {
      type: "button",
      id: "record-voice",
      class: "record",
      "aria-label": ui.t("mediaRecordVoice"),
      "aria-pressed": "false",
      title: ui.t("mediaRecordHint"),
    }, [micIcon()])
  );
  /** @type {Promise<{finish: (send: boolean) => void}> | null} the recording under way */
  let recording = null;
  let pressedAt = 0;
  let holding = false;
  let sendOnRelease = false;
  const begin = () => {
    const started = import("./voice.js").then((voice) =>
      voice.record(ui, button, () => {
        if (recording === started) recording = null;
      }),
    );
    recording = started;
    started.catch(() => {
      if (recording === started) recording = null;
    });
  };
  const finish = (/** @type {boolean} */ send) => recording?.then((r) => r.finish(send));
  button.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    if (recording) {
      sendOnRelease = true;
      return;
    }
    pressedAt = performance.now();
    holding = true;
    button.setPointerCapture?.(e.pointerId);
    begin();
  });
  button.addEventListener("pointerup", () => {
    if (sendOnRelease) finish(true);
    else if (holding && performance.now() - pressedAt >= HOLD_MS) finish(true);
    sendOnRelease = holding = false;
  });
  button.addEventListener("pointercancel", () => {
    if (holding) finish(false);
    sendOnRelease = holding = false;
  });
  // A long press on a touch screen is a hold, not a context menu.
  button.addEventListener("contextmenu", (e) => e.preventDefault());
  // Enter and Space: a click with no pointer behind it (detail 0) toggles.
  button.addEventListener("click", (e) => {
    if (e.detail !== 0) return;
    if (recording) finish(true);
    else begin();
  });
  return button;
}

/** A microphone, drawn rather than an emoji (not every system has an emoji font). */
function micIcon() {
  return icon("M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3zM5.5 11a6.5 6.5 0 0 0 13 0M12 17.5V21M8.5 21h7", { stroked: true });
}
