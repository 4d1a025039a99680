// The pttd console: log in, listen and talk, administer. Plain DOM, no framework.
//
// Data comes from three places: the web API (JSON over fetch, one wrapper that adds the CSRF
// token), the server-sent events of /api/events (presence snapshots), and the Channel-API
// connection (channel.js: floor, talks, audio, room keys). Audio (./audio.js) and end-to-end
// encryption (./e2ee/index.js) are loaded with dynamic imports: when one is missing or fails,
// the page says so and everything else keeps working.
//
// Nothing is stored by this page (no localStorage, no cookies of its own, no audio); the e2ee
// module keeps the browser's identity key in IndexedDB only when the user ticks "keep this
// browser approved", under that user's name (another user on this browser never gets it), and
// logging out forgets it otherwise.

import { ChannelError, ChannelLink, codecHeader } from "./channel.js";
const STOP_REASONS = {
  timeout: "the maximum talk time was reached",
  preempted: "an emergency call took the floor",
  idle: "no audio reached the server for a while",
  disconnected: "the connection went",
  "encrypted room": "the room's encryption changed",
};
const START_REASONS = {
  busy: "the room is busy",
  "not allowed": "you may not make emergency calls",
  "encrypted room": "the room is encrypted",
  "clear room": "the room is not encrypted",
};

// A room key refused for this reason was sealed by the authority for another key of this user
// (e2ee/bundle.js REFUSED_OTHER_DEVICE): this browser's key is new and waits for approval.
const OTHER_KEY = "wrapped for another device";

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ------------------------------------------------------------------------------- state

const state = {
  config: null,
  session: null,
  view: null, // 'login' | 'talk' | 'admin'
  link: null,
  events: null,
  audio: null,
  audioReady: null, // the promise of ensureAudio()
  audioError: null,
  e2ee: null,
  identity: null,
  roomKeys: null,
  e2eeError: null,
  rooms: new Map(), // name -> {name, encrypted, joined, online: [], talking, usersOnline, hear}
  selected: null,
  streams: new Map(), // stream id -> {room, from, emergency, playing, chain}
  talk: null, // {room, phase: 'asking'|'talking', streamId, released, packetId, chain, by}
  lastKeyRelease: 0,
  admin: { rooms: [], users: [], devices: [], keys: null, built: false, timer: null },
  snapshot: null,
};

// ------------------------------------------------------------------------------- web API

class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** One way to call the web API: JSON in and out, the CSRF token on every POST and DELETE. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && state.session?.csrf) headers["X-CSRF-Token"] = state.session.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "the server cannot be reached");
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message, response.headers.get("Retry-After"));
  }
  return data;
}

/** An API call from a logged-in view: a 401 means the session ended. */
async function call(method, path, body) {
  try {
    return await api(method, path, body);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401 && state.session) {
      sessionEnded("Your session has ended: log in again.");
    }
    throw err;
  }
}

// ------------------------------------------------------------------------------- notices

function notice(text) {
  $("notice").textContent = text;
}

function alertError(text) {
  const region = $("alert");
  region.textContent = text;
  region.hidden = !text;
}

// ------------------------------------------------------------------------------- views

function show(view) {
  state.view = view;
  $("loading").hidden = true;
  $("login-view").hidden = view !== "login";
  $("talk-view").hidden = view !== "talk";
  $("admin-view").hidden = view !== "admin";
  const loggedIn = view !== "login";
  $("nav").hidden = !loggedIn;
  $("who").hidden = !loggedIn;
  $("nav-admin").hidden = !(loggedIn && state.session?.admin);
  for (const [id, name] of [
    ["nav-talk", "talk"],
    ["nav-admin", "admin"],
  ]) {
    if (view === name) $(id).setAttribute("aria-current", "page");
    else $(id).removeAttribute("aria-current");
  }
  if (view === "admin") refreshAdmin();
}

function showLogin(message = "") {
  show("login");
  $("login-error").textContent = message;
  $("login-password").value = "";
  offerKeep();
  $("login-user").focus();
}

// "Keep this browser approved" on the login form starts ticked only when the user named in the
// form keeps a key in this browser (kept before: kept again unless unticked), and is offered
// anew whenever the name changes. Untouched, the choice is made after the login for the name
// the server answers with (the same rule, without waiting for the form's look-up).
const loginKeep = { touched: false, seq: 0 };

function offerKeep() {
  const seq = ++loginKeep.seq;
  loginKeep.touched = false;
  $("login-keep").checked = false;
  const user = $("login-user").value.trim();
  if (!user) return;
  storedIdentity(user).then((kept) => {
    if (seq === loginKeep.seq && !loginKeep.touched) $("login-keep").checked = kept;
  });
}

// ------------------------------------------------------------------------------- login

async function onLogin(event) {
  event.preventDefault();
  const username = $("login-user").value.trim();
  const password = $("login-password").value;
  const errorLine = $("login-error");
  if (!username || !password) {
    errorLine.textContent = !username ? "Enter your user name." : "Enter your password.";
    (!username ? $("login-user") : $("login-password")).focus();
    return;
  }
  const submit = $("login-submit");
  submit.disabled = true;
  errorLine.textContent = "Logging in…";
  try {
    const session = await api("POST", "/api/login", { username, password });
    state.keepIdentity = loginKeep.touched ? $("login-keep").checked : null;
    errorLine.textContent = "";
    $("login-password").value = "";
    await enter(session);
  } catch (err) {
    let text = err.message;
    if (err instanceof ApiError && err.status === 401) text = "Wrong user name or password.";
    if (err instanceof ApiError && err.status === 429) {
      const wait = Number.parseInt(err.retryAfter ?? "", 10);
      text = Number.isFinite(wait)
        ? `Too many attempts: try again in ${wait} s.`
        : "Too many attempts: try again in a minute.";
    }
    errorLine.textContent = text;
    $("login-password").focus();
  } finally {
    submit.disabled = false;
  }
}

async function onLogout() {
  try {
    await api("POST", "/api/logout");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      alertError(`Logging out failed: ${err.message}`);
      return;
    }
  }
  await leave();
  showLogin();
  notice("Logged out.");
}

