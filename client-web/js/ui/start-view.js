// The start screen: your key (its fingerprint, and the full key to give an admin),
// going to a group by id, the supervisor console (supervisors, admins), (for admins)
// creating a group with its settings and keeping the on-call rota, and (for admins and
// facilitators) making invite links.
//
// Owns: #view-start. Creating a group is the only request it makes itself (the
// settings fields are group-settings-form.js, invites invite-form.js); everything else
// is handed to the app through `onGoToGroup`.

import { fingerprint } from "../encoding.js";
import { describeErrorFrame, sentenceFor } from "../errors.js";
import { groupLink } from "../links.js";
import { createStaffList } from "../staff-list.js";
import {
  checkTitle,
  createGroupFrameFields,
  createGroupPayload,
  GROUP_KINDS,
  isValidGroupId,
  Kind,
} from "../protocol.js";
import { byId, h, roleLabel, setFieldError } from "./dom.js";
import { createGroupSettingsForm } from "./group-settings-form.js";
import { createInviteForm } from "./invite-form.js";
import { createRotaEditor } from "./rota-editor.js";
import { createTeamPanel } from "./team-panel.js";
import { exitForgets, setExitForgets } from "../forget.js";

export function createStartView({ identity, connection, desk, onGoToGroup, onOpenConsole, names = null, identities = null, onForget = null }) {
  // The home key (identities.js); it changes when a staff invite binds a new key.
  function showIdentity(shown) {
    identity = shown;
    byId("key-fingerprint").textContent = fingerprint(identity.publicKey);
    byId("key-fingerprint").title = identity.publicKey;
    byId("key-persistence").hidden = identity.persistent;
    byId("key-full").textContent = identity.publicKey;
  }
  showIdentity(identity);
  byId("key-copy").addEventListener("click", async () => {
    const result = byId("key-copy-result");
    try {
      await navigator.clipboard.writeText(identity.publicKey);
      result.textContent = "Copied.";
    } catch {
      result.textContent = "Copy it from above by hand.";
    }
  });
  byId("console-open").addEventListener("click", () => onOpenConsole());
  // One reader of the hub's staff list for both admin panels (they open together).
  const staffList = createStaffList(connection);
  const rota = createRotaEditor({ desk, connection, identity, staffList });
  const team = createTeamPanel({ connection, identity, staffList });

  // ---- forget this device ----
  const forgetOpen = byId("forget-open");
  const forgetConfirm = byId("forget-confirm");
  const forgetResult = byId("forget-result");
  const openConfirm = () => {
    forgetConfirm.hidden = false;
    forgetOpen.setAttribute("aria-expanded", "true");
    forgetResult.textContent = "";
    byId("forget-confirm-text").scrollIntoView?.({ block: "nearest" });
    byId("forget-no").focus();
  };
  const closeConfirm = () => {
    forgetConfirm.hidden = true;
    forgetOpen.setAttribute("aria-expanded", "false");
  };
  forgetOpen.addEventListener("click", () => (forgetConfirm.hidden ? openConfirm() : closeConfirm()));
  byId("about-forget").addEventListener("click", openConfirm);
  byId("forget-no").addEventListener("click", () => {
    closeConfirm();
    forgetOpen.focus();
  });
  byId("forget-yes").addEventListener("click", async () => {
    byId("forget-yes").disabled = true;
    forgetResult.textContent = "Forgetting…";
    const ok = await onForget?.().catch(() => false);
    // The page reloads when it worked; this stays only if it did not.
    if (!ok) {
      forgetResult.textContent = "This device couldn't forget everything. Clearing this site's data in the browser's settings does.";
      byId("forget-yes").disabled = false;
    }
  });
  const exitBox = byId("exit-forgets");
  exitBox.checked = exitForgets();
  exitBox.addEventListener("change", () => {
    if (!setExitForgets(exitBox.checked)) {
      exitBox.checked = false;
      forgetResult.textContent = "This browser won't keep that choice. Use “Forget this device…” before you leave.";
    }
  });

  // ---- go to a group ----
  const goForm = byId("go-form");
  const goInput = byId("go-group");
  const goError = byId("go-group-error");
  goForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = goInput.value.trim().toLowerCase();
    if (!isValidGroupId(id)) {
      setFieldError(goInput, goError, sentenceFor("invalid_group_id"));
      goInput.focus();
      return;
    }
    setFieldError(goInput, goError, "");
    onGoToGroup(id);
  });

  // ---- create a group (admins) ----
  const adminPanel = byId("admin-panel");
  const createForm = byId("create-form");
  const idInput = byId("create-id");
  const idError = byId("create-id-error");
  const titleInput = byId("create-title");
  const titleError = byId("create-title-error");
  const kindSelect = byId("create-kind");
  const result = byId("create-result");
  const submit = createForm.querySelector("button[type=submit]");
  const settingsForm = createGroupSettingsForm();
  const invites = createInviteForm({ connection });

  createForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const group = idInput.value.trim().toLowerCase();
    const title = titleInput.value.trim();
    const groupKind = GROUP_KINDS.includes(kindSelect.value) ? kindSelect.value : "drop_in";
    const idProblem = isValidGroupId(group) ? "" : sentenceFor("invalid_group_id");
    const titleCode = checkTitle(title);
    setFieldError(idInput, idError, idProblem);
    setFieldError(titleInput, titleError, titleCode ? sentenceFor(titleCode) : "");
    if (idProblem || titleCode) {
      (idProblem ? idInput : titleInput).focus();
      return;
    }
    const settings = settingsForm.read(connection.limits);
    if (!settings) {
      return;
    }
    submit.disabled = true;
    result.replaceChildren("Creating the group…");
    try {
      const created = await connection.signedRequest(
        "create_group",
        Kind.CREATE_GROUP,
        (counter, ts) => createGroupPayload(group, title, groupKind, settings, counter, ts),
        createGroupFrameFields(settings),
      );
      const id = created.group?.id ?? group;
      const link = groupLink(id);
      result.replaceChildren(
        h("p", { text: `Group "${created.group?.title ?? title}" created. Share this link with people who should join:` }),
        h("p", { className: "share-link" }, h("code", { text: link })),
        h(
          "p",
          {},
          h("button", {
            type: "button",
            className: "secondary",
            text: "Copy link",
            on: {
              click: async (e) => {
                try {
                  await navigator.clipboard.writeText(link);
                  e.target.textContent = "Link copied";
                } catch {
                  e.target.textContent = "Copy the link above by hand";
                }
              },
            },
          }),
          " ",
          h("button", { type: "button", text: "Go to the group", on: { click: () => onGoToGroup(id) } }),
        ),
      );
      createForm.reset();
      settingsForm.reset();
    } catch (err) {
      result.replaceChildren(
        h("p", { className: "error-text", text: err.frame ? describeErrorFrame(err.frame) : sentenceFor(err.code) }),
      );
    } finally {
      submit.disabled = false;
    }
  });

  function showRoles(roles) {
    const rolesEl = byId("key-roles");
    rolesEl.hidden = roles.length === 0;
    rolesEl.textContent = roles.length
      ? `Your roles on this device: ${roles.map(roleLabel).join(", ")}.`
      : "";
    adminPanel.hidden = !roles.includes("admin");
    rota.setVisible(roles.includes("admin"));
    team.setVisible(roles.includes("admin"));
    byId("console-open-row").hidden = !(roles.includes("supervisor") || roles.includes("admin"));
    invites.setRoles(roles);
    showMyGroups(roles);
  }

  // Every group this device has a key for, each with the name used there: each has
  // its own key, so only this device can put them side by side. On a shared device,
  // "Forget this device" (just below) empties the list.
  async function showMyGroups() {
    const section = byId("my-groups");
    const groups = identities ? await identities.groups(names) : [];
    const shown = groups.filter((g) => isValidGroupId(g.group));
    section.hidden = shown.length === 0;
    byId("my-groups-list").replaceChildren(
      ...shown.map((g) =>
        h(
          "li",
          {},
          h("button", {
            type: "button",
            className: "secondary",
            text: `${g.group}${g.name ? `, as ${g.name}` : ""}${g.sessionOnly ? " (this tab only)" : ""}`,
            on: { click: () => onGoToGroup(g.group) },
          }),
        ),
      ),
    );
  }

  return {
    show() {
      showRoles(connection.roles);
    },
    setRoles: showRoles,
    setIdentity: showIdentity,
  };
}
