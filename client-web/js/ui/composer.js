// Writing a message: a labelled textarea where Enter sends and Shift+Enter adds a line.
//
// Owns: the composer form. Checks length before sending (the server is the
// authority) and hands the text to `onSend`; delivery state is shown in the message
// list, not here.

import { scalarLength } from "../encoding.js";
import { checkBody } from "../protocol.js";
import { sentenceFor } from "../errors.js";
import { setFieldError } from "./dom.js";

export function createComposer({ form, textarea, countEl, errorEl, getLimits, onSend }) {
  function updateCount() {
    const max = getLimits().max_body_chars;
    const length = scalarLength(textarea.value);
    // Only worth reading once the limit is near.
    if (length >= max * 0.8) {
      countEl.textContent = `${length.toLocaleString()} of ${max.toLocaleString()} characters`;
      countEl.hidden = false;
    } else {
      countEl.textContent = "";
      countEl.hidden = true;
    }
    countEl.classList.toggle("is-over", length > max);
  }

  function submit() {
    const body = textarea.value.trim();
    const problem = checkBody(body, getLimits());
    if (problem) {
      setFieldError(textarea, errorEl, sentenceFor(problem));
      return;
    }
    setFieldError(textarea, errorEl, "");
    onSend(body);
    textarea.value = "";
    updateCount();
    textarea.focus();
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit();
  });
  textarea.addEventListener("keydown", (ev) => {
    // isComposing / 229: Enter that confirms an input-method composition (Japanese,
    // Chinese, ...) must not send.
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
      ev.preventDefault();
      submit();
    }
  });
  textarea.addEventListener("input", () => {
    updateCount();
    if (!errorEl.hidden) {
      setFieldError(textarea, errorEl, "");
    }
  });

  return {
    setEnabled(enabled) {
      textarea.disabled = !enabled;
      form.querySelector("button[type=submit]").disabled = !enabled;
    },
    reset() {
      textarea.value = "";
      setFieldError(textarea, errorEl, "");
      updateCount();
    },
    focus() {
      textarea.focus();
    },
  };
}
