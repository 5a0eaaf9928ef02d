// The settings part of "Create a group": agreement, waiting room, how long the
// conversation is kept, access code and schedule.
//
// Owns: those fields of #create-form, their checks (mirroring the server's
// create_group checks) and turning them into createGroupPayload settings. Schedule
// times are typed in local time (datetime-local) and sent as ms since the epoch.

import { sentenceFor } from "../errors.js";
import { scalarLength } from "../encoding.js";
import { checkText, MAX_ACCESS_CODE_CHARS, MAX_SCHEDULE_WINDOWS } from "../protocol.js";
import { byId, h, setFieldError } from "./dom.js";

let rowCount = 0;

export function createGroupSettingsForm() {
  const agreement = byId("create-agreement");
  const agreementError = byId("create-agreement-error");
  const waiting = byId("create-waiting");
  const daysField = byId("create-days-field");
  const days = byId("create-days");
  const daysError = byId("create-days-error");
  const code = byId("create-code");
  const codeError = byId("create-code-error");
  const schedule = byId("create-schedule");
  const addTime = byId("create-schedule-add");
  const scheduleError = byId("create-schedule-error");
  const retentionRadios = [...document.querySelectorAll('input[name="retention"]')];

  const retentionChoice = () => retentionRadios.find((r) => r.checked)?.value ?? "keep";
  for (const radio of retentionRadios) {
    radio.addEventListener("change", () => {
      daysField.hidden = retentionChoice() !== "days";
    });
  }

  function addRow() {
    rowCount += 1;
    const id = `schedule-${rowCount}`;
    const start = h("input", { type: "datetime-local", id: `${id}-start` });
    const end = h("input", { type: "datetime-local", id: `${id}-end` });
    const remove = h("button", { type: "button", className: "link-button", text: "Remove this time" });
    const li = h(
      "li",
      { className: "schedule-row" },
      h("div", {}, h("label", { attrs: { for: start.id }, text: "Opens" }), start),
      h("div", {}, h("label", { attrs: { for: end.id }, text: "Closes" }), end),
      remove,
    );
    remove.addEventListener("click", () => {
      li.remove();
      addTime.focus();
    });
    schedule.append(li);
    start.focus();
  }
  addTime.addEventListener("click", addRow);

  /** The schedule windows, or null (with the error shown) if a row is not right. */
  function readSchedule() {
    const windows = [];
    for (const row of schedule.querySelectorAll(".schedule-row")) {
      const [startInput, endInput] = row.querySelectorAll("input");
      if (!startInput.value && !endInput.value) {
        continue; // an empty row is ignored
      }
      const start = new Date(startInput.value).getTime();
      const end = new Date(endInput.value).getTime();
      if (!Number.isFinite(start) || !Number.isFinite(end) || start >= end) {
        setFieldError(startInput, scheduleError, sentenceFor("invalid_schedule"));
        startInput.focus();
        return null;
      }
      startInput.removeAttribute("aria-invalid");
      windows.push({ start_ms: start, end_ms: end });
    }
    if (windows.length > MAX_SCHEDULE_WINDOWS) {
      scheduleError.textContent = sentenceFor("invalid_schedule");
      scheduleError.hidden = false;
      return null;
    }
    scheduleError.hidden = true;
    return windows;
  }

  return {
    /**
     * The settings for createGroupPayload, or null when a field is wrong (its error is
     * shown and focused). `limits`: the server's (max_text_chars).
     */
    read(limits) {
      const text = agreement.value.trim();
      const agreementProblem = text ? checkText(text, { limits }) : null;
      setFieldError(agreement, agreementError, agreementProblem ? sentenceFor(agreementProblem) : "");
      if (agreementProblem) {
        agreement.focus();
        return null;
      }
      const retention = { ephemeral: false };
      const choice = retentionChoice();
      if (choice === "ephemeral") {
        retention.ephemeral = true;
      } else if (choice === "days") {
        const n = Number(days.value);
        if (!Number.isInteger(n) || n < 1) {
          setFieldError(days, daysError, sentenceFor("invalid_days"));
          days.focus();
          return null;
        }
        retention.history_days = n;
      }
      setFieldError(days, daysError, "");
      const accessCode = code.value.trim();
      if (scalarLength(accessCode) > MAX_ACCESS_CODE_CHARS) {
        setFieldError(code, codeError, sentenceFor("body_too_long"));
        code.focus();
        return null;
      }
      setFieldError(code, codeError, "");
      const windows = readSchedule();
      if (windows === null) {
        return null;
      }
      return {
        agreement: text || undefined,
        accessCode: accessCode || undefined,
        schedule: windows,
        retention,
        waitingRoom: waiting.checked,
      };
    },
    reset() {
      schedule.replaceChildren();
      daysField.hidden = true;
      scheduleError.hidden = true;
    },
  };
}
