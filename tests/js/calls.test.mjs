// The calls module's pure parts: simulcast layer declarations, subscriber offer bookkeeping,
// pausing layers on sfu.layers, and which events stop a ringing call.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Call, Emitter, ICE_TRANSPORT_POLICIES, Ringing, SCREEN_LAYERS, SCREEN_SOURCE, SIMULCAST_LAYERS, iceUfrag, layerDeclarations, networkQuality, receiveQuality, trackChanges } from "../../huddle/web/sdk/calls.js";
import { leaveRoomsLeftBehind } from "../../huddle/web/sdk/rooms.js";

test("three layers of one source, smallest first, heights from the camera's", () => {
  assert.deepEqual(layerDeclarations(["0", "1", "2"], 720), {
    0: { source: "cam", quality: 0, height: 180 },
    1: { source: "cam", quality: 1, height: 360 },
    2: { source: "cam", quality: 2, height: 720 },
  });
  assert.equal(SIMULCAST_LAYERS.length, 3);
});

test("layer heights never reach 0 and never shrink with quality (the SFU refuses that)", () => {
  const tiny = layerDeclarations(["3", "4", "5"], 2, "cam");
  const heights = Object.values(tiny).map((l) => l.height);
  assert.ok(heights.every((h) => h >= 1), heights);
  assert.deepEqual([...heights].sort((a, b) => a - b), heights);
});

test("a screen's layers keep its full height and differ in frame rate and bits", () => {
  assert.deepEqual(layerDeclarations(["4", "5", "6"], 1080, SCREEN_SOURCE, SCREEN_LAYERS), {
    4: { source: "screen", quality: 0, height: 1080 },
    5: { source: "screen", quality: 1, height: 1080 },
    6: { source: "screen", quality: 2, height: 1080 },
  });
  assert.ok(SCREEN_LAYERS.every((l) => l.scaleResolutionDownBy === 1));
  const rates = SCREEN_LAYERS.map((l) => l.maxFramerate ?? Infinity);
  assert.deepEqual([...rates].sort((a, b) => a - b), rates);
  assert.ok(rates[0] < rates[2]);
  const bits = SCREEN_LAYERS.map((l) => l.maxBitrate);
  assert.deepEqual([...bits].sort((a, b) => a - b), bits);
});

test("an offer's new and dropped tracks, by subscriber mid", () => {
  const a = { mid: "0", track: "p-a:cam", kind: "video", source: "camera", participant: "p-a", identity: "alice" };
  const b = { mid: "1", track: "p-a:3", kind: "audio", source: "microphone", participant: "p-a", identity: "alice" };
  const c = { mid: "1", track: "p-c:0", kind: "audio", source: "microphone", participant: "p-c", identity: "carol" };
  let known = {};
  let change = trackChanges(known, [a, b]);
  assert.deepEqual(change.added, [a, b]);
  assert.deepEqual(change.removed, []);
  known = change.now;
  change = trackChanges(known, [a, b]); // the same offer again: nothing changes
  assert.deepEqual([change.added, change.removed], [[], []]);
  change = trackChanges(known, [a]); // b's section went inactive
  assert.deepEqual([change.added, change.removed], [[], [b]]);
  change = trackChanges(known, [a, c]); // a mid reused for another track
  assert.deepEqual([change.added, change.removed], [[c], [b]]);
});

test("the ICE username fragment of an SDP", () => {
  assert.equal(iceUfrag("v=0\r\na=ice-ufrag:Ab12\r\na=ice-pwd:x\r\n"), "Ab12");
  assert.equal(iceUfrag("v=0\r\n"), null);
});

function fakeConnection() {
  const handlers = new Map();
  const sent = [];
  return {
    sent,
    replies: {},
    on(type, handler) {
      if (!handlers.has(type)) handlers.set(type, new Set());
      handlers.get(type).add(handler);
      return () => handlers.get(type).delete(handler);
    },
    emit(frame) {
      for (const handler of handlers.get(frame.type) || []) handler(frame);
    },
    async request(type, fields) {
      sent.push({ type, ...fields });
      const reply = this.replies[type];
      if (reply instanceof Error) throw reply;
      return { type: "ok", ...(reply || {}) };
    },
    listeners: (type) => (handlers.get(type) || new Set()).size,
  };
}

