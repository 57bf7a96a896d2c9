// Files: the media store's HTTP API (docs/media.md) from a browser.
//
// Uploads are resumable (tus 1.0 through the vendored tus-js-client): each one is remembered
// in localStorage under a fingerprint of the file and the user, so the same file given again
// after a reload or a lost connection goes on from what the node already has (a HEAD tells
// how far it got) instead of starting over. Downloads carry the access token; signed URLs need
// none, which is what <img>, <audio> and other users are given. Voice notes are recorded with
// MediaRecorder and uploaded like any file: the node makes the normalized Ogg/Opus version of
// any sound recording of voice-note length (`voice` in the file object, `/voice` to fetch it).
//
// What this module needs of the connection (connection.js provides it):
//   baseUrl   the node's HTTP origin, e.g. "http://127.0.0.1:8080" (default: this page's)
//   token     the current access token (a string, or a function returning one), read for
//             every request so that a refreshed token is used from then on
//   identity  the signed-in user (optional): kept uploads of one user are never offered to
//             another on the same browser
"use strict";

/** @typedef {{id: string, owner: string, name: string, size: number, mime: string,
 *    kind: "image"|"audio"|"video"|"document"|"other", digest: string, created: number,
 *    url: string, width?: number, height?: number, duration?: number, waveform?: number[],
 *    voice?: string|null, thumbnails?: string[]}} FileObject */
/** @typedef {{used: number, reserved: number, total: number, quota: number,
 *    max_upload: number, open_uploads: number, max_open_uploads: number}} Usage */
/** @typedef {{bytesSent: number, bytesTotal: number}} Progress */

/** Where the tus client is, relative to this module (it is served by the node too). */
export const TUS_SCRIPT_URL = new URL("../vendor/tus-js-client/tus.min.js", import.meta.url).href;
export const TUS_PATH = "/v1/media/tus/";
/** Bytes per PATCH: what a lost connection can cost at most, as the node keeps every
 * finished part (it also keeps what arrived of a part cut short). */
export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
/** Waits between retries of a request that failed on the network or with 5xx/409/423. */
export const RETRY_DELAYS_MS = [0, 1000, 3000, 5000, 10000];
/** A voice note is at most this long unless the caller says otherwise (the node makes voice
 * versions of recordings up to 15 minutes). */
export const VOICE_NOTE_MAX_MS = 5 * 60 * 1000;
export const VOICE_NOTE_TYPES = ["audio/ogg;codecs=opus", "audio/webm;codecs=opus", "audio/webm"];

/** An HTTP error from the media store: `status` and the JSON body's `code`. */
export class FilesError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.name = "FilesError";
    this.status = status;
    this.code = code;
  }
}

let tusLoading = null;

/** The tus-js-client global, loaded from the node on first use (86 KB nobody needs until
 * they upload). */
export function loadTus() {
  if (globalThis.tus) return Promise.resolve(globalThis.tus);
  if (tusLoading) return tusLoading;
  tusLoading = new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = TUS_SCRIPT_URL;
    script.async = true;
    script.onload = () => (globalThis.tus ? resolve(globalThis.tus) : reject(new Error("tus-js-client did not load")));
    script.onerror = () => {
      tusLoading = null;
      reject(new Error(`cannot load ${TUS_SCRIPT_URL}`));
    };
    document.head.append(script);
  });
  return tusLoading;
}

async function errorOf(response) {
  let code = "http_" + response.status;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new FilesError(response.status, code, message);
}

export const KEPT_FILES_DB = "huddle-uploads";

/**
 * The files of unfinished uploads, kept in IndexedDB by fingerprint, so that an upload cut
 * by a reload can go on without the user picking the file again. Browsers store Blobs in
 * IndexedDB as files of their own (a File keeps its name, type and modification time, so its
 * fingerprint is the same after the reload).
 */
export class KeptFiles {
  constructor(name = KEPT_FILES_DB) {
    this.name = name;
    this._db = null;
  }

