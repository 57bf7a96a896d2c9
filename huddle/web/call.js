// The call page: a thin view over the SDK (sdk/connection.js for signaling, sdk/calls.js for
// the room). Everything about peer connections, simulcast, restarts and muting is in the SDK;
// this file only draws tiles, the roster and the buttons.
//
// `window.huddle` exposes the page's state and both peer connections, for tests and for a
// console; `huddle.restartMedia()` restarts the media by hand, `huddle.call` is the SDK's Call.

import { HuddleConnection, devLogin, randomId } from "./sdk/connection.js";
import { Call } from "./sdk/calls.js";

const LOG_LINES = 200;
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

/** @type {Call|null} */
let call = null;
const huddle = {
  state: "starting", // starting, connecting, authenticated, joined, published, failed, closed
  error: null,
  identity: null,
  log: [],
  get call() {
    return call;
  },
  get participant() {
    return call ? call.participant : null;
  },
  get publisherPc() {
    return call ? call.publisherPc : null;
  },
  get subscriberPc() {
    return call ? call.subscriberPc : null;
  },
  get offersAnswered() {
    return call ? call.offersAnswered : 0;
  },
  get restarts() {
    return call ? call.restarts : 0;
  },
  get restarting() {
    return call ? call.restarting !== null : false;
  },
  restartMedia(why = "requested") {
    if (!call) return Promise.reject(new Error(`no media to restart in state ${huddle.state}`));
    return call.restartMedia(why);
  },
};
window.huddle = huddle;

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
  huddle.error = error && error.code ? `${error.code}: ${error.detail || error.message}` : String((error && error.message) || error);
  setState("failed", huddle.error);
  log(huddle.error, true);
}

async function accessToken() {
  const token = params.get("token");
  if (token) return token;
  const name = params.get("name");
  if (!name) throw new Error("give ?token=JWT or, on a development node, ?name=NAME");
  return (await devLogin("", name)).token;
}

// --- tiles --------------------------------------------------------------------------------

function tileFor(info) {
  const screen = info.source === "screen" || info.source === "screen_audio";
  const id = `tile-${info.participant}${screen ? "-screen" : ""}`;
  let tile = document.getElementById(id);
  if (tile) return tile;
  tile = document.createElement("figure");
  tile.className = screen ? "tile screen" : "tile";
  tile.id = id;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // sound plays through the tile's <audio>
  const caption = document.createElement("figcaption");
  caption.textContent = screen ? `${info.identity} (screen)` : info.identity;
  tile.append(video, caption);
  $("tiles").append(tile);
  return tile;
}

function play(element) {
  element.play().catch((error) => {
    if (error.name === "NotAllowedError") $("audio-blocked").hidden = false; // wait for a click
  });
}

function showTrack({ track, info, stream }) {
  const tile = tileFor(info);
  if (track.kind === "video") {
    const video = tile.querySelector("video");
    video.srcObject = stream;
    play(video);
  } else {
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.dataset.mid = info.mid;
    audio.srcObject = stream;
    tile.append(audio);
    play(audio);
  }
  log(`receiving ${info.source} of ${info.identity} (mid ${info.mid}, ${info.track})`);
}

function dropTrack({ info }) {
  for (const audio of document.querySelectorAll(`.tile audio[data-mid="${CSS.escape(info.mid)}"]`)) audio.remove();
  if (info.source === "screen") document.getElementById(`tile-${info.participant}-screen`)?.remove();
}

function updateRoster(identity, name) {
  const everyone = [{ participant: call.participant, identity, name }, ...call.participants.values()];
  $("roster").replaceChildren(
    ...everyone.map((p) => {
      const item = document.createElement("li");
      item.id = `roster-${p.participant}`;
      item.textContent = p.name === p.identity ? p.identity : `${p.name} (${p.identity})`;
      if (p.participant === call.participant) item.textContent += " (you)";
      const notes = [p.audio_muted && "muted", p.video_muted && "camera off", p.screen_sharing && "sharing screen"];
      if (notes.some(Boolean)) item.textContent += ` (${notes.filter(Boolean).join(", ")})`;
      return item;
    }),
  );
}