test("layers the SFU pauses stop sending, and send their own track again when resumed", async () => {
  const connection = fakeConnection();
  connection.replies["call.join"] = { participant: "p-me", participants: [], ice_servers: [] };
  const call = new Call(connection, "r");
  await call.join();
  const replaced = [];
  const stopped = [];
  const sender = (mid, layer) => {
    const track = { id: `t${mid}`, readyState: "live", stop: () => stopped.push(mid) };
    const transceiver = { mid, sender: { replaceTrack: (t) => replaced.push([mid, t && t.id]) } };
    call.senders.set(mid, { transceiver, kind: "video", source: "camera", track, layer, encoding: {} });
  };
  sender("0", 0);
  sender("1", 1);
  sender("2", 2);
  call.senders.set("3", { transceiver: { mid: "3", sender: { replaceTrack: () => assert.fail("not a layer") } }, kind: "audio", source: "microphone", track: { readyState: "live", stop: () => stopped.push("3") }, layer: null });
  connection.emit({ type: "sfu.layers", room: "r", paused: ["0", "1"] });
  assert.deepEqual(replaced, [["0", null], ["1", null]]);
  connection.emit({ type: "sfu.layers", room: "other", paused: ["2"] }); // another room's
  connection.emit({ type: "sfu.layers", room: "r", paused: ["0"] });
  assert.deepEqual(replaced.slice(2), [["1", "t1"]]);
  assert.deepEqual([...call.pausedLayers], ["0"]);
  await call.leave();
  assert.equal(connection.listeners("sfu.layers"), 0, "leave stops listening");
  assert.deepEqual(stopped.sort(), ["0", "1", "2", "3"], "leave stops every local track");
  assert.deepEqual(connection.sent.map((m) => m.type), ["call.join", "call.leave"]);
});

test("peer connections get the join reply's ICE servers and the call's ICE transport policy", async () => {
  const connection = fakeConnection();
  const turn = { urls: ["turn:turn.example.com:443?transport=tcp"], username: "1767348000:me", credential: "c" };
  connection.replies["call.join"] = { participant: "p-me", participants: [], ice_servers: [turn] };
  const configs = [];
  const saved = globalThis.RTCPeerConnection;
  globalThis.RTCPeerConnection = class {
    constructor(config) {
      configs.push(config);
    }
    addEventListener() {}
  };
  try {
    for (const options of [{}, { iceTransportPolicy: "relay" }]) {
      const call = new Call(connection, "r", options);
      await call.join();
      call._newPeerConnection("publisher");
    }
  } finally {
    globalThis.RTCPeerConnection = saved;
  }
  assert.deepEqual(configs.map((c) => [c.iceServers, c.iceTransportPolicy]), [[[turn], "all"], [[turn], "relay"]]);
  assert.deepEqual(ICE_TRANSPORT_POLICIES, ["all", "relay"]);
  assert.throws(() => new Call(connection, "r", { iceTransportPolicy: "tcp" }), /iceTransportPolicy must be "all" or "relay", not "tcp"/);
});

test("participants follow joins, state changes and leaves", async () => {
  const connection = fakeConnection();
  const bob = { participant: "p-b", identity: "bob", name: "Bob", audio_muted: false, video_muted: false, screen_sharing: false };
  connection.replies["call.join"] = { participant: "p-me", participants: [bob], ice_servers: [] };
  const call = new Call(connection, "r");
  const seen = [];
  call.on("participants", (list) => seen.push(list.map((p) => p.participant + (p.audio_muted ? "(muted)" : ""))));
  await call.join();
  connection.emit({ type: "call.participant_joined", room: "r", participant: { ...bob, participant: "p-c", identity: "carol" } });
  connection.emit({ type: "call.participant_state", room: "r", participant: { ...bob, audio_muted: true } });
  connection.emit({ type: "call.participant_left", room: "r", participant: "p-c" });
  assert.deepEqual(seen, [["p-b"], ["p-b", "p-c"], ["p-b(muted)", "p-c"], ["p-b(muted)"]]);
});

