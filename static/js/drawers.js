// The phone layout: the room list and the member list slide in as drawers over the room, one
// at a time, closed by the scrim, their × buttons or Escape. The open drawer is a class on <body>.

export class Drawers {
  #ui;
  #narrow = window.matchMedia("(max-width: 720px)");
  #membersAsDrawer = window.matchMedia("(max-width: 1100px)");

  constructor(ui) {
    this.#ui = ui;
    ui.toggleRooms.addEventListener("click", () => {
      const open = !document.body.classList.contains("rooms-open");
      this.close();
      document.body.classList.toggle("rooms-open", open);
      this.sync();
      if (open) ui.joinInput.focus();
    });
    ui.toggleMembers.addEventListener("click", () => {
      const open = !document.body.classList.contains("members-open");
      this.close();
      document.body.classList.toggle("members-open", open);
      this.sync();
    });
    ui.scrim.addEventListener("click", () => this.close());
    for (const button of document.querySelectorAll("[data-close-drawer]")) {
      button.addEventListener("click", () => {
        const toggle = document.body.classList.contains("members-open") ? ui.toggleMembers : ui.toggleRooms;
        this.close();
        toggle.focus();
      });
    }
    this.#narrow.addEventListener("change", () => this.sync());
    this.#membersAsDrawer.addEventListener("change", () => this.sync());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.close()) ui.input.focus();
    });
  }

  /** Make the toggles, the drawers' focusability and the scrim match the open drawer. */
  sync() {
    const ui = this.#ui;
    const roomsOpen = document.body.classList.contains("rooms-open");
    const membersOpen = document.body.classList.contains("members-open");
    ui.toggleRooms.setAttribute("aria-expanded", String(roomsOpen));
    ui.toggleMembers.setAttribute("aria-expanded", String(membersOpen));
    // A closed off-canvas drawer must not take keyboard focus.
    ui.sidebar.inert = this.#narrow.matches && !roomsOpen;
    ui.membersPanel.inert = this.#membersAsDrawer.matches && !membersOpen;
    ui.scrim.hidden = !(roomsOpen || membersOpen);
  }

  /** Close whichever drawer is open; returns whether one was. */
  close() {
    const wasOpen = document.body.classList.contains("rooms-open") || document.body.classList.contains("members-open");
    document.body.classList.remove("rooms-open", "members-open");
    this.sync();
    return wasOpen;
  }
}
