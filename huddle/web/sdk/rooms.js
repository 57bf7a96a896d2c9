// Call rooms a page is in for the node but holds no Call for (docs/sdk.md, Calls: "A page
// reloaded mid-call"). Apart from calls.js, so that a page can set it up before it connects
// without loading the call code (the web app loads that on first use).

/** The Calls made on each connection and not left (calls.js adds and removes them). */
const CALLS = new WeakMap();

/**
 * The Calls of `connection`: each has its `room` and `state`.
 * @param {object} connection
 * @returns {Set<{room: string, state: string}>}
 */
export function callsOn(connection) {
  let calls = CALLS.get(connection);
  if (!calls) CALLS.set(connection, (calls = new Set()));
  return calls;
}

/** The ringing calls a Ringing placed on each connection (calls.js adds and removes them). */
const PLACED = new WeakMap();

/**
 * Ids of the calls placed on `connection` (a Ringing's `invite`) that may still ring.
 * @param {object} connection
 * @returns {Set<string>}
 */
export function placedOn(connection) {
  let placed = PLACED.get(connection);
  if (!placed) PLACED.set(connection, (placed = new Set()));
  return placed;
}

/**
 * Leaves, at once, a room this device is still in for the node but that no Call of this page
 * holds: a page reloaded mid-call keeps its device id, so its hello makes it the same
 * participant again (`call.resumed`), but its peer connections went with the old page. Left
 * as it was, the others kept a frozen tile of it until they hung up, and joining again was
 * refused (`already_in_call`); leaving a 1:1 call's room hangs up too. The same for a call
 * the page placed that still rings (`call.outgoing` with `resumed`): if no Ringing of this
 * page placed it, it is cancelled, or the callee's devices would ring on for a caller who is
 * gone, and answering would leave them alone in the call. Call it before `connect()`: the
 * node says both right after its hello reply. Returns the unsubscribe function; `left`
 * (optional) hears of each room left (or call cancelled: its id) this way.
 * @param {{request: Function, on: Function}} connection
 * @param {(room: string) => void} [left]
 */
export function leaveRoomsLeftBehind(connection, left) {
  /** @param {string} type @param {Record<string, string>} fields @param {string} what */
  const giveUp = (type, fields, what) =>
    connection.request(type, fields).then(
      () => left?.(what),
      () => {}, // gone meanwhile, or the connection dropped: the node's resume window ends it
    );
  const stops = [
    connection.on("call.resumed", (/** @type {{room: string}} */ event) => {
      const held = [...callsOn(connection)].some((c) => c.room === event.room && c.state !== "left" && c.state !== "failed");
      if (!held) giveUp("call.leave", { room: event.room }, event.room);
    }),
    connection.on("call.outgoing", (/** @type {{call: string, resumed?: boolean}} */ event) => {
      if (event.resumed && !placedOn(connection).has(event.call)) giveUp("call.cancel", { call: event.call }, event.call);
    }),
  ];
  return () => stops.forEach((stop) => typeof stop === "function" && stop());
}
