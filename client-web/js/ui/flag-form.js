// "Ask a supervisor to offer them support": a distress flag about someone else — from
// a message ("Flag this message") or, for facilitators, from a member's actions.
//
// Owns: the form's elements. It says plainly what happens: the person is told that
// someone asked for support for them and can read what was sent, unless the flagger
// believes there is a risk of immediate harm and says why they should not be told
// yet. Consent is recorded on every flag: "given" (they agreed) or "imminent_risk"
// (no time to ask; a reason is required). The flag is one signed request through the
// session; the `flagged` answer and the helplines it carries are shown in the form.

import { sentenceFor } from "../errors.js";
import { checkText } from "../protocol.js";
import { h, setFieldError } from "./dom.js";
import { errorSentence } from "./feedback.js";
import { helplineItems, helplinesFrom } from "./helplines.js";
import { flaggedWords } from "./support-words.js";

let formCount = 0;

function radio(name, id, value, label, checked = false) {
  return h(
    "div",
    { className: "check-row" },
    h("input", { type: "radio", name, id, value, checked }),
    h("label", { attrs: { for: id }, text: label }),
  );
}

/**
 * `about`: the key the flag is about; `seq`: the message that prompted it (optional);
 * `name`: how to name them in sentences; `onFlagged(reply)`: after the hub stored it;
 * `onCancel`: the person closed the form. Returns { form, focus }.
 */
