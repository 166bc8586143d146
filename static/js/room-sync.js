// Keeping each room true across reconnects: join, rejoin after a reconnect, catch up with
// `after=` the last id shown, leave; the live `message`, `joined`, `left`, `removed` and
// `typing` events; unread counts (in a direct conversation or private room, from the last
// message read in this browser). Epoch changes (a store that started afresh) are
// RoomView.applyJoin's to handle.
import { ApiError, getJSON } from "./api.js";
import { roomKind } from "./chat-state.js";
import { RoomView } from "./room-view.js";

const TYPING_SHOWN_MS = 4_000;

export class RoomSync {
  #state;
  #ui;
  #connection;
  #scroll;
  #sending;
  #pane;
  #sidebar;
  #historyLimit;
  /** Live events for a room whose join is in flight: applied after its ack, in order. */
  #joinBuffers = new Map();

  constructor({ state, ui, connection, scroll, sending, pane, sidebar, historyLimit }) {
    this.#state = state;
    this.#ui = ui;
    this.#connection = connection;
    this.#scroll = scroll;
    this.#sending = sending;
    this.#pane = pane;
    this.#sidebar = sidebar;
    this.#historyLimit = historyLimit;

    connection.on("message", (message) => {
      const name = message?.room;
      if (this.#joinBuffers.has(name)) {
        this.#joinBuffers.get(name).push({ kind: "message", payload: message });
        return;
      }
      const room = state.rooms.get(name);
      if (room?.joined) this.#applyLive(room, { kind: "message", payload: message });
    });
    connection.on("joined", (payload) => this.#membershipChanged(payload, "joined"));
    connection.on("left", (payload) => this.#membershipChanged(payload, "left"));
    // This connection is out of a private room that the reader left in another tab or window.
    connection.on("removed", (payload) => {
      if (typeof payload?.room === "string" && state.rooms.has(payload.room)) this.#forget(payload.room);
    });
    connection.on("typing", (payload) => {
      const room = state.rooms.get(payload?.room);
      if (!room || typeof payload.user !== "string" || payload.user === state.me) return;
      clearTimeout(room.typing.get(payload.user));
      room.typing.set(
        payload.user,
        setTimeout(() => this.#stopTyping(room, payload.user), TYPING_SHOWN_MS),
      );
      pane.renderTyping();
    });

    ui.leave.addEventListener("click", () => {
      if (state.current) this.leave(state.current);
    });
  }

  /** After a (re)connect: join every room again, and show one if none is in view. */
  async rejoinAll() {
    const { rooms } = this.#state;
    await Promise.all([...rooms.keys()].map((name) => this.join(name, { rejoin: true })));
    if (this.#state.current === null && rooms.size > 0) this.#pane.select(rooms.keys().next().value);
  }

  /** The connection dropped: every room waits for its rejoin. */
  connectionLost() {
    for (const room of this.#state.rooms.values()) room.connectionLost();
    this.#pane.renderAll();
  }

  /** Join room `name` (or rejoin it after a reconnect); resolves with the server's ack. */
  async join(name, { rejoin = false } = {}) {
    const state = this.#state;
    if (this.#joinBuffers.has(name)) return { ok: false, error: "in_progress", message: "Already joining." };
    this.#joinBuffers.set(name, []);
    const ack = await this.#connection.request("join", { room: name });
    // Whatever arrived while the join was in flight is applied after the ack's history.
    const buffered = this.#joinBuffers.get(name) ?? [];
    this.#joinBuffers.delete(name);
    if (!ack.ok) {
      if (ack.error === "unauthorized") {
        this.#connection.sessionEnded();
      } else if (rejoin && ["invalid_room", "invalid_payload", "not_invited"].includes(ack.error)) {
        // A saved name the server does not accept (or a private room you no longer have): forget it.
        state.rooms.delete(name);
        if (state.current === name) state.current = null;
        state.save();
        this.#pane.renderAll();
      } else if (rejoin) {
        state.rooms.get(name)?.note(`Could not rejoin ${state.label(name)}: ${ack.message || ack.error}`, "warning");
      }
      return ack;
    }

    let room = state.rooms.get(name);
    if (!room) {
      room = new RoomView(name, state.me);
      state.rooms.set(name, room);
      state.save();
    }
    const firstJoin = room.epoch === null && room.messages.size === 0;
    this.#scroll.keep(room, () => {
      const { added } = room.applyJoin(ack);
      // A direct conversation or private room the page had not shown yet: what came after the
      // last message read here is unread (all of it, in one never opened in this browser).
      const unread =
        firstJoin && roomKind(name) !== "public" && Array.isArray(ack.history)
          ? ack.history.filter((message) => Number.isInteger(message?.id) && message.id > state.lastRead(name, room.epoch))
          : added;
      this.#countUnread(room, unread);
    });
    for (const event of buffered) this.#applyLive(room, event);
    // Always ask once for anything after the last id we have: a message stored between the
    // join's history snapshot and our entering the room's broadcast would otherwise stay unseen.
    await this.catchUp(room, { force: true });
    this.#sending.flush(room);
    this.#pane.renderAll();
    return ack;
  }

  /** Fetch whatever the room said while we were away: `after=` the last id we have, page by page. */
  async catchUp(room, { force = false } = {}) {
    room.catchUpWanted = room.catchUpWanted || force;
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
          const url = `/rooms/${encodeURIComponent(room.name)}/messages?after=${after}&limit=${this.#historyLimit}`;
          const page = await getJSON(url);
          this.#scroll.keep(room, () => this.#countUnread(room, room.add(Array.isArray(page) ? page : [])));
          if (room.lastId === after) {
            // The server no longer has the message after `after` (it keeps a bounded history).
            const next = room.nextHeldId();
            if (next === undefined) break;
            this.#scroll.keep(room, () => room.skipGap(next));
          }
        }
      } while (room.catchUpAgain);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.#connection.sessionEnded();
      // Otherwise (e.g. 403 after a drop): the rejoin that follows the reconnect catches up.
    } finally {
      room.catchingUp = false;
      this.#pane.render();
    }
  }

  async leave(name) {
    const room = this.#state.rooms.get(name);
    if (!room) return;
    if (this.#connection.connected) {
      const ack = await this.#connection.request("leave", { room: name });
      if (!ack.ok && ack.error !== "not_in_room") {
        room.note(`Could not leave: ${ack.message || ack.error}`, "warning");
        return;
      }
    }
    this.#forget(name);
    // The Leave button may be gone now: put the focus where the next action is.
    (this.#state.current ? this.#ui.input : this.#ui.joinInput).focus();
  }

  /** The page is out of room `name`: it goes from the lists, and another room comes into view. */
  #forget(name) {
    const state = this.#state;
    state.rooms.delete(name);
    // Leaving a private room gives up access to it until someone invites you again.
    state.privates.delete(name);
    if (state.current === name) {
      state.current = null;
      const next = state.rooms.keys().next();
      if (!next.done) this.#pane.select(next.value);
    }
    state.save();
    this.#pane.renderAll();
    this.#sidebar.refresh();
  }

  // -- live events ---------------------------------------------------------------------------

  #applyLive(room, event) {
    if (event.kind !== "message") return;
    const message = event.payload;
    this.#stopTyping(room, message.user);
    this.#scroll.keep(room, () => this.#countUnread(room, room.add([message])));
    if (room.hasGap()) this.catchUp(room);
    this.#sidebar.render();
  }

  #membershipChanged(payload, verb) {
    const room = this.#state.rooms.get(payload?.room);
    if (!room || !Array.isArray(payload.members)) return;
    const before = new Set(room.members);
    room.members = payload.members;
    const present = room.members.includes(payload.user);
    const changed = verb === "joined" ? !before.has(payload.user) && present : before.has(payload.user) && !present;
    if (changed && payload.user !== this.#state.me) {
      this.#scroll.keep(room, () => room.note(`${payload.user} ${verb}`));
      if (verb === "left") this.#stopTyping(room, payload.user);
    }
    this.#pane.render();
    this.#sidebar.render();
  }

  #stopTyping(room, user) {
    if (!room.typing.has(user)) return;
    clearTimeout(room.typing.get(user));
    room.typing.delete(user);
    this.#pane.renderTyping();
  }

  /** Count what others said in a room out of view (or in a hidden tab) as unread. */
  #countUnread(room, added) {
    const inView = room.name === this.#state.current;
    if (inView && !document.hidden) this.#state.markRead(room);
    const unseen = added.filter((message) => message.user !== this.#state.me);
    if (unseen.length === 0) return;
    if (!inView || document.hidden) room.unread += unseen.length;
    if (inView) this.#scroll.newBelow();
  }
}
