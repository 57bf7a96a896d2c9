// Search results (`chat.search`, docs/protocol.md#search) as pure functions: a hit's snippet
// split into plain and matched parts, pages of hits merged, hits grouped by conversation.
// No I/O and no DOM, so that the same logic serves any front end and runs under `node --test`.

/**
 * @typedef {object} SnippetPart
 * @property {string} text
 * @property {boolean} match whether the server marked this part as matching the query
 */

/**
 * A hit's `snippet` cut at its `ranges`. The ranges count Unicode code points (so that an
 * emoji before a match does not shift it), not the UTF-16 units JavaScript strings index by.
 * Ranges that overlap, run backwards or fall outside the snippet are clipped or skipped,
 * never thrown on: a snippet is always shown whole.
 * @param {string} snippet
 * @param {[number, number][] | number[][] | null | undefined} ranges
 * @returns {SnippetPart[]}
 */
export function snippetParts(snippet, ranges) {
  const points = Array.from(snippet ?? "");
  const sorted = [...(ranges ?? [])]
    .filter((r) => Array.isArray(r) && Number.isInteger(r[0]) && Number.isInteger(r[1]))
    .map((r) => [Math.max(0, r[0]), Math.min(points.length, r[1])])
    .sort((a, b) => a[0] - b[0]);
  /** @type {SnippetPart[]} */
  const parts = [];
  let at = 0;
  for (const [start, end] of sorted) {
    const from = Math.max(start, at);
    if (end <= from) continue;
    if (from > at) parts.push({ text: points.slice(at, from).join(""), match: false });
    parts.push({ text: points.slice(from, end).join(""), match: true });
    at = end;
  }
  if (at < points.length) parts.push({ text: points.slice(at).join(""), match: false });
  return parts;
}

/** @param {Record<string, any>} hit */
function hitKey(hit) {
  return `${hit.conv}\n${hit.message?.seq}`;
}

/**
 * The hits kept so far followed by a new page's, each message once: a page asked for with
 * `before_ts` one past the oldest kept hit's `ts` (see `nextPageBefore`) repeats the kept hits
 * of that millisecond, which are dropped here.
 * @param {Record<string, any>[]} kept
 * @param {Record<string, any>[]} page
 * @returns {{hits: Record<string, any>[], added: number}}
 */
export function mergeHits(kept, page) {
  const seen = new Set(kept.map(hitKey));
  const fresh = page.filter((hit) => {
    const key = hitKey(hit);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return { hits: [...kept, ...fresh], added: fresh.length };
}

/**
 * The `before_ts` that asks for the hits after `hits` (newest first). It is one past the
 * oldest hit's `ts` rather than that `ts`, because `before_ts` is exclusive and several
 * messages may share a millisecond: the repeated ones are dropped by `mergeHits`.
 * @param {Record<string, any>[]} hits
 * @returns {number | null} null when there is nothing to page from
 */
export function nextPageBefore(hits) {
  if (!hits.length) return null;
  return Math.min(...hits.map((hit) => hit.message?.ts ?? 0)) + 1;
}

/**
 * Hits grouped by conversation, the groups in the order their newest hit comes (the reply's
 * order is newest first), and inside a group the hits in their order.
 * @param {Record<string, any>[]} hits
 * @returns {{conv: string, hits: Record<string, any>[]}[]}
 */
export function groupHits(hits) {
  /** @type {Map<string, Record<string, any>[]>} */
  const groups = new Map();
  for (const hit of hits) {
    const list = groups.get(hit.conv) ?? [];
    list.push(hit);
    groups.set(hit.conv, list);
  }
  return [...groups].map(([conv, list]) => ({ conv, hits: list }));
}
