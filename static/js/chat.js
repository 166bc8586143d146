// The chat page: one Socket.IO connection, the rooms the reader is in, and everything that
// keeps them true across reconnects (rejoin, catch-up with `after=`, epoch resets).
import { ApiError, getJSON, handoff, postJSON } from "./api.js";
import { plural, typingSentence } from "./format.js";
import { RoomView, paintAvatar } from "./room-view.js";

const ROOM_NAME = /^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$/; // "_" first is the service's own
const ACK_TIMEOUT_MS = 10_000;
const TYPING_EMIT_INTERVAL_MS = 2_000;
const TYPING_SHOWN_MS = 4_000;
const ROOM_LIST_REFRESH_MS = 4_000;
const NEAR_BOTTOM_PX = 64;

const me = document.body.dataset.username;
const maxLength = Number(document.body.dataset.maxMessageLength) || 2000;
const historyLimit = Number(document.body.dataset.historyLimit) || 50;
const storageKey = `chat.rooms.${me}`;

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $("connection"),
  connectionText: $("connection-text"),
  banner: $("connection-banner"),
  bannerText: $("connection-banner-text"),
  reconnectNow: $("reconnect-now"),
  logout: $("logout"),
  toggleRooms: $("toggle-rooms"),
  totalUnread: $("total-unread"),
  sidebar: $("sidebar"),
  joinForm: $("join-form"),
  joinInput: $("join-input"),
  joinError: $("join-error"),
  myRooms: $("my-rooms"),
  myRoomsEmpty: $("my-rooms-empty"),
  otherRooms: $("other-rooms"),
  otherRoomsEmpty: $("other-rooms-empty"),
  welcome: $("welcome"),
  roomHeader: $("room-header"),
  roomTitle: $("room-title"),
  roomSubtitle: $("room-subtitle"),
  toggleMembers: $("toggle-members"),
  leave: $("leave-room"),
  messages: $("messages"),
  jumpLatest: $("jump-latest"),
  typing: $("typing"),
  composer: $("composer"),
  input: $("composer-input"),
  charCount: $("char-count"),
  membersPanel: $("members-panel"),
  membersTitle: $("members-title"),
  members: $("members"),
  scrim: $("scrim"),
};

/** name -> RoomView, in the order the reader joined them. */
const rooms = new Map();
/** Live events for a room whose join is in flight: applied after its ack, in order. */
const joinBuffers = new Map();
let current = null;
let activeRooms = [];
let lastTypingSent = 0;
let leaving = false;

// -- persistence: the rooms you were in come back on reload and after a reconnect ---------------

function saveRooms() {
  try {
    localStorage.setItem(storageKey, JSON.stringify({ rooms: [...rooms.keys()], current }));
  } catch {
    // Private mode or full storage: the page still works, it just forgets on reload.
  }
}

function loadRooms() {
  try {
    const saved = JSON.parse(localStorage.getItem(storageKey) ?? "null");
    if (!saved || !Array.isArray(saved.rooms)) return { names: [], current: null };
    return { names: saved.rooms.filter((name) => ROOM_NAME.test(name)), current: saved.current };
  } catch {
    return { names: [], current: null };
  }
}

// -- the connection ----------------------------------------------------------------------------

const socket = io({
  autoConnect: false,
  reconnectionDelay: 500,
  reconnectionDelayMax: 4_000,
});

