// The web app's files in conversations: uploads (the SDK's Files: tus, resumable, with a
// progress bar, a caption field, and Retry and Remove when one fails) that end in a chat
// message carrying the file, and how such messages show: an image as its thumbnail (opening
// the image viewer, viewer.js), a voice note as a player with its waveform (voice.js), a PDF
// as a card with its first page, anything else as a card with a download link. Loaded by
// app.js on first use (an attach, a drop, a paste, a recording, or a message with a file to
// show), and it loads the SDK's files module the same way, so the first screen carries neither.
//
// Uploads outlive the page: each is remembered (uploadrecords.js) until the message carrying
// it is in the chat outbox, which the SDK keeps itself. After a reload (or a closed tab) the
// signed-in user's rows come back in their conversations, go on from the node's offset with
// the file the SDK kept, and send their message once: its `client_id` is made from the file id,
// so sending it again after a reload is stored once by the node.

import { dropRecord, loadRecords, saveRecord } from "./uploadrecords.js";
import { voiceView } from "./voice.js";
import { stylesheet } from "./dom.js";
import { maxText, textLength } from "./textbox.js";

// Its styles come with it, in place before anything it draws is shown.
await stylesheet(new URL("./attachments.css", import.meta.url));

// Signed URLs are asked for again this long before they expire (they last an hour).
const SIGNED_MARGIN_MS = 5 * 60 * 1000;

/** Options for the SDK's Files (e.g. `retryDelays`: how long tus-js-client keeps retrying a
 * lost connection before the upload shows as failed); tests shorten them. */
export const UPLOAD_OPTIONS = /** @type {{retryDelays?: number[], chunkSize?: number}} */ ({});

/** @type {any} the app's state (app.js) */
let app = null;
/** @type {any} app.js's element builder */
let h = null;
let nextUpload = 1;
/** Each upload's row in the uploads list, kept so that a progress update does not take the
 * focus or the typing out of its caption field.
 * @type {Map<number, {row: HTMLElement, update: () => void}>} */
const rows = new Map();

/**
 * What this module uses of app.js, given once when it loads.
 * @param {{app: any, h: any}} from
 */
export function init(from) {
  ({ app, h } = from);
}

/** The SDK's files module, loaded on first use so that the first screen stays small. */
export function loadFiles() {
  if (!app.files) {
    const conn = app.conn;
    app.files = import("/web/sdk/files.js").then((sdk) => ({ sdk, files: new sdk.Files(conn, UPLOAD_OPTIONS) }));
    app.files.catch(() => (app.files = null));
  }
  return app.files;
}

/**
 * Uploads each file into the open conversation. Text typed in the composer when the files
 * are given becomes the caption of the first one (editable in its row until it is sent).
 * @param {File[]} list
 */
export function sendFiles(list) {
  const input = /** @type {HTMLTextAreaElement | null} */ (document.getElementById("composer-text"));
  let caption = input?.value.trim() ?? "";
  // Too long to send: it stays in the composer, which says so, rather than fail as a caption.
  if (textLength(caption) > maxText()) caption = "";
  if (caption && input) {
    input.value = "";
    // What app.js does when the text is cleared by hand: the kept draft and typing go too.
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }
  // Their messages go in the order the files were given, whichever upload ends first (the
  // caption of the first stays with the first); an upload that fails holds up no other.
  /** @type {Promise<void>} */
  let previous = Promise.resolve();
  for (const file of list) {
    const entry = sendFile(file, { caption, after: previous });
    previous = entry?.turn ?? previous;
    caption = "";
  }
}

/**
 * Upload `file` (resumable, with a progress bar) into the open conversation (or `conv` /
 * `to`), then send the message that carries it, with its caption; not before `after` (the
 * turn of the file given before it) has come. Returns the upload's entry.
 * @param {Blob | File} file
 * @param {{kind?: "image" | "file" | "voice", caption?: string, conv?: string | null, to?: string | null, after?: Promise<void>}} [options]
 * @returns {Record<string, any> | undefined}
 */
export function sendFile(file, options = {}) {
  if (!app.chat) return undefined;
  const conv = options.conv !== undefined ? options.conv : app.current;
  const to = conv ? null : options.to !== undefined ? options.to : app.draftTo;
  if (!conv && !to) return undefined;
  const key = nextUpload++;
  const entry = newEntry({
    rid: randomId(),
    conv,
    to,
    name: /** @type {File} */ (file).name || "file",
    size: file.size,
    kind: options.kind ?? null,
    caption: options.caption ?? "",
    created: Date.now(),
  });
  entry.file = file;
  entry.after = options.after ?? null;
  app.uploads.set(key, entry);
  remember(entry);
  renderUploads();
  runUpload(key, entry);
  return entry;
}

