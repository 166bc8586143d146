// One room as the page shows it: its messages in id order without gaps or duplicates, its
// members, the sends still waiting for the server's ack, and what the reader has not seen yet.
import { dayKey, dayLabel, fullDateTime, localTime } from "./format.js";

const GROUP_WINDOW_MS = 5 * 60 * 1000;
const template = document.getElementById("message-template");

/** The same colour for a name everywhere: one of twelve hue classes defined in the CSS. */
export function paintAvatar(element, name) {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  element.classList.add(`hue-${hash % 12}`);
  element.textContent = (name.match(/[A-Za-z0-9]/)?.[0] ?? "?").toUpperCase();
}

/** The top of a room whose whole history is shown (or that is empty): where it begins. */
function roomStart(name) {
  const item = document.createElement("li");
  item.className = "room-start";
  const title = document.createElement("p");
  title.className = "room-start-title";
  const line = document.createElement("p");
  line.className = "room-start-text";
  if (name.startsWith("_dm:")) {
    title.textContent = "This is the start of your direct messages";
    line.textContent = "Only the two of you can read what is written here.";
  } else if (name.startsWith("_p:")) {
    title.textContent = "This is the start of this private room";
    line.textContent = "Only its members can read what is written here; they can invite others, who see it all.";
  } else {
    title.textContent = `This is the start of #${name}`;
    line.textContent = "Everything written here is seen by everyone in the room, and by whoever joins later.";
  }
  item.append(title, line);
  return item;
}

export class RoomView {
  // -- membership and what the server said -------------------------------------------------

  /** Who is in the room, as the last join ack or `joined`/`left` event said. */
  members = [];
  /** The server store's epoch from the last join ack (null before the first one). */
  epoch = null;
  /** In the room on the current connection (false from a disconnect until the rejoin). */
  joined = false;
  /** Every id up to this one is shown (from the first one the server gave us). */
  lastId = 0;
  messages = new Map(); // id -> {element, message, provisional}
  sends = []; // {key, text, element, state: queued|sending|failed, reason, uncertain, attempt}
  /** The key of the next send (matches a pending message's data-key). */
  nextKey = 1;

  // -- catching up with `after=` (driven by the page's room sync) ---------------------------

  /** A catch-up fetch should run even without a visible gap (set after every join). */
  catchUpWanted = false;
  /** A catch-up loop is running for this room; another request only sets `catchUpAgain`. */
  catchingUp = false;
  /** A catch-up was asked for while one ran: the running loop goes round once more. */
  catchUpAgain = false;

  // -- the reader's side -------------------------------------------------------------------

  /** Messages from others that arrived while the room was not in view (or the tab hidden). */
  unread = 0;
  typing = new Map(); // user -> expiry timer
  /** The messages box's scroll position when the reader left the room; null: at the bottom. */
  scrollTop = null;
  /** What the reader had typed in the message box when they switched to another room. */
  draft = "";

  constructor(name, me) {
    this.name = name;
    this.me = me;
    this.list = document.createElement("ol");
    this.list.className = "message-list";
    this.list.dataset.room = name;
    this.list.append(roomStart(name));
  }

  /**
   * The connection dropped: the room waits for its rejoin, and a send whose ack died with the
   * connection may or may not have arrived. The catch-up after the rejoin shows it if it did
   * (and matches it); otherwise it goes out again.
   */
  connectionLost() {
    this.joined = false;
    for (const send of this.sends) {
      if (send.state !== "sending") continue;
      send.uncertain = true;
      send.attempt += 1;
      this.setSendState(send, "queued");
    }
  }

  // -- messages from the server ------------------------------------------------------------

  /**
   * Take a join's ack: the members, and its history merged into what is shown, unless the
   * server's store started afresh (another epoch: ids restarted at 1), which resets the view.
   * Returns whether it reset, and the messages the reader has not seen (none on a first join).
   */
  applyJoin(ack) {
    const history = Array.isArray(ack.history) ? ack.history : [];
    const epoch = typeof ack.epoch === "string" ? ack.epoch : null;
    const firstJoin = this.epoch === null && this.messages.size === 0;
    const restarted =
      (this.epoch !== null && epoch !== null && epoch !== this.epoch) ||
      // Without an epoch, a newest id below ours can only mean the ids restarted.
      (this.lastId > 0 && history.length > 0 && history.at(-1).id < this.lastId);
    if (restarted) {
      this.reset("The server restarted: earlier history is gone.");
      this.unread = 0;
    }
    this.epoch = epoch;
    this.joined = true;
    this.members = Array.isArray(ack.members) ? ack.members : [];
    const wasEmpty = this.messages.size === 0;
    const added = this.add(history);
    if (wasEmpty && history.length > 0) this.markTruncated(history[0].id);
    return { restarted, added: firstJoin || restarted ? [] : added };
  }