/** Emit and resolve with the server's ack, or with a refusal of our own when none comes. */
function request(event, payload) {
  return new Promise((resolve) => {
    socket.timeout(ACK_TIMEOUT_MS).emit(event, payload, (error, ack) => {
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

const CONNECTION_LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

function setConnection(state) {
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

function sessionEnded() {
  if (leaving) return;
  leaving = true;
  socket.disconnect();
  handoff.set("Your session has ended. Please log in again.");
  window.location.assign("/login");
}

socket.on("connect", () => {
  setConnection("connected");
  rejoinAll();
  refreshRoomList();
});

socket.on("disconnect", (reason) => {
  for (const room of rooms.values()) {
    room.joined = false;
    // A send whose ack died with the connection may or may not have arrived: the catch-up
    // after the rejoin shows it if it did (and matches it); otherwise it goes out again.
    for (const send of room.sends) {
      if (send.state !== "sending") continue;
      send.uncertain = true;
      send.attempt += 1;
      room.setSendState(send, "queued");
    }
  }
  renderAll();
  if (reason === "io client disconnect" || leaving) return;
  setConnection(navigator.onLine ? "reconnecting" : "offline");
  if (reason === "io server disconnect") {
    // The server closed this socket on purpose; Socket.IO does not retry that by itself. A new
    // connection is refused with "unauthorized" when the session is gone, which sends us to login.
    socket.connect();
  }
});

socket.on("connect_error", (error) => {
  if (error?.message === "unauthorized") {
    sessionEnded();
    return;
  }
  if (!socket.active) {
    // Refused by the server (not a network failure): Socket.IO leaves it to us. Retry gently.
    setConnection("offline");
    setTimeout(() => socket.connect(), 3_000);
    return;
  }
  setConnection(navigator.onLine ? "reconnecting" : "offline");
});

window.addEventListener("offline", () => setConnection("offline"));
window.addEventListener("online", () => {
  if (socket.connected) setConnection("connected");
  else reconnectNow();
});

function reconnectNow() {
  setConnection("reconnecting");
  // Skip the back-off: drop whatever attempt is pending and open a fresh connection.
  socket.disconnect();
  socket.connect();
}

// -- rooms: join, rejoin, catch up, leave ------------------------------------------------------

async function rejoinAll() {
  await Promise.all([...rooms.keys()].map((name) => joinRoom(name, { rejoin: true })));
  if (current === null && rooms.size > 0) selectRoom(rooms.keys().next().value);
}

async function joinRoom(name, { rejoin = false } = {}) {
  if (joinBuffers.has(name)) return { ok: false, error: "in_progress", message: "Already joining." };
  joinBuffers.set(name, []);
  const ack = await request("join", { room: name });
  // Whatever arrived while the join was in flight is applied after the ack's history.
  const buffered = joinBuffers.get(name) ?? [];
  joinBuffers.delete(name);
  if (!ack.ok) {
    if (ack.error === "unauthorized") {
      sessionEnded();
    } else if (rejoin && (ack.error === "invalid_room" || ack.error === "invalid_payload")) {
      // A saved name the server does not accept: forget it.
      rooms.delete(name);
      if (current === name) current = null;
      saveRooms();
      renderAll();
    } else if (rejoin) {
      rooms.get(name)?.note(`Could not rejoin #${name}: ${ack.message || ack.error}`, "warning");
    }
    return ack;
  }

  let room = rooms.get(name);
  if (!room) {
    room = new RoomView(name, me);
    rooms.set(name, room);
    saveRooms();
  }
  withScroll(room, () => countUnread(room, room.applyJoin(ack).added));
  for (const event of buffered) applyLive(room, event);
  // Always ask once for anything after the last id we have: a message stored between the
  // join's history snapshot and our entering the room's broadcast would otherwise stay unseen.
  await catchUp(room, { force: true });
  flushSends(room);
  renderAll();
  return ack;
}

/** Fetch whatever the room said while we were away: `after=` the last id we have, page by page. */
async function catchUp(room, { force = false } = {}) {
  room.catchUpWanted = Boolean(room.catchUpWanted) || force;
  if (room.catchingUp) {
    room.catchUpAgain = true;
    return;
  }
  room.catchingUp = true;
  try {
    do {
      room.catchUpAgain = false;
      while (room.joined && (room.catchUpWanted || room.hasGap())) {
        room.catchUpWanted = false;
        const after = room.lastId;
        const url = `/rooms/${encodeURIComponent(room.name)}/messages?after=${after}&limit=${historyLimit}`;
        const page = await getJSON(url);
        withScroll(room, () => countUnread(room, room.add(Array.isArray(page) ? page : [])));
        if (room.lastId === after) {
          // The server no longer has the message after `after` (it keeps a bounded history).
          const next = room.nextHeldId();
          if (next === undefined) break;
          withScroll(room, () => room.skipGap(next));
        }
      }
    } while (room.catchUpAgain);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) sessionEnded();
    // Otherwise (e.g. 403 after a drop): the rejoin that follows the reconnect catches up.
  } finally {
    room.catchingUp = false;
    renderRoomChrome();
  }
}

async function leaveRoom(name) {
  const room = rooms.get(name);
  if (!room) return;
  if (socket.connected) {
    const ack = await request("leave", { room: name });
    if (!ack.ok && ack.error !== "not_in_room") {
      room.note(`Could not leave: ${ack.message || ack.error}`, "warning");
      return;
    }
  }
  rooms.delete(name);
  if (current === name) {
    current = null;
    const next = rooms.keys().next();
    if (!next.done) selectRoom(next.value);
  }
  saveRooms();
  renderAll();
  refreshRoomList();
  // The Leave button may be gone now: put the focus where the next action is.
  (current ? ui.input : ui.joinInput).focus();
}

async function refreshRoomList() {
  if (!socket.connected || document.hidden) return;
  try {
    const list = await getJSON("/rooms");
    activeRooms = Array.isArray(list) ? list : [];
    renderRoomLists();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) sessionEnded();
  }
}
setInterval(refreshRoomList, ROOM_LIST_REFRESH_MS);
document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  refreshRoomList();
  const room = rooms.get(current);
  if (room && room.unread > 0) {
    room.unread = 0;
    renderRoomLists();
  }
});

// -- live events -------------------------------------------------------------------------------

socket.on("message", (message) => {
  const name = message?.room;
  if (joinBuffers.has(name)) {
    joinBuffers.get(name).push({ kind: "message", payload: message });
    return;
  }
  const room = rooms.get(name);
  if (room?.joined) applyLive(room, { kind: "message", payload: message });
});

function applyLive(room, event) {
  if (event.kind !== "message") return;
  const message = event.payload;
  stopTyping(room, message.user);
  withScroll(room, () => countUnread(room, room.add([message])));
  if (room.hasGap()) catchUp(room);
  renderRoomLists();
}

function membershipChanged(payload, verb) {
  const room = rooms.get(payload?.room);
  if (!room || !Array.isArray(payload.members)) return;
  const before = new Set(room.members);
  room.members = payload.members;
  const present = room.members.includes(payload.user);
  const changed = verb === "joined" ? !before.has(payload.user) && present : before.has(payload.user) && !present;
  if (changed && payload.user !== me) {
    withScroll(room, () => room.note(`${payload.user} ${verb}`));
    if (verb === "left") stopTyping(room, payload.user);
  }
  renderRoomChrome();
  renderRoomLists();
}

socket.on("joined", (payload) => membershipChanged(payload, "joined"));
socket.on("left", (payload) => membershipChanged(payload, "left"));

socket.on("typing", (payload) => {
  const room = rooms.get(payload?.room);
  if (!room || typeof payload.user !== "string" || payload.user === me) return;
  clearTimeout(room.typing.get(payload.user));
  room.typing.set(
    payload.user,
    setTimeout(() => stopTyping(room, payload.user), TYPING_SHOWN_MS),
  );
  renderTyping();
});

function stopTyping(room, user) {
  if (!room.typing.has(user)) return;
  clearTimeout(room.typing.get(user));
  room.typing.delete(user);
  renderTyping();
}

function countUnread(room, added) {
  const unseen = added.filter((message) => message.user !== me);
  if (unseen.length === 0) return;
  if (room.name !== current || document.hidden) room.unread += unseen.length;
  if (room.name === current && !isNearBottom()) ui.jumpLatest.hidden = false;
}

// -- sending -----------------------------------------------------------------------------------

const REFUSALS = {
  rate_limited: "you are sending too fast. Wait a moment, then retry.",
  message_too_long: `the message is longer than ${maxLength} characters.`,
  empty_message: "the message is empty.",
  not_in_room: "you are not in this room any more.",
  timeout: "no answer from the server; it may not have arrived.",
};

function sendMessage(text) {
  const room = rooms.get(current);
  if (!room) return;
  const send = room.queueSend(text);
  scrollToBottom();
  deliver(room, send);
}

async function deliver(room, send) {
  if (!socket.connected || !room.joined) {
    room.setSendState(send, "queued");
    return;
  }
  send.attempt += 1;
  const attempt = send.attempt;
  room.setSendState(send, "sending");
  const ack = await request("message", { room: room.name, text: send.text });
  if (send.attempt !== attempt) return; // superseded by a later attempt after a reconnect
  if (ack.ok && Number.isInteger(ack.id)) {
    room.acknowledge(send, ack.id);
    if (room.hasGap()) catchUp(room);
  } else if (room.sends.includes(send)) {
    send.uncertain = ack.error === "timeout";
    const reason = REFUSALS[ack.error] ?? ack.message ?? ack.error ?? "unknown error";
    room.setSendState(send, "failed", reason);
  }
}

function flushSends(room) {
  for (const send of [...room.sends]) if (send.state === "queued") deliver(room, send);
}

ui.messages.addEventListener("click", (event) => {
  const button = event.target.closest("button.retry, button.discard");
  if (!button) return;
  const room = rooms.get(current);
  const send = room?.findSend(Number(button.closest(".message")?.dataset.key));
  if (!send) return;
  if (button.classList.contains("retry")) deliver(room, send);
  else room.discard(send);
  ui.input.focus();
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.input.value;
  if (!text.trim()) return;
  if (text.length > maxLength) {
    ui.charCount.textContent = `Too long: ${text.length}/${maxLength}`;
    return;
  }
  ui.input.value = "";
  updateCharCount();
  sendMessage(text);
  ui.input.focus();
});

ui.input.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  ui.composer.requestSubmit();
});

