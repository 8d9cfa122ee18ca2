// AudioWorklet: microphone audio at the context's rate -> 16 kHz PCM16 frames.
//
// The context runs at whatever rate the device uses (44.1 kHz, 48 kHz, ...),
// so this resamples with a windowed-sinc FIR: each output sample is a
// weighted sum of the input around its exact (fractional) position, and the
// sinc's cutoff sits below the 8 kHz output Nyquist, so the filter is also
// the anti-aliasing low-pass that plain sample dropping lacks.
//
// Messages to the main thread:
//   {type: "frame", pcm: Int16Array, peak}   every 100 ms of output (1600 samples)
//   {type: "flushed"}                         after a "flush" request, once the
//                                             last (shorter) frame has been posted

const OUT_RATE = 16000;
const FRAME_SAMPLES = 1600; // 100 ms at 16 kHz
const ZERO_CROSSINGS = 16;  // sinc lobes on each side: sharper cutoff for more taps
const CUTOFF = 0.9;         // low-pass edge as a fraction of the lower Nyquist (7.2 kHz here)
const MAX_PHASES = 1024;    // fractional positions get a precomputed row each

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

// Blackman window on [-1, 1]: low side lobes keep aliased energy well down.
function blackman(x) {
  return 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
}

class Resampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate; // input samples per output sample
    // Cutoff in cycles per input sample (0.5 = input Nyquist); when downsampling
    // the output Nyquist is the lower one and the filter must stop there.
    const fc = 0.5 * CUTOFF * Math.min(1, outRate / inRate);
    this.half = Math.ceil(ZERO_CROSSINGS / (2 * fc)); // taps on each side
    const taps = 2 * this.half;
    // A rational ratio L/M only ever needs L distinct fractional positions
    // (one for 48 kHz, 160 for 44.1 kHz), so those rows are exact; odd rates
    // round the position to the nearest of MAX_PHASES (< 0.1% of a sample).
    this.phases = Math.min(outRate / gcd(inRate, outRate), MAX_PHASES);
    this.table = new Float32Array((this.phases + 1) * taps);
    for (let p = 0; p <= this.phases; p++) {
      const frac = p / this.phases;
      const row = this.table.subarray(p * taps, (p + 1) * taps);
      let sum = 0;
      for (let j = 0; j < taps; j++) {
        const t = j - this.half + 1 - frac; // distance from the output position
        const x = 2 * fc * t;
        const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        row[j] = sinc * blackman(t / this.half);
        sum += row[j];
      }
      for (let j = 0; j < taps; j++) row[j] /= sum; // unity gain at DC
    }
    this.taps = taps;
    // Input history; starts with `half` zeros so the first output has its left taps.
    this.buf = new Float32Array(8192);
    this.len = this.half;
    this.pos = this.half; // position of the next output sample in `buf`
  }

  // Appends input samples; calls emit(sample) for every output sample now computable.
  push(input, emit) {
    if (this.len + input.length > this.buf.length) {
      // Drop history no future output needs, growing only if that is not enough.
      const keep = Math.floor(this.pos) - this.half + 1;
      this.buf.copyWithin(0, keep, this.len);
      this.len -= keep;
      this.pos -= keep;
      if (this.len + input.length > this.buf.length) {
        const bigger = new Float32Array(2 * (this.len + input.length));
        bigger.set(this.buf.subarray(0, this.len));
        this.buf = bigger;
      }
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    const { buf, table, taps, half, phases } = this;
    // Output at `pos` uses buf[i - half + 1 .. i + half] with i = floor(pos).
    while (Math.floor(this.pos) + half < this.len) {
      let i = Math.floor(this.pos);
      let p = Math.round((this.pos - i) * phases);
      if (p === phases) { i += 1; p = 0; }
      const row = p * taps;
      const start = i - half + 1;
      let acc = 0;
      for (let j = 0; j < taps; j++) acc += buf[start + j] * table[row + j];
      emit(acc);
      this.pos += this.step;
    }
  }

  // Zeros after the last input, so its final samples reach the output.
  drain(emit) {
    this.push(new Float32Array(this.half + Math.ceil(this.step)), emit);
  }
}

class PcmProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(sampleRate, OUT_RATE); // sampleRate: the context's, a worklet global
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
    this.peak = 0;
    this.emit = (x) => this.add(x);
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "flush") this.flush();
    };
  }

  add(x) {
    const clamped = x > 1 ? 1 : x < -1 ? -1 : x;
    const a = Math.abs(clamped);
    if (a > this.peak) this.peak = a;
    this.frame[this.filled++] = Math.round(clamped * 32767);
    if (this.filled === FRAME_SAMPLES) this.post();
  }

  post() {
    const pcm = this.frame.slice(0, this.filled);
    // Transfer the buffer: no copy on the way to the main thread.
    this.port.postMessage({ type: "frame", pcm, peak: this.peak }, [pcm.buffer]);
    this.filled = 0;
    this.peak = 0;
  }

  // Stop was pressed: send what is left as one shorter frame.
  flush() {
    this.resampler.drain(this.emit);
    if (this.filled) this.post();
    this.port.postMessage({ type: "flushed" });
  }

  process(inputs) {
    // The node is mono (channelCount 1, "explicit"), so the browser has mixed
    // a stereo device down already. No input channel: the source is gone.
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.resampler.push(channel, this.emit);
    return true;
  }
}

registerProcessor("pcm16-capture", PcmProcessor);