test("ringing stops on answered elsewhere, cancel, missed, end, and on our own answer", async () => {
  const connection = fakeConnection();
  const ringing = new Ringing(connection);
  const stopped = [];
  ringing.on("stopped", (e) => stopped.push(`${e.call}:${e.reason}`));
  const incoming = (call) => connection.emit({ type: "call.incoming", call, from: "alice", from_name: "Alice", media: "video" });
  for (const call of ["c1", "c2", "c3", "c4", "c5", "c6"]) incoming(call);
  assert.deepEqual([...ringing.ringing.keys()], ["c1", "c2", "c3", "c4", "c5", "c6"]);
  connection.emit({ type: "call.answered_elsewhere", call: "c1" });
  connection.emit({ type: "call.cancelled", call: "c2" });
  connection.emit({ type: "call.missed", call: "c3", from: "alice", from_name: "Alice", media: "video" });
  connection.emit({ type: "call.ended", call: "c4", reason: "no_answer" });
  connection.emit({ type: "call.ended", call: "c9", reason: "hangup" }); // not ringing here
  connection.replies["call.accept"] = { call: "c5", room: "call-c5" };
  assert.deepEqual(await ringing.accept("c5"), { type: "ok", call: "c5", room: "call-c5" });
  connection.replies["call.decline"] = Object.assign(new Error("gone"), { code: "call_not_ringing" });
  await assert.rejects(ringing.decline("c6"), /gone/);
  assert.deepEqual(stopped, ["c1:answered_elsewhere", "c2:cancelled", "c3:missed", "c4:ended", "c5:accepted", "c6:declined"]);
  assert.equal(ringing.ringing.size, 0);
  await ringing.invite("bob", "audio");
  await ringing.invite("carol", "video", "c5");
  assert.deepEqual(connection.sent.slice(-2), [
    { type: "call.invite", to: "bob", media: "audio" },
    { type: "call.invite", to: "carol", media: "video", call: "c5" },
  ]);
  ringing.close();
  assert.equal(connection.listeners("call.incoming"), 0);
});

test("after a reconnect, rings the node does not ring again stop as gone; re-rung ones stay", async () => {
  const connection = fakeConnection();
  let answerPing;
  connection.request = async function (type, fields) {
    this.sent.push({ type, ...fields });
    if (type === "ping") await new Promise((resolve) => (answerPing = resolve));
    return { type: "ok" };
  };
  const ringing = new Ringing(connection);
  const stopped = [];
  ringing.on("stopped", (e) => stopped.push(`${e.call}:${e.reason}`));
  const incoming = (call) => connection.emit({ type: "call.incoming", call, from: "alice", from_name: "Alice", media: "video" });
  incoming("c1");
  incoming("c2");
  // Offline meanwhile: c1 was cancelled. After hello the node rings c2 again, then answers.
  connection.emit({ type: "ready" });
  incoming("c2");
  incoming("c3"); // rung live after the hello
  await new Promise((r) => setTimeout(r, 1));
  assert.deepEqual(stopped, [], "nothing stops before the node has said all it rings");
  answerPing();
  await new Promise((r) => setTimeout(r, 1));
  assert.deepEqual(stopped, ["c1:gone"]);
  assert.deepEqual([...ringing.ringing.keys()], ["c2", "c3"]);

  // A drop before the answer decides nothing; the next hello does.
  connection.request = async function (type) {
    if (type === "ping") throw Object.assign(new Error("dropped"), { code: "disconnected" });
    return { type: "ok" };
  };
  connection.emit({ type: "ready" });
  await new Promise((r) => setTimeout(r, 1));
  assert.deepEqual([...ringing.ringing.keys()], ["c2", "c3"]);
  ringing.close();
  assert.equal(connection.listeners("ready"), 0);
});

test("a room the node resumes but no Call of this page holds (a reload mid-call) is left at once", async () => {
  const connection = fakeConnection();
  const leftBehind = [];
  const stop = leaveRoomsLeftBehind(connection, (room) => leftBehind.push(room));
  // A Call of this page holds "kept": its own resume, nothing to leave.
  const kept = new Call(connection, "kept");
  connection.emit({ type: "call.resumed", room: "kept", participant: "p-1" });
  // The page reloaded in "orphan": the node still counts this device in it.
  connection.emit({ type: "call.resumed", room: "orphan", participant: "p-2" });
  await new Promise((r) => setTimeout(r, 1));
  assert.deepEqual(connection.sent, [{ type: "call.leave", room: "orphan" }]);
  assert.deepEqual(leftBehind, ["orphan"]);
  // Once the Call has left, its room is no longer held.
  await kept.leave();
  connection.emit({ type: "call.resumed", room: "kept", participant: "p-1" });
  await new Promise((r) => setTimeout(r, 1));
  assert.deepEqual(connection.sent.at(-1), { type: "call.leave", room: "kept" });
  stop();
  assert.equal(connection.listeners("call.resumed"), 0);
});

