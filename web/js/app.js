// The client's entry point: sign-in and registration, the header, and a small hash
// router (`#/`, `#/consult/{appointment}`, `#/notes/{patient}/{appointment}`) that
// renders the signed-in role's screens and keeps one real-time connection per tab.

import * as api from "./api.js";
import { renderCall } from "./call-view.js";
import { busy, field, h, hideError, replace, showError, announce } from "./dom.js";
import { renderPatientHome } from "./patient.js";
import { forgetPatientNames, patientName, renderNotes, renderProviderHome } from "./provider.js";
import { Realtime } from "./realtime.js";

const main = document.getElementById("main");
const account = document.getElementById("account");
const connection = document.getElementById("connection");

let me = null;
let realtime = null;
let viewListeners = []; // [type, handler] registered by the current view
let viewTimers = []; // timeouts set by the current view
let activeCall = null; // the consultation on screen: {consultation, stop()}
let renderId = 0;

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** What each view gets: who is signed in, the live connection, navigation. */
function context() {
  const id = renderId;
  return {
    me,
    realtime,
    navigate,
    /** Whether this view is still the one on screen (after an await, it may not be). */
    isCurrent: () => id === renderId,
    on(type, handler) {
      realtime.addEventListener(type, handler);
      viewListeners.push([type, handler]);
    },
    /** Runs `fn` after `ms`, unless the view has changed by then; returns the timer. */
    later(ms, fn) {
      const timer = setTimeout(() => {
        viewTimers = viewTimers.filter((t) => t !== timer); // a view that reschedules itself does not pile up ids
        fn();
      }, ms);
      viewTimers.push(timer);
      return timer;
    },
  };
}

/** Ends what the current screen started: its listeners, its timers, its call. */
function leaveView() {
  activeCall?.stop();
  activeCall = null;
  for (const [type, handler] of viewListeners) realtime?.removeEventListener(type, handler);
  viewListeners = [];
  for (const timer of viewTimers) clearTimeout(timer);
  viewTimers = [];
}

async function startSession() {
  me = await api.get("/v1/me");
  realtime = new Realtime();
  realtime.addEventListener("state", ({ detail }) => {
    connection.dataset.state = detail;
    connection.textContent = { live: "Live", connecting: "Connecting…", offline: "Offline, retrying…" }[detail] ?? detail;
  });
  realtime.addEventListener("ended", () => {
    api.forget();
    showError(new Error("Your session ended. Please sign in again."));
    signedOut();
  });
  realtime.start();
  window.carewire = { ...(window.carewire ?? {}), realtime };
  renderHeader();
}

function renderHeader() {
  if (!me) {
    replace(account);
    connection.hidden = true;
    return;
  }
  connection.hidden = false;
  const signOut = h("button", { type: "button", class: "link", id: "sign-out" }, "Sign out");
  signOut.addEventListener("click", () => busy(signOut, async () => {
    await api.logout();
    signedOut();
  }));
  replace(account, h("span", { class: "who" }, `${me.email} (${me.role})`), signOut);
}

function signedOut() {
  renderId++; // a screen still loading must not appear after this
  leaveView();
  realtime?.stop();
  realtime = null;
  me = null;
  forgetPatientNames();
  announce("");
  renderHeader();
  if (location.hash !== "#/") history.replaceState(null, "", "#/");
  renderSignIn();
}

async function route() {
  const id = ++renderId;
  leaveView();
  hideError();
  if (!api.currentSession()) return renderSignIn();
  if (!me) {
    try {
      await startSession();
    } catch (error) {
      api.forget();
      showError(error);
      return renderSignIn();
    }
  }
  if (id !== renderId) return;
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "consult" && parts[1]) {
      await renderConsultation(parts[1], new URLSearchParams(query ?? ""), () => id === renderId);
    } else if (parts[0] === "notes" && parts[1] && parts[2] && me.role === "provider") {
      await renderNotes(main, context(), parts[1], parts[2]);
    } else if (me.role === "provider") {
      await renderProviderHome(main, context());
    } else if (me.role === "patient") {
      await renderPatientHome(main, context());
    } else {
      replace(main, h("h1", {}, "Administration"), h("p", {}, "This client covers patients and providers. Administrators use the API (see /openapi.json)."));
    }
  } catch (error) {
    showError(error);
  }
  main.focus({ preventScroll: true });
}

async function renderConsultation(appointmentId, query, isCurrent) {
  const appointment = await api.get(`/v1/appointments/${appointmentId}`);
  let peerName;
  if (me.role === "provider") {
    peerName = await patientName(appointment.patient_id).catch(() => undefined);
  } else {
    peerName = (await api.get(`/v1/providers/${appointment.provider_id}`).catch(() => null))?.display_name;
  }
  if (!isCurrent()) return;
  activeCall = await renderCall(main, appointment, {
    role: me.role,
    peerName,
    isCurrent,
    admitOnArrival: query.get("admit") === "1",
    onDone: (reason) => {
      const back = me.role === "provider" && reason === "ended"
        ? h("a", { href: `#/notes/${appointment.patient_id}/${appointment.id}`, class: "button primary", id: "after-call" }, "Write the visit note")
        : h("a", { href: "#/", class: "button", id: "after-call" }, "Back to appointments");
      main.querySelector(".controls")?.after(back);
      back.focus();
    },
  });
}

function renderSignIn() {
  const email = h("input", { type: "email", autocomplete: "username", required: true, id: "email" });
  const password = h("input", { type: "password", autocomplete: "current-password", required: true, minLength: 12, id: "password" });
  const signIn = h("button", { type: "submit", class: "primary", id: "sign-in" }, "Sign in");
  const register = h("button", { type: "button", id: "register" }, "Create a patient account");
  const form = h(
    "form",
    { class: "card narrow", id: "sign-in-form", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in to Carewire"),
    field("Email", email),
    field("Password", password, "At least 12 characters. New patients: choose a passphrase of a few unrelated words."),
    h("div", { class: "actions" }, signIn, register),
  );
  const begin = async (action) => {
    if (!form.reportValidity()) return;
    await action(email.value.trim(), password.value);
    announce("Signed in.");
    await route();
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(signIn, () => begin(api.login));
  });
  register.addEventListener("click", () => {
    password.autocomplete = "new-password";
    busy(register, () => begin(api.register));
  });
  replace(main, form);
  email.focus();
}

window.addEventListener("hashchange", route);
route();
