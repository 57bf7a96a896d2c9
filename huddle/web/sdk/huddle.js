// Huddle's browser SDK: the entry module integrators import (docs/sdk.md).
//
//   import { HuddleConnection, ChatDevice, devLogin } from "/web/sdk/huddle.js";
//
// Each part lives in its own module; this file only re-exports them.

export * from "./backoff.js";
export * from "./connection.js";
export * from "./chat.js";
export * from "./chatstate.js";
export * from "./search.js";
export * from "./roles.js";
export * from "./presence.js";
export * from "./store.js";
export * from "./files.js";
export * from "./calls.js";
export * from "./rooms.js";