// --- buttons ------------------------------------------------------------------------------

function toggle(button, pressed, labels) {
  button.setAttribute("aria-pressed", String(pressed));
  button.textContent = labels[pressed ? 1 : 0];
}

function wireControls(publishing) {
  const mic = $("mute-mic");
  const camera = $("mute-camera");
  const screen = $("share-screen");
  const leave = $("leave");
  const act = (button, job) =>
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await job();
      } catch (error) {
        log(`${button.id}: ${error.message}`, true);
      } finally {
        button.disabled = huddle.state === "closed";
      }
    });
  act(mic, async () => {
    await call.setMicrophoneMuted(!call.audioMuted);
    toggle(mic, call.audioMuted, ["Mute microphone", "Unmute microphone"]);
  });
  act(camera, async () => {
    await call.setCameraMuted(!call.videoMuted);
    toggle(camera, call.videoMuted, ["Stop camera", "Start camera"]);
  });
  act(screen, async () => {
    if (call.screenStream) await call.stopScreenShare();
    else await call.shareScreen();
    toggle(screen, call.screenStream !== null, ["Share screen", "Stop sharing"]);
  });
  act(leave, async () => {
    await call.leave();
    setState("closed", "left the room");
    for (const b of [mic, camera, screen, leave]) b.disabled = true;
  });
  for (const b of publishing ? [mic, camera, screen, leave] : [screen, leave]) b.disabled = false;
}

// --- the call -----------------------------------------------------------------------------

async function main() {
  const room = params.get("room");
  if (!room) throw new Error("no room: open this page with ?room=NAME");
  $("room-name").textContent = room;
  document.title = `Huddle: ${room}`;
  const token = await accessToken();
  // A device of its own per page load unless one is given: two tabs of one browser are two
  // participants (the browser-wide id would make each replace the other), and a reloaded
  // page joins afresh rather than finding its connection already in the room.
  const device = params.get("device") || `call-${randomId(12)}`;
  const connection = new HuddleConnection({ token, device });
  connection.on("closed", (event) => {
    if (huddle.state !== "failed") setState("closed", event.code);
  });
  window.addEventListener("pagehide", () => connection.close());
  setState("connecting");
  const hello = await connection.connect();
  huddle.identity = hello.identity;
  setState("authenticated", hello.identity);

  const publishing = params.get("publish") === "1";
  call = new Call(connection, room, {
    simulcast: params.get("simulcast") !== "0",
    iceTransportPolicy: params.get("relay") === "1" ? "relay" : "all",
    camera: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } },
  });
  call.on("log", (text) => log(text));
  call.on("error", fail);
  call.on("track", showTrack);
  call.on("trackended", dropTrack);
  call.on("participants", () => updateRoster(hello.identity, hello.name));
  call.on("joined", (p) => log(`${p.identity} joined`));
  call.on("left", (p) => {
    document.getElementById(`tile-${p.participant}`)?.remove();
    document.getElementById(`tile-${p.participant}-screen`)?.remove();
    log(`${p.identity || p.participant} left`);
  });
  call.on("restarted", ({ restarts }) => log(`media restarted (${restarts})`));
  call.on("removed", () => setState("closed", "removed from the room"));
  await call.join();
  setState("joined", `${room} as ${call.participant}`);

  if (publishing) {
    const stream = await call.publish({ audio: true, video: true });
    $("local-video").srcObject = stream;
    $("local-tile").hidden = false;
    setState("published");
  }
  wireControls(publishing);
}

$("audio-unblock").addEventListener("click", () => {
  for (const element of document.querySelectorAll("audio")) element.play().catch(() => {});
  $("audio-blocked").hidden = true;
});

main().catch(fail);
