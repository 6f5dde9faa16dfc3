// The consultation screen: camera and microphone, the waiting room, the call with its
// controls (mute, camera, admit, end or leave) and a call-quality indicator from
// getStats. The signaling and peer connections are the Consultation's (consult.js).

import { Consultation } from "./consult.js";
import { announce, busy, h, replace, showError } from "./dom.js";

const SEAT_NAMES = { patient: "Patient", provider: "Provider", guest: "Guest" };
/** How long the video may take to come up before the person gets a hint and a retry. */
const SLOW_MEDIA_MS = 8_000;
const PHASE_TEXT = {
  connecting: "Connecting to the consultation room…",
  joining: "Connecting the video…",
  in_call: "In call.",
  reconnecting: "Connection lost. Reconnecting… (the call continues meanwhile)",
  closed: "The consultation has ended.",
};
const CLOSE_TEXT = {
  ended: "The provider ended the consultation.",
  empty: "The room closed because nobody was in it.",
  left: "You left the consultation.",
  replaced: "You joined this consultation from another window, so this one was disconnected.",
  signed_out: "Your session ended. Please sign in again.",
  account_disabled: "Your account has been disabled. Please contact the clinic.",
  UNAUTHORIZED: "This consultation is not yours to join.",
  NOT_IN_WINDOW: "The consultation room is not open now. It opens shortly before the appointment and closes a while after it.",
  STATE_MISMATCH: "This appointment cannot be joined as a video consultation (it may be cancelled or already completed).",
  ROOM_FULL: "The consultation room is full.",
  closed: "The consultation connection closed.",
};
/** Errors about one message during the call, in words (others are ignored). */
const ERROR_TEXT = {
  UNAUTHORIZED: "Only the provider can do that.",
  BAD_SDP: "Your browser's call setup was refused by the server; the call may not connect.",
  BAD_CANDIDATE: "A network route your browser offered was refused by the server.",
};
const QUALITY_TEXT = { good: "Good", fair: "Fair", poor: "Poor", connecting: "Connecting" };

/** Opens the camera and microphone, falling back to audio only, then to nothing. */
async function openMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    // Browsers offer cameras only to secure pages: https, or http on localhost.
    showError(new Error("This page cannot use your camera: open Carewire over https (or on localhost)."));
    return new MediaStream();
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
  } catch (videoError) {
    try {
      const audioOnly = await navigator.mediaDevices.getUserMedia({ audio: true });
      showError(videoError);
      return audioOnly;
    } catch {
      showError(videoError);
      return new MediaStream();
    }
  }
}

/**
 * Renders the consultation for `appointment` into `main`, and returns a handle whose
 * `stop()` leaves the call and releases the camera (the router calls it when the
 * screen changes or the session ends), or null when the screen changed meanwhile.
 * `options.role` is "patient" or "provider"; `options.admitOnArrival` lets a provider
 * who clicked "Admit" admit as soon as the patient is in the room; `isCurrent()` says
 * whether this screen is still the one shown; `onDone(reason)` runs when the
 * consultation is over for this browser.
 */
