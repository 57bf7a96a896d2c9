// Calls: group call rooms through the node's SFU, and 1:1 ringing (docs/protocol.md, Calls and
// Ringing calls). The Python CallClient (huddle/call.py) is the reference; this is the same
// logic for a browser.
//
// A room member has two peer connections to the SFU: the publisher connection (this side
// offers, `sfu.publish` carries the offer and its reply the answer) and the subscriber
// connection (the SFU offers with `sfu.offer` events, this side answers with `sfu.answer`).
// Every SDP sent waits for ICE gathering to complete and carries all of its candidates.
//
// Cameras are published as simulcast by default: the SFU (aiortc) negotiates no `rid`
// simulcast, so the three layers are three video sections, each sending a clone of the
// camera track scaled down by the encoder (scaleResolutionDownBy), declared in
// `sfu.publish` `layers` as qualities 0-2 of one source. Subscribers get the source once and
// the SFU picks the layer that fits each one; layers nobody takes are paused (`sfu.layers`)
// and this side stops sending them until they are wanted again.
//
// When a peer connection fails, the media starts over as an ICE restart would (aiortc has
// none): `sfu.restart`, new connections, everything published again, same place in the room.
//
// The peer connections never depended on the WebSocket: when it drops during a call and the
// connection comes back (same device) within the server's `call_resume_s`, the server says
// `call.resumed` and the call goes on as it was. A request the call made meanwhile waits for
// that and is sent again; a device that came back too late joins the room again.
//
// What this module needs of the connection (HuddleConnection in connection.js):
//   request(type, fields) -> Promise<ok frame>, rejecting with an error that has `code`
//   on(type, handler) -> a function that stops listening

// Message shapes, generated from the protocol schema (types.js).
/** @typedef {import("./types.js").ParticipantInfo} Participant */
/** @typedef {import("./types.js").TrackInfo} TrackInfo */
/** @typedef {import("./types.js").LayerInfo} LayerInfo */
/** @typedef {import("./types.js").CallJoinOk} CallJoinOk */
/** @typedef {import("./types.js").CallStatsOk} CallStatsOk */
/** @typedef {import("./types.js").CallIncoming} CallIncoming */

import { callsOn, placedOn } from "./rooms.js";

export const ICE_GATHERING_TIMEOUT_MS = 5000;
/** After the connection is back (`ready`), how long to wait for `call.resumed` before taking
 * the call as left (the device came back too late) and joining the room again. */
export const RESUME_WAIT_MS = 3000;
/** A request the call made while the connection was down waits this long for it to come
 * back; then it fails as it would have. */
export const RESUME_GIVE_UP_MS = 60_000;
/** Error codes of a request that never reached the server or whose reply was lost with the
 * socket: sent again once the call is resumed. */
const DROPPED = new Set(["disconnected", "not_connected"]);
export const CAMERA_SOURCE = "cam";
/** @typedef {{scaleResolutionDownBy: number, maxBitrate: number, maxFramerate?: number}} LayerEncoding */
/** The three layers of a camera, smallest first: how much the encoder scales the camera
 * down, and the most it may spend on it. @type {LayerEncoding[]} */
export const SIMULCAST_LAYERS = [
  { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];
export const SCREEN_SOURCE = "screen";
/** The three layers of a screen share, smallest first: every one at full resolution (text
 * must stay legible), fewer frames a second and fewer bits in the lower ones, so that a
 * viewer whose downlink is short gets the screen slower, never blurred. @type {LayerEncoding[]} */
export const SCREEN_LAYERS = [
  { scaleResolutionDownBy: 1, maxFramerate: 5, maxBitrate: 400_000 },
  { scaleResolutionDownBy: 1, maxFramerate: 15, maxBitrate: 1_000_000 },
  { scaleResolutionDownBy: 1, maxBitrate: 2_500_000 },
];
export const CAMERA_CONSTRAINTS = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
// Forwarding never transcodes: the SFU takes VP8 (with RTX) and Opus only.
const CODECS = { video: ["video/vp8", "video/rtx"], audio: ["audio/opus"] };

/** A tiny event emitter: `on` returns a function that stops listening. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
  }

  /** @param {string} type @param {(detail: any) => void} handler */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type)?.delete(handler);
  }

  /** @param {string} type @param {any} detail */
  emit(type, detail) {
    for (const handler of [...(this._handlers.get(type) || [])]) {
      try {
        handler(detail);
      } catch (error) {
        console.error(`[huddle] ${type} handler failed`, error);
      }
    }
  }
}

/**
 * The `layers` declaration of a simulcast camera: one entry per layer mid, heights from the
 * camera's height and each layer's scale (never 0, never shorter than the layer below).
 * @param {string[]} mids layer mids, smallest layer first
 * @param {number} cameraHeight
 * @param {string} [source]
 * @returns {Record<string, LayerInfo>}
 */
export function layerDeclarations(mids, cameraHeight, source = CAMERA_SOURCE, layers = SIMULCAST_LAYERS) {
  /** @type {Record<string, LayerInfo>} */
  const out = {};
  let previous = 0;
  mids.forEach((mid, quality) => {
    const height = Math.max(previous, 1, Math.round(cameraHeight / layers[quality].scaleResolutionDownBy));
    out[mid] = { source, quality, height };
    previous = height;
  });
  return out;
}

