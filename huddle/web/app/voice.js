// Voice notes in the web app: recording one from the composer (media.js's record button
// calls `record`, which this module does only once the user asks, so the first screen does
// not carry it) and playing one in a conversation (`voiceView`, drawn by attachments.js): a
// play/pause button, the waveform the node computed with the part already played drawn over
// it, and the duration. Its styles are in attachments.css.

import { icon } from "./dom.js";

/** A recording shorter than this is taken as a slip and not sent. */
export const MIN_RECORDING_MS = 300;
/** How often the recording timer is redrawn. */
const TIMER_TICK_MS = 200;
/** Players kept across redraws of the conversation (a playing note keeps playing). */
const KEPT_PLAYERS = 200;

/** @param {number} seconds */
export function formatDuration(seconds) {
  const whole = Math.max(0, Math.floor(seconds));
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

const PLAY = "M7 4.5v15l13-7.5z";
const PAUSE = "M6 4h4.5v16H6zM13.5 4H18v16h-4.5z";

// ---- recording ----

/**
 * Starts recording a voice note into the open conversation, with a bar in the composer
 * (timer, Cancel, Send). `finish(true)` stops and sends it, `finish(false)` drops it; so do
 * the bar's buttons, and Escape cancels. `done` is called when the recording is over either way.
 * @param {any} ui app.js's feature interface
 * @param {HTMLButtonElement} button the record button (pressed while recording)
 * @param {() => void} done
 */
export async function record(ui, button, done) {
  const { app, h } = ui;
  const conv = app.current;
  const to = conv ? null : app.draftTo;
  // The files UI (and its styles) first: the recording ends in one of its uploads.
  const attachments = await ui.attachments();
  const form = /** @type {HTMLFormElement} */ (button.form ?? button.closest("form"));
  const stop = new AbortController();
  let send = true;
  let startedAt = 0;
  let over = false;
  const timer = h("span", { class: "recorder-time", role: "timer", text: formatDuration(0) });
  const bar = h("div", { class: "recorder", role: "group", "aria-label": ui.t("mediaRecording") }, [
    h("span", { class: "recorder-dot", "aria-hidden": "true" }),
    h("span", { class: "recorder-label", text: ui.t("mediaRecording") }),
    timer,
    h("button", { type: "button", class: "recorder-cancel", text: ui.t("mediaCancelRecording"), onclick: () => finish(false) }),
    h("button", { type: "button", class: "recorder-send", text: ui.t("mediaSendVoice"), onclick: () => finish(true) }),
  ]);
  form.querySelector(".record-error")?.remove();
  button.after(bar);
  form.classList.add("recording");
  button.setAttribute("aria-pressed", "true");
  button.setAttribute("aria-label", ui.t("mediaStopVoice"));
  const tick = setInterval(() => {
    // The conversation was closed or redrawn (another one opened): nothing is sent.
    if (!button.isConnected) finish(false);
    else if (startedAt) timer.textContent = formatDuration((performance.now() - startedAt) / 1000);
  }, TIMER_TICK_MS);
  /** @param {KeyboardEvent} e */
  const onKey = (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      finish(false);
    }
  };
  document.addEventListener("keydown", onKey);

  /** @param {boolean} sendIt */
  function finish(sendIt) {
    send = sendIt;
    stop.abort();
    end();
  }

  function end() {
    if (over) return;
    over = true;
    clearInterval(tick);
    document.removeEventListener("keydown", onKey);
    bar.remove();
    form.classList.remove("recording");
    button.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-label", ui.t("mediaRecordVoice"));
    done();
  }

  /** @param {string} text */
  function fail(text) {
    end();
    form.querySelector(".record-error")?.remove();
    button.after(h("span", { class: "record-error", role: "alert", text: ui.t("mediaRecordFailed", { error: text }) }));
  }

  (async () => {
    const { sdk } = await attachments.loadFiles();
    const blob = await sdk.recordVoiceNote({ signal: stop.signal, onStart: () => (startedAt = performance.now()) });
    const length = startedAt ? performance.now() - startedAt : 0;
    end();
    if (!send || length < MIN_RECORDING_MS || !blob.size) return;
    const extension = blob.type.startsWith("audio/ogg") ? "ogg" : "webm";
    const file = new File([blob], `voice-${Date.now()}.${extension}`, { type: blob.type, lastModified: Date.now() });
    attachments.sendFile(file, { kind: "voice", conv, to });
  })().catch((/** @type {any} */ error) => fail(error?.message ?? String(error)));

  return { finish };
}

// ---- playing ----

/** @type {Map<string, HTMLElement>} */
const players = new Map();
/** @type {HTMLAudioElement | null} */
let playing = null;

/**
 * A voice message's player. The same element comes back for the same message, so that a
 * redraw of the conversation does not stop a note that is playing.
 * @param {Record<string, any>} m
 * @param {{app: any, h: any, signedUrls: (id: string) => Promise<{full: string, voice: string}>}} ctx
 */
