// DOM and formatting helpers shared by every view.
//
// Elements are built with `h()`, never from HTML strings: text from the server (names,
// reasons, notes) is always set as text, so nothing it contains can run as markup.

/** Builds an element: `h("button", { class: "primary", onclick }, "Book")`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else if (name in el && typeof el[name] !== "function" && !name.includes("-")) {
      el[name] = value;
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A labelled form field: the label is tied to the control for screen readers. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl);
}

/** Says something to screen-reader users (and shows it in the status line). */
export function announce(message) {
  const status = document.getElementById("status");
  if (status) status.textContent = message;
}

/** Shows an error to everyone: a visible banner that assistive technology reads out. */
export function showError(error) {
  const alert = document.getElementById("alert");
  if (!alert) return;
  const message = errorMessage(error);
  replace(alert, h("p", {}, message), h("button", { type: "button", class: "link", onclick: () => hideError() }, "Dismiss"));
  alert.hidden = false;
}

export function hideError() {
  const alert = document.getElementById("alert");
  if (alert) {
    alert.hidden = true;
    alert.replaceChildren();
  }
}

/** A sentence for a person from whatever went wrong. */
export function errorMessage(error) {
  if (!error) return "Something went wrong.";
  if (error.problem) {
    const p = error.problem;
    const fields = Array.isArray(p.errors)
      ? p.errors.map((e) => `${e.field ?? e.pointer ?? ""} ${e.message ?? e.detail ?? ""}`.trim()).filter(Boolean)
      : [];
    return [p.detail || p.title || "The request failed.", ...fields].join(" ");
  }
  if (error.name === "NotAllowedError") return "The browser was not allowed to use the camera or microphone.";
  if (error.name === "NotFoundError") return "No camera or microphone was found.";
  if (error instanceof TypeError) return "Carewire could not be reached. Check your connection and try again.";
  return error.message || String(error);
}

/**
 * Runs an async action someone asked for with `button` (disabled meanwhile): the last
 * error on screen is cleared first, and a failure is shown.
 */
export async function busy(button, action) {
  hideError();
  return background(action, button);
}

/**
 * Runs work nobody clicked for (a live refresh, a timer), or a small action that should
 * not clear a message the person has not read yet: failures are shown, but an error
 * already on screen stays. `button`, if given, is disabled meanwhile.
 */
export async function background(action, button) {
  const wasDisabled = button?.disabled;
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  } finally {
    if (button) button.disabled = wasDisabled;
  }
}

/**
 * Wraps a loader so that only the latest call renders: a slow response that returns
 * after a newer one is dropped instead of painting stale data over fresh.
 */
export function latestOnly(load) {
  let generation = 0;
  return async (...args) => {
    const mine = ++generation;
    return load(() => mine === generation, ...args);
  };
}

/** The browser's time zone, e.g. "Europe/Berlin". */
export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

/**
 * The browser's time zone as people know it at `at`: "Central European Standard Time
 * (UTC+01:00)", never an identifier or a legacy alias such as "Asia/Calcutta".
 */
export function zoneLabel(at = new Date()) {
  const part = (style) =>
    new Intl.DateTimeFormat(undefined, { timeZoneName: style }).formatToParts(at).find((p) => p.type === "timeZoneName")?.value ?? "";
  const offset = part("longOffset").replace(/^GMT/, "UTC") || "UTC";
  const name = part("long");
  // Zones without a name of their own are named by their offset ("GMT+05:37").
  return !name || /^(GMT|UTC)([+\-\u2212]|$)/.test(name) ? offset : `${name} (${offset})`;
}

const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long" });
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
});

/** "Thursday 26 November" in the browser's zone. */
export const formatDay = (iso) => dayFormat.format(new Date(iso));
/** "09:30" in the browser's zone. */
export const formatTime = (iso) => timeFormat.format(new Date(iso));
/** "Thu 26 Nov, 09:30 CET" in the browser's zone. */
export const formatDateTime = (iso) => dateTimeFormat.format(new Date(iso));
const shortDayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
/** "Thu 26 Nov" in the browser's zone. */
export const formatShortDay = (iso) => shortDayFormat.format(new Date(iso));
/** The browser-local hour (0-23) of an instant. */
export const localHour = (iso) => new Date(iso).getHours();
/** The browser-local calendar day of an instant, as a grouping key. */
export const dayKey = (iso) => {
  const d = new Date(iso);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
};

/** How a FHIR appointment status reads to a person. */
export const STATUS_LABELS = {
  pending: "Held",
  proposed: "Proposed",
  booked: "Booked",
  arrived: "Checked in",
  fulfilled: "Completed",
  cancelled: "Cancelled",
  noshow: "Missed",
  "entered-in-error": "Entered in error",
};

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, dataset: { status } }, STATUS_LABELS[status] ?? status);
}

/** A random key for Idempotency-Key headers. */
export function newKey() {
  return crypto.randomUUID();
}
