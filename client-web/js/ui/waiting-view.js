// The waiting room, as the person waiting sees it: calm words, what "I need support
// now" (in the top bar) does right now, and a button to the helplines sheet.
//
// Owns: #stage-waiting. It changes by itself when a facilitator lets the person in
// (the session reports it; group-stage.js moves on). The line about support follows
// the hub's coverage (group-view.js draws it with the coverage line).

export function createWaitingView() {
  return {};
}
