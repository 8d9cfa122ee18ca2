// woasr microphone page: microphone -> 16 kHz PCM16 (pcm-worklet.js) -> WebSocket
// /v1/stream -> partials and finals on screen. No framework, no build step.
"use strict";

const SAMPLE_RATE = 16000;
const SAMPLES_PER_MS = SAMPLE_RATE / 1000;
const MAX_UNCONFIRMED = 30 * SAMPLE_RATE; // audio kept for a resend: 30 s, then the oldest goes
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;
const CLOSE_TIMEOUT_MS = 30000; // after {"type":"close"}, how long the last finals may take
const PAUSE_NEW_LINE_MS = 2000;

const $ = (id) => document.getElementById(id);
const ui = {
  toggle: $("toggle"), status: $("status"), detail: $("detail"), error: $("error"),
  finals: $("finals"), partial: $("partial"), empty: $("empty"), meta: $("meta"), level: $("level"),
};

const STATUS_LABELS = {
  idle: "ready", connecting: "connecting", live: "live", reconnecting: "reconnecting",
  stopping: "finishing", stopped: "stopped",
};

// What the page shows, also read by tests (tests/test_browser.py): finals carry
// times on the recording's clock, so they keep increasing across reconnects.
const view = (window.woasr = {
  status: "idle",
  finals: [],       // {text, beg_ms, end_ms, session}
  partial: "",
  partialsSeen: 0,  // partial messages with text, over the whole page's life
  sessions: 0,      // server sessions that got as far as streaming audio
  resumes: 0,       // times a dropped session was resumed on a new connection
  redirects: 0,     // resumes sent on to the front-end process that holds the session (resume_port)
  errors: [],       // "code: message" strings, from the server or the page
  sampleRate: null, // the AudioContext's rate, resampled from
  capturedMs: 0,    // audio captured by the current recording
  lostMs: 0,        // audio of this recording dropped while the server stayed away
});

let recording = null; // the current Recording, from Start until it has stopped

// -- display ------------------------------------------------------------------

function setStatus(status, detail = "") {
  view.status = status;
  ui.status.textContent = STATUS_LABELS[status];
  ui.status.dataset.status = status;
  ui.detail.textContent = detail;
  const busy = status === "connecting" || status === "live" || status === "reconnecting";
  ui.toggle.textContent = busy ? "Stop" : status === "stopping" ? "Finishing…" : "Start";
  ui.toggle.dataset.action = busy ? "stop" : "start";
  ui.toggle.disabled = status === "stopping";
}

