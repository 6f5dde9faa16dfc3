// One video consultation from this browser's side: the signaling socket
// (`/v1/consultations/{id}`, protocol `carewire.consult.v1`, signaling/PROTOCOL.md) and
// one RTCPeerConnection per other seat, negotiated with the W3C "perfect negotiation"
// pattern using the polite flags the server hands out.
//
// The socket may drop at any time; media keeps flowing meanwhile. We reconnect with
// backoff and `join` with `last_seq`: when the server resumes us, nothing is
// renegotiated; when it cannot, every peer connection starts afresh.
//
// Events dispatched on the Consultation:
//   "joined"      detail: the joined message (seat, role, phase, participants…)
//   "phase"       detail: "connecting" | "waiting" | "in_call" | "reconnecting" | "closed"
//   "participants" detail: Map seat → {role, state}
//   "track"       detail: {seat, stream}: a peer's media arrived
//   "peer-state"  detail: {seat, state}: a peer connection's connectionState
//   "media"       detail: {seat}: media from `seat` flows (a remote track unmuted, or the
//                 connection is up and that peer sends nothing)
//   "closed"      detail: {reason}: "ended", "empty", "left", "replaced", or a refusal code
//   "problem"     detail: {code, message}: an error the server reported

import { wsTicket, wsUrl } from "./api.js";

const PROTOCOL = "carewire.consult.v1";
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;
/**
 * How long the polite side waits for the impolite side's first offer before making
 * its own (the impolite side may have no camera or microphone, and so nothing to offer).
 */
const FIRST_OFFER_WAIT_MS = 2_000;
/** How long a peer may stay `disconnected` before we restart ICE. */
const DISCONNECTED_GRACE_MS = 4_000;
/** Close codes after which reconnecting would be wrong, and what they mean. */
const FINAL_CLOSE_CODES = new Map([
  [1000, null], // ended, left or refused: the reason came before the close
  [1008, null],
  [4001, "replaced"],
  [4401, "signed_out"],
  [4403, "account_disabled"],
]);
/** Refusals the server sends before closing with 1008. */
const REFUSALS = new Set(["UNAUTHORIZED", "NOT_IN_WINDOW", "STATE_MISMATCH", "ROOM_FULL", "GUEST_LINK_INVALID"]);

export class Consultation extends EventTarget {
  /**
   * @param {string} appointmentId
   * @param {MediaStream} localStream what this browser sends
   */
  constructor(appointmentId, localStream) {
    super();
    this.appointmentId = appointmentId;
    this.localStream = localStream;
    this.peers = new Map(); // seat → {pc, polite, makingOffer, ignoreOffer, stream}
    this.participants = new Map(); // seat → {role, state, polite}
    this.iceServers = [];
    this.seat = null;
    this.phase = "connecting";
    this.lastSeq = null;
    this.nextId = 1;
    this.outbox = []; // messages written while the socket was down
    this.socket = null;
    this.retryMs = RETRY_MIN_MS;
    this.finished = false;
    this.pingTimer = null;
    this.retryTimer = null;
    this.joinedOnce = false;
    this.seated = false; // joined on the current socket
    this.inbox = Promise.resolve(); // messages are handled one at a time, in order
  }

  start() {
    this.#connect();
  }

  /** Lets everyone waiting into the call (provider only). */
  admit() {
    this.#send({ type: "admit" });
  }

  /** Ends the consultation for everyone (provider only). */
  end() {
    this.#send({ type: "end" });
  }

  /**
   * Leaves the call; the others see this seat leave at once. (While the socket is down
   * the server cannot be told: the others see the seat time out after its grace period.)
   */
  leave() {
    this.#send({ type: "leave" });
    this.#finish("left");
  }

  /** Drops the signaling socket as a network failure would (for testing resume). */
  simulateDrop() {
    this.socket?.close(4000, "dropped by the client");
  }

  /**
   * Restarts ICE with `seat` (done on its own when the connection fails). One side
   * restarts per pair, so two restarts never cross: the impolite side restarts, the
   * polite side asks it to through the server.
   */
  restartIce(seat) {
    const peer = this.peers.get(seat);
    if (!peer) return;
    if (peer.polite) this.#send({ type: "ice_restart", to: seat });
    else peer.pc.restartIce();
  }

  /** The live peer connection with `seat`, if any. */
  peerConnection(seat) {
    return this.peers.get(seat)?.pc ?? null;
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #setPhase(phase) {
    this.phase = phase;
    this.#emit("phase", phase);
  }