ui.input.addEventListener("input", () => {
  updateCharCount();
  const now = Date.now();
  if (ui.input.value.trim() && socket.connected && current && now - lastTypingSent > TYPING_EMIT_INTERVAL_MS) {
    lastTypingSent = now;
    socket.emit("typing", { room: current });
  }
});

function updateCharCount() {
  const length = ui.input.value.length;
  ui.charCount.textContent = length > maxLength * 0.8 ? `${length}/${maxLength}` : "";
}

// -- switching rooms, scrolling ----------------------------------------------------------------

function selectRoom(name) {
  const previous = rooms.get(current);
  if (previous) {
    previous.draft = ui.input.value;
    previous.scrollTop = isNearBottom() ? null : ui.messages.scrollTop;
  }
  current = name;
  const room = rooms.get(name);
  if (room) {
    room.unread = 0;
    ui.messages.replaceChildren(room.list);
    ui.input.value = room.draft ?? "";
    updateCharCount();
    requestAnimationFrame(() => {
      if (room.scrollTop === null) scrollToBottom();
      else ui.messages.scrollTop = room.scrollTop;
    });
  }
  saveRooms();
  closeDrawers();
  renderAll();
}

function isNearBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
  ui.jumpLatest.hidden = true;
}

/** Change a room's messages; if it is the one in view and we were at the bottom, stay there. */
function withScroll(room, change) {
  const inView = room.name === current;
  const stick = inView && isNearBottom();
  change();
  if (stick) scrollToBottom();
}

