// A minimal browser client of Huddle's signaling protocol v1 (docs/protocol.md).
//
// One WebSocket to /v1/ws, then `hello` and `call.join`. Media uses two peer connections to
// the SFU: the publisher connection (this page offers, `sfu.publish` carries the offer and its
// reply the answer) and the subscriber connection (the SFU offers with `sfu.offer` events, this
// page answers with `sfu.answer`). The SFU accepts no trickled ICE candidates, so every SDP this
// page sends is sent once ICE gathering has completed and carries all of its candidates.
//
// When a peer connection fails (the device's network changed, say), the page starts its media
// over as the Python CallClient does: `sfu.restart`, new connections, local tracks published
// again, keeping its place in the room.
//
// `window.huddle` exposes the state and both peer connections, for tests and for a console;
// `huddle.restartMedia()` restarts the media by hand.
"use strict";

(() => {
  const ICE_GATHERING_TIMEOUT_MS = 5000;
  const REQUEST_TIMEOUT_MS = 15000;
  const LOG_LINES = 200;
  // Forwarding never transcodes: the SFU takes VP8 (with RTX) and Opus only.
  const CODECS = { video: ["video/vp8", "video/rtx"], audio: ["audio/opus"] };

  const params = new URLSearchParams(location.search);
  const huddle = {
    state: "starting", // starting, connecting, authenticated, joined, published, failed, closed
    error: null,
    identity: null,
    participant: null,
    publisherPc: null,
    subscriberPc: null,
    tracks: {}, // subscriber mid -> track info of the latest sfu.offer
    offersAnswered: 0,
    restarts: 0,
    restarting: false,
    log: [],
  };
  window.huddle = huddle;

  const $ = (id) => document.getElementById(id);

  function log(text, isError = false) {
    const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
    huddle.log.push(line);
    if (huddle.log.length > LOG_LINES) huddle.log.shift();
    (isError ? console.error : console.log)(`[huddle] ${text}`);
    const item = document.createElement("li");
    item.textContent = line;
    if (isError) item.className = "error";
    const list = $("log");
    list.append(item);
    while (list.childElementCount > LOG_LINES) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  function setState(state, detail = "") {
    huddle.state = state;
    $("status").textContent = detail ? `${state}: ${detail}` : state;
    log(`state ${state}${detail ? ` (${detail})` : ""}`);
  }

  function fail(error) {
    huddle.error = error instanceof ProtocolError ? `${error.code}: ${error.message}` : String(error && error.message || error);
    setState("failed", huddle.error);
    log(huddle.error, true);
  }

  class ProtocolError extends Error {
    constructor(request, code, message) {
      super(`${request} refused: ${message}`);
      this.code = code;
    }
  }

  // --- signaling ------------------------------------------------------------------------

  class Signaling {
    constructor(url) {
      this.url = url;
      this.ws = null;
      this.nextId = 1;
      this.pending = new Map(); // request id -> {type, resolve, reject, timer}
      this.handlers = new Map(); // event type -> handler
      this.onclose = null;
    }

    open() {
      return new Promise((resolve, reject) => {
        const ws = (this.ws = new WebSocket(this.url));
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error(`cannot open ${this.url}`));
        ws.onmessage = (event) => this.receive(event.data);
        ws.onclose = (event) => {
          for (const waiter of this.pending.values()) {
            clearTimeout(waiter.timer);
            waiter.reject(new Error(`connection closed (${event.code}) before the ${waiter.type} reply`));
          }
          this.pending.clear();
          if (this.onclose) this.onclose(event);
        };
      });
    }

    close() {
      if (this.ws) this.ws.close(1000);
    }

    on(type, handler) {
      this.handlers.set(type, handler);
    }

    request(type, fields = {}) {
      const id = `r${this.nextId++}`;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new Error(`no reply to ${type} within ${REQUEST_TIMEOUT_MS} ms`));
        }, REQUEST_TIMEOUT_MS);
        this.pending.set(id, { type, resolve, reject, timer });
        this.ws.send(JSON.stringify({ ...fields, id, type }));
      });
    }

    receive(text) {
      let frame;
      try {
        frame = JSON.parse(text);
      } catch {
        log("unparsable frame from the server", true);
        return;
      }
      if (frame.type === "ok" || frame.type === "error") {
        const waiter = frame.re == null ? undefined : this.pending.get(frame.re);
        if (waiter === undefined) {
          if (frame.type === "error") log(`server error ${frame.code}: ${frame.message}`, true);
          return;
        }
        this.pending.delete(frame.re);
        clearTimeout(waiter.timer);
        if (frame.type === "ok") waiter.resolve(frame);
        else waiter.reject(new ProtocolError(waiter.type, frame.code, frame.message));
        return;
      }
      // Events of types this page does not know are skipped, as the protocol asks.
      const handler = this.handlers.get(frame.type);
      if (handler) handler(frame);
    }
  }

  function webSocketUrl() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/v1/ws`;
  }

  async function accessToken() {
    const token = params.get("token");
    if (token) return token;
    const name = params.get("name");
    if (!name) throw new Error("give ?token=JWT or, on a development node, ?name=NAME");
    const resp = await fetch("/v1/dev/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name }),
    });
    const body = await resp.json();
    if (!resp.ok) throw new Error(`dev login refused: ${body.error ? body.error.message : resp.status}`);
    return body.token;
  }

  // --- WebRTC helpers -------------------------------------------------------------------

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
      const timer = setTimeout(() => {
        log("ICE gathering still running: sending the candidates found so far", true);
        done();
      }, ICE_GATHERING_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  function preferCodecs(transceiver, kind) {
    if (!transceiver.setCodecPreferences || !RTCRtpSender.getCapabilities) return;
    const capabilities = RTCRtpSender.getCapabilities(kind);
    if (!capabilities) return;
    const codecs = capabilities.codecs.filter((c) => CODECS[kind].includes(c.mimeType.toLowerCase()));
    try {
      transceiver.setCodecPreferences(codecs);
    } catch (error) {
      log(`keeping the browser's ${kind} codecs: ${error.message}`);
    }
  }

  function newPeerConnection(name, iceServers) {
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    pc.addEventListener("connectionstatechange", () => {
      log(`${name} connection ${pc.connectionState}`, pc.connectionState === "failed");
      // Only a connection still in use counts: the ones a restart replaced are closed.
      const current = pc === huddle.publisherPc || pc === huddle.subscriberPc;
      if (pc.connectionState === "failed" && current && huddle.onConnectionFailed) {
        huddle.onConnectionFailed(name);
      }
    });
    return pc;
  }

  // The ICE username fragment of an SDP: new for each of the SFU's peer connections, so it
  // tells offers for a connection that a restart dropped from offers for the new one.
  function iceUfrag(sdp) {
    const match = /^a=ice-ufrag:(\S+)/m.exec(sdp);
    return match ? match[1] : null;
  }

  // --- tiles ----------------------------------------------------------------------------

  function tileFor(info) {
    const id = `tile-${info.participant}`;
    let tile = document.getElementById(id);
    if (tile) return tile;
    tile = document.createElement("figure");
    tile.className = "tile";
    tile.id = id;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // sound plays through the tile's <audio>
    const caption = document.createElement("figcaption");
    caption.textContent = info.identity;
    tile.append(video, caption);
    $("tiles").append(tile);
    return tile;
  }

  function play(element) {
    element.play().catch((error) => {
      if (error.name !== "NotAllowedError") return;
      $("audio-blocked").hidden = false; // autoplay policy: wait for a click
    });
  }

  function showTrack(track, info) {
    const tile = tileFor(info);
    if (track.kind === "video") {
      const video = tile.querySelector("video");
      video.srcObject = new MediaStream([track]);
      play(video);
    } else {
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.srcObject = new MediaStream([track]);
      tile.append(audio);
      play(audio);
    }
    log(`receiving ${info.source} of ${info.identity} (mid ${info.mid})`);
  }

  function updateRoster(participants) {
    const roster = $("roster");
    roster.replaceChildren(
      ...participants.map((p) => {
        const item = document.createElement("li");
        item.id = `roster-${p.participant}`;
        item.textContent = p.name === p.identity ? p.identity : `${p.name} (${p.identity})`;
        if (p.participant === huddle.participant) item.textContent += " (you)";
        return item;
      }),
    );
  }

  // --- the call -------------------------------------------------------------------------

  async function localStream() {
    if (!navigator.mediaDevices) {
      throw new Error("no navigator.mediaDevices: open this page over https (or from localhost)");
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } },
    });
    $("local-video").srcObject = stream;
    $("local-tile").hidden = false;
    return stream;
  }

  // Sends `stream` on a new publisher connection (a restart publishes the same stream again).
  async function publish(signaling, room, iceServers, stream) {
    const pc = (huddle.publisherPc = newPeerConnection("publisher", iceServers));
    const sent = stream.getTracks().map((track) => {
      const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      preferCodecs(transceiver, track.kind);
      return { transceiver, kind: track.kind };
    });
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    const sources = {};
    for (const { transceiver, kind } of sent) {
      sources[transceiver.mid] = kind === "video" ? "camera" : "microphone";
    }
    const reply = await signaling.request("sfu.publish", { room, sdp: pc.localDescription.sdp, sources });
    if (pc !== huddle.publisherPc) return; // a restart replaced it meanwhile
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
  }

  async function answerOffer(signaling, event, iceServers, staleUfrags) {
    if (staleUfrags.has(iceUfrag(event.sdp))) {
      log("skipping an offer for a connection the restart dropped");
      return;
    }
    for (const info of event.tracks) huddle.tracks[info.mid] = info;
    let pc = huddle.subscriberPc;
    if (pc === null) {
      pc = huddle.subscriberPc = newPeerConnection("subscriber", iceServers);
      pc.addEventListener("track", (e) => {
        const info = huddle.tracks[e.transceiver.mid];
        if (info) showTrack(e.track, info);
        else log(`a track on mid ${e.transceiver.mid} that no offer described`, true);
      });
    }
    await pc.setRemoteDescription({ type: "offer", sdp: event.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await iceGatheringComplete(pc);
    if (pc !== huddle.subscriberPc) return; // a restart replaced it meanwhile
    await signaling.request("sfu.answer", { room: event.room, sdp: pc.localDescription.sdp });
    huddle.offersAnswered += 1;
    log(`answered offer ${huddle.offersAnswered} (${event.tracks.length} tracks)`);
  }

  // What an ICE restart would do (aiortc has none): close both connections, ask the SFU for
  // new ones with `sfu.restart` (it keeps our place in the room and offers our subscriptions
  // again with `sfu.offer`), and publish the local stream again on a new connection.
  async function startMediaOver(signaling, room, iceServers, stream, staleUfrags, lastOffer) {
    const old = [huddle.publisherPc, huddle.subscriberPc];
    // Forget them first: a closing connection is no longer current, and fails nothing.
    huddle.publisherPc = huddle.subscriberPc = null;
    if (lastOffer.ufrag) staleUfrags.add(lastOffer.ufrag);
    for (const pc of old) if (pc) pc.close();
    huddle.tracks = {};
    for (const audio of document.querySelectorAll(".tile:not(.local) audio")) audio.remove();
    await signaling.request("sfu.restart", { room });
    if (stream) await publish(signaling, room, iceServers, stream);
    huddle.restarts += 1;
    log(`media restarted (${huddle.restarts})`);
  }

  async function main() {
    const room = params.get("room");
    if (!room) throw new Error("no room: open this page with ?room=NAME");
    $("room-name").textContent = room;
    document.title = `Huddle: ${room}`;
    const token = await accessToken();

    const signaling = (huddle.signaling = new Signaling(webSocketUrl()));
    signaling.onclose = (event) => {
      if (huddle.state !== "failed") setState("closed", `code ${event.code}`);
    };
    setState("connecting");
    await signaling.open();
    window.addEventListener("pagehide", () => signaling.close());

    const device = params.get("device");
    const hello = await signaling.request("hello", {
      token,
      protocol: 1,
      client: "huddle-web/0.1",
      ...(device ? { device } : {}),
    });
    huddle.identity = hello.identity;
    setState("authenticated", hello.identity);
    // Browsers cannot see WebSocket pings: an app-level ping notices a dead connection.
    setInterval(() => {
      signaling.request("ping").catch((error) => log(`ping: ${error.message}`, true));
    }, hello.heartbeat_s * 1000);

    // Offers are answered one at a time, in order, once the join reply has given the ICE
    // servers. Media restarts take their turn in the same queue, so that no answer is under
    // way while the connections are replaced.
    let joined;
    let offers = new Promise((resolve) => (joined = resolve));
    const staleUfrags = new Set(); // of the SFU's connections that restarts dropped
    const lastOffer = { ufrag: null };
    let stream = null; // what this page publishes, once it does
    const people = new Map();
    signaling.on("sfu.offer", (event) => {
      lastOffer.ufrag = iceUfrag(event.sdp);
      offers = offers.then((iceServers) =>
        answerOffer(signaling, event, iceServers, staleUfrags).then(
          () => iceServers,
          (error) => {
            fail(error);
            return iceServers;
          },
        ),
      );
    });
    // One restart at a time: the failures of both connections (or a failure during a
    // restart) make one restart. Resolves when it is done. Not before the page has joined and
    // published what it publishes (the first publish is not in the queue).
    const publishing = params.get("publish") === "1";
    huddle.restartMedia = (why = "requested") => {
      if (huddle.restarting) return huddle.restarting;
      if (huddle.state !== (publishing ? "published" : "joined")) {
        return Promise.reject(new Error(`no media to restart in state ${huddle.state}`));
      }
      log(`restarting media: ${why}`);
      const done = offers.then((iceServers) =>
        startMediaOver(signaling, room, iceServers, stream, staleUfrags, lastOffer).then(
          () => iceServers,
          (error) => {
            fail(error);
            return iceServers;
          },
        ),
      );
      offers = done;
      huddle.restarting = done.then(() => {
        huddle.restarting = false;
      });
      return huddle.restarting;
    };
    huddle.onConnectionFailed = (name) => {
      huddle.restartMedia(`${name} connection failed`).catch((error) => log(error.message, true));
    };
    signaling.on("call.participant_joined", (event) => {
      people.set(event.participant.participant, event.participant);
      updateRoster([...people.values()]);
      log(`${event.participant.identity} joined`);
    });
    signaling.on("call.participant_left", (event) => {
      const who = people.get(event.participant);
      people.delete(event.participant);
      updateRoster([...people.values()]);
      const tile = document.getElementById(`tile-${event.participant}`);
      if (tile) tile.remove();
      log(`${who ? who.identity : event.participant} left`);
    });

    const reply = await signaling.request("call.join", { room });
    huddle.participant = reply.participant;
    people.set(reply.participant, { participant: reply.participant, identity: hello.identity, name: hello.name });
    for (const p of reply.participants) people.set(p.participant, p);
    updateRoster([...people.values()]);
    joined(reply.ice_servers);
    setState("joined", `${room} as ${reply.participant}`);

    if (publishing) {
      const local = await localStream();
      await publish(signaling, room, reply.ice_servers, local);
      stream = local;
      setState("published");
    }
  }

  $("audio-unblock").addEventListener("click", () => {
    for (const element of document.querySelectorAll("audio")) element.play().catch(() => {});
    $("audio-blocked").hidden = true;
  });

  main().catch(fail);
})();
