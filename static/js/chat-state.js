// What the chat page knows, in one owner: the rooms the reader is in and the room in view. The
// other modules get this object and read or change it; none keeps a copy of its own.
import { RoomView } from "./room-view.js";

export const ROOM_NAME = /^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$/; // "_" first is the service's own

export class ChatState {
  /** name -> RoomView, in the order the reader joined them. */
  rooms = new Map();
  /** The name of the room in view, or null (the welcome page). */
  current = null;

  constructor(me) {
    /** The reader's username. */
    this.me = me;
    this.storageKey = `chat.rooms.${me}`;
  }

  /** The RoomView in view, or undefined. */
  get currentRoom() {
    return this.rooms.get(this.current);
  }

  // -- persistence: the rooms you were in come back on reload and after a reconnect -------------

  save() {
    try {
      const saved = { rooms: [...this.rooms.keys()], current: this.current };
      localStorage.setItem(this.storageKey, JSON.stringify(saved));
    } catch {
      // Private mode or full storage: the page still works, it just forgets on reload.
    }
  }

  /** The saved rooms (not joined yet: the connection joins them) and the saved room in view. */
  restore() {
    const saved = this.#load();
    for (const name of saved.names) this.rooms.set(name, new RoomView(name, this.me));
    return saved.current;
  }

  #load() {
    try {
      const saved = JSON.parse(localStorage.getItem(this.storageKey) ?? "null");
      if (!saved || !Array.isArray(saved.rooms)) return { names: [], current: null };
      return { names: saved.rooms.filter((name) => ROOM_NAME.test(name)), current: saved.current };
    } catch {
      return { names: [], current: null };
    }
  }
}
