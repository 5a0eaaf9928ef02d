// One event or outbox entry as a list item: the same rules in every channel.
//
// Owns: how a record looks. Text goes in with textContent only. Trust by exception:
// what verifies looks ordinary, and only what fails is marked, in plain words. Keys,
// fingerprints and the word "signature" appear only on what failed.
//   - a verified post shows its author's verified name and roles; a screen reader
//     hears "Jo, facilitator: <message>" and nothing else;
//   - a verified control is a sentence ("Jo muted River for 10 minutes.");
//   - a hub note is "From the hub", never a person's message, and has no verified mark;
//   - a removed message says "Removed by a facilitator: <reason>", marked verified
//     only when the facilitator's signed request was found; facilitators still see
//     its text, marked as removed for everyone else;
//   - anything unverified gets a warning, no author name, and its text stays hidden
//     until the person asks to see it, inside a box marked "Unverified".
//
// The caller may add controls to an item (`extrasFor(record)` → element or null).

import { Delivery } from "../group-session.js";
import { sentenceFor } from "../errors.js";
import { Kind, MAIN } from "../protocol.js";
import { describeControl } from "./control-words.js";
import { formatTime, h, roleLabel } from "./dom.js";
import { unverifiedMark, unverifiedReason } from "./verification.js";
import { noteSentence } from "./support-requests.js";
import { facilitatorName, rolesOf, spokenAuthor, who } from "./who.js";

/**
 * Whether a redacted message was withdrawn by its own writer (a signed retraction),
 * not removed by a facilitator. When this page no longer knows the writer, only a
 * non-facilitator's redaction can be one (the hub allows nothing else).
 */
export function isWithdrawn(session, record) {
  const by = record.redaction?.by;
  if (!by) {
    return false;
  }
  return record.key ? record.key === by : !session.isFacilitator(by);
}

const DELIVERY_WORDS = {
  [Delivery.QUEUED]: "Waiting to send…",
  [Delivery.SENDING]: "Sending…",
  [Delivery.UNCONFIRMED]: "Connection lost. Checking whether it arrived…",
  [Delivery.WAITING]: "Sending was paused for a moment. It will be sent shortly…",
  [Delivery.ACKNOWLEDGED]: "✓ Delivered",
  [Delivery.FAILED]: "Not sent.",
};

let unverifiedCount = 0;