ui.messages.addEventListener("scroll", () => {
  if (isNearBottom()) ui.jumpLatest.hidden = true;
});
ui.jumpLatest.addEventListener("click", () => {
  scrollToBottom();
  ui.messages.focus();
});

// -- rendering the chrome around the messages --------------------------------------------------

function renderAll() {
  renderRoomChrome();
  renderRoomLists();
  renderTyping();
}

function renderRoomChrome() {
  const room = rooms.get(current);
  const inRoom = Boolean(room);
  ui.welcome.hidden = inRoom;
  ui.roomHeader.hidden = !inRoom;
  ui.messages.hidden = !inRoom;
  ui.composer.hidden = !inRoom;
  ui.membersPanel.hidden = !inRoom;
  document.body.classList.toggle("in-room", inRoom);
  if (!inRoom) {
    ui.jumpLatest.hidden = true;
    document.title = titleWithUnread("Observable Chat");
    return;
  }
  ui.roomTitle.textContent = `#${room.name}`;
  ui.roomSubtitle.textContent = room.joined
    ? `${plural(room.members.length, "member")} here`
    : room.epoch === null
      ? "Joining…"
      : "Not connected: rejoining when the connection is back…";
  ui.messages.setAttribute("aria-label", `Messages in #${room.name}`);
  ui.membersTitle.textContent = `In this room · ${room.members.length}`;
  const sorted = [...room.members].sort((a, b) => (a === me ? -1 : b === me ? 1 : a.localeCompare(b)));
  ui.members.replaceChildren(
    ...sorted.map((user) => {
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
      if (user === me) {
        const you = document.createElement("span");
        you.className = "member-you";
        you.textContent = "you";
        item.append(you);
      }
      return item;
    }),
  );
  document.title = titleWithUnread(`#${room.name} · Observable Chat`);
}

