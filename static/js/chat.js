// The chat page: reads the page's settings, builds its parts and wires them together, then
// connects. What the page knows lives in one ChatState; each part gets what it uses.
import { ChatState } from "./chat-state.js";
import { Connection } from "./connection.js";
import { Drawers } from "./drawers.js";
import { MessageScroll } from "./message-scroll.js";
import { RoomPane } from "./room-pane.js";
import { RoomSync } from "./room-sync.js";
import { paintAvatar } from "./room-view.js";
import { Sending } from "./sending.js";
import { Sidebar } from "./sidebar.js";

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
  joinPrivate: $("join-private"),
  dmList: $("dm-list"),
  dmEmpty: $("dm-empty"),
  dmForm: $("dm-form"),
  dmInput: $("dm-input"),
  dmError: $("dm-error"),
  privateRooms: $("private-rooms"),
  privateRoomsEmpty: $("private-rooms-empty"),
  invitationsBox: $("invitations-box"),
  invitations: $("invitations"),
  inviteForm: $("invite-form"),
  inviteInput: $("invite-input"),
  inviteStatus: $("invite-status"),
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

const state = new ChatState(document.body.dataset.username);
const maxLength = Number(document.body.dataset.maxMessageLength) || 2000;
const historyLimit = Number(document.body.dataset.historyLimit) || 50;
const maxRooms = Number(document.body.dataset.maxRooms) || 50;

// The parts call each other only through what they are given here; the arrows reach parts
// built further down (they run on events, after everything is built).
const connection = new Connection(ui, {
  onConnect: () => {
    sync.rejoinAll();
    sidebar.refresh();
    sidebar.loadConversations();
  },
  onDisconnect: () => sync.connectionLost(),
});
const drawers = new Drawers(ui);
const scroll = new MessageScroll(ui, state);
const sending = new Sending({ state, ui, connection, scroll, maxLength, catchUp: (room) => sync.catchUp(room) });
const pane = new RoomPane({ state, ui, drawers, scroll, sending, renderRoomLists: () => sidebar.render() });
const sidebar = new Sidebar({ state, ui, connection, pane, join: (name) => sync.join(name), maxRooms });
const sync = new RoomSync({ state, ui, connection, scroll, sending, pane, sidebar, historyLimit });

// -- start -------------------------------------------------------------------------------------

paintAvatar(document.querySelector(".account .avatar"), state.me);
const savedCurrent = state.restore();
if (savedCurrent && state.rooms.has(savedCurrent)) pane.select(savedCurrent);
else if (state.rooms.size > 0) pane.select(state.rooms.keys().next().value);
drawers.sync();
connection.show("connecting");
pane.renderAll();
connection.connect();
