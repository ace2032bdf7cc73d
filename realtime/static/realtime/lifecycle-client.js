// Browser client for the lifecycle WebSocket. A dependency-free ES module.
//
//   import { LifecycleSocket } from "/static/realtime/lifecycle-client.js";
//   const socket = new LifecycleSocket({
//     url: created.links.websocket, token: created.ws_token,
//     onSnapshot: (lifecycle) => {}, onEvent: (event) => {},
//     onDelta: (text, offset) => {},  // streamed model output (params.stream), coalesced
//     onCompleted: (result, event) => {}, onFailed: (error, event) => {},
//     onConnection: (state) => {},   // "connecting" | "open" | "reconnecting" | "expired" | "closed"
//     refreshToken: async () => "…",  // optional: a fresh token from your backend when one expires
//   });
//   socket.connect();
//
// It reconnects with exponential backoff after a dropped connection and resumes after the last seq it
// delivered, so every event reaches onEvent exactly once, in order.

const FINAL_EVENTS = new Set(["lifecycle.completed", "lifecycle.failed", "lifecycle.cancelled"]);
const NORMAL_CLOSURE = 1000;
const TOKEN_EXPIRED = 4401;

export class LifecycleSocket {
  constructor({
    url,
    token,
    since = 0,
    onSnapshot = () => {},
    onEvent = () => {},
    onDelta = () => {},
    onCompleted = () => {},
    onFailed = () => {},
    onConnection = () => {},
    refreshToken = null,
    maxBackoffMs = 10000,
    maxReconnects = 20,
  }) {
    Object.assign(this, { url, token, onSnapshot, onEvent, onDelta, onCompleted, onFailed, onConnection, refreshToken });
    this.lastSeq = since;
    this.maxBackoffMs = maxBackoffMs;
    this.maxReconnects = maxReconnects;
    this.failures = 0;
    this.finished = false;
    this.socket = null;
  }

  connect() {
    this.onConnection(this.failures ? "reconnecting" : "connecting");
    const url = `${this.url}?token=${encodeURIComponent(this.token)}&since=${this.lastSeq}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.failures = 0;
      this.onConnection("open");
    };
    socket.onmessage = (message) => this.#handle(JSON.parse(message.data));
    socket.onclose = (close) => {
      if (this.finished || close.code === NORMAL_CLOSURE) {
        this.finished = true;
        this.onConnection("closed");
        return;
      }
      if (close.code === TOKEN_EXPIRED) {
        this.#renew();
        return;
      }
      this.#retry();
    };
  }

  close() {
    this.finished = true;
    if (this.socket) this.socket.close(NORMAL_CLOSURE);
  }

  async #renew() {
    // The token ran out: go on with a fresh one from the backend, or stop and say so.
    if (!this.refreshToken) {
      this.finished = true;
      this.onConnection("expired");
      return;
    }
    try {
      this.token = await this.refreshToken();
    } catch {
      this.#retry();
      return;
    }
    this.connect();
  }

  #retry() {
    this.failures += 1;
    if (this.failures > this.maxReconnects) {
      this.finished = true;
      this.onConnection("closed");
      return;
    }
    const backoff = Math.random() * Math.min(this.maxBackoffMs, 250 * 2 ** this.failures);
    this.onConnection("reconnecting");
    setTimeout(() => this.connect(), backoff);
  }

  #handle(message) {
    if (message.type === "snapshot") {
      this.onSnapshot(message.lifecycle);
      return;
    }
    if (message.type === "delta") {
      if (!this.finished) this.onDelta(message.text, message.offset);
      return;
    }
    if (message.type !== "event" || message.seq <= this.lastSeq) return;
    this.lastSeq = message.seq;
    this.onEvent(message);
    if (!FINAL_EVENTS.has(message.event)) return;
    this.finished = true;
    if (message.event === "lifecycle.completed") this.onCompleted(message.result, message);
    else this.onFailed(message.error, message);
  }
}