export async function renderCall(main, appointment, { role, peerName, admitOnArrival = false, isCurrent = () => true, onDone }) {
  const phaseText = h("p", { class: "call-phase", id: "call-phase", role: "status", dataset: { phase: "connecting" } }, PHASE_TEXT.connecting);
  const localVideo = h("video", { autoplay: true, playsInline: true, muted: true, class: "local-video", "aria-label": "Your camera" });
  const remoteVideos = h("div", { class: "remote-videos" });
  const quality = h("p", { class: "quality", id: "call-quality", dataset: { level: "connecting" } }, "Call quality: waiting for the call");
  const participants = h("ul", { class: "participants", "aria-labelledby": "participants-title" });
  const slowHint = h(
    "div",
    { class: "slow-hint", id: "slow-hint", hidden: true },
    h("p", {}, "The video is taking longer than usual. Check that this browser may use your camera and microphone, and that your network allows video calls (a VPN or a strict firewall can block them)."),
  );
  const retryButton = h("button", { type: "button", id: "retry-call" }, "Try again");
  slowHint.append(retryButton);
  const muteButton = h("button", { type: "button", "aria-pressed": "false", id: "toggle-mic" }, "Mute microphone");
  const cameraButton = h("button", { type: "button", "aria-pressed": "false", id: "toggle-camera" }, "Turn camera off");
  const admitButton = h("button", { type: "button", class: "primary", id: "admit", hidden: true }, "Admit patient");
  const endButton = h("button", { type: "button", class: "danger", id: "end-call" }, role === "provider" ? "End consultation" : "Leave call");

  replace(
    main,
    h(
      "section",
      { class: "call", "aria-labelledby": "call-title" },
      h("h1", { id: "call-title" }, role === "provider" ? `Consultation with ${peerName ?? "your patient"}` : `Consultation with ${peerName ?? "your provider"}`),
      phaseText,
      slowHint,
      h("div", { class: "videos" }, remoteVideos, h("figure", { class: "local" }, localVideo, h("figcaption", {}, "You"))),
      quality,
      h("div", { class: "controls", role: "group", "aria-label": "Call controls" }, muteButton, cameraButton, admitButton, endButton),
      h("h2", { id: "participants-title", class: "participants-title" }, "In the room"),
      participants,
    ),
  );

  const stream = await openMedia();
  if (!isCurrent()) {
    // The person went elsewhere while the browser asked for the camera: never join.
    for (const track of stream.getTracks()) track.stop();
    return null;
  }
  localVideo.srcObject = stream;
  const consultation = new Consultation(appointment.id, stream);
  // A handle for the browser's developer tools and the end-to-end tests.
  window.carewire = { ...(window.carewire ?? {}), consultation };

  let qualityTimer = null;
  const release = () => {
    clearInterval(qualityTimer);
    for (const track of stream.getTracks()) track.stop();
  };
  let admitting = false; // an admit is on its way: the button stays hidden

  // Toggle buttons keep their label and say their state with aria-pressed (and the
  // pressed style), as WAI-ARIA asks: a label that flips too reads as a contradiction.
  const toggle = (button, kind, offText, onText) => {
    const tracks = stream.getTracks().filter((t) => t.kind === kind);
    button.disabled = tracks.length === 0;
    button.addEventListener("click", () => {
      const enabled = !tracks[0]?.enabled;
      for (const t of tracks) t.enabled = enabled;
      button.setAttribute("aria-pressed", String(!enabled));
      announce(enabled ? onText : offText);
    });
  };
  toggle(muteButton, "audio", "Microphone muted", "Microphone on");
  toggle(cameraButton, "video", "Camera off", "Camera on");

  admitButton.addEventListener("click", () => {
    admitting = true;
    admitButton.hidden = true;
    consultation.admit();
  });
  endButton.addEventListener("click", () =>
    busy(endButton, async () => {
      if (role === "provider") consultation.end();
      else consultation.leave();
    }),
  );

  const othersWaiting = () => [...consultation.participants.keys()].some((seat) => seat !== consultation.seat);
  const updateAdmit = () => {
    const show = role === "provider" && consultation.phase === "waiting" && othersWaiting() && !admitting;
    if (show && admitOnArrival) {
      admitOnArrival = false;
      admitting = true;
      consultation.admit();
      return;
    }
    admitButton.hidden = !show;
  };

  // What the screen says follows what the person gets: "In call" only once media from
  // someone flows; admitted but not yet there is "Connecting the video", with a hint
  // and a retry when it takes long.
  const flowing = new Set(); // seats whose media flows to us
  let slowTimer = null;
  const showPhase = () => {
    let phase = consultation.phase;
    if (phase === "in_call" && flowing.size === 0) phase = "joining";
    if (phase === "closed") return; // the "closed" handler says why
    phaseText.dataset.phase = phase;
    let text = PHASE_TEXT[phase];
    if (phase === "waiting") {
      text = role === "provider"
        ? othersWaiting() ? "Your patient is in the waiting room." : "Waiting for your patient to join…"
        : "You are in the waiting room. Your provider will admit you shortly.";
    }
    // #call-phase is a status region: screen readers read the change themselves.
    if (phaseText.textContent !== text) phaseText.textContent = text;
    if (phase === "joining") {
      slowTimer ??= setTimeout(() => {
        slowHint.hidden = false;
      }, SLOW_MEDIA_MS);
    } else {
      clearTimeout(slowTimer);
      slowTimer = null;
      slowHint.hidden = true;
    }
  };
  retryButton.addEventListener("click", () => {
    slowHint.hidden = true;
    clearTimeout(slowTimer);
    slowTimer = null;
    consultation.retry();
    showPhase();
  });
  consultation.addEventListener("phase", ({ detail: phase }) => {
    if (phase === "in_call") admitting = false;
    showPhase();
    updateAdmit();
  });
  consultation.addEventListener("media", ({ detail: { seat } }) => {
    flowing.add(seat);
    showPhase();
  });
  consultation.addEventListener("participants", ({ detail }) => {
    replace(
      participants,
      [...detail].map(([seat, p]) =>
        h("li", { dataset: { seat, state: p.state } }, `${SEAT_NAMES[seat] ?? seat}${p.state === "reconnecting" ? " (reconnecting…)" : ""}`),
      ),
    );
    showPhase();
    updateAdmit();
  });
  consultation.addEventListener("track", ({ detail: { seat, stream: remote } }) => {
    let video = remoteVideos.querySelector(`video[data-seat="${seat}"]`);
    if (!video) {
      video = h("video", { autoplay: true, playsInline: true, dataset: { seat }, "aria-label": `${SEAT_NAMES[seat]}'s video` });
      remoteVideos.append(h("figure", { class: "remote", dataset: { seat } }, video, h("figcaption", {}, seat === "provider" || seat === "patient" ? peerName ?? SEAT_NAMES[seat] : SEAT_NAMES[seat])));
    }
    if (video.srcObject !== remote) video.srcObject = remote;
  });
  consultation.addEventListener("peer-state", ({ detail: { seat, state } }) => {
    if (state === "closed" || state === "new") {
      // A new peer connection (a reload on the other side, a rejoin) starts without media.
      flowing.delete(seat);
      showPhase();
    }
    if (state === "closed") remoteVideos.querySelector(`figure[data-seat="${seat}"]`)?.remove();
    if (state === "connected") announce("Connected.");
  });
  consultation.addEventListener("problem", ({ detail }) => {
    // Refusals of the connection end it and are explained by the "closed" handler; an
    // admit that crossed another one (STATE_MISMATCH) or a message to a seat that just
    // left (NOT_IN_ROOM) changes nothing the person needs to know.
    const text = ERROR_TEXT[detail.code];
    if (text && consultation.seated) showError(new Error(`${text} (${detail.code})`));
  });
  consultation.addEventListener("closed", ({ detail: { reason } }) => {
    const text = CLOSE_TEXT[reason] ?? PHASE_TEXT.closed;
    phaseText.textContent = text;
    phaseText.dataset.phase = "closed";
    phaseText.dataset.reason = reason;
    for (const b of [muteButton, cameraButton, admitButton, endButton]) b.disabled = true;
    clearTimeout(slowTimer);
    slowHint.hidden = true;
    release();
    onDone?.(reason);
  });

  qualityTimer = setInterval(async () => {
    const seat = [...consultation.peers.keys()][0];
    if (!seat) return;
    try {
      const q = await consultation.quality(seat);
      if (!q || !quality.isConnected) return;
      quality.dataset.level = q.level;
      const parts = [`Call quality: ${QUALITY_TEXT[q.level]}`];
      if (q.rttMs !== null) parts.push(`${Math.round(q.rttMs)} ms delay`);
      parts.push(`${q.lossPct.toFixed(1)}% loss`);
      if (q.kbps !== null) parts.push(`${Math.round(q.kbps)} kbit/s`);
      quality.textContent = parts.join(" · ");
    } catch (error) {
      console.warn("call quality: no statistics", error); // the indicator just stays as it was
    }
  }, 2000);

  consultation.start();
  return {
    consultation,
    stop() {
      if (!consultation.finished) consultation.leave();
      release();
    },
  };
}
