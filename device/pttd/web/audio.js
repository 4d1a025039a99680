// pttd web console: the browser's audio engine.
//
//   capture:  getUserMedia (echo cancellation, noise suppression, gain control off)
//             → capture worklet (mono, 960-sample frames: 20 ms at 48 kHz)
//             → WebCodecs AudioEncoder (Opus 48 kHz mono, 24 kbit/s, 20 ms, voip, in-band FEC)
//             → onPacket(Uint8Array): one raw Opus packet per frame, as a radio sends them.
//   playback: pushPacket → reorder (by packet id, when given) → WebCodecs AudioDecoder
//             → player worklet (jitter buffer, concealment, drain at the end) → speakers.
//   cues:     'permit', 'busy', 'end', 'error', synthesized (the radio's own tone patterns).
//
// Privacy: the microphone is open only between startCapture and stopCapture (stopCapture stops
// every track, which turns the browser's microphone indicator off); no audio is kept after a
// talk is captured or played. The test tap (the constructor's option `tap`, off unless the
// caller turns it on: the console does only when the server was started for tests and the URL
// has ?tap=1) keeps the last TAP_KEEP_S seconds of played samples and timings on
// window.pttdTap for the tests; without it nothing is kept.

export const SAMPLE_RATE = 48000;
export const FRAME_MS = 20;
export const FRAME_SAMPLES = (SAMPLE_RATE * FRAME_MS) / 1000;
const FRAME_US = FRAME_MS * 1000;

// The encoder's settings: the radio's (pttd.radio.audio.codec.OpusSettings defaults) except
// complexity 10 (the radio's 5 spares a small ARM board's CPU; a browser has it to spare).
// Measured on the speech sample, browser → opuslib, PESQ WB: complexity 0 2.52, 5 3.30,
// 10 3.77 (the radio-to-radio chain at 5: 3.31).
export const ENCODER_CONFIG = Object.freeze({
  codec: 'opus',
  sampleRate: SAMPLE_RATE,
  numberOfChannels: 1,
  bitrate: 24000,
  opus: Object.freeze({
    frameDuration: FRAME_US,
    application: 'voip',
    useinbandfec: true,
    packetlossperc: 5,
    complexity: 10,
  }),
});
export const DECODER_CONFIG = Object.freeze({
  codec: 'opus',
  sampleRate: SAMPLE_RATE,
  numberOfChannels: 1,
});

// The cues: the radio's patterns (pttd.radio.audio.tones): [frequency Hz (0: a gap), ms].
export const CUES = Object.freeze({
  permit: [[700, 80], [1050, 100]],
  busy: [[400, 100], [0, 60], [400, 100], [0, 60], [400, 100]],
  end: [[1500, 90]],
  error: [[300, 150], [0, 60], [300, 150]],
});
const CUE_LEVEL = 10 ** (-12 / 20);  // -12 dBFS, as the radio
const CUE_FADE_S = 0.005;

const U32 = 2 ** 32;

// What the test tap keeps, at most: the played samples and the per-packet timings of this many
// seconds (the oldest go first), so that even a test page open for a long time stays bounded.
export const TAP_KEEP_S = 120;
const TAP_KEEP_SAMPLES = TAP_KEEP_S * SAMPLE_RATE;
const TAP_KEEP_ENTRIES = (TAP_KEEP_S * 1000) / FRAME_MS;

const TAP_KEEP_TALKS = 1000;  // streams, captures and cues: the last this many

/** Push `value` on `list`, dropping the oldest beyond `most`. */
function keepLast(list, value, most = TAP_KEEP_ENTRIES) {
  list.push(value);
  if (list.length > most) list.splice(0, list.length - most);
}

