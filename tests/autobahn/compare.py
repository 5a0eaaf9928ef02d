#!/usr/bin/env python3
"""Autobahn|Testsuite results against tests/autobahn/expected.json.

    compare.py spec TEMPLATE URL OUTDIR SPEC      write the fuzzing client's spec
    compare.py check INDEX EXPECTED               compare a run with what is expected
    compare.py check INDEX EXPECTED --update      write EXPECTED from the run first

A run passes when no case is FAILED, every expected case ran, no case ran that is
not expected, and every case's behavior and behaviorClose are as expected. Exits 0
on a pass, 1 otherwise, 2 on bad input.
"""

import json
import sys
from collections import Counter

AGENT = "peerhub"


def case_key(case_id):
    return tuple(int(part) for part in case_id.split("."))


def write_spec(template, url, outdir, spec):
    with open(template) as f:
        data = json.load(f)
    for server in data["servers"]:
        server["url"] = url
    data["outdir"] = outdir
    with open(spec, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return 0


def load_results(index):
    with open(index) as f:
        data = json.load(f)
    if AGENT not in data:
        raise ValueError(f"{index} has no results for agent {AGENT!r}")
    return {
        case: {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
        for case, r in data[AGENT].items()
    }


def check(index, expected_path, update):
    results = load_results(index)
    if update:
        # One case a line, in case order, so a refresh reads well in a diff.
        lines = [
            f"  {json.dumps(case)}: {json.dumps(results[case], sort_keys=True)}"
            for case in sorted(results, key=case_key)
        ]
        with open(expected_path, "w") as f:
            f.write("{\n" + ",\n".join(lines) + "\n}\n")
        print(f"autobahn: wrote {len(lines)} cases to {expected_path}")
    with open(expected_path) as f:
        expected = json.load(f)

    problems = []
    for case in sorted(set(expected) | set(results), key=case_key):
        got, want = results.get(case), expected.get(case)
        if got is None:
            problems.append(f"{case}: missing from the run (expected {want})")
        elif want is None:
            problems.append(f"{case}: ran but is not in expected.json (got {got})")
        elif got != want:
            problems.append(f"{case}: expected {want}, got {got}")
    failed = sorted(
        (case for case, r in results.items() if "FAILED" in r.values()), key=case_key
    )
    for case in failed:
        problems.append(f"{case}: FAILED ({results[case]})")
    differences = sum(1 for p in problems if "FAILED (" not in p)

    for problem in problems:
        print(f"autobahn: {problem}")
    behaviors = Counter(r["behavior"] for r in results.values())
    counts = ", ".join(
        f"{behaviors[b]} {b}"
        for b in ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED")
    )
    others = sorted(set(behaviors) - {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"})
    if others:
        counts += ", " + ", ".join(f"{behaviors[b]} {b}" for b in others)
    print(
        f"autobahn: {len(results)} cases, {len(failed)} FAILED, {counts}, "
        f"differences from expected: {differences}"
    )
    return 1 if problems else 0


def main(argv):
    try:
        if len(argv) == 6 and argv[1] == "spec":
            return write_spec(*argv[2:])
        if len(argv) in (4, 5) and argv[1] == "check":
            update = argv[4:] == ["--update"]
            if len(argv) == 5 and not update:
                raise ValueError(f"unknown option {argv[4]!r}")
            return check(argv[2], argv[3], update)
        raise ValueError("usage: see the docstring")
    except (OSError, ValueError, KeyError) as error:
        print(f"autobahn: {error}", file=sys.stderr)
        print(__doc__, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