async function sessionEnded(message) {
  if (!state.session) return;
  await leave();
  showLogin(message);
}

/** Forget everything of the session: connection, events, keys, talk, admin views. */
async function leave() {
  const user = state.session?.user;
  endTalk(null);
  if (state.link) state.link.stop();
  state.link = null;
  if (state.events) state.events.close();
  state.events = null;
  for (const id of state.streams.keys()) state.audio?.stopPlayback(id);
  state.streams.clear();
  state.rooms.clear();
  state.selected = null;
  state.session = null;
  state.snapshot = null;
  state.roomKeys = null;
  const identity = state.identity;
  state.identity = null;
  state.keepIdentity = null;
  if (state.e2ee && identity) {
    try {
      // Kept: out of this page's memory, still stored for this user's next login. Not kept:
      // forgotten (this user's only: another user's kept key is not touched).
      if (identity.persisted) await state.e2ee.closeIdentity?.();
      else await state.e2ee.forgetIdentity(identity.user ?? user);
    } catch (err) {
      notice(`Could not forget this browser's key: ${err.message}`);
    }
  }
  clearTimeout(state.admin.timer);
  state.admin = { rooms: [], users: [], devices: [], keys: null, built: false, timer: null };
  $("admin-view").replaceChildren();
  $("authority-fp").textContent = "";
  $("room-list").replaceChildren();
  $("online-list").replaceChildren();
  alertError("");
}

// ------------------------------------------------------------------------------- logged in

async function enter(session) {
  state.session = session;
  $("who-name").textContent = session.user + (session.admin ? " (admin)" : "");
  const encrypted = new Set(session.encrypted ?? []);
  state.rooms.clear();
  for (const name of session.rooms ?? []) {
    state.rooms.set(name, {
      name,
      encrypted: encrypted.has(name),
      joined: false,
      online: [],
      talking: null,
      usersOnline: null,
      hear: true,
    });
  }
  state.selected = session.rooms?.[0] ?? null;
  $("emergency").closest(".emergency").hidden = session.emergency === false;
  buildRoomList();
  show("talk");
  renderStage();
  startEvents();
  ensureAudio();
  await loadE2ee();
  startLink();
}

function ensureAudio() {
  if (!state.audioReady) {
    state.audioReady = (async () => {
      $("sound-on").hidden = true;
      try {
        const module = await import("./audio.js");
        const engine = new module.AudioEngine({ tap: testTap() });
        await engine.init();
        state.audio = engine;
        state.audioError = null;
        $("sound-state").textContent = "";
        watchSound(engine);
      } catch (err) {
        state.audioError = err;
        $("sound-state").textContent = `Sound is not available: ${err.message}`;
      }
      renderStage();
      return state.audio;
    })();
  }
  return state.audioReady;
}

/** Browsers start sound only after a gesture: until then (a reload, say) a button for it, and
 * any press on the page will do. The engine's AudioContext is `ctx`. */
function watchSound(engine) {
  const ctx = engine.ctx;
  if (!ctx) return;
  const update = () => {
    const off = ctx.state === "suspended";
    $("sound-on").hidden = !off;
    $("sound-state").textContent = off ? "Sound is off until you press something on the page." : "";
  };
  ctx.addEventListener("statechange", update);
  update();
  if (ctx.state !== "suspended") return;
  const once = () => {
    document.removeEventListener("pointerdown", once, true);
    document.removeEventListener("keydown", once, true);
    ctx.resume().catch(() => {});
  };
  document.addEventListener("pointerdown", once, true);
  document.addEventListener("keydown", once, true);
}

/** The audio test tap (window.pttdTap keeps what is played): only when the server was started
 *  for tests and the page's address asks for it (?tap=1); a link alone turns nothing on. */
function testTap() {
  return state.config?.test_tap === true && new URLSearchParams(location.search).get("tap") === "1";
}

/** Whether `user` keeps an identity key in this browser. */
async function storedIdentity(user) {
  try {
    const module = await import("./e2ee/index.js");
    return Boolean(await module.hasStoredIdentity?.(user));
  } catch {
    return false;
  }
}

async function loadE2ee() {
  state.e2eeError = null;
  try {
    const module = await import("./e2ee/index.js");
    state.e2ee = module;
    const user = state.session.user;
    if (state.keepIdentity === null || state.keepIdentity === undefined) {
      // A reload, or "keep" left as offered: the identity is kept if this user kept it before.
      state.keepIdentity = Boolean(await module.hasStoredIdentity?.(user));
    }
    state.identity = await module.loadIdentity({ persist: state.keepIdentity, user });
    $("keep-identity").checked = Boolean(state.identity.persisted);
    const authority = state.config?.authority_key ?? null;
    if (authority) {
      state.roomKeys = new module.RoomKeys(state.identity, authority, state.session.user);
      Promise.resolve(state.roomKeys.authorityFingerprint?.())
        .then((digits) => {
          $("authority-fp").textContent = digits
            ? `Key authority: ${digits} (compare it with your administrator's once).`
            : "";
        })
        .catch(() => {});
    } else {
      state.e2eeError = "the server has no room key authority";
    }
  } catch (err) {
    if (!state.e2eeError) state.e2eeError = `encryption is not available here (${err.message})`;
  }
}

/** "Keep this browser approved" changed: the same key, kept in this browser or not. */
async function onKeepIdentity(event) {
  const keep = event.target.checked;
  if (!state.e2ee || !state.identity) return;
  try {
    state.identity = await state.e2ee.loadIdentity({ persist: keep, user: state.session.user });
    state.keepIdentity = keep;
    notice(
      keep
        ? "This browser keeps its key: it stays approved after logging out."
        : "This browser's key will be forgotten when you log out.",
    );
  } catch (err) {
    event.target.checked = !keep;
    alertError(`Could not change that: ${err.message}`);
  }
}

// ------------------------------------------------------------------------------- SSE

