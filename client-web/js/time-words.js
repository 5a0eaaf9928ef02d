// Times and durations in words, in the reader's own locale and time zone.
//
// Owns: formatting only. No DOM, so errors.js and the UI share the same words.

/** Human time for a server timestamp (ms): time today, else date and time. */
export function formatTime(ms) {
  const date = new Date(ms);
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  return sameDay
    ? date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString(undefined, {
        day: "numeric",
        month: "short",
        hour: "2-digit",
        minute: "2-digit",
      });
}

/** A moment in full, for things to come: "Tuesday 4 March at 19:00" (local time). */
export function formatDateTime(ms) {
  const date = new Date(ms);
  const day = date.toLocaleDateString(undefined, { weekday: "long", day: "numeric", month: "long" });
  const time = date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  return `${day} at ${time}`;
}

/** A wait in words, rounded up: "45 seconds", "about 3 minutes", "about 2 hours". */
export function durationWords(ms) {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  if (seconds < 60) {
    return `${seconds} second${seconds === 1 ? "" : "s"}`;
  }
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 90) {
    return `about ${minutes} minute${minutes === 1 ? "" : "s"}`;
  }
  const hours = Math.round(minutes / 60);
  return `about ${hours} hour${hours === 1 ? "" : "s"}`;
}

/** Minutes as a person says them: "10 minutes", "1 hour", "1 hour 30 minutes". */
export function minutesWords(minutes) {
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  const parts = [];
  if (h) {
    parts.push(`${h} hour${h === 1 ? "" : "s"}`);
  }
  if (m || !h) {
    parts.push(`${m} minute${m === 1 ? "" : "s"}`);
  }
  return parts.join(" ");
}
