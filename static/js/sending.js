// Writing and sending: the message box (Enter sends, Shift+Enter adds a line, the length count,
// `typing` events), and each send's life: pending until the server's ack, held while the
// connection is down, failed with the reason and a Retry / Discard.

const TYPING_EMIT_INTERVAL_MS = 2_000;

export class Sending {
  #state;
  #ui;
  #connection;
  #scroll;
  #catchUp;
  #maxLength;
  #refusals;
  /** When this page last emitted `typing` (they are spaced out). */
  #lastTypingSent = 0;

  /** `catchUp(room)` fetches what is missing when an ack's id leaves a gap. */
  constructor({ state, ui, connection, scroll, maxLength, catchUp }) {
    this.#state = state;
    this.#ui = ui;
    this.#connection = connection;
    this.#scroll = scroll;
    this.#catchUp = catchUp;
    this.#maxLength = maxLength;
    this.#refusals = {
      rate_limited: "you are sending too fast. Wait a moment, then retry.",
      message_too_long: `the message is longer than ${maxLength} characters.`,
      empty_message: "the message is empty.",
      not_in_room: "you are not in this room any more.",
      timeout: "no answer from the server; it may not have arrived.",
    };

    ui.messages.addEventListener("click", (event) => {
      const button = event.target.closest("button.retry, button.discard");
      if (!button) return;
      const room = this.#state.currentRoom;
      const send = room?.findSend(Number(button.closest(".message")?.dataset.key));
      if (!send) return;
      if (button.classList.contains("retry")) this.deliver(room, send);
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
      this.updateCharCount();
      this.#send(text);
      ui.input.focus();
    });

    ui.input.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      event.preventDefault();
      ui.composer.requestSubmit();
    });

    ui.input.addEventListener("input", () => {
      this.updateCharCount();
      const now = Date.now();
      const current = this.#state.current;
      const due = now - this.#lastTypingSent > TYPING_EMIT_INTERVAL_MS;
      if (ui.input.value.trim() && connection.connected && current && due) {
        this.#lastTypingSent = now;
        connection.emit("typing", { room: current });
      }
    });
  }

  updateCharCount() {
    const length = this.#ui.input.value.length;
    const max = this.#maxLength;
    this.#ui.charCount.textContent = length > max * 0.8 ? `${length}/${max}` : "";
  }

  /** Send a room's held messages (after its join). */
  flush(room) {
    for (const send of [...room.sends]) if (send.state === "queued") this.deliver(room, send);
  }

  /** Emit one send and wait for its ack; without a connection it is held as queued. */
  async deliver(room, send) {
    if (!this.#connection.connected || !room.joined) {
      room.setSendState(send, "queued");
      return;
    }
    send.attempt += 1;
    const attempt = send.attempt;
    room.setSendState(send, "sending");
    const ack = await this.#connection.request("message", { room: room.name, text: send.text });
    if (send.attempt !== attempt) return; // superseded by a later attempt after a reconnect
    if (ack.ok && Number.isInteger(ack.id)) {
      room.acknowledge(send, ack.id);
      if (room.hasGap()) this.#catchUp(room);
    } else if (room.sends.includes(send)) {
      send.uncertain = ack.error === "timeout";
      const reason = this.#refusals[ack.error] ?? ack.message ?? ack.error ?? "unknown error";
      room.setSendState(send, "failed", reason);
    }
  }

  #send(text) {
    const room = this.#state.currentRoom;
    if (!room) return;
    const send = room.queueSend(text);
    this.#scroll.toBottom();
    this.deliver(room, send);
  }
}