/**
 * An upload's entry in `app.uploads`, from what is remembered of it.
 * @param {import("./uploadrecords.js").UploadRecord} record
 * @returns {Record<string, any>}
 */
function newEntry(record) {
  /** @type {() => void} */
  let done = () => {};
  /** Its message is in the outbox, or it failed or was removed: the next file's turn. */
  const turn = new Promise((resolve) => (done = () => resolve(undefined)));
  return {
    ...record,
    turn,
    turnDone: done,
    /** @type {Promise<void> | null} the turn of the file given before this one */
    after: null,
    sent: 0,
    total: record.size,
    error: "",
    /** @type {Blob | null} the file, while this page has it */
    file: null,
    /** @type {any} the SDK's Upload, once started */
    handle: null,
    removed: false,
    // No file to go on with (it was not kept): Remove is all there is.
    lost: false,
  };
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function identity() {
  return app.session?.identity ?? app.conn?.identity ?? "";
}

/** Notes what the upload is for and how far it got, for the page after a reload. @param {Record<string, any>} u */
function remember(u) {
  if (u.removed) return;
  const { rid, conv, to, name, size, kind, caption, fingerprint, uploadUrl, fileId, created } = u;
  saveRecord(identity(), { rid, conv, to, name, size, kind, caption, fingerprint, uploadUrl, fileId, created });
}

/**
 * Uploads (or, after a failure, goes on with) one entry, then sends its message.
 * @param {number} key
 * @param {Record<string, any>} entry
 */
async function runUpload(key, entry) {
  const chat = app.chat;
  entry.error = "";
  renderUploads();
  try {
    const { files } = await loadFiles();
    /** @type {Record<string, any>} */
    let object;
    // The upload's URL, noted once tus-js-client has it: after a reload that cut the upload
    // just as it finished, the node's file of that id tells that it did.
    const noteUrl = () => {
      if (entry.handle?.url && entry.uploadUrl !== entry.handle.url) {
        entry.uploadUrl = entry.handle.url;
        remember(entry);
      }
    };
    if (entry.handle) {
      object = await entry.handle.retry();
    } else {
      entry.fingerprint = files.fingerprint(entry.file);
      remember(entry);
      entry.handle = await files.startUpload(entry.file, {
        name: entry.name,
        onProgress: (/** @type {{bytesSent: number, bytesTotal: number}} */ p) => {
          entry.sent = p.bytesSent;
          entry.total = p.bytesTotal;
          noteUrl();
          renderUploads();
        },
      });
      object = await entry.handle.done;
    }
    noteUrl();
    if (entry.removed) return;
    entry.fileId = object.id;
    entry.kind = entry.kind ?? (object.kind === "image" ? "image" : "file");
    remember(entry);
    if (entry.after) await entry.after;
    if (app.chat === chat && !entry.removed) await sendMessage(key, entry);
  } catch (error) {
    if (entry.removed) return;
    entry.error = errorText(error);
    renderUploads();
    if (!error?.code) retryWhenBack(key, entry, chat);
  } finally {
    entry.turnDone();
  }
}

/**
 * An upload that failed on the network goes on by itself once the connection to the node is
 * back (Retry stays there for the impatient).
 * @param {number} key
 * @param {Record<string, any>} entry
 * @param {any} chat
 */
function retryWhenBack(key, entry, chat) {
  const conn = app.conn;
  if (!conn) return;
  const off = conn.on("ready", () => {
    off();
    if (app.chat === chat && entry.error && !entry.removed && app.uploads.get(key) === entry) runUpload(key, entry);
  });
}

/**
 * Sends the message carrying an uploaded file (once: see the top of this module), and
 * forgets the upload once the chat outbox has the message.
 * @param {number} key
 * @param {Record<string, any>} entry
 */
async function sendMessage(key, entry) {
  const chat = app.chat;
  if (!chat || entry.removed) return;
  app.uploads.delete(key);
  renderUploads();
  await chat.send(entry.conv, entry.caption.trim(), {
    to: entry.to ?? undefined,
    kind: entry.kind ?? "file",
    media: entry.fileId,
    client_id: `f-${entry.fileId}`,
  });
  dropRecord(identity(), entry.rid);
}

let resuming = false;

/**
 * After sign-in: brings back the signed-in user's uploads that a reload or a closed tab cut
 * (their rows, in the conversations they were for), goes on with each from the node's offset,
 * and sends the messages of those that finished. Called by media.js only when there are any.
 */
export async function resumeUploads() {
  const chat = app.chat;
  if (resuming || !chat) return;
  resuming = true;
  try {
    const known = new Set([...app.uploads.values()].map((u) => u.rid));
    /** @type {[number, Record<string, any>][]} */
    const entries = [];
    for (const record of loadRecords(identity())) {
      if (known.has(record.rid)) continue;
      const entry = newEntry(record);
      const key = nextUpload++;
      app.uploads.set(key, entry);
      entries.push([key, entry]);
    }
    renderUploads();
    if (!entries.length) return;
    // The files' owner (the connection's identity) and the chat outbox (what was already
    // given to it) are known once the first sync is done.
    if (!chat.syncs.some((/** @type {any} */ s) => s.reply)) {
      await new Promise((resolve) => {
        const off = chat.on("synced", () => {
          off();
          resolve(undefined);
        });
      });
    }
    if (app.chat !== chat) return;
    const { sdk, files } = await loadFiles();
    for (const [key, entry] of entries) {
      if (entry.removed) continue;
      if (entry.fileId) {
        await sendMessage(key, entry);
        continue;
      }
      if (entry.uploadUrl) {
        // Finished on the node, though this page never heard (the reload came in between)?
        const object = await files.meta(sdk.uploadIdOf(entry.uploadUrl)).catch(() => null);
        if (object) {
          entry.fileId = object.id;
          entry.kind = entry.kind ?? (object.kind === "image" ? "image" : "file");
          remember(entry);
          await sendMessage(key, entry);
          continue;
        }
      }
      entry.file = entry.fingerprint ? await files.keptFile(entry.fingerprint) : null;
      if (entry.file) {
        runUpload(key, entry);
      } else {
        entry.lost = true;
        entry.error = app.t("mediaFileNotKept");
        renderUploads();
      }
    }
  } finally {
    resuming = false;
  }
}

/** @param {any} error */
function errorText(error) {
  const code = error?.code;
  if (code === "quota_exceeded") return app.t("mediaOverQuota");
  if (code === "too_large") return app.t("mediaTooLarge");
  if (code) return code;
  // tus-js-client's network failures are plain Errors with a long technical message.
  return app.t("mediaConnectionLost");
}

/** @param {number} key @param {Record<string, any>} entry */
function removeUpload(key, entry) {
  entry.removed = true;
  entry.turnDone();
  app.uploads.delete(key);
  dropRecord(identity(), entry.rid);
  // Stops sending and drops what the node has of it (its quota reservation with it).
  if (entry.handle) entry.handle.abort(true).catch(() => {});
  else if (entry.uploadUrl && !entry.fileId) {
    loadFiles().then(({ files }) => files.terminateUpload(entry.uploadUrl)).catch(() => {});
  }
  renderUploads();
  document.getElementById("composer-text")?.focus();
}

/**
 * One upload's row: name, progress (or the error with Retry), size, caption, Remove.
 * @param {number} key
 * @param {Record<string, any>} u
 */
function uploadRow(key, u) {
  const status = h("span", { class: "upload-status" });
  const bar = /** @type {HTMLProgressElement} */ (h("progress", { "aria-label": app.t("uploading", { name: u.name }) }));
  const size = h("span", { class: "upload-size" });
  const error = h("span", { class: "upload-error", role: "alert" });
  const retry = h("button", { type: "button", class: "upload-retry", text: app.t("mediaRetry"), onclick: () => runUpload(key, u) });
  const remove = h("button", {
    type: "button",
    class: "upload-remove",
    "aria-label": app.t("mediaRemoveUpload", { name: u.name }),
    title: app.t("mediaRemoveUpload", { name: u.name }),
    text: "×",
    onclick: () => removeUpload(key, u),
  });
  const caption = u.kind === "voice"
    ? null
    : /** @type {HTMLTextAreaElement} */ (
        // Lines, as in the composer it may come from.
        h("textarea", {
          class: "upload-caption",
          rows: 1,
          maxlength: maxText(),
          placeholder: app.t("mediaCaptionPlaceholder"),
          "aria-label": app.t("mediaCaption", { name: u.name }),
          oninput: (/** @type {Event} */ e) => {
            u.caption = /** @type {HTMLTextAreaElement} */ (e.target).value;
            remember(u);
          },
        })
      );
  if (caption) caption.value = u.caption;
  const row = h("li", { class: "upload", "data-upload": key }, [
    h("span", { class: "upload-name", text: u.name }),
    status,
    remove,
    caption,
  ]);
  const update = () => {
    row.classList.toggle("failed", Boolean(u.error));
    if (u.error) {
      error.textContent = app.t("uploadFailed", { error: u.error });
      if (status.firstChild !== error) status.replaceChildren(...(u.lost ? [error] : [error, retry]));
    } else {
      bar.max = Math.max(u.total, 1);
      bar.value = u.sent;
      size.textContent = `${formatSize(u.sent)} / ${formatSize(u.total)}`;
      if (status.firstChild !== bar) status.replaceChildren(bar, size);
    }
  };
  return { row, update };
}

export function renderUploads() {
  for (const key of rows.keys()) if (!app.uploads.has(key)) rows.delete(key);
  const list = document.getElementById("uploads");
  if (!list) return;
  const shown = [...app.uploads.entries()].filter(([, u]) => (app.current ? u.conv === app.current : u.to === app.draftTo));
  const wanted = shown.map(([key, u]) => {
    let kept = rows.get(key);
    if (!kept) {
      kept = uploadRow(key, u);
      rows.set(key, kept);
    }
    kept.update();
    return kept.row;
  });
  // Rows move only when the set changes (moving an element takes the focus out of it).
  if (wanted.length !== list.children.length || wanted.some((row, i) => list.children[i] !== row)) {
    list.replaceChildren(...wanted);
  }
  list.hidden = !shown.length;
}

/** @param {number} bytes */
function formatSize(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = unit === 0 || value >= 10 ? 0 : 1;
  return `${new Intl.NumberFormat(app.lang === "zh" ? "zh-CN" : "en", { maximumFractionDigits: digits }).format(value)} ${units[unit]}`;
}

/**
 * Signed URLs of a file (the full file, its thumbnails, its voice version): what <img>,
 * <audio> and a download link can use without the token. Kept until shortly before they expire.
 * @param {string} id
 * @returns {Promise<{full: string, thumb: string, large: string, voice: string, expires: number}>}
 */
export async function signedUrls(id) {
  const kept = app.signed.get(id);
  if (kept && kept.expires - Date.now() > SIGNED_MARGIN_MS) return kept;
  const { sdk, files } = await loadFiles();
  const signed = await files.sign(id);
  const urls = {
    full: signed.url,
    thumb: sdk.signedVariantUrl(signed.url, "thumb/small"),
    large: sdk.signedVariantUrl(signed.url, "thumb/large"),
    voice: sdk.signedVariantUrl(signed.url, "voice"),
    expires: signed.expires_at * 1000,
  };
  app.signed.set(id, urls);
  return urls;
}

/** Files the node no longer has for this user (deleted by their owner, or no longer shared):
 * their messages show a card saying so instead of a link that leads nowhere.
 * @type {Set<string>} */
const gone = new Set();

/** @param {any} error */
function isGone(error) {
  return error?.status === 404 || error?.status === 410;
}

/**
 * The signed URLs of `id` now if they are kept and fresh, else when they come. If the node
 * says the file is gone, `view` (what shows it) is replaced by the card saying so.
 * @param {Record<string, any>} m the message
 * @param {HTMLElement} view
 * @param {(urls: {full: string, thumb: string, large: string, voice: string}) => void} use
 */
function withUrls(m, view, use) {
  const id = m.media.id;
  const kept = app.signed.get(id);
  if (kept && kept.expires - Date.now() > SIGNED_MARGIN_MS) use(kept);
  else signedUrls(id).then(use, (error) => isGone(error) && markGone(m, view));
}

/** @param {Record<string, any>} m @param {HTMLElement} view */
function markGone(m, view) {
  gone.add(m.media.id);
  app.signed.delete(m.media.id);
  if (view.isConnected) view.replaceWith(goneView(m));
}

/**
 * The card of a file the node no longer has: its name, struck through, and why.
 * @param {Record<string, any>} m
 */
function goneView(m) {
  // A voice note's file name is the recorder's, not something its sender chose.
  const name = m.kind === "voice" ? app.t("mediaVoiceMessage") : (m.media.name ?? "file");
  return h("span", { class: "file-card file-gone", "data-media": m.media.id, role: "note" }, [
    h("span", { class: "file-icon", "aria-hidden": "true", text: "∅" }),
    h("span", { class: "file-name", text: name }),
    h("span", { class: "file-size", text: app.t("mediaFileGone") }),
  ]);
}

/**
 * A download link that asks the node first (HEAD on the signed URL) the first time it is
 * used: a file deleted since the URL was signed turns its card into the "no longer
 * available" one instead of a download that fails.
 * @param {Record<string, any>} m
 * @param {HTMLAnchorElement} link
 * @param {() => HTMLElement} view
 */
function checkBeforeDownload(m, link, view) {
  let checked = false;
  link.addEventListener("click", (e) => {
    if (checked || !link.href) return;
    e.preventDefault();
    // Not from the cache: downloads are cached as immutable, a deletion is not.
    fetch(link.href, { method: "HEAD", cache: "no-store" }).then(
      (response) => {
        if (response.status === 404 || response.status === 410) return markGone(m, view());
        checked = true;
        link.click();
      },
      () => {
        checked = true;
        link.click();
      },
    );
  });
}

/** What voice.js and viewer.js use of the app and of this module. */
function context() {
  return { app, h, signedUrls };
}

/**
 * A message's file: an image as its thumbnail (opening the viewer), a voice note as a
 * player, a PDF as a card with its first page, anything else as a card with name, size and a
 * download link.
 * @param {Record<string, any>} m
 */
export function mediaView(m) {
  const media = m.media;
  const name = media.name ?? "file";
  if (gone.has(media.id)) return goneView(m);
  if (m.kind === "voice") {
    const view = voiceView(m, context());
    // The player asks for its URL on first play; ask now whether there is anything to play.
    withUrls(m, view, () => {});
    return view;
  }
  if (m.kind === "image") return imageView(m);
  const download = /** @type {HTMLAnchorElement} */ (h("a", { class: "download", download: name, text: app.t("download") }));
  const pdf = media.mime === "application/pdf" && media.thumbnail;
  /** @type {HTMLAnchorElement | null} */
  let previewLink = null;
  /** @type {HTMLImageElement | null} */
  let preview = null;
  if (pdf) {
    preview = /** @type {HTMLImageElement} */ (h("img", { class: "pdf-preview", alt: app.t("mediaPdfPreview", { name }) }));
    previewLink = /** @type {HTMLAnchorElement} */ (
      h("a", { class: "pdf-open", target: "_blank", rel: "noopener", title: app.t("openImage", { name }) }, [preview])
    );
  }
  const card = h("span", { class: "file-card" + (pdf ? " pdf-card" : ""), "data-media": media.id }, [
    previewLink ?? h("span", { class: "file-icon", "aria-hidden": "true", text: extensionOf(name) }),
    h("span", { class: "file-name", text: name }),
    h("span", { class: "file-size", text: formatSize(media.size ?? 0) }),
    download,
  ]);
  checkBeforeDownload(m, download, () => card);
  withUrls(m, card, (urls) => {
    download.href = urls.full;
    if (previewLink) previewLink.href = urls.full;
    if (preview) preview.src = urls.thumb;
  });
  return card;
}

/**
 * An image message's thumbnail: a link to the full image that opens it in the viewer
 * (another tab with a modifier key, as any link).
 * @param {Record<string, any>} m
 */
function imageView(m) {
  const media = m.media;
  const name = media.name ?? "file";
  const img = /** @type {HTMLImageElement} */ (h("img", { class: "thumb", alt: name, width: media.width, height: media.height }));
  // A conversation read at its end stays at its end when a thumbnail comes in.
  img.addEventListener("load", () => {
    const list = img.closest("#messages");
    if (list && list.scrollHeight - list.scrollTop - list.clientHeight < img.height + 60) {
      list.scrollTop = list.scrollHeight;
    }
  });
  // No thumbnail (a type the node cannot read): the image itself, if the browser can.
  img.addEventListener("error", () => {
    const full = app.signed.get(media.id)?.full;
    if (full && img.src !== full) img.src = full;
  });
  const link = /** @type {HTMLAnchorElement} */ (
    h("a", {
      class: "media-image",
      target: "_blank",
      rel: "noopener",
      title: app.t("openImage", { name }),
      "data-media-id": media.id,
      "data-seq": m.seq,
      onclick: (/** @type {MouseEvent} */ e) => {
        if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        import("./viewer.js").then((viewer) => viewer.openViewer(context(), m, link));
      },
    }, [img])
  );
  withUrls(m, link, (urls) => {
    link.href = urls.full;
    img.src = urls.thumb;
  });
  return link;
}

/** @param {string} name */
function extensionOf(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 && name.length - dot <= 5 ? name.slice(dot + 1).toUpperCase() : "";
}
