// The live connection to `/v1/ws` (protocol `carewire.v1`, docs/realtime-protocol.md):
// events about the signed-in user's appointments, reminders and followed topics,
// delivered exactly once across drops by resuming from the last `seq` seen.
//
// Events are dispatched as DOM events on the Realtime object:
//   "event"          detail: the server's event message ({event, data, seq, topics})
//   "notifications"  detail: the unread notifications sent on a fresh connection
//   "resync"         the server could not resume: reload state over REST
//   "state"          detail: "connecting" | "live" | "offline"
//   "ended"          detail: close code: the session ended (4401) or was disabled (4403)

import { wsTicket, wsUrl } from "./api.js";

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;

export class Realtime extends EventTarget {
  constructor(topics = []) {
    super();
    this.topics = topics;
    this.lastSeq = null;
    this.socket = null;
    this.retryMs = RETRY_MIN_MS;
    this.stopped = false;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.#connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close(1000, "bye");
    this.socket = null;
  }

  /** Drops the connection as a network failure would; it reconnects and resumes. */
  simulateDrop() {
    this.socket?.close(4000, "dropped by the client");
  }

  #state(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  async #connect() {
    if (this.stopped) return;
    this.#state("connecting");
    let ticket;
    try {
      ticket = await wsTicket();
    } catch (error) {
      if (error.status === 401) {
        this.dispatchEvent(new CustomEvent("ended", { detail: 4401 }));
        return;
      }
      this.#retry();
      return;
    }
    if (this.stopped) return; // stopped while the ticket was on its way
    const params = new URLSearchParams({ ticket });
    if (this.lastSeq !== null) params.set("resume_from", String(this.lastSeq));
    if (this.topics.length) params.set("topics", this.topics.join(","));
    const socket = new WebSocket(wsUrl(`/v1/ws?${params}`), "carewire.v1");
    this.socket = socket;
    socket.onmessage = (message) => {
      if (this.socket === socket) this.#receive(message.data);
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (close.code === 4401 || close.code === 4403) {
        this.#state("offline");
        this.dispatchEvent(new CustomEvent("ended", { detail: close.code }));
        return;
      }
      this.#retry();
    };
  }

  #retry() {
    if (this.stopped) return;
    this.#state("offline");
    // Exponential backoff with full jitter, so a server restart is not met by every
    // client at the same instant.
    const wait = Math.random() * this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    this.timer = setTimeout(() => this.#connect(), wait);
  }

  #receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    switch (message.type) {
      case "welcome":
        this.retryMs = RETRY_MIN_MS;
        if (this.lastSeq === null) this.lastSeq = message.seq;
        // Topics followed while this socket was being set up are not in its URL.
        for (const topic of this.topics) {
          if (!message.topics?.includes(topic)) this.#sendIfOpen({ type: "subscribe", id: `s-${Date.now()}`, topic });
        }
        this.#state("live");
        break;
      case "event":
        if (this.lastSeq !== null && message.seq <= this.lastSeq) return; // already seen
        this.lastSeq = message.seq;
        this.dispatchEvent(new CustomEvent("event", { detail: message }));
        break;
      case "notifications":
        this.dispatchEvent(new CustomEvent("notifications", { detail: message.items }));
        break;
      case "resync_required":
        this.lastSeq = message.seq;
        this.dispatchEvent(new CustomEvent("resync"));
        break;
      default:
        break;
    }
  }

  /** Follows a topic from now on (and across reconnects). */
  follow(topic) {
    if (this.topics.includes(topic)) return;
    this.topics.push(topic);
    this.#sendIfOpen({ type: "subscribe", id: `s-${Date.now()}`, topic });
  }

  /** Stops following a topic. */
  unfollow(topic) {
    if (!this.topics.includes(topic)) return;
    this.topics = this.topics.filter((t) => t !== topic);
    this.#sendIfOpen({ type: "unsubscribe", id: `u-${Date.now()}`, topic });
  }

  #sendIfOpen(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }


}
