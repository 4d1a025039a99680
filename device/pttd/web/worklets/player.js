// pttd player worklet: the jitter buffer and playout of one incoming talk.
//
// The main thread decodes Opus (WebCodecs AudioDecoder) and posts each packet's PCM here with
// its sequence number (the Channel-API packet id). This processor keeps them by number and
// plays them in order on the audio clock. It follows the radio's jitter buffer
// (pttd.radio.audio.jitter):
//
// * Jitter: each frame's arrival on the audio clock minus its sequence number times the frame
//   duration is its relative transit time; over the last `jitterWindow` (50, one second) the
//   95th percentile minus the minimum is the jitter estimate: how much later than the earliest
//   frames a frame can come. The target depth is one frame plus enough to cover it, never below
//   the configured `target` (2 = 40 ms) nor above maxDepth - 1. On a quiet network it stays at
//   `target`; after late frames it grows, and it comes back as they leave the window.
// * Start: once the target depth is buffered, or the first frame has waited that many frame
//   durations, or the talk has ended (a short talk still plays).
// * Loss: when the frame due is missing but a later one is here, it is lost: a concealment
//   frame is played (the last frame mirrored in time, fading out; the next real frame fades
//   in over 2 ms). WebCodecs cannot decode a packet's in-band FEC data, so there is no FEC
//   recovery in the browser.
// * Late: a frame whose slot was played is dropped; so is a second copy.
// * Late frame: nothing buffered at all: the frame due is probably late. Up to `maxHold` (5,
//   the radio's) concealment frames are played while it is waited for (playout holds, so the
//   buffer grows by a frame each: the radio's jitter buffer does the same). When it comes, the
//   depth it took becomes the target's least for the rest of the talk (at most 4 frames above
//   the configured target): unlike the radio, the browser does not shrink back after a late
//   frame, since every hold is a glitch and a delay that came once tends to come again (a busy
//   page, a phone's Wi-Fi); the 20 ms per held frame are the price. The next talk starts anew.
// * Underrun: still nothing: silence, and buffer afresh; the target is one frame deeper for the
//   rest of the talk (up to maxDepth - 1).
// * Depth: more than `maxDepth` frames buffered (a burst after a stall): the oldest beyond
//   maxDepth are skipped (no more), so that latency stays bounded.
// * Shrink: every `shrinkWindow` (25) frames played, if the buffer stayed deeper than the target
//   all through the window, one frame is to be skipped: after a hold or a burst the latency
//   comes back to the target a frame at a time instead of in one cut of many frames. Unlike
//   the radio, the frame skipped is the middle one of three quiet frames (peak below -40 dBFS:
//   the one played before it, it, the one after it), a pause between words: cutting 20 ms out
//   of a word, or out of a short dip inside one, is heard (on the speech sample one such cut
//   costs up to 0.7 PESQ, more than a whole concealed frame); skipping inside a pause of 60 ms
//   or more costs nothing measurable. A talk without such a pause keeps the extra depth (at
//   most maxDepth).
// * End: after 'end' what is buffered plays out (no holding, no skipping), then everything is
//   forgotten ('drained').
//
// Privacy: nothing is kept once the talk is drained or reset. With the test tap on (the
// AudioEngine's option `tap`, only for tests) the rendered samples are also posted back for the
// tests; never otherwise.

const FADE_IN = 96;  // 2 ms at 48 kHz
const TAP_CHUNK = 4800;  // 100 ms
const PEAK_LEVEL = 0.3;  // -10 dBFS: the tap marks the first rendered sample this loud (latency)
const JITTER_QUANTILE = 0.95;
const QUIET_PEAK = 0.01;  // -40 dBFS: a frame this quiet may be skipped to shrink the buffer

function quiet(frame) {
  for (let i = 0; i < frame.length; i++) {
    if (frame[i] > QUIET_PEAK || frame[i] < -QUIET_PEAK) return false;
  }
  return true;
}

class PlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.tap = Boolean(opts.tap);
    this.frameSamples = opts.frameSamples || 960;
    this.baseTarget = 2;  // the configured target: the least the buffer aims at
    this.maxDepth = 15;
    this.maxHold = 5;  // concealment frames played for a late frame before it is an underrun
    this.jitterWindow = 50;  // arrivals the jitter estimate looks at (one second of frames)
    this.shrinkWindow = 25;  // frames played between looks at whether to shrink
    this.maxLateDepth = 4;  // frames a talk's late frames may add to the target (80 ms)
    this.clear();
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  clear() {
    this.stream = null;
    this.frames = new Map();  // seq -> Float32Array
    this.newest = null;  // the newest seq buffered or played
    this.next = null;  // the seq due next
    this.cur = null;  // the frame being played
    this.pos = 0;
    this.playing = false;
    this.started = false;
    this.ended = false;
    this.waitingSince = null;  // currentFrame when buffering began with something buffered
    this.last = null;  // the last real frame (for concealment)
    this.lastQuiet = false;  // whether it was quiet (see shrink)
    this.concealRun = 0;
    this.holdRun = 0;  // frames held in a row while waiting for a late frame
    this.floor = this.baseTarget;  // the target's least: the configured one, +1 per underrun
    this.target = this.baseTarget;
    this.transits = [];  // relative transit times (samples) of the last jitterWindow arrivals
    this.jitter = 0;  // samples
    this.windowPops = 0;
    this.windowMin = Infinity;
    this.shrinkDue = false;  // the buffer is deeper than it needs: skip the next quiet frame
    this.stats = { target: this.target, maxTarget: this.target, jitterMs: 0, frames: 0,
      played: 0, concealed: 0, late: 0, duplicate: 0, skipped: 0, shrunk: 0, held: 0,
      underruns: 0 };
    this.tapBuf = this.tap ? new Float32Array(TAP_CHUNK) : null;
    this.tapFill = 0;
    this.peakSent = false;
  }

  onMessage(msg) {
    switch (msg.type) {
      case 'start':
        if (this.stream !== null) this.finish('replaced');
        this.baseTarget = msg.target || 2;
        if (msg.maxDepth) this.maxDepth = Math.max(msg.maxDepth, this.baseTarget + 1);
        this.clear();
        this.stream = msg.stream;
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
    this.measure(seq);
    this.frames.set(seq, pcm);
    if (this.newest === null || seq > this.newest) this.newest = seq;
    if (!this.playing && this.waitingSince === null) this.waitingSince = currentFrame;
    const start = this.next !== null ? this.next : this.oldestSeq();
    if (this.newest - start + 1 > this.maxDepth) {
      // Too deep (a burst after a stall): skip what lies more than maxDepth behind the newest.
      const keep = this.newest - this.maxDepth + 1;
      for (const old of [...this.frames.keys()]) {
        if (old < keep) {
          this.frames.delete(old);
          this.stats.skipped++;
        }
      }
      if (this.next !== null) this.next = keep;
    }
  }

  // The jitter estimate and the target depth it asks for (see the top of the file).
  measure(seq) {
    const transits = this.transits;
    transits.push(currentFrame - seq * this.frameSamples);
    if (transits.length > this.jitterWindow) transits.shift();
    if (transits.length < 2) return;
    const sorted = transits.slice().sort((a, b) => a - b);
    const high = sorted[Math.round(JITTER_QUANTILE * (sorted.length - 1))];
    this.jitter = high - sorted[0];
    this.retarget();
  }

  retarget() {
    const wanted = 1 + Math.ceil(this.jitter / this.frameSamples - 1e-9);
    this.target = Math.min(Math.max(this.floor, wanted), this.maxDepth - 1);
    if (this.target > this.stats.maxTarget) this.stats.maxTarget = this.target;
  }

  // Frames buffered ahead of playout, gaps counted.
  depth() {
    if (this.frames.size === 0 || this.newest === null || this.next === null) return 0;
    return Math.max(0, this.newest - this.next + 1);
  }

  // Before each slot: every shrinkWindow slots, a shrink is due when the buffer stayed deeper
  // than the target all through the window (as the radio's jitter buffer decides); it is done
  // on the next quiet frame due, while the buffer is still deeper than the target.
  shrink() {
    const depth = this.depth();
    if (depth < this.windowMin) this.windowMin = depth;
    if (++this.windowPops >= this.shrinkWindow) {
      if (this.windowMin > this.target) this.shrinkDue = true;
      this.windowPops = 0;
      this.windowMin = Infinity;
    }
    if (!this.shrinkDue || this.ended) return;
    if (depth <= this.target) {
      this.shrinkDue = false;
      return;
    }
    const frame = this.frames.get(this.next);
    const after = this.frames.get(this.next + 1);
    if (this.lastQuiet && this.concealRun === 0 && frame && after && quiet(frame) && quiet(after)) {
      this.frames.delete(this.next);
      this.next++;
      this.stats.skipped++;
      this.stats.shrunk++;
      this.shrinkDue = false;
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
      this.windowPops = 0;
      this.windowMin = Infinity;
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
      this.shrink();
      const frame = this.frames.get(this.next);
      if (frame) {
        this.frames.delete(this.next);
        this.next++;
        if (this.holdRun > 0) {
          // A late frame came after holding: the buffer grew by the frames held. Keep that
          // depth for the rest of the talk (up to maxLateDepth more than the configured
          // target), so that the next delay as long is absorbed without a glitch.
          const kept = Math.min(this.target + this.holdRun, this.baseTarget + this.maxLateDepth);
          this.floor = Math.max(this.floor, kept);
          this.retarget();
          this.holdRun = 0;
        }
        if (this.concealRun > 0) {
          const k = Math.min(FADE_IN, frame.length);
          for (let i = 0; i < k; i++) frame[i] *= i / k;
        }
        this.concealRun = 0;
        this.last = frame;
        this.lastQuiet = quiet(frame);
        this.cur = frame;
        this.stats.played++;
      } else if (this.frames.size > 0) {
        this.next++;
        this.cur = this.conceal();
        this.stats.concealed++;
        this.holdRun = 0;
      } else if (this.ended) {
        this.tapWrite(out, o);
        this.finish('ended');
        return true;
      } else if (this.concealRun < this.maxHold && this.last) {
        // Nothing buffered: the frame due is probably only late. Conceal and hold (do not
        // advance): the buffer grows by a frame, as the radio's does.
        this.cur = this.conceal();
        this.stats.held++;
        this.holdRun++;
      } else {
        // Underrun: the network is more jittery than the buffer; buffer one frame deeper.
        this.playing = false;
        this.holdRun = 0;
        this.stats.underruns++;
        this.floor = Math.min(this.floor + 1, this.maxDepth - 1);
        this.retarget();
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
    this.stats.jitterMs = Math.round((this.jitter / sampleRate) * 1000 * 10) / 10;
    this.port.postMessage({ type: 'drained', stream: this.stream, reason, stats: this.stats });
    this.clear();
  }
}

registerProcessor('pttd-player', PlayerProcessor);
