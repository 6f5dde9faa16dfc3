// The provider's screens: today's calendar, the waiting room filling live as patients
// check in or enter the consultation room, opening a consultation (and admitting the
// patient), and clinical notes: write a draft, then sign it.

import { get, post, request } from "./api.js";
import { announce, background, busy, dayKey, field, formatDateTime, formatTime, h, latestOnly, replace, statusBadge } from "./dom.js";
import { nextRoomChange, roomOpen } from "./patient.js";

const patientNames = new Map(); // patient id → display name (each first read is audited)

/** Forgets the names read so far: the next provider to sign in reads (and is audited) anew. */
export function forgetPatientNames() {
  patientNames.clear();
}

/** A patient's name, read from their record (the read is audited by the server). */
export async function patientName(patientId) {
  if (!patientNames.has(patientId)) {
    const p = await get(`/v1/patients/${patientId}`);
    patientNames.set(patientId, `${p.preferred_name || p.legal_name.given} ${p.legal_name.family}`);
  }
  return patientNames.get(patientId);
}

function startOfToday() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d;
}

/** The local midnight after `day` (not 24 hours later: DST days are 23 or 25 hours). */
function nextDay(day) {
  const d = new Date(day);
  d.setDate(d.getDate() + 1);
  return d;
}

/** How far around now the waiting room looks for checked-in patients. */
const WAITING_LOOKBACK_MS = 24 * 3600_000;
const WAITING_LOOKAHEAD_MS = 12 * 3600_000;
/** How often the day view checks that its day is still today (a sleeping laptop's timers run late). */
const DAY_CHECK_MS = 30_000;

/**
 * Whether a checked-in patient is waiting now: until their video room closes, or an
 * in-person visit ends. Not tied to a calendar day: a 00:00 visit checked in at 23:45
 * is waiting before midnight.
 */
function waitingNow(a, now = Date.now()) {
  if (a.status !== "arrived") return false;
  const until = a.consultation ? Date.parse(a.consultation.closes_at) : Date.parse(a.ends_at);
  return now <= until;
}

/** When `waitingNow` or `roomOpen` next changes for any of `appointments`. */
function nextWaitingChange(appointments, now = Date.now()) {
  const times = appointments
    .map((a) => (a.consultation ? Date.parse(a.consultation.closes_at) : Date.parse(a.ends_at)) + 1)
    .filter((t) => t > now);
  const room = nextRoomChange(appointments, now);
  if (room !== null) times.push(room);
  return times.length ? Math.min(...times) : null;
}

/** Renders the provider's day into `main`; `ctx` as for the patient's home. */
export async function renderProviderHome(main, ctx) {
  const waiting = h("ul", { class: "waiting-room", id: "waiting-room" });
  const calendar = h("ol", { class: "calendar", id: "calendar" });
  const title = h("h1", { id: "day-title" });
  let day = startOfToday();

  replace(
    main,
    title,
    h("section", { class: "card", "aria-labelledby": "waiting-title" }, h("h2", { id: "waiting-title" }, "Waiting room"), waiting),
    h("section", { class: "card", "aria-labelledby": "calendar-title" }, h("h2", { id: "calendar-title" }, "Calendar"), calendar),
  );
  const showDay = () => {
    title.dataset.day = dayKey(day.toISOString());
    title.textContent = `Today, ${day.toLocaleDateString(undefined, { weekday: "long", day: "numeric", month: "long" })}`;
  };
  showDay();

  if (!ctx.me.provider_id) {
    replace(calendar, h("li", { class: "empty" }, "Your provider profile has not been set up yet. Ask an administrator to create it."));
    return;
  }

  let changeTimer = null;
  let waitingBefore = null; // ids in the waiting room at the last render
  const load = latestOnly(async (isLatest) => {
    const now = Date.now();
    const range = (from, to) => `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`;
    const [{ items }, { items: arrivedAround }] = await Promise.all([
      get(`/v1/appointments?${range(day, nextDay(day))}&limit=100`),
      get(`/v1/appointments?status=arrived&${range(new Date(now - WAITING_LOOKBACK_MS), new Date(now + WAITING_LOOKAHEAD_MS))}&limit=100`),
    ]);
    const arrived = arrivedAround.filter((a) => waitingNow(a));
    const everyone = [...items, ...arrived];
    await Promise.all([...new Set(everyone.map((a) => a.patient_id))].map((id) => patientName(id).catch(() => null)));
    if (!isLatest()) return;
    const change = nextWaitingChange(everyone);
    clearTimeout(changeTimer);
    if (change !== null) changeTimer = ctx.later(Math.min(change - Date.now() + 250, 2 ** 31 - 1), () => background(load));
    // Say who arrived, rather than making screen readers re-read the whole list.
    if (waitingBefore) {
      for (const a of arrived.filter((a) => !waitingBefore.has(a.id))) {
        announce(`${patientNames.get(a.patient_id) ?? "A patient"} is in the waiting room.`);
      }
    }
    waitingBefore = new Set(arrived.map((a) => a.id));
    replace(
      waiting,
      arrived.length === 0
        ? h("li", { class: "empty" }, "Nobody is waiting.")
        : arrived.map((a) =>
            h(
              "li",
              { class: "waiting", dataset: { id: a.id } },
              h("span", { id: `waiting-${a.id}` }, h("strong", {}, patientNames.get(a.patient_id) ?? "A patient"),
                ` is waiting for their ${dayKey(a.starts_at) === dayKey(new Date().toISOString()) ? formatTime(a.starts_at) : formatDateTime(a.starts_at)} appointment. `),
              roomOpen(a)
                ? h("button", { type: "button", class: "primary", "aria-describedby": `waiting-${a.id}`, onclick: () => ctx.navigate(`#/consult/${a.id}?admit=1`) }, "Admit and start video")
                : a.consultation
                  ? h("span", { class: "hint" }, `The room opens at ${formatTime(a.consultation.opens_at)}.`)
                  : null,
            ),
          ),
    );
    replace(
      calendar,
      items.length === 0
        ? h("li", { class: "empty" }, "No appointments today.")
        : items.map((a) =>
            h(
              "li",
              { class: "appointment", dataset: { id: a.id, status: a.status } },
              h("p", { class: "when", id: `when-${a.id}` }, `${formatTime(a.starts_at)}–${formatTime(a.ends_at)}, ${patientNames.get(a.patient_id) ?? "patient"}`),
              h("p", {}, statusBadge(a.status)),
              a.reason ? h("p", { class: "reason" }, "Reason for visit: ", a.reason) : null,
              h(
                "div",
                { class: "actions" },
                roomOpen(a) ? h("button", { type: "button", "aria-describedby": `when-${a.id}`, onclick: () => ctx.navigate(`#/consult/${a.id}`) }, "Open consultation") : null,
                h("button", { type: "button", "aria-describedby": `when-${a.id}`, onclick: () => ctx.navigate(`#/notes/${a.patient_id}/${a.id}`) }, "Notes"),
              ),
            ),
          ),
    );
  });

  // At midnight the view moves to the new day by itself: a timer for midnight, and a
  // check every half minute in case the timer ran late (a laptop asleep, a clock set).
  const followTheDay = () => {
    const today = startOfToday();
    if (today.getTime() !== day.getTime()) {
      day = today;
      showDay();
      announce(`It is now ${title.textContent.replace(/^Today, /, "")}.`);
      background(load);
    }
    ctx.later(Math.max(250, Math.min(DAY_CHECK_MS, nextDay(day).getTime() - Date.now() + 50)), followTheDay);
  };
  followTheDay();

  // The waiting room: the queue topic carries check-ins and status changes of this
  // provider's appointments as they commit.
  ctx.realtime.follow(`provider:${ctx.me.provider_id}:queue`);
  ctx.on("event", ({ detail: message }) => {
    if (message.event.startsWith("appointment.")) background(load);
  });
  ctx.on("resync", () => background(load));
  await load();
}

