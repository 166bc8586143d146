// The login page: one form, two actions (log in / create account), answers shown in place.
import { ApiError, handoff, postJSON } from "./api.js";

const form = document.getElementById("auth-form");
const username = document.getElementById("username");
const password = document.getElementById("password");
const messageBox = document.getElementById("auth-message");
const buttons = form.querySelectorAll("button[type=submit]");
const togglePassword = document.getElementById("toggle-password");
const minPasswordLength = Number(form.dataset.minPasswordLength) || 8;

let countdown = null;

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

function setBusy(busy) {
  form.setAttribute("aria-busy", String(busy));
  for (const button of buttons) button.disabled = busy || countdown !== null;
}

/** After a 429: say how long to wait, count it down, and keep the buttons off until then. */
function lockFor(seconds) {
  let remaining = Math.max(1, Math.ceil(seconds));
  const tick = () => {
    if (remaining <= 0) {
      clearInterval(countdown);
      countdown = null;
      setBusy(false);
      show("info", "You can try again now.");
      return;
    }
    show("error", `Too many attempts. Try again in ${remaining} second${remaining === 1 ? "" : "s"}.`);
    remaining -= 1;
  };
  clearInterval(countdown);
  countdown = setInterval(tick, 1000);
  setBusy(true);
  tick();
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
  try {
    if (action === "register") {
      await postJSON("/register", credentials);
      show("success", "Account created. Signing you in…");
    }
    await postJSON("/login", credentials);
    window.location.assign("/");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.code === "rate_limited") {
      lockFor(error.retryAfter ?? 30);
      return;
    }
    show("error", explain(error, credentials.username));
  } finally {
    if (countdown === null) setBusy(false);
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