function showError(text) {
  view.errors.push(text);
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

// 3250 -> "0:03.2"; hours only when there are some.
function formatTime(ms) {
  const tenths = Math.max(0, Math.floor(ms / 100));
  const seconds = Math.floor(tenths / 10);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor(seconds / 60) % 60;
  const s = String(seconds % 60).padStart(2, "0");
  const head = h ? `${h}:${String(m).padStart(2, "0")}` : String(m);
  return `${head}:${s}.${tenths % 10}`;
}

// Follow new text only if the reader has not scrolled up to read something.
function keepScrolled(update) {
  const page = document.scrollingElement;
  const atBottom = page.scrollHeight - page.scrollTop - page.clientHeight < 80;
  update();
  if (atBottom) page.scrollTop = page.scrollHeight;
}

// Finals flow as text; a new line starts after a sentence or a pause, so the
// transcript reads like prose and each line starts with its time.
function addFinal(final) {
  const previous = view.finals[view.finals.length - 1];
  view.finals.push(final);
  keepScrolled(() => {
    let line = ui.finals.lastElementChild;
    const sentenceEnded = !previous || /[.?!…]["')\]]*$/.test(previous.text);
    const paused = previous && final.beg_ms - previous.end_ms > PAUSE_NEW_LINE_MS;
    if (!line || !line.classList.contains("line") || sentenceEnded || paused) {
      line = document.createElement("p");
      line.className = "line";
      ui.finals.append(line);
    }
    const item = document.createElement("span");
    item.className = "final";
    item.dataset.begMs = final.beg_ms;
    item.dataset.endMs = final.end_ms;
    const time = document.createElement("time");
    time.textContent = `[${formatTime(final.beg_ms)}]`;
    item.append(time, "\u00a0", final.text, " "); // the time stays with its first word
    line.append(item);
    ui.empty.hidden = true;
  });
}

// Between two recordings, whose times both start at 0:00.
function addBreak() {
  const item = document.createElement("p");
  item.className = "break";
  item.textContent = "new recording";
  ui.finals.append(item);
}

function showPartial(text) {
  view.partial = text;
  if (text) view.partialsSeen += 1;
  keepScrolled(() => { ui.partial.textContent = text; });
}

function showLevel(peak) {
  // dB scale so speech moves the bar visibly: -60 dBFS empty, 0 dBFS full.
  const db = 20 * Math.log10(Math.max(peak, 1e-6));
  ui.level.style.width = `${Math.min(100, Math.max(0, (db + 60) / 60 * 100)).toFixed(0)}%`;
}

function socketUrl(port) {
  // Relative to the page, so it also works behind a proxy path; wss under https. `port`: a
  // front-end process's own port, where a session of it is resumed (woasr serve --processes).
  const url = new URL("v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (port) url.port = String(port);
  // A server with authentication: open the page as /?token=..., the socket carries it on
  // (a browser cannot set an Authorization header on a WebSocket).
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url.href;
}

// -- capture --------------------------------------------------------------------

class Microphone {
  // Opens the device and starts posting 100 ms Int16Array frames to onFrame.
  async open(onFrame, onEnded) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("the microphone needs a secure page: open it over https or on localhost");
    }
    // Made before any await, so it counts as started by the click (autoplay rules).
    // No sampleRate option: the device's own rate, resampled in the worklet.
    this.context = new AudioContext();
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        // Raw audio: the browser's voice processing hurts recognition more than it helps.
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      await this.context.audioWorklet.addModule("static/pcm-worklet.js");
      this.source = this.context.createMediaStreamSource(this.stream);
      this.node = new AudioWorkletNode(this.context, "pcm16-capture", {
        numberOfInputs: 1, numberOfOutputs: 0,
        channelCount: 1, channelCountMode: "explicit", channelInterpretation: "speakers", // mix to mono
      });
      this.node.port.onmessage = ({ data }) => {
        if (data.type === "frame") onFrame(data.pcm, data.peak);
        else if (data.type === "flushed" && this.flushed) this.flushed();
      };
      this.source.connect(this.node);
      this.stream.getAudioTracks()[0].addEventListener("ended", onEnded);
      await this.context.resume();
      view.sampleRate = this.context.sampleRate;
    } catch (err) {
      this.close();
      throw err;
    }
  }

  // Stop capturing: the worklet posts its last, shorter frame, then the device is released.
  async stop() {
    if (this.node) {
      await new Promise((resolve) => {
        this.flushed = resolve;
        this.node.port.postMessage({ type: "flush" });
        setTimeout(resolve, 1000); // a closed context never answers
      });
    }
    this.close();
  }

  close() {
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    if (this.source) this.source.disconnect();
    if (this.node) this.node.port.onmessage = null;
    if (this.context && this.context.state !== "closed") this.context.close();
    this.stream = this.source = this.node = null;
  }
}

// -- one recording: Start .. stopped, over one or more WebSocket sessions --------------

// Audio is kept until a final covers it. Sample positions below are on the
// recording's clock (samples since Start); each session's own clock starts at
// `base`, where its first audio came from, so its ms convert with `base`.
class Recording {
  constructor() {
    this.mic = new Microphone();
    this.frames = [];     // {at, pcm}: contiguous audio no final has covered yet
    this.captured = 0;    // samples captured so far
    this.base = 0;        // recording sample where the current session's audio starts
    this.sendHead = 0;    // recording sample up to which the current session has the audio
    this.ws = null;
    this.streaming = false; // the socket takes audio (after "configured")
    this.closeSent = false;
    this.sessions = 0;      // sessions of this recording that streamed audio
    this.session = null;    // {id, token, lastSeq} of the server session, to resume it after a drop
    this.fresh = null;      // the ready of a connection that is trying to resume
    this.resumes = 0;       // sessions resumed after a dropped connection
    this.finals = 0;        // finals this recording got
    this.stopping = false;
    this.captureDone = false;
    this.lastTry = false;   // Stop while the server was away: one more connection for the rest
    this.backoff = BACKOFF_FIRST_MS;
    this.retryTimer = null;
    this.closeTimer = null;
    this.wakeLock = null;
    view.capturedMs = 0;
    view.lostMs = 0;
  }

  async start() {
    setStatus("connecting", "opening the microphone…");
    ui.toggle.disabled = true; // a Stop in the middle of opening would race it
    try {
      await this.mic.open((pcm, peak) => this.onFrame(pcm, peak), () => this.onDeviceGone());
    } finally {
      ui.toggle.disabled = false;
    }
    if (view.finals.length) addBreak(); // times restart with each recording
    this.holdScreen();
    this.connect();
  }

  // -- audio in ----------------------------------------------------------------