test("a call the page placed is kept after a reconnect; one it did not (a reload) is cancelled", async () => {
  const connection = fakeConnection();
  const cancelled = [];
  const stop = leaveRoomsLeftBehind(connection, (what) => cancelled.push(what));
  const ringing = new Ringing(connection);
  connection.replies["call.invite"] = { call: "mine", room: "call-mine" };
  await ringing.invite("bob", "video");
  // A reconnect: the node says the device still places "mine"; the page placed it.
  connection.emit({ type: "call.outgoing", call: "mine", to: "bob", media: "video", resumed: true });
  // Another device's call: not this page's to cancel.
  connection.emit({ type: "call.outgoing", call: "laptops", to: "carol", media: "audio" });
  // A call placed before a reload: nobody on this page knows it.
  connection.emit({ type: "call.outgoing", call: "before", to: "bob", media: "video", resumed: true });
  await new Promise((r) => setTimeout(r, 1));
  assert.deepEqual(connection.sent.slice(1), [{ type: "call.cancel", call: "before" }]);
  assert.deepEqual(cancelled, ["before"]);
  // Once "mine" is answered it is no longer this page's ringing call.
  connection.emit({ type: "call.accepted", call: "mine", room: "call-mine", device: "phone", by: "bob" });
  connection.emit({ type: "call.outgoing", call: "mine", to: "bob", media: "video", resumed: true });
  await new Promise((r) => setTimeout(r, 1));
  assert.deepEqual(connection.sent.at(-1), { type: "call.cancel", call: "mine" });
  stop();
  assert.equal(connection.listeners("call.outgoing"), 1); // the Ringing's own
  ringing.close();
});

test("calls that cross (both called at once) end in the callee's call, answered here", async () => {
  const connection = fakeConnection();
  const ringing = new Ringing(connection);
  const stopped = [];
  const merged = [];
  ringing.on("stopped", (e) => stopped.push(`${e.call}:${e.reason}`));
  ringing.on("merged", (e) => merged.push(`${e.call}>${e.into}`));
  const incoming = (call) => connection.emit({ type: "call.incoming", call, from: "bob", from_name: "Bob", media: "video" });
  // Bob rings us, and we press Call: the node answers his call in our invite's reply.
  incoming("his");
  connection.replies["call.invite"] = { call: "his", room: "call-his", answered: true };
  const reply = await ringing.invite("bob", "video");
  assert.equal(reply.answered, true);
  assert.deepEqual(stopped, ["his:accepted"]);
  // Both at once: our call goes out, his rings, then the node merges ours into his.
  connection.replies["call.invite"] = { call: "ours", room: "call-ours" };
  await ringing.invite("carol", "video");
  incoming("hers");
  connection.emit({ type: "call.merged", call: "ours", into: "hers", room: "call-hers" });
  assert.deepEqual(stopped, ["his:accepted", "hers:accepted"]);
  assert.deepEqual(merged, ["ours>hers"]);
  assert.equal(ringing.ringing.size, 0);
  ringing.close();
});

test("an emitter handler that throws does not stop the others", () => {
  const emitter = new Emitter();
  const got = [];
  const original = console.error;
  console.error = () => {};
  try {
    emitter.on("x", () => {
      throw new Error("boom");
    });
    const stop = emitter.on("x", (v) => got.push(v));
    emitter.emit("x", 1);
    stop();
    emitter.emit("x", 2);
  } finally {
    console.error = original;
  }
  assert.deepEqual(got, [1]);
});

test("the SDK's entry module exports calls and files, with no name taken twice", async () => {
  const sdk = await import("../../huddle/web/sdk/huddle.js");
  for (const name of ["Call", "Ringing", "joinCall", "Files", "FilesError", "recordVoiceNote", "signedVariantUrl"]) {
    assert.equal(typeof sdk[name], "function", name);
  }
});

