// The room list: your rooms with their member counts and unread badges (and the total, with
// pending invitations, in the page title and on the phone's Rooms button), your direct
// messages and private rooms (with their invitations; those the page is not in yet are joined
// on connect, for their unread counts), the active rooms polled from the server, and the ways
// into a room: the join form (public or private), the direct-message form and a member's
// Message button, an invitation's Join, a room button, the welcome page's suggestions.
import { ApiError, getJSON } from "./api.js";
import { plural } from "./format.js";
import { ROOM_NAME, USERNAME, isRoomId, roomKind } from "./chat-state.js";

const ROOM_LIST_REFRESH_MS = 4_000;
/** Room places a connection keeps free for rooms the reader joins by hand (not joined at connect). */
const PLACES_KEPT_FREE = 10;

/**
 * `title` with what waits for the reader in front: unread messages and pending invitations.
 * The same number is on the Rooms button, which opens the room list on a phone, so an
 * invitation that arrives while the list is closed shows there too.
 */
export function titleWithUnread(state, ui, title) {
  let unread = 0;
  for (const room of state.rooms.values()) unread += room.unread;
  let invitations = 0;
  for (const id of state.invitations.keys()) if (!state.rooms.has(id)) invitations += 1;
  const total = unread + invitations;
  const waiting = [unread && plural(unread, "unread message"), invitations && plural(invitations, "invitation")].filter(Boolean);
  ui.totalUnread.hidden = total === 0;
  ui.totalUnread.textContent = total > 99 ? "99+" : String(total);
  ui.totalUnread.title = waiting.join(", ");
  ui.toggleRooms.setAttribute("aria-label", ["Rooms", ...waiting].join(", "));
  return total > 0 ? `(${total}) ${title}` : title;
}

export class Sidebar {
  #state;
  #ui;
  #connection;
  #pane;
  #join;
  /** The server's rooms with members, `[{name, members}]`, as last polled. */
  #activeRooms = [];

  #maxRooms;