function newTap() {
  return {
    played: [],  // Float32Array chunks at 48 kHz: what the player rendered (the last TAP_KEEP_S s)
    playedSamples: 0,  // the samples in `played`
    playedDropped: 0,  // the samples dropped from its start to keep it bounded
    decoded: [],  // {stream, seq, pcm}: each packet as the decoder gave it, before the player
    captured: [],  // each 20 ms frame the capture handed the encoder (Float32Array)
    capturedPackets: 0,
    encodedAt: [],  // performance.now() of each packet the encoder handed out
    captures: [],  // one per startCapture: timings and the tracks (to check they ended)
    capturePeaks: [],  // performance.now() each click entered the capture graph (latency bench)
    streams: [],  // one per startPlayback: timings and the jitter buffer's counters
    cues: [],
    decodeErrors: 0,
    keepPlayed(pcm) {
      this.played.push(pcm);
      this.playedSamples += pcm.length;
      while (this.playedSamples > TAP_KEEP_SAMPLES && this.played.length > 1) {
        const oldest = this.played.shift();
        this.playedSamples -= oldest.length;
        this.playedDropped += oldest.length;
      }
    },
    reset() {
      this.played.length = 0;
      this.playedSamples = 0;
      this.playedDropped = 0;
      this.decoded.length = 0;
      this.captured.length = 0;
      this.capturedPackets = 0;
      this.encodedAt.length = 0;
      this.captures.length = 0;
      this.capturePeaks.length = 0;
      this.streams.length = 0;
      this.cues.length = 0;
      this.decodeErrors = 0;
    },
  };
}

export class AudioEngine extends EventTarget {
  // options: target (the least the jitter buffer aims to hold, 2 = 40 ms: more when the
  // packets come with more jitter, see worklets/player.js), maxDepth (frames buffered before
  // the oldest are skipped: 15 = 300 ms; the radio's is 200 ms, but a browser's page adds
  // stalls of its own, and the frames of a burst after one are worth more kept than cut; the
  // depth is only reached after such a stall), reorderWaitMs (how long a
  // missing packet is waited for before it is given up as lost), encoder (overrides of
  // ENCODER_CONFIG), tap (true: the test tap on window.pttdTap; only for tests, never from
  // anything a visitor controls).
  constructor({ target = 2, maxDepth = 15, reorderWaitMs = 20, encoder = {}, tap = false } = {}) {
    super();
    this.tapWanted = tap === true;
    this.target = target;
    this.maxDepth = maxDepth;
    this.reorderWaitMs = reorderWaitMs;
    this.encoderConfig = {
      ...ENCODER_CONFIG,
      ...encoder,
      opus: { ...ENCODER_CONFIG.opus, ...(encoder.opus || {}) },
    };
    this.ctx = null;
    this.player = null;
    this.stream = null;  // the talk being played
    this.capture = null;  // the talk being captured
    this.tap = null;
  }