test("a request made while the socket is down waits, and is sent again once the call resumed", async () => {
  const connection = fakeConnection();
  connection.replies["call.join"] = { participant: "p-me", participants: [], ice_servers: [] };
  const call = new Call(connection, "r", { resumeWaitMs: 1000 });
  const seen = [];
  for (const name of ["suspended", "resumed"]) call.on(name, (e) => seen.push([name, e]));
  await call.join();
  const request = connection.request.bind(connection);
  let down = true;
  connection.request = async (type, fields) => {
    if (down) throw Object.assign(new Error("not connected (reconnecting)"), { code: "not_connected" });
    return request(type, fields);
  };
  connection.emit({ type: "state", state: "reconnecting" });
  let done = false;
  const muting = call.setMicrophoneMuted(true).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(done, false, "waits for the connection");
  assert.equal(call.state, "joined", "the call does not fail");
  down = false;
  connection.emit({ type: "ready" });
  connection.emit({ type: "call.resumed", room: "r", participant: "p-me" });
  await muting;
  assert.deepEqual(connection.sent.map((m) => m.type), ["call.join", "call.state"], "no second join");
  assert.deepEqual(connection.sent[1], { type: "call.state", room: "r", audio_muted: true });
  assert.deepEqual(seen, [["suspended", {}], ["resumed", { rejoined: false }]]);
  assert.equal(call.audioMuted, true);
});

test("a connection back too late for call.resumed joins the room again", async () => {
  const connection = fakeConnection();
  connection.replies["call.join"] = { participant: "p-me", participants: [], ice_servers: [] };
  const call = new Call(connection, "r", { resumeWaitMs: 30 });
  const resumed = new Promise((resolve) => call.on("resumed", resolve));
  await call.join();
  connection.emit({ type: "state", state: "reconnecting" });
  connection.emit({ type: "call.resumed", room: "r", participant: "p-other" }); // not ours
  connection.emit({ type: "ready" });
  assert.deepEqual(await resumed, { rejoined: true });
  assert.deepEqual(connection.sent.map((m) => m.type), ["call.join", "call.join"]);
  assert.equal(call.state, "joined");
});

test("network quality from loss, round trip and bitrate", () => {
  assert.equal(networkQuality({}), "unknown");
  assert.equal(networkQuality({ loss: 0, rttMs: 40, bitrateBps: 900_000 }), "good");
  assert.equal(networkQuality({ loss: 0.03, rttMs: 40 }), "fair");
  assert.equal(networkQuality({ loss: 0, rttMs: 350 }), "fair");
  assert.equal(networkQuality({ loss: 0.1, rttMs: 40 }), "poor");
  assert.equal(networkQuality({ loss: 0, rttMs: 900 }), "poor");
  assert.equal(networkQuality({ loss: null, rttMs: 20, bitrateBps: 0, expecting: true }), "poor");
});

test("received sections' loss and bitrate between two stats reports", () => {
  const pair = { type: "candidate-pair", nominated: true, currentRoundTripTime: 0.05 };
  const before = new Map([["a", { type: "inbound-rtp", mid: "0", kind: "video", packetsReceived: 100, packetsLost: 0, bytesReceived: 10_000, timestamp: 1000 }]]);
  const now = new Map([
    ["a", { type: "inbound-rtp", mid: "0", kind: "video", packetsReceived: 190, packetsLost: 10, bytesReceived: 135_000, timestamp: 2000 }],
    ["p", pair],
  ]);
  const got = receiveQuality(now, before).get("0");
  assert.deepEqual(got, { loss: 0.1, rttMs: 50, bitrateBps: 1_000_000, kind: "video" });
  assert.equal(receiveQuality(now, null).get("0").bitrateBps, null);
});