function titleWithUnread(title) {
  let total = 0;
  for (const room of rooms.values()) total += room.unread;
  ui.totalUnread.hidden = total === 0;
  ui.totalUnread.textContent = String(total);
  return total > 0 ? `(${total}) ${title}` : title;
}

function roomButton(name, { members, unread = 0, selected = false, joined = true }) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "room-button";
  button.dataset.room = name;
  if (selected) button.setAttribute("aria-current", "true");
  const label = document.createElement("span");
  label.className = "room-name";
  label.textContent = `#${name}`;
  const count = document.createElement("span");
  count.className = members === null ? "room-members unknown" : "room-members";
  count.textContent = members === null ? "…" : String(members);
  count.title = members === null ? "rejoining" : plural(members, "member");
  button.append(label, count);
  let description = `#${name}, ${members === null ? "rejoining" : plural(members, "member")}`;
  if (unread > 0) {
    const badge = document.createElement("span");
    badge.className = "badge room-unread";
    badge.textContent = unread > 99 ? "99+" : String(unread);
    button.append(badge);
    description += `, ${plural(unread, "unread message")}`;
  }
  if (!joined) description += ", join";
  button.setAttribute("aria-label", description);
  item.append(button);
  return item;
}

function renderRoomLists() {
  const focusedRoom = document.activeElement?.closest?.(".room-button")?.dataset.room;
  ui.myRooms.replaceChildren(
    ...[...rooms.values()].map((room) =>
      roomButton(room.name, {
        members: room.joined ? room.members.length : null,
        unread: room.unread,
        selected: room.name === current,
      }),
    ),
  );
  ui.myRoomsEmpty.hidden = rooms.size > 0;
  const others = activeRooms
    .filter((entry) => entry && typeof entry.name === "string" && !rooms.has(entry.name))
    .sort((a, b) => b.members - a.members || a.name.localeCompare(b.name));
  ui.otherRooms.replaceChildren(
    ...others.map((entry) => roomButton(entry.name, { members: entry.members, joined: false })),
  );
  ui.otherRoomsEmpty.hidden = others.length > 0;
  if (focusedRoom) ui.sidebar.querySelector(`.room-button[data-room="${CSS.escape(focusedRoom)}"]`)?.focus();
  document.title = titleWithUnread(current ? `#${current} · Observable Chat` : "Observable Chat");
}

function renderTyping() {
  const room = rooms.get(current);
  ui.typing.textContent = room ? typingSentence([...room.typing.keys()]) : "";
}

// -- sidebar, join form, drawers, keyboard -----------------------------------------------------

async function openRoom(name) {
  if (rooms.has(name)) {
    selectRoom(name);
    ui.input.focus();
    return true;
  }
  if (!socket.connected) {
    showJoinError("You are not connected right now; try again when the connection is back.");
    return false;
  }
  const ack = await joinRoom(name);
  if (!ack.ok) {
    if (ack.error !== "in_progress") showJoinError(ack.message || `Could not join #${name}.`);
    return false;
  }
  selectRoom(name);
  ui.input.focus();
  refreshRoomList();
  return true;
}

function showJoinError(text) {
  ui.joinError.textContent = text;
  ui.joinError.hidden = !text;
  if (text) ui.joinInput.setAttribute("aria-invalid", "true");
  else ui.joinInput.removeAttribute("aria-invalid");
}

