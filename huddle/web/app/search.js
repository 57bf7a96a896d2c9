// Search across the user's conversations (`chat.search`): a search box over the conversation
// list; while a query is shown, its hits replace the list, grouped by conversation, with the
// matched words marked, and more pages on request. Choosing a hit opens the conversation at
// that message. Message text only ever goes into text nodes and <mark> elements.

import { groupHits, snippetParts } from "/web/sdk/search.js";
import { stylesheet } from "./dom.js";

await stylesheet(new URL("./search.css", import.meta.url));

export const SEARCH_PAGE = 20;

/** @type {any} what app.js gives feature modules */
let ui = null;

/**
 * The search shown: its query, the hits so far, whether more can be had, what is going on.
 * @type {{query: string, hits: Record<string, any>[], done: boolean, busy: boolean, error: string} | null}
 */
let shown = null;
/** Answers to an older query are dropped when they arrive after a newer one was asked. */
let asked = 0;
/** The hit chosen last ("conv seq"), marked among the results. */
let chosen = "";

/** @param {any} from */
export function init(from) {
  ui = from;
  ui.addStrings(STRINGS);
  ui.hooks.sidebar.push(searchBox);
  ui.hooks.signedOut.push(() => {
    shown = null;
    asked += 1;
  });
  ui.hooks.signedIn.push(() => {
    ui.app.chat.on("conversations", renameGroups);
  });
}

/** @param {HTMLElement} actions the conversation list's action row */
function searchBox(actions) {
  const { h, t } = ui;
  const input = /** @type {HTMLInputElement} */ (
    h("input", {
      type: "search",
      id: "search-input",
      maxlength: 256,
      autocomplete: "off",
      placeholder: t("searchPlaceholder"),
      onkeydown: (/** @type {KeyboardEvent} */ e) => {
        if (e.key === "Escape" && shown) {
          e.preventDefault();
          clear();
        }
      },
    })
  );
  if (shown) input.value = shown.query;
  const form = h("form", {
    id: "search-form",
    class: "search-form",
    role: "search",
    onsubmit: (/** @type {Event} */ e) => {
      e.preventDefault();
      const query = input.value.trim();
      if (query) start(query);
      else clear();
    },
  }, [
    h("label", { for: "search-input", class: "sr-only", text: t("searchLabel") }),
    input,
    h("button", { type: "submit", id: "search-go", text: t("search") }),
    h("button", { type: "button", id: "search-clear", "aria-label": t("searchClear"), title: t("searchClear"), text: "✕", onclick: clear }),
  ]);
  const results = h("section", { id: "search-results", class: "search-results", "aria-label": t("searchResults"), hidden: true });
  actions.prepend(h("div", { class: "search" }, [form, results]));
  // The list is drawn again (a new language): show the search it showed.
  if (shown) queueMicrotask(renderResults);
}

/** @param {string} query */
function start(query) {
  shown = { query, hits: [], done: false, busy: false, error: "" };
  chosen = "";
  more();
}

/** Ask for the first or the next page of the shown search. */
async function more() {
  const chat = ui.app.chat;
  const search = shown;
  if (!chat || !search || search.busy) return;
  const ticket = ++asked;
  const before = search.hits.length;
  search.busy = true;
  search.error = "";
  renderResults();
  try {
    const page = await chat.search(search.query, { limit: SEARCH_PAGE, more: search.hits });
    if (ticket !== asked) return;
    search.hits = [...search.hits, ...page.hits];
    search.done = page.done;
  } catch (error) {
    if (ticket !== asked) return;
    search.error = ui.t("searchFailed", { error: error?.message ?? String(error) });
  } finally {
    search.busy = false;
  }
  if (shown !== search) return;
  renderResults();
  // After "More results" (which is redrawn), the keyboard goes on at the first new hit.
  if (before) /** @type {HTMLElement | undefined} */ (document.querySelectorAll("#search-results .hit")[before])?.focus();
}

function clear() {
  shown = null;
  asked += 1;
  const input = /** @type {HTMLInputElement | null} */ (document.getElementById("search-input"));
  if (input) input.value = "";
  renderResults();
  input?.focus();
}