function startEvents() {
  if (state.events) state.events.close();
  const source = new EventSource("/api/events");
  state.events = source;
  source.addEventListener("message", (event) => {
    let snapshot;
    try {
      snapshot = JSON.parse(event.data);
    } catch {
      return;
    }
    applySnapshot(snapshot);
  });
  source.addEventListener("error", async () => {
    if (source.readyState !== EventSource.CLOSED || state.events !== source) return;
    // The stream was refused: is the session still there? If so, try again in a while.
    try {
      await call("GET", "/api/session");
      setTimeout(() => {
        if (state.events === source) startEvents();
      }, 2000);
    } catch {
      // call() has shown the login view when the session is gone
    }
  });
}

function applySnapshot(snapshot) {
  state.snapshot = snapshot;
  for (const room of snapshot.rooms ?? []) {
    const mine = state.rooms.get(room.name);
    if (!mine) continue;
    mine.online = Array.isArray(room.online) ? room.online : [];
    mine.talking = room.talking ?? null;
    if (room.encrypted && !mine.encrypted) mine.encrypted = true;
  }
  renderRoomMeta();
  renderStage();
  if (state.session?.admin) {
    if (Array.isArray(snapshot.rooms)) state.admin.rooms = snapshot.rooms;
    if (Array.isArray(snapshot.devices)) state.admin.devices = snapshot.devices;
    if (state.admin.built) {
      renderAdminRooms();
      renderAdminDevices();
      renderAdminUsers();
    }
  }
}

// ------------------------------------------------------------------------------- Channel API

function startLink() {
  const channels = [];
  for (const room of state.rooms.values()) {
    if (room.encrypted && !state.identity) continue; // cannot join without an identity key
    channels.push(room.name);
  }
  if (channels.length === 0) {
    setTalkState(state.rooms.size ? "No room can be joined from this browser." : "You have no rooms.");
    setLinkState("offline");
    return;
  }
  const link = new ChannelLink({
    getTicket: () => call("POST", "/api/ticket"),
    channels,
    identityKey: state.identity?.keyText ?? null,
    fatal: (err) =>
      (err instanceof ApiError && (err.status === 401 || err.status === 403)) ||
      (err instanceof ChannelError && err.reason === "encrypted room"),
  });
  state.link = link;
  link.addEventListener("state", (event) => onLinkState(event.detail));
  link.addEventListener("on_channel_status", (event) => onChannelStatus(event.detail));
  link.addEventListener("on_stream_start", (event) => onStreamStart(event.detail));
  link.addEventListener("on_stream_stop", (event) => onStreamStop(event.detail));
  link.addEventListener("on_room_key", (event) => onRoomKey(event.detail));
  link.addEventListener("on_error", (event) => notice(`Server: ${event.detail.error}`));
  link.addEventListener("audio", (event) => onAudio(event.detail));
  link.start();
}

function setLinkState(text) {
  const pill = $("link-state");
  pill.textContent = text;
  pill.dataset.state = text;
}

function onLinkState({ state: linkState, error, answer }) {
  if (linkState === "online") {
    setLinkState("online");
    const encrypted = new Set(answer?.encrypted ?? []);
    for (const room of state.rooms.values()) if (encrypted.has(room.name)) room.encrypted = true;
    alertError("");
  } else if (linkState === "connecting") {
    setLinkState("connecting");
  } else {
    setLinkState("offline");
    for (const room of state.rooms.values()) room.joined = false;
    if (state.talk) endTalk("the connection was lost");
    for (const id of [...state.streams.keys()]) dropStream(id);
    if (error && state.session) alertError(`Not connected: ${error.message}`);
  }
  renderRoomMeta();
  renderStage();
}

function onChannelStatus(message) {
  const room = state.rooms.get(message.channel);
  if (!room) return;
  room.joined = message.status !== "offline";
  room.usersOnline = message.users_online ?? null;
  if (message.encrypted) room.encrypted = true;
  if (!room.joined && state.talk?.room === room.name) endTalk("you left the room");
  renderRoomMeta();
  renderStage();
}

function onStreamStart(message) {
  const room = state.rooms.get(message.channel);
  if (!room) return;
  const stream = {
    room: room.name,
    from: message.from,
    emergency: message.priority === "emergency",
    playing: false,
    chain: Promise.resolve(),
  };
  state.streams.set(message.stream_id, stream);
  if (room.hear) startPlaying(message.stream_id);
  renderRoomMeta();
  renderStage();
}

function startPlaying(streamId) {
  const stream = state.streams.get(streamId);
  if (!stream || stream.playing || !state.audio) return;
  stream.playing = true;
  state.audio.startPlayback(streamId);
}

function dropStream(streamId) {
  const stream = state.streams.get(streamId);
  if (!stream) return;
  if (stream.playing) state.audio?.stopPlayback(streamId);
  state.streams.delete(streamId);
}

function onStreamStop(message) {
  const talk = state.talk;
  if (talk && talk.streamId === message.stream_id) {
    const why = STOP_REASONS[message.reason] ?? message.reason ?? "the server ended it";
    endTalk(`Your talk was ended: ${why}.`);
    state.audio?.playCue("end");
  }
  dropStream(message.stream_id);
  renderRoomMeta();
  renderStage();
}

function onAudio({ streamId, packetId, data }) {
  const stream = state.streams.get(streamId);
  if (!stream || !stream.playing || !state.audio) return;
  const room = state.rooms.get(stream.room);
  if (room?.encrypted) {
    const keys = state.roomKeys;
    if (!keys || !keys.hasKey(room.name)) return;
    const copy = data.slice();
    stream.chain = stream.chain
      .then(() => keys.open(room.name, copy))
      .then((opus) => {
        if (stream.playing) state.audio.pushPacket(streamId, opus, packetId);
      })
      .catch(() => {
        stream.bad = (stream.bad ?? 0) + 1; // a packet that does not open is not played
      });
  } else {
    state.audio.pushPacket(streamId, data, packetId);
  }
}

