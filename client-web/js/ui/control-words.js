// Facilitator controls as sentences: "Jo muted River for 10 minutes."
//
// Owns: the wording of every control action (protocol.js `Control`). Only called for
// verified controls, so the actor named is the key that signed it. A control this
// version does not know is said to be one, never guessed at.

import { MAIN } from "../protocol.js";
import { minutesWords } from "../time-words.js";
import { who } from "./who.js";

/** The sentence for a verified control envelope (record.payload.action, record.key). */
export function describeControl(session, record) {
  const action = record.payload.action;
  const actor = who(session, record.key, { capital: true });
  const target = action.member ? who(session, action.member) : "";
  const reason = typeof action.reason === "string" && action.reason.trim() ? action.reason.trim() : "";
  switch (action.do) {
    case "admit":
      return `${actor} let ${target} in.`;
    case "decline":
      return reason
        ? `${actor} couldn't let ${target} in this time. Reason given: ${reason}`
        : `${actor} couldn't let ${target} in this time.`;
    case "mute":
      return `${actor} muted ${target} for ${minutesWords(action.minutes)}.`;
    case "unmute":
      return `${actor} unmuted ${target}.`;
    case "remove": {
      const from = action.until_session_end ? "this session" : "the group";
      return reason ? `${actor} removed ${target} from ${from}. Reason: ${reason}` : `${actor} removed ${target} from ${from}.`;
    }
    case "lock":
      return `${actor} locked the group: nobody new can come in for now.`;
    case "unlock":
      return `${actor} unlocked the group: new people can come in again.`;
    case "slow_mode":
      return action.seconds > 0
        ? `${actor} turned on slow mode: one message every ${action.seconds} second${action.seconds === 1 ? "" : "s"} each.`
        : `${actor} turned slow mode off.`;
    case "pause":
      return `${actor} paused the conversation: only facilitators can write for now.`;
    case "resume":
      return `${actor} resumed the conversation: everyone can write again.`;
    case "redact": {
      // A writer withdrawing their own message (PROTOCOL.md §8.7), or a facilitator's removal.
      const target = session.log(MAIN).get(action.seq);
      const own = target?.key ? target.key === record.key : !session.isFacilitator(record.key);
      if (own) {
        return `${actor} withdrew ${record.key === session.identity.publicKey ? "your" : "their"} message.`;
      }
      return `${actor} removed a message. Reason: ${action.reason}`;
    }
    case "pin":
      return `${actor} pinned a message.`;
    case "unpin":
      return `${actor} unpinned a message.`;
    case "add_cofacilitator":
      return `${actor} made ${target} a co-facilitator.`;
    case "hand_over":
      return `${actor} handed the lead over to ${target}.`;
    case "set_agreement":
      return `${actor} changed the group agreement. Everyone is asked to read it and agree again.`;
    case "check_in":
      return `${actor} started a private check-in with ${target}.`;
    case "open_session":
      return `${actor} opened a new session.`;
    case "end_session":
      return `${actor} ended the session.`;
    case "clear_waiting":
      return `${actor} cleared the waiting room.`;
    default:
      return `${actor} did something this version of the app can't describe. Reloading may help.`;
  }
}