test("sfu.paused: which received tracks the SFU holds back, per track and per participant", async () => {
  const connection = fakeConnection();
  connection.replies["call.join"] = { participant: "p-me", participants: [], ice_servers: [] };
  const call = new Call(connection, "r");
  const seen = [];
  call.on("paused", (e) => seen.push(e));
  await call.join();
  call.tracks = {
    0: { mid: "0", track: "p-b:cam", kind: "video", source: "camera", participant: "p-b", identity: "bob" },
    1: { mid: "1", track: "p-b:1", kind: "audio", source: "microphone", participant: "p-b", identity: "bob" },
  };
  connection.emit({ type: "sfu.paused", room: "r", tracks: ["p-b:cam", "p-c:cam"] });
  assert.equal(call.isTrackPaused("p-b:cam"), true);
  assert.equal(call.isTrackPaused(call.tracks[0]), true, "a TrackInfo works too");
  assert.equal(call.isTrackPaused("p-b:1"), false, "audio goes on");
  assert.deepEqual(seen, [{ tracks: ["p-b:cam", "p-c:cam"], participants: ["p-b", "p-c"], paused: ["p-b:cam", "p-c:cam"], resumed: [], unselected: [] }]);
  connection.emit({ type: "sfu.paused", room: "r", tracks: ["p-c:cam", "p-b:cam"] }); // same set
  connection.emit({ type: "sfu.paused", room: "other", tracks: [] }); // another room's
  assert.equal(seen.length, 1);
  connection.emit({ type: "sfu.paused", room: "r", tracks: ["p-c:cam"] });
  assert.equal(call.isTrackPaused("p-b:cam"), false);
  assert.deepEqual(seen[1], { tracks: ["p-c:cam"], participants: ["p-c"], paused: [], resumed: ["p-b:cam"], unselected: [] });
  connection.emit({ type: "sfu.paused", room: "r", tracks: "p-c:cam" }); // not a list: ignored
  assert.equal(seen.length, 2);
  call._closeConnections(); // a media restart: new connections start with everything sent
  assert.deepEqual(seen[2].resumed, ["p-c:cam"]);
  assert.equal(call.pausedTracks.size, 0);
});

test("sfu.paused unselected: the video stream selection leaves out, apart from the downlink's", async () => {
  const connection = fakeConnection();
  connection.replies["call.join"] = { participant: "p-me", participants: [], ice_servers: [] };
  const call = new Call(connection, "r");
  const seen = [];
  call.on("paused", (e) => seen.push(e));
  await call.join();
  call.tracks = {
    0: { mid: "0", track: "p-b:cam", kind: "video", source: "camera", participant: "p-b", identity: "bob" },
    1: { mid: "1", track: "p-c:cam", kind: "video", source: "camera", participant: "p-c", identity: "carol" },
  };
  assert.equal(call.unselectedTracks.size, 0);
  connection.emit({ type: "sfu.paused", room: "r", tracks: [], unselected: ["p-b:cam", "p-c:cam"] });
  assert.equal(call.isTrackUnselected("p-b:cam"), true);
  assert.equal(call.isTrackUnselected(call.tracks[1]), true, "a TrackInfo works too");
  assert.equal(call.isTrackPaused("p-b:cam"), false, "not the downlink's");
  assert.deepEqual([...call.unselectedTracks].sort(), ["p-b:cam", "p-c:cam"]);
  assert.deepEqual(seen, [{ tracks: [], participants: [], paused: [], resumed: [], unselected: ["p-b:cam", "p-c:cam"] }]);
  connection.emit({ type: "sfu.paused", room: "r", tracks: [], unselected: ["p-c:cam", "p-b:cam"] }); // same
  connection.emit({ type: "sfu.paused", room: "other", tracks: [], unselected: [] }); // another room's
  assert.equal(seen.length, 1);
  // Bob spoke: his video is selected again; carol's downlink has no room for hers.
  connection.emit({ type: "sfu.paused", room: "r", tracks: ["p-c:cam"], unselected: ["p-c:cam"] });
  assert.equal(call.isTrackUnselected("p-b:cam"), false);
  assert.deepEqual(seen[1], { tracks: ["p-c:cam"], participants: ["p-c"], paused: ["p-c:cam"], resumed: [], unselected: ["p-c:cam"] });
  connection.emit({ type: "sfu.paused", room: "r", tracks: ["p-c:cam"] }); // an older server: none unselected
  assert.deepEqual(seen[2], { tracks: ["p-c:cam"], participants: ["p-c"], paused: [], resumed: [], unselected: [] });
  connection.emit({ type: "sfu.paused", room: "r", tracks: [], unselected: "p-b:cam" }); // not a list: ignored
  assert.equal(seen.length, 3);
  connection.emit({ type: "sfu.paused", room: "r", tracks: ["p-c:cam"], unselected: ["p-b:cam"] });
  call._closeConnections(); // a media restart starts with nothing unselected
  assert.equal(call.unselectedTracks.size, 0);
  assert.deepEqual(seen.at(-1), { tracks: [], participants: [], paused: [], resumed: ["p-c:cam"], unselected: [] });
});