async function onRoomKey(message) {
  if (!state.roomKeys) {
    notice(`A key for ${message.channel} came, but ${state.e2eeError ?? "encryption is off"}.`);
    return;
  }
  try {
    const { room, epoch } = await state.roomKeys.addRoomKey(message);
    notice(`Room key for ${room} (epoch ${epoch}) received: the room is open to you.`);
  } catch (err) {
    if (err.reason === OTHER_KEY) {
      // Signed by the authority for this user, but for a key this browser does not hold: the
      // server's last sealed key from before this browser's key was new. Not an attack, and
      // nothing to do but wait for the approval of the key this browser has now.
      notice(`The key the server kept for ${message.channel} was for an earlier key of yours.`);
    } else {
      alertError(`A room key for ${message.channel} was refused: ${err.message}`);
    }
  }
  renderRoomMeta();
  renderStage();
}

// ------------------------------------------------------------------------------- rooms

function buildRoomList() {
  const list = $("room-list");
  list.replaceChildren();
  let index = 0;
  for (const room of state.rooms.values()) {
    const id = `room-${index}`;
    const radio = el("input", {
      type: "radio",
      name: "room",
      id,
      value: room.name,
      checked: room.name === state.selected,
      onchange: () => {
        if (state.talk) endTalk("you changed rooms");
        state.selected = room.name;
        renderStage();
      },
    });
    const hear = el("input", {
      type: "checkbox",
      id: `hear-${index}`,
      checked: room.hear,
      onchange: (event) => setHear(room, event.target.checked),
    });
    const row = el(
      "li",
      { class: "room-row", "data-room": room.name },
      radio,
      el(
        "label",
        { for: id, class: "room-name" },
        el("span", { class: "room-label", text: room.name }),
        el("span", { class: "badge lock", hidden: !room.encrypted, text: "encrypted" }),
      ),
      el("span", { class: "room-meta", "data-meta": "" }),
      el(
        "span",
        { class: "hear" },
        hear,
        el(
          "label",
          { for: `hear-${index}` },
          "hear",
          el("span", { class: "visually-hidden", text: ` ${room.name}` }),
        ),
      ),
    );
    list.append(row);
    index += 1;
  }
  renderRoomMeta();
}

function setHear(room, on) {
  room.hear = on;
  for (const [id, stream] of state.streams) {
    if (stream.room !== room.name) continue;
    if (on) startPlaying(id);
    else if (stream.playing) {
      stream.playing = false;
      state.audio?.stopPlayback(id);
    }
  }
}

/** Who is talking in a room: the live Channel-API talk first, the events' snapshot next. */
function talkerOf(room) {
  for (const stream of state.streams.values()) {
    if (stream.room === room.name) return { name: stream.from, emergency: stream.emergency };
  }
  if (state.talk?.room === room.name && state.talk.phase === "talking") {
    return { name: state.session.user, emergency: state.talk.emergency, me: true };
  }
  return room.talking ? { name: room.talking, emergency: false } : null;
}

function renderRoomMeta() {
  for (const row of $("room-list").children) {
    const room = state.rooms.get(row.dataset.room);
    if (!room) continue;
    row.querySelector(".lock").hidden = !room.encrypted;
    const count = room.online.length || room.usersOnline || 0;
    const talker = talkerOf(room);
    const parts = [`${count} online`];
    if (talker) parts.push(`${talker.me ? "you are" : `${talker.name} is`} talking`);
    row.querySelector("[data-meta]").textContent = parts.join(" · ");
    row.classList.toggle("is-talking", Boolean(talker));
  }
}

// ------------------------------------------------------------------------------- the stage

/** Why the user cannot talk in the selected room now, or null. */
function cannotTalk(room) {
  if (!room) return "Choose a room.";
  if (!state.link?.online) return "Not connected to the room server.";
  if (room.encrypted && !state.identity) return `Encrypted room: ${state.e2eeError}.`;
  if (!room.joined) return "Joining the room…";
  if (room.encrypted && !state.roomKeys?.hasKey(room.name)) return "Waiting for approval.";
  return null;
}

function renderStage() {
  const room = state.rooms.get(state.selected) ?? null;
  $("room-title").textContent = room ? room.name : "No room";
  const info = [];
  if (room?.encrypted) info.push("end-to-end encrypted");
  if (room && !room.hear) info.push("muted");
  $("room-info").textContent = info.join(" · ");
  const talker = room ? talkerOf(room) : null;
  const talkerLine = $("talker");
  talkerLine.textContent = talker
    ? `${talker.emergency ? "EMERGENCY — " : ""}${talker.me ? "You are" : `${talker.name} is`} talking`
    : "";
  talkerLine.classList.toggle("live", Boolean(talker));
  talkerLine.classList.toggle("emergency-live", Boolean(talker?.emergency));

  // Encrypted room without a key: the fingerprint to read to the admin.
  const waiting = $("key-wait");
  const noKey = room?.encrypted && !state.roomKeys?.hasKey(room.name);
  waiting.hidden = !noKey;
  if (noKey) {
    if (state.identity) {
      const groups = state.identity.groups ?? [state.identity.fingerprint];
      const why = state.roomKeys?.whyLocked?.(room.name) ?? "";
      $("key-wait-text").textContent = !state.roomKeys
        ? `Encryption unavailable: ${state.e2eeError}. Your fingerprint:`
        : why === `room key refused: ${OTHER_KEY}`
          ? "This browser's key is new: waiting for approval — your fingerprint (read it to your administrator):"
          : why.startsWith("room key refused")
          ? `The ${why}. Your fingerprint (read it to your administrator):`
          : "Waiting for approval — your fingerprint (read it to your administrator):";
      $("fingerprint").textContent = groups.join(" ");
    } else {
      $("key-wait-text").textContent = `This browser cannot join encrypted rooms: ${state.e2eeError}.`;
      $("fingerprint").textContent = "";
    }
  }

  $("keep-row").hidden = !(state.identity && [...state.rooms.values()].some((r) => r.encrypted));
  renderOnline(room);
  const button = $("talk");
  const reason = cannotTalk(room);
  const busy = state.talk !== null;
  button.disabled = reason !== null && !busy;
  button.setAttribute("aria-pressed", busy ? "true" : "false");
  button.classList.toggle("asking", state.talk?.phase === "asking");
  button.classList.toggle("talking", state.talk?.phase === "talking");
  $("talk-label").textContent =
    state.talk?.phase === "talking"
      ? "Talking — release to stop"
      : state.talk?.phase === "asking"
        ? "Asking for the floor…"
        : "Hold to talk";
  if (!busy && reason && !state.talkMessage) setTalkState(reason);
  if (!busy && !reason && !state.talkMessage) {
    setTalkState(
      talker && !talker.me
        ? `Listening to ${talker.name} in ${room.name}.`
        : `Ready to talk in ${room.name}.`,
    );
  }
}

