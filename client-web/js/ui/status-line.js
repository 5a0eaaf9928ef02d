// The connection status line in the header: connecting, connected, reconnecting.
//
// Owns: #connection-status and the #reconnect button. The status is a polite live
// region, so it only changes text when the state changes (no countdowns ticking every
// second). The button appears only when the connection will not come back by itself.

import { Status } from "../connection.js";

const WORDS = {
  [Status.CONNECTING]: "Connecting…",
  [Status.CONNECTED]: "Connected",
  [Status.RECONNECTING]: "Connection lost. Reconnecting…",
  [Status.CLOSED]: "Not connected",
};

export function bindStatusLine(element, reconnectButton, connection) {
  reconnectButton.addEventListener("click", () => connection.reconnectNow());
  const render = (status) => {
    reconnectButton.hidden = !(status === Status.CLOSED && connection.paused);
    const text = WORDS[status] ?? WORDS[Status.CLOSED];
    if (element.textContent !== text) {
      element.textContent = text;
    }
    element.dataset.state = status;
  };
  connection.addEventListener("status", (ev) => render(ev.detail.status));
  render(connection.status);
}