/**
 * The senders of a layered source: a clone of `track` per layer (each section has its own
 * sender, and pausing one layer, replaceTrack(null), or muting must not touch the others'
 * tracks), each with its encoding.
 * @param {string} source the sender's source ("camera", "screen")
 * @param {MediaStreamTrack} track
 * @param {string} layerSource the name the layers are declared under
 * @param {LayerEncoding[]} layerSet
 */
function layered(source, track, layerSource, layerSet) {
  return layerSet.map((encoding, layer) => ({
    kind: "video", source, track: track.clone(), layer, encoding, layerSource, layerSet,
  }));
}

/**
 * What a new `sfu.offer` changes: the tracks it adds (new mid, or a mid now carrying another
 * track) and those it removes (a mid no longer listed: its section went inactive).
 * @param {Record<string, TrackInfo>} known by subscriber mid
 * @param {TrackInfo[]} offered
 */
export function trackChanges(known, offered) {
  const now = Object.fromEntries(offered.map((t) => [t.mid, t]));
  const added = offered.filter((t) => !known[t.mid] || known[t.mid].track !== t.track);
  const removed = Object.values(known).filter((t) => !now[t.mid] || now[t.mid].track !== t.track);
  return { now, added, removed };
}

/** Thresholds of `networkQuality`: loss as a fraction, round trip in ms. */
export const QUALITY_LIMITS = {
  fair: { loss: 0.02, rttMs: 300 },
  poor: { loss: 0.08, rttMs: 700 },
};

/**
 * How well media gets through, from what the stats say: "good", "fair" or "poor", or
 * "unknown" with nothing measured yet. Loss and round trip decide; a bitrate of 0 while
 * media is expected (`expecting`) is poor (nothing arrives).
 * @param {{loss?: number|null, rttMs?: number|null, bitrateBps?: number|null, expecting?: boolean}} m
 * @returns {"good"|"fair"|"poor"|"unknown"}
 */
export function networkQuality({ loss = null, rttMs = null, bitrateBps = null, expecting = false }) {
  if (loss === null && rttMs === null && bitrateBps === null) return "unknown";
  if (expecting && bitrateBps === 0) return "poor";
  const { fair, poor } = QUALITY_LIMITS;
  if ((loss ?? 0) >= poor.loss || (rttMs ?? 0) >= poor.rttMs) return "poor";
  if ((loss ?? 0) >= fair.loss || (rttMs ?? 0) >= fair.rttMs) return "fair";
  return "good";
}

/**
 * Per received section (by mid): loss fraction, bitrate and the transport's round trip
 * between two `getStats()` reports of the subscriber connection (`before` may be null: the
 * totals so far count then, and bitrate stays unknown).
 * @param {RTCStatsReport|Map<string, any>} now
 * @param {RTCStatsReport|Map<string, any>|null} before
 * @returns {Map<string, {loss: number|null, rttMs: number|null, bitrateBps: number|null, kind: string}>}
 */
export function receiveQuality(now, before) {
  const old = new Map();
  if (before) before.forEach((s) => s.type === "inbound-rtp" && old.set(s.mid ?? s.id, s));
  let rttMs = null;
  now.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && typeof s.currentRoundTripTime === "number") {
      rttMs = Math.round(s.currentRoundTripTime * 1000);
    }
  });
  const out = new Map();
  now.forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    const key = s.mid ?? s.id;
    const was = old.get(key);
    const received = (s.packetsReceived ?? 0) - (was?.packetsReceived ?? 0);
    const lost = Math.max(0, (s.packetsLost ?? 0) - (was?.packetsLost ?? 0));
    const loss = received + lost > 0 ? lost / (received + lost) : null;
    let bitrateBps = null;
    if (was && s.timestamp > was.timestamp) {
      bitrateBps = Math.max(0, Math.round((((s.bytesReceived ?? 0) - (was.bytesReceived ?? 0)) * 8000) / (s.timestamp - was.timestamp)));
    }
    out.set(key, { loss, rttMs, bitrateBps, kind: s.kind });
  });
  return out;
}

/** The SFU's ICE username fragment in an SDP: new for each of its peer connections, so it
 * tells offers for a connection a restart dropped from offers for the new one. */
export function iceUfrag(sdp) {
  const match = /^a=ice-ufrag:(\S+)/m.exec(sdp);
  return match ? match[1] : null;
}

function iceGatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    // Whatever was found by then goes: a slow STUN server must not hold the call up.
    const timer = setTimeout(done, ICE_GATHERING_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** What `options.iceTransportPolicy` of a Call may be (as RTCConfiguration's). */
export const ICE_TRANSPORT_POLICIES = ["all", "relay"];

function preferCodecs(transceiver, kind) {
  if (!transceiver.setCodecPreferences || !globalThis.RTCRtpSender?.getCapabilities) return;
  const capabilities = RTCRtpSender.getCapabilities(kind);
  if (!capabilities) return;
  const codecs = capabilities.codecs.filter((c) => CODECS[kind].includes(c.mimeType.toLowerCase()));
  try {
    transceiver.setCodecPreferences(codecs);
  } catch {
    // keep the browser's own list; the SFU refuses what it cannot take
  }
}

/**
 * One published section of the publisher connection.
 * @typedef {{transceiver: RTCRtpTransceiver, kind: "audio"|"video",
 *   source: "camera"|"microphone"|"screen"|"screen_audio", track: MediaStreamTrack,
 *   layer: number|null, encoding: object|null}} Sender
 */

/**
 * A group call room. Events (`call.on(type, handler)`): `state` ({state}), `track`
 * ({track, info, stream}: a received track), `trackended` ({info}), `participants`
 * (Participant[]), `joined`/`left`/`participantstate` (Participant or {participant}),
 * `speakers` (the `call.speakers` list), `muted` ({kind, by}: an admin muted us), `removed`,
 * `restarted` ({restarts}), `suspended` (the connection dropped; media goes on), `resumed`
 * ({rejoined}: the connection is back; `rejoined` when it came back too late and the call
 * joined the room again), `paused` ({tracks, participants, paused, resumed, unselected}:
 * what of the received tracks the SFU does not send changed; `tracks` are all held back
 * now for lack of downlink, `participants` their publishers, `paused`/`resumed` what of
 * those changed (see `isTrackPaused`); `unselected` the video it leaves out now by stream
 * selection in a large room (see `isTrackUnselected`)),
 * `error` (Error), `log` (string).
 */
export class Call extends Emitter {
  /**
   * @param {{request: Function, on: Function}} connection
   * @param {string} room
   * @param {{simulcast?: boolean, camera?: MediaTrackConstraints, resumeWaitMs?: number,
   *   iceTransportPolicy?: RTCIceTransportPolicy}} [options]
   */
  constructor(connection, room, options = {}) {
    super();
    this.connection = connection;
    this.room = room;
    // "relay": media only through the TURN servers of the join reply, for networks where
    // nothing else may get out (or to hide the device's addresses from the SFU).
    this.iceTransportPolicy = options.iceTransportPolicy ?? "all";
    if (!ICE_TRANSPORT_POLICIES.includes(this.iceTransportPolicy)) {
      throw new TypeError(`iceTransportPolicy must be "all" or "relay", not ${JSON.stringify(this.iceTransportPolicy)}`);
    }
    this.simulcast = options.simulcast !== false;
    this.cameraConstraints = options.camera || CAMERA_CONSTRAINTS;
    this.resumeWaitMs = options.resumeWaitMs ?? RESUME_WAIT_MS;
    /** joining, joined, left, failed */
    this.state = "idle";
    this.participant = null;
    /** @type {Map<string, Participant>} */
    this.participants = new Map();
    this.iceServers = [];
    /** @type {RTCPeerConnection|null} */
    this.publisherPc = null;
    /** @type {RTCPeerConnection|null} */
    this.subscriberPc = null;
    /** @type {Record<string, TrackInfo>} subscriber mid -> what it carries */
    this.tracks = {};
    /** @type {Map<string, Sender>} publisher mid -> what it sends */
    this.senders = new Map();
    /** Layer mids the SFU asked us to pause (nobody takes them). */
    this.pausedLayers = new Set();
    /** Received track ids (as in `sfu.offer`) the SFU does not send now: this side's
     * downlink has no room for them (`sfu.paused`). */
    this.pausedTracks = new Set();
    /** Received video track ids (as in `sfu.offer`) the SFU does not send now because of
     * stream selection: a large room forwards only the video of its `video_last_n` most
     * recent speakers and of pinned participants (`sfu.paused` `unselected`). */
    this.unselectedTracks = new Set();
    /** @type {Record<string, LayerInfo>} the camera's layers as last declared, by mid */
    this.layers = {};
    this.offersAnswered = 0;
    this.restarts = 0;
    this.restarting = null;
    this.audioMuted = false;
    this.videoMuted = false;
    /** @type {MediaStream|null} what getUserMedia gave for camera/microphone */
    this.localStream = null;
    /** @type {MediaStream|null} */
    this.screenStream = null;
    // Offers, publishes and restarts take turns: no answer is under way while the
    // connections are replaced, and no two offers of the publisher connection overlap.
    this._queue = Promise.resolve();
    this._staleUfrags = new Set();
    this._lastOfferUfrag = null;
    this._unsubscribe = [];
    /** While the connection is down during the call: settles when the call is resumed. */
    this._suspended = null;
    this._settleSuspended = () => {};
    this._failSuspended = (_error) => {};
    this._resumeSignal = null;
    this._resumeWaiter = null;
    callsOn(connection).add(this);
  }

  _listen(type, handler) {
    this._unsubscribe.push(
      this.connection.on(type, (event) => {
        if (event.room === undefined || event.room === this.room) handler(event);
      }),
    );
  }

  _log(text) {
    this.emit("log", text);
  }

  _setState(state) {
    this.state = state;
    this.emit("state", { state });
  }

  /** Runs `job` after everything queued before it; resolves or rejects with it. */
  _enqueue(job) {
    const run = this._queue.then(job);
    this._queue = run.catch(() => {});
    return run;
  }

  /** A request of this call: one lost with a dropped socket is sent again once the call is
   * resumed, so that a short drop fails nothing. */
  async _request(type, fields = {}) {
    for (;;) {
      try {
        return await this.connection.request(type, { room: this.room, ...fields });
      } catch (error) {
        if (!DROPPED.has(error?.code) || this.state !== "joined") throw error;
        this._suspend();
        await this._whenResumed(error);
      }
    }
  }

  /** The connection dropped while in the call: requests wait until it is resumed. */
  _suspend() {
    if (this._suspended || this.state !== "joined") return;
    let settle = () => {};
    let fail = (_error) => {};
    this._suspended = new Promise((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    this._suspended.catch(() => {});
    this._settleSuspended = settle;
    this._failSuspended = fail;
    this._resumeSignal = null;
    this._log("connection lost: the call goes on, waiting for it to come back");
    this.emit("suspended", {});
  }

  _whenResumed(error) {
    if (!this._suspended) return Promise.resolve();
    let timer;
    const giveUp = new Promise((_, reject) => {
      timer = setTimeout(() => reject(error), RESUME_GIVE_UP_MS);
    });
    return Promise.race([this._suspended, giveUp]).finally(() => clearTimeout(timer));
  }

  /** The connection said hello again: resumed if `call.resumed` comes, else join again. */
  async _onReady() {
    if (!this._suspended || this.state !== "joined") return;
    if (!this._resumeSignal) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, this.resumeWaitMs);
        this._resumeWaiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this._resumeWaiter = null;
    }
    if (!this._suspended || this.state !== "joined") return;
    const resumed = this._resumeSignal !== null;
    const settle = this._settleSuspended;
    this._suspended = null;
    if (resumed) {
      this._log("call resumed");
      this.emit("resumed", { rejoined: false });
      settle();
      return;
    }
    this._log("came back too late: joining the room again");
    settle(); // the rejoin's own requests must not wait for themselves
    await this._enqueue(() => this._rejoin());
    this.emit("resumed", { rejoined: true });
  }

  _onResumed(event) {
    if (event.participant && this.participant && event.participant !== this.participant) return;
    this._resumeSignal = event;
    if (this._resumeWaiter) this._resumeWaiter();
  }

  /** Joins the room; resolves with the `call.join` reply.
   * @returns {Promise<CallJoinOk>} */
  async join() {
    this._setState("joining");
    // Offers wait for the join reply: it gives the ICE servers their connection needs.
    let joined = () => {};
    this._queue = new Promise((resolve) => (joined = resolve));
    this._listen("sfu.offer", (event) => {
      this._lastOfferUfrag = iceUfrag(event.sdp);
      this._enqueue(() => this._answer(event)).catch((error) => this.emit("error", error));
    });
    this._listen("sfu.layers", (event) => this._onLayers(event.paused));
    this._listen("sfu.paused", (event) => this._onPaused(event.tracks, event.unselected));
    this._listen("call.participant_joined", (event) => {
      this.participants.set(event.participant.participant, event.participant);
      this.emit("joined", event.participant);
      this.emit("participants", [...this.participants.values()]);
    });
    this._listen("call.participant_left", (event) => {
      const who = this.participants.get(event.participant) || { participant: event.participant };
      this.participants.delete(event.participant);
      this.emit("left", who);
      this.emit("participants", [...this.participants.values()]);
    });
    this._listen("call.participant_state", (event) => {
      this.participants.set(event.participant.participant, event.participant);
      this.emit("participantstate", event.participant);
      this.emit("participants", [...this.participants.values()]);
    });
    this._listen("call.speakers", (event) => this.emit("speakers", event.speakers));
    this._listen("call.muted", (event) => {
      // The SFU no longer forwards it: mute the local track too, until we unmute.
      if (event.kind === "audio") this._setTrackEnabled("audio", false);
      else this._setTrackEnabled("video", false);
      this.emit("muted", { kind: event.kind, by: event.by });
    });
    this._listen("call.removed", (event) => {
      this._closeConnections();
      this._setState("left");
      this.emit("removed", { by: event.by });
    });
    this._listen("call.reconnect", () => {
      this._enqueue(() => this._rejoin()).catch((error) => this.emit("error", error));
    });
    this._listen("call.resumed", (event) => this._onResumed(event));
    // Only a connection that tells its state and says `ready` after each hello can resume.
    this._unsubscribe.push(
      this.connection.on("state", (event) => {
        if (event && event.state !== "open" && event.state !== "closed") this._suspend();
      }),
      this.connection.on("ready", () => {
        this._onReady().catch((error) => this.emit("error", error));
      }),
    );
    let reply;
    try {
      reply = await this._joinRequest();
    } catch (error) {
      this._setState("failed");
      for (const stop of this._unsubscribe.splice(0)) if (typeof stop === "function") stop();
      throw error;
    } finally {
      joined();
    }
    this._setState("joined");
    return reply;
  }

  async _joinRequest() {
    const reply = await this._request("call.join");
    this.participant = reply.participant;
    this.iceServers = reply.ice_servers || [];
    this.participants = new Map(reply.participants.map((p) => [p.participant, p]));
    this.emit("participants", [...this.participants.values()]);
    return reply;
  }

  _newPeerConnection(name) {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: "max-bundle",
    });
    pc.addEventListener("connectionstatechange", () => {
      this._log(`${name} connection ${pc.connectionState}`);
      // Only a connection still in use counts: those a restart replaced are closed.
      const current = pc === this.publisherPc || pc === this.subscriberPc;
      if (pc.connectionState === "failed" && current) {
        this.restartMedia(`${name} connection failed`).catch((error) => this.emit("error", error));
      }
    });
    return pc;
  }

  async _answer(event) {
    if (this._staleUfrags.has(iceUfrag(event.sdp))) return; // for a connection since dropped
    const { now, added, removed } = trackChanges(this.tracks, event.tracks);
    this.tracks = now;
    let pc = this.subscriberPc;
    if (pc === null) {
      pc = this.subscriberPc = this._newPeerConnection("subscriber");
      pc.addEventListener("track", (e) => {
        const info = this.tracks[e.transceiver.mid];
        if (info) this.emit("track", { track: e.track, info, stream: new MediaStream([e.track]) });
      });
    }
    for (const info of removed) this.emit("trackended", { info });
    await pc.setRemoteDescription({ type: "offer", sdp: event.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await iceGatheringComplete(pc);
    if (pc !== this.subscriberPc) return; // a restart replaced it meanwhile
    await this._request("sfu.answer", { sdp: pc.localDescription.sdp });
    this.offersAnswered += 1;
    this._log(`answered offer ${this.offersAnswered} (${event.tracks.length} tracks, ${added.length} new)`);
  }

  /**
   * Publishes the camera and/or microphone (getUserMedia, or `stream`). The camera goes out
   * as three simulcast layers unless the call was made with `simulcast: false`.
   * @param {{audio?: boolean|MediaTrackConstraints, video?: boolean|MediaTrackConstraints,
   *   stream?: MediaStream}} [what]
   * @returns {Promise<MediaStream>} the local stream (show it muted in the own tile)
   */
  async publish(what = { audio: true, video: true }) {
    const stream =
      what.stream ||
      (await navigator.mediaDevices.getUserMedia({
        audio: what.audio === undefined ? true : what.audio,
        video: what.video === true || what.video === undefined ? this.cameraConstraints : what.video,
      }));
    this.localStream = stream;
    await this._enqueue(() => this._publishTracks(this._cameraAndMicrophone(stream)));
    return stream;
  }

  /** The senders to add for a camera/microphone stream (not yet on a connection). */
  _cameraAndMicrophone(stream) {
    const out = [];
    for (const track of stream.getAudioTracks()) {
      out.push({ kind: "audio", source: "microphone", track, layer: null, encoding: null });
    }
    for (const track of stream.getVideoTracks()) {
      if (this.simulcast) {
        out.push(...layered("camera", track, CAMERA_SOURCE, SIMULCAST_LAYERS));
      } else {
        out.push({ kind: "video", source: "camera", track, layer: null, encoding: null });
      }
    }
    return out;
  }

  /** Adds `wanted` as new sections of the publisher connection and publishes them. */
  async _publishTracks(wanted) {
    if (this.publisherPc === null) this.publisherPc = this._newPeerConnection("publisher");
    const pc = this.publisherPc;
    const added = wanted.map((w) => {
      const init = { direction: "sendonly", streams: [] };
      if (w.encoding) init.sendEncodings = [{ ...w.encoding }];
      const transceiver = pc.addTransceiver(w.track, init);
      preferCodecs(transceiver, w.kind);
      return { ...w, transceiver };
    });
    if (this.videoMuted || this.audioMuted) {
      for (const a of added) if (this._isMuted(a.kind, a.source)) a.track.enabled = false;
    }
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    /** @type {Record<string, string>} */
    const sources = {};
    for (const a of added) sources[a.transceiver.mid] = a.source;
    /** @type {Map<string, {mids: string[], set: LayerEncoding[], track: MediaStreamTrack}>} */
    const groups = new Map();
    for (const a of added) {
      if (a.layer === null) continue;
      const group = groups.get(a.layerSource) || { mids: [], set: a.layerSet, track: a.track };
      group.mids[a.layer] = a.transceiver.mid;
      groups.set(a.layerSource, group);
    }
    /** @type {Record<string, LayerInfo>} */
    const layers = {};
    for (const [source, group] of groups) {
      const height = group.track.getSettings().height || 720;
      Object.assign(layers, layerDeclarations(group.mids, height, source, group.set));
    }
    let reply;
    try {
      reply = await this._request("sfu.publish", { sdp: pc.localDescription.sdp, sources, layers });
    } catch (error) {
      // Refused, so nothing of this offer is published: its sections stay inactive in
      // later offers, and their tracks are not ours to keep.
      if (pc === this.publisherPc && pc.signalingState === "have-local-offer") {
        await pc.setLocalDescription({ type: "rollback" });
      }
      for (const a of added) {
        a.transceiver.direction = "inactive";
        if (a.layer !== null) a.track.stop();
      }
      throw error;
    }
    if (pc !== this.publisherPc) return; // a restart replaced it meanwhile
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    for (const a of added) this.senders.set(a.transceiver.mid, a);
    if (groups.size > 0) this.layers = { ...this.layers, ...layers };
    this._log(`published ${added.map((a) => `${a.source}${a.layer === null ? "" : `/${a.layer}`}@${a.transceiver.mid}`).join(", ")}`);
  }

  /** Stops sending the sections of `mids` (a new offer with them inactive). */
  async _unpublish(mids) {
    const pc = this.publisherPc;
    if (pc === null) return;
    for (const mid of mids) {
      const sender = this.senders.get(mid);
      if (!sender) continue;
      sender.transceiver.direction = "inactive";
      if (sender.layer !== null) sender.track.stop(); // a clone of its own
      this.senders.delete(mid);
      delete this.layers[mid];
    }
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    const reply = await this._request("sfu.publish", { sdp: pc.localDescription.sdp });
    if (pc === this.publisherPc) await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
  }

  _onLayers(paused) {
    const wanted = new Set(paused);
    for (const [mid, sender] of this.senders) {
      if (sender.layer === null) continue;
      const was = this.pausedLayers.has(mid);
      const now = wanted.has(mid);
      if (now && !was) sender.transceiver.sender.replaceTrack(null);
      else if (!now && was) sender.transceiver.sender.replaceTrack(sender.track);
    }
    this.pausedLayers = wanted;
    this._log(`paused layers: ${[...wanted].join(", ") || "none"}`);
  }

  /** The SFU's lists of what it does not send us now (`tracks`: no room in the downlink;
   * `unselected`: video left out by stream selection, absent from older servers): emits
   * `paused` when either changed. */
  _onPaused(tracks, unselected = []) {
    if (!Array.isArray(tracks) || !Array.isArray(unselected ?? [])) {
      this.emit("error", new Error("sfu.paused without a track list: ignored"));
      return;
    }
    const now = new Set(tracks.filter((t) => typeof t === "string"));
    const left = new Set((unselected ?? []).filter((t) => typeof t === "string"));
    const was = this.pausedTracks;
    const wasLeft = this.unselectedTracks;
    const paused = [...now].filter((t) => !was.has(t));
    const resumed = [...was].filter((t) => !now.has(t));
    const sameLeft = left.size === wasLeft.size && [...left].every((t) => wasLeft.has(t));
    this.pausedTracks = now;
    this.unselectedTracks = left;
    if (paused.length === 0 && resumed.length === 0 && sameLeft) return;
    this._log(`paused by the SFU: ${[...now].join(", ") || "none"}; unselected: ${[...left].join(", ") || "none"}`);
    this.emit("paused", {
      tracks: [...now],
      participants: [...this.pausedParticipants()],
      paused,
      resumed,
      unselected: [...left],
    });
  }

  /** Whether the SFU holds back the received track `track` (its id as in `sfu.offer`, or a
   * TrackInfo) for lack of downlink: show a placeholder in its place meanwhile. */
  isTrackPaused(track) {
    return this.pausedTracks.has(typeof track === "string" ? track : track?.track);
  }

  /** Whether the SFU leaves the received video `track` (its id as in `sfu.offer`, or a
   * TrackInfo) out by stream selection: a large room forwards only the video of its most
   * recent speakers and of pinned participants. Not a network problem: show a placeholder
   * (or pin the participant) meanwhile; it comes back when its publisher speaks. */
  isTrackUnselected(track) {
    return this.unselectedTracks.has(typeof track === "string" ? track : track?.track);
  }

  /** The participants of which some received track is paused (`isTrackPaused`). */
  pausedParticipants() {
    const out = new Set();
    const byTrack = new Map(Object.values(this.tracks).map((info) => [info.track, info.participant]));
    for (const track of this.pausedTracks) {
      // A track not offered yet still names its publisher: ids are PARTICIPANT:SOURCE.
      out.add(byTrack.get(track) ?? track.split(":")[0]);
    }
    return out;
  }

  _isMuted(kind, source) {
    if (source === "screen" || source === "screen_audio") return false;
    return kind === "audio" ? this.audioMuted : this.videoMuted;
  }

  _setTrackEnabled(kind, enabled) {
    if (kind === "audio") this.audioMuted = !enabled;
    else this.videoMuted = !enabled;
    for (const sender of this.senders.values()) {
      if (sender.kind === kind && sender.source !== "screen" && sender.source !== "screen_audio") {
        sender.track.enabled = enabled;
      }
    }
    if (this.localStream) {
      const tracks = kind === "audio" ? this.localStream.getAudioTracks() : this.localStream.getVideoTracks();
      for (const track of tracks) track.enabled = enabled;
    }
  }

  /** Mutes or unmutes the microphone: its track sends silence, and the room is told
   * (`call.state`; after an admin's mute, unmuting makes the SFU forward it again). */
  async setMicrophoneMuted(muted) {
    this._setTrackEnabled("audio", !muted);
    await this._request("call.state", { audio_muted: muted });
  }

  /** Mutes or unmutes the camera: its layers send black, and the room is told. */
  async setCameraMuted(muted) {
    this._setTrackEnabled("video", !muted);
    await this._request("call.state", { video_muted: muted });
  }

  /** Sends the camera (`kind` "video") or microphone ("audio") of another device
   * (`deviceId` from `navigator.mediaDevices.enumerateDevices()`), on the same sections. */
  async switchDevice(kind, deviceId) {
    const constraints =
      kind === "video"
        ? { video: { ...this.cameraConstraints, deviceId: { exact: deviceId } } }
        : { audio: { deviceId: { exact: deviceId } } };
    const fresh = await navigator.mediaDevices.getUserMedia(constraints);
    const [track] = kind === "video" ? fresh.getVideoTracks() : fresh.getAudioTracks();
    track.enabled = !this._isMuted(kind, kind === "video" ? "camera" : "microphone");
    const source = kind === "video" ? "camera" : "microphone";
    for (const [mid, sender] of this.senders) {
      if (sender.source !== source) continue;
      const old = sender.track;
      sender.track = sender.layer === null ? track : track.clone();
      sender.track.enabled = track.enabled;
      if (!this.pausedLayers.has(mid)) await sender.transceiver.sender.replaceTrack(sender.track);
      if (old !== track) old.stop();
    }
    if (this.localStream) {
      const old = kind === "video" ? this.localStream.getVideoTracks() : this.localStream.getAudioTracks();
      for (const t of old) {
        this.localStream.removeTrack(t);
        t.stop();
      }
      this.localStream.addTrack(track);
    }
    return track;
  }

  /** Shares the screen (getDisplayMedia) as a track of its own (source `screen`); stops by
   * itself when the browser's "stop sharing" ends the track. */
  async shareScreen(options = { video: true, audio: false }) {
    if (this.screenStream) return this.screenStream;
    const stream = await navigator.mediaDevices.getDisplayMedia(options);
    this.screenStream = stream;
    const wanted = [];
    for (const track of stream.getVideoTracks()) {
      // Frame-rate layers (SCREEN_LAYERS), so that a short downlink slows the screen down
      // rather than pausing it; one plain track when simulcast is off.
      if (this.simulcast) wanted.push(...layered("screen", track, SCREEN_SOURCE, SCREEN_LAYERS));
      else wanted.push({ kind: "video", source: "screen", track, layer: null, encoding: null });
      track.addEventListener("ended", () => this.stopScreenShare().catch((error) => this.emit("error", error)));
    }
    for (const track of stream.getAudioTracks()) {
      wanted.push({ kind: "audio", source: "screen_audio", track, layer: null, encoding: null });
    }
    try {
      await this._enqueue(() => this._publishTracks(wanted));
    } catch (error) {
      for (const track of stream.getTracks()) track.stop();
      this.screenStream = null;
      throw error;
    }
    await this._request("call.state", { screen_sharing: true });
    return stream;
  }

  async stopScreenShare() {
    const stream = this.screenStream;
    if (!stream) return;
    this.screenStream = null;
    const mids = [...this.senders].filter(([, s]) => s.source.startsWith("screen")).map(([mid]) => mid);
    for (const track of stream.getTracks()) track.stop();
    await this._enqueue(() => this._unpublish(mids));
    await this._request("call.state", { screen_sharing: false });
  }

  /** How a received track is shown: the tile's height in pixels (null: no limit). For a
   * simulcast source the SFU then forwards the largest layer that fits. */
  async setTileHeight(track, maxHeight) {
    await this._request("sfu.track_settings", { track, max_height: maxHeight });
  }

  /** The SFU's statistics of what this participant publishes and receives (`call.stats`),
   * and the browser's own (`getStats()` of both connections).
   * @returns {Promise<{server: CallStatsOk, publisher: RTCStatsReport|null, subscriber: RTCStatsReport|null}>} */
  async stats() {
    const [server, publisher, subscriber] = await Promise.all([
      this._request("call.stats"),
      this.publisherPc ? this.publisherPc.getStats() : null,
      this.subscriberPc ? this.subscriberPc.getStats() : null,
    ]);
    return { server, publisher, subscriber };
  }

  /** Starts the media over on new peer connections (`sfu.restart`), keeping the place in the
   * room; done by itself when a connection fails. One restart at a time. */
  restartMedia(why = "requested") {
    if (this.restarting) return this.restarting;
    if (this.state !== "joined") return Promise.reject(new Error(`no media to restart (${this.state})`));
    this._log(`restarting media: ${why}`);
    this.restarting = this._enqueue(async () => {
      const published = this._closeConnections();
      await this._request("sfu.restart");
      if (published.length) await this._publishTracks(published);
      this.restarts += 1;
      this.emit("restarted", { restarts: this.restarts });
    }).finally(() => {
      this.restarting = null;
    });
    return this.restarting;
  }

  /** Closes both connections; returns what was published, to publish again. */
  _closeConnections() {
    if (this._lastOfferUfrag) this._staleUfrags.add(this._lastOfferUfrag);
    const published = [...this.senders.values()]
      .filter((s) => s.track.readyState === "live")
      .map(({ kind, source, track, layer, encoding }) => ({ kind, source, track, layer, encoding }));
    // Forget them before closing: a closing connection is no longer current, fails nothing.
    const pcs = [this.publisherPc, this.subscriberPc];
    this.publisherPc = this.subscriberPc = null;
    for (const pc of pcs) if (pc) pc.close();
    for (const info of Object.values(this.tracks)) this.emit("trackended", { info });
    this.tracks = {};
    this.senders.clear();
    this.pausedLayers = new Set();
    // New connections start with everything sent; the SFU says again what it holds back.
    this._onPaused([], []);
    return published;
  }

  /** The SFU worker holding the room stopped: join again and publish again. */
  async _rejoin() {
    const published = this._closeConnections();
    await this._joinRequest();
    if (published.length) await this._publishTracks(published);
    this.emit("restarted", { restarts: this.restarts });
  }

  /** Leaves the room and stops every local track. */
  async leave() {
    const wasIn = this.state === "joined" && !this._suspended;
    this._setState("left");
    if (this._suspended) {
      this._failSuspended(new Error("left the call"));
      this._suspended = null;
    }
    try {
      if (wasIn) await this._request("call.leave");
    } finally {
      const published = this._closeConnections();
      for (const s of published) s.track.stop();
      for (const stream of [this.localStream, this.screenStream]) {
        if (stream) for (const track of stream.getTracks()) track.stop();
      }
      this.localStream = this.screenStream = null;
      callsOn(this.connection).delete(this);
      for (const stop of this._unsubscribe.splice(0)) if (typeof stop === "function") stop();
    }
  }
}

/** Joins `room` and resolves with the joined Call (see Call). */
export async function joinCall(connection, room, options = {}) {
  const call = new Call(connection, room, options);
  await call.join();
  return call;
}

// --- ringing -------------------------------------------------------------------------------

/** Events after which a call no longer rings on this device, and why. */
export const RING_STOPS = {
  "call.answered_elsewhere": "answered_elsewhere",
  "call.cancelled": "cancelled",
  "call.missed": "missed",
  "call.ended": "ended",
};

/** Events after which a call this device placed no longer rings. */
const PLACED_ENDS = new Set(["call.accepted", "call.declined", "call.ended"]);

/**
 * 1:1 and group ringing (docs/protocol.md, Ringing calls). Keeps the calls ringing on this
 * device (`ringing`, by call id) and emits: `incoming` (the `call.incoming` event), `stopped`
 * ({call, reason}: answered_elsewhere, cancelled, missed, ended, accepted, declined, gone),
 * `outgoing`, `accepted`, `merged`, `declined`, `cancelled`, `missed`, `ended`, `updated`, `left`,
 * `resumed` (the events as the server sends them, `call.` left out).
 */
export class Ringing extends Emitter {
  /** @param {{request: Function, on: Function}} connection */
  constructor(connection) {
    super();
    this.connection = connection;
    /** @type {Map<string, CallIncoming>} call id -> its call.incoming */
    this.ringing = new Map();
    this._unsubscribe = [];
    const names = ["incoming", "outgoing", "accepted", "merged", "answered_elsewhere", "declined", "cancelled", "missed", "ended", "updated", "left", "resumed"];
    for (const name of names) {
      this._unsubscribe.push(connection.on(`call.${name}`, (event) => this.handle(event)));
    }
    /** @type {Set<string> | null} calls rung before a reconnect, not yet rung again */
    this._unconfirmed = null;
    this._unsubscribe.push(connection.on("ready", () => this._confirm()));
  }

  /**
   * After a reconnect: the node rings again, right after its hello reply, every call that
   * still rings for this user; whatever stopped meanwhile (cancelled, answered elsewhere)
   * this device never heard of. The node handles a connection's frames in order, so once
   * the reply to a request sent now is in, every such ring has come: the calls it did not
   * ring again stop (`gone`).
   */
  async _confirm() {
    if (!this.ringing.size) return;
    const unconfirmed = new Set(this.ringing.keys());
    this._unconfirmed = unconfirmed;
    try {
      await this.connection.request("ping");
    } catch {
      return; // dropped again: the next hello checks again
    }
    if (this._unconfirmed !== unconfirmed) return;
    this._unconfirmed = null;
    for (const call of unconfirmed) this._stop(call, "gone");
  }

  /** Applies one server event (public for tests). */
  handle(event) {
    const name = event.type.slice("call.".length);
    if (event.type === "call.incoming") {
      this.ringing.set(event.call, event);
      this._unconfirmed?.delete(event.call);
    }
    const reason = RING_STOPS[event.type];
    if (reason && this.ringing.delete(event.call)) this.emit("stopped", { call: event.call, reason });
    if (event.type === "call.merged") {
      // Our call crossed theirs: the node answered theirs on this device.
      placedOn(this.connection).delete(event.call);
      this._stop(event.into, "accepted");
    } else if (PLACED_ENDS.has(event.type)) {
      placedOn(this.connection).delete(event.call);
    }
    this.emit(name, event);
  }

  _stop(call, reason) {
    if (this.ringing.delete(call)) this.emit("stopped", { call, reason });
  }

  /**
   * Calls `to` (or invites them into the accepted `call`); resolves with {call, room,
   * answered}. `answered`: `to` was calling this user at that moment, and the reply's `call`
   * is theirs, answered on this device: join `room` now. A call that crosses theirs later
   * (both called at once) ends in a `merged` event ({call, into, room}) the same way.
   */
  async invite(to, media = "video", call = null) {
    const reply = await this.connection.request("call.invite", { to, media, ...(call ? { call } : {}) });
    if (reply.answered) this._stop(reply.call, "accepted");
    else if (!call) placedOn(this.connection).add(reply.call);
    return reply;
  }

  /** Answers on this device; resolves with {call, room}: join the room with `joinCall`. */
  async accept(call) {
    try {
      return await this.connection.request("call.accept", { call });
    } finally {
      this._stop(call, "accepted");
    }
  }

  async decline(call) {
    try {
      await this.connection.request("call.decline", { call });
    } finally {
      this._stop(call, "declined");
    }
  }

  /** The caller gives up while it still rings. */
  async cancel(call) {
    placedOn(this.connection).delete(call);
    await this.connection.request("call.cancel", { call });
  }

  async hangup(call) {
    await this.connection.request("call.hangup", { call });
  }

  async update(call, media) {
    await this.connection.request("call.update", { call, media });
  }

  close() {
    for (const stop of this._unsubscribe.splice(0)) if (typeof stop === "function") stop();
  }
}
