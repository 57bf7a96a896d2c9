// The web app's files in conversations: uploads (the SDK's Files: tus, resumable, with a
// progress bar, a caption field, and Retry and Remove when one fails) that end in a chat
// message carrying the file, and how such messages show: an image as its thumbnail (opening
// the image viewer, viewer.js), a voice note as a player with its waveform (voice.js), a PDF
// as a card with its first page, anything else as a card with a download link. Loaded by
// app.js on first use (an attach, a drop, a paste, a recording, or a message with a file to
// show), and it loads the SDK's files module the same way, so the first screen carries neither.

import { voiceView } from "./voice.js";

// Its styles come with it, in place before anything it draws is shown.
await new Promise((resolve) => {
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL("./attachments.css", import.meta.url).href;
  link.onload = link.onerror = resolve;
  document.head.append(link);
});

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
  const input = /** @type {HTMLInputElement | null} */ (document.getElementById("composer-text"));
  let caption = input?.value.trim() ?? "";
  if (caption && input) {
    input.value = "";
    // What app.js does when the text is cleared by hand: the kept draft and typing go too.
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }
  for (const file of list) {
    sendFile(file, { caption });
    caption = "";
  }
}

/**
 * Upload `file` (resumable, with a progress bar) into the open conversation (or `conv` /
 * `to`), then send the message that carries it, with its caption.
 * @param {Blob | File} file
 * @param {{kind?: "image" | "file" | "voice", caption?: string, conv?: string | null, to?: string | null}} [options]
 */
export function sendFile(file, options = {}) {
  if (!app.chat) return;
  const conv = options.conv !== undefined ? options.conv : app.current;
  const to = conv ? null : options.to !== undefined ? options.to : app.draftTo;
  if (!conv && !to) return;
  const key = nextUpload++;
  const entry = {
    name: /** @type {File} */ (file).name || "file",
    conv,
    to,
    sent: 0,
    total: file.size,
    error: "",
    file,
    kind: options.kind ?? null,
    caption: options.caption ?? "",
    /** @type {any} the SDK's Upload, once started */
    handle: null,
    removed: false,
  };
  app.uploads.set(key, entry);
  renderUploads();
  runUpload(key, entry);
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
    if (entry.handle) {
      object = await entry.handle.retry();
    } else {
      entry.handle = await files.startUpload(entry.file, {
        name: entry.name,
        onProgress: (/** @type {{bytesSent: number, bytesTotal: number}} */ p) => {
          entry.sent = p.bytesSent;
          entry.total = p.bytesTotal;
          renderUploads();
        },
      });
      object = await entry.handle.done;
    }
    if (entry.removed) return;
    app.uploads.delete(key);
    renderUploads();
    const kind = entry.kind ?? (object.kind === "image" ? "image" : "file");
    await chat.send(entry.conv, entry.caption.trim(), { to: entry.to ?? undefined, kind, media: object.id });
  } catch (error) {
    if (entry.removed) return;
    entry.error = errorText(error);
    renderUploads();
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
  app.uploads.delete(key);
  // Stops sending and drops what the node has of it (its quota reservation with it).
  entry.handle?.abort(true).catch(() => {});
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
    : /** @type {HTMLInputElement} */ (
        h("input", {
          class: "upload-caption",
          maxlength: 4000,
          placeholder: app.t("mediaCaptionPlaceholder"),
          "aria-label": app.t("mediaCaption", { name: u.name }),
          oninput: (/** @type {Event} */ e) => (u.caption = /** @type {HTMLInputElement} */ (e.target).value),
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
      if (status.firstChild !== error) status.replaceChildren(error, retry);
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

/**
 * The signed URLs of `id` now if they are kept and fresh, else when they come.
 * @param {string} id
 * @param {(urls: {full: string, thumb: string, large: string, voice: string}) => void} use
 */
function withUrls(id, use) {
  const kept = app.signed.get(id);
  if (kept && kept.expires - Date.now() > SIGNED_MARGIN_MS) use(kept);
  else signedUrls(id).then(use, () => {});
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
  if (m.kind === "voice") return voiceView(m, context());
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
  withUrls(media.id, (urls) => {
    download.href = urls.full;
    if (previewLink) previewLink.href = urls.full;
    if (preview) preview.src = urls.thumb;
  });
  return h("span", { class: "file-card" + (pdf ? " pdf-card" : ""), "data-media": media.id }, [
    previewLink ?? h("span", { class: "file-icon", "aria-hidden": "true", text: extensionOf(name) }),
    h("span", { class: "file-name", text: name }),
    h("span", { class: "file-size", text: formatSize(media.size ?? 0) }),
    download,
  ]);
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
  withUrls(media.id, (urls) => {
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