  async init() {
    if (this.ctx) return;
    if (typeof AudioEncoder === 'undefined' || typeof AudioDecoder === 'undefined') {
      throw new Error('this browser has no WebCodecs audio (AudioEncoder/AudioDecoder)');
    }
    // The lowest output latency the hardware allows, as the radio asks PortAudio for 'low'
    // latency: in headless chromium 'interactive' adds 30 ms of output buffer, 0 only 8 ms.
    const ctx = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: 0 });
    await Promise.all([
      ctx.audioWorklet.addModule(new URL('./worklets/player.js', import.meta.url)),
      ctx.audioWorklet.addModule(new URL('./worklets/capture.js', import.meta.url)),
    ]);
    if (this.tapWanted) {
      this.tap = newTap();
      globalThis.pttdTap = this.tap;
    }
    this.player = new AudioWorkletNode(ctx, 'pttd-player', {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { tap: Boolean(this.tap), frameSamples: FRAME_SAMPLES },
    });
    this.player.port.onmessage = (event) => this._fromPlayer(event.data);
    this.player.connect(ctx.destination);
    this.ctx = ctx;
  }

  _resume() {
    // A context made before any user gesture starts suspended; a press is a gesture.
    if (this.ctx && this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
  }

  _requireInit() {
    if (!this.ctx) throw new Error('the audio engine is not initialised: call init() first');
  }

  // ------------------------------------------------------------------------- playback

  startPlayback(streamId) {
    this._requireInit();
    this._resume();
    if (this.stream) this._closeStream(this.stream);
    const st = {
      id: streamId,
      decoder: null,
      firstId: null,  // the first packet id (u32), the origin of the sequence numbers
      autoSeq: 0,  // sequence numbers for packets pushed without an id
      expected: null,  // the next sequence number to decode
      pending: new Map(),  // seq -> bytes held back while a missing one may still come
      inFlight: [],  // the seqs handed to the decoder, in order, not yet decoded
      timer: null,
      closed: false,
      late: 0,
      info: null,
    };
    st.decoder = this._newDecoder(st);
    if (this.tap) {
      st.info = {
        streamId, startedAt: performance.now(), firstPushAt: null, firstDecodedAt: null,
        firstRenderedAt: null, firstPlayedAt: null, peakPlayedAt: null, outputLatencyMs: null,
        drainedAt: null,
        pushed: 0, decoded: 0, lateDropped: 0, stats: null, reason: null,
        pushedAt: [], decodedAt: [],  // performance.now() of each packet pushed and decoded
      };
      keepLast(this.tap.streams, st.info, TAP_KEEP_TALKS);
    }
    this.stream = st;
    this.player.port.postMessage({
      type: 'start', stream: streamId, target: this.target, maxDepth: this.maxDepth,
    });
  }

  // One Opus packet of the talk `streamId`. `packetId` (the Channel-API packet id, u32) is
  // optional: with it, packets are put back in order and a missing one is concealed; without
  // it they are taken in the order they come.
  pushPacket(streamId, opusBytes, packetId) {
    const st = this.stream;
    if (!st || st.id !== streamId || st.closed) return;
    let seq;
    if (packetId === undefined || packetId === null) {
      seq = st.autoSeq++;
    } else {
      if (st.firstId === null) st.firstId = packetId;
      seq = (packetId - st.firstId + U32) % U32;
      if (seq >= U32 / 2) { st.late++; return; }  // before the first one: too late
    }
    if (st.info) {
      const now = performance.now();
      st.info.pushed++;
      keepLast(st.info.pushedAt, now);
      if (st.info.firstPushAt === null) st.info.firstPushAt = now;
    }
    if (st.expected === null) st.expected = seq;
    if (seq < st.expected || st.pending.has(seq)) { st.late++; return; }
    st.pending.set(seq, opusBytes);
    this._release(st, false);
  }

  // Decode what is in order; give up on a missing packet once two later ones are here or it
  // has been waited for reorderWaitMs (the player conceals it).
  _release(st, force) {
    for (;;) {
      while (st.pending.has(st.expected)) {
        const bytes = st.pending.get(st.expected);
        st.pending.delete(st.expected);
        this._decode(st, st.expected, bytes);
        st.expected++;
      }
      if (st.pending.size === 0) {
        if (st.timer !== null) { clearTimeout(st.timer); st.timer = null; }
        return;
      }
      if (force || st.pending.size >= 2) {
        st.expected = Math.min(...st.pending.keys());
        force = false;
        continue;
      }
      if (st.timer === null) {
        st.timer = setTimeout(() => {
          st.timer = null;
          if (!st.closed) this._release(st, true);
        }, this.reorderWaitMs);
      }
      return;
    }
  }

  _newDecoder(st) {
    const decoder = new AudioDecoder({
      output: (data) => this._onDecoded(st, data),
      error: (err) => {
        // A codec that failed is closed: the next packet gets a fresh one.
        if (this.tap) this.tap.decodeErrors++;
        console.warn(`pttd audio: stream ${st.id}: ${err && err.message}`);
        if (st.decoder === decoder) {
          st.decoder = null;
          st.inFlight.length = 0;
        }
      },
    });
    decoder.configure(DECODER_CONFIG);
    return decoder;
  }

  _decode(st, seq, bytes) {
    if (!st.decoder || st.decoder.state === 'closed') {
      st.inFlight.length = 0;
      st.decoder = this._newDecoder(st);
    }
    try {
      st.inFlight.push(seq);
      st.decoder.decode(new EncodedAudioChunk({
        type: 'key', timestamp: seq * FRAME_US, duration: FRAME_US, data: bytes,
      }));
    } catch (err) {
      st.inFlight.pop();
      if (this.tap) this.tap.decodeErrors++;
      console.warn(`pttd audio: stream ${st.id}: packet not decoded: ${err && err.message}`);
    }
  }

  _onDecoded(st, data) {
    try {
      if (st.closed && st.ending !== true) return;
      const n = data.numberOfFrames;
      const pcm = new Float32Array(n);
      if (data.numberOfChannels === 1) {
        data.copyTo(pcm, { planeIndex: 0, format: 'f32-planar' });
      } else {
        const plane = new Float32Array(n);
        for (let c = 0; c < data.numberOfChannels; c++) {
          data.copyTo(plane, { planeIndex: c, format: 'f32-planar' });
          for (let i = 0; i < n; i++) pcm[i] += plane[i] / data.numberOfChannels;
        }
      }
      // Chromium numbers its outputs by the samples it has decoded, not by the chunks'
      // timestamps: a gap would not show. One output per packet, in order: the FIFO says which.
      const seq = st.inFlight.shift();
      if (seq === undefined) return;
      if (st.info) {
        const now = performance.now();
        st.info.decoded++;
        keepLast(st.info.decodedAt, now);
        if (st.info.firstDecodedAt === null) st.info.firstDecodedAt = now;
      }
      if (this.tap) keepLast(this.tap.decoded, { stream: st.id, seq, pcm: pcm.slice() });
      this.player.port.postMessage({ type: 'frame', stream: st.id, seq, pcm }, [pcm.buffer]);
    } finally {
      data.close();
    }
  }

  // The talk ended: what is buffered plays out (the player drains), then all is forgotten.
  // Resolves once the last packet is decoded and handed to the player.
  async stopPlayback(streamId) {
    const st = this.stream;
    if (!st || st.id !== streamId) return;
    this.stream = null;
    st.closed = true;
    st.ending = true;
    this._release(st, true);
    if (st.timer !== null) { clearTimeout(st.timer); st.timer = null; }
    const decoder = st.decoder;
    if (decoder && decoder.state === 'configured') {
      try { await decoder.flush(); } catch { /* closed meanwhile */ }
    }
    st.ending = false;
    this._closeDecoder(st);
    if (st.info) st.info.lateDropped = st.late;
    this.player.port.postMessage({ type: 'end', stream: st.id });
  }

  _closeStream(st) {
    // Replaced by a new talk: stop it at once.
    st.closed = true;
    st.ending = false;
    if (st.timer !== null) { clearTimeout(st.timer); st.timer = null; }
    st.pending.clear();
    this._closeDecoder(st);
    this.player.port.postMessage({ type: 'reset', reason: 'replaced' });
  }

  _closeDecoder(st) {
    if (st.decoder && st.decoder.state !== 'closed') st.decoder.close();
    st.decoder = null;
  }

  _fromPlayer(msg) {
    const info = this.tap ? this.tap.streams.findLast((s) => s.streamId === msg.stream) : null;
    switch (msg.type) {
      case 'started':
        if (info) {
          info.firstRenderedAt = performance.now();
          // When that sample reaches the speakers, on the performance.now() clock.
          info.firstPlayedAt = this._performanceTimeOf(msg.frame);
          info.outputLatencyMs = ((this.ctx.outputLatency || 0) + this.ctx.baseLatency) * 1000;
        }
        break;
      case 'tap':
        if (this.tap) this.tap.keepPlayed(msg.pcm);
        break;
      case 'peak':  // the stream's first sample at -10 dBFS or more, at the speakers
        if (info) info.peakPlayedAt = this._performanceTimeOf(msg.frame);
        break;
      case 'drained':
        if (info) {
          info.drainedAt = performance.now();
          info.stats = msg.stats;
          info.reason = msg.reason;
        }
        this.dispatchEvent(new CustomEvent('playback-ended', {
          detail: { streamId: msg.stream, reason: msg.reason, stats: msg.stats },
        }));
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------------------- capture

  // Opens the microphone and calls onPacket(Uint8Array) with each 20 ms Opus packet until
  // stopCapture. Rejects (and leaves the microphone closed) when it cannot be opened.
  async startCapture(onPacket) {
    this._requireInit();
    this._resume();
    if (this.capture) await this.stopCapture();
    const cap = {
      onPacket, stopped: false, stream: null, source: null, node: null, encoder: null,
      frames: 0, info: null,
    };
    if (this.tap) {
      cap.info = {
        startedAt: performance.now(), micOpenAt: null, firstFrameAt: null,
        firstPacketAt: null, packets: 0, tracks: [], stoppedAt: null,
      };
      keepLast(this.tap.captures, cap.info, TAP_KEEP_TALKS);
    }
    this.capture = cap;
    // The encoder is made while the microphone opens.
    cap.encoder = new AudioEncoder({
      output: (chunk) => this._onEncoded(cap, chunk),
      error: (err) => console.warn(`pttd audio: encoder: ${err && err.message}`),
    });
    cap.encoder.configure(this.encoderConfig);
    let media;
    try {
      media = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
        video: false,
      });
    } catch (err) {
      this._endCapture(cap);
      throw new Error(`the microphone could not be opened: ${err && err.message}`);
    }
    if (cap.stopped) {  // released while the microphone was opening
      for (const track of media.getTracks()) track.stop();
      if (cap.info) cap.info.tracks = media.getTracks();
      return;
    }
    cap.stream = media;
    if (cap.info) {
      cap.info.micOpenAt = performance.now();
      cap.info.tracks = media.getTracks();
    }
    cap.source = this.ctx.createMediaStreamSource(media);
    cap.node = new AudioWorkletNode(this.ctx, 'pttd-capture', {
      numberOfInputs: 1,
      numberOfOutputs: 1,  // silent, connected so that the graph pulls it
      outputChannelCount: [1],
      processorOptions: { frameSamples: FRAME_SAMPLES, tap: Boolean(this.tap) },
    });
    cap.node.port.onmessage = (event) => this._onFrame(cap, event.data);
    cap.source.connect(cap.node);
    cap.node.connect(this.ctx.destination);
  }

  // When the audio context's frame `frame` is at the speakers, on the performance.now() clock.
  _performanceTimeOf(frame) {
    const ts = this.ctx.getOutputTimestamp();
    if (!ts || !ts.performanceTime) return null;
    return ts.performanceTime + (frame / SAMPLE_RATE - ts.contextTime) * 1000;
  }

  _onFrame(cap, msg) {
    if (msg.type === 'peak' && this.tap) {
      // The graph processes a frame the output latency before it is heard: when it came in.
      const heard = this._performanceTimeOf(msg.frame);
      const latency = ((this.ctx.outputLatency || 0) + this.ctx.baseLatency) * 1000;
      if (heard !== null) keepLast(this.tap.capturePeaks, heard - latency);
      return;
    }
    if (cap.stopped || msg.type !== 'frame') return;
    if (cap.info && cap.info.firstFrameAt === null) cap.info.firstFrameAt = performance.now();
    if (this.tap) keepLast(this.tap.captured, msg.pcm.slice());
    const data = new AudioData({
      format: 'f32-planar',
      sampleRate: SAMPLE_RATE,
      numberOfFrames: msg.pcm.length,
      numberOfChannels: 1,
      timestamp: cap.frames * FRAME_US,
      data: msg.pcm,
    });
    cap.frames++;
    try {
      cap.encoder.encode(data);
    } finally {
      data.close();
    }
  }

  _onEncoded(cap, chunk) {
    const bytes = new Uint8Array(chunk.byteLength);
    chunk.copyTo(bytes);
    if (this.tap) {
      const now = performance.now();
      this.tap.capturedPackets++;
      keepLast(this.tap.encodedAt, now);
      if (cap.info) {
        cap.info.packets++;
        if (cap.info.firstPacketAt === null) cap.info.firstPacketAt = now;
      }
    }
    try {
      cap.onPacket(bytes);
    } catch (err) {
      console.warn(`pttd audio: onPacket: ${err && err.message}`);
    }
  }

  // Stops every microphone track at once (the microphone is off when this returns); the
  // returned promise resolves once the frames captured before it are encoded and handed out.
  stopCapture() {
    const cap = this.capture;
    if (!cap) return Promise.resolve();
    this.capture = null;
    return this._endCapture(cap);
  }

  async _endCapture(cap) {
    cap.stopped = true;
    if (this.capture === cap) this.capture = null;
    if (cap.stream) for (const track of cap.stream.getTracks()) track.stop();
    cap.stream = null;
    if (cap.info) cap.info.stoppedAt = performance.now();
    if (cap.node) {
      cap.node.port.postMessage({ type: 'stop' });
      cap.node.port.onmessage = null;
      cap.node.disconnect();
    }
    if (cap.source) cap.source.disconnect();
    cap.node = null;
    cap.source = null;
    const encoder = cap.encoder;
    if (encoder && encoder.state === 'configured') {
      try { await encoder.flush(); } catch { /* closed meanwhile */ }
    }
    if (encoder && encoder.state !== 'closed') encoder.close();
    cap.encoder = null;
  }

  get capturing() {
    return this.capture !== null;
  }

  // ------------------------------------------------------------------------- cues

  // Plays a cue now, mixed with whatever plays; resolves when it has played. It does not
  // touch the capture.
  playCue(name) {
    this._requireInit();
    this._resume();
    const pattern = CUES[name];
    if (!pattern) throw new Error(`unknown cue ${JSON.stringify(name)}`);
    const ctx = this.ctx;
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    const osc = ctx.createOscillator();
    osc.type = 'sine';
    osc.connect(gain);
    const t0 = ctx.currentTime + 0.005;
    let t = t0;
    // Consecutive tones form one beep: faded in at its start and out at its end only.
    pattern.forEach(([freq, ms], k) => {
      const end = t + ms / 1000;
      if (freq > 0) {
        osc.frequency.setValueAtTime(freq, t);
        if (k === 0 || pattern[k - 1][0] === 0) {
          gain.gain.setValueAtTime(0, t);
          gain.gain.linearRampToValueAtTime(CUE_LEVEL, t + CUE_FADE_S);
        }
        if (k === pattern.length - 1 || pattern[k + 1][0] === 0) {
          gain.gain.setValueAtTime(CUE_LEVEL, end - CUE_FADE_S);
          gain.gain.linearRampToValueAtTime(0, end);
        }
      }
      t = end;
    });
    if (this.tap) {
      keepLast(this.tap.cues, { name, at: performance.now(), ms: (t - t0) * 1000 }, TAP_KEEP_TALKS);
    }
    osc.start(t0);
    osc.stop(t);
    return new Promise((resolve) => {
      osc.onended = () => {
        osc.disconnect();
        gain.disconnect();
        resolve();
      };
    });
  }

  // Stops everything: capture, playback, the audio context.
  async close() {
    await this.stopCapture();
    if (this.stream) this._closeStream(this.stream);
    this.stream = null;
    if (this.ctx) await this.ctx.close();
    this.ctx = null;
  }
}