  /**
   * `join(name)` joins a room the reader is not in and resolves with the join's ack;
   * `maxRooms` is how many rooms the server lets one connection be in.
   */
  constructor({ state, ui, connection, pane, join, maxRooms }) {
    this.#state = state;
    this.#ui = ui;
    this.#connection = connection;
    this.#pane = pane;
    this.#join = join;
    this.#maxRooms = maxRooms;

    setInterval(() => this.refresh(), ROOM_LIST_REFRESH_MS);
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) return;
      this.refresh();
      const room = state.currentRoom;
      if (room) state.markRead(room);
      if (room && room.unread > 0) {
        room.unread = 0;
        this.render();
      }
    });

    ui.joinForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = ui.joinInput.value.trim().replace(/^#/, "");
      const makePrivate = ui.joinPrivate.checked;
      // A private conversation's id may be pasted too: the server says whether it lets you in.
      if (!ROOM_NAME.test(name) && (makePrivate || !isRoomId(name))) {
        this.#showJoinError("Room names are 1–64 characters: letters, digits, or _ . - (not _ first)");
        ui.joinInput.focus();
        return;
      }
      this.#showJoinError("");
      const opened = makePrivate ? await this.#createPrivate(name) : await this.#open(name);
      if (opened) {
        ui.joinInput.value = "";
        ui.joinPrivate.checked = false;
      }
    });
    ui.joinInput.addEventListener("input", () => this.#showJoinError(""));
    ui.dmForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const user = ui.dmInput.value.trim().replace(/^@/, "");
      if (!USERNAME.test(user)) {
        this.#showError(ui.dmError, ui.dmInput, "Usernames are 3–32 characters: letters, digits, or _ . -");
        ui.dmInput.focus();
        return;
      }
      if (await this.openDirect(user)) ui.dmInput.value = "";
    });
    ui.dmInput.addEventListener("input", () => this.#showError(ui.dmError, ui.dmInput, ""));
    ui.inviteForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#invite();
    });
    ui.inviteInput.addEventListener("input", () => this.#showInviteStatus("", false));
    ui.sidebar.addEventListener("click", (event) => {
      const button = event.target.closest(".room-button, .invitation-join");
      if (button) this.#open(button.dataset.room);
    });
    ui.members.addEventListener("click", (event) => {
      const button = event.target.closest(".member-dm");
      if (button) this.openDirect(button.dataset.user);
    });
    connection.on("dm_opened", (payload) => {
      if (typeof payload?.room !== "string" || typeof payload.user !== "string") return;
      if (roomKind(payload.room) !== "direct") return;
      state.directs.set(payload.room, payload.user);
      // Join it at once, so that what they write counts as unread like any room's messages.
      if (!state.rooms.has(payload.room)) this.#join(payload.room);
      this.render();
    });
    connection.on("invited", (payload) => {
      if (typeof payload?.room !== "string" || roomKind(payload.room) !== "private") return;
      if (state.rooms.has(payload.room)) return;
      state.invitations.set(payload.room, { name: String(payload.name ?? ""), by: String(payload.by ?? "") });
      this.render();
    });
    ui.welcome.addEventListener("click", (event) => {
      const chip = event.target.closest("[data-join]");
      if (chip) this.#open(chip.dataset.join);
    });
  }

  /** Poll the server's list of active rooms (not while disconnected or hidden). */
  async refresh() {
    if (!this.#connection.connected || document.hidden) return;
    try {
      const list = await getJSON("/rooms");
      this.#activeRooms = Array.isArray(list) ? list : [];
      this.render();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.#connection.sessionEnded();
    }
  }

  /**
   * Ask the server for the reader's direct messages, private rooms and invitations, and join
   * the conversations the page is not in yet, so that what was written in them while the
   * reader was away shows as unread (and what comes next, live). Invitations are not joined:
   * joining one accepts it. A connection's room places are kept for rooms joined by hand first:
   * conversations beyond them stay listed, and join when opened.
   */
  async loadConversations() {
    const state = this.#state;
    const ack = await this.#connection.request("conversations", {});
    if (!ack.ok) {
      if (ack.error === "unauthorized") this.#connection.sessionEnded();
      return;
    }
    state.applyConversations(ack);
    for (const room of state.rooms.keys()) state.invitations.delete(room);
    this.#pane.renderAll();
    const places = this.#maxRooms - PLACES_KEPT_FREE - state.rooms.size;
    const missing = [...state.directs.keys(), ...state.privates.keys()].filter((room) => !state.rooms.has(room));
    await Promise.all(missing.slice(0, Math.max(0, places)).map((room) => this.#join(room)));
  }

  /** Open (or find) the direct conversation with `user`, join it and show it. */
  async openDirect(user) {
    const ui = this.#ui;
    this.#showError(ui.dmError, ui.dmInput, "");
    if (!this.#connection.connected) {
      this.#showError(ui.dmError, ui.dmInput, "You are not connected right now; try again when the connection is back.");
      return false;
    }
    const ack = await this.#connection.request("open_dm", { user });
    if (!ack.ok || typeof ack.room !== "string") {
      this.#showError(ui.dmError, ui.dmInput, ack.message || `Could not open a conversation with ${user}.`);
      return false;
    }
    this.#state.directs.set(ack.room, typeof ack.user === "string" ? ack.user : user);
    return this.#open(ack.room, { onError: (text) => this.#showError(ui.dmError, ui.dmInput, text) });
  }

  render() {
    const state = this.#state;
    const ui = this.#ui;
    const focusedRoom = document.activeElement?.closest?.(".room-button")?.dataset.room;
    const joinedOf = (kind) => [...state.rooms.values()].filter((room) => roomKind(room.name) === kind);
    const button = (id) => {
      const room = state.rooms.get(id);
      const kind = roomKind(id);
      if (!room) return roomButton(id, { label: state.label(id), detail: "not open here", kind, muted: true, joined: false });
      const members = room.joined ? room.members.length : null;
      let detail = members === null ? "rejoining…" : `${members} online`;
      if (kind === "direct" && members !== null) {
        detail = room.members.some((user) => user.toLowerCase() === state.partner(id).toLowerCase()) ? "here now" : "away";
      }
      return roomButton(id, {
        label: state.label(id),
        detail,
        kind,
        muted: members === null,
        unread: room.unread,
        selected: id === state.current,
      });
    };
    const publicRooms = joinedOf("public");
    ui.myRooms.replaceChildren(...publicRooms.map((room) => button(room.name)));
    ui.myRoomsEmpty.hidden = publicRooms.length > 0;
    const listed = (kind, known) => {
      const ids = [...known.keys()];
      for (const room of joinedOf(kind)) if (!known.has(room.name)) ids.push(room.name);
      return ids.sort((a, b) => state.label(a).localeCompare(state.label(b)));
    };
    const directs = listed("direct", state.directs);
    ui.dmList.replaceChildren(...directs.map(button));
    ui.dmEmpty.hidden = directs.length > 0;
    const privates = listed("private", state.privates);
    ui.privateRooms.replaceChildren(...privates.map(button));
    ui.privateRoomsEmpty.hidden = privates.length > 0;
    const invitations = [...state.invitations].filter(([id]) => !state.rooms.has(id));
    ui.invitations.replaceChildren(...invitations.map(([id, invitation]) => invitationItem(id, invitation)));
    ui.invitationsBox.hidden = invitations.length === 0;
    const others = this.#activeRooms
      .filter((entry) => entry && typeof entry.name === "string" && !state.rooms.has(entry.name))
      .sort((a, b) => b.members - a.members || a.name.localeCompare(b.name));
    ui.otherRooms.replaceChildren(
      ...others.map((entry) => roomButton(entry.name, { label: `#${entry.name}`, detail: `${entry.members} online`, joined: false })),
    );
    ui.otherRoomsEmpty.hidden = others.length > 0;
    if (focusedRoom) ui.sidebar.querySelector(`.room-button[data-room="${CSS.escape(focusedRoom)}"]`)?.focus();
    const title = state.current ? `${state.label(state.current)} · Observable Chat` : "Observable Chat";
    document.title = titleWithUnread(state, ui, title);
  }

  /** Show room `name`, joining it first if the reader is not in it; resolves with success. */
  async #open(name, { onError = (text) => this.#showJoinError(text) } = {}) {
    const ui = this.#ui;
    const state = this.#state;
    if (state.rooms.has(name)) {
      this.#pane.select(name);
      ui.input.focus();
      return true;
    }
    if (!this.#connection.connected) {
      onError("You are not connected right now; try again when the connection is back.");
      return false;
    }
    const ack = await this.#join(name);
    if (!ack.ok) {
      if (ack.error !== "in_progress") onError(ack.message || `Could not join ${state.label(name)}.`);
      return false;
    }
    // Joining a private room accepts its invitation: it is one of your private rooms now.
    const invitation = state.invitations.get(name);
    if (invitation) {
      state.invitations.delete(name);
      state.privates.set(name, invitation.name);
    }
    this.#pane.select(name);
    ui.input.focus();
    this.refresh();
    return true;
  }

  /** `create_private {name}`, then join the new room and show it. */
  async #createPrivate(name) {
    if (!this.#connection.connected) {
      this.#showJoinError("You are not connected right now; try again when the connection is back.");
      return false;
    }
    const ack = await this.#connection.request("create_private", { name });
    if (!ack.ok || typeof ack.room !== "string") {
      this.#showJoinError(ack.message || `Could not create the private room ${name}.`);
      return false;
    }
    this.#state.privates.set(ack.room, typeof ack.name === "string" ? ack.name : name);
    return this.#open(ack.room);
  }

  async #invite() {
    const ui = this.#ui;
    const room = this.#state.current;
    const user = ui.inviteInput.value.trim().replace(/^@/, "");
    if (!room || roomKind(room) !== "private") return;
    if (!USERNAME.test(user)) {
      this.#showInviteStatus("Usernames are 3–32 characters: letters, digits, or _ . -", true);
      ui.inviteInput.focus();
      return;
    }
    if (!this.#connection.connected) {
      this.#showInviteStatus("You are not connected right now; try again when the connection is back.", true);
      return;
    }
    const ack = await this.#connection.request("invite", { room, user });
    if (!ack.ok) {
      this.#showInviteStatus(ack.message || `Could not invite ${user}.`, true);
      return;
    }
    ui.inviteInput.value = "";
    this.#showInviteStatus(`Invited ${typeof ack.user === "string" ? ack.user : user}.`, false);
  }

  #showInviteStatus(text, isError) {
    const ui = this.#ui;
    ui.inviteStatus.textContent = text;
    ui.inviteStatus.hidden = !text;
    ui.inviteStatus.classList.toggle("field-error", isError);
    if (text && isError) ui.inviteInput.setAttribute("aria-invalid", "true");
    else ui.inviteInput.removeAttribute("aria-invalid");
  }

  #showJoinError(text) {
    this.#showError(this.#ui.joinError, this.#ui.joinInput, text);
  }

  #showError(element, input, text) {
    element.textContent = text;
    element.hidden = !text;
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
}

