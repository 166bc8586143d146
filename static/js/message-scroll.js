// The scroll position of the messages box: stay at the bottom while new messages come in if the
// reader was there, and offer "New messages below" when they had scrolled up.

const NEAR_BOTTOM_PX = 64;

export class MessageScroll {
  #ui;
  #state;

  constructor(ui, state) {
    this.#ui = ui;
    this.#state = state;
    ui.messages.addEventListener("scroll", () => {
      if (this.isNearBottom()) ui.jumpLatest.hidden = true;
    });
    ui.jumpLatest.addEventListener("click", () => {
      this.toBottom();
      ui.messages.focus();
    });
  }

  isNearBottom() {
    const box = this.#ui.messages;
    return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
  }

  toBottom() {
    this.#ui.messages.scrollTop = this.#ui.messages.scrollHeight;
    this.#ui.jumpLatest.hidden = true;
  }

  /** Change a room's messages; if it is the one in view and we were at the bottom, stay there. */
  keep(room, change) {
    const inView = room.name === this.#state.current;
    const stick = inView && this.isNearBottom();
    change();
    if (stick) this.toBottom();
  }

  /** New messages arrived in the room in view: offer the jump when the reader is scrolled up. */
  newBelow() {
    if (!this.isNearBottom()) this.#ui.jumpLatest.hidden = false;
  }
}
