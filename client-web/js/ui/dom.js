// Building DOM without ever parsing markup from data.
//
// Owns: element construction. Text always goes in through text nodes/textContent;
// there is deliberately no way to pass HTML. Never use innerHTML with anything that
// came from a person or the server.

/**
 * Creates an element.
 *   h("p", { className: "hint", text: "Hello" })
 *   h("button", { type: "button", on: { click: fn }, attrs: { "aria-expanded": "false" } }, child, "text")
 * Children may be nodes, strings (become text nodes), or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name === "innerHTML" || name === "outerHTML" || (name.startsWith("on") && name !== "on")) {
      throw new Error(`h(): "${name}" is not allowed; use text and on`);
    }
    if (name === "text") {
      el.textContent = String(value);
    } else if (name === "className") {
      el.className = value;
    } else if (name === "attrs") {
      for (const [attr, attrValue] of Object.entries(value)) {
        if (attrValue !== undefined && attrValue !== null && attrValue !== false) {
          el.setAttribute(attr, attrValue === true ? "" : String(attrValue));
        }
      }
    } else if (name === "on") {
      for (const [type, handler] of Object.entries(value)) {
        el.addEventListener(type, handler);
      }
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name in el) {
      el[name] = value;
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    if (Array.isArray(child)) {
      append(el, child);
    } else if (child instanceof Node) {
      el.appendChild(child);
    } else {
      el.appendChild(document.createTextNode(String(child)));
    }
  }
}

/** Looks up an element that index.html must contain. */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) {
    throw new Error(`index.html is missing #${id}`);
  }
  return el;
}

/** Shows a field's error text (or hides it when text is empty) and marks the field. */
export function setFieldError(input, errorEl, text) {
  errorEl.textContent = text || "";
  errorEl.hidden = !text;
  if (text) {
    input.setAttribute("aria-invalid", "true");
  } else {
    input.removeAttribute("aria-invalid");
  }
}

// Time words live in time-words.js (errors.js needs them too); re-exported here for
// the widgets.
export { formatDateTime, formatTime } from "../time-words.js";

/** Words for a role, as badges show it. */
export function roleLabel(role) {
  switch (role) {
    case "facilitator":
      return "Facilitator";
    case "supervisor":
      return "Supervisor";
    case "admin":
      return "Admin";
    case "member":
      return "Member";
    default:
      return String(role);
  }
}
