// What the user types where an identity is wanted (New chat, a group's members), made into
// identities the way signing in makes them. Pure: no DOM, no SDK (tests/js/app_identity.test.mjs).
//
// The development login turns a typed name into an identity (signaling/auth.py slug_identity:
// "Bob" signs in as `bob`), so "Bob" typed here must mean `bob` too, or it goes to an identity
// nobody has. A token's identity is the integrator's, any case: taken as typed.

/** An identity (docs/protocol.md: 1 to 128 characters of `[A-Za-z0-9._@:+-]`). */
export const IDENTITY_RE = /^[A-Za-z0-9._@:+-]{1,128}$/;

/**
 * The development login's identity for a display name: the twin of signaling/auth.py
 * `slug_identity` (tests/unit/test_identity_js.py holds them to the same answers): "Ada
 * Lovelace" -> ada-lovelace, "Émile" -> emile, "张三" -> u5f20-u4e09.
 * "" when the name has nothing to make one of (only symbols, say).
 * @param {string} name
 */
export function slugIdentity(name) {
  let out = "";
  for (const ch of name.trim().toLowerCase().normalize("NFKD")) {
    if (ch.charCodeAt(0) < 128 || !LETTER_DIGIT_MARK.test(ch)) out += ch;
    // A mark (an accent) goes; a letter or digit with no ASCII form is written by its code
    // point ("张三" -> u5f20-u4e09), the spaces becoming dashes below.
    else if (!MARK.test(ch)) out += ` u${ch.codePointAt(0).toString(16)} `;
  }
  return out
    .replace(/[^a-z0-9._@:+-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 128);
}

const LETTER_DIGIT_MARK = /^[\p{L}\p{N}\p{M}]$/u;
const MARK = /^\p{M}$/u;

/**
 * The identity `typed` stands for, or "" when it cannot be one.
 * @param {string} typed
 * @param {boolean} dev whether identities come from the development login (names, slugged)
 */
export function typedIdentity(typed, dev) {
  const text = typed.trim();
  const identity = dev ? slugIdentity(text) : text;
  return IDENTITY_RE.test(identity) ? identity : "";
}

/**
 * Identities typed in one field, separated by commas (Chinese ones too), semicolons or lines:
 * not by spaces, which a name may hold ("Ada Lovelace" signs in as `ada-lovelace`).
 * Each once, in the order typed; `bad` lists what cannot be an identity, as typed.
 * @param {string} text
 * @param {boolean} dev
 * @returns {{users: string[], bad: string[]}}
 */
export function typedIdentities(text, dev) {
  /** @type {Set<string>} */
  const users = new Set();
  /** @type {string[]} */
  const bad = [];
  for (const part of text.split(/[,，、;；\n]+/)) {
    if (!part.trim()) continue;
    const identity = typedIdentity(part, dev);
    if (identity) users.add(identity);
    else bad.push(part.trim());
  }
  return { users: [...users], bad };
}