/** An invitation to a private room: its title, who invited you, and Join (which accepts it). */
function invitationItem(id, { name, by }) {
  const item = document.createElement("li");
  item.className = "invitation";
  item.dataset.room = id;
  const text = document.createElement("span");
  text.className = "room-text";
  const label = document.createElement("span");
  label.className = "room-name private-name";
  label.textContent = name || "Private room";
  const from = document.createElement("span");
  from.className = "room-members";
  from.textContent = by ? `from ${by}` : "invitation";
  text.append(label, from);
  const join = document.createElement("button");
  join.type = "button";
  join.className = "primary small invitation-join";
  join.dataset.room = id;
  join.textContent = "Join";
  join.setAttribute("aria-label", `Join ${name || "the private room"}${by ? `, invited by ${by}` : ""}`);
  item.append(text, join);
  return item;
}

/** A public room (`members` online), or a direct message / private room under its label. */
function roomButton(name, { label: shown, detail, kind = "public", muted = false, unread = 0, selected = false, joined = true }) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "room-button";
  button.dataset.room = name;
  if (selected) button.setAttribute("aria-current", "true");
  // The name with who is there under it ("2 online"), and the unread count apart from both, a
  // pill at the far end: two numbers side by side read as one.
  const text = document.createElement("span");
  text.className = "room-text";
  const label = document.createElement("span");
  label.className = kind === "private" ? "room-name private-name" : "room-name";
  label.textContent = shown;
  const count = document.createElement("span");
  count.className = muted ? "room-members unknown" : "room-members";
  count.textContent = detail;
  count.title = detail;
  text.append(label, count);
  button.append(text);
  const what = { public: "", direct: "direct message with ", private: "private room " }[kind];
  let description = `${what}${shown}, ${detail}`;
  if (unread > 0) {
    const badge = document.createElement("span");
    badge.className = "badge room-unread";
    badge.textContent = unread > 99 ? "99+" : String(unread);
    badge.title = plural(unread, "unread message");
    button.append(badge);
    description += `, ${plural(unread, "unread message")}`;
  }
  if (!joined) description += kind === "public" ? ", join" : ", open";
  button.setAttribute("aria-label", description);
  item.append(button);
  return item;
}