  async #connect() {
    if (this.finished) return;
    this.#setPhase(this.joinedOnce ? "reconnecting" : "connecting");
    let ticket;
    try {
      ticket = await wsTicket();
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        this.#finish("signed_out");
        return;
      }
      this.#retry();
      return;
    }
    if (this.finished) return; // left while the ticket was on its way
    this.seated = false;
    const socket = new WebSocket(wsUrl(`/v1/consultations/${this.appointmentId}?ticket=${encodeURIComponent(ticket)}`), PROTOCOL);
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      const join = { type: "join", id: this.#id(), protocol: PROTOCOL };
      if (this.lastSeq !== null) join.last_seq = this.lastSeq;
      socket.send(JSON.stringify(join));
    };
    socket.onmessage = (message) => {
      if (this.socket !== socket || this.finished) return;
      let parsed;
      try {
        parsed = JSON.parse(message.data);
      } catch {
        return;
      }
      // One at a time: perfect negotiation must not apply an offer while the previous
      // description is still being set.
      this.inbox = this.inbox
        .then(() => (this.finished ? undefined : this.#receive(parsed)))
        .catch((error) => console.warn("consultation: handling a message failed", error));
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.seated = false;
      clearInterval(this.pingTimer);
      if (this.finished) return;
      if (FINAL_CLOSE_CODES.has(close.code)) {
        this.#finish(FINAL_CLOSE_CODES.get(close.code) ?? this.refusal ?? "closed");
      } else {
        this.#retry();
      }
    };
  }

  #retry() {
    if (this.finished) return;
    this.#setPhase("reconnecting");
    const wait = RETRY_MIN_MS / 2 + Math.random() * this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    this.retryTimer = setTimeout(() => this.#connect(), wait);
  }

  #id() {
    return `c${this.nextId++}`;
  }

  #send(message) {
    const framed = { ...message, id: this.#id() };
    if (this.socket?.readyState === WebSocket.OPEN && this.seated) {
      this.socket.send(JSON.stringify(framed));
    } else {
      // Written while reconnecting: sent once we are seated again (and dropped if the
      // server could not resume us, since everything is renegotiated then).
      this.outbox.push(framed);
    }
  }

  async #receive(m) {
    if (typeof m.seq === "number") {
      if (this.lastSeq !== null && m.seq <= this.lastSeq) return; // replayed twice
      this.lastSeq = m.seq;
    }
    switch (m.type) {
      case "joined":
        return this.#joined(m);
      case "waiting":
        return this.#setPhase("waiting");
      case "admitted":
        this.#setPhase("in_call");
        for (const [seat, p] of this.participants) if (!this.peers.has(seat)) this.#connectPeer(seat, p.polite);
        return;
      case "peer_joined":
        this.participants.set(m.seat, { role: m.role, state: "connected", polite: m.polite });
        this.#emit("participants", this.participants);
        if (this.phase === "in_call") {
          if (!m.resumed) this.#closePeer(m.seat);
          if (!this.peers.has(m.seat)) this.#connectPeer(m.seat, m.polite);
        }
        return;
      case "peer_reconnecting": {
        const p = this.participants.get(m.seat);
        if (p) p.state = "reconnecting";
        this.#emit("participants", this.participants);
        return;
      }
      case "peer_left":
        this.participants.delete(m.seat);
        this.#closePeer(m.seat);
        this.#emit("participants", this.participants);
        return;
      case "session_replaced":
        return this.#finish("replaced");
      case "room_closed":
        return this.#finish(m.reason);
      case "offer":
      case "answer":
      case "candidate":
      case "end_of_candidates":
      case "ice_restart":
        return this.#relayed(m);
      case "error":
        // A refusal of the connection or of the join: the close that follows is final.
        if (!this.seated && REFUSALS.has(m.code)) this.refusal = m.code;
        this.#emit("problem", { code: m.code, message: m.message });
        return;
      default:
        return;
    }
  }

  #joined(m) {
    this.joinedOnce = true;
    this.seated = true;
    this.retryMs = RETRY_MIN_MS;
    this.seat = m.seat;
    this.iceServers = m.ice_servers ?? [];
    if (!m.resumed) {
      // A fresh start: whatever we had is gone on the server's side too.
      for (const seat of [...this.peers.keys()]) this.#closePeer(seat);
      this.outbox = this.outbox.filter((msg) => msg.type === "admit" || msg.type === "end");
      this.lastSeq = m.last_seq;
    }
    this.participants = new Map(m.participants.map((p) => [p.seat, { role: p.role, state: p.state, polite: p.polite }]));
    for (const seat of [...this.peers.keys()]) if (!this.participants.has(seat)) this.#closePeer(seat);
    this.#emit("joined", m);
    this.#emit("participants", this.participants);
    this.#setPhase(m.phase);
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ type: "ping", id: this.#id() }));
    }, m.ping_interval_ms || 5000);
    const pending = this.outbox;
    this.outbox = [];
    for (const msg of pending) this.socket.send(JSON.stringify(msg));
    if (m.phase === "in_call") {
      for (const [seat, p] of this.participants) if (!this.peers.has(seat)) this.#connectPeer(seat, p.polite);
    }
  }

  #connectPeer(seat, polite) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const peer = {
      pc, polite, makingOffer: false, ignoreOffer: false, settingRemoteAnswer: false, stream: new MediaStream(), disconnectedTimer: null,
      heardFrom: false, firstOfferTimer: null,
    };
    this.peers.set(seat, peer);
    for (const track of this.localStream.getTracks()) pc.addTrack(track, this.localStream);

    pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] ?? peer.stream;
      if (!streams[0]) peer.stream.addTrack(track);
      peer.stream = stream;
      this.#emit("track", { seat, stream });
      // A remote track is muted until its first packets arrive: that is media flowing.
      const flowing = () => {
        if (this.peers.get(seat) === peer) this.#emit("media", { seat });
      };
      if (!track.muted) flowing();
      track.addEventListener("unmute", flowing);
    };
    const offer = async () => {
      try {
        peer.makingOffer = true;
        await pc.setLocalDescription();
        this.#send({ type: pc.localDescription.type, to: seat, sdp: pc.localDescription.sdp });
      } catch (error) {
        console.warn("consultation: could not make an offer", error);
      } finally {
        peer.makingOffer = false;
      }
    };
    pc.onnegotiationneeded = () => {
      // Both sides add their tracks at once when a call starts, so both want to offer.
      // Perfect negotiation settles that glare, but Chromium sometimes never gathers
      // ICE candidates after rolling back an offer it was still making (seen in our
      // browser test, about one call in six). So the first offer is the impolite
      // side's: the polite side waits for it, and only offers itself if none comes.
      // After that first exchange, both negotiate freely.
      if (peer.polite && !peer.heardFrom) {
        peer.firstOfferTimer ??= setTimeout(() => {
          if (!peer.heardFrom && pc.signalingState === "stable" && pc.connectionState !== "closed") offer();
        }, FIRST_OFFER_WAIT_MS);
        return;
      }
      offer();
    };
    pc.onicecandidate = ({ candidate: c }) => {
      if (c && c.candidate) {
        this.#send({
          type: "candidate", to: seat, candidate: c.candidate, sdp_mid: c.sdpMid,
          sdp_mline_index: c.sdpMLineIndex, username_fragment: c.usernameFragment,
        });
      } else if (!c) {
        // Name the ICE generation, so a late end marker of an old one (after a restart)
        // is not applied to the new one.
        const ufrag = /a=ice-ufrag:(\S+)/.exec(pc.localDescription?.sdp ?? "")?.[1];
        this.#send({ type: "end_of_candidates", to: seat, ...(ufrag ? { username_fragment: ufrag } : {}) });
      }
    };
    const restartIce = () => this.restartIce(seat);
    pc.oniceconnectionstatechange = () => {
      clearTimeout(peer.disconnectedTimer);
      if (pc.iceConnectionState === "failed") restartIce();
      if (pc.iceConnectionState === "disconnected") {
        peer.disconnectedTimer = setTimeout(() => {
          if (pc.iceConnectionState === "disconnected") restartIce();
        }, DISCONNECTED_GRACE_MS);
      }
    };
    pc.onconnectionstatechange = () => {
      this.#emit("peer-state", { seat, state: pc.connectionState });
      // A peer with no camera or microphone sends nothing: once connected, the call
      // is as up as it will be.
      if (pc.connectionState === "connected" && this.#sendsNothing(pc)) this.#emit("media", { seat });
    };
    this.#emit("peer-state", { seat, state: pc.connectionState });
  }

  /** Whether the other side of `pc` sends no media at all (every transceiver says so). */
  #sendsNothing(pc) {
    return pc.getTransceivers().every((t) => !t.currentDirection || !t.currentDirection.includes("recv"));
  }

  /**
   * Starts the connection over when it does not come up: a fresh join rather than a
   * resume, so that both sides make every peer connection anew (as after a reload).
   */
  retry() {
    if (this.finished) return;
    this.lastSeq = null;
    this.outbox = this.outbox.filter((msg) => msg.type === "admit" || msg.type === "end");
    // The close is not final (4000): the socket reconnects and joins afresh.
    this.socket?.close(4000, "retrying");
  }

  #closePeer(seat) {
    const peer = this.peers.get(seat);
    if (!peer) return;
    clearTimeout(peer.disconnectedTimer);
    clearTimeout(peer.firstOfferTimer);
    peer.pc.close();
    this.peers.delete(seat);
    this.#emit("peer-state", { seat, state: "closed" });
  }

  async #relayed(m) {
    const peer = this.peers.get(m.from);
    if (!peer) return;
    const { pc } = peer;
    if (m.type === "offer" || m.type === "answer") {
      peer.heardFrom = true;
      clearTimeout(peer.firstOfferTimer);
      // W3C perfect negotiation: an offer collides unless we are stable (or only
      // finishing setting an answer) and not making an offer of our own.
      const readyForOffer = !peer.makingOffer && (pc.signalingState === "stable" || peer.settingRemoteAnswer);
      const collision = m.type === "offer" && !readyForOffer;
      peer.ignoreOffer = !peer.polite && collision;
      if (peer.ignoreOffer) return; // impolite: our own offer stands
      peer.settingRemoteAnswer = m.type === "answer";
      try {
        await pc.setRemoteDescription({ type: m.type, sdp: m.sdp }); // polite: implicit rollback
      } finally {
        peer.settingRemoteAnswer = false;
      }
      if (m.type === "offer") {
        await pc.setLocalDescription();
        this.#send({ type: "answer", to: m.from, sdp: pc.localDescription.sdp });
      }
    } else if (m.type === "candidate" || m.type === "end_of_candidates") {
      try {
        await pc.addIceCandidate(
          m.type === "candidate"
            ? { candidate: m.candidate, sdpMid: m.sdp_mid, sdpMLineIndex: m.sdp_mline_index, usernameFragment: m.username_fragment }
            : { candidate: "", usernameFragment: m.username_fragment ?? null },
        );
      } catch (error) {
        if (!peer.ignoreOffer) console.warn("consultation: a candidate was refused", error);
      }
    } else if (m.type === "ice_restart") {
      pc.restartIce();
    }
  }

  #finish(reason) {
    if (this.finished) return;
    this.finished = true;
    clearInterval(this.pingTimer);
    clearTimeout(this.retryTimer);
    for (const seat of [...this.peers.keys()]) this.#closePeer(seat);
    const socket = this.socket;
    this.socket = null;
    // Let a final message (leave) go out before closing.
    if (socket) setTimeout(() => socket.close(1000, "done"), 200);
    this.#setPhase("closed");
    this.#emit("closed", { reason });
  }

  /** Call quality toward `seat`, from getStats: what the indicator shows. */
  async quality(seat) {
    const peer = this.peers.get(seat);
    if (!peer || peer.pc.connectionState === "closed") return null;
    const { pc } = peer;
    let stats;
    try {
      stats = await pc.getStats();
    } catch {
      return null; // closed meanwhile
    }
    let framesDecoded = 0;
    let packetsLost = 0;
    let packetsReceived = 0;
    let bytesReceived = 0;
    let rttMs = null;
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && !s.isRemote) {
        packetsLost += s.packetsLost ?? 0;
        packetsReceived += s.packetsReceived ?? 0;
        bytesReceived += s.bytesReceived ?? 0;
        if (s.kind === "video") framesDecoded += s.framesDecoded ?? 0;
      }
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime !== undefined) {
        rttMs = s.currentRoundTripTime * 1000;
      }
    });
    const now = performance.now();
    let kbps = null;
    if (peer.lastBytes !== undefined) kbps = ((bytesReceived - peer.lastBytes) * 8) / (now - peer.lastAt);
    peer.lastBytes = bytesReceived;
    peer.lastAt = now;
    const total = packetsLost + packetsReceived;
    const lossPct = total > 0 ? (100 * packetsLost) / total : 0;
    let level = "good";
    if (pc.connectionState !== "connected") level = "connecting";
    else if (lossPct > 5 || (rttMs ?? 0) > 400) level = "poor";
    else if (lossPct > 1 || (rttMs ?? 0) > 150) level = "fair";
    return { framesDecoded, lossPct, rttMs, kbps, level, connectionState: pc.connectionState };
  }
}
