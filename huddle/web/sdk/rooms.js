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

/**
 * Leaves, at once, a room this device is still in for the node but that no Call of this page
 * holds: a page reloaded mid-call keeps its device id, so its hello makes it the same
 * participant again (`call.resumed`), but its peer connections went with the old page. Left
 * as it was, the others kept a frozen tile of it until they hung up, and joining again was
 * refused (`already_in_call`); leaving a 1:1 call's room hangs up too. Call it before
 * `connect()`: the node says `call.resumed` right after its hello reply. Returns the
 * unsubscribe function; `left` (optional) hears of each room left this way.
 * @param {{request: Function, on: Function}} connection
 * @param {(room: string) => void} [left]
 */
export function leaveRoomsLeftBehind(connection, left) {
  return connection.on("call.resumed", (/** @type {{room: string}} */ event) => {
    const held = [...callsOn(connection)].some((c) => c.room === event.room && c.state !== "left" && c.state !== "failed");
    if (held) return;
    connection.request("call.leave", { room: event.room }).then(
      () => left?.(event.room),
      () => {}, // gone meanwhile, or the connection dropped: the node's resume window ends it
    );
  });
}
