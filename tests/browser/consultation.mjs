// A booked video consultation in two real browsers, through the web client.
//
// Run by tests/web.rs against a server it started (with the demo clinic on), or by hand:
//   CAREWIRE_URL=http://127.0.0.1:8080 node tests/browser/consultation.mjs
// Chromium comes from Debian (`apt-get install chromium`; CAREWIRE_CHROMIUM overrides
// the path) with fake camera and microphone. A patient (phone-sized window, New York
// time) registers, books, checks in and joins; the provider (Berlin time) watches the
// waiting room fill, admits, and both peer connections must reach `connected` with
// remote video frames decoded on both sides. The patient's signaling socket is then
// dropped and must resume without renegotiating; the provider ends the call and signs
// a note. On failure each side's screenshot is saved in CAREWIRE_SCREENSHOT_DIR.
// The last line of stdout is a JSON summary for the Rust test.

import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.CAREWIRE_URL ?? "http://127.0.0.1:8080";
const PROVIDER_EMAIL = process.env.CAREWIRE_PROVIDER_EMAIL ?? "dr.demo@carewire.test";
const PROVIDER_PASSWORD = process.env.CAREWIRE_PROVIDER_PASSWORD;
const SCREENSHOTS = process.env.CAREWIRE_SCREENSHOT_DIR ?? fileURLToPath(new URL("../../target/browser-screenshots", import.meta.url));
const CONSULTATION_SHOT = process.env.CAREWIRE_CONSULTATION_SCREENSHOT; // for the README
const STEP_TIMEOUT_MS = 30_000;
// With CAREWIRE_REMINDER_STEP=1 (tests/web.rs) the harness runs the server on a manual
// clock: after booking, this script prints REMINDER_DUE and waits for a line on stdin,
// the harness moves the server's clock to the reminder's due time, and the reminder
// must appear on the patient's screen without a reload.
const REMINDER_STEP = process.env.CAREWIRE_REMINDER_STEP === "1";
// The booked slot's lead: enough for a 1-minute reminder to be due after the booking.
const MIN_LEAD_MS = REMINDER_STEP ? 90_000 : 20_000;

if (!PROVIDER_PASSWORD) {
  console.error("CAREWIRE_PROVIDER_PASSWORD is required (the demo provider's password)");
  process.exit(2);
}

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const accessibilityProblems = [];

/** Runs axe-core (WCAG 2 A and AA rules) on what the page shows now. */
async function checkAccessibility(page, where) {
  // Evaluated through the DevTools protocol, so the page's CSP does not have to allow it.
  await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21aa"] } });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  for (const v of violations) accessibilityProblems.push(`${where}: ${v}`);
}

const log = (...args) => console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);

/** Resolves with the next line written to our standard input. */
function nextLineOnStdin() {
  return new Promise((resolve) => {
    let buffered = "";
    const onData = (chunk) => {
      buffered += chunk;
      const newline = buffered.indexOf("\n");
      if (newline < 0) return;
      process.stdin.off("data", onData);
      process.stdin.pause();
      resolve(buffered.slice(0, newline));
    };
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", onData);
    process.stdin.resume();
  });
}

/** A call to the API as an outside client would make it; throws on an error status. */
async function api(path, { method = "GET", token, body, etag, key } = {}) {
  const headers = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body) headers["content-type"] = "application/json";
  if (etag) headers["if-match"] = etag;
  if (key) headers["idempotency-key"] = key;
  const res = await fetch(`${BASE}${path}`, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A patient with a record, signed in over the API, and the demo provider's video visit. */
async function apiPatient(email) {
  const password = "correct horse battery staple 42";
  await api("/v1/auth/register", { method: "POST", body: { email, password } });
  const { access_token: token } = await api("/v1/auth/login", { method: "POST", body: { email, password } });
  await api("/v1/patients", { method: "POST", token, body: { legal_name: { given: "Grace", family: "Hopper" }, birth_date: "1986-12-09" } });
  const providerId = (await api("/v1/providers")).items[0].id;
  const typeId = (await api(`/v1/providers/${providerId}/appointment-types`)).items[0].id;
  return { token, providerId, typeId };
}

const apiBook = (who, startsAt) =>
  api("/v1/appointments", { method: "POST", token: who.token, key: crypto.randomUUID(), body: { provider_id: who.providerId, type_id: who.typeId, starts_at: startsAt } });

const apiCheckIn = (who, appointment) =>
  api(`/v1/appointments/${appointment.id}/check-in`, { method: "POST", token: who.token, etag: `"${appointment.version}"`, key: crypto.randomUUID() });

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CAREWIRE_CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    // Chromium refuses to sandbox itself as root (CI containers run as root).
    ...(process.getuid?.() === 0 ? ["--no-sandbox"] : []),
  ],
});

