// Presence (docs/protocol.md, Presence): watch users, set this device's status, last seen.
//
// Keeps one snapshot per watched user, the one with the highest `version` (a subscribe
// reply and an update can cross), and subscribes again after every reconnect, since a new
// connection watches nobody. Events: `presence` (a user's snapshot changed).

/** @typedef {import("./types.js").UserPresence} UserPresence */

export class PresenceWatcher extends EventTarget {
  /** @param {import("./connection.js").HuddleConnection} connection */
  constructor(connection) {
    super();
    this.connection = connection;
    /** @type {Map<string, UserPresence>} */
    this.snapshots = new Map();
    /** @type {Set<string>} */
    this.watched = new Set();
    this._offs = [
      connection.on("presence.update", (event) => this._keep(event.presence)),
      connection.on("ready", () => {
        if (this.watched.size) this._subscribe([...this.watched]).catch(() => {});
      }),
    ];
  }

  /**
   * @param {string} type
   * @param {(detail: any) => void} handler
   * @returns {() => void}
   */
  on(type, handler) {
    /** @param {Event} event */
    const listener = (event) => handler(/** @type {CustomEvent} */ (event).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Watch users (again after every reconnect); resolves with their snapshots.
   * @param {string[]} users
   * @returns {Promise<UserPresence[]>}
   */
  async subscribe(users) {
    const fresh = users.filter((u) => !this.watched.has(u));
    for (const user of users) this.watched.add(user);
    if (!fresh.length) return users.map((u) => this.get(u)).filter((p) => p !== undefined);
    return this._subscribe(fresh);
  }

  /** @param {string[]} users */
  async unsubscribe(users) {
    for (const user of users) {
      this.watched.delete(user);
      this.snapshots.delete(user);
    }
    if (users.length && this.connection.state === "open") {
      await this.connection.request("presence.unsubscribe", { users });
    }
  }

  /**
   * This device's status; kept for the next `hello` too.
   * @param {"online" | "away"} status
   */
  async setStatus(status) {
    this.connection.status = status;
    if (this.connection.state === "open") await this.connection.request("presence.set", { status });
  }

  /**
   * The latest snapshot of a watched user.
   * @param {string} user
   */
  get(user) {
    return this.snapshots.get(user);
  }

  /**
   * `online`, `away` or `offline` (offline when not known).
   * @param {string} user
   */
  status(user) {
    return this.snapshots.get(user)?.status ?? "offline";
  }

  /**
   * When the user's presence last changed (for an offline user: when they left), or null.
   * @param {string} user
   * @returns {Date | null}
   */
  lastSeen(user) {
    const ms = this.snapshots.get(user)?.last_seen_ms;
    return ms == null ? null : new Date(ms);
  }

  stop() {
    for (const off of this._offs.splice(0)) off();
  }

  /** @param {string[]} users */
  async _subscribe(users) {
    /** @type {UserPresence[]} */
    const out = [];
    // The server takes at most 500 users per request.
    for (let i = 0; i < users.length; i += 500) {
      const reply = await this.connection.request("presence.subscribe", { users: users.slice(i, i + 500) });
      for (const snapshot of reply.presence) out.push(this._keep(snapshot));
    }
    return out;
  }

  /**
   * @param {UserPresence} snapshot
   * @returns {UserPresence}
   */
  _keep(snapshot) {
    const kept = this.snapshots.get(snapshot.user);
    if (kept && kept.version > snapshot.version) return kept;
    this.snapshots.set(snapshot.user, snapshot);
    this.dispatchEvent(new CustomEvent("presence", { detail: snapshot }));
    return snapshot;
  }
}
