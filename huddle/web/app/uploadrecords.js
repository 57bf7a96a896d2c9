// What the web app remembers of each upload until the message carrying it is in the chat
// outbox (which the SDK keeps across reloads itself): the conversation it is for, its caption,
// and how far it got. Kept in localStorage, written synchronously, so that a reload at any
// moment finds it; reading it needs neither the files UI nor the SDK's files module, so the
// first screen only checks whether there is anything to resume.

/**
 * One upload as remembered: `rid` names it; `fingerprint` is what the SDK keeps its file
 * under (IndexedDB), `uploadUrl` its tus upload once created, `fileId` the file once stored.
 * @typedef {{rid: string, conv: string | null, to: string | null, name: string, size: number,
 *   kind: string | null, caption: string, fingerprint?: string, uploadUrl?: string,
 *   fileId?: string, created: number}} UploadRecord
 */

/** @param {string} identity */
function keyOf(identity) {
  return `huddle.uploads.${identity}`;
}

/**
 * @param {string} identity
 * @returns {UploadRecord[]}
 */
export function loadRecords(identity) {
  try {
    const kept = JSON.parse(localStorage.getItem(keyOf(identity)) ?? "[]");
    return Array.isArray(kept) ? kept.filter((r) => r && typeof r.rid === "string") : [];
  } catch {
    // Unreadable (written by something else): nothing to resume.
    return [];
  }
}

/** @param {string} identity @param {UploadRecord[]} records */
function store(identity, records) {
  try {
    if (records.length) localStorage.setItem(keyOf(identity), JSON.stringify(records));
    else localStorage.removeItem(keyOf(identity));
  } catch {
    // Storage full or refused: the upload still runs, it just will not come back after a reload.
  }
}

/** Adds or replaces `record`. @param {string} identity @param {UploadRecord} record */
export function saveRecord(identity, record) {
  const records = loadRecords(identity).filter((r) => r.rid !== record.rid);
  records.push(record);
  store(identity, records);
}

/** @param {string} identity @param {string} rid */
export function dropRecord(identity, rid) {
  store(identity, loadRecords(identity).filter((r) => r.rid !== rid));
}

/** Whether `identity` has uploads to resume or messages to send for them. @param {string} identity */
export function hasRecords(identity) {
  return loadRecords(identity).length > 0;
}
