// Co-produced records this browser has seen: notes a facilitator wrote about a person
// or a session, each followed by the person's (or another facilitator's) own words.
//
// Data flow:
//   `records` frame (our list, a record just written, or a push about us)
//     ─► verify every entry (strict signature, kind `record`, the record's group,
//        opening note vs. added words) ─► keep by id ─► "change"
//
// A record arrives whole each time (RecordInfo with every entry), so a newer copy
// replaces the older one. Entries are shown as verified only if their own signature
// holds and they say what their place in the record says: the first opens it (same
// `about`, no `reply_to`), the others add to it (`reply_to` = the record's id).
//
// Owns: the records in memory (never stored on the device). Knows nothing of the page.

import { Kind, verifyEnvelope } from "./protocol.js";

const isCount = (v) => Number.isSafeInteger(v) && v >= 0;

export class RecordBook extends EventTarget {
  /** Our key: the one the connection is logged in with (one key per group). */
  get me() {
    return this.conn.identity.publicKey;
  }

  constructor({ connection }) {
    super();
    this.conn = connection;
    this.records = new Map(); // id -> record
    this.inbox = Promise.resolve();
    connection.addEventListener("records", (ev) => {
      const list = Array.isArray(ev.detail.records) ? ev.detail.records : [];
      this.inbox = this.inbox.then(() => this.addAll(list)).catch(() => {});
      // The server answers `records` a page at a time, so no answer outgrows a
      // connection: whoever asked, fetch the next page after this one's last id.
      const last = list.length > 0 ? list[list.length - 1].id : undefined;
      if (ev.detail.more === true && Number.isSafeInteger(last)) {
        this.conn.request("records", { after: last }).catch(() => {});
      }
    });
  }

  /** Asks the server for every record about us (the answers arrive as "change"). */
  refresh() {
    return this.conn.request("records").catch(() => {});
  }

  async addAll(list) {
    let changed = false;
    for (const info of list) {
      const record = await this.verify(info);
      if (record) {
        this.records.set(record.id, record);
        changed = true;
      }
    }
    if (changed) {
      this.dispatchEvent(new CustomEvent("change"));
    }
  }

  async verify(info) {
    if (!info || !isCount(info.id) || typeof info.group !== "string" || !Array.isArray(info.entries)) {
      return null;
    }
    const about = typeof info.about === "string" ? info.about : null;
    const entries = await Promise.all(
      info.entries.map(async (env, index) => {
        const check = await verifyEnvelope(env, { kind: Kind.RECORD, group: info.group });
        let { verified, reason } = check;
        const p = check.payload;
        if (verified) {
          const fits =
            index === 0
              ? (p.about ?? null) === about && p.reply_to === undefined
              : p.reply_to === info.id && p.about === undefined;
          if (!fits) {
            verified = false;
            reason = "wrong_record";
          }
        }
        return {
          key: typeof env?.key === "string" ? env.key : "",
          verified,
          reason,
          text: verified ? p.text : typeof p?.text === "string" ? p.text : "",
          ts: verified ? p.ts : null,
          self: env?.key === this.me,
        };
      }),
    );
    return { id: info.id, group: info.group, about, aboutMe: about === this.me, entries };
  }

  /** Records of one group (or all), newest first. */
  list(groupId = null) {
    return [...this.records.values()]
      .filter((r) => groupId === null || r.group === groupId)
      .sort((a, b) => b.id - a.id);
  }
}
