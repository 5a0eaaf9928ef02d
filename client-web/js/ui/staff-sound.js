// A sound for facilitators: someone arrived in the waiting room, or the hub noticed a
// possible risk in a message. Staff look away from the screen; a soft chime brings
// them back. Never for participants.
//
// Owns: one Web Audio context for the group screen, made on the person's first tap or
// key press (browsers allow no sound before that), and the console's "Sound" switch
// (#console-sound, kept on this device). The tones are generated here; nothing is
// fetched. Each chime played is counted on #facilitator-console's data-chimes, which
// the browser tests read (they cannot listen).

import { byId } from "./dom.js";
import { playTones } from "./tones.js";

const KEY = "peerhub-staff-sound";

export function createStaffSound() {
  const button = byId("console-sound");
  const target = byId("facilitator-console");
  let audio = null;
  let on = globalThis.localStorage?.getItem(KEY) !== "off";

  function render() {
    button.setAttribute("aria-pressed", String(on));
    button.textContent = on ? "Sound for arrivals and risk notes: on" : "Sound for arrivals and risk notes: off";
  }

  function unlock() {
    if (audio || typeof globalThis.AudioContext !== "function") {
      return;
    }
    try {
      audio = new AudioContext();
      audio.resume().catch(() => {});
    } catch {
      audio = null;
    }
  }
  document.addEventListener("pointerdown", unlock, { capture: true, passive: true });
  document.addEventListener("keydown", unlock, { capture: true });

  button.addEventListener("click", () => {
    on = !on;
    try {
      globalThis.localStorage?.setItem(KEY, on ? "on" : "off");
    } catch {
      // Not kept: it still applies on this page.
    }
    render();
  });
  render();

  return {
    /** One soft two-tone chime, when sound is on and the browser lets it play. */
    chime() {
      if (!on || !playTones(audio, [523, 784], { step: 0.2, peak: 0.15 })) {
        return false;
      }
      target.dataset.chimes = String(Number(target.dataset.chimes ?? 0) + 1);
      return true;
    },
  };
}