export function createFlagForm({ session, about, seq = null, name, onFlagged = () => {}, onCancel }) {
  formCount += 1;
  const id = `flag-${formCount}`;
  const limits = () => session.conn.limits;

  const severity = h(
    "fieldset",
    { className: "fieldset" },
    h("legend", { text: "How urgent is it?" }),
    radio(`${id}-severity`, `${id}-concern`, "concern", "Worth a supervisor's look soon"),
    radio(`${id}-severity`, `${id}-urgent`, "urgent", "They need support within minutes", true),
    radio(`${id}-severity`, `${id}-emergency`, "emergency", "They may be in danger now"),
  );
  const consent = h(
    "fieldset",
    { className: "fieldset" },
    h("legend", { text: "Have they agreed to you asking?" }),
    radio(`${id}-consent`, `${id}-given`, "given", "Yes, they have agreed", true),
    radio(`${id}-consent`, `${id}-imminent`, "imminent_risk", "No: I believe they are at risk of immediate harm and there is no time to ask"),
  );
  const told = h("p", {
    className: "hint flag-told",
    id: `${id}-told`,
    text: `${name} will be told that someone asked a supervisor to offer them support, and can read what you send.`,
  });

  const reason = h("textarea", { id: `${id}-reason`, rows: 2, attrs: { "aria-describedby": `${id}-reason-hint ${id}-reason-error` } });
  const reasonError = h("p", { className: "field-error", id: `${id}-reason-error`, hidden: true, attrs: { role: "alert" } });
  const withhold = h("input", { type: "checkbox", id: `${id}-withhold`, attrs: { "aria-describedby": `${id}-withhold-hint` } });
  const withholdWhy = h("textarea", { id: `${id}-withhold-why`, rows: 2, attrs: { "aria-describedby": `${id}-withhold-why-error` } });
  const withholdError = h("p", { className: "field-error", id: `${id}-withhold-why-error`, hidden: true, attrs: { role: "alert" } });
  const withholdWhyBox = h(
    "div",
    { hidden: true },
    h("label", { attrs: { for: withholdWhy.id }, text: "Why telling them now could make things worse (required)" }),
    withholdWhy,
    withholdError,
  );
  const riskBox = h(
    "div",
    { className: "flag-risk", hidden: true },
    h("label", { attrs: { for: reason.id }, text: "Why do you believe the risk is immediate? (required)" }),
    h("p", { className: "hint", id: `${id}-reason-hint`, text: "The supervisor reads this. Say what you saw or heard." }),
    reason,
    reasonError,
    h(
      "div",
      { className: "check-row" },
      withhold,
      h("label", { attrs: { for: withhold.id }, text: "Don't tell them yet" }),
    ),
    h("p", {
      className: "hint",
      id: `${id}-withhold-hint`,
      text: "Only with a risk of immediate harm. They are told once the request is closed, and the supervisor sees why you asked.",
    }),
    withholdWhyBox,
  );

  const note = h("textarea", { id: `${id}-note`, rows: 2, attrs: { "aria-describedby": `${id}-note-hint ${id}-note-error` } });
  const noteHint = h("p", {
    className: "hint",
    id: `${id}-note-hint`,
    text: `The supervisor reads it, and this group's facilitators too when ${name} has agreed; with a risk of immediate harm, only supervisors do.`,
  });
  const noteError = h("p", { className: "field-error", id: `${id}-note-error`, hidden: true, attrs: { role: "alert" } });
  const error = h("p", { className: "error-text", hidden: true, attrs: { role: "alert" } });
  const result = h("div", { className: "flag-result", attrs: { role: "status" } });
  const submit = h("button", { type: "submit", text: "Ask a supervisor" });
  const cancel = h("button", { type: "button", className: "secondary", text: "Cancel", on: { click: () => onCancel() } });

  const form = h(
    "form",
    { className: "flag-form", attrs: { novalidate: true, "aria-label": `Ask a supervisor to offer ${name} support` } },
    h("p", {
      className: "flag-intro",
      text:
        `Who is told: the supervisor on call, who is asked to offer ${name} support (if they can't answer in time, the next supervisor, then every supervisor and admin), ` +
        `and the facilitators of this group, at once: that someone asked for ${name} and how urgent it is, but not that it was you. Nobody else in the group is told.`,
    }),
    severity,
    consent,
    told,
    riskBox,
    h("label", { attrs: { for: note.id }, text: "Anything else the supervisor should know (optional)" }),
    noteHint,
    note,
    noteError,
    error,
    h("div", { className: "button-row" }, submit, cancel),
    result,
  );

  const chosen = (fieldset) => fieldset.querySelector("input:checked")?.value;
  const update = () => {
    const imminent = chosen(consent) === "imminent_risk";
    riskBox.hidden = !imminent;
    withholdWhyBox.hidden = !(imminent && withhold.checked);
    told.textContent =
      imminent && withhold.checked
        ? `${name} won't be told while the risk you describe stands. They are told once the request is closed.`
        : `${name} will be told that someone asked a supervisor to offer them support, and can read what you send.`;
  };
  consent.addEventListener("change", update);
  withhold.addEventListener("change", update);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const imminent = chosen(consent) === "imminent_risk";
    const fields = {
      about,
      seq: Number.isSafeInteger(seq) ? seq : undefined,
      severity: chosen(severity) ?? "urgent",
      consent: imminent ? "imminent_risk" : "given",
      note: note.value,
    };
    let ok = true;
    const check = (input, errorEl, required) => {
      const problem = checkText(input.value.trim(), { required, limits: limits() });
      setFieldError(input, errorEl, problem ? sentenceFor(problem === "empty_text" ? "empty_flag_reason" : problem) : "");
      if (problem && ok) {
        input.focus();
      }
      ok = ok && !problem;
    };
    if (imminent) {
      check(reason, reasonError, true);
      fields.reason = reason.value;
      if (withhold.checked) {
        check(withholdWhy, withholdError, true);
        fields.withholdNotice = withholdWhy.value;
      }
    }
    check(note, noteError, false);
    if (!ok) {
      return;
    }
    submit.disabled = true;
    result.replaceChildren("Sending…");
    try {
      const reply = await session.flag(fields);
      const helplines = helplinesFrom(reply.helplines);
      result.replaceChildren(
        h("p", { className: "flag-answer", text: flaggedWords(reply, { self: false }) }),
        reply.on_call !== true ? h("ul", { className: "helplines-list" }, ...helplineItems(helplines)) : null,
      );
      submit.hidden = true;
      cancel.textContent = "Close";
      onFlagged(reply);
    } catch (err) {
      // A refused flag (too many at once) is still counted, and carries the helplines.
      const helplines = Array.isArray(err?.frame?.helplines) ? helplinesFrom(err.frame.helplines) : [];
      result.replaceChildren(...(helplines.length ? [h("ul", { className: "helplines-list" }, ...helplineItems(helplines))] : []));
      error.textContent = errorSentence(err);
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });

  return { form, focus: () => form.querySelector("input:checked")?.focus() };
}
