// The image viewer: an image message's thumbnail opens the full image over the conversation
// (a modal <dialog>), with the previous and next images of the conversation on the arrow
// keys and buttons, a download link, and Escape (or Close, or a click beside the image) to
// close; the focus then goes back to the thumbnail of the image last shown. Loaded by
// attachments.js on the first click on a thumbnail; its styles are in attachments.css.

/**
 * @param {{app: any, h: any, signedUrls: (id: string) => Promise<{full: string}>}} ctx
 * @param {Record<string, any>} first the image message whose thumbnail was clicked
 * @param {HTMLElement} opener that thumbnail's link
 */
export function openViewer(ctx, first, opener) {
  const { app, h } = ctx;
  const t = app.t;
  document.querySelector("dialog.viewer")?.remove();
  const conv = app.current;
  const loaded = conv && app.chat ? app.chat.messages(conv) : [];
  const images = /** @type {Record<string, any>[]} */ (loaded.filter((/** @type {any} */ m) => m.kind === "image" && m.media && !m.recalled));
  let index = images.findIndex((m) => m.seq === first.seq);
  if (index < 0) {
    images.splice(0, images.length, first);
    index = 0;
  }
  const img = /** @type {HTMLImageElement} */ (h("img", { class: "viewer-image", alt: "" }));
  const caption = h("p", { class: "viewer-caption" });
  const count = h("span", { class: "viewer-count", "aria-live": "polite" });
  const download = /** @type {HTMLAnchorElement} */ (h("a", { class: "viewer-download", text: t("download") }));
  const prev = /** @type {HTMLButtonElement} */ (
    h("button", { type: "button", class: "viewer-prev", "aria-label": t("mediaPrevImage"), title: t("mediaPrevImage"), text: "‹", onclick: () => show(index - 1) })
  );
  const next = /** @type {HTMLButtonElement} */ (
    h("button", { type: "button", class: "viewer-next", "aria-label": t("mediaNextImage"), title: t("mediaNextImage"), text: "›", onclick: () => show(index + 1) })
  );
  const close = h("button", { type: "button", class: "viewer-close", text: t("mediaCloseViewer"), onclick: () => dialog.close() });
  const dialog = /** @type {HTMLDialogElement} */ (
    h("dialog", { class: "viewer", "aria-label": t("mediaImageViewer") }, [
      h("div", { class: "viewer-bar" }, [count, download, close]),
      h("div", { class: "viewer-stage" }, [prev, img, next]),
      caption,
    ])
  );

  /** @param {number} i */
  function show(i) {
    if (i < 0 || i >= images.length) return;
    index = i;
    const m = images[i];
    const name = m.media.name ?? "image";
    img.alt = name;
    img.removeAttribute("src");
    caption.textContent = m.text || name;
    count.textContent = images.length > 1 ? t("mediaImageCount", { n: i + 1, total: images.length }) : "";
    download.setAttribute("download", name);
    download.removeAttribute("href");
    prev.disabled = i === 0;
    next.disabled = i === images.length - 1;
    prev.hidden = next.hidden = images.length < 2;
    ctx.signedUrls(m.media.id).then((urls) => {
      if (index !== i) return;
      img.src = urls.full;
      download.href = urls.full;
    }, () => {});
  }

  dialog.addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft") show(index - 1);
    else if (e.key === "ArrowRight") show(index + 1);
    else return;
    e.preventDefault();
  });
  // A click on the backdrop (the dialog box itself, outside its contents) closes it.
  dialog.addEventListener("click", (e) => {
    if (e.target === dialog || e.target === dialog.querySelector(".viewer-stage")) dialog.close();
  });
  dialog.addEventListener("close", () => {
    dialog.remove();
    // The conversation may have been redrawn meanwhile: find the thumbnail again.
    const shown = images[index];
    const back =
      document.querySelector(`#messages a.media-image[data-seq="${shown.seq}"]`) ??
      (opener.isConnected ? opener : document.querySelector(`#messages a.media-image[data-seq="${first.seq}"]`));
    /** @type {HTMLElement | null} */ (back)?.focus();
  });
  document.body.append(dialog);
  show(index);
  dialog.showModal();
  close.focus();
}
