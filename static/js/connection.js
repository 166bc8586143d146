// The Socket.IO connection: requests with an ack timeout, the connecting / connected /
// reconnecting / offline state in the top bar and the banner, and the end of the session
// (refused as unauthorized, or logged out), which goes back to the login page.
import { handoff, postJSON } from "./api.js";

const ACK_TIMEOUT_MS = 10_000;

const CONNECTION_LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

export class Connection {
  #ui;
  #socket;
  #onConnect;
  #onDisconnect;
  /** The page is going to the login page: no more reconnecting. */
  #leaving = false;

  /**
   * `onConnect()` runs after every (re)connect, `onDisconnect()` after every drop, before the
   * state shows it. The socket connects when `connect()` is called.
   */
  constructor(ui, { onConnect, onDisconnect }) {
    this.#ui = ui;
    this.#onConnect = onConnect;
    this.#onDisconnect = onDisconnect;
    this.#socket = io({
      autoConnect: false,
      reconnectionDelay: 500,
      reconnectionDelayMax: 4_000,
    });
    this.#socket.on("connect", () => {
      this.show("connected");
      this.#onConnect();
    });
    this.#socket.on("disconnect", (reason) => this.#disconnected(reason));
    this.#socket.on("connect_error", (error) => this.#refused(error));
    window.addEventListener("offline", () => this.show("offline"));
    window.addEventListener("online", () => {
      if (this.#socket.connected) this.show("connected");
      else this.reconnectNow();
    });
    ui.reconnectNow.addEventListener("click", () => this.reconnectNow());
    ui.logout.addEventListener("click", () => this.#logOut());
  }

  get connected() {
    return this.#socket.connected;
  }

  connect() {
    this.#socket.connect();
  }

  /** Listen to a server event (`message`, `joined`, …). */
  on(event, handler) {
    this.#socket.on(event, handler);
  }

  /** Emit without waiting for an ack. */
  emit(event, payload) {
    this.#socket.emit(event, payload);
  }

  /** Emit and resolve with the server's ack, or with a refusal of our own when none comes. */
  request(event, payload) {
    return new Promise((resolve) => {
      this.#socket.timeout(ACK_TIMEOUT_MS).emit(event, payload, (error, ack) => {
        if (error) {
          resolve({ ok: false, error: "timeout", message: "The server did not answer." });
        } else if (ack && typeof ack === "object") {
          resolve(ack);
        } else {
          resolve({ ok: false, error: "invalid_reply", message: "The server sent an unexpected reply." });
        }
      });
    });
  }

  /** Show the connection's state in the top bar, and in the banner when it is in trouble. */
  show(state) {
    const ui = this.#ui;
    ui.connection.dataset.state = state;
    document.body.dataset.connection = state;
    ui.connectionText.textContent = CONNECTION_LABELS[state];
    const trouble = state === "reconnecting" || state === "offline";
    ui.banner.hidden = !trouble;
    ui.banner.dataset.state = state;
    if (state === "reconnecting") {
      ui.bannerText.textContent =
        "Connection lost. Reconnecting… What you write now is sent as soon as it is back.";
    } else if (state === "offline") {
      ui.bannerText.textContent = navigator.onLine
        ? "Cannot reach the chat server. What you write now is sent once it is back."
        : "You are offline. What you write now is sent once you are back online.";
    }
  }

  reconnectNow() {
    this.show("reconnecting");
    // Skip the back-off: drop whatever attempt is pending and open a fresh connection.
    this.#socket.disconnect();
    this.#socket.connect();
  }

  /** The server no longer knows this session: say so on the login page. */
  sessionEnded() {
    if (this.#leaving) return;
    this.#leaving = true;
    this.#socket.disconnect();
    handoff.set("Your session has ended. Please log in again.");
    window.location.assign("/login");
  }

  async #logOut() {
    this.#leaving = true;
    this.#ui.logout.disabled = true;
    this.#socket.disconnect();
    try {
      await postJSON("/logout", {});
    } catch {
      // The session may already be gone; either way the next page is the login page.
    }
    handoff.set("You have logged out.");
    window.location.assign("/login");
  }

  #disconnected(reason) {
    this.#onDisconnect();
    if (reason === "io client disconnect" || this.#leaving) return;
    this.show(navigator.onLine ? "reconnecting" : "offline");
    if (reason === "io server disconnect") {
      // The server closed this socket on purpose; Socket.IO does not retry that by itself. A new
      // connection is refused with "unauthorized" when the session is gone, which sends us to login.
      this.#socket.connect();
    }
  }

  #refused(error) {
    if (error?.message === "unauthorized") {
      this.sessionEnded();
      return;
    }
    if (!this.#socket.active) {
      // Refused by the server (not a network failure): Socket.IO leaves it to us. Retry gently.
      this.show("offline");
      setTimeout(() => this.#socket.connect(), 3_000);
      return;
    }
    this.show(navigator.onLine ? "reconnecting" : "offline");
  }
}
