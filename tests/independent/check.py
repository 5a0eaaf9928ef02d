#!/usr/bin/env python3
"""Independent checkers for peerhub's published formats (docs/FORMATS.md).

Written from docs/FORMATS.md and protocol/PROTOCOL.md alone: no peerhub code is
called or imported, and only the Python standard library is used (Ed25519 strict
verification is in ed25519_strict.py beside this file).

    check.py chain   BACKUP_FILE        re-verify the audit chain held in a backup
    check.py backup  BACKUP_FILE        re-compute a backup's digest and content digest
    check.py pager   BODY_FILE KEY SIG  verify a generic pager notice (KEY, SIG: the
                                        X-Peerhub-Key and X-Peerhub-Signature headers)
    check.py formats FORMATS.md         re-compute every worked example in the document

Exit status: 0 good, 1 broken or refused (the reason is printed), 2 unreadable input.
"""

import base64
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ed25519_strict import b64url_decode, verify_envelope, verify_strict  # noqa: E402

# FORMATS.md §2: the trees of a store, in the order a backup and a digest take them.
TREES = [
    "meta",
    "key_account",
    "key_counter",
    "tokenhash_invite",
    "groupid_group",
    "groupid_key_member",
    "groupid_seq_event",
    "groupid_state",
    "groupid_key_allowed",
    "recordid_record",
    "key_recordid",
    "escid_escalation",
    "escindex_escid",
    "seq_audit",
    "key_pushsub",
]
# FORMATS.md §2: audit entries that record only a read, left out of the content digest.
READ_ONLY_ACTIONS = {"admin.backup", "admin.export", "admin.escalation_list"}
AUDIT_DOMAIN = b"peerhub-audit/1\n"
BODY_FIELDS = ["seq", "ts", "prev", "action", "group", "subject", "envelopes"]
PAGER_DOMAIN = b"peerhub/1/pager\n"
PAGER_FIELDS = {
    "event",
    "escalation",
    "group",
    "group_name",
    "severity",
    "level",
    "deadline_ms",
    "seconds_left",
    "created_ms",
    "link",
}


class Broken(Exception):
    """The input is readable but does not check out."""


def strict_json(text):
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise Broken("a JSON object has a duplicated key")
        return dict(pairs)

    return json.loads(text, object_pairs_hook=no_duplicates)


def is_hex64(text):
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


# ---------------------------------------------------------------------------------
# Backup files (FORMATS.md §2)


def read_backup(lines):
    """Parses a backup file's lines: (header, [(tree, key, value)], trailer)."""
    if not lines:
        raise Broken("the file is empty")
    header = strict_json(lines[0])
    if header.get("format") != "peerhub-backup/1" or set(header) != {"format", "created_ms"}:
        raise Broken("line 1 is not a peerhub-backup/1 header")
    entries, trailer = [], None
    for number, line in enumerate(lines[1:], start=2):
        if trailer is not None:
            raise Broken(f"line {number} follows the trailer")
        item = strict_json(line)
        if "end" in item:
            trailer = item
            continue
        if set(item) != {"t", "k", "v"}:
            raise Broken(f"line {number} is not an entry")
        entries.append((item["t"], b64url_decode(item["k"]), b64url_decode(item["v"])))
    if trailer is None:
        raise Broken("the trailer is missing: the file is cut short")
    return header, entries, trailer


def audit_action(stored):
    try:
        return strict_json(stored[65:].decode("utf-8")).get("action")
    except (ValueError, Broken):
        return None


def digests(entries):
    """The store digest and the content digest of a backup's entries, checking that
    they come in tree order and key order."""
    full, content = hashlib.sha256(), hashlib.sha256()
    by_tree = {name: [] for name in TREES}
    last_tree, last_key = -1, None
    for tree, key, value in entries:
        if tree not in by_tree:
            raise Broken(f"unknown tree {tree!r}")
        place = TREES.index(tree)
        if place < last_tree or (place == last_tree and key <= last_key):
            raise Broken(f"an entry of {tree} is out of order")
        last_tree, last_key = place, key
        by_tree[tree].append((key, value))
    for name in TREES:
        full.update(name.encode())
        content.update(name.encode())
        for key, value in by_tree[name]:
            part = len(key).to_bytes(8, "big") + key + len(value).to_bytes(8, "big") + value
            full.update(part)
            bookkeeping = name == "meta" and key == b"commits"
            read_only = name == "seq_audit" and audit_action(value) in READ_ONLY_ACTIONS
            if not (bookkeeping or read_only):
                content.update(part)
    return full.hexdigest(), content.hexdigest()


def check_backup(lines):
    _, entries, trailer = read_backup(lines)
    if trailer.get("end") is not True or trailer.get("entries") != len(entries):
        raise Broken(f"{len(entries)} entries read, the trailer says {trailer.get('entries')}")
    digest, content = digests(entries)
    if trailer.get("digest") != digest:
        raise Broken(f"digest {digest} is not the recorded {trailer.get('digest')}")
    if "content_digest" in trailer and trailer["content_digest"] != content:
        raise Broken(f"content digest {content} is not the recorded {trailer['content_digest']}")
    return f"backup OK: {len(entries)} entries, digest {digest}, content digest {content}"


# ---------------------------------------------------------------------------------
# The audit chain (FORMATS.md §1)