export function createMessageRenderer({ session, extrasFor = () => null }) {
  function timeEl(ms) {
    if (!Number.isFinite(ms)) {
      return null;
    }
    return h("time", { dateTime: new Date(ms).toISOString(), text: formatTime(ms) });
  }

  function item(record, className, ...children) {
    return h(
      "li",
      // data-verified: this browser checked it (tests read it; people see nothing).
      { className, dataset: { seq: String(record.seq), channel: record.channel, verified: "true" }, attrs: { tabindex: "-1" } },
      ...children,
      extrasFor(record),
    );
  }

  function deliveryLine(entryOrRecord, entry = null) {
    const line = h("p", { className: "msg-delivery" });
    const delivery = entryOrRecord.delivery;
    line.dataset.delivery = delivery;
    line.append(DELIVERY_WORDS[delivery] ?? "");
    if (delivery === Delivery.WAITING && entry?.error?.code === "slow_mode") {
      line.append(" Slow mode is on.");
    }
    if (delivery === Delivery.FAILED && entry) {
      const reason = entry.error ? sentenceFor(entry.error.code) : sentenceFor("send_failed");
      line.append(" ", reason, " ");
      line.append(
        h("button", {
          type: "button",
          className: "link-button",
          text: "Try again",
          on: { click: () => session.retry(entry.localId) },
        }),
        " ",
        h("button", {
          type: "button",
          className: "link-button",
          text: "Discard",
          on: { click: () => session.discard(entry.localId) },
        }),
      );
    }
    return line;
  }

  function renderUnverified(record, summary) {
    unverifiedCount += 1;
    const bodyId = `unverified-${unverifiedCount}`;
    const p = record.payload;
    const text =
      typeof p?.body === "string"
        ? p.body
        : typeof p?.reason === "string" && p.reason
          ? p.reason
          : record.rawPayload;
    const hiddenBody = h("div", { className: "msg-body msg-body-unverified", id: bodyId, hidden: true });
    hiddenBody.append(
      h("p", { className: "unverified-caption", text: "Unverified text, shown as received:" }),
      h("p", { className: "unverified-text", text }),
    );
    const reveal = h("button", {
      type: "button",
      className: "link-button",
      text: "Show the unverified text",
      attrs: { "aria-expanded": "false", "aria-controls": bodyId },
      on: {
        click: () => {
          const open = hiddenBody.hidden;
          hiddenBody.hidden = !open;
          reveal.setAttribute("aria-expanded", String(open));
          reveal.textContent = open ? "Hide the unverified text" : "Show the unverified text";
        },
      },
    });
    return h(
      "li",
      { className: "msg msg-unverified", dataset: { seq: String(record.seq), channel: record.channel, verified: "false" }, attrs: { tabindex: "-1" } },
      h("p", { className: "msg-head" }, unverifiedMark(), " ", h("span", { className: "msg-author", text: summary }), " ", timeEl(record.ts)),
      h("p", { className: "msg-warning", text: `${unverifiedReason(record.reason)} Don't rely on it.` }),
      text ? reveal : null,
      text ? hiddenBody : null,
    );
  }

  function authorHead(record) {
    const head = h("p", { className: "msg-head" });
    // What a screen reader hears: "Jo, facilitator: " then the message. The visible
    // name, role and time are hidden from it so nothing else is read first.
    head.append(h("span", { className: "visually-hidden", text: `${spokenAuthor(session, record.key)}: ` }));
    const seen = h("span", { className: "msg-head-seen", attrs: { "aria-hidden": "true" } });
    seen.append(h("span", { className: "msg-author", text: record.self ? "You" : who(session, record.key, { capital: true }) }));
    for (const role of rolesOf(session, record.key)) {
      seen.append(" ", h("span", { className: `badge badge-${role}`, text: roleLabel(role) }));
    }
    seen.append(" ", timeEl(record.ts));
    head.append(seen);
    return head;
  }

  /** "Removed by a facilitator: reason" (or "River withdrew this message"), with
   * whether the request behind it was checked. */
  function redactionLine(record, { forFacilitator }) {
    const r = record.redaction;
    const by = facilitatorName(session, r.by);
    const line = h("p", { className: "msg-redaction" });
    if (isWithdrawn(session, record)) {
      const writer = r.by === session.identity.publicKey ? "You" : who(session, r.by, { capital: true });
      line.append(
        forFacilitator
          ? `${writer} withdrew this message. Only facilitators still see it, to keep everyone safe.`
          : `${writer} withdrew this message.`,
      );
    } else if (forFacilitator) {
      line.append(`Removed for everyone else by ${by}. Reason: ${r.reason}`);
    } else {
      line.append(`Removed by a facilitator: ${r.reason}`);
    }
    if (!r.confirmed) {
      line.append(" ");
      line.append(
        h("span", {
          className: "mark mark-pending",
          text: "(the hub says so; this device hasn't seen the facilitator's own request yet)",
        }),
      );
    }
    return line;
  }

  function renderPost(record) {
    const classes = ["msg"];
    if (record.self) {
      classes.push("msg-self");
    }
    if (record.redaction) {
      classes.push("msg-redacted");
    }
    return item(
      record,
      classes.join(" "),
      authorHead(record),
      record.redaction ? redactionLine(record, { forFacilitator: true }) : null,
      h("p", { className: "msg-body", text: record.payload.body }),
      record.delivery ? deliveryLine(record) : null,
    );
  }

  function renderRemoved(record) {
    return item(record, "msg msg-removed", redactionLine(record, { forFacilitator: false }), h("p", { className: "msg-head" }, timeEl(record.ts)));
  }

  function renderControl(record) {
    return item(
      record,
      "msg-control",
      h("p", { className: "control-text" }, h("span", { text: describeControl(session, record) }), " ", timeEl(record.ts)),
    );
  }

  /** A short quote of a conversation message (for reports and nudges). */
  function quoteOf(seq) {
    const target = session.log(MAIN).get(seq);
    if (!target) {
      return h("p", { className: "quote quote-missing", text: `Message ${seq} isn't in this browser's history.` });
    }
    if (target.kind === "removed" || target.hiddenText) {
      return h("p", { className: "quote", text: "A message that has been removed." });
    }
    if (!target.verified || target.kind !== Kind.POST) {
      return h("p", { className: "quote quote-missing", text: `Message ${seq} could not be verified.` });
    }
    return h(
      "blockquote",
      { className: "quote" },
      h("p", { className: "quote-author", text: `${who(session, target.key, { capital: true })} wrote:` }),
      h("p", { className: "quote-body", text: target.payload.body }),
    );
  }

  function renderReport(record) {
    const reason = record.payload.reason.trim();
    return item(
      record,
      "msg msg-staff",
      h("p", { className: "msg-head" }, h("span", { className: "msg-author", text: `${who(session, record.key, { capital: true })} reported a message` }), " ", timeEl(record.ts)),
      h("p", { className: "msg-body", text: reason ? `Why: ${reason}` : "No reason given." }),
      quoteOf(record.payload.seq),
    );
  }

  function hubHead(record) {
    return h("p", { className: "msg-head" }, h("span", { className: "hub-label", text: "From the hub" }), " ", h("span", { className: "hub-hint", text: "(not a person's message)" }), " ", timeEl(record.ts));
  }

  function renderNote(record) {
    const note = record.note;
    let body;
    let quote = null;
    if (note?.note === "mute_ended") {
      body = note.member === session.identity.publicKey
        ? "Your mute has ended. You can write to the group again."
        : `${who(session, note.member, { capital: true })} can write again: their mute has ended.`;
    } else if (note?.note === "risk_nudge") {
      body = `About a message from ${who(session, note.member)}: ${note.suggestion || "it may show someone at risk."}`;
      quote = quoteOf(note.seq);
    } else if (note?.note === "support_asked" || note?.note === "support_resolved") {
      body = noteSentence(note, who(session, note.member));
      if (note.words) {
        const words = note.own ? "In their words" : "In the words of the person who asked, with their agreement";
        quote = h("blockquote", { className: "msg-quote support-words-quote" }, h("p", { text: `${words}: “${note.words}”` }));
      }
    } else {
      body = "A note from the hub that this version of the app can't show.";
    }
    return item(record, "msg-hub", hubHead(record), h("p", { className: "msg-body", text: body }), quote);
  }

  function renderNotice(record) {
    return item(
      record,
      "msg-notice",
      h("span", { text: "Something this version of the app can't show. Reloading may help." }),
      " ",
      timeEl(record.ts),
    );
  }

  function renderEvent(record) {
    if (record.from === "hub") {
      return record.kind === "removed" ? renderRemoved(record) : renderNote(record);
    }
    if (record.hiddenText) {
      return renderRemoved(record);
    }
    if (!record.verified) {
      const summary =
        record.kind === Kind.POST
          ? "Message from an unknown sender"
          : record.kind === Kind.CONTROL
            ? "A facilitator action that could not be checked"
            : "Something that could not be checked";
      return renderUnverified(record, summary);
    }
    switch (record.kind) {
      case Kind.POST:
        return renderPost(record);
      case Kind.CONTROL:
        return renderControl(record);
      case Kind.REPORT:
        return renderReport(record);
      default:
        return renderNotice(record);
    }
  }

  function renderOutbox(entry) {
    return h(
      "li",
      { className: "msg msg-self msg-pending", dataset: { localId: String(entry.localId) } },
      h("p", { className: "msg-head" }, h("span", { className: "msg-author", text: "You" }), " ", timeEl(entry.createdAt)),
      h("p", { className: "msg-body", text: entry.body }),
      deliveryLine(entry, entry),
    );
  }

  return { renderEvent, renderOutbox, quoteOf, timeEl };
}