const pages = {};
const consoleErrors = [];
/** Console errors a step provokes on purpose, each allowed once: [page, pattern]. */
const expectedConsoleErrors = [];
/** Warnings (the client logs failed negotiation steps as warnings), shown on failure. */
const consoleWarnings = [];

async function open(name, options) {
  const context = await browser.newContext({ locale: "en-US", ...options });
  await context.grantPermissions(["camera", "microphone"], { origin: BASE });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("console", (m) => {
    if (m.type() === "warning") consoleWarnings.push(`${name}: ${m.text()}`);
    if (m.type() !== "error") return;
    const expected = expectedConsoleErrors.findIndex(([page, pattern]) => page === name && pattern.test(m.text()));
    if (expected >= 0) expectedConsoleErrors.splice(expected, 1);
    else consoleErrors.push(`${name}: ${m.text()}`);
  });
  page.on("pageerror", (e) => consoleErrors.push(`${name}: ${e.message}`));
  pages[name] = page;
  return page;
}

/** Waits until `fn` (run in the page) returns a truthy value, and returns it. */
async function until(page, fn, arg, what, timeout = STEP_TIMEOUT_MS) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout, polling: 250 });
    return await handle.jsonValue();
  } catch (error) {
    throw new Error(`timed out waiting for ${what}: ${error.message.split("\n")[0]}`);
  }
}

/**
 * Picks, in the patient's time picker, the first time at least `lead` ms away: the
 * day in the strip first, then that day's time. Returns the slot's start.
 */
async function pickTime(page, lead) {
  await page.locator("#slots .day-strip button.day").first().waitFor();
  const days = await page.locator("#slots .day-strip button.day").evaluateAll((buttons) => buttons.map((b) => b.dataset.day));
  for (const day of days) {
    const button = page.locator(`#slots .day-strip button.day[data-day="${day}"]`);
    await button.click();
    check((await button.getAttribute("aria-pressed")) === "true", `the day ${day} shows as chosen`);
    const found = await page.evaluate((lead) =>
      [...document.querySelectorAll("#slots button.slot")].map((b) => b.dataset.startsAt).find((t) => Date.parse(t) - Date.now() >= lead), lead);
    if (found) return found;
  }
  throw new Error(`no free time at least ${lead} ms away`);
}

/** The call as the page sees it: its peer connection's state and decoded frames. */
const callState = async (page, seat) =>
  page.evaluate(async (seat) => {
    const c = window.carewire?.consultation;
    const pc = c?.peerConnection(seat);
    if (!pc) return { state: "none", frames: 0 };
    const q = await c.quality(seat);
    const video = document.querySelector(`video[data-seat="${seat}"]`);
    return {
      state: pc.connectionState,
      frames: q.framesDecoded,
      playing: !!video && video.readyState >= 2 && !video.paused && video.videoWidth > 0,
      phase: c.phase,
    };
  }, seat);

