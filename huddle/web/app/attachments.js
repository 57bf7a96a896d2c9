// The web app's files in conversations: uploads (the SDK's Files: tus, resumable, with a
// progress bar each) that end in a chat message carrying the file, and how such messages
// show: an image as its thumbnail, anything else as a card with a download link. Loaded by
// app.js on first use (an attach, a drop, a paste, or a message with a file to show), and it
// loads the SDK's files module the same way, so the first screen carries neither.

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

/** @type {any} the app's state (app.js) */
let app = null;
/** @type {any} app.js's element builder */
let h = null;
let nextUpload = 1;

/**
 * What this module uses of app.js, given once when it loads.
 * @param {{app: any, h: any}} from
 */
export function init(from) {
  ({ app, h } = from);
}

/** The SDK's files module, loaded on first use so that the first screen stays small. */
function loadFiles() {
  if (!app.files) {
    const conn = app.conn;
    app.files = import("/web/sdk/files.js").then((sdk) => ({ sdk, files: new sdk.Files(conn) }));
    app.files.catch(() => (app.files = null));
  }
  return app.files;
}

/** @param {File[]} list */
export function sendFiles(list) {
  for (const file of list) sendFile(file);
}

/**
 * Upload `file` (resumable, with a progress bar) into the open conversation, then send the
 * message that carries it.
 * @param {File} file
 */
async function sendFile(file) {
  if (!app.chat || (!app.current && !app.draftTo)) return;
  const chat = app.chat;
  const conv = app.current;
  const to = conv ? null : app.draftTo;
  const key = nextUpload++;
  const entry = { name: file.name || "file", conv, to, sent: 0, total: file.size, error: "" };
  app.uploads.set(key, entry);
  renderUploads();
  try {
    const { files } = await loadFiles();
    const upload = await files.startUpload(file, {
      onProgress: (/** @type {{bytesSent: number, bytesTotal: number}} */ p) => {
        entry.sent = p.bytesSent;
        entry.total = p.bytesTotal;
        renderUploads();
      },
    });
    const object = await upload.done;
    app.uploads.delete(key);
    renderUploads();
    const kind = object.kind === "image" ? "image" : "file";
    await chat.send(conv, "", { to: to ?? undefined, kind, media: object.id });
  } catch (error) {
    entry.error = /** @type {any} */ (error).code ?? /** @type {any} */ (error).message ?? String(error);
    renderUploads();
  }
}

export function renderUploads() {
  const list = document.getElementById("uploads");
  if (!list) return;
  const shown = [...app.uploads.entries()].filter(([, u]) => (app.current ? u.conv === app.current : u.to === app.draftTo));
  list.replaceChildren(
    ...shown.map(([key, u]) =>
      h("li", { class: "upload" + (u.error ? " failed" : ""), "data-upload": key }, [
        h("span", { class: "upload-name", text: u.name }),
        u.error
          ? h("span", { class: "upload-error", role: "alert", text: app.t("uploadFailed", { error: u.error }) })
          : h("progress", {
              max: Math.max(u.total, 1),
              value: u.sent,
              "aria-label": app.t("uploading", { name: u.name }),
            }),
        u.error
          ? h("button", {
              type: "button",
              onclick: () => {
                app.uploads.delete(key);
                renderUploads();
              },
              text: app.t("dismiss"),
            })
          : h("span", { class: "upload-size", text: `${formatSize(u.sent)} / ${formatSize(u.total)}` }),
      ]),
    ),
  );
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
 * Signed URLs of a file (the full file and its small thumbnail): what <img> and a download
 * link can use without the token. Kept until shortly before they expire.
 * @param {string} id
 */
async function signedUrls(id) {
  const kept = app.signed.get(id);
  if (kept && kept.expires - Date.now() > SIGNED_MARGIN_MS) return kept;
  const { sdk, files } = await loadFiles();
  const signed = await files.sign(id);
  const urls = { full: signed.url, thumb: sdk.signedVariantUrl(signed.url, "thumb/small"), expires: signed.expires_at * 1000 };
  app.signed.set(id, urls);
  return urls;
}

/**
 * A message's file: an image as its thumbnail (a link to the full image), anything else as a
 * card with name, size and a download link.
 * @param {Record<string, any>} m
 */
export function mediaView(m) {
  const media = m.media;
  const name = media.name ?? "file";
  /** @param {{full: string, thumb: string}} urls @param {HTMLAnchorElement} link @param {HTMLImageElement | null} img */
  const fill = (urls, link, img) => {
    link.href = urls.full;
    if (img) img.src = urls.thumb;
  };
  const kept = app.signed.get(media.id);
  const usable = kept && kept.expires - Date.now() > SIGNED_MARGIN_MS ? kept : null;
  let link;
  let img = null;
  if (m.kind === "image") {
    img = /** @type {HTMLImageElement} */ (h("img", { class: "thumb", alt: name, width: media.width, height: media.height }));
    // A conversation read at its end stays at its end when a thumbnail comes in.
    img.addEventListener("load", () => {
      const list = img?.closest("#messages");
      if (list && list.scrollHeight - list.scrollTop - list.clientHeight < (img?.height ?? 0) + 60) {
        list.scrollTop = list.scrollHeight;
      }
    });
    // No thumbnail (a type the node cannot read): the image itself, if the browser can.
    img.addEventListener("error", () => {
      const full = app.signed.get(media.id)?.full;
      if (img && full && img.src !== full) img.src = full;
    });
    link = /** @type {HTMLAnchorElement} */ (
      h("a", { class: "media-image", target: "_blank", rel: "noopener", title: app.t("openImage", { name }) }, [img])
    );
  } else {
    link = /** @type {HTMLAnchorElement} */ (h("a", { class: "download", download: name, text: app.t("download") }));
  }
  if (usable) fill(usable, link, img);
  else signedUrls(media.id).then((urls) => fill(urls, link, img), () => {});
  if (m.kind === "image") return link;
  return h("span", { class: "file-card", "data-media": media.id }, [
    h("span", { class: "file-icon", "aria-hidden": "true", text: extensionOf(name) }),
    h("span", { class: "file-name", text: name }),
    h("span", { class: "file-size", text: formatSize(media.size ?? 0) }),
    link,
  ]);
}

/** @param {string} name */
function extensionOf(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 && name.length - dot <= 5 ? name.slice(dot + 1).toUpperCase() : "";
}