function renderOnline(room) {
  const list = $("online-list");
  list.replaceChildren();
  if (!room) return;
  const talker = talkerOf(room);
  const online = [...(room.online ?? [])].sort((a, b) =>
    a.name.localeCompare(b.name, undefined, { sensitivity: "base" }),
  );
  $("online-title").textContent = `Online in ${room.name} (${online.length || room.usersOnline || 0})`;
  for (const member of online) {
    const isTalking = talker && talker.name === member.name;
    list.append(
      el(
        "li",
        { class: isTalking ? "member talking" : "member" },
        el("span", { class: "member-name", text: member.name }),
        el("span", {
          class: "member-kind",
          text: member.kind === "device" ? "radio" : member.kind === "user" ? "console" : member.kind,
        }),
        isTalking ? el("span", { class: "badge live", text: "talking" }) : null,
      ),
    );
  }
  if (online.length === 0) list.append(el("li", { class: "empty", text: "Nobody (yet)." }));
}

function setTalkState(text) {
  const line = $("talk-state");
  if (line.textContent !== text) line.textContent = text;
}

/** A message about the last talk that stays until the next press. */
function talkMessage(text) {
  state.talkMessage = text;
  setTalkState(text);
}

// ------------------------------------------------------------------------------- talk

async function pressTalk(by) {
  if (state.talk) return;
  state.talkMessage = null;
  const room = state.rooms.get(state.selected) ?? null;
  const reason = cannotTalk(room);
  if (reason) {
    setTalkState(reason);
    state.audio?.playCue("error");
    return;
  }
  const emergency = $("emergency").checked && !$("emergency").closest(".emergency").hidden;
  const talk = {
    room: room.name,
    phase: "asking",
    streamId: null,
    released: false,
    packetId: 0,
    chain: Promise.resolve(),
    emergency,
    by,
  };
  state.talk = talk;
  renderStage();
  setTalkState(`Asking for the floor in ${room.name}…`);
  const client = state.link.client;
  let header;
  try {
    header = codecHeader(room.encrypted ? { suite: state.roomKeys.codecHeaderSuite(room.name) } : {});
  } catch (err) {
    refused(talk, `Cannot talk: ${err.message}`, "error");
    return;
  }
  const audioPromise = ensureAudio();
  let streamId;
  try {
    streamId = await client.startStream(room.name, {
      codecHeader: header,
      priority: emergency ? "emergency" : "normal",
    });
  } catch (err) {
    if (state.talk !== talk) return;
    refused(talk, refusalText(err), err.reason === "busy" ? "busy" : "error");
    return;
  }
  talk.streamId = streamId;
  if (state.talk !== talk || talk.released) {
    client.stopStream(streamId).catch(() => {});
    return;
  }
  const audio = await audioPromise;
  if (state.talk !== talk || talk.released) {
    client.stopStream(streamId).catch(() => {});
    return;
  }
  if (!audio) {
    client.stopStream(streamId).catch(() => {});
    refused(talk, `Cannot talk: sound is not available (${state.audioError?.message}).`, "error");
    return;
  }
  talk.phase = "talking";
  audio.playCue("permit");
  renderStage();
  renderRoomMeta();
  setTalkState(`${emergency ? "Emergency call" : "Talking"} in ${room.name} — release to stop.`);
  try {
    await audio.startCapture((opus) => sendPacket(talk, opus));
  } catch (err) {
    if (state.talk === talk) {
      audio.stopCapture();
      client.stopStream(streamId).catch(() => {});
      refused(talk, `Cannot use the microphone: ${err.message}`, "error");
    }
    return;
  }
  if (state.talk !== talk) audio.stopCapture(); // released or ended while the mic opened
}

function refusalText(err) {
  if (!(err instanceof ChannelError)) return `Cannot talk: ${err.message}.`;
  if (err.reason === "busy") {
    return err.talker ? `Busy: ${err.talker} is talking.` : "Busy: someone is talking.";
  }
  if (err.reason === "not allowed") return "Not allowed: you may not make emergency calls.";
  const why = START_REASONS[err.reason] ?? err.reason;
  return `Refused (${err.error}${why ? `: ${why}` : ""}).`;
}

function refused(talk, text, cue) {
  if (state.talk !== talk) return;
  state.talk = null;
  state.audio?.playCue(cue);
  renderStage();
  talkMessage(text);
  $("talk").classList.toggle("refused", cue === "busy");
}

function sendPacket(talk, opus) {
  if (state.talk !== talk || talk.phase !== "talking") return;
  const client = state.link?.client;
  if (!client) return;
  const room = state.rooms.get(talk.room);
  if (room?.encrypted) {
    talk.chain = talk.chain
      .then(() => state.roomKeys.seal(talk.room, opus))
      .then((sealed) => {
        if (state.talk === talk) client.sendAudio(talk.streamId, talk.packetId++, sealed);
      })
      .catch((err) => notice(`A packet could not be sealed: ${err.message}`));
  } else {
    client.sendAudio(talk.streamId, talk.packetId++, opus);
  }
}

/** The user let go: microphone off first, then the floor. */
function releaseTalk(by) {
  const talk = state.talk;
  if (!talk || (by && talk.by !== by)) return;
  talk.released = true;
  state.audio?.stopCapture();
  state.talk = null;
  if (talk.streamId !== null) state.link?.client?.stopStream(talk.streamId).catch(() => {});
  $("talk").classList.remove("refused");
  renderStage();
  renderRoomMeta();
  if (!state.talkMessage) setTalkState(`Talk ended. Ready to talk in ${talk.room}.`);
}

