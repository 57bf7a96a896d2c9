// Reconnect delays: exponential ceiling, full jitter, capped.
import assert from "node:assert/strict";
import { test } from "node:test";

import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, backoffCeiling, backoffDelay } from "../../huddle/web/sdk/backoff.js";

test("the ceiling doubles from the base and stops at the maximum", () => {
  assert.deepEqual(
    [0, 1, 2, 3].map((n) => backoffCeiling(n, { baseMs: 100, maxMs: 1000 })),
    [100, 200, 400, 800],
  );
  assert.equal(backoffCeiling(4, { baseMs: 100, maxMs: 1000 }), 1000);
  assert.equal(backoffCeiling(10_000), BACKOFF_MAX_MS);
  assert.equal(backoffCeiling(0), BACKOFF_BASE_MS);
  assert.equal(backoffCeiling(-3, { baseMs: 100 }), 100);
});

test("full jitter: the delay spans zero up to the ceiling", () => {
  assert.equal(backoffDelay(3, { baseMs: 100, maxMs: 1000, random: () => 0 }), 0);
  assert.equal(backoffDelay(3, { baseMs: 100, maxMs: 1000, random: () => 0.5 }), 400);
  assert.equal(backoffDelay(3, { baseMs: 100, maxMs: 1000, random: () => 0.999999 }), 799);
});

test("delays with the real random source stay within the ceiling and differ", () => {
  const delays = Array.from({ length: 200 }, () => backoffDelay(5, { baseMs: 100, maxMs: 10_000 }));
  assert.ok(delays.every((d) => d >= 0 && d < 3200));
  assert.ok(new Set(delays).size > 50, "jitter spreads the delays");
});
