// The patient's screens: their details (a patient record is needed before booking),
// their appointments with check-in, reschedule, cancel and join, reminders as they
// arrive, and booking: find a provider, see free slots in the browser's time zone,
// book. Everything shown is refreshed live from the real-time connection.

import { get, post, request } from "./api.js";
import {
  announce, background, busy, dayKey, field, formatDateTime, formatDay, formatShortDay, formatTime, h, latestOnly, localHour, newKey,
  replace, statusBadge, zoneLabel,
} from "./dom.js";

/** Appointments a patient can still act on. */
const ACTIVE = new Set(["pending", "proposed", "booked", "arrived"]);

/**
 * Whether `a` belongs with the current appointments rather than under "Earlier and
 * cancelled": one still to act on, or a completed visit until the day after it (a
 * visit completed early, its time still ahead, is not "earlier").
 */
function stillCurrent(a, now = new Date()) {
  if (ACTIVE.has(a.status)) return true;
  return a.status === "fulfilled" && dayKey(a.ends_at) >= dayKey(now.toISOString());
}

const NOTE_PARTS = [["subjective", "What you told us"], ["objective", "Findings"], ["assessment", "Assessment"], ["plan", "Plan"]];

/** A signed note (or amendment) of a visit, as its patient reads it. */
function visitNote(n) {
  return h(
    "section",
    { class: "visit-note", dataset: { id: n.id }, "aria-label": "Visit note" },
    h("p", { class: "label" }, `Visit note${n.signed_at ? `, signed ${formatDateTime(n.signed_at)}` : ""}`),
    NOTE_PARTS.map(([k, label]) => (n.content?.[k] ? h("p", {}, h("span", { class: "label" }, `${label}: `), n.content[k]) : null)),
  );
}

/** A video appointment that can still be joined: its room's hours, from the server. */
const joinable = (a) => a.modality === "video" && (a.status === "booked" || a.status === "arrived") && a.consultation;

/**
 * When `roomOpen` next changes for any of `appointments` (a room opens or closes), so
 * a screen can show or hide its "join" button on time without being reloaded.
 */
export function nextRoomChange(appointments, now = Date.now()) {
  const times = appointments
    .filter(joinable)
    .flatMap((a) => [Date.parse(a.consultation.opens_at), Date.parse(a.consultation.closes_at) + 1])
    .filter((t) => t > now);
  return times.length ? Math.min(...times) : null;
}

/** Whether `appointment`'s consultation room is open now (as the server will decide). */
export function roomOpen(appointment, now = Date.now()) {
  return (
    !!joinable(appointment) &&
    now >= Date.parse(appointment.consultation.opens_at) &&
    now <= Date.parse(appointment.consultation.closes_at)
  );
}

/**
 * Renders the patient's home into `main`. `ctx` holds `me` (GET /v1/me), the shared
 * `realtime` connection and `navigate(hash)`.
 */
