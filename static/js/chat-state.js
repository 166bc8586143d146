// What the chat page knows, in one owner: the rooms the reader is in and the room in view. The
// other modules get this object and read or change it; none keeps a copy of its own.
import { RoomView } from "./room-view.js";

export const ROOM_NAME = /^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$/; // "_" first is the service's own
/** The service's ids of private conversations: `_dm:<a>:<b>` (case-folded names) and `_p:<hex>`. */
export const DIRECT_ID = /^_dm:([a-z0-9_.-]{3,32}):([a-z0-9_.-]{3,32})$/;
export const PRIVATE_ID = /^_p:[0-9a-f]{16}$/;
export const USERNAME = /^[A-Za-z0-9_.-]{3,32}$/;
/** Read marks kept (the oldest go first): a user's list holds at most 1000 conversations. */
const MAX_READ_MARKS = 1000;

/** What a room id is: "direct", "private" or "public". */
export function roomKind(id) {
  if (DIRECT_ID.test(id)) return "direct";
  if (PRIVATE_ID.test(id)) return "private";
  return "public";
}

/** A room id the page may keep or join: a public name or a private conversation's id. */
export function isRoomId(id) {
  return ROOM_NAME.test(id) || roomKind(id) !== "public";
}

export class ChatState {
  /** name -> RoomView, in the order the reader joined them. */
  rooms = new Map();
  /** The name of the room in view, or null (the welcome page). */
  current = null;
  /** Direct conversations: room id -> the other user's name (from `conversations`, `dm_opened`). */
  directs = new Map();
  /** Private rooms the reader belongs to: room id -> title. */
  privates = new Map();
  /** Pending invitations: room id -> {name, by}. */
  invitations = new Map();

  /** Direct conversations and private rooms: room id -> {epoch, id} of the last message read. */
  #readMarks = null;

  constructor(me) {
    /** The reader's username. */
    this.me = me;
    this.storageKey = `chat.rooms.${me}`;
    this.readKey = `chat.read.${me}`;
  }

  /** The RoomView in view, or undefined. */
  get currentRoom() {
    return this.rooms.get(this.current);
  }

  /** The name a room goes by in the page: `#general`, the other user's name, a private title. */
  label(id) {
    const kind = roomKind(id);
    if (kind === "direct") return this.partner(id);
    if (kind === "private") return this.privates.get(id) ?? this.invitations.get(id)?.name ?? "Private room";
    return `#${id}`;
  }

  /** The other user of direct conversation `id` (as registered when known, else from the id). */
  partner(id) {
    const known = this.directs.get(id);
    if (known) return known;
    const [, a, b] = DIRECT_ID.exec(id) ?? [];
    return a === this.me.toLowerCase() ? b : a;
  }

  /** Take the server's `conversations` lists (on every connect). */
  applyConversations(ack) {
    const entries = (list) => (Array.isArray(list) ? list.filter((entry) => entry && typeof entry.room === "string") : []);
    this.directs = new Map(entries(ack.direct).filter((c) => typeof c.user === "string").map((c) => [c.room, c.user]));
    this.privates = new Map(entries(ack.private).map((c) => [c.room, String(c.name ?? "")]));
    this.invitations = new Map(
      entries(ack.invitations).map((c) => [c.room, { name: String(c.name ?? ""), by: String(c.by ?? "") }]),
    );
  }

  // -- what the reader has read in each private conversation (kept in this browser) ----------

  /** The last message id the reader saw in direct conversation or private room `id` (0: none). */
  lastRead(id, epoch) {
    const mark = this.#marks().get(id);
    return mark && mark.epoch === epoch ? mark.id : 0;
  }

  /** The reader has seen `room` (a RoomView) up to its last id: remember it. */
  markRead(room) {
    if (roomKind(room.name) === "public" || room.epoch === null || room.lastId === 0) return;
    const marks = this.#marks();
    const mark = marks.get(room.name);
    if (mark && mark.epoch === room.epoch && mark.id >= room.lastId) return;
    marks.delete(room.name); // the most recently read last
    marks.set(room.name, { epoch: room.epoch, id: room.lastId });
    while (marks.size > MAX_READ_MARKS) marks.delete(marks.keys().next().value);
    try {
      localStorage.setItem(this.readKey, JSON.stringify([...marks]));
    } catch {
      // Private mode or full storage: unread counts start from nothing read after a reload.
    }
  }

  #marks() {
    if (this.#readMarks !== null) return this.#readMarks;
    this.#readMarks = new Map();
    try {
      const saved = JSON.parse(localStorage.getItem(this.readKey) ?? "[]");
      for (const entry of Array.isArray(saved) ? saved : []) {
        const [id, mark] = Array.isArray(entry) ? entry : [];
        if (typeof id === "string" && Number.isInteger(mark?.id) && typeof mark.epoch === "string") {
          this.#readMarks.set(id, { epoch: mark.epoch, id: mark.id });
        }
      }
    } catch {
      // Unreadable: nothing read yet.
    }
    return this.#readMarks;
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
      return { names: saved.rooms.filter((name) => typeof name === "string" && isRoomId(name)), current: saved.current };
    } catch {
      return { names: [], current: null };
    }
  }
}