async function waitForMedia(page, seat, minFrames, what) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let last;
  while (Date.now() < deadline) {
    last = await callState(page, seat);
    if (last.state === "connected" && last.frames > minFrames && last.playing) return last;
    await page.waitForTimeout(250);
  }
  const detail = await page.evaluate((seat) => {
    const pc = window.carewire?.consultation?.peerConnection(seat);
    if (!pc) return null;
    const count = (sdp) => (sdp?.match(/a=candidate/g) ?? []).length;
    return { signaling: pc.signalingState, gathering: pc.iceGatheringState, ice: pc.iceConnectionState,
      local: pc.localDescription?.type, localCandidates: count(pc.localDescription?.sdp), remote: pc.remoteDescription?.type,
      remoteCandidates: count(pc.remoteDescription?.sdp), localUfrag: /a=ice-ufrag:(\S+)/.exec(pc.localDescription?.sdp ?? "")?.[1],
      transceivers: pc.getTransceivers().map((t) => `${t.mid}:${t.direction}/${t.currentDirection}`) };
  }, seat).catch(() => null);
  throw new Error(`${what}: no remote video (last seen ${JSON.stringify(last)}; ${JSON.stringify(detail)})`);
}

let summary = { ok: false };
try {
  // --- The patient registers, gives their details and books, on a phone-sized screen.
  const patient = await open("patient", { timezoneId: "America/New_York", viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const email = `ada.${Date.now()}@example.test`;
  await patient.goto(BASE);
  await patient.getByLabel("Email").waitFor();
  await checkAccessibility(patient, "sign-in page");
  await patient.getByLabel("Email").fill(email);
  await patient.getByLabel("Password").fill("correct horse battery staple 42");
  await patient.getByRole("button", { name: "Create a patient account" }).click();
  log("patient registered");
  await patient.getByLabel("First name").waitFor();
  await checkAccessibility(patient, "patient details form");

  await patient.getByLabel("First name").fill("Ada");
  await patient.getByLabel("Last name").fill("Lovelace");
  await patient.getByLabel("Date of birth").fill("1985-12-10");
  await patient.getByRole("button", { name: "Save and continue" }).click();

  await patient.locator("#slots button.slot").first().waitFor();
  await checkAccessibility(patient, "patient home with free slots");
  // The time picker: the zone as people know it, days first, then that day's times,
  // and the first free time one tap away. (A week of the demo's times on one page was
  // about 670 buttons and 11,600 px on a phone.)
  const zoneHint = await patient.locator("#zone-hint").textContent();
  check(/Eastern (Standard|Daylight) Time \(UTC[-\u2212]0[45]:00\)/.test(zoneHint), `the zone reads as people know it (got "${zoneHint}")`);
  const picker = await patient.evaluate(() => ({
    buttons: document.querySelectorAll("#slots button.slot").length,
    days: document.querySelectorAll("#slots .day-strip button.day").length,
    height: document.documentElement.scrollHeight,
    firstFree: document.getElementById("first-free")?.dataset.startsAt,
    firstShown: document.querySelector("#slots button.slot")?.dataset.startsAt,
    pressed: document.querySelector("#slots .day-strip button.day[aria-pressed=true]")?.dataset.day,
    firstDay: document.querySelector("#slots .day-strip button.day")?.dataset.day,
  }));
  check(picker.days >= 7 && picker.buttons <= 24 * 4, `one day of times at a time (${JSON.stringify(picker)})`);
  check(picker.height < 4000, `the booking page fits a phone (${picker.height} px tall)`);
  check(picker.firstFree && picker.firstFree === picker.firstShown && picker.pressed === picker.firstDay, `the first free time is offered at the top (${JSON.stringify(picker)})`);
  // The first slot at least MIN_LEAD_MS away (one starting this instant could be gone
  // before the booking lands); its room opens 15 minutes before it starts, so at worst
  // MIN_LEAD_MS from now. Picked as a person would: a day, then a time.
  const startsAt = await pickTime(patient, MIN_LEAD_MS);
  const firstSlot = patient.locator(`#slots button.slot[data-starts-at="${startsAt}"]`);
  const shown = (await firstSlot.textContent()).trim();
  const expected = new Intl.DateTimeFormat("en-US", { hour: "2-digit", minute: "2-digit", timeZone: "America/New_York" }).format(new Date(startsAt));
  check(shown === expected, `the slot at ${startsAt} shows as ${shown}, expected ${expected} (New York time)`);
  check(Date.parse(startsAt) - Date.now() <= 15 * 60_000 + MIN_LEAD_MS, `the demo slot ${startsAt} starts within 15 minutes of the lead`);
  await firstSlot.click();
  await patient.getByLabel(/Reason for your visit/).fill("Follow-up on my headaches");
  await patient.getByRole("button", { name: "Book this time" }).click();
  const booked = patient.locator("#appointments li.appointment[data-status=booked]");
  await booked.waitFor();
  const appointmentId = await booked.getAttribute("data-id");
  log("patient booked", appointmentId);

  if (REMINDER_STEP) {
    console.log(`REMINDER_DUE ${JSON.stringify({ appointment_id: appointmentId, starts_at: startsAt })}`);
    await nextLineOnStdin();
    const reminder = patient.locator("#reminders li.reminder");
    await reminder.waitFor();
    const text = await reminder.textContent();
    check(text.includes("Reminder") && text.includes("Dr Rosalind Demo"), `the reminder names the visit (got "${text}")`);
    log("reminder arrived live");
  }

  // --- The provider signs in and sees the booking on today's calendar.
  const provider = await open("provider", { timezoneId: "Europe/Berlin", viewport: { width: 1280, height: 800 } });
  await provider.goto(BASE);
  await provider.getByLabel("Email").fill(PROVIDER_EMAIL);
  await provider.getByLabel("Password").fill("not the right passphrase");
  // Chromium logs every failed request, this one included.
  expectedConsoleErrors.push(["provider", /status of 401/]);
  await provider.getByRole("button", { name: "Sign in" }).click();
  const alert = provider.getByRole("alert");
  await alert.waitFor();
  const alertText = await alert.textContent();
  check(/email or password/i.test(alertText) && !alertText.includes("{"), `a wrong password gets a plain message (got "${alertText}")`);
  // Then with the keyboard only: the email field has focus, Tab reaches the password,
  // Enter submits.
  await provider.reload();
  await until(provider, () => document.activeElement?.id === "email", null, "focus on the email field");
  await provider.keyboard.type(PROVIDER_EMAIL);
  await provider.keyboard.press("Tab");
  await provider.keyboard.type(PROVIDER_PASSWORD);
  await provider.keyboard.press("Enter");
  const onCalendar = provider.locator(`#calendar li.appointment[data-id="${appointmentId}"]`);
  await onCalendar.waitFor();
  await until(provider, () => document.getElementById("connection")?.dataset.state === "live", null, "the provider's live connection");
  const reasonShown = await onCalendar.locator(".reason").textContent().catch(() => "");
  check(reasonShown.includes("Follow-up on my headaches"), `the provider's day shows the reason for visit (got "${reasonShown}")`);
  log("provider sees the booking and its reason");

  // --- The patient checks in; the provider's waiting room fills without a reload,
  // even though the provider's live connection drops just before (it resumes from the
  // last event it saw, so the check-in is not lost).
  await provider.evaluate(() => window.carewire.realtime.simulateDrop());
  await booked.getByRole("button", { name: "Check in" }).click();
  await patient.locator(`#appointments li.appointment[data-id="${appointmentId}"][data-status=arrived]`).waitFor();
  const waiting = provider.locator(`#waiting-room li.waiting[data-id="${appointmentId}"]`);
  await waiting.waitFor();
  check((await waiting.textContent()).includes("Ada Lovelace"), "the waiting room names the patient");
  log("waiting room filled live");
  await checkAccessibility(provider, "provider home with the waiting room");

  // --- Both join the consultation; the provider admits.
  // The button appears when the room opens: at once, or within MIN_LEAD_MS.
  await patient.getByRole("button", { name: "Join video consultation" }).click({ timeout: MIN_LEAD_MS + STEP_TIMEOUT_MS });
  await until(patient, () => document.getElementById("call-phase")?.dataset.phase === "waiting", null, "the patient in the waiting room");
  const admittedAt = Date.now();
  await waiting.getByRole("button", { name: "Admit and start video" }).click({ timeout: MIN_LEAD_MS + STEP_TIMEOUT_MS });
  // "In call" only once media flows: at that moment a remote track is live.
  const mediaWhenInCall = (page, seat) =>
    until(page, (seat) => {
      if (document.getElementById("call-phase")?.dataset.phase !== "in_call") return false;
      const pc = window.carewire.consultation.peerConnection(seat);
      return { unmuted: !!pc && pc.getReceivers().some((r) => r.track && !r.track.muted), state: pc?.connectionState };
    }, seat, "the call to say it is in progress");
  for (const [page, seat] of [[provider, "patient"], [patient, "provider"]]) {
    const seen = await mediaWhenInCall(page, seat);
    check(seen.unmuted, `"In call" is shown only once media flows (${JSON.stringify(seen)})`);
  }
  log("admitted");
  check(!(await provider.locator("#admit").isVisible()), "no admit button once the call has started");

  const patientSide = await waitForMedia(patient, "provider", 0, "patient side");
  const providerSide = await waitForMedia(provider, "patient", 0, "provider side");
  const connectMs = Date.now() - admittedAt;
  log("connected; frames decoded", { patient: patientSide.frames, provider: providerSide.frames, connectMs });
  await checkAccessibility(patient, "patient's call screen");
  await checkAccessibility(provider, "provider's call screen");
  if (CONSULTATION_SHOT) {
    await provider.waitForTimeout(2500); // let the quality indicator fill in
    await provider.screenshot({ path: CONSULTATION_SHOT });
  }

  // --- The patient (polite) asks for an ICE restart; the provider (impolite) restarts:
  // new ICE credentials on both sides, and the call carries on.
  const ufrag = (page, seat) => page.evaluate((seat) => /a=ice-ufrag:(\S+)/.exec(window.carewire.consultation.peerConnection(seat).remoteDescription.sdp)?.[1], seat);
  const [providerUfrag, patientUfrag] = [await ufrag(patient, "provider"), await ufrag(provider, "patient")];
  await patient.evaluate(() => window.carewire.consultation.restartIce("provider"));
  await until(patient, ([seat, old]) => {
    const pc = window.carewire.consultation.peerConnection(seat);
    const now = /a=ice-ufrag:(\S+)/.exec(pc.remoteDescription?.sdp ?? "")?.[1];
    return now && now !== old && pc.signalingState === "stable" && pc.connectionState === "connected";
  }, ["provider", providerUfrag], "the restarted ICE session on the patient's side");
  // The patient's answer (with its own new credentials) may still be on its way.
  await until(provider, ([seat, old]) => {
    const pc = window.carewire.consultation.peerConnection(seat);
    const now = /a=ice-ufrag:(\S+)/.exec(pc.remoteDescription?.sdp ?? "")?.[1];
    return now && now !== old && pc.signalingState === "stable";
  }, ["patient", patientUfrag], "the patient's answer with new ICE credentials on the provider's side");
  await waitForMedia(patient, "provider", patientSide.frames, "patient side after the ICE restart");
  log("ICE restarted through the server");

  // --- Mute and camera toggles change what is sent.
  const mute = patient.getByRole("button", { name: "Mute microphone" });
  await mute.click();
  check(await patient.evaluate(() => document.querySelector("video.local-video").srcObject.getAudioTracks().every((t) => !t.enabled)), "muting disables the microphone track");
  check((await mute.getAttribute("aria-pressed")) === "true", "the mute button says it is pressed");
  await mute.click();
  check(await patient.evaluate(() => document.querySelector("video.local-video").srcObject.getAudioTracks().every((t) => t.enabled)), "unmuting enables the microphone track");
  const camera = provider.getByRole("button", { name: "Turn camera off" });
  await camera.click();
  check(await provider.evaluate(() => document.querySelector("video.local-video").srcObject.getVideoTracks().every((t) => !t.enabled)), "the camera toggle disables the video track");
  check((await camera.getAttribute("aria-pressed")) === "true", "the camera button says it is pressed");
  await camera.click();

  // --- The patient's signaling socket drops; it resumes and media keeps flowing.
  await patient.evaluate(() => {
    window.__joins = [];
    window.carewire.consultation.addEventListener("joined", (e) => window.__joins.push(e.detail.resumed));
    window.carewire.consultation.simulateDrop();
  });
  const droppedAt = Date.now();
  const resumed = await until(patient, () => window.__joins?.length > 0 && window.__joins, null, "the patient to rejoin");
  const resumeMs = Date.now() - droppedAt;
  check(resumed[0] === true, `the dropped socket resumed the seat (joined.resumed was ${resumed[0]})`);
  const afterDrop = await waitForMedia(provider, "patient", providerSide.frames, "provider side after the patient's drop");
  check((await callState(patient, "provider")).state === "connected", "the patient's peer connection survived the drop");
  log("resumed after a drop; frames", afterDrop.frames);

  // --- The patient reloads the page mid-call: a new browser session joins the held
  // seat afresh (resumed: false), the provider drops the old peer connection, and both
  // negotiate a new one at once (glare, settled by perfect negotiation).
  const providerPcBefore = await provider.evaluate(() => {
    window.__oldPc = window.carewire.consultation.peerConnection("patient");
    return !!window.__oldPc;
  });
  await patient.reload();
  await until(patient, () => document.getElementById("call-phase")?.dataset.phase === "in_call", null, "the reloaded patient back in the call");
  const rejoined = await waitForMedia(patient, "provider", 0, "patient side after reloading");
  await until(provider, () => {
    const pc = window.carewire.consultation.peerConnection("patient");
    return pc && pc !== window.__oldPc && pc.connectionState === "connected" && window.__oldPc.connectionState === "closed";
  }, null, "the provider's new peer connection");
  check(providerPcBefore, "the provider had a peer connection before the reload");
  await waitForMedia(provider, "patient", 0, "provider side after the patient reloaded");
  log("renegotiated after a reload; frames", rejoined.frames);

  // --- The provider ends the call: both see it end, the appointment is fulfilled.
  await provider.getByRole("button", { name: "End consultation" }).click();
  await until(patient, () => document.getElementById("call-phase")?.dataset.reason === "ended", null, "the patient to see the end");
  await until(provider, () => document.getElementById("call-phase")?.dataset.phase === "closed", null, "the provider's call to close");
  log("call ended");

  // --- The provider writes and signs the visit note.
  await provider.getByRole("link", { name: "Write the visit note" }).click();
  await provider.getByLabel(/Subjective/).fill("Headaches improved since last visit.");
  await provider.getByLabel("Plan").fill("Continue current plan; review in 3 months.");
  await provider.getByRole("button", { name: "Save draft" }).click();
  const draft = provider.locator("#notes li.note[data-status=draft]");
  await draft.waitFor();
  await draft.getByRole("button", { name: "Sign note" }).click();
  await provider.locator("#notes li.note[data-status=signed]").waitFor();
  await checkAccessibility(provider, "notes page");
  log("note signed");

  // --- The patient's list shows the visit as completed.
  await patient.getByRole("link", { name: "Back to appointments" }).click();
  // Still among the current appointments (its time may be ahead), with the note.
  const completed = patient.locator(`#appointments > ul li.appointment[data-id="${appointmentId}"][data-status=fulfilled]`);
  await completed.waitFor();
  await completed.locator(".visit-note").waitFor();
  const noteText = await completed.locator(".visit-note").textContent();
  check(noteText.includes("Continue current plan") && noteText.includes("Headaches improved"), `the patient reads the signed note (got "${noteText}")`);
  await checkAccessibility(patient, "patient home with a completed visit and its note");
  log("patient sees the visit completed, with its note");

  // --- Signing out in the waiting room leaves the room and turns the camera off.
  await patient.locator("#slots button.slot").first().waitFor();
  const secondSlot = await pickTime(patient, MIN_LEAD_MS);
  await patient.locator(`#slots button.slot[data-starts-at="${secondSlot}"]`).click();
  await patient.getByRole("button", { name: "Book this time" }).click();
  const second = patient.locator("#appointments li.appointment[data-status=booked]");
  await second.waitFor();
  const secondId = await second.getAttribute("data-id");
  await second.getByRole("button", { name: "Join video consultation" }).click({ timeout: MIN_LEAD_MS + STEP_TIMEOUT_MS });
  await until(patient, () => document.getElementById("call-phase")?.dataset.phase === "waiting", null, "the patient back in a waiting room");
  await patient.evaluate(() => { window.__tracks = document.querySelector("video.local-video").srcObject.getTracks(); });
  await patient.getByRole("button", { name: "Sign out" }).click();
  await patient.getByLabel("Email").waitFor();
  check(await patient.evaluate(() => window.__tracks.length > 0 && window.__tracks.every((t) => t.readyState === "ended")), "signing out stops the camera and microphone");
  await provider.getByRole("link", { name: "Back to today" }).click();
  await provider.locator(`#calendar li.appointment[data-id="${secondId}"]`).getByRole("button", { name: "Open consultation" }).click();
  await until(provider, () => document.getElementById("call-phase")?.textContent.includes("Waiting for your patient"), null, "an empty waiting room");
  check((await provider.locator(".participants li").count()) === 0, "the signed-out patient is not in the room");
  log("signing out left the room and released the camera");

  // --- A provider whose camera and microphone fail still sees the patient. With
  // nothing to send the provider makes no offer, so the patient (polite) offers after
  // waiting for one.
  await provider.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = async () => {
      throw new DOMException("no camera or microphone here", "NotFoundError");
    };
  });
  await provider.reload();
  await until(provider, () => document.getElementById("call-phase")?.textContent.includes("Waiting for your patient"), null, "the provider back in the empty room");
  check(/No camera or microphone/.test(await provider.getByRole("alert").textContent()), "the provider is told the camera is missing");
  check(await provider.getByRole("button", { name: "Mute microphone" }).isDisabled(), "no microphone to mute");
  await patient.getByLabel("Email").fill(email);
  await patient.getByLabel("Password").fill("correct horse battery staple 42");
  await patient.getByRole("button", { name: "Sign in" }).click();
  await patient.locator(`#appointments li.appointment[data-id="${secondId}"]`).getByRole("button", { name: "Join video consultation" }).click();
  await until(patient, () => document.getElementById("call-phase")?.dataset.phase === "waiting", null, "the patient waiting again");
  await provider.getByRole("button", { name: "Admit patient" }).click();
  const oneWay = await waitForMedia(provider, "patient", 0, "a provider without a camera, watching the patient");
  await until(patient, () => window.carewire.consultation.peerConnection("provider")?.connectionState === "connected", null, "the patient's side to connect too");
  log("a provider without media sees the patient; frames", oneWay.frames);

  // --- A call that does not come up says so: the patient's browser may only use relay
  // candidates (and there is no TURN server), so its new peer connection never
  // connects. The screen says it is connecting, not "In call", then gives a hint and a
  // retry; with the network back, the retry connects.
  await patient.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Native {
      constructor(config = {}) {
        super(sessionStorage.getItem("cw-test-relay-only") ? { ...config, iceTransportPolicy: "relay" } : config);
      }
    };
  });
  await patient.evaluate(() => sessionStorage.setItem("cw-test-relay-only", "1"));
  await patient.reload();
  await until(patient, () => document.getElementById("call-phase")?.dataset.phase === "joining", null, "the patient connecting the video");
  await patient.locator("#slow-hint").waitFor({ timeout: 20_000 });
  const slowText = await patient.locator("#call-phase").textContent();
  check(!/in call/i.test(slowText), `a call without media does not say "In call" (got "${slowText}")`);
  check(/camera and microphone/.test(await patient.locator("#slow-hint").textContent()), "the hint names the camera permission and the network");
  await checkAccessibility(patient, "patient's call screen while the video is slow");
  await patient.evaluate(() => sessionStorage.removeItem("cw-test-relay-only"));
  await patient.getByRole("button", { name: "Try again" }).click();
  await until(patient, () => document.getElementById("call-phase")?.dataset.phase === "in_call", null, "the patient in the call after retrying");
  check(await patient.locator("#slow-hint").isHidden(), "the hint goes once the call is up");
  await waitForMedia(provider, "patient", 0, "the provider watching the patient after the retry");
  log("a slow call says so and its retry connects");

  // --- A provider's page left open across midnight. The page's time zone is chosen
  // so that its midnight comes within a minute or two (an offset such as GMT+05:37),
  // so the browser, the server and the real-time feed all keep the real time.
  const midnight = Math.ceil((Date.now() + 50_000) / 60_000) * 60_000;
  const utcMinutes = new Date(midnight).getUTCHours() * 60 + new Date(midnight).getUTCMinutes();
  let offset = (1440 - utcMinutes) % 1440;
  if (offset > 14 * 60) offset -= 1440;
  const zone = `GMT${offset < 0 ? "-" : "+"}${String(Math.floor(Math.abs(offset) / 60)).padStart(2, "0")}:${String(Math.abs(offset) % 60).padStart(2, "0")}`;
  const night = await open("night-provider", { timezoneId: zone, viewport: { width: 1280, height: 800 } });
  await night.goto(BASE);
  await night.getByLabel("Email").fill(PROVIDER_EMAIL);
  await night.getByLabel("Password").fill(PROVIDER_PASSWORD);
  await night.getByRole("button", { name: "Sign in" }).click();
  await until(night, () => document.getElementById("connection")?.dataset.state === "live", null, "the night provider's live connection");
  const dayBefore = await night.locator("#day-title").getAttribute("data-day");
  // A patient (over the API) books the first time after the page's midnight, on the
  // page's tomorrow, and checks in before midnight: the waiting room shows them.
  const visitor = await apiPatient(`night.${Date.now()}@example.test`);
  const [firstAfterMidnight, secondAfterMidnight] = (await api(`/v1/providers/${visitor.providerId}/slots?type=${visitor.typeId}`)).slots
    .filter((slot) => Date.parse(slot.starts_at) >= midnight);
  const early = await apiBook(visitor, firstAfterMidnight.starts_at);
  await apiCheckIn(visitor, early);
  await night.locator(`#waiting-room li.waiting[data-id="${early.id}"]`).waitFor();
  check(Date.now() < midnight, "the check-in was seen before the page's midnight");
  check(await night.locator(`#calendar li.appointment[data-id="${early.id}"]`).count() === 0, "before midnight the visit is on tomorrow's calendar");
  log("a check-in for tomorrow's first visit shows in today's waiting room", { zone });
  // Midnight passes: the day view moves on by itself and shows the visit.
  await until(night, (before) => document.getElementById("day-title")?.dataset.day !== before, dayBefore, "the day view to move to the new day", midnight - Date.now() + STEP_TIMEOUT_MS);
  check(Date.now() >= midnight, "the day moved on at midnight, not before");
  await night.locator(`#calendar li.appointment[data-id="${early.id}"]`).waitFor();
  // And a check-in after midnight shows without a reload.
  const later = await apiBook(visitor, secondAfterMidnight.starts_at);
  await apiCheckIn(visitor, later);
  await night.locator(`#waiting-room li.waiting[data-id="${later.id}"]`).waitFor();
  await checkAccessibility(night, "provider's day after midnight");
  log("the day view moved on at midnight and still sees new check-ins");

  check(accessibilityProblems.length === 0, `no serious accessibility problems (axe-core):\n${accessibilityProblems.join("\n")}`);
  check(consoleErrors.length === 0, `no errors in the pages' consoles:\n${consoleErrors.join("\n")}`);
  summary = {
    ok: true,
    appointment_id: appointmentId,
    frames: { patient: patientSide.frames, provider: afterDrop.frames },
    // Wall-clock times of this run, for the record (not assertions).
    timings_ms: { admit_to_media_both_sides: connectMs, drop_to_resumed: resumeMs },
  };
} catch (error) {
  summary = { ok: false, error: error.message };
  console.error(error);
  if (consoleErrors.length) console.error("page console errors:\n" + consoleErrors.join("\n"));
  if (consoleWarnings.length) console.error("page console warnings:\n" + consoleWarnings.join("\n"));
  mkdirSync(SCREENSHOTS, { recursive: true });
  for (const [name, page] of Object.entries(pages)) {
    const path = join(SCREENSHOTS, `${name}.png`);
    await page.screenshot({ path, fullPage: true }).catch(() => {});
    console.error(`screenshot of the ${name}'s window: ${path}`);
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(summary));
process.exit(summary.ok ? 0 : 1);