/** The talk ends without the user (the server, the link, leaving): mic off, say why. */
function endTalk(why) {
  const talk = state.talk;
  if (!talk) return;
  talk.released = true;
  state.audio?.stopCapture();
  state.talk = null;
  if (talk.streamId !== null && why !== null && state.link?.client?.open) {
    state.link.client.stopStream(talk.streamId).catch(() => {}); // succeeds for ended streams
  }
  if (why) talkMessage(why);
  renderStage();
  renderRoomMeta();
}

function isTyping(target) {
  if (!(target instanceof Element)) return false;
  if (target.isContentEditable) return true;
  return ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
}

function wireTalk() {
  const button = $("talk");
  button.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    button.focus();
    pressTalk("pointer");
  });
  for (const name of ["pointerup", "pointercancel", "pointerleave"]) {
    button.addEventListener(name, () => releaseTalk("pointer"));
  }
  button.addEventListener("contextmenu", (event) => event.preventDefault());
  // A click that is not the end of a pointer press or of the space bar (Enter, a screen
  // reader's activation) toggles: the first starts a talk, the next one ends it.
  button.addEventListener("click", (event) => {
    if (event.detail !== 0) return;
    if (performance.now() - state.lastKeyRelease < 500) return;
    if (state.talk) releaseTalk(null);
    else pressTalk("toggle");
  });

  document.addEventListener("keydown", (event) => {
    if (event.code !== "Space" || state.view !== "talk") return;
    const target = event.target;
    if (isTyping(target)) return;
    if (target instanceof Element && target !== button && target.closest("button, a, summary, dialog")) {
      return; // the space bar presses the focused control, not the talk button
    }
    event.preventDefault();
    if (event.repeat) return;
    pressTalk("key");
  });
  document.addEventListener("keyup", (event) => {
    if (event.code !== "Space") return;
    if (state.talk?.by !== "key") return;
    event.preventDefault();
    state.lastKeyRelease = performance.now();
    releaseTalk("key");
  });
  // A key release or a pointer lost while the page is not in front would never come.
  window.addEventListener("blur", () => {
    releaseTalk("key");
    releaseTalk("pointer");
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && state.talk) releaseTalk(null);
  });
}

// ------------------------------------------------------------------------------- admin

function adminEl(id) {
  return document.getElementById(id);
}

function buildAdmin() {
  if (state.admin.built || !state.session?.admin) return;
  const view = $("admin-view");
  view.replaceChildren($("admin-template").content.cloneNode(true));
  adminEl("adm-room-form").addEventListener("submit", onAddRoom);
  adminEl("adm-user-form").addEventListener("submit", onAddUser);
  adminEl("adm-pair-form").addEventListener("submit", onPairCode);
  adminEl("adm-rotate-form").addEventListener("submit", onRotate);
  state.admin.built = true;
}

async function refreshAdmin() {
  if (!state.session?.admin) return;
  buildAdmin();
  const tasks = [
    call("GET", "/api/admin/rooms").then((rooms) => {
      state.admin.rooms = rooms;
    }),
    call("GET", "/api/admin/users").then((users) => {
      state.admin.users = users;
    }),
    call("GET", "/api/admin/devices").then((devices) => {
      state.admin.devices = devices;
    }),
    call("GET", "/api/admin/keys").then((keys) => {
      state.admin.keys = keys;
    }),
  ];
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) alertError(`Could not load everything: ${failed.reason.message}`);
  renderAdmin();
}

function renderAdmin() {
  if (!state.admin.built) return;
  renderAdminRooms();
  renderAdminUsers();
  renderAdminDevices();
  renderAdminKeys();
  renderRoomPicks("adm-user-rooms", "user-room");
  renderRoomPicks("adm-pair-rooms", "pair-room");
  const rotate = adminEl("adm-rotate-room");
  const chosen = rotate.value;
  rotate.replaceChildren(
    ...state.admin.rooms
      .filter((r) => r.encrypted)
      .map((r) => el("option", { value: r.name, text: r.name, selected: r.name === chosen })),
  );
  rotate.closest("form").hidden = rotate.options.length === 0;
}

function roomNames() {
  return state.admin.rooms.map((r) => r.name);
}

function renderRoomPicks(containerId, prefix) {
  const box = adminEl(containerId);
  const ticked = new Set(
    [...box.querySelectorAll("input:checked")].map((input) => input.value),
  );
  box.replaceChildren(
    ...roomNames().map((name, i) =>
      el(
        "span",
        { class: "pick" },
        el("input", {
          type: "checkbox",
          id: `${prefix}-${i}`,
          value: name,
          checked: ticked.has(name),
        }),
        el("label", { for: `${prefix}-${i}`, text: name }),
      ),
    ),
  );
  if (roomNames().length === 0) box.append(el("span", { class: "hint", text: "No rooms yet." }));
}

function yesNo(value) {
  return value ? "yes" : "no";
}

function renderAdminRooms() {
  const body = adminEl("adm-rooms");
  if (!body) return;
  body.replaceChildren(
    ...state.admin.rooms.map((room) =>
      el(
        "tr",
        {},
        el("th", { scope: "row", text: room.name }),
        el("td", { text: yesNo(room.encrypted) }),
        el("td", { text: (room.online ?? []).map((m) => m.name).join(", ") || "—" }),
        el("td", { text: room.talking ?? "—" }),
        el(
          "td",
          { class: "actions" },
          room.encrypted
            ? null
            : el("button", {
                type: "button",
                class: "secondary",
                text: "Encrypt",
                "aria-label": `Encrypt ${room.name}`,
                onclick: () => onEncryptRoom(room.name),
              }),
          el("button", {
            type: "button",
            class: "danger",
            text: "Remove",
            "aria-label": `Remove ${room.name}`,
            onclick: () => onRemoveRoom(room.name),
          }),
        ),
      ),
    ),
  );
  if (state.admin.rooms.length === 0) body.append(emptyRow(5, "No rooms."));
  labelCells(body);
}

