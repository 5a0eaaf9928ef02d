// The top bar's on-call indicator for supervisors and admins: whether this key is on
// call now, and how many escalations are open; pressing it opens the console.
//
// Owns: #oncall. Hidden for everyone else. Its words change only when the state does
// (it is not a live region; new escalations are announced by the console).

import { EscalationStatus } from "../protocol.js";
import { byId } from "./dom.js";

export function createOnCallIndicator({ desk, connection, onOpen }) {
  const button = byId("oncall");
  button.addEventListener("click", () => onOpen());

  function render() {
    const staff = desk.isStaff();
    button.hidden = !staff;
    if (!staff) {
      return;
    }
    const queue = desk.queue();
    const waiting = queue.filter((e) => e.view.status === EscalationStatus.OPEN).length;
    const onCall = desk.onCall();
    const who = onCall ? "On call" : "Not on call";
    const text = `${who} · ${waiting} waiting${queue.length > waiting ? `, ${queue.length - waiting} in hand` : ""}`;
    if (button.textContent !== text) {
      button.textContent = text;
    }
    button.dataset.state = waiting > 0 ? "waiting" : onCall ? "on" : "off";
    button.title = "Open the supervisor console";
  }

  desk.addEventListener("change", render);
  desk.addEventListener("rota", render);
  connection.addEventListener("authenticated", render);
  setInterval(render, 30_000);
  render();
  return { render };
}