  _open() {
    if (!this._db) {
      this._db = new Promise((resolve, reject) => {
        const request = indexedDB.open(this.name, 1);
        request.onupgradeneeded = () => request.result.createObjectStore("files", { keyPath: "fingerprint" });
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
    }
    return this._db;
  }

  async _run(mode, work) {
    const db = await this._open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction("files", mode);
      const request = work(tx.objectStore("files"));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  /** @param {{fingerprint: string, identity: string, file: Blob, name: string, type: string}} entry */
  put(entry) {
    return this._run("readwrite", (store) => store.put({ ...entry, kept: Date.now() }));
  }

  delete(fingerprint) {
    return this._run("readwrite", (store) => store.delete(fingerprint));
  }

  /** @returns {Promise<{fingerprint: string, identity: string, file: Blob, name: string, type: string, kept: number} | undefined>} */
  get(fingerprint) {
    return this._run("readonly", (store) => store.get(fingerprint));
  }

  /** @returns {Promise<Array<{fingerprint: string, identity: string, file: Blob, name: string, type: string, kept: number}>>} */
  all() {
    return this._run("readonly", (store) => store.getAll());
  }
}

/** The file id of a tus upload URL: the upload id becomes the file id. */
export function uploadIdOf(uploadUrl) {
  const path = new URL(uploadUrl, "http://x").pathname;
  return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
}

/** The fingerprint a kept upload is found by: the user, the file as the browser describes
 * it, and the endpoint (tus-js-client's own leaves the user out). */
export function uploadFingerprint(identity, file, endpoint) {
  return ["huddle", identity || "", file.name || "", file.type || "", file.size, file.lastModified || 0, endpoint].join("|");
}

/** One upload under way: `done` resolves with the file object. */
export class Upload {
  constructor() {
    /** Offset the node reported when this upload went on from an earlier session (HEAD), or
     * null when it started from nothing. */
    this.resumedFrom = null;
    /** What the browser keeps this upload's file under (`Files.keptFile`). */
    this.fingerprint = "";
    /** @type {string|null} */
    this.url = null;
    /** @type {Progress} */
    this.progress = { bytesSent: 0, bytesTotal: 0 };
    /** @type {Promise<FileObject>} */
    this.done = Promise.resolve(/** @type {any} */ (null));
    this._tus = null;
    this._forget = null;
    this._keep = null;
    /** @type {{resolve: (f: FileObject) => void, reject: (e: any) => void} | null} */
    this._settle = null;
    /** Set by `abort`, until `retry`. */
    this._aborted = false;
    /** @type {(() => Promise<void>) | null} looks for an earlier upload of the file, then starts */
    this._begin = null;
    /** @type {Promise<void>} the `_begin` under way */
    this._beginning = Promise.resolve();
  }

  /** After `done` rejected: tries again from where the node got (a `HEAD` asks it; a
   * refused creation starts over), with the same file. Resolves like `done`, which it
   * replaces. */
  retry() {
    if (!this._tus) return Promise.reject(new Error("this upload never started"));
    this._aborted = false;
    this.done = new Promise((resolve, reject) => (this._settle = { resolve, reject }));
    const keep = this._keep ? this._keep() : Promise.resolve();
    // Aborted before it began: begin now (it looks for what the node has first).
    const start = this._begin ?? (async () => this._tus.start());
    keep.then(start).catch((error) => this._settle?.reject(error));
    return this.done;
  }

  /** Stops sending; the upload stays resumable (`terminate` also drops it on the node, and
   * the browser forgets the file). `done` rejects with a FilesError `aborted`. */
  async abort(terminate = false) {
    this._aborted = true;
    // Still looking for an earlier upload: `_begin` sees the abort and does not start.
    await this._beginning;
    try {
      if (this._tus) await this._tus.abort(terminate);
      if (terminate && this._forget) await this._forget();
    } finally {
      const settle = this._settle;
      if (settle) {
        // Whoever aborted knows: no unhandled rejection for a `done` nobody awaits.
        this.done.catch(() => {});
        settle.reject(new FilesError(0, "aborted", "upload aborted"));
      }
    }
  }
}

export class Files {
  /**
   * @param {{baseUrl?: string, token: string|(() => string), identity?: string}} connection
   * @param {{chunkSize?: number, retryDelays?: number[], keepFiles?: boolean}} [options]
   */
  constructor(connection, options = {}) {
    this.connection = connection;
    this.chunkSize = options.chunkSize || DEFAULT_CHUNK_SIZE;
    this.retryDelays = options.retryDelays || RETRY_DELAYS_MS;
    // Where the files of unfinished uploads are kept across reloads (null: nowhere, the
    // user gives the file again).
    this.kept = options.keepFiles === false || typeof indexedDB === "undefined" ? null : new KeptFiles();
  }

  get baseUrl() {
    return (this.connection.baseUrl || globalThis.location.origin).replace(/\/$/, "");
  }

  get token() {
    const token = this.connection.token;
    return typeof token === "function" ? token() : token;
  }

  /** An absolute URL on the node for `path` ("/v1/media/..."). */
  url(path) {
    return this.baseUrl + path;
  }

  async _fetch(path, init = {}) {
    const headers = new Headers(init.headers || {});
    headers.set("Authorization", `Bearer ${this.token}`);
    const response = await fetch(this.url(path), { ...init, headers });
    if (!response.ok && response.status !== 304) throw await errorOf(response);
    return response;
  }

  /**
   * Uploads `file` resumably. If this user sent the same file (name, type, size, modified
   * time) before and the node still has the unfinished upload, it goes on from there.
   * @param {Blob|File} file
   * @param {{name?: string, type?: string, onProgress?: (p: Progress) => void,
   *   resume?: boolean, chunkSize?: number}} [options]
   * @returns {Promise<Upload>} started; `await upload.done` for the file object
   */
  async startUpload(file, options = {}) {
    const tus = await loadTus();
    const name = options.name || /** @type {File} */ (file).name || "file";
    const type = options.type || file.type || "application/octet-stream";
    const endpoint = this.url(TUS_PATH);
    const identity = this.connection.identity;
    const handle = new Upload();
    handle.progress.bytesTotal = file.size;
    const fingerprint = uploadFingerprint(identity, /** @type {File} */ (file), endpoint);
    handle.fingerprint = fingerprint;
    const keep = options.resume !== false && this.kept !== null;
    const forget = () => (keep ? this.kept.delete(fingerprint).catch(() => {}) : Promise.resolve());
    // Kept before the first byte goes: a reload at any point finds it.
    const remember = () =>
      keep ? this.kept.put({ fingerprint, identity: identity || "", file, name, type }).catch(() => {}) : Promise.resolve();
    await remember();
    handle._forget = forget;
    handle._keep = remember;
    let finishedId = null;
    let created = false;
    handle.done = new Promise((resolve, reject) => {
      handle._settle = { resolve, reject };
      const upload = new tus.Upload(file, {
        endpoint,
        chunkSize: options.chunkSize || this.chunkSize,
        retryDelays: this.retryDelays,
        metadata: { filename: name, filetype: type },
        storeFingerprintForResuming: options.resume !== false,
        removeFingerprintOnSuccess: true,
        fingerprint: async (f) => uploadFingerprint(identity, /** @type {File} */ (f), endpoint),
        onBeforeRequest: (req) => {
          // Read per request: a token refreshed meanwhile is the one sent.
          req.setHeader("Authorization", `Bearer ${this.token}`);
        },
        onAfterResponse: (req, res) => {
          if (req.getMethod() === "POST") created = true;
          // A HEAD before any creation is the resume of an upload from an earlier session.
          if (req.getMethod() === "HEAD" && res.getStatus() === 200 && !created && handle.resumedFrom === null) {
            handle.resumedFrom = Number(res.getHeader("Upload-Offset"));
          }
          const id = res.getHeader("Huddle-Media-Id");
          if (id) finishedId = id;
        },
        onUploadUrlAvailable: () => {
          handle.url = upload.url;
        },
        onProgress: (bytesSent, bytesTotal) => {
          handle.progress = { bytesSent, bytesTotal };
          if (options.onProgress) options.onProgress(handle.progress);
        },
        onSuccess: () => {
          const id = finishedId || uploadIdOf(upload.url);
          const settle = /** @type {any} */ (handle._settle);
          forget().then(() => this.meta(id)).then(settle.resolve, settle.reject);
        },
        onError: (error) => {
          const failure = tusError(error);
          // Refused (too large, over quota, a denied type...): there is nothing to go on
          // with. Network failures keep the file for the next try.
          const final = failure instanceof FilesError && failure.status >= 400 && failure.status < 500;
          const settle = /** @type {any} */ (handle._settle);
          (final ? forget() : Promise.resolve()).then(() => settle.reject(failure));
        },
        onShouldRetry: (error, retryAttempt, opts) => {
          const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
          // 404: the kept upload expired or was finished elsewhere; tus-js-client then
          // starts a new one by itself (not a retry). 4xx other than 409/423 are final.
          if (status >= 400 && status < 500) return status === 409 || status === 423;
          return true;
        },
      });
      handle._tus = upload;
      const begin = async () => {
        handle._begin = null;
        if (options.resume !== false) {
          const previous = await upload.findPreviousUploads();
          if (previous.length > 0) {
            // The newest is the one that got furthest on this browser.
            previous.sort((a, b) => Date.parse(b.creationTime) - Date.parse(a.creationTime));
            upload.resumeFromPreviousUpload(previous[0]);
          }
        }
        // Aborted while looking: never start (`abort` drops the earlier upload if asked).
        if (handle._aborted) {
          handle._begin = begin;
          return;
        }
        upload.start();
      };
      handle._beginning = begin().catch((error) => handle._settle?.reject(error));
    });
    return handle;
  }

  /** The fingerprint `startUpload` keeps `file` under for the signed-in user (an app can
   * note it with what the upload is for, before the upload starts). */
  fingerprint(file) {
    return uploadFingerprint(this.connection.identity, /** @type {File} */ (file), this.url(TUS_PATH));
  }

  /** The file of an unfinished upload kept on this browser under `fingerprint` (see
   * `fingerprint`), or null: what to give `startUpload` again after a reload, so that it goes
   * on from the node's offset. Reads IndexedDB only (tus-js-client is not loaded). */
  async keptFile(fingerprint) {
    if (this.kept === null) return null;
    const entry = await this.kept.get(fingerprint).catch(() => undefined);
    return entry && entry.identity === (this.connection.identity || "") ? entry.file : null;
  }

  /** Drops an unfinished upload on the node by its URL (tus termination), releasing its quota
   * reservation: for an upload whose file this browser no longer has. An upload the node no
   * longer knows (404) counts as dropped. */
  async terminateUpload(uploadUrl) {
    const path = new URL(uploadUrl, this.baseUrl).pathname;
    try {
      await this._fetch(path, { method: "DELETE", headers: { "Tus-Resumable": "1.0.0" } });
    } catch (error) {
      if (!(error instanceof FilesError && error.status === 404)) throw error;
    }
  }

  /** Uploads `file` and resolves with its file object (see `startUpload`). */
  async upload(file, options = {}) {
    const handle = await this.startUpload(file, options);
    return handle.done;
  }

  /** Uploads not finished on this browser by the signed-in user (what a reload cut):
   * `{name, type, size, uploadUrl, creationTime}` each. Give the same file to `upload` to go
   * on with one. */
  async pendingUploads() {
    const tus = await loadTus();
    const storage = tus.defaultOptions.urlStorage;
    const prefix = `tus::huddle|${this.connection.identity || ""}|`;
    const uploads = (await storage.findAllUploads()).filter((u) => u.urlStorageKey.startsWith(prefix));
    const files = new Map();
    if (this.kept !== null) {
      const listed = new Set(uploads.map((u) => u.urlStorageKey));
      for (const entry of await this.kept.all().catch(() => [])) {
        const ours = entry.identity === (this.connection.identity || "");
        const stillUploading = [...listed].some((key) => key.startsWith(`tus::${entry.fingerprint}::`));
        // A kept file whose upload tus-js-client no longer knows will never go on.
        if (ours && !stillUploading) this.kept.delete(entry.fingerprint).catch(() => {});
        else files.set(entry.fingerprint, entry.file);
      }
    }
    return uploads.map((u) => {
      // tus-js-client's key is "tus::" + fingerprint + "::" + a random part.
      const fingerprint = u.urlStorageKey.slice("tus::".length, u.urlStorageKey.lastIndexOf("::"));
      return {
        name: u.metadata.filename,
        type: u.metadata.filetype,
        size: u.size,
        uploadUrl: u.uploadUrl,
        creationTime: u.creationTime,
        urlStorageKey: u.urlStorageKey,
        file: files.get(fingerprint) || null,
      };
    });
  }

  /**
   * Goes on with every unfinished upload of this user whose file this browser kept (what a
   * reload cut). Resolves with the uploads started; `await upload.done` for each file object.
   * @param {{onProgress?: (p: Progress, file: Blob) => void}} [options]
   * @returns {Promise<Upload[]>}
   */
  async resumePending(options = {}) {
    const started = [];
    const seen = new Set();
    for (const pending of await this.pendingUploads()) {
      if (!pending.file || seen.has(pending.file)) continue;
      seen.add(pending.file);
      const file = pending.file;
      const onProgress = options.onProgress ? (p) => options.onProgress(p, file) : undefined;
      started.push(await this.startUpload(file, { name: pending.name, type: pending.type, onProgress }));
    }
    return started;
  }

  /** Uploads `blob` in one request (POST /v1/media): small files, no progress, no resume. */
  async uploadSimple(blob, name) {
    const response = await this._fetch(`/v1/media?name=${encodeURIComponent(name || blob.name || "file")}`, {
      method: "POST",
      body: blob,
    });
    return response.json();
  }

  /** @returns {Promise<FileObject>} */
  async meta(id) {
    return (await this._fetch(`/v1/media/${encodeURIComponent(id)}/meta`)).json();
  }

  /** The file's bytes; `range` [first, last] (inclusive) asks for a part. */
  async download(id, { range } = {}) {
    const headers = range ? { Range: `bytes=${range[0]}-${range[1]}` } : {};
    return (await this._fetch(`/v1/media/${encodeURIComponent(id)}`, { headers })).blob();
  }

  /** A WebP thumbnail ("small": 320 px, "large": 1280 px). */
  async thumbnail(id, size = "small") {
    return (await this._fetch(`/v1/media/${encodeURIComponent(id)}/thumb/${size}`)).blob();
  }

  /** The normalized Ogg/Opus version of a voice note (the file object's `voice` says it has one). */
  async voice(id) {
    return (await this._fetch(`/v1/media/${encodeURIComponent(id)}/voice`)).blob();
  }

  /** A download URL that needs no token until `expires_at` (seconds): for <img>, <audio>,
   * <a download>, or to give to someone else. `url` is absolute. */
  async sign(id) {
    const reply = await (await this._fetch(`/v1/media/${encodeURIComponent(id)}/sign`, { method: "POST" })).json();
    return { url: this.url(reply.url), expires_at: reply.expires_at };
  }

  /** @returns {Promise<Usage>} */
  async usage() {
    return (await this._fetch("/v1/media/usage")).json();
  }

  async delete(id) {
    await this._fetch(`/v1/media/${encodeURIComponent(id)}`, { method: "DELETE" });
  }

  /** Uploads a recording from `recordVoiceNote` as a voice note; the file object's `voice`
   * and `waveform` are set once the node has normalized it. */
  async uploadVoiceNote(blob, options = {}) {
    const extension = blob.type.startsWith("audio/ogg") ? "ogg" : "webm";
    return this.upload(blob, { name: `voice-${Date.now()}.${extension}`, resume: false, ...options });
  }
}

/** The URL of a thumbnail or the voice version of a file, from its signed URL. */
export function signedVariantUrl(signedUrl, variant) {
  const url = new URL(signedUrl);
  url.pathname = `${url.pathname}/${variant}`; // "thumb/small", "thumb/large", "voice"
  return url.href;
}

function tusError(error) {
  const response = error && error.originalResponse;
  if (!response) return error;
  let code = `http_${response.getStatus()}`;
  let message = error.message;
  try {
    const body = JSON.parse(response.getBody() || "{}");
    if (body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON
  }
  return new FilesError(response.getStatus(), code, message);
}

/** The first recording type this browser's MediaRecorder makes, Ogg preferred. */
export function voiceNoteType() {
  if (typeof MediaRecorder === "undefined") return null;
  return VOICE_NOTE_TYPES.find((t) => MediaRecorder.isTypeSupported(t)) || null;
}

/**
 * Records a voice note from the microphone (or `stream`) until `signal` aborts or `maxMs`
 * passes, and resolves with the recording. The microphone is released after unless the
 * caller gave the stream. `onStart` is called once sound is being recorded (after the user
 * allowed the microphone): where a recording UI starts its timer.
 * @param {{stream?: MediaStream, signal?: AbortSignal, maxMs?: number, onStart?: () => void}} [options]
 * @returns {Promise<Blob>}
 */
export async function recordVoiceNote(options = {}) {
  const type = voiceNoteType();
  if (type === null) throw new Error("this browser cannot record audio (no MediaRecorder with Opus)");
  const own = !options.stream;
  const stream = options.stream || (await navigator.mediaDevices.getUserMedia({ audio: true, video: false }));
  const audio = new MediaStream(stream.getAudioTracks());
  const recorder = new MediaRecorder(audio, { mimeType: type, audioBitsPerSecond: 32000 });
  const parts = [];
  recorder.ondataavailable = (event) => {
    if (event.data.size > 0) parts.push(event.data);
  };
  return new Promise((resolve, reject) => {
    const stop = () => {
      if (recorder.state !== "inactive") recorder.stop();
    };
    const timer = setTimeout(stop, options.maxMs || VOICE_NOTE_MAX_MS);
    if (options.signal) {
      if (options.signal.aborted) setTimeout(stop, 0);
      else options.signal.addEventListener("abort", stop, { once: true });
    }
    recorder.onerror = (event) => reject(event.error || new Error("recording failed"));
    if (options.onStart) recorder.onstart = () => options.onStart();
    recorder.onstop = () => {
      clearTimeout(timer);
      if (own) for (const track of stream.getTracks()) track.stop();
      resolve(new Blob(parts, { type: type.split(";")[0] }));
    };
    recorder.start(250);
  });
}