export async function renderPatientHome(main, ctx) {
  if (!ctx.me.patient_id) return renderDetailsForm(main, ctx);

  const providers = new Map((await get("/v1/providers")).items.map((p) => [p.id, p]));
  if (!ctx.isCurrent()) return;
  const reminders = h("ul", { class: "reminders", id: "reminders" });
  const appointmentsList = h("div", { id: "appointments" });
  const booking = h("section", { class: "card", "aria-labelledby": "book-title", id: "booking" });
  const state = {
    notifications: new Map(),
    appointments: new Map(), // id → the latest view of it (its version for If-Match)
    types: new Map(), // type id → appointment type (for its cancellation cutoff)
    rescheduling: null,
    watchedProvider: null,
    appointmentsStale: false,
  };

  replace(
    main,
    h("h1", {}, "Your care"),
    h("section", { class: "card", "aria-labelledby": "reminders-title" }, h("h2", { id: "reminders-title" }, "Reminders"), reminders),
    h("section", { class: "card", "aria-labelledby": "appointments-title" }, h("h2", { id: "appointments-title" }, "Your appointments"), appointmentsList),
    booking,
  );

  const renderReminders = () => {
    const unread = [...state.notifications.values()].filter((n) => !n.read_at);
    if (unread.length === 0) return replace(reminders, h("li", { class: "empty" }, "No reminders."));
    replace(
      reminders,
      unread.map((n) =>
        h(
          "li",
          { class: "reminder", dataset: { id: n.id } },
          h("span", { id: `reminder-${n.id}` }, reminderText(n, providers)),
          " ",
          h("button", {
            type: "button",
            class: "link",
            "aria-describedby": `reminder-${n.id}`,
            // Over REST rather than the socket, so it is not lost while offline.
            onclick: (e) => background(async () => {
              await post(`/v1/me/notifications/${n.id}/read`);
              n.read_at = new Date().toISOString();
              renderReminders();
            }, e.currentTarget),
          }, "Dismiss"),
        ),
      ),
    );
  };

  /** The appointment types of the providers in `items`, for their cutoffs. */
  const loadTypes = async (items) => {
    const missing = [...new Set(items.filter((a) => !state.types.has(a.type_id)).map((a) => a.provider_id))];
    await Promise.all(missing.map(async (providerId) => {
      const { items: types } = await get(`/v1/providers/${providerId}/appointment-types`);
      for (const t of types) state.types.set(t.id, t);
    }));
  };

  const loadAppointments = latestOnly(async (isLatest) => {
    const since = new Date(Date.now() - 24 * 3600_000).toISOString();
    const { items } = await get(`/v1/appointments?from=${encodeURIComponent(since)}&limit=100`);
    await loadTypes(items).catch(() => {}); // without them, the server still enforces the cutoff
    if (items.some((a) => a.status === "fulfilled")) await loadNotes().catch(() => {}); // the visit shows without its note
    if (!isLatest()) return;
    for (const a of items) state.appointments.set(a.id, a);
    const change = nextRoomChange(items);
    clearTimeout(state.roomTimer);
    if (change !== null) state.roomTimer = ctx.later(Math.min(change - Date.now() + 250, 2 ** 31 - 1), () => background(loadAppointments));
    // Someone is typing a cancellation reason: do not take the form away from them.
    if (appointmentsList.querySelector("form")) {
      state.appointmentsStale = true;
      return;
    }
    state.appointmentsStale = false;
    const current = items.filter((a) => stillCurrent(a));
    const past = items.filter((a) => !stillCurrent(a));
    if (items.length === 0) {
      replace(appointmentsList, h("p", { class: "empty" }, "You have no appointments yet. Book one below."));
      return;
    }
    replace(
      appointmentsList,
      h("ul", { class: "appointments" }, current.map((a) => appointmentItem(a))),
      past.length ? h("details", {}, h("summary", {}, `Earlier and cancelled (${past.length})`), h("ul", { class: "appointments" }, past.map((a) => appointmentItem(a)))) : null,
    );
  });

  /** The signed notes of the patient's visits, by appointment (each read is audited). */
  const loadNotes = async () => {
    const { items } = await get(`/v1/patients/${ctx.me.patient_id}/notes`);
    state.notes = new Map();
    for (const n of items) {
      if (!n.appointment_id || n.status === "draft") continue;
      if (!state.notes.has(n.appointment_id)) state.notes.set(n.appointment_id, []);
      state.notes.get(n.appointment_id).push(n);
    }
  };

  /** Whether the patient may still cancel or move `a` themselves (the type's cutoff). */
  const changeable = (a) => {
    const cutoff = state.types.get(a.type_id)?.cancellation_cutoff_minutes ?? 0;
    return Date.now() <= Date.parse(a.starts_at) - cutoff * 60_000;
  };

  const appointmentItem = (a) => {
    const provider = providers.get(a.provider_id);
    const whenId = `when-${a.id}`;
    const actions = h("div", { class: "actions" });
    const item = h(
      "li",
      { class: "appointment", dataset: { id: a.id, status: a.status } },
      h("p", { class: "when", id: whenId }, formatDateTime(a.starts_at), " with ", provider?.display_name ?? "your provider"),
      h("p", {}, a.modality === "video" ? "Video" : "In person", " ", statusBadge(a.status)),
      a.reason ? h("p", { class: "reason" }, "Reason: ", a.reason) : null,
      (state.notes?.get(a.id) ?? []).map((n) => visitNote(n)),
      actions,
    );
    // Every action button names its appointment to screen readers.
    const action = (label, onclick, extra = {}) =>
      actions.append(h("button", { type: "button", "aria-describedby": whenId, onclick, ...extra }, label));
    const latest = () => state.appointments.get(a.id) ?? a;
    if (roomOpen(a)) {
      action("Join video consultation", () => ctx.navigate(`#/consult/${a.id}`), { class: "primary" });
    }
    if (a.status === "booked") {
      action("Check in", (e) => busy(e.currentTarget, async () => {
        await request("POST", `/v1/appointments/${a.id}/check-in`, { etag: `"${latest().version}"`, key: newKey() });
        announce("Checked in.");
        await loadAppointments();
      }));
    }
    // A provider booked this without a care relationship: it opens the patient's
    // record to them only once the patient accepts it.
    if (a.opens_record === false && !["cancelled", "noshow", "entered-in-error"].includes(a.status)) {
      actions.append(h("p", { class: "hint" }, "Your provider booked this for you. Accept it to let them see your record and notes."));
      action("Accept and share my record", (e) => busy(e.currentTarget, async () => {
        await request("POST", `/v1/appointments/${a.id}/accept`, { etag: `"${latest().version}"`, key: newKey() });
        announce("Accepted: your provider can now see your record and notes around this visit.");
        await loadAppointments();
      }));
    }
    if (a.status === "pending" || a.status === "proposed") {
      action("Confirm", (e) => busy(e.currentTarget, async () => {
        await request("POST", `/v1/appointments/${a.id}/confirm`, { etag: `"${latest().version}"`, key: newKey() });
        announce("Booked.");
        await loadAppointments();
      }), { class: "primary" });
    }
    if (a.status === "booked" || a.status === "pending") {
      if (changeable(a)) {
        action("Reschedule", () => {
          state.rescheduling = a.id;
          renderBooking(a.provider_id, a.type_id);
          booking.scrollIntoView({ behavior: "smooth" });
          booking.querySelector("h2")?.focus();
        });
        action("Cancel", () => showCancel(a, item), { class: "danger" });
      } else {
        actions.append(h("p", { class: "hint" }, "It is too late to change this appointment online. Please contact the clinic."));
      }
    }
    return item;
  };

  const showCancel = (a, item) => {
    if (item.querySelector("form")) return;
    const reason = h("textarea", { rows: 2, maxLength: 500, required: true });
    const key = newKey();
    const closeForm = () => {
      form.remove();
      if (state.appointmentsStale) background(loadAppointments);
    };
    const form = h(
      "form",
      { class: "inline-form" },
      field("Why are you cancelling? (only your care team sees it)", reason),
      h("button", { type: "submit", class: "danger" }, "Cancel appointment"),
      h("button", { type: "button", onclick: closeForm }, "Keep it"),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(form.querySelector("button[type=submit]"), async () => {
        const current = state.appointments.get(a.id) ?? a;
        await request("POST", `/v1/appointments/${a.id}/cancel`, { etag: `"${current.version}"`, key, body: { reason: reason.value.trim() } });
        announce("Appointment cancelled.");
        form.remove();
        await loadAppointments();
      });
    });
    item.append(form);
    reason.focus();
  };

  const renderBooking = async (providerId, typeId) => {
    const rescheduling = state.rescheduling ? state.appointments.get(state.rescheduling) : null;
    // Radio buttons rather than a <select>: a name wraps on a phone instead of being
    // cut off, and the specialty reads under it.
    const providerChoice = h(
      "fieldset",
      { class: "choices", id: "provider-choice", disabled: !!rescheduling },
      h("legend", {}, "Provider"),
      [...providers.values()].map((p) =>
        h(
          "label",
          { class: "choice" },
          h("input", { type: "radio", name: "provider", value: p.id, checked: p.id === providerId }),
          h("span", {}, h("strong", {}, p.display_name), p.specialty ? h("span", { class: "hint" }, p.specialty) : null),
        ),
      ),
    );
    const chosenProvider = () => providerChoice.querySelector("input[name=provider]:checked")?.value ?? "";
    const typeSelect = h("select", { id: "type-select", disabled: true }, h("option", { value: "" }, "Choose a provider first"));
    const slotsArea = h("div", { id: "slots" });
    replace(
      booking,
      h("h2", { id: "book-title", tabindex: "-1" }, rescheduling ? `Choose a new time (now ${formatDateTime(rescheduling.starts_at)})` : "Book an appointment"),
      h("p", { class: "hint", id: "zone-hint" }, `Times are shown in your time zone: ${zoneLabel()}.`),
      providerChoice,
      field("Type of visit", typeSelect),
      slotsArea,
      rescheduling ? h("button", { type: "button", onclick: () => { state.rescheduling = null; renderBooking(); } }, "Keep the current time") : null,
    );

    const loadTypesOf = async () => {
      const id = chosenProvider();
      watchProvider(id);
      replace(slotsArea);
      state.pickedDay = null;
      if (!id) return;
      const { items } = await get(`/v1/providers/${id}/appointment-types`);
      for (const t of items) state.types.set(t.id, t);
      replace(typeSelect, items.length ? null : h("option", { value: "" }, "No visit types offered"), items.map((t) =>
        h("option", { value: t.id, selected: t.id === typeId }, `${t.name} · ${t.duration_minutes} min${t.modality === "video" ? "" : ", in person"}`)));
      typeSelect.disabled = items.length === 0 || !!rescheduling;
      if (items.length) await loadSlots();
    };
    const loadSlots = latestOnly(async (isLatest) => {
      const provider = chosenProvider();
      const type = typeSelect.value;
      if (!provider || !type) return;
      const { slots } = await get(`/v1/providers/${provider}/slots?type=${type}`);
      if (!isLatest() || !slotsArea.isConnected) return;
      state.reloadSlots = loadSlots;
      // Keep keyboard focus on the same time (or day) when the list is rebuilt.
      const active = document.activeElement?.closest?.("#slots") ? document.activeElement : null;
      const focused = active?.classList.contains("slot") ? active.dataset.startsAt : undefined;
      const focusedDay = active?.dataset.day;
      if (slots.length === 0) {
        replace(slotsArea, h("p", { class: "empty" }, "No free times in the next 7 days."));
        return;
      }
      renderSlots(slots, provider, type);
      if (focused) {
        const again = slotsArea.querySelector(`button.slot[data-starts-at="${focused}"]`);
        if (again) again.focus();
        else {
          announce("The time you were on was just taken.");
          slotsArea.querySelector("button.slot")?.focus();
        }
      } else if (focusedDay) {
        slotsArea.querySelector(`button[data-day="${focusedDay}"]`)?.focus();
      }
    });
    /**
     * Days first, then that day's times: a week of free times on one page is hundreds
     * of buttons. The first free time is one tap away at the top.
     */
    const renderSlots = (slots, provider, type) => {
      const byDay = new Map();
      for (const slot of slots) {
        const key = dayKey(slot.starts_at);
        if (!byDay.has(key)) byDay.set(key, []);
        byDay.get(key).push(slot);
      }
      if (!state.pickedDay || !byDay.has(state.pickedDay)) state.pickedDay = byDay.keys().next().value;
      const first = slots[0];
      const daySlots = byDay.get(state.pickedDay);
      const parts = [["Night", 0, 6], ["Morning", 6, 12], ["Afternoon", 12, 17], ["Evening", 17, 24]]
        .map(([name, from, to]) => [name, daySlots.filter((s) => localHour(s.starts_at) >= from && localHour(s.starts_at) < to)])
        .filter(([, list]) => list.length > 0);
      replace(
        slotsArea,
        h("button", {
          type: "button",
          class: "primary first-free",
          id: "first-free",
          dataset: { startsAt: first.starts_at },
          onclick: () => confirmSlot(provider, type, first),
        }, `First free time: ${formatDateTime(first.starts_at)}`),
        h("h3", { id: "days-title" }, "Or choose a day"),
        h("div", { class: "day-strip", role: "group", "aria-labelledby": "days-title" }, [...byDay].map(([key, list]) =>
          h("button", {
            type: "button",
            class: "day",
            dataset: { day: key },
            "aria-pressed": String(key === state.pickedDay),
            onclick: (e) => {
              state.pickedDay = key;
              renderSlots(slots, provider, type);
              slotsArea.querySelector(`button[data-day="${e.currentTarget.dataset.day}"]`)?.focus();
            },
          }, h("span", { class: "date" }, formatShortDay(list[0].starts_at)), h("span", { class: "count" }, `${list.length} ${list.length === 1 ? "time" : "times"}`)))),
        h("h3", { id: "times-title" }, `Times on ${formatDay(daySlots[0].starts_at)}`),
        parts.map(([name, list]) =>
          h(
            "fieldset",
            { class: "day-part" },
            h("legend", {}, name),
            h("div", { class: "slot-grid" }, list.map((slot) =>
              h("button", {
                type: "button",
                class: "slot",
                dataset: { startsAt: slot.starts_at },
                "aria-label": `${formatDay(slot.starts_at)} at ${formatTime(slot.starts_at)}`,
                onclick: () => confirmSlot(provider, type, slot),
              }, formatTime(slot.starts_at))),
            ),
          ),
        ),
      );
    };
    const confirmSlot = (provider, type, slot) => {
      const reason = h("textarea", { id: "reason", rows: 3, maxLength: 1000 });
      const key = newKey(); // one key per decision: a retry of this form books once
      const submit = h("button", { type: "submit", class: "primary", id: "confirm-booking" }, rescheduling ? "Move my appointment here" : "Book this time");
      const form = h(
        "form",
        { class: "confirm" },
        h("p", {}, h("strong", {}, formatDateTime(slot.starts_at)), ` with ${providers.get(provider)?.display_name ?? "your provider"}`),
        rescheduling ? null : field("Reason for your visit (optional, only your care team sees it)", reason),
        submit,
        h("button", { type: "button", onclick: () => background(loadSlots) }, "Choose another time"),
      );
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        busy(submit, async () => {
          if (rescheduling) {
            // The version of the appointment as the list shows it now.
            const current = state.appointments.get(rescheduling.id) ?? rescheduling;
            await request("POST", `/v1/appointments/${rescheduling.id}/reschedule`, {
              etag: `"${current.version}"`, key, body: { starts_at: slot.starts_at },
            });
            state.rescheduling = null;
            announce("Your appointment was moved.");
          } else {
            const body = { provider_id: provider, type_id: type, starts_at: slot.starts_at };
            if (reason.value.trim()) body.reason = reason.value.trim();
            await post("/v1/appointments", body, { key });
            announce("Booked.");
          }
          await loadAppointments();
          renderBooking(provider, type);
        });
      });
      replace(slotsArea, form);
      (rescheduling ? submit : reason).focus();
    };

    providerChoice.addEventListener("change", () => busy(null, loadTypesOf));
    typeSelect.addEventListener("change", () => busy(null, loadSlots));
    if (chosenProvider()) await busy(null, loadTypesOf);
  };

  // Follow the chosen provider's free/busy changes, so a time someone else takes
  // disappears from the list while you look at it.
  const watchProvider = (providerId) => {
    if (state.watchedProvider === providerId) return;
    if (state.watchedProvider) ctx.realtime.unfollow(`provider:${state.watchedProvider}:slots`);
    state.watchedProvider = providerId || null;
    if (providerId) ctx.realtime.follow(`provider:${providerId}:slots`);
  };

  const loadNotifications = async () => {
    const { items } = await get("/v1/me/notifications?unread=true&limit=50");
    for (const n of items) state.notifications.set(n.id, n);
    renderReminders();
  };

  ctx.on("notifications", ({ detail: items }) => {
    for (const n of items) state.notifications.set(n.id, n);
    renderReminders();
  });
  ctx.on("resync", () => background(async () => {
    await loadAppointments();
    await loadNotifications();
  }));
  ctx.on("event", ({ detail: message }) => {
    if (message.event === "notification") {
      state.notifications.set(message.data.id, message.data);
      renderReminders();
      announce(reminderText(message.data, providers));
    } else if (message.event.startsWith("appointment.")) {
      background(loadAppointments);
    } else if (message.event.startsWith("slot.") || message.event === "availability.changed") {
      // A time went or came back: refresh the list unless the patient is confirming.
      if (!document.querySelector("#slots form") && state.reloadSlots) background(state.reloadSlots);
    }
  });

  await Promise.all([loadAppointments(), loadNotifications()]);
  await renderBooking(providers.size === 1 ? [...providers.keys()][0] : undefined);
}

