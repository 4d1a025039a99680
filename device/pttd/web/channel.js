// The Channel-API client of the pttd console: one WebSocket connection to the room server.
//
// Text frames are JSON control messages: requests carry a `seq` and get an answer with the same
// `seq` (`success: true` or `error`); events (`on_…`) carry `command` and no `seq`. Binary frames
// are audio packets: type 0x01, stream_id u32 BE, packet_id u32 BE, one Opus (or SFrame) packet.
// See PROTOCOL.md in the repository.
//
// `ChannelClient` is one connection (the design's contract). `ChannelLink` keeps one up: a
// ticket from the web API, logon, the next refresh token kept in memory for the reconnection,
// back-off, and a fresh ticket when the refresh token is refused.

export const AUDIO_PACKET_TYPE = 0x01;
export const AUDIO_HEADER_SIZE = 9;
export const MAX_BINARY_FRAME = 8192;
export const MAX_U32 = 0xffffffff;
export const ANSWER_TIMEOUT_MS = 10000;
export const OPEN_TIMEOUT_MS = 10000;
const MAX_BUFFERED = 256 * 1024; // audio is dropped, not queued, behind a slow socket

export const EVENTS = [
  "on_channel_status",
  "on_stream_start",
  "on_stream_stop",
  "on_room_key",
  "on_error",
  "on_text_message",
];

/** An answer's failure: `error` (the Channel-API string), and pttd's `reason` and `talker`. */
export class ChannelError extends Error {
  constructor(response, message) {
    super(message ?? describeFailure(response));
    this.name = "ChannelError";
    this.response = response ?? null;
    this.error = response?.error ?? null;
    this.reason = response?.reason ?? null;
    this.talker = response?.talker ?? null;
  }
}

/** "failed to start stream: busy (alice is talking)" from an answer. */
export function describeFailure(response) {
  if (!response) return "no answer";
  let text = response.error ?? "failed";
  if (response.reason) text += `: ${response.reason}`;
  if (response.talker) text += ` (${response.talker} is talking)`;
  return text;
}

/** base64 (standard, padded) of bytes. */
export function toBase64(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

/** The codec header: sample rate u16 LE, frames per packet, frame ms; plus the SFrame suite
 * u16 BE for an encrypted stream. */
export function codecHeader({ sampleRate = 48000, frames = 1, frameMs = 20, suite = null } = {}) {
  const bytes = new Uint8Array(suite == null ? 4 : 6);
  bytes[0] = sampleRate & 0xff;
  bytes[1] = (sampleRate >> 8) & 0xff;
  bytes[2] = frames;
  bytes[3] = frameMs;
  if (suite != null) {
    bytes[4] = (suite >> 8) & 0xff;
    bytes[5] = suite & 0xff;
  }
  return toBase64(bytes);
}

/** One binary audio frame. */
export function encodeAudio(streamId, packetId, payload) {
  const frame = new Uint8Array(AUDIO_HEADER_SIZE + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, AUDIO_PACKET_TYPE);
  view.setUint32(1, streamId >>> 0);
  view.setUint32(5, packetId >>> 0);
  frame.set(payload, AUDIO_HEADER_SIZE);
  return frame;
}

/** {streamId, packetId, data} of a binary frame, or null if it is not an audio packet. */
export function decodeAudio(buffer) {
  if (buffer.byteLength <= AUDIO_HEADER_SIZE) return null;
  const view = new DataView(buffer);
  if (view.getUint8(0) !== AUDIO_PACKET_TYPE) return null;
  return {
    streamId: view.getUint32(1),
    packetId: view.getUint32(5),
    data: new Uint8Array(buffer, AUDIO_HEADER_SIZE),
  };
}

export class ChannelClient extends EventTarget {
  constructor(wsUrl) {
    super();
    this.url = wsUrl;
    this.ws = null;
    this.seq = 0;
    this.pending = new Map(); // seq -> {resolve, reject, timer}
    this.refreshToken = null;
    this.loggedOn = false;
    this.closed = false;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Open the WebSocket; resolves once it is open. */
  connect() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (err) {
        reject(new Error(`cannot connect to ${this.url}: ${err.message}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let opened = false;
      const timer = setTimeout(() => {
        if (!opened) {
          ws.close();
          reject(new Error(`no connection to ${this.url} within ${OPEN_TIMEOUT_MS / 1000} s`));
        }
      }, OPEN_TIMEOUT_MS);
      ws.addEventListener("open", () => {
        opened = true;
        clearTimeout(timer);
        resolve();
      });
      ws.addEventListener("message", (event) => this._onMessage(event.data));
      ws.addEventListener("close", (event) => {
        clearTimeout(timer);
        this.loggedOn = false;
        this._failPending(new Error("connection closed"));
        if (!opened) reject(new Error(`cannot connect to ${this.url}`));
        this.dispatchEvent(
          new CustomEvent("close", {
            detail: { code: event.code, reason: event.reason, wasClean: event.wasClean },
          }),
        );
      });
    });
  }

  _failPending(error) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.pending.clear();
  }

  _onMessage(data) {
    if (typeof data !== "string") {
      const packet = decodeAudio(data);
      if (packet) this.dispatchEvent(new CustomEvent("audio", { detail: packet }));
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // the server sends JSON only; a broken frame is skipped
    }
    if (message === null || typeof message !== "object") return;
    if (typeof message.command === "string") {
      this.dispatchEvent(new CustomEvent(message.command, { detail: message }));
      return;
    }
    const waiting = this.pending.get(message.seq);
    if (!waiting) return; // an answer nobody waits for
    this.pending.delete(message.seq);
    clearTimeout(waiting.timer);
    if (message.success === true) waiting.resolve(message);
    else waiting.reject(new ChannelError(message));
  }

  /** Send a request and wait for its answer (rejects with ChannelError on a failed one). */
  request(fields, timeoutMs = ANSWER_TIMEOUT_MS) {
    if (!this.open) return Promise.reject(new Error("not connected"));
    this.seq = this.seq >= MAX_U32 ? 1 : this.seq + 1;
    const seq = this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new Error(`no answer to ${fields.command} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(seq, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...fields, seq }));
    });
  }

  /** Log on to every room in `channels`; resolves the answer; keeps the next refresh token. */
  async logon({ refreshToken, channels, identityKey = null }) {
    const fields = { command: "logon", refresh_token: refreshToken, channels: [...channels] };
    if (identityKey) fields.identity_key = identityKey;
    const answer = await this.request(fields);
    if (answer.refresh_token) this.refreshToken = answer.refresh_token;
    this.loggedOn = true;
    return answer;
  }

  /** Ask for the floor of `channel`; resolves the stream id, rejects ChannelError(busy, …). */
  async startStream(channel, { codecHeader: header, priority = "normal", packetDuration = 20 }) {
    const fields = {
      command: "start_stream",
      type: "audio",
      codec: "opus",
      codec_header: header,
      packet_duration: packetDuration,
      channel,
    };
    if (priority === "emergency") fields.priority = "emergency";
    const answer = await this.request(fields);
    return answer.stream_id;
  }

  /** One audio packet of our stream; dropped (false) when the socket is not open or behind. */
  sendAudio(streamId, packetId, bytes) {
    if (!this.open) return false;
    if (this.ws.bufferedAmount > MAX_BUFFERED) return false;
    const frame = encodeAudio(streamId, packetId, bytes);
    if (frame.length > MAX_BINARY_FRAME) return false;
    this.ws.send(frame);
    return true;
  }

  /** Release the floor. */
  async stopStream(streamId) {
    return this.request({ command: "stop_stream", stream_id: streamId });
  }

  close() {
    this.closed = true;
    this.loggedOn = false;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "bye");
  }
}

