// pttd capture worklet: the microphone's samples, mixed down to mono, cut into frames of
// `frameSamples` (960: 20 ms at 48 kHz) and posted to the main thread (the buffer transferred).
// It keeps nothing but the frame being filled, and drops it on 'stop' (a partial frame is
// never sent: the device does the same when its button is released).
// With the test tap on, it also marks each sample at -10 dBFS or more that follows 100 ms
// without one (a click of the latency bench's microphone), by its context frame.

const PEAK_LEVEL = 0.3;
const PEAK_GAP = 4800;  // 100 ms

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.frameSamples = opts.frameSamples || 960;
    this.tap = Boolean(opts.tap);
    this.lastPeak = -Infinity;
    this.frame = new Float32Array(this.frameSamples);
    this.filled = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === 'stop') {
        this.running = false;
        this.frame.fill(0);
        this.filled = 0;
      }
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;  // not connected yet
    const channels = input.length;
    const length = input[0].length;
    for (let i = 0; i < length; i++) {
      let sum = 0;
      for (let c = 0; c < channels; c++) sum += input[c][i];
      const sample = sum / channels;
      if (this.tap && Math.abs(sample) >= PEAK_LEVEL) {
        if (currentFrame + i - this.lastPeak >= PEAK_GAP) {
          this.port.postMessage({ type: 'peak', frame: currentFrame + i });
        }
        this.lastPeak = currentFrame + i;
      }
      this.frame[this.filled++] = sample;
      if (this.filled === this.frameSamples) {
        // currentFrame: the context's clock at the start of this quantum (for latency figures)
        this.port.postMessage({ type: 'frame', pcm: this.frame, at: currentFrame + i + 1 },
          [this.frame.buffer]);
        this.frame = new Float32Array(this.frameSamples);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor('pttd-capture', CaptureProcessor);