/** A patient's notes for one appointment: list, write a draft, sign. */
export async function renderNotes(main, ctx, patientId, appointmentId) {
  const [name, appointment] = await Promise.all([patientName(patientId), get(`/v1/appointments/${appointmentId}`)]);
  if (!ctx.isCurrent()) return;
  const list = h("ul", { class: "notes", id: "notes" });
  const fields = {
    subjective: h("textarea", { rows: 3, maxLength: 20000 }),
    objective: h("textarea", { rows: 3, maxLength: 20000 }),
    assessment: h("textarea", { rows: 3, maxLength: 20000 }),
    plan: h("textarea", { rows: 3, maxLength: 20000 }),
  };
  const save = h("button", { type: "submit", class: "primary", id: "save-note" }, "Save draft");
  const form = h(
    "form",
    { class: "card", id: "note-form", "aria-labelledby": "note-title" },
    h("h2", { id: "note-title" }, "New note"),
    field("Subjective (what the patient reports)", fields.subjective),
    field("Objective (findings)", fields.objective),
    field("Assessment", fields.assessment),
    field("Plan", fields.plan),
    save,
  );

  replace(
    main,
    h("p", {}, h("a", { href: "#/" }, "← Back to today")),
    h("h1", {}, `Notes for ${name}`),
    h("p", {}, `Appointment ${formatDateTime(appointment.starts_at)} `, statusBadge(appointment.status)),
    h("section", { class: "card", "aria-labelledby": "notes-title" }, h("h2", { id: "notes-title" }, "Notes"), list),
    form,
  );

  const load = async () => {
    const { items } = await get(`/v1/patients/${patientId}/notes`);
    replace(
      list,
      items.length === 0
        ? h("li", { class: "empty" }, "No notes yet.")
        : items.map((n) =>
            h(
              "li",
              { class: "note", dataset: { id: n.id, status: n.status } },
              h("p", {}, h("strong", {}, n.status === "signed" ? `Signed ${formatDateTime(n.signed_at)}` : n.status === "draft" ? "Draft" : n.status), ` · version ${n.version}`),
              ["subjective", "objective", "assessment", "plan"].map((k) => (n.content[k] ? h("p", {}, h("span", { class: "label" }, `${k[0].toUpperCase()}${k.slice(1)}: `), n.content[k]) : null)),
              n.status === "draft" && n.author_id === ctx.me.id
                ? h("button", {
                    type: "button",
                    class: "primary",
                    onclick: (e) => busy(e.currentTarget, async () => {
                      await request("POST", `/v1/patients/${patientId}/notes/${n.id}/sign`, { etag: `"${n.version}"` });
                      announce("Note signed.");
                      await load();
                    }),
                  }, "Sign note")
                : null,
            ),
          ),
    );
  };

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(save, async () => {
      const body = { appointment_id: appointmentId };
      for (const [k, el] of Object.entries(fields)) if (el.value.trim()) body[k] = el.value.trim();
      await post(`/v1/patients/${patientId}/notes`, body);
      for (const el of Object.values(fields)) el.value = "";
      announce("Draft saved.");
      await load();
    });
  });
  await load();
}