  onFrame(pcm, peak) {
    this.frames.push({ at: this.captured, pcm });
    this.captured += pcm.length;
    view.capturedMs = this.captured / SAMPLES_PER_MS;
    // Bounded memory: past 30 s the oldest audio goes. If it was never sent,
    // it is lost; the clock stays right because every frame keeps its position.
    while (this.captured - this.frames[0].at > MAX_UNCONFIRMED) {
      const dropped = this.frames.shift();
      if (dropped.at >= this.sendHead || !this.streaming) view.lostMs += dropped.pcm.length / SAMPLES_PER_MS;
    }
    showLevel(peak);
    this.pump();
  }

  // Send every frame the current session does not have yet.
  pump() {
    if (!this.streaming || this.closeSent) return;
    let i = this.frames.length;
    while (i > 0 && this.frames[i - 1].at >= this.sendHead) i -= 1;
    for (; i < this.frames.length; i++) {
      const { at, pcm } = this.frames[i];
      // Int16Array bytes are little-endian on every platform browsers run on.
      this.ws.send(pcm);
      this.sendHead = at + pcm.length;
    }
  }

  // A final covers the session's audio up to end_ms: that part never needs resending.
  confirm(endMs) {
    const cut = this.base + Math.round(endMs * SAMPLES_PER_MS);
    while (this.frames.length && this.frames[0].at + this.frames[0].pcm.length <= cut) this.frames.shift();
    const first = this.frames[0];
    if (first && first.at < cut) {
      first.pcm = first.pcm.subarray(cut - first.at);
      first.at = cut;
    }
  }

  // -- connection --------------------------------------------------------------

  connect(port) {
    this.retryTimer = null;
    this.streaming = false;
    this.closeSent = false;
    this.redirected = Boolean(port);
    if (!this.stopping) setStatus(this.sessions ? "reconnecting" : "connecting", "connecting to the server…");
    const ws = new WebSocket(socketUrl(port));
    this.ws = ws;
    // Handlers check `ws` so a late event from an old socket changes nothing.
    ws.onmessage = (event) => { if (ws === this.ws) this.onMessage(event.data); };
    ws.onclose = (event) => { if (ws === this.ws) this.onClose(event); };
  }

  onMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // the server only sends JSON text
    }
    switch (message.type) {
      case "ready":
        if (message.sample_rate !== SAMPLE_RATE) {
          showError(`server wants ${message.sample_rate} Hz audio; this page sends ${SAMPLE_RATE} Hz`);
        }
        ui.meta.textContent = [message.model, message.language, message.session_id].filter(Boolean).join(" · ");
        this.fresh = { id: message.session_id, token: message.resume_token || null, lastSeq: -1 };
        if (this.session && this.session.token) {
          // A dropped session: ask for it back; "resumed" or "resume_failed" answers.
          const { id, token, lastSeq } = this.session;
          this.ws.send(JSON.stringify({ type: "resume", session_id: id, token, last_seq: lastSeq }));
        } else {
          this.configure();
        }
        break;
      case "resumed":
        // The same session goes on: resend only what it did not receive.
        this.fresh = null;
        this.resumes += 1;
        view.resumes += 1;
        this.resumeStreaming(message.resume_from_sample);
        break;
      case "configured":
        this.startStreaming();
        break;
      case "partial":
        showPartial(message.text || "");
        break;
      case "final":
        if (typeof message.seq === "number") {
          if (message.seq <= this.session.lastSeq) break; // replayed twice: already shown
          this.session.lastSeq = message.seq;
        }
        addFinal({
          text: (message.text || "").trim(),
          beg_ms: this.base / SAMPLES_PER_MS + message.beg_ms,
          end_ms: this.base / SAMPLES_PER_MS + message.end_ms,
          session: view.sessions,
        });
        this.finals += 1;
        this.confirm(message.end_ms);
        break;
      case "error":
        if (message.code === "resume_failed" && this.fresh && message.resume_port && !this.redirected) {
          // The session lives in another front-end process: resume it on that process's own port.
          const old = this.ws;
          view.redirects += 1;
          this.connect(message.resume_port);
          old.close(1000);
          break;
        }
        if (message.code === "resume_failed" && this.fresh) {
          // The server no longer holds the session (restarted, or too long away): go on
          // as the new session; the audio no final covered is sent to it again.
          this.session = null;
          this.configure();
          break;
        }
        showError(`server: ${message.code}: ${message.message}`);
        // A server that refuses the config still transcribes, without partials.
        if (!this.streaming && !this.closeSent) this.startStreaming();
        break;
      default:
        break; // "flushed" and anything newer: nothing to show
    }
  }

  configure() {
    // A new session: options must come before the first audio.
    this.session = this.fresh;
    this.fresh = null;
    this.ws.send(JSON.stringify({ type: "config", partials: true }));
  }

  resumeStreaming(fromSample) {
    this.streaming = true;
    this.backoff = BACKOFF_FIRST_MS;
    this.sendHead = this.base + fromSample; // the server holds everything before
    this.pump();
    if (this.captureDone) this.sendClose();
    else if (!this.stopping) setStatus("live", `listening · ${view.sampleRate / 1000} kHz microphone, sent at 16 kHz`);
  }

  startStreaming() {
    if (this.streaming) return;
    this.streaming = true;
    this.backoff = BACKOFF_FIRST_MS;
    this.sessions += 1;
    view.sessions += 1;
    // The new session's audio starts with the oldest unconfirmed frame: what the
    // last session had after its last final, then what was captured meanwhile.
    this.base = this.frames.length ? this.frames[0].at : this.captured;
    this.sendHead = this.base;
    this.pump();
    if (this.captureDone) this.sendClose();
    else if (!this.stopping) setStatus("live", `listening · ${view.sampleRate / 1000} kHz microphone, sent at 16 kHz`);
  }

  sendClose() {
    this.pump();
    this.ws.send(JSON.stringify({ type: "close" }));
    this.closeSent = true;
    // The server answers with the last finals and closes; do not wait forever.
    this.closeTimer = setTimeout(() => this.ws.close(), CLOSE_TIMEOUT_MS);
  }

  onClose(event) {
    const hadSession = this.streaming;
    this.streaming = false;
    showPartial(""); // a partial belongs to its session; the next one redoes that audio
    if (event.code === 1008) {
      // Refused for good (a missing or wrong token): retrying cannot help.
      this.stopping = true;
      this.mic.stop();
      this.releaseScreen();
      return this.finish(`the server refused this page: ${event.reason || "policy"}`);
    }
    if (this.stopping) {
      if (this.closeSent && (event.code === 1000 || this.lastTry || !this.session)) {
        return this.finish(event.code === 1000 ? "" : `connection ended with code ${event.code}`);
      }
      if (!this.lastTry) {
        this.lastTry = true;
        return this.connect();
      }
      return this.finish("the server is not reachable");
    }
    // Dropped while recording: keep capturing, try again after a growing pause.
    const why = hadSession ? `connection lost (code ${event.code})` : "server not reachable";
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    setStatus("reconnecting", `${why}; retrying in ${(delay / 1000).toFixed(1)} s`);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  // -- stopping ----------------------------------------------------------------

  async stop() {
    if (this.stopping) return;
    this.stopping = true;
    setStatus("stopping", "sending the last audio…");
    await this.mic.stop(); // its last frame arrives through onFrame first
    this.captureDone = true;
    this.releaseScreen();
    if (this.streaming) {
      this.sendClose();
    } else if (this.retryTimer !== null) {
      // Between retries: one last attempt now for the audio still queued.
      clearTimeout(this.retryTimer);
      this.lastTry = true;
      this.connect();
    }
    // Otherwise a connection is opening, and startStreaming sends the close.
  }

  finish(problem) {
    clearTimeout(this.closeTimer);
    clearTimeout(this.retryTimer);
    if (problem) {
      // Without a close sent, what no final covered never got its transcript.
      const unsent = this.closeSent || !this.frames.length ? 0 : this.captured - this.frames[0].at;
      showError(unsent ? `${problem}; the last ${(unsent / SAMPLE_RATE).toFixed(1)} s were not transcribed` : problem);
    }
    const lost = view.lostMs ? ` (${(view.lostMs / 1000).toFixed(1)} s of audio were lost while offline)` : "";
    setStatus("stopped", `${this.finals ? "Done" : "Nothing recognized"}${lost}. Press Start to go on.`);
    ui.level.style.width = "0";
    recording = null;
  }

  // The microphone went away (unplugged, permission revoked).
  onDeviceGone() {
    if (this.stopping) return;
    showError("the microphone stopped");
    this.stop();
  }

  // Phones turn the screen off, and capture with it, unless asked not to.
  async holdScreen() {
    try {
      if (navigator.wakeLock) this.wakeLock = await navigator.wakeLock.request("screen");
    } catch {
      // Not allowed (battery saver, no focus): recording works without it.
    }
  }

  releaseScreen() {
    if (this.wakeLock) this.wakeLock.release().catch(() => {});
    this.wakeLock = null;
  }
}

// -- the button -------------------------------------------------------------------

ui.toggle.addEventListener("click", async () => {
  if (recording) {
    recording.stop();
    return;
  }
  clearError();
  recording = new Recording();
  try {
    await recording.start();
  } catch (err) {
    recording = null;
    const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
    showError(denied ? "microphone permission was denied" : `microphone: ${err && err.message ? err.message : err}`);
    setStatus("stopped", "Press Start to try again.");
  }
});

setStatus("idle", "Press Start and allow the microphone.");
