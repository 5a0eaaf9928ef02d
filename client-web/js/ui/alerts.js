// Alerts for supervisors: a short sound and a browser notification when a new
// escalation arrives (or one is routed to them).
//
// Owns: the Web Audio context and the notification permission request. Both need a
// person's action in the page first (browsers refuse to play sound or ask for
// permission on their own), so #alerts-enable asks, once; until then the page itself
// (the queue and the assertive live region) is the alert. The sound is generated
// here — two soft tones — so no audio file is fetched. A notification names only the
// severity and the group, never a person or their words: it can show on a locked
// screen.

import { sentenceFor } from "../errors.js";
import { readStaffPrefs, writeStaffPrefs } from "../staff-prefs.js";
import { formatTime } from "./dom.js";
import { playTones } from "./tones.js";

export function createAlerts({ button, statusEl, onOpen }) {
  let audio = null;
  let enabled = false;
  let lastAlert = null;

  const Context = () => globalThis.AudioContext ?? globalThis.webkitAudioContext;

  // Turned on before a reload: on again. The browser lets sound start only after
  // the person's next click or key press in the page, so it is armed for that.
  if (readStaffPrefs().alerts) {
    enabled = true;
    button.textContent = "Sound and notifications are on";
    button.classList.add("secondary");
    const arm = () => {
      const AudioContext = Context();
      if (AudioContext) {
        audio = audio ?? new AudioContext();
        audio.resume().catch(() => {}).finally(describe);
      }
    };
    globalThis.addEventListener("pointerdown", arm, { once: true, capture: true });
    globalThis.addEventListener("keydown", arm, { once: true, capture: true });
  }

  const notificationsSupported = () => typeof globalThis.Notification === "function";

  function describe() {
    const parts = [];
    if (!enabled) {
      parts.push("Sound and notifications are off until you turn them on.");
    } else {
      parts.push(audio?.state === "running" ? "Sound is on." : "This browser would not start the sound.");
      if (!notificationsSupported()) {
        parts.push(sentenceFor("notifications_unsupported"));
      } else if (Notification.permission === "granted") {
        parts.push("Notifications are on.");
      } else if (Notification.permission === "denied") {
        parts.push(sentenceFor("notifications_denied"));
      } else {
        parts.push("Notifications were not allowed.");
      }
    }
    if (lastAlert) {
      parts.push(lastAlert);
    }
    statusEl.textContent = parts.join(" ");
  }

  /** Two short tones, rising: noticeable, not alarming. Returns whether it played. */
  function chime() {
    return playTones(audio, [660, 880], { step: 0.18, peak: 0.2 });
  }

  function notify(title, body, tag) {
    if (!notificationsSupported() || Notification.permission !== "granted") {
      return false;
    }
    try {
      const n = new Notification(title, { body, tag });
      n.onclick = () => {
        globalThis.focus?.();
        onOpen();
        n.close();
      };
      return true;
    } catch {
      return false;
    }
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const AudioContext = Context();
      if (AudioContext) {
        audio = audio ?? new AudioContext();
        await audio.resume().catch(() => {});
      }
      if (notificationsSupported() && Notification.permission === "default") {
        await Notification.requestPermission().catch(() => "default");
      }
      enabled = true;
      writeStaffPrefs({ alerts: true });
      chime(); // so the person knows what it sounds like
      button.textContent = "Sound and notifications are on";
      button.classList.add("secondary");
    } finally {
      button.disabled = false;
      describe();
    }
  });
  describe();

  return {
    /** Whether sound and notifications are turned on. */
    get enabled() {
      return enabled;
    },
    /** The alarm again while `waiting` escalations wait: sound only, and said. */
    repeat(waiting) {
      if (!enabled) {
        return false;
      }
      const sound = chime();
      lastAlert = `Alarm repeated at ${formatTime(Date.now())}: ${waiting} waiting${sound ? "" : " (the sound could not play)"}.`;
      describe();
      return sound;
    },
    /** Alerts now: { title, body, tag }. Returns what was used. */
    alert({ title, body, tag }) {
      const sound = chime();
      const shown = notify(title, body, tag);
      const how = [sound ? "sound played" : null, shown ? "notification shown" : null].filter(Boolean);
      lastAlert = `Last alert at ${formatTime(Date.now())}${how.length ? `: ${how.join(", ")}` : ""}.`;
      describe();
      return { sound, notification: shown };
    },
  };
}
