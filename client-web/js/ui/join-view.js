// The join screen: choose a pseudonym for a group, then join.
//
// Owns: #view-join. Normalises and checks the name the way the server will (names.js)
// so the signed name is exactly the one the server stores; the joining itself is the
// app's `onJoin(groupId, name, accessCode)`, which resolves once joined or rejects
// with the error. The access code field appears when the group turns out to need one
// (`access_denied`), and the person joins again with it.

import { describeErrorFrame, sentenceFor } from "../errors.js";
import { scalarLength } from "../encoding.js";
import { isValidGroupId, MAX_ACCESS_CODE_CHARS } from "../protocol.js";
import { normaliseDisplayName } from "../names.js";
import { byId, setFieldError } from "./dom.js";

/** The name last used in each group on this device (store.js "names"). */
export function createNameMemory(store) {
  return {
    async get(groupId) {
      try {
        const names = (await store.get("names")) ?? {};
        return typeof names[groupId] === "string" ? names[groupId] : "";
      } catch {
        return "";
      }
    },
    async remember(groupId, name) {
      try {
        await store.update("names", (names) => ({ ...(names ?? {}), [groupId]: name }));
      } catch {
        // Remembering is a convenience; joining worked.
      }
    },
    /** Every group remembered here: { [group id]: name }. */
    async all() {
      try {
        return (await store.get("names")) ?? {};
      } catch {
        return {};
      }
    },
    async forget() {
      await store.put("names", {});
    },
  };
}

export function createJoinView({ connection, onJoin, onBack, names = null, identities = null }) {
  const sessionOnlyBox = byId("join-session-only");
  // A passphrase: to lock a new group's key, or to open a locked one (identities.js).
  const lockRow = byId("join-lock-row");
  const lockHint = byId("join-lock-hint");
  const lockBox = byId("join-lock");
  const passField = byId("join-pass-field");
  const passInput = byId("join-pass");
  const passError = byId("join-pass-error");
  let locked = false;
  let hasKey = false; // this device already has an unlocked key for the group
  // Staff join with the key their invite bound (identities.js): neither choice applies.
  const staff = () => identities?.isHomeStaff() === true;
  const showPass = () => {
    passField.hidden = !(locked || lockBox.checked);
    lockRow.hidden = locked || hasKey || staff();
    lockHint.hidden = lockRow.hidden;
    byId("join-session-only-row").hidden = locked || hasKey || staff();
    byId("join-session-only-hint").hidden = byId("join-session-only-row").hidden;
    byId("join-pass-label").textContent = locked ? "Passphrase for this group" : "Choose a passphrase";
  };
  // The home key's roles are known after its login (the app records them on the same
  // event, after this listener): look again once that has run.
  connection.addEventListener("authenticated", () => setTimeout(showPass, 0));
  lockBox.addEventListener("change", () => {
    if (lockBox.checked) {
      sessionOnlyBox.checked = false;
    }
    showPass();
  });
  sessionOnlyBox.addEventListener("change", () => {
    if (sessionOnlyBox.checked) {
      lockBox.checked = false;
      showPass();
    }
  });
  const form = byId("join-form");
  const groupLabel = byId("join-group-id");
  const input = byId("join-name");
  const count = byId("join-name-count");
  const error = byId("join-name-error");
  const formError = byId("join-error");
  const submit = byId("join-submit");
  const codeField = byId("join-code-field");
  const codeInput = byId("join-code");
  const codeError = byId("join-code-error");
  const maxChars = () => connection.limits.max_name_chars;
  let groupId = null;

  function showError(err) {
    const code = err.code === "not_found" ? "group_not_found" : err.code;
    const text = err.frame && code === err.code ? describeErrorFrame(err.frame) : sentenceFor(code);
    if (typeof err.code === "string" && err.code.startsWith("passphrase_")) {
      passField.hidden = false;
      setFieldError(passInput, passError, sentenceFor(err.code));
      passInput.focus();
    } else if (err.code === "invalid" || err.code === "body_too_long") {
      setFieldError(input, error, text);
      input.focus();
    } else if (err.code === "access_denied" && groupId) {
      codeField.hidden = false;
      setFieldError(codeInput, codeError, text);
      codeInput.focus();
    } else {
      formError.textContent = text;
      formError.hidden = false;
    }
  }

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
    let accessCode = null;
    if (!codeField.hidden) {
      accessCode = codeInput.value.trim();
      if (!accessCode || scalarLength(accessCode) > MAX_ACCESS_CODE_CHARS) {
        setFieldError(codeInput, codeError, sentenceFor(accessCode ? "body_too_long" : "empty_access_code"));
        codeInput.focus();
        return;
      }
      setFieldError(codeInput, codeError, "");
    }
    submit.disabled = true;
    submit.textContent = connection.authenticated ? "Joining…" : "Waiting for the connection…";
    try {
      // A session-only key (identities.js) lives in this tab; its name is not written.
      const sessionOnly = sessionOnlyBox.checked || identities?.isSessionOnly(groupId) === true;
      const wantsPass = locked || lockBox.checked;
      const passphrase = wantsPass ? passInput.value : "";
      if (wantsPass && !passphrase) {
        throw { code: locked ? "passphrase_needed" : "passphrase_short" };
      }
      setFieldError(passInput, passError, "");
      await onJoin(groupId, checked.name, accessCode, { sessionOnly, passphrase });
      passInput.value = "";
      if (sessionOnly) {
        identities?.rememberSessionName(groupId, checked.name);
      } else {
        names?.remember(groupId, checked.name);
      }
    } catch (err) {
      showError(err);
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
      setFieldError(codeInput, codeError, "");
      codeField.hidden = true;
      codeInput.value = "";
      count.textContent = "";
      sessionOnlyBox.checked = false;
      input.value = "";
      lockBox.checked = false;
      passInput.value = "";
      setFieldError(passInput, passError, "");
      locked = false;
      hasKey = false;
      showPass();
      const asked = groupId;
      identities?.existingFor(groupId).then((key) => {
        if (groupId === asked && key) {
          locked = key.locked === true;
          hasKey = !locked;
          showPass();
        }
      });
      // The name used here before, on this device, so it need not be retyped.
      const shown = groupId;
      names?.get(groupId).then((name) => {
        if (name && groupId === shown && !input.value) {
          input.value = name;
        }
      });
    },
    /** Fills the form again (after "Join the next session" was refused) and says why. */
    showRefusal({ name, accessCode }, err) {
      input.value = name;
      if (accessCode) {
        codeField.hidden = false;
        codeInput.value = accessCode;
      }
      showError(err);
    },
    focusName() {
      input.focus();
    },
    /** The home key's roles changed (an invite): staff have neither key choice. */
    refreshChoices() {
      showPass();
    },
  };
}