/** Keeps a Channel-API connection up for a logged-in page.
 *
 * `getTicket()` resolves `{refresh_token, ws_url}` (POST /api/ticket); `channels` and
 * `identityKey` go into every logon. Every Channel-API event of the live connection is
 * re-dispatched from the link (the same names), plus 'state' with detail
 * `{state: 'connecting'|'online'|'offline'|'stopped', error?, answer?}`.
 *
 * After a connection that was online drops, the next logon uses the refresh token the last one
 * returned; when that is refused (or there is none), a fresh ticket. Back-off: full jitter,
 * 0.25 s doubling to 8 s, from scratch after a connection that got online. `fatal(err)` says
 * whether an error means "stop trying" (e.g. the web session is gone).
 */
export class ChannelLink extends EventTarget {
  constructor({ getTicket, channels, identityKey = null, fatal = () => false }) {
    super();
    this.getTicket = getTicket;
    this.channels = [...channels];
    this.identityKey = identityKey;
    this.fatal = fatal;
    this.client = null;
    this.stopped = false;
    this.backoff = 250;
    this.timer = null;
    this.refreshToken = null;
    this.wsUrl = null;
    this.answer = null;
  }

  get online() {
    return this.client !== null && this.client.loggedOn;
  }

  start() {
    this.stopped = false;
    this._run();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.refreshToken = null;
    if (this.client) this.client.close();
    this.client = null;
    this._state("stopped");
  }

  _state(state, extra = {}) {
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...extra } }));
  }

  async _logonOnce() {
    let token = this.refreshToken;
    this.refreshToken = null; // single use, whatever comes of it
    if (!token || !this.wsUrl) {
      const ticket = await this.getTicket();
      token = ticket.refresh_token;
      this.wsUrl = ticket.ws_url;
    }
    const client = new ChannelClient(this.wsUrl);
    this.client = client;
    for (const name of [...EVENTS, "audio"]) {
      client.addEventListener(name, (event) => {
        if (this.client === client) {
          this.dispatchEvent(new CustomEvent(name, { detail: event.detail }));
        }
      });
    }
    await client.connect();
    try {
      const answer = await client.logon({
        refreshToken: token,
        channels: this.channels,
        identityKey: this.identityKey,
      });
      return { client, answer };
    } catch (err) {
      client.close();
      if (err instanceof ChannelError && err.error === "not authorized" && !err.reason) {
        this.wsUrl = null; // the token is spent or refused: a fresh ticket next time
      }
      throw err;
    }
  }

  async _run() {
    if (this.stopped) return;
    this._state("connecting");
    let got;
    try {
      got = await this._logonOnce();
    } catch (err) {
      if (this.stopped) return;
      if (this.fatal(err)) {
        this._state("stopped", { error: err });
        return;
      }
      this._state("offline", { error: err });
      this._retry();
      return;
    }
    if (this.stopped) {
      got.client.close();
      return;
    }
    const { client, answer } = got;
    this.backoff = 250;
    this.answer = answer;
    this.refreshToken = client.refreshToken;
    client.addEventListener("close", (event) => {
      if (this.client !== client) return;
      this.refreshToken = client.refreshToken;
      this.client = null;
      if (this.stopped) return;
      this._state("offline", { error: new Error(closeText(event.detail)) });
      if (event.detail.code === 1008 && event.detail.reason === "revoked") return;
      this._retry();
    });
    this._state("online", { answer });
  }

  _retry() {
    clearTimeout(this.timer);
    const wait = Math.random() * this.backoff;
    this.backoff = Math.min(this.backoff * 2, 8000);
    this.timer = setTimeout(() => this._run(), wait);
  }
}

function closeText({ code, reason }) {
  if (reason) return `connection closed (${code} ${reason})`;
  return `connection lost (${code})`;
}
