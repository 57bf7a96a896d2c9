// Reconnect delays: exponential backoff with full jitter.
//
// Full jitter (a uniformly random delay between 0 and the exponential ceiling) spreads the
// reconnects of many browsers that lost the same node at the same moment, so they do not come
// back in waves. Pure: the random source is passed in, so tests pin it.

/** @typedef {{baseMs?: number, maxMs?: number, random?: () => number}} BackoffOptions */

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 30000;

/**
 * The ceiling of the delay before reconnect attempt `attempt` (0 for the first retry).
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @returns {number}
 */
export function backoffCeiling(attempt, options = {}) {
  const base = options.baseMs ?? BACKOFF_BASE_MS;
  const max = options.maxMs ?? BACKOFF_MAX_MS;
  // 2 ** 40 is already far beyond any sensible maximum: cap the exponent to stay finite.
  return Math.min(max, base * 2 ** Math.min(Math.max(0, attempt), 40));
}

/**
 * The delay in ms before reconnect attempt `attempt`: uniform in [0, ceiling).
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @returns {number}
 */
export function backoffDelay(attempt, options = {}) {
  const random = options.random ?? Math.random;
  return Math.floor(random() * backoffCeiling(attempt, options));
}