ui.joinForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = ui.joinInput.value.trim().replace(/^#/, "");
  if (!ROOM_NAME.test(name)) {
    showJoinError("Room names are 1–64 characters: letters, digits, or _ . - (not _ first)");
    ui.joinInput.focus();
    return;
  }
  showJoinError("");
  if (await openRoom(name)) ui.joinInput.value = "";
});

ui.joinInput.addEventListener("input", () => showJoinError(""));

ui.sidebar.addEventListener("click", (event) => {
  const button = event.target.closest(".room-button");
  if (button) openRoom(button.dataset.room);
});

ui.welcome.addEventListener("click", (event) => {
  const chip = event.target.closest("[data-join]");
  if (chip) openRoom(chip.dataset.join);
});

ui.leave.addEventListener("click", () => {
  if (current) leaveRoom(current);
});

ui.logout.addEventListener("click", async () => {
  leaving = true;
  ui.logout.disabled = true;
  socket.disconnect();
  try {
    await postJSON("/logout", {});
  } catch {
    // The session may already be gone; either way the next page is the login page.
  }
  handoff.set("You have logged out.");
  window.location.assign("/login");
});

ui.reconnectNow.addEventListener("click", reconnectNow);

const narrow = window.matchMedia("(max-width: 720px)");
const membersAsDrawer = window.matchMedia("(max-width: 1100px)");

function syncDrawers() {
  const roomsOpen = document.body.classList.contains("rooms-open");
  const membersOpen = document.body.classList.contains("members-open");
  ui.toggleRooms.setAttribute("aria-expanded", String(roomsOpen));
  ui.toggleMembers.setAttribute("aria-expanded", String(membersOpen));
  // A closed off-canvas drawer must not take keyboard focus.
  ui.sidebar.inert = narrow.matches && !roomsOpen;
  ui.membersPanel.inert = membersAsDrawer.matches && !membersOpen;
  ui.scrim.hidden = !(roomsOpen || membersOpen);
}

function closeDrawers() {
  const wasOpen = document.body.classList.contains("rooms-open") || document.body.classList.contains("members-open");
  document.body.classList.remove("rooms-open", "members-open");
  syncDrawers();
  return wasOpen;
}

ui.toggleRooms.addEventListener("click", () => {
  const open = !document.body.classList.contains("rooms-open");
  closeDrawers();
  document.body.classList.toggle("rooms-open", open);
  syncDrawers();
  if (open) ui.joinInput.focus();
});

ui.toggleMembers.addEventListener("click", () => {
  const open = !document.body.classList.contains("members-open");
  closeDrawers();
  document.body.classList.toggle("members-open", open);
  syncDrawers();
});

ui.scrim.addEventListener("click", closeDrawers);
for (const button of document.querySelectorAll("[data-close-drawer]")) {
  button.addEventListener("click", () => {
    const toggle = document.body.classList.contains("members-open") ? ui.toggleMembers : ui.toggleRooms;
    closeDrawers();
    toggle.focus();
  });
}
narrow.addEventListener("change", syncDrawers);
membersAsDrawer.addEventListener("change", syncDrawers);

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && closeDrawers()) {
    ui.input.focus();
    return;
  }
  // Alt+↑ / Alt+↓ moves between your rooms from anywhere on the page.
  if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown") && rooms.size > 1) {
    event.preventDefault();
    const names = [...rooms.keys()];
    const step = event.key === "ArrowUp" ? -1 : 1;
    const index = (names.indexOf(current) + step + names.length) % names.length;
    selectRoom(names[index]);
    ui.input.focus();
  }
});

// -- start -------------------------------------------------------------------------------------

paintAvatar(document.querySelector(".account .avatar"), me);
const saved = loadRooms();
for (const name of saved.names) rooms.set(name, new RoomView(name, me));
if (saved.current && rooms.has(saved.current)) selectRoom(saved.current);
else if (rooms.size > 0) selectRoom(rooms.keys().next().value);
syncDrawers();
setConnection("connecting");
renderAll();
socket.connect();
