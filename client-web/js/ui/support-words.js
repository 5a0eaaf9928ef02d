// Words for distress flags and escalations: severities, consent, what the hub's
// answers and notices mean. Kind and plain, never alarming for its own sake.
//
// Owns: these words, so the person asking, the facilitators and the supervisors read
// the same things the same way. A severity is always words (and a symbol), never a
// colour alone.

/** Severity as a short label, most serious last. */
export const SEVERITY_LABEL = {
  concern: "Concern",
  urgent: "Urgent",
  emergency: "Emergency",
};

/** Severity explained, for supervisors. */
export const SEVERITY_MEANING = {
  concern: "worth a supervisor's look soon",
  urgent: "needs a supervisor within minutes",
  emergency: "someone may be in danger now",
};

/** What a symbol beside the label says (aria-hidden: the label carries the meaning). */
export const SEVERITY_SYMBOL = {
  concern: "●",
  urgent: "▲",
  emergency: "◆",
};

export const CONSENT_WORDS = {
  own: "Raised by the person themselves.",
  given: "Raised by someone else, with the person's agreement.",
  imminent_risk: "Raised without asking the person, because of a risk of immediate harm.",
};

/** Titles of the hub's support notices (`support_notice.notice`). */
export const NOTICE_TITLE = {
  support_asked: "Someone has asked for support for you",
  acknowledged: "A supervisor is on it",
  unanswered: "No supervisor has answered yet",
  resolved: "The request for support is closed",
};

/** Whether a notice is a worry (shown as a warning) rather than good news. */
export const NOTICE_TONE = {
  support_asked: "info",
  acknowledged: "success",
  unanswered: "warning",
  resolved: "info",
};

/**
 * What the `flagged` answer means, for the person who raised the flag.
 * `self`: they asked for themselves.
 */
export function flaggedWords(reply, { self }) {
  const onCall = reply.on_call === true;
  const parts = [];
  // The hub does not say whether someone had already asked (that would tell
  // anyone who flags that a person is already flagged): the words fit both.
  parts.push(
    self
      ? "Your request for support has been sent."
      : "Your request for a supervisor to offer them support has been sent.",
  );
  if (onCall) {
    parts.push("A supervisor is on call and has been asked to pick it up. You'll see here when someone has.");
  } else {
    parts.push(
      "No supervisor is on call right now. The request is kept and will be answered as soon as someone can. If anyone is in danger now, please use the helplines.",
    );
  }
  return parts.join(" ");
}