  /** Add messages (a join's history, a catch-up page or one live event); returns the new ones. */
  add(messages) {
    const added = [];
    for (const message of messages) {
      if (!Number.isInteger(message?.id) || message.room !== this.name) continue;
      const known = this.messages.get(message.id);
      if (known) {
        if (known.provisional) this.#confirm(known, message);
        continue;
      }
      const send = this.#matchingSend(message);
      let element;
      if (send) {
        element = send.element;
        this.#forgetSend(send);
        element.remove();
        this.#fill(element, message);
      } else {
        element = this.#render(message);
        added.push(message);
      }
      this.messages.set(message.id, { element, message, provisional: false });
      this.#insert(element, message.id);
      if (this.lastId === 0 || message.id === this.lastId + 1) this.lastId = message.id;
    }
    while (this.messages.has(this.lastId + 1)) this.lastId += 1;
    this.#decorate();
    return added;
  }

  /** True when a message newer than `lastId` is shown, so something in between is missing. */
  hasGap() {
    for (const id of this.messages.keys()) if (id > this.lastId) return true;
    return false;
  }

  /** The smallest id shown above `lastId` (the far side of a gap), or undefined. */
  nextHeldId() {
    let next;
    for (const id of this.messages.keys()) if (id > this.lastId && (next === undefined || id < next)) next = id;
    return next;
  }

  /** The server no longer keeps the messages before `nextId` (history is bounded): say so. */
  skipGap(nextId) {
    const item = document.createElement("li");
    item.className = "system-note";
    item.textContent = "Some messages from while you were away are no longer available.";
    this.list.insertBefore(item, this.messages.get(nextId)?.element ?? null);
    this.lastId = nextId - 1;
    while (this.messages.has(this.lastId + 1)) this.lastId += 1;
    this.#decorate();
  }

  /** The server's store started afresh (its epoch changed): ids restart at 1, so forget ours. */
  reset(note) {
    this.messages.clear();
    this.lastId = 0;
    for (const child of [...this.list.children]) {
      if (!child.classList.contains("pending") && !child.classList.contains("room-start")) child.remove();
    }
    this.note(note, "warning");
  }

  /** A line in the log that is not a message: joins, leaves, restarts. */
  note(text, kind = "info") {
    const item = document.createElement("li");
    item.className = `system-note system-note-${kind}`;
    item.textContent = text;
    this.#insertBeforeSends(item);
    this.#decorate();
  }

  /** The oldest history a join gave us starts after id 1: say so once, at the top. */
  markTruncated(firstId) {
    if (firstId <= 1 || this.list.querySelector(".history-start")) return;
    this.list.querySelector(".room-start")?.remove(); // its start is not in view any more
    const item = document.createElement("li");
    item.className = "system-note history-start";
    item.textContent = "Earlier messages are not shown.";
    this.list.prepend(item);
  }

  // -- sends waiting for an ack ------------------------------------------------------------

  /** A message the reader just wrote, shown at once and marked pending. */
  queueSend(text) {
    const element = template.content.firstElementChild.cloneNode(true);
    const send = { key: this.nextKey++, text, element, state: "queued", reason: "" };
    send.uncertain = false; // sent, but its ack was lost with the connection
    send.attempt = 0; // which emit a late ack belongs to
    element.dataset.key = String(send.key);
    this.#fill(element, { user: this.me, text, ts: new Date().toISOString() });
    this.sends.push(send);
    this.list.append(element);
    this.setSendState(send, "queued");
    return send;
  }

  setSendState(send, state, reason = "") {
    send.state = state;
    send.reason = reason;
    const { element } = send;
    element.classList.add("pending");
    element.classList.toggle("failed", state === "failed");
    element.setAttribute("aria-busy", String(state !== "failed"));
    const status = element.querySelector(".message-status");
    status.hidden = false;
    const label = {
      queued: "Waiting for the connection…",
      sending: "Sending…",
      failed: `Not sent: ${reason}`,
    }[state];
    status.querySelector(".message-status-text").textContent = label;
    for (const button of status.querySelectorAll("button")) button.hidden = state !== "failed";
  }

