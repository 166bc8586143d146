// The login page: one form, two actions (log in / create account), answers shown in place.
import { ApiError, handoff, postJSON } from "./api.js";
import { plural } from "./format.js";

const form = document.getElementById("auth-form");
const username = document.getElementById("username");
const password = document.getElementById("password");
const messageBox = document.getElementById("auth-message");
const buttons = form.querySelectorAll("button[type=submit]");
const togglePassword = document.getElementById("toggle-password");
const minPasswordLength = Number(form.dataset.minPasswordLength) || 8;

// A rate limit makes its own action wait, and only that one: the server answers /login and
// /register with their own 429 and Retry-After. Registrations (per address, for an hour) must
// not keep anybody from logging in, and too many logins as one name must not keep anybody
// from creating another account. action -> {until (ms), timer, text (the message box's)}
const waits = new Map();

function show(kind, text) {
  messageBox.hidden = false;
  messageBox.className = `notice notice-${kind}`;
  messageBox.textContent = text;
}

function clear() {
  messageBox.hidden = true;
  messageBox.textContent = "";
  for (const field of [username, password]) field.removeAttribute("aria-invalid");
}

function flag(field) {
  field.setAttribute("aria-invalid", "true");
  field.focus();
}

let busy = false;

function waiting(action) {
  return waits.has(action);
}

function setBusy(value) {
  busy = value;
  form.setAttribute("aria-busy", String(busy));
  for (const button of buttons) {
    const action = button.dataset.action;
    button.disabled = busy || waiting(action);
    // The wait stays on the button itself when the message box has moved on to other news.
    const wait = waits.get(action);
    button.title = wait ? wait.text : "";
  }
}

/** A wait in the units a person thinks in: "40 seconds", "58 minutes", "2 hours 5 minutes". */
export function humanWait(seconds) {
  if (seconds <= 90) return plural(seconds, "second");
  const minutes = Math.ceil(seconds / 60);
  if (minutes <= 90) return plural(minutes, "minute");
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest ? `${plural(hours, "hour")} ${plural(rest, "minute")}` : plural(hours, "hour");
}

function waitText(action, seconds) {
  if (action === "register") {
    return `Too many accounts were created from here. Try again in ${humanWait(seconds)} to create another; you can log in now.`;
  }
  return `Too many attempts. Try again in ${humanWait(seconds)} to log in; you can create an account now.`;
}

/** After a 429: say how long `action` must wait, count it down, and keep its button off. */
function lockFor(action, seconds) {
  clearInterval(waits.get(action)?.timer);
  const wait = { until: Date.now() + Math.max(1, Math.ceil(seconds)) * 1000, timer: null, text: "" };
  waits.set(action, wait);
  const tick = () => {
    const remaining = Math.ceil((wait.until - Date.now()) / 1000);
    // Another answer shown meanwhile (a login refused) stays: the countdown only updates its own.
    const ours = messageBox.textContent === wait.text;
    if (remaining <= 0) {
      clearInterval(wait.timer);
      waits.delete(action);
      setBusy(busy);
      if (ours) show("info", "You can try again now.");
      return;
    }
    wait.text = waitText(action, remaining);
    if (ours) show("error", wait.text);
    setBusy(busy);
  };
  wait.text = waitText(action, Math.ceil((wait.until - Date.now()) / 1000));
  show("error", wait.text);
  wait.timer = setInterval(tick, 1000);
  setBusy(busy);
}

function explain(error, name) {
  switch (error.code) {
    case "username_taken":
      flag(username);
      return `The name “${name}” is already taken. Choose another, or log in if it is yours.`;
    case "invalid_username":
      flag(username);
      return "Usernames are 3–32 characters: letters, digits, or _ . -";
    case "weak_password":
      flag(password);
      return `That password is too weak: use at least ${minPasswordLength} characters.`;
    case "invalid_credentials":
      flag(password);
      password.select();
      return "Wrong username or password.";
    case "network_error":
      return "The server cannot be reached. Check your connection and try again.";
    default:
      return error.message || `Something went wrong (HTTP ${error.status}). Please try again.`;
  }
}

async function submit(action) {
  if (waiting(action)) return;
  clear();
  const credentials = { username: username.value.trim(), password: password.value };
  if (!credentials.username) {
    show("error", "Enter a username.");
    flag(username);
    return;
  }
  if (!credentials.password) {
    show("error", "Enter a password.");
    flag(password);
    return;
  }
  setBusy(true);
  let step = action;
  try {
    if (action === "register") {
      await postJSON("/register", credentials);
      show("success", "Account created. Signing you in…");
      step = "login";
    }
    await postJSON("/login", credentials);
    window.location.assign("/");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.code === "rate_limited") {
      lockFor(step, error.retryAfter ?? 30);
      return;
    }
    show("error", explain(error, credentials.username));
  } finally {
    setBusy(false);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const action = event.submitter?.dataset.action ?? "login";
  submit(action);
});

togglePassword.addEventListener("click", () => {
  const showing = password.type === "text";
  password.type = showing ? "password" : "text";
  togglePassword.textContent = showing ? "Show" : "Hide";
  togglePassword.setAttribute("aria-pressed", String(!showing));
  togglePassword.setAttribute("aria-label", showing ? "Show password" : "Hide password");
});

const notice = handoff.take();
if (notice) show("info", notice);
username.focus();
