// What a chat device keeps across reloads (docs/chat.md, "What a device keeps"): its cursors
// with their epochs and stamps, the conversation list it has seen, and the outbox of sends
// not yet confirmed. In the browser it lives in IndexedDB, one database per user and device;
// `memoryStore()` keeps the same in memory (tests, or a device that should forget).

export const DB_VERSION = 1;

/**
 * @typedef {object} DeviceStore
 * @property {() => Promise<{cursors: import("./chatstate.js").Cursors | null, conversations: Record<string, any>[], outbox: import("./chatstate.js").OutboxItem[]}>} load
 * @property {(cursors: import("./chatstate.js").Cursors) => Promise<void>} saveCursors
 * @property {(summaries: Record<string, any>[]) => Promise<void>} putConversations
 * @property {(convs: string[]) => Promise<void>} deleteConversations
 * @property {(item: import("./chatstate.js").OutboxItem) => Promise<void>} putOutbox
 * @property {(clientId: string) => Promise<void>} deleteOutbox
 * @property {() => Promise<void>} clear
 * @property {() => void} close
 */

/**
 * The name of the database of one user's device.
 * @param {string} identity
 * @param {string} device
 */
export function storeName(identity, device) {
  return `huddle:${identity}:${device}`;
}

/**
 * @template T
 * @param {IDBRequest<T>} request
 * @returns {Promise<T>}
 */
function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** @param {IDBTransaction} tx */
function committed(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve(undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

/**
 * Open (or create) the IndexedDB database `name`.
 * @param {string} name
 * @returns {Promise<DeviceStore>}
 */
export async function openStore(name) {
  const request = globalThis.indexedDB.open(name, DB_VERSION);
  request.onupgradeneeded = () => {
    const db = request.result;
    if (!db.objectStoreNames.contains("meta")) db.createObjectStore("meta");
    if (!db.objectStoreNames.contains("conversations")) db.createObjectStore("conversations", { keyPath: "conv" });
    if (!db.objectStoreNames.contains("outbox")) db.createObjectStore("outbox", { keyPath: "client_id" });
  };
  /** @type {IDBDatabase} */
  const db = await done(request);

  /**
   * @param {string[]} stores
   * @param {(tx: IDBTransaction) => void} work
   */
  const write = (stores, work) => {
    const tx = db.transaction(stores, "readwrite");
    work(tx);
    return committed(tx);
  };

  return {
    async load() {
      const tx = db.transaction(["meta", "conversations", "outbox"], "readonly");
      const [cursors, conversations, outbox] = await Promise.all([
        done(tx.objectStore("meta").get("cursors")),
        done(tx.objectStore("conversations").getAll()),
        done(tx.objectStore("outbox").getAll()),
      ]);
      return { cursors: cursors ?? null, conversations, outbox };
    },
    saveCursors: (cursors) => write(["meta"], (tx) => tx.objectStore("meta").put(structuredClone(cursors), "cursors")),
    putConversations: (summaries) =>
      write(["conversations"], (tx) => {
        for (const s of summaries) tx.objectStore("conversations").put(s);
      }),
    deleteConversations: (convs) =>
      write(["conversations"], (tx) => {
        for (const conv of convs) tx.objectStore("conversations").delete(conv);
      }),
    putOutbox: (item) => write(["outbox"], (tx) => tx.objectStore("outbox").put(item)),
    deleteOutbox: (clientId) => write(["outbox"], (tx) => tx.objectStore("outbox").delete(clientId)),
    clear: () =>
      write(["meta", "conversations", "outbox"], (tx) => {
        for (const s of ["meta", "conversations", "outbox"]) tx.objectStore(s).clear();
      }),
    close: () => db.close(),
  };
}

/**
 * The same store in memory: forgotten on reload.
 * @returns {DeviceStore}
 */
export function memoryStore() {
  /** @type {import("./chatstate.js").Cursors | null} */
  let cursors = null;
  const conversations = new Map();
  const outbox = new Map();
  return {
    load: async () => ({
      cursors: cursors && structuredClone(cursors),
      conversations: [...conversations.values()],
      outbox: [...outbox.values()],
    }),
    saveCursors: async (c) => {
      cursors = structuredClone(c);
    },
    putConversations: async (list) => {
      for (const s of list) conversations.set(s.conv, s);
    },
    deleteConversations: async (convs) => {
      for (const conv of convs) conversations.delete(conv);
    },
    putOutbox: async (item) => {
      outbox.set(item.client_id, item);
    },
    deleteOutbox: async (clientId) => {
      outbox.delete(clientId);
    },
    clear: async () => {
      cursors = null;
      conversations.clear();
      outbox.clear();
    },
    close: () => {},
  };
}