export function voiceView(m, ctx) {
  const { app, h } = ctx;
  const key = `${m.seq}|${m.media.id}|${app.lang}`;
  const kept = players.get(key);
  if (kept) return kept;
  const media = m.media;
  const total = (media.duration_ms ?? 0) / 1000;
  const levels = Array.isArray(media.waveform) && media.waveform.length ? media.waveform : null;
  const peak = levels ? Math.max(1, ...levels) : 1;
  const bars = () =>
    h("span", { class: "voice-bars", "aria-hidden": "true" },
      (levels ?? new Array(32).fill(0)).map((/** @type {number} */ level) => {
        const bar = h("span", { class: "voice-bar" });
        bar.style.height = `${Math.max(8, Math.round((level / peak) * 100))}%`;
        return bar;
      }),
    );
  const audio = new Audio();
  audio.preload = "metadata";
  const button = h("button", { type: "button", class: "voice-play", "aria-label": app.t("mediaPlayVoice") }, [icon(PLAY)]);
  const time = h("span", { class: "voice-time", text: formatDuration(total) });
  const played = bars();
  played.classList.add("voice-played");
  const wave = h("span", {
    class: "voice-wave" + (levels ? "" : " flat"),
    role: "slider",
    tabindex: 0,
    "aria-label": app.t("mediaVoicePosition"),
    "aria-valuemin": 0,
    "aria-valuemax": Math.round(total),
    "aria-valuenow": 0,
    "data-bars": levels ? levels.length : 0,
  }, [bars(), played]);
  const view = h("span", { class: "voice-note", "data-media": media.id, "data-state": "paused" }, [button, wave, time]);
  players.set(key, view);
  if (players.size > KEPT_PLAYERS) {
    for (const [k, el] of players) {
      if (players.size <= KEPT_PLAYERS) break;
      if (!el.isConnected) players.delete(k);
    }
  }

  /** Seconds the note lasts: what the node measured, else what the browser found. */
  const length = () => (total > 0 ? total : Number.isFinite(audio.duration) ? audio.duration : 0);
  const draw = () => {
    const at = audio.currentTime;
    const share = length() > 0 ? Math.min(1, at / length()) : 0;
    wave.style.setProperty("--played", String(share));
    wave.setAttribute("aria-valuenow", String(Math.round(at)));
    wave.setAttribute("aria-valuetext", app.t("mediaVoiceAt", { at: formatDuration(at), total: formatDuration(length()) }));
    time.textContent = formatDuration(at > 0 || !audio.paused ? at : length());
  };
  const animate = () => {
    draw();
    if (!audio.paused) requestAnimationFrame(animate);
  };
  const state = (/** @type {"playing" | "paused"} */ s) => {
    view.dataset.state = s;
    button.replaceChildren(icon(s === "playing" ? PAUSE : PLAY));
    button.setAttribute("aria-label", app.t(s === "playing" ? "mediaPauseVoice" : "mediaPlayVoice"));
  };
  audio.addEventListener("play", () => {
    if (playing && playing !== audio) playing.pause();
    playing = audio;
    state("playing");
    requestAnimationFrame(animate);
  });
  audio.addEventListener("pause", () => {
    state("paused");
    draw();
  });
  audio.addEventListener("ended", () => {
    audio.currentTime = 0;
    draw();
  });
  audio.addEventListener("timeupdate", draw);
  audio.addEventListener("loadedmetadata", draw);
  // No normalized version (the node could not make one): the recording as it was sent.
  audio.addEventListener("error", () => {
    const full = app.signed.get(media.id)?.full;
    if (full && audio.src !== full) {
      audio.src = full;
      if (view.dataset.wanted === "1") audio.play().catch(() => {});
    }
  });
  const source = () =>
    audio.src ? Promise.resolve() : ctx.signedUrls(media.id).then((urls) => void (audio.src = audio.src || urls.voice));
  button.addEventListener("click", () => {
    if (!audio.paused) {
      view.dataset.wanted = "0";
      audio.pause();
      return;
    }
    view.dataset.wanted = "1";
    source().then(() => audio.play()).catch(() => {});
  });
  /** @param {number} seconds */
  const seek = (seconds) => {
    source().then(() => {
      audio.currentTime = Math.max(0, Math.min(length(), seconds));
      draw();
    }, () => {});
  };
  wave.addEventListener("click", (e) => {
    const box = wave.getBoundingClientRect();
    seek(((e.clientX - box.left) / Math.max(1, box.width)) * length());
  });
  wave.addEventListener("keydown", (e) => {
    const step = { ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1 }[e.key];
    if (step) seek(audio.currentTime + step);
    else if (e.key === "Home") seek(0);
    else if (e.key === "End") seek(length());
    else return;
    e.preventDefault();
  });
  return view;
}