function renderResults() {
  const { h, t } = ui;
  const section = document.getElementById("search-results");
  const sidebar = section?.closest(".sidebar");
  if (!section) return;
  sidebar?.classList.toggle("searching", Boolean(shown));
  section.hidden = !shown;
  if (!shown) {
    section.replaceChildren();
    return;
  }
  const { query, hits, done, busy, error } = shown;
  const status = busy
    ? t("searching")
    : error || (hits.length ? t(!done ? "searchCountMore" : hits.length === 1 ? "searchCountOne" : "searchCount", { n: hits.length, query }) : t("searchNone", { query }));
  const groups = groupHits(hits).map(({ conv, hits: list }) => {
    const name = ui.app.chat?.conversation(conv)?.name ?? conv;
    const id = `search-conv-${conv}`;
    return h("li", { class: "search-group" }, [
      h("h3", { id, "data-conv": conv, text: name }),
      h("ul", { "aria-labelledby": id }, list.map((hit) => h("li", {}, [hitButton(hit)]))),
    ]);
  });
  section.replaceChildren(
    h("p", { id: "search-status", class: "search-status", role: error ? "alert" : "status", text: status }),
    h("ul", { class: "search-groups" }, groups),
    !done && !busy && !error && hits.length
      ? h("button", { type: "button", id: "search-more", class: "search-more", onclick: () => more(), text: t("searchMore") })
      : "",
    error ? h("button", { type: "button", class: "search-more", onclick: () => more(), text: t("searchRetry") }) : "",
  );
}

/**
 * Hits name their conversations, and names may come or change after the hits did. Only the
 * names are redrawn, so that the keyboard stays on the hit it is on.
 */
function renameGroups() {
  for (const heading of document.querySelectorAll("#search-results h3[data-conv]")) {
    const conv = /** @type {HTMLElement} */ (heading).dataset.conv ?? "";
    const name = ui.app.chat?.conversation(conv)?.name;
    if (name && heading.textContent !== name) heading.textContent = name;
  }
}

/** @param {Record<string, any>} hit */
function hitButton(hit) {
  const { h, t } = ui;
  const m = hit.message;
  const snippet = h("span", { class: "hit-snippet" });
  for (const part of snippetParts(hit.snippet ?? "", hit.ranges)) {
    snippet.append(part.match ? h("mark", { text: part.text }) : document.createTextNode(part.text));
  }
  const mine = m.sender === ui.app.chat?.me;
  return h("button", {
    type: "button",
    class: "hit" + (chosen === `${hit.conv} ${m.seq}` ? " chosen" : ""),
    "aria-current": chosen === `${hit.conv} ${m.seq}` ? "true" : null,
    "data-conv": hit.conv,
    "data-seq": m.seq,
    onclick: () => choose(hit.conv, m.seq),
  }, [
    h("span", { class: "hit-meta" }, [
      h("span", { class: "hit-sender", text: mine ? t("you") : m.sender }),
      h("time", { datetime: new Date(m.ts).toISOString(), text: ui.formatTime(m.ts, true) }),
    ]),
    snippet,
  ]);
}

/**
 * @param {string} conv
 * @param {number} seq
 */
function choose(conv, seq) {
  chosen = `${conv} ${seq}`;
  renderResults();
  if (typeof ui.jumpTo === "function") ui.jumpTo(conv, seq);
  else ui.openConversation(conv);
}

const STRINGS = {
  en: {
    search: "Search",
    searchLabel: "Search messages in all conversations",
    searchPlaceholder: "Search messages",
    searchClear: "Clear the search",
    searchResults: "Search results",
    searching: "Searching…",
    searchCount: "{n} messages with “{query}”",
    searchCountOne: "1 message with “{query}”",
    searchCountMore: "At least {n} messages with “{query}”",
    searchNone: "No messages with “{query}”.",
    searchMore: "More results",
    searchRetry: "Try again",
    searchFailed: "Search failed: {error}",
  },
  zh: {
    search: "搜索",
    searchLabel: "在所有会话中搜索消息",
    searchPlaceholder: "搜索消息",
    searchClear: "清除搜索",
    searchResults: "搜索结果",
    searching: "正在搜索…",
    searchCount: "{n} 条消息包含“{query}”",
    searchCountOne: "1 条消息包含“{query}”",
    searchCountMore: "至少 {n} 条消息包含“{query}”",
    searchNone: "没有包含“{query}”的消息。",
    searchMore: "更多结果",
    searchRetry: "重试",
    searchFailed: "搜索失败：{error}",
  },
};