function reminderText(n, providers) {
  const p = n.payload ?? {};
  const who = providers.get(p.provider_id)?.display_name ?? "your provider";
  if (n.kind === "appointment.reminder" && p.starts_at) {
    return `Reminder: your ${p.modality === "video" ? "video " : ""}appointment with ${who} is at ${formatDateTime(p.starts_at)}${n.late ? " (sent late)" : ""}.`;
  }
  return `Update about your appointment with ${who}.`;
}

/** The form a new patient fills in once: their record, needed before booking. */
function renderDetailsForm(main, ctx) {
  const given = h("input", { autocomplete: "given-name", required: true, maxLength: 100 });
  const family = h("input", { autocomplete: "family-name", required: true, maxLength: 100 });
  const birth = h("input", { type: "date", autocomplete: "bday", required: true, max: new Date().toISOString().slice(0, 10) });
  const submit = h("button", { type: "submit", class: "primary" }, "Save and continue");
  const form = h(
    "form",
    { class: "card", id: "details-form" },
    h("h1", {}, "About you"),
    h("p", {}, "Your care team needs your name and date of birth before you book. They are stored encrypted."),
    field("First name", given),
    field("Last name", family),
    field("Date of birth", birth),
    submit,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, async () => {
      const created = await post("/v1/patients", {
        legal_name: { given: given.value.trim(), family: family.value.trim() },
        birth_date: birth.value,
      });
      ctx.me.patient_id = created.id;
      await renderPatientHome(main, ctx);
    });
  });
  replace(main, form);
  given.focus();
}
