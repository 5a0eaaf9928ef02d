// The join screen: choose a pseudonym for a group, then join.
//
// Owns: #view-join. Normalises and checks the name the way the server will (names.js)
// so the signed name is exactly the one the server stores; the joining itself is the
// app's `onJoin(groupId, name)`, which resolves once joined or rejects with the error.

import { describeErrorFrame, sentenceFor } from "../errors.js";
import { scalarLength } from "../encoding.js";
import { isValidGroupId } from "../protocol.js";
import { normaliseDisplayName } from "../names.js";
import { byId, setFieldError } from "./dom.js";

export function createJoinView({ connection, onJoin, onBack }) {
  const form = byId("join-form");
  const groupLabel = byId("join-group-id");
  const input = byId("join-name");
  const count = byId("join-name-count");
  const error = byId("join-name-error");
  const formError = byId("join-error");
  const submit = byId("join-submit");
  const maxChars = () => connection.limits.max_name_chars;
  let groupId = null;

  byId("join-back").addEventListener("click", () => onBack());
  byId("join-max").textContent = String(maxChars());

  input.addEventListener("input", () => {
    count.textContent = `${scalarLength(input.value.trim())} of ${maxChars()} characters`;
    if (!error.hidden) {
      setFieldError(input, error, "");
    }
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    formError.hidden = true;
    const checked = normaliseDisplayName(input.value, maxChars());
    if (!checked.ok) {
      setFieldError(input, error, checked.reason);
      input.focus();
      return;
    }
    setFieldError(input, error, "");
    input.value = checked.name;
    submit.disabled = true;
    submit.textContent = connection.authenticated ? "Joining…" : "Waiting for the connection…";
    try {
      await onJoin(groupId, checked.name);
    } catch (err) {
      const text = err.frame ? describeErrorFrame(err.frame) : sentenceFor(err.code);
      if (err.code === "invalid" || err.code === "body_too_long") {
        setFieldError(input, error, text);
        input.focus();
      } else {
        formError.textContent = text;
        formError.hidden = false;
      }
    } finally {
      submit.disabled = false;
      submit.textContent = "Join";
    }
  });

  return {
    show(id) {
      groupId = isValidGroupId(id) ? id : null;
      groupLabel.textContent = groupId ?? "";
      byId("join-max").textContent = String(maxChars());
      formError.hidden = true;
      setFieldError(input, error, "");
      count.textContent = "";
    },
    focusName() {
      input.focus();
    },
  };
}
