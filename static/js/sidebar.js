// The room list: your rooms with their member counts and unread badges (and the total in the
// page title and on the phone's Rooms button), the active rooms polled from the server, and the
// ways into a room: the join form, a room button, the welcome page's suggestions.
import { ApiError, getJSON } from "./api.js";
import { plural } from "./format.js";
import { ROOM_NAME } from "./chat-state.js";

const ROOM_LIST_REFRESH_MS = 4_000;

/** `title` with the unread total in front; also shows the total on the Rooms button. */
export function titleWithUnread(state, ui, title) {
  let total = 0;
  for (const room of state.rooms.values()) total += room.unread;
  ui.totalUnread.hidden = total === 0;
  ui.totalUnread.textContent = String(total);
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

  /** `join(name)` joins a room the reader is not in and resolves with the join's ack. */
  constructor({ state, ui, connection, pane, join }) {
    this.#state = state;
    this.#ui = ui;
    this.#connection = connection;
    this.#pane = pane;
    this.#join = join;

    setInterval(() => this.refresh(), ROOM_LIST_REFRESH_MS);
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) return;
      this.refresh();
      const room = state.currentRoom;
      if (room && room.unread > 0) {
        room.unread = 0;
        this.render();
      }
    });

    ui.joinForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = ui.joinInput.value.trim().replace(/^#/, "");
      if (!ROOM_NAME.test(name)) {
        this.#showJoinError("Room names are 1–64 characters: letters, digits, or _ . - (not _ first)");
        ui.joinInput.focus();
        return;
      }
      this.#showJoinError("");
      if (await this.#open(name)) ui.joinInput.value = "";
    });
    ui.joinInput.addEventListener("input", () => this.#showJoinError(""));
    ui.sidebar.addEventListener("click", (event) => {
      const button = event.target.closest(".room-button");
      if (button) this.#open(button.dataset.room);
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

  render() {
    const state = this.#state;
    const ui = this.#ui;
    const focusedRoom = document.activeElement?.closest?.(".room-button")?.dataset.room;
    ui.myRooms.replaceChildren(
      ...[...state.rooms.values()].map((room) =>
        roomButton(room.name, {
          members: room.joined ? room.members.length : null,
          unread: room.unread,
          selected: room.name === state.current,
        }),
      ),
    );
    ui.myRoomsEmpty.hidden = state.rooms.size > 0;
    const others = this.#activeRooms
      .filter((entry) => entry && typeof entry.name === "string" && !state.rooms.has(entry.name))
      .sort((a, b) => b.members - a.members || a.name.localeCompare(b.name));
    ui.otherRooms.replaceChildren(
      ...others.map((entry) => roomButton(entry.name, { members: entry.members, joined: false })),
    );
    ui.otherRoomsEmpty.hidden = others.length > 0;
    if (focusedRoom) ui.sidebar.querySelector(`.room-button[data-room="${CSS.escape(focusedRoom)}"]`)?.focus();
    const title = state.current ? `#${state.current} · Observable Chat` : "Observable Chat";
    document.title = titleWithUnread(state, ui, title);
  }

  /** Show room `name`, joining it first if the reader is not in it; resolves with success. */
  async #open(name) {
    const ui = this.#ui;
    if (this.#state.rooms.has(name)) {
      this.#pane.select(name);
      ui.input.focus();
      return true;
    }
    if (!this.#connection.connected) {
      this.#showJoinError("You are not connected right now; try again when the connection is back.");
      return false;
    }
    const ack = await this.#join(name);
    if (!ack.ok) {
      if (ack.error !== "in_progress") this.#showJoinError(ack.message || `Could not join #${name}.`);
      return false;
    }
    this.#pane.select(name);
    ui.input.focus();
    this.refresh();
    return true;
  }

  #showJoinError(text) {
    const ui = this.#ui;
    ui.joinError.textContent = text;
    ui.joinError.hidden = !text;
    if (text) ui.joinInput.setAttribute("aria-invalid", "true");
    else ui.joinInput.removeAttribute("aria-invalid");
  }
}

function roomButton(name, { members, unread = 0, selected = false, joined = true }) {
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
  label.className = "room-name";
  label.textContent = `#${name}`;
  const count = document.createElement("span");
  count.className = members === null ? "room-members unknown" : "room-members";
  count.textContent = members === null ? "rejoining…" : `${members} online`;
  count.title = members === null ? "rejoining" : `${plural(members, "member")} in the room`;
  text.append(label, count);
  button.append(text);
  let description = `#${name}, ${members === null ? "rejoining" : `${members} online`}`;
  if (unread > 0) {
    const badge = document.createElement("span");
    badge.className = "badge room-unread";
    badge.textContent = unread > 99 ? "99+" : String(unread);
    badge.title = plural(unread, "unread message");
    button.append(badge);
    description += `, ${plural(unread, "unread message")}`;
  }
  if (!joined) description += ", join";
  button.setAttribute("aria-label", description);
  item.append(button);
  return item;
}
