// What a role may do in a conversation (docs/protocol.md, "Conversations and roles"), so that a
// front end offers only the actions the server would accept. The server stays the judge: it
// checks every request again, and a role may change between showing a button and pressing it.

/** @typedef {"owner" | "admin" | "member" | "follower"} Role */
/** @typedef {"direct" | "group" | "channel"} Kind */

const MANAGERS = new Set(["owner", "admin"]);

/**
 * @typedef {object} Allowed
 * @property {boolean} send send messages and type (followers only read)
 * @property {boolean} rename
 * @property {boolean} add add members (groups only; channels are followed)
 * @property {boolean} leave leave (followers unfollow instead; nobody leaves a direct chat)
 * @property {boolean} unfollow
 * @property {boolean} manage see the controls for members (remove, roles)
 */

/**
 * What the user with `role` may do in a conversation of `kind`.
 * @param {Kind | string} kind
 * @param {Role | string | null | undefined} role
 * @returns {Allowed}
 */
export function allowed(kind, role) {
  const shared = kind === "group" || kind === "channel";
  const manager = shared && MANAGERS.has(String(role));
  return {
    send: Boolean(role) && role !== "follower",
    rename: manager,
    add: manager && kind === "group",
    leave: shared && Boolean(role) && role !== "follower",
    unfollow: kind === "channel" && role === "follower",
    manage: manager,
  };
}

/**
 * Whether `role` may remove a member whose role is `target`: nobody removes the owner, only
 * the owner removes admins, and an admin leaves rather than removes itself (the caller
 * passes `self` for that).
 * @param {Kind | string} kind
 * @param {Role | string | null | undefined} role
 * @param {Role | string} target
 * @param {boolean} [self] the member is the user
 */
export function mayRemove(kind, role, target, self = false) {
  if (self || !allowed(kind, role).manage || target === "owner") return false;
  return role === "owner" || target === "member" || target === "follower";
}

/**
 * Whether `role` may give a member whose role is `target` another role (`chat.role`: only
 * the owner, and never to the owner).
 * @param {Kind | string} kind
 * @param {Role | string | null | undefined} role
 * @param {Role | string} target
 */
export function mayChangeRole(kind, role, target) {
  return allowed(kind, role).manage && role === "owner" && target !== "owner";
}
