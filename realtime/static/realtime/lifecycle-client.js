// Browser client for a lifecycle's stream, over its WebSocket or as Server-Sent Events. A dependency-free
// ES module.
//
//   import { LifecycleSocket } from "/static/realtime/lifecycle-client.js";
//   const socket = new LifecycleSocket({
//     url: created.links.websocket, token: created.ws_token,
//     // or, where WebSockets do not pass: url: created.links.events, transport: "sse",
//     onSnapshot: (lifecycle) => {}, onEvent: (event) => {},
//     onDelta: (text, offset) => {},  // streamed model output (params.stream), coalesced
//     onCompleted: (result, event) => {}, onFailed: (error, event) => {},
//     onConnection: (state) => {},   // "connecting" | "open" | "reconnecting" | "expired" | "revoked" | "closed"
//     refreshToken: async () => "…",  // optional: a fresh token from your backend when one expires
//   });
//   socket.connect();
//
// It reconnects with exponential backoff after a dropped connection and resumes after the last seq it
// delivered, so every event reaches onEvent exactly once, in order. Over SSE the browser's EventSource
// reconnects by itself with Last-Event-ID; the module takes over when it gives up (an error status).

const FINAL_EVENTS = new Set(["lifecycle.completed", "lifecycle.failed", "lifecycle.cancelled"]);
const NORMAL_CLOSURE = 1000;
const TOKEN_EXPIRED = 4401;
const KEY_REVOKED = 4403;

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
    transport = "websocket",
    maxBackoffMs = 10000,
    maxReconnects = 20,
  }) {
    Object.assign(this, { url, token, onSnapshot, onEvent, onDelta, onCompleted, onFailed, onConnection, refreshToken });
    this.transport = transport;
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
    if (this.transport === "sse") {
      this.#connectEvents(url);
      return;
    }
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
      if (close.code === KEY_REVOKED) {
        this.finished = true;
        this.onConnection("revoked");
        return;
      }
      this.#retry();
    };
  }

  #connectEvents(url) {
    const source = new EventSource(url);
    this.socket = source;
    source.onopen = () => {
      this.failures = 0;
      this.onConnection("open");
    };
    source.onmessage = (message) => {
      const parsed = JSON.parse(message.data);
      if (parsed.type === "error" && parsed.error?.code === "token_expired") {
        source.close();
        this.#renew();
        return;
      }
      if (parsed.type === "error" && parsed.error?.code === "token_revoked") {
        source.close();
        this.finished = true;
        this.onConnection("revoked");
        return;
      }
      this.#handle(parsed);
      if (this.finished) {
        source.close(); // the stream is over: EventSource would otherwise reconnect
        this.onConnection("closed");
      }
    };
    source.onerror = () => {
      if (this.finished || this.socket !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.#retry(); // an error status (503, 401...): EventSource gave up, our backoff takes over
      } else {
        this.onConnection("reconnecting"); // EventSource reconnects by itself, with Last-Event-ID
      }
    };
  }

  close() {
    this.finished = true;
    if (!this.socket) return;
    if (this.transport === "sse") this.socket.close();
    else this.socket.close(NORMAL_CLOSURE);
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
