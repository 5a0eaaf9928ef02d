// Two-tone chimes made with Web Audio: the one sound routine the supervisor's alarm
// (alerts.js) and the facilitator's arrival sound (staff-sound.js) share. Nothing is
// fetched; the tones are generated.

/**
 * Plays `frequencies` one after another on `audio` (a running AudioContext), each
 * `step` seconds apart, rising to `peak` gain. Returns whether it played.
 */
export function playTones(audio, frequencies, { step, peak }) {
  if (!audio || audio.state !== "running") {
    return false;
  }
  try {
    const start = audio.currentTime + 0.02;
    frequencies.forEach((frequency, i) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      const t = start + i * step;
      osc.type = "sine";
      osc.frequency.setValueAtTime(frequency, t);
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(peak, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + step - 0.02);
      osc.connect(gain).connect(audio.destination);
      osc.start(t);
      osc.stop(t + step - 0.01);
    });
    return true;
  } catch {
    return false;
  }
}
