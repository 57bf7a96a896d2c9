// What the web app makes of identities typed in New chat and in a group's members field: the
// development login's names slugged as signing in slugs them (tests/unit/test_identity_js.py
// holds slugIdentity to signaling/auth.py's slug_identity), a token's identities as typed.
import assert from "node:assert/strict";
import { test } from "node:test";

import { slugIdentity, typedIdentities, typedIdentity } from "../../huddle/web/app/identity.js";

test("a name typed under the development login is the identity it signs in as", () => {
  assert.equal(typedIdentity("Bob", true), "bob");
  assert.equal(typedIdentity("  Ada Lovelace ", true), "ada-lovelace");
  assert.equal(typedIdentity("bob.smith@example.com", true), "bob.smith@example.com");
  assert.equal(slugIdentity("Émile Zola!"), "emile-zola");
  // A name in any script: its letters with no ASCII form by code point.
  assert.equal(typedIdentity("张三", true), "u5f20-u4e09");
  assert.equal(typedIdentity("张三 Bob", true), "u5f20-u4e09-bob");
});

test("what makes no identity is refused, not sent", () => {
  for (const typed of ["😀", "!!!", "  ", ""]) assert.equal(typedIdentity(typed, true), "", typed);
  // A token's identity is the integrator's, taken as typed, any case; a space is in none.
  assert.equal(typedIdentity(" Bob ", false), "Bob");
  assert.equal(typedIdentity("Bob Smith", false), "");
  assert.equal(typedIdentity("x".repeat(129), false), "");
});

test("members are separated by commas, not by the spaces a name may hold", () => {
  assert.deepEqual(typedIdentities("Bob, nosuchuser", true), { users: ["bob", "nosuchuser"], bad: [] });
  assert.deepEqual(typedIdentities("Ada Lovelace，bob、BOB;carol\n", true), { users: ["ada-lovelace", "bob", "carol"], bad: [] });
  assert.deepEqual(typedIdentities("bob, 李雷, !?, ,", true), { users: ["bob", "u674e-u96f7"], bad: ["!?"] });
  assert.deepEqual(typedIdentities("Bob, bob carol", false), { users: ["Bob"], bad: ["bob carol"] });
});