function onlineNames() {
  const names = new Set();
  for (const room of state.snapshot?.rooms ?? []) {
    for (const member of room.online ?? []) if (member.kind === "user") names.add(member.name);
  }
  return names;
}

function renderAdminUsers() {
  const body = adminEl("adm-users");
  if (!body) return;
  const live = state.snapshot ? onlineNames() : null;
  body.replaceChildren(
    ...state.admin.users.map((user) =>
      el(
        "tr",
        {},
        el("th", { scope: "row", text: user.name }),
        el("td", { text: (user.rooms ?? []).join(", ") || "—" }),
        el("td", { text: yesNo(user.admin) }),
        el("td", { text: yesNo(user.emergency) }),
        el("td", { text: yesNo(live ? live.has(user.name) || user.online : user.online) }),
        el(
          "td",
          { class: "actions" },
          emergencyButton("users", user.name, user.emergency),
          user.name === state.session?.user
            ? null
            : el("button", {
                type: "button",
                class: "danger",
                text: "Remove",
                "aria-label": `Remove user ${user.name}`,
                onclick: () => onRemoveUser(user.name),
              }),
        ),
      ),
    ),
  );
  if (state.admin.users.length === 0) body.append(emptyRow(6, "No users."));
  labelCells(body);
}

function formatTime(value) {
  if (value === null || value === undefined || value === "") return "never";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString();
}

function renderAdminDevices() {
  const body = adminEl("adm-devices");
  if (!body) return;
  body.replaceChildren(
    ...state.admin.devices.map((device) =>
      el(
        "tr",
        { class: device.revoked ? "revoked" : "", "data-device": device.name },
        el("th", { scope: "row", text: device.name }),
        el("td", { text: yesNo(device.online), class: device.online ? "on" : "off" }),
        el("td", { text: device.online ? "now" : formatTime(device.last_seen) }),
        el("td", { text: (device.rooms ?? []).join(", ") || "—" }),
        el("td", { text: yesNo(device.revoked) }),
        el(
          "td",
          { class: "actions" },
          device.revoked ? null : emergencyButton("devices", device.name, device.emergency),
          device.revoked
            ? null
            : el("button", {
                type: "button",
                class: "danger",
                text: "Revoke",
                "aria-label": `Revoke ${device.name}`,
                onclick: () => onRevoke(device.name),
              }),
        ),
      ),
    ),
  );
  if (state.admin.devices.length === 0) body.append(emptyRow(6, "No devices paired yet."));
  labelCells(body);
}

function groupDigits(digits) {
  const clean = String(digits ?? "").replace(/\D/g, "");
  return clean.match(/.{1,5}/g)?.join(" ") ?? "";
}

function renderAdminKeys() {
  const body = adminEl("adm-keys");
  if (!body) return;
  const keys = state.admin.keys;
  const info = adminEl("adm-keys-info");
  if (!keys) {
    info.textContent = "Key information is not available.";
    body.replaceChildren();
    return;
  }
  if (!keys.enabled) {
    info.textContent =
      "The key authority is off: the server runs without a key file, so encrypted rooms " +
      "cannot get keys from here.";
  } else {
    info.textContent = `Authority fingerprint: ${groupDigits(keys.authority_fingerprint)}. ` +
      "Approve a member only with the digits the member reads out from their own screen.";
  }
  body.replaceChildren(
    ...(keys.members ?? []).map((member, i) => {
      const inputId = `approve-${i}`;
      const form = el(
        "form",
        { class: "approve-form" },
        el("label", { for: inputId, class: "visually-hidden", text: `Fingerprint ${member.name} reads out` }),
        el("input", {
          id: inputId,
          inputmode: "numeric",
          autocomplete: "off",
          placeholder: "digits read out",
          required: true,
        }),
        el("button", { type: "submit", class: "secondary", text: "Approve" }),
      );
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        onApprove(member, form.querySelector("input").value);
      });
      return el(
        "tr",
        {},
        el("th", { scope: "row", text: `${member.name} (${member.kind})` }),
        el("td", { class: "fingerprint small", text: groupDigits(member.fingerprint) }),
        el("td", { text: (member.rooms ?? []).join(", ") || "—" }),
        el("td", { text: yesNo(member.approved) }),
        el("td", {}, keys.enabled ? form : "—"),
      );
    }),
  );
  if ((keys.members ?? []).length === 0) body.append(emptyRow(5, "No member has sent a key yet."));
  labelCells(body);
}

/** On a phone, table rows are shown as cards: each cell is labelled with its column's header
 * (the CSS shows data-label before the cell). */
function labelCells(body) {
  const head = body.closest("table")?.tHead?.rows[0];
  if (!head) return;
  const labels = [...head.cells].map((cell) => cell.textContent.trim());
  for (const row of body.rows) {
    if (row.cells.length !== labels.length) continue; // an "empty" row
    [...row.cells].forEach((cell, i) => {
      if (labels[i]) cell.dataset.label = labels[i];
    });
  }
}

function emptyRow(span, text) {
  return el("tr", {}, el("td", { colspan: String(span), class: "empty", text }));
}

/** Run an admin action: say what happened, reload the lists. */
async function adminAction(work, done) {
  alertError("");
  try {
    const result = await work();
    if (done) notice(typeof done === "function" ? done(result) : done);
    await refreshAdmin();
    return result;
  } catch (err) {
    alertError(err.message);
    return undefined;
  }
}

function confirmAction(text, okLabel) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

async function onAddRoom(event) {
  event.preventDefault();
  const form = event.target;
  const name = adminEl("adm-room-name").value.trim();
  const encrypted = adminEl("adm-room-encrypted").checked;
  if (!name) {
    alertError("Enter a room name.");
    adminEl("adm-room-name").focus();
    return;
  }
  const ok = await adminAction(
    () => call("POST", "/api/admin/rooms", { name, encrypted }),
    `Room ${name} added${encrypted ? " (encrypted)" : ""}.`,
  );
  if (ok !== undefined) form.reset();
}

