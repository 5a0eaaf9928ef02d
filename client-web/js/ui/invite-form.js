// "Invite someone": a single-use link for a role — admins make any; facilitators make
// member invites to a virtual group they facilitate. A facilitator invite names the
// groups it grants (facilitator standing is per group). Shows
// <origin>/#invite=<token> (with &group= for a member invite, or a facilitator's
// first group, so the link opens that group's join screen; and with &staff=1 for a
// staff invite, so the app asks the redeemer's name for colleagues) to copy.
//
// Owns: #invite-panel. One signed `invite` request per link.

import { sentenceFor } from "../errors.js";
import { invitePayload, isValidGroupId, Kind } from "../protocol.js";
import { formatDateTime } from "../time-words.js";
import { byId, h, roleLabel, setFieldError } from "./dom.js";
import { errorSentence } from "./feedback.js";

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * The link a person opens to use an invite. A staff invite's link says so
 * (`staff=1`), so the app asks the name colleagues will know them by (links.js).
 */
export function inviteLink(token, group, loc = globalThis.location, staff = false) {
  const params = new URLSearchParams({ invite: token });
  if (group) {
    params.set("group", group);
  }
  if (staff) {
    params.set("staff", "1");
  }
  return `${loc.origin}${loc.pathname === "/" ? "/" : loc.pathname}#${params}`;
}

export function createInviteForm({ connection }) {
  const panel = byId("invite-panel");
  const form = byId("invite-form");
  const role = byId("invite-role");
  const groupField = byId("invite-group-field");
  const group = byId("invite-group");
  const groupError = byId("invite-group-error");
  const days = byId("invite-days");
  const result = byId("invite-result");
  const submit = form.querySelector("button[type=submit]");

  const groupLabel = groupField.querySelector("label");
  const showGroup = () => {
    groupField.hidden = role.value !== "member" && role.value !== "facilitator";
    groupLabel.textContent =
      role.value === "facilitator" ? "Groups they will facilitate (ids, separated by commas)" : "Virtual group id";
  };
  role.addEventListener("change", showGroup);
  showGroup();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const chosen = role.value;
    let groupId = null;
    let groupIds = [];
    if (chosen === "member") {
      groupId = group.value.trim().toLowerCase();
      if (!isValidGroupId(groupId)) {
        setFieldError(group, groupError, sentenceFor("invalid_group_id"));
        group.focus();
        return;
      }
    } else if (chosen === "facilitator") {
      groupIds = [...new Set(group.value.toLowerCase().split(/[\s,]+/).filter(Boolean))];
      if (groupIds.length === 0 || !groupIds.every(isValidGroupId)) {
        setFieldError(group, groupError, sentenceFor("invalid_group_id"));
        group.focus();
        return;
      }
    }
    setFieldError(group, groupError, "");
    const ttl = Number(days.value) * DAY_MS;
    submit.disabled = true;
    result.replaceChildren("Making the invite…");
    try {
      const invited = await connection.signedRequest("invite", Kind.INVITE, (counter, ts) =>
        invitePayload(chosen, groupId, ttl, counter, ts, groupIds),
      );
      const granted = invited.groups ?? groupIds;
      const link = inviteLink(
        invited.token,
        invited.group ?? groupId ?? granted[0],
        globalThis.location,
        invited.role !== "member",
      );
      const what =
        invited.role === "member"
          ? `a member of ${invited.group ?? groupId}`
          : invited.role === "facilitator"
            ? `the ${roleLabel(invited.role)} role in ${granted.join(", ")}`
            : `the ${roleLabel(invited.role)} role`;
      result.replaceChildren(
        h("p", { text: `Invite for ${what}. It works once, until ${formatDateTime(invited.expires_ms)}. Send it only to the person it is for:` }),
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
        ),
      );
    } catch (err) {
      result.replaceChildren(h("p", { className: "error-text", text: errorSentence(err) }));
    } finally {
      submit.disabled = false;
    }
  });

  return {
    /** Admins make any invite; facilitators member invites only. */
    setRoles(roles) {
      const admin = roles.includes("admin");
      const facilitator = roles.includes("facilitator");
      panel.hidden = !admin && !facilitator;
      for (const option of role.options) {
        option.hidden = !admin && option.value !== "member";
        option.disabled = !admin && option.value !== "member";
      }
      if (!admin) {
        role.value = "member";
      }
      showGroup();
    },
  };
}
