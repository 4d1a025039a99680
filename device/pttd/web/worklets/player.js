// pttd player worklet: the jitter buffer and playout of one incoming talk.
//
// The main thread decodes Opus (WebCodecs AudioDecoder) and posts each packet's PCM here with
// its sequence number (the Channel-API packet id). This processor keeps them by number and
// plays them in order on the audio clock:
//
// * Start: once `target` frames are buffered (2 = 40 ms by default), or the first one has
//   waited `target` frame durations, or the talk has ended (a short talk still plays).
// * Loss: when the frame due is missing but a later one is here, it is lost: a concealment
//   frame is played (the last frame mirrored in time, fading out; the next real frame fades
//   in over 2 ms). WebCodecs cannot decode a packet's in-band FEC data, so there is no FEC
//   recovery in the browser.
// * Late: a frame whose slot was played is dropped; so is a second copy.
// * Late frame: nothing buffered at all: the frame due is probably late. Up to `maxHold` (3)
//   concealment frames are played while it is waited for (playout holds, so the buffer grows
//   by a frame each: the radio's jitter buffer does the same).
// * Underrun: still nothing: silence, and buffer afresh to one frame more than before (up to
//   maxDepth - 1) for the rest of the talk.
// * Depth: more than `maxDepth` frames buffered (a burst after a stall): the oldest are
//   skipped so that latency stays low.
// * End: after 'end' what is buffered plays out, then everything is forgotten ('drained').
//
// Privacy: nothing is kept once the talk is drained or reset. With the test tap on (the page
// was opened with ?tap=1) the rendered samples are also posted back for the tests; never
// otherwise.

const FADE_IN = 96;  // 2 ms at 48 kHz
const TAP_CHUNK = 4800;  // 100 ms
const PEAK_LEVEL = 0.3;  // -10 dBFS: the tap marks the first rendered sample this loud (latency)

class PlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.tap = Boolean(opts.tap);
    this.frameSamples = opts.frameSamples || 960;
    this.target = 2;
    this.maxDepth = 8;
    this.maxHold = 3;  // concealment frames played for a late frame before it is an underrun
    this.clear();
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  clear() {
    this.stream = null;
    this.frames = new Map();  // seq -> Float32Array
    this.next = null;  // the seq due next
    this.cur = null;  // the frame being played
    this.pos = 0;
    this.playing = false;
    this.started = false;
    this.ended = false;
    this.waitingSince = null;  // currentFrame when buffering began with something buffered
    this.last = null;  // the last real frame (for concealment)
    this.concealRun = 0;
    this.stats = { target: this.target, frames: 0, played: 0, concealed: 0, late: 0,
      duplicate: 0, skipped: 0, held: 0, underruns: 0 };
    this.tapBuf = this.tap ? new Float32Array(TAP_CHUNK) : null;
    this.tapFill = 0;
    this.peakSent = false;
  }

  onMessage(msg) {
    switch (msg.type) {
      case 'start':
        if (this.stream !== null) this.finish('replaced');
        this.clear();
        this.stream = msg.stream;
        this.target = msg.target || 2;
        if (msg.maxDepth) this.maxDepth = Math.max(msg.maxDepth, this.target + 1);
        break;
      case 'frame':
        if (msg.stream === this.stream) this.addFrame(msg.seq, msg.pcm);
        break;
      case 'end':
        if (msg.stream !== this.stream) break;
        this.ended = true;
        if (!this.playing && this.frames.size === 0 && !this.cur) this.finish('ended');
        break;
      case 'reset':
        if (this.stream !== null) this.finish(msg.reason || 'reset');
        this.clear();
        break;
      default:
        break;
    }
  }

  addFrame(seq, pcm) {
    this.stats.frames++;
    if (this.next !== null && seq < this.next) { this.stats.late++; return; }
    if (this.frames.has(seq)) { this.stats.duplicate++; return; }
    this.frames.set(seq, pcm);
    if (!this.playing && this.waitingSince === null) this.waitingSince = currentFrame;
    if (this.frames.size > this.maxDepth) {
      // Too deep (a burst after a stall): skip the oldest down to the target.
      const seqs = [...this.frames.keys()].sort((a, b) => a - b);
      for (const old of seqs.slice(0, seqs.length - this.target)) {
        this.frames.delete(old);
        this.stats.skipped++;
      }
      this.next = seqs[seqs.length - this.target];
    }
  }

  oldestSeq() {
    let min = null;
    for (const seq of this.frames.keys()) if (min === null || seq < min) min = seq;
    return min;
  }

  conceal() {
    const last = this.last;
    const n = last ? last.length : this.frameSamples;
    const out = new Float32Array(n);
    if (last) {
      const gain = Math.pow(0.5, this.concealRun);
      for (let i = 0; i < n; i++) out[i] = last[n - 1 - i] * gain * (1 - i / n);
    }
    this.concealRun++;
    return out;
  }

  shouldStart() {
    if (this.frames.size === 0) return false;
    if (this.ended || this.frames.size >= this.target) return true;
    const waited = currentFrame - this.waitingSince;
    return waited >= this.target * this.frameSamples;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    if (this.stream === null) return true;
    let o = 0;
    if (!this.playing && this.shouldStart()) {
      this.playing = true;
      this.waitingSince = null;
      const oldest = this.oldestSeq();
      if (this.next === null || oldest - this.next > this.maxDepth) this.next = oldest;
    }
    while (this.playing && o < n) {
      if (this.cur && this.pos < this.cur.length) {
        const take = Math.min(n - o, this.cur.length - this.pos);
        if (!this.started) {
          this.started = true;
          this.port.postMessage({ type: 'started', stream: this.stream, frame: currentFrame + o });
        }
        out.set(this.cur.subarray(this.pos, this.pos + take), o);
        o += take;
        this.pos += take;
        continue;
      }
      this.cur = null;
      this.pos = 0;
      const frame = this.frames.get(this.next);
      if (frame) {
        this.frames.delete(this.next);
        this.next++;
        if (this.concealRun > 0) {
          const k = Math.min(FADE_IN, frame.length);
          for (let i = 0; i < k; i++) frame[i] *= i / k;
        }
        this.concealRun = 0;
        this.last = frame;
        this.cur = frame;
        this.stats.played++;
      } else if (this.frames.size > 0) {
        this.next++;
        this.cur = this.conceal();
        this.stats.concealed++;
      } else if (this.ended) {
        this.tapWrite(out, o);
        this.finish('ended');
        return true;
      } else if (this.concealRun < this.maxHold && this.last) {
        // Nothing buffered: the frame due is probably only late. Conceal and hold (do not
        // advance): the buffer grows by a frame, as the radio's does.
        this.cur = this.conceal();
        this.stats.held++;
      } else {
        // Underrun: the network is more jittery than the buffer; buffer one frame deeper.
        this.playing = false;
        this.stats.underruns++;
        this.target = Math.min(this.target + 1, this.maxDepth - 1);
      }
    }
    this.tapWrite(out, n);
    return true;
  }

  tapWrite(out, upto) {
    if (!this.tap || !this.started) return;
    for (let i = 0; i < upto; i++) {
      if (!this.peakSent && Math.abs(out[i]) >= PEAK_LEVEL) {
        this.peakSent = true;  // sample i of this quantum: context frame currentFrame + i
        this.port.postMessage({ type: 'peak', stream: this.stream, frame: currentFrame + i });
      }
      this.tapBuf[this.tapFill++] = out[i];
      if (this.tapFill === TAP_CHUNK) this.tapFlush();
    }
  }

  tapFlush() {
    if (!this.tap || this.tapFill === 0) return;
    const pcm = this.tapBuf.slice(0, this.tapFill);
    this.port.postMessage({ type: 'tap', stream: this.stream, pcm }, [pcm.buffer]);
    this.tapFill = 0;
  }

  finish(reason) {
    this.tapFlush();
    this.stats.target = this.target;
    this.port.postMessage({ type: 'drained', stream: this.stream, reason, stats: this.stats });
    this.clear();
  }
}

registerProcessor('pttd-player', PlayerProcessor);
