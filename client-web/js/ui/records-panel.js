// Co-produced records: a facilitator's note about a member or the session, and the
// member's own words added to it. Facilitators write notes here; a member sees every
// record about them (in this group) and can add their words.
//
// Owns: #records-panel. The records come from the record book (verified there); each
// entry shows who signed it and whether that was checked. Writing goes through the
// session (a signed `record`), and the answer comes back to the record book.

import { sentenceFor } from "../errors.js";
import { checkText } from "../protocol.js";
import { byId, formatTime, h, setFieldError } from "./dom.js";
import { errorSentence } from "./feedback.js";
import { unverifiedMark, unverifiedReason } from "./verification.js";
import { who } from "./who.js";

let formCount = 0;

export function createRecordsPanel({ recordBook }) {
  const panel = byId("records-panel");
  const intro = byId("records-intro");
  const newBox = byId("record-new");
  const form = byId("record-form");
  const aboutSelect = byId("record-about");
  const textInput = byId("record-text");
  const textError = byId("record-text-error");
  const list = byId("records-list");
  const empty = byId("records-empty");
  let session = null;
  // Reply forms by record id, kept across redraws so half-written words survive.
  const replyForms = new Map();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!session) {
      return;
    }
    const text = textInput.value.trim();
    const problem = checkText(text, { limits: session.conn.limits });
    if (problem) {
      setFieldError(textInput, textError, sentenceFor(problem));
      textInput.focus();
      return;
    }
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      await session.writeRecord({ about: aboutSelect.value || null, text });
      setFieldError(textInput, textError, "");
      textInput.value = "";
      newBox.open = false;
      list.querySelector("h3")?.focus();
    } catch (err) {
      setFieldError(textInput, textError, errorSentence(err));
    } finally {
      button.disabled = false;
    }
  });

  function entryEl(entry) {
    const head = h("p", { className: "msg-head" });
    if (entry.verified) {
      head.append(h("span", { className: "msg-author", text: who(session, entry.key, { capital: true }) }));
      if (Number.isFinite(entry.ts)) {
        head.append(" ", h("time", { dateTime: new Date(entry.ts).toISOString(), text: formatTime(entry.ts) }));
      }
      return h("li", { className: "record-entry" }, head, h("p", { className: "msg-body", text: entry.text }));
    }
    head.append(unverifiedMark(), " ", h("span", { className: "msg-author", text: "We couldn't check who wrote this" }));
    return h(
      "li",
      { className: "record-entry msg-unverified" },
      head,
      h("p", { className: "msg-warning", text: `${unverifiedReason(entry.reason)} Don't rely on it.` }),
    );
  }

  function replyForm(record) {
    formCount += 1;
    const id = `record-reply-${formCount}`;
    const field = h("textarea", { id, rows: 3, attrs: { "aria-describedby": `${id}-error` } });
    const error = h("p", { className: "field-error", id: `${id}-error`, hidden: true, attrs: { role: "alert" } });
    const button = h("button", { type: "submit", text: record.aboutMe ? "Add my words" : "Add to this record" });
    const f = h(
      "form",
      { className: "record-reply", attrs: { novalidate: true } },
      h("label", { attrs: { for: id }, text: record.aboutMe ? "Your words, in your own way" : "Add to this record" }),
      field,
      error,
      button,
    );
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const text = field.value.trim();
      const problem = checkText(text, { limits: session.conn.limits });
      if (problem) {
        setFieldError(field, error, sentenceFor(problem));
        field.focus();
        return;
      }
      button.disabled = true;
      try {
        await session.writeRecord({ replyTo: record.id, text });
        field.value = "";
        setFieldError(field, error, "");
      } catch (err) {
        setFieldError(field, error, errorSentence(err));
      } finally {
        button.disabled = false;
      }
    });
    return f;
  }

  function title(record) {
    if (record.about === null) {
      return "About the session";
    }
    return record.aboutMe ? "About you" : `About ${who(session, record.about)}`;
  }

  /** Who a new note can be about: the session, or a member with a verified name. */
  function renderAboutChoices() {
    const chosen = aboutSelect.value;
    const options = [h("option", { value: "", text: "The session" })];
    for (const member of session.members.values()) {
      if (!member.self && member.verified) {
        options.push(h("option", { value: member.key, text: member.name, selected: member.key === chosen }));
      }
    }
    aboutSelect.replaceChildren(...options);
  }

  function render() {
    if (!session) {
      return;
    }
    const moderator = session.canModerate();
    const records = recordBook.list(session.groupId);
    panel.hidden = !moderator && records.length === 0;
    newBox.hidden = !moderator;
    intro.textContent = moderator
      ? "Notes written with the people they are about. They can read them and add their own words. This list shows notes about you and the ones written from this browser since it opened."
      : "Notes a facilitator wrote about you. You can read them and add your own words; both are signed.";
    if (moderator) {
      renderAboutChoices();
    }
    const focused = list.contains(document.activeElement) ? document.activeElement : null;
    const formFor = (record) => {
      if (!record.aboutMe && !moderator) {
        return null;
      }
      if (!replyForms.has(record.id)) {
        replyForms.set(record.id, replyForm(record));
      }
      return replyForms.get(record.id);
    };
    list.replaceChildren(
      ...records.map((record) =>
        h(
          "li",
          { className: "record" },
          h("h3", { text: title(record), attrs: { tabindex: "-1" } }),
          h("ol", { className: "record-entries" }, ...record.entries.map(entryEl)),
          formFor(record),
        ),
      ),
    );
    if (focused?.isConnected) {
      focused.focus();
    }
    empty.hidden = records.length > 0;
  }

  const onChange = () => render();

  return {
    mount(s) {
      session = s;
      recordBook.addEventListener("change", onChange);
      render();
    },
    unmount() {
      recordBook.removeEventListener("change", onChange);
      session = null;
      replyForms.clear();
      list.replaceChildren();
      panel.hidden = true;
    },
    render,
    /** Members changed: offer them in "About". */
    membersChanged() {
      if (session?.canModerate()) {
        renderAboutChoices();
      }
    },
  };
}
