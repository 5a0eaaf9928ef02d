// The small menu on each message of the conversation: report it, flag it (ask a
// supervisor to offer its writer support), withdraw one's own (a signed retraction,
// after a confirmation; facilitators keep the text), and for facilitators pin, unpin
// or remove it (with a reason everyone sees).
//
// Owns: the menu's elements and its little forms. Each choice is one signed request
// through the session (report, control); what it changes comes back as events and
// group updates, so the menu only says whether the request was accepted.
//
// Keyboard: the toggle is a button with aria-expanded; Escape closes the menu and
// returns focus to it; opening a form moves focus to its field.

import { sentenceFor } from "../errors.js";
import { checkText, Control, Kind, MAIN } from "../protocol.js";
import { h, setFieldError } from "./dom.js";
import { errorSentence as errorText } from "./feedback.js";
import { createFlagForm } from "./flag-form.js";
import { who } from "./who.js";

let menuCount = 0;

export function createMessageActions({ session }) {
  function reasonForm({ label, hint, required, submitText, send, done, close }) {
    menuCount += 1;
    const id = `msg-form-${menuCount}`;
    const field = h("textarea", { id: `${id}-text`, rows: 2, attrs: { "aria-describedby": `${id}-hint ${id}-error` } });
    const error = h("p", { className: "field-error", id: `${id}-error`, hidden: true, attrs: { role: "alert" } });
    const submit = h("button", { type: "submit", text: submitText });
    const form = h(
      "form",
      { className: "msg-form", attrs: { novalidate: true } },
      h("label", { attrs: { for: field.id }, text: label }),
      h("p", { className: "hint", id: `${id}-hint`, text: hint }),
      field,
      error,
      h("div", { className: "button-row" }, submit, h("button", { type: "button", className: "secondary", text: "Cancel", on: { click: close } })),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const text = field.value.trim();
      const problem = checkText(text, { required, limits: session.conn.limits });
      if (problem) {
        setFieldError(field, error, sentenceFor(required && problem === "empty_text" ? "empty_reason" : problem));
        field.focus();
        return;
      }
      submit.disabled = true;
      try {
        await send(text);
        done();
      } catch (err) {
        setFieldError(field, error, errorText(err));
        field.focus();
      } finally {
        submit.disabled = false;
      }
    });
    return { form, focus: () => field.focus() };
  }

  return function extrasFor(record) {
    if (record.channel !== MAIN || !record.verified || record.kind !== Kind.POST || record.hiddenText) {
      return null;
    }
    const moderator = session.canModerate();
    const pinned = (session.groupState?.pinned ?? []).includes(record.seq);
    const canReport = !record.self;
    const canRedact = moderator && !record.redaction;
    const canWithdraw = record.self && !record.redaction;
    if (!canReport && !moderator && !canWithdraw) {
      return null;
    }
    menuCount += 1;
    const panelId = `msg-menu-${menuCount}`;
    const toggle = h("button", {
      type: "button",
      className: "link-button msg-menu-toggle",
      text: "Options",
      attrs: { "aria-expanded": "false", "aria-controls": panelId, "aria-label": `Options for message ${record.seq}` },
    });
    const panel = h("div", { className: "msg-menu", id: panelId, hidden: true });
    const status = h("p", { className: "hint msg-menu-status", attrs: { role: "status" } });
    const wrap = h("div", { className: "msg-actions" }, toggle, status, panel);

    const close = () => {
      panel.hidden = true;
      panel.replaceChildren();
      toggle.setAttribute("aria-expanded", "false");
      toggle.focus();
    };
    const finish = (text) => {
      close();
      status.textContent = text;
    };
    const showForm = (form) => {
      panel.replaceChildren(form.form);
      form.focus();
    };
    const run = async (send, text) => {
      try {
        await send();
        finish(text);
      } catch (err) {
        finish(errorText(err));
      }
    };

    // Withdrawing asks first: it can't be undone, and says who still reads the text.
    const withdrawConfirm = () => {
      const yes = h("button", { type: "button", className: "danger", text: "Yes, withdraw it" });
      const no = h("button", { type: "button", className: "secondary", text: "Keep it" });
      const box = h(
        "div",
        { className: "confirm", attrs: { role: "group" } },
        h("p", {
          text: "Withdraw this message? The group will see that you withdrew it, not what it said. The facilitators can still read it, to keep everyone safe. This can't be undone.",
        }),
        h("div", { className: "button-row" }, yes, no),
      );
      no.addEventListener("click", close);
      yes.addEventListener("click", () =>
        run(() => session.control(Control.redact(record.seq, "Withdrawn by its writer.")), "You withdrew it."),
      );
      return { form: box, focus: () => no.focus() };
    };

    const choices = () => {
      const buttons = [];
      if (canReport) {
        buttons.push(
          h("button", {
            type: "button",
            className: "secondary",
            text: "Report to the facilitators",
            on: {
              click: () =>
                showForm(
                  reasonForm({
                    label: "What's wrong with it? (optional)",
                    hint: "Only the facilitators see your report and who sent it. The group is not told.",
                    required: false,
                    submitText: "Send the report",
                    send: (text) => session.report(record.seq, text),
                    done: () => finish("Thank you. The facilitators have your report."),
                    close,
                  }),
                ),
            },
          }),
        );
      }
      if (canReport) {
        buttons.push(
          h("button", {
            type: "button",
            className: "secondary",
            text: "Flag this message",
            attrs: { "aria-describedby": `${panelId}-flag-hint` },
            on: {
              click: () =>
                showForm(
                  createFlagForm({
                    session,
                    about: record.key,
                    seq: record.seq,
                    name: who(session, record.key, { capital: true }),
                    onFlagged: () => {
                      status.textContent = "A supervisor has been asked to offer support.";
                    },
                    onCancel: close,
                  }),
                ),
            },
          }),
        );
      }
      if (moderator) {
        buttons.push(
          h("button", {
            type: "button",
            className: "secondary",
            text: pinned ? "Unpin" : "Pin for everyone",
            on: {
              click: () =>
                run(
                  () => session.control(pinned ? Control.unpin(record.seq) : Control.pin(record.seq)),
                  pinned ? "Unpinned." : "Pinned.",
                ),
            },
          }),
        );
      }
      if (canWithdraw) {
        buttons.push(
          h("button", {
            type: "button",
            className: "secondary",
            text: "Withdraw my message",
            on: { click: () => showForm(withdrawConfirm()) },
          }),
        );
      }
      if (canRedact) {
        buttons.push(
          h("button", {
            type: "button",
            className: "secondary",
            text: "Remove it",
            on: {
              click: () =>
                showForm(
                  reasonForm({
                    label: "Why is it being removed?",
                    hint: "Required. Everyone in the group sees this reason instead of the message. Facilitators can still read it.",
                    required: true,
                    submitText: "Remove the message",
                    send: (text) => session.control(Control.redact(record.seq, text)),
                    done: () => finish("Removed."),
                    close,
                  }),
                ),
            },
          }),
        );
      }
      return buttons;
    };

    toggle.addEventListener("click", () => {
      if (!panel.hidden) {
        close();
        return;
      }
      status.textContent = "";
      panel.replaceChildren(
        h("div", { className: "button-row" }, ...choices()),
        canReport
          ? h("p", {
              className: "hint",
              id: `${panelId}-flag-hint`,
              text: "Flag it if you're worried about the person who wrote it: a supervisor is asked to offer them support. Report it if it breaks the group agreement.",
            })
          : null,
      );
      panel.hidden = false;
      toggle.setAttribute("aria-expanded", "true");
      panel.querySelector("button")?.focus();
    });
    panel.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        ev.stopPropagation();
        close();
      }
    });
    return wrap;
  };
}