  /** The server accepted a send with this id (its broadcast may have come first). */
  acknowledge(send, id) {
    if (!this.sends.includes(send)) return; // already matched to its broadcast
    this.#forgetSend(send);
    if (this.messages.has(id)) {
      send.element.remove();
      return;
    }
    const message = { id, room: this.name, user: this.me, text: send.text, ts: new Date().toISOString() };
    send.element.remove();
    this.#fill(send.element, message);
    this.messages.set(id, { element: send.element, message, provisional: true });
    this.#insert(send.element, id);
    while (this.messages.has(this.lastId + 1)) this.lastId += 1;
    this.#decorate();
  }

  discard(send) {
    this.#forgetSend(send);
    send.element.remove();
    this.#decorate();
  }

  findSend(key) {
    return this.sends.find((send) => send.key === key);
  }

  // -- rendering ---------------------------------------------------------------------------

  #render(message) {
    const element = template.content.firstElementChild.cloneNode(true);
    this.#fill(element, message);
    return element;
  }

  #fill(element, message) {
    const date = new Date(message.ts);
    const valid = !Number.isNaN(date.getTime());
    element.classList.remove("pending", "failed");
    element.removeAttribute("aria-busy");
    element.classList.toggle("own", message.user === this.me);
    element.dataset.user = message.user;
    element.dataset.day = valid ? dayKey(date) : "";
    element.dataset.time = valid ? String(date.getTime()) : "";
    if (message.id !== undefined) {
      element.dataset.id = String(message.id);
      delete element.dataset.key;
      element.querySelector(".message-status").hidden = true;
    }
    const avatar = element.querySelector(".avatar");
    avatar.className = "avatar";
    paintAvatar(avatar, message.user);
    element.querySelector(".message-author").textContent = message.user === this.me ? "You" : message.user;
    const time = element.querySelector(".message-time");
    time.textContent = valid ? localTime(date) : "";
    time.dateTime = valid ? date.toISOString() : "";
    time.title = valid ? fullDateTime(date) : "";
    const divider = element.querySelector(".day-divider");
    divider.textContent = valid ? dayLabel(date) : "";
    // The one place user text enters the page: as text, never as markup.
    element.querySelector(".message-text").textContent = message.text;
  }

  #confirm(known, message) {
    known.provisional = false;
    known.message = message;
    this.#fill(known.element, message);
  }

  #matchingSend(message) {
    if (message.user !== this.me) return null;
    const text = message.text.trim();
    const waiting = (send) => send.state === "sending" || send.uncertain;
    return this.sends.find((send) => waiting(send) && send.text.trim() === text) ?? null;
  }

  #forgetSend(send) {
    this.sends = this.sends.filter((other) => other !== send);
  }

  /** Put a message where its id belongs: messages stay in id order, pending sends stay last. */
  #insert(element, id) {
    const confirmed = this.list.querySelectorAll(".message[data-id]");
    const newest = confirmed[confirmed.length - 1];
    if (!newest || newest === element || Number(newest.dataset.id) < id) {
      this.#insertBeforeSends(element); // the usual case: the newest message
      return;
    }
    for (const other of confirmed) {
      if (other !== element && Number(other.dataset.id) > id) {
        this.list.insertBefore(element, other);
        return;
      }
    }
    this.#insertBeforeSends(element);
  }

  #insertBeforeSends(element) {
    const firstPending = this.list.querySelector(":scope > .pending");
    this.list.insertBefore(element, firstPending);
  }

  /**
   * Group runs of one author, and show a day divider where the local day changes: once per
   * day, whatever notices (joined, left) come between its messages. A notice only ends a run.
   */
  #decorate() {
    let previous = null;
    let day = null;
    for (const item of this.list.children) {
      if (!item.classList.contains("message")) {
        previous = null;
        continue;
      }
      const divider = item.querySelector(".day-divider");
      const newDay = Boolean(item.dataset.day) && item.dataset.day !== day;
      if (item.dataset.day) day = item.dataset.day;
      divider.hidden = !newDay;
      const continued =
        previous !== null &&
        !newDay &&
        previous.dataset.user === item.dataset.user &&
        Number(item.dataset.time) - Number(previous.dataset.time) < GROUP_WINDOW_MS;
      item.classList.toggle("continued", continued);
      previous = item;
    }
  }
}
