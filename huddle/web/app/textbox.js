// The boxes messages are written in (the composer, a thread's reply box): several lines
// (Shift+Enter; Enter sends), and a text longer than the node takes is said so and kept,
// never cut short as an <input maxlength> did.

// The node's chat_max_text_chars, which its hello reply tells (setMaxTextChars); its default
// until then. The node counts code points (Python's len): an emoji is one, where maxlength
// counted the two UTF-16 units of its surrogate pair.
let maxTextChars = 4000;

/** The longest text the node takes, in code points. */
export function maxText() {
  return maxTextChars;
}

/**
 * The node's limit, from its hello reply (`max_text_chars`; a node that does not tell it
 * leaves the default).
 * @param {unknown} n
 */
export function setMaxTextChars(n) {
  if (typeof n === "number" && Number.isInteger(n) && n > 0) maxTextChars = n;
}
// The counter shows from this many characters left.
const COUNT_FROM_LEFT = 200;
// Where CSS cannot size a field to its content (field-sizing), the box is sized here.
const SIZES_ITSELF = CSS.supports("field-sizing", "content");

/**
 * A text's length as the node counts it: in code points.
 * @param {string} text
 */
export function textLength(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/**
 * Whether a key press belongs to an input method composing text (Chinese, Japanese): its
 * Enter takes a candidate and must neither send nor pick a mention. keyCode 229 is what
 * browsers that set isComposing late give that keydown.
 * @param {KeyboardEvent} e
 */
export function composing(e) {
  return e.isComposing || e.keyCode === 229;
}

/**
 * A message box in `form`: the <textarea> `id` and the line that counts what is left near
 * the limit (`id`-count), both for the caller to place. Enter submits the form; the form's
 * submit handler asks `refused()` first, which says why and keeps the text.
 * @param {HTMLFormElement} form
 * @param {{id: string, h: (tag: string, props?: Record<string, any>, children?: any[]) => HTMLElement, t: (key: string, vars?: Record<string, any>) => string, lang: string}} options
 */
export function messageBox(form, { id, h, t, lang }) {
  const input = /** @type {HTMLTextAreaElement} */ (
    h("textarea", { id, class: "message-box", rows: 1, autocomplete: "off", "aria-describedby": `${id}-count` })
  );
  const count = h("p", { id: `${id}-count`, class: "text-count", "aria-live": "polite", hidden: true });
  const number = new Intl.NumberFormat(lang === "zh" ? "zh-CN" : "en");
  const refresh = () => {
    const left = maxText() - textLength(input.value);
    const over = left < 0;
    count.textContent = over
      ? t(-left === 1 ? "textOverOne" : "textOver", { n: number.format(-left), max: number.format(maxText()) })
      : left <= COUNT_FROM_LEFT
        ? t(left === 1 ? "textLeftOne" : "textLeft", { n: number.format(left) })
        : "";
    count.hidden = !count.textContent;
    count.classList.toggle("over", over);
    if (!over) {
      count.classList.remove("refused");
      count.removeAttribute("role");
    }
    input.setAttribute("aria-invalid", over ? "true" : "false");
    // Measured once the box is in the page (a draft is set before it is).
    if (!SIZES_ITSELF) requestAnimationFrame(fit);
  };
  const fit = () => {
    input.style.height = "auto";
    input.style.height = `${input.scrollHeight + input.offsetHeight - input.clientHeight}px`;
  };
  input.addEventListener("input", refresh);
  // On the form rather than the box, so that the box's own listeners have had the key first:
  // the mention list picks with Enter and takes it (preventDefault).
  form.addEventListener("keydown", (e) => {
    if (e.target !== input || e.key !== "Enter" || e.shiftKey || e.defaultPrevented || composing(e)) return;
    e.preventDefault();
    form.requestSubmit();
  });
  return {
    input,
    count,
    /** Text set by code rather than typed (a draft, an edit, a box emptied): count it again. */
    refresh,
    /** Whether the text is too long to send; if so the counter says so again, louder. */
    refused() {
      refresh();
      if (!count.classList.contains("over")) return false;
      count.classList.add("refused");
      // Said again for a screen reader, which heard it once already.
      count.setAttribute("role", "alert");
      input.focus();
      return true;
    },
  };
}