def check_entry(seq, prev, stored):
    """Checks one stored entry after the entry whose hash is `prev` (32 bytes);
    returns its hash."""
    if len(stored) < 66 or stored[64:65] != b"\n":
        raise Broken(f"entry {seq}: it does not start with a hash line")
    hash_line, body = stored[:64].decode("ascii", "replace"), stored[65:]
    if not is_hex64(hash_line):
        raise Broken(f"entry {seq}: its hash line is not 64 lowercase hex digits")
    fields = strict_json(body.decode("utf-8"))
    if list(fields) != BODY_FIELDS:
        raise Broken(f"entry {seq}: its fields are {list(fields)}")
    if fields["seq"] != seq:
        raise Broken(f"entry {seq}: it says it is entry {fields['seq']}")
    if fields["prev"] != prev.hex():
        raise Broken(f"entry {seq}: prev is {fields['prev']}, the entry before hashes to {prev.hex()}")
    computed = hashlib.sha256(AUDIT_DOMAIN + prev + body).digest()
    if computed.hex() != hash_line:
        raise Broken(f"entry {seq}: stored hash {hash_line}, computed {computed.hex()}")
    envelopes = fields["envelopes"]
    if not envelopes:
        raise Broken(f"entry {seq}: no envelope")
    for number, env in enumerate(envelopes, start=1):
        if set(env) == {"erased"}:
            if not is_hex64(env["erased"]):
                raise Broken(f"entry {seq}: erased envelope {number} is not a hash")
            continue
        if set(env) != {"kind", "key", "payload", "sig"}:
            raise Broken(f"entry {seq}: envelope {number} has fields {sorted(env)}")
        if not verify_envelope(env):
            raise Broken(f"entry {seq}: envelope {number} of {len(envelopes)} does not verify")
    return computed


def check_chain(entries):
    """Verifies the chain held in a backup's entries, from its anchor."""
    anchor_seq, anchor_hash = 0, bytes(32)
    for tree, key, value in entries:
        if tree == "meta" and key == b"audit_anchor":
            anchor = strict_json(value.decode("utf-8"))
            anchor_seq, anchor_hash = anchor["seq"], bytes.fromhex(anchor["hash"])
    stored = sorted(
        (int.from_bytes(key, "big"), value)
        for tree, key, value in entries
        if tree == "seq_audit"
    )
    last_seq, last_hash = anchor_seq, anchor_hash
    for seq, value in stored:
        if seq <= anchor_seq:
            continue
        if seq != last_seq + 1:
            raise Broken(f"entry {last_seq + 1}: missing (the next stored is {seq})")
        last_hash = check_entry(seq, last_hash, value)
        last_seq = seq
    return f"audit chain OK: {last_seq - anchor_seq} entries, last hash {last_hash.hex()}"


# ---------------------------------------------------------------------------------
# Pager notices (FORMATS.md §3)


def check_pager(body, key, signature):
    if not verify_strict(b64url_decode(key), PAGER_DOMAIN + body, b64url_decode(signature)):
        raise Broken("the signature does not verify over peerhub/1/pager\\n ‖ body")
    fields = strict_json(body.decode("utf-8"))
    if set(fields) != PAGER_FIELDS:
        raise Broken(f"the body's fields are {sorted(fields)}, not the documented ones")
    for name, value in fields.items():
        # No key (43 base64url characters) in any field: never who is waited for.
        if isinstance(value, str) and len(value) == 43:
            try:
                if len(b64url_decode(value)) == 32:
                    raise Broken(f"field {name} holds a key")
            except ValueError:
                pass
    return f"pager notice OK: {fields['event']} of escalation {fields['escalation']}"


# ---------------------------------------------------------------------------------
# The document's worked examples


def blocks(doc):
    out, tag, lines = {}, None, None
    for line in doc.split("\n"):
        if lines is None:
            if line.lstrip().startswith("```"):
                words = line.lstrip()[3:].split()
                tag, lines = (words[1] if len(words) > 1 else None), []
        elif line.lstrip().startswith("```"):
            if tag:
                out[tag] = "\n".join(lines)
            tag, lines = None, None
        else:
            lines.append(line)
    return out


def check_formats(doc):
    found = blocks(doc)
    said = []
    # §1: the two linked entries.
    prev = bytes(32)
    for n in (1, 2):
        entry = found[f"audit-entry-{n}"].encode("utf-8")
        prev = check_entry(n, prev, entry)
        if prev.hex() != found[f"audit-hash-{n}"]:
            raise Broken(f"audit-hash-{n} is not the hash of audit-entry-{n}")
    said.append("audit example OK")
    # §2: the tree order, and the backup example (its digests and its chain).
    if found["backup-trees"].split() != TREES:
        raise Broken("the document's tree order is not this checker's")
    lines = found["backup-example"].split("\n")
    said.append(check_backup(lines))
    _, entries, _ = read_backup(lines)
    said.append(check_chain(entries))
    # §3: the pager notice.
    headers = dict(
        line.split(": ", 1) for line in found["pager-headers"].split("\n") if line.strip()
    )
    said.append(
        check_pager(
            found["pager-body"].encode("utf-8"),
            headers["x-peerhub-key"],
            headers["x-peerhub-signature"],
        )
    )
    return "\n".join(said)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    command, path = argv[1], argv[2]
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        print(f"cannot read {path}: {e}", file=sys.stderr)
        return 2
    try:
        if command == "chain":
            _, entries, _ = read_backup(raw.decode("utf-8").splitlines())
            print(check_chain(entries))
        elif command == "backup":
            print(check_backup(raw.decode("utf-8").splitlines()))
        elif command == "pager" and len(argv) == 5:
            print(check_pager(raw, argv[3], argv[4]))
        elif command == "formats":
            print(check_formats(raw.decode("utf-8")))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (Broken, ValueError, KeyError, TypeError) as e:
        kind = "audit chain BROKEN" if command == "chain" else f"{command} BROKEN"
        print(f"{kind}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
