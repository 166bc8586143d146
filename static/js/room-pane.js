// The room in view: switching rooms (each keeps its draft and scroll position), the room's
// header and member list, the typing line, and Alt+↑ / Alt+↓ between your rooms.
import { roomKind } from "./chat-state.js";
import { plural, typingSentence } from "./format.js";
import { paintAvatar } from "./room-view.js";
import { titleWithUnread } from "./sidebar.js";

export class RoomPane {
  #state;
  #ui;
  #drawers;
  #scroll;
  #sending;
  #renderRoomLists;

  /** `renderRoomLists()` redraws the sidebar's lists (part of `renderAll`). */
  constructor({ state, ui, drawers, scroll, sending, renderRoomLists }) {
    this.#state = state;
    this.#ui = ui;
    this.#drawers = drawers;
    this.#scroll = scroll;
    this.#sending = sending;
    this.#renderRoomLists = renderRoomLists;
    // Alt+↑ / Alt+↓ moves between your rooms from anywhere on the page.
    document.addEventListener("keydown", (event) => {
      const { rooms } = this.#state;
      if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown") && rooms.size > 1) {
        event.preventDefault();
        const names = [...rooms.keys()];
        const step = event.key === "ArrowUp" ? -1 : 1;
        const index = (names.indexOf(this.#state.current) + step + names.length) % names.length;
        this.select(names[index]);
        ui.input.focus();
      }
    });
  }

  /** Put room `name` in view (and remember the one it replaces as the reader left it). */
  select(name) {
    const state = this.#state;
    const ui = this.#ui;
    const previous = state.currentRoom;
    if (previous) {
      previous.draft = ui.input.value;
      previous.scrollTop = this.#scroll.isNearBottom() ? null : ui.messages.scrollTop;
    }
    state.current = name;
    ui.inviteStatus.hidden = true; // "Invited …" belongs to the room it was said in
    ui.inviteStatus.textContent = "";
    const room = state.currentRoom;
    if (room) {
      room.unread = 0;
      state.markRead(room);
      ui.messages.replaceChildren(room.list);
      ui.input.value = room.draft;
      this.#sending.updateCharCount();
      requestAnimationFrame(() => {
        if (room.scrollTop === null) this.#scroll.toBottom();
        else ui.messages.scrollTop = room.scrollTop;
      });
    }
    state.save();
    this.#drawers.close();
    this.renderAll();
  }

  renderAll() {
    this.render();
    this.#renderRoomLists();
    this.renderTyping();
  }

  /** The chrome around the messages: the header, the member list, the page title. */
  render() {
    const state = this.#state;
    const ui = this.#ui;
    const room = state.currentRoom;
    const inRoom = Boolean(room);
    ui.welcome.hidden = inRoom;
    ui.roomHeader.hidden = !inRoom;
    ui.messages.hidden = !inRoom;
    ui.composer.hidden = !inRoom;
    ui.membersPanel.hidden = !inRoom;
    document.body.classList.toggle("in-room", inRoom);
    if (!inRoom) {
      ui.jumpLatest.hidden = true;
      document.title = titleWithUnread(state, ui, "Observable Chat");
      return;
    }
    const kind = roomKind(room.name);
    const label = state.label(room.name);
    ui.roomTitle.textContent = label;
    ui.roomTitle.dataset.kind = kind;
    const where = { public: "", direct: "Direct message · ", private: "Private room · " }[kind];
    const here =
      kind === "direct"
        ? room.members.length > 1
          ? "both here"
          : "only you here"
        : `${plural(room.members.length, "member")} here`;
    ui.roomSubtitle.textContent = room.joined
      ? `${where}${here}`
      : room.epoch === null
        ? `${where}Joining…`
        : "Not connected: rejoining when the connection is back…";
    ui.messages.setAttribute("aria-label", kind === "direct" ? `Messages with ${label}` : `Messages in ${label}`);
    ui.membersTitle.textContent = `In this room · ${room.members.length}`;
    if (ui.inviteForm.hidden !== (kind !== "private")) {
      ui.inviteForm.hidden = kind !== "private";
      ui.inviteStatus.hidden = true;
      ui.inviteStatus.textContent = "";
    }
    const me = state.me;
    const sorted = [...room.members].sort((a, b) => (a === me ? -1 : b === me ? 1 : a.localeCompare(b)));
    // Anyone else listed can be messaged directly (in a direct message, that is who you talk to).
    const canMessage = (user) => user !== me && kind !== "direct";
    ui.members.replaceChildren(...sorted.map((user) => memberItem(user, user === me, canMessage(user))));
    document.title = titleWithUnread(state, ui, `${label} · Observable Chat`);
  }

  renderTyping() {
    const room = this.#state.currentRoom;
    this.#ui.typing.textContent = room ? typingSentence([...room.typing.keys()]) : "";
  }
}

function memberItem(user, isMe, canMessage) {
  const item = document.createElement("li");
  item.className = "member";
  item.dataset.user = user;
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  avatar.setAttribute("aria-hidden", "true");
  paintAvatar(avatar, user);
  const label = document.createElement("span");
  label.className = "member-name";
  label.textContent = user;
  item.append(avatar, label);
  if (isMe) {
    const you = document.createElement("span");
    you.className = "member-you";
    you.textContent = "you";
    item.append(you);
  }
  if (canMessage) {
    const message = document.createElement("button");
    message.type = "button";
    message.className = "link-button member-dm";
    message.dataset.user = user;
    message.textContent = "Message";
    message.setAttribute("aria-label", `Message ${user} directly`);
    item.append(message);
  }
  return item;
}