async function onEncryptRoom(name) {
  const sure = await confirmAction(
    `Encrypt ${name}? Members without an approved key will no longer hear it.`,
    "Encrypt",
  );
  if (!sure) return;
  await adminAction(
    () => call("POST", `/api/admin/rooms/${encodeURIComponent(name)}/encrypt`),
    `${name} is now encrypted.`,
  );
}

async function onRemoveRoom(name) {
  const sure = await confirmAction(`Remove the room ${name}? Everyone in it leaves it.`, "Remove");
  if (!sure) return;
  await adminAction(
    () => call("DELETE", `/api/admin/rooms/${encodeURIComponent(name)}`),
    `Room ${name} removed.`,
  );
}

function pickedRooms(containerId) {
  return [...adminEl(containerId).querySelectorAll("input:checked")].map((input) => input.value);
}

async function onAddUser(event) {
  event.preventDefault();
  const form = event.target;
  const name = adminEl("adm-user-name").value.trim();
  const password = adminEl("adm-user-password").value;
  if (!name || !password) {
    alertError(!name ? "Enter a user name." : "Enter a password for the new user.");
    (!name ? adminEl("adm-user-name") : adminEl("adm-user-password")).focus();
    return;
  }
  const body = {
    name,
    password,
    rooms: pickedRooms("adm-user-rooms"),
    admin: adminEl("adm-user-admin").checked,
  };
  const ok = await adminAction(() => call("POST", "/api/admin/users", body), `User ${name} added.`);
  if (ok !== undefined) form.reset();
}

/** A button that grants emergency priority (pre-empts a normal talk), or takes it back. */
function emergencyButton(kind, name, granted) {
  return el("button", {
    type: "button",
    class: "secondary",
    text: granted ? "No emergency" : "Emergency",
    "aria-label": granted
      ? `Take emergency priority back from ${name}`
      : `Grant ${name} emergency priority`,
    onclick: () =>
      adminAction(
        () =>
          call("POST", `/api/admin/${kind}/${encodeURIComponent(name)}/emergency`, {
            granted: !granted,
          }),
        granted
          ? `${name} may no longer talk with emergency priority.`
          : `${name} may now talk with emergency priority.`,
      ),
  });
}

async function onRemoveUser(name) {
  const sure = await confirmAction(
    `Remove the user ${name}? Their sessions and connections end at once.`,
    "Remove",
  );
  if (!sure) return;
  await adminAction(
    () => call("DELETE", `/api/admin/users/${encodeURIComponent(name)}`),
    `User ${name} removed.`,
  );
}

async function onRevoke(name) {
  const sure = await confirmAction(
    `Revoke the device ${name}? It is cut off at once and must be paired again.`,
    "Revoke",
  );
  if (!sure) return;
  await adminAction(
    () => call("POST", `/api/admin/devices/${encodeURIComponent(name)}/revoke`),
    `${name} revoked.`,
  );
}

/** An SVG (a standalone document, with its namespace) as an image (a data: URL): never parsed
 * into the page. */
function svgDataUrl(svg) {
  const text = String(svg).trim();
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `data:image/svg+xml;base64,${btoa(binary)}`;
}

async function onPairCode(event) {
  event.preventDefault();
  const rooms = pickedRooms("adm-pair-rooms");
  if (rooms.length === 0) {
    alertError("Choose at least one room for the device.");
    return;
  }
  const ttl = Number.parseInt(adminEl("adm-pair-ttl").value, 10);
  alertError("");
  let code;
  try {
    code = await call("POST", "/api/admin/pair-codes", { rooms, ttl });
  } catch (err) {
    alertError(err.message);
    return;
  }
  adminEl("adm-pair-code").textContent = code.code;
  adminEl("adm-pair-link").textContent = code.link;
  adminEl("adm-pair-expires").textContent = formatTime(code.expires_at);
  const qr = adminEl("adm-pair-qr");
  if (code.qr_svg) {
    qr.src = svgDataUrl(code.qr_svg);
    qr.alt = `QR code of the pairing link for ${rooms.join(", ")}`;
    qr.hidden = false;
  } else {
    qr.hidden = true;
  }
  adminEl("adm-pair-result").hidden = false;
  notice(`Pairing code ${code.code} made for ${rooms.join(", ")}.`);
}

async function onApprove(member, typed) {
  const digits = typed.replace(/\D/g, "");
  if (digits.length === 0) {
    alertError(`Type the digits ${member.name} reads out.`);
    return;
  }
  await adminAction(
    () =>
      call("POST", "/api/admin/keys/approve", {
        kind: member.kind,
        name: member.name,
        fingerprint: digits,
      }),
    `${member.name} approved.`,
  );
}

async function onRotate(event) {
  event.preventDefault();
  const room = adminEl("adm-rotate-room").value;
  if (!room) return;
  await adminAction(
    () => call("POST", "/api/admin/keys/rotate", { room }),
    `A new key for ${room} is on its way to its members.`,
  );
}

// ------------------------------------------------------------------------------- boot

function wire() {
  $("login-form").addEventListener("submit", onLogin);
  $("login-user").addEventListener("input", offerKeep);
  $("login-keep").addEventListener("change", () => {
    loginKeep.touched = true;
  });
  $("logout").addEventListener("click", onLogout);
  $("nav-talk").addEventListener("click", () => show("talk"));
  $("nav-admin").addEventListener("click", () => {
    if (state.session?.admin) show("admin");
  });
  $("sound-on").addEventListener("click", async () => {
    const engine = await ensureAudio();
    engine?.ctx?.resume().catch(() => {});
  });
  $("keep-identity").addEventListener("change", onKeepIdentity);
  wireTalk();
}

async function boot() {
  wire();
  try {
    state.config = await api("GET", "/api/config");
  } catch (err) {
    notice(`Could not read the server's settings: ${err.message}`);
  }
  let session = null;
  try {
    session = await api("GET", "/api/session");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      showLogin(`The server cannot be reached: ${err.message}`);
      return;
    }
  }
  if (session) await enter(session);
  else showLogin();
}

boot();
