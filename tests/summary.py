#!/usr/bin/env python3
"""Counts test results over meson-logs/testlog.json of the given build dirs.

Prints per-build lines, then 'N passed, N failed' as the last line, and exits
non-zero when anything failed or no test ran at all (an empty run proves
nothing). Skipped tests are reported, not counted as passes."""
import json
import os
import sys

PASS = {"OK", "EXPECTEDFAIL"}
SKIP = {"SKIP"}


def main(args):
    passed = failed = skipped = 0
    if len(args) >= 2 and args[0] == "--failed-steps":
        # Set-up or compile steps that failed count as failures: their
        # tests never ran, so no test log shows them.
        failed = int(args[1])
        if failed:
            print(f"{failed} build step(s) failed")
        args = args[2:]
    build_dirs = args
    for build in build_dirs:
        path = os.path.join(build, "meson-logs", "testlog.json")
        if not os.path.exists(path):
            print(f"{build}: no testlog.json (the test run did not start)")
            failed += 1
            continue
        p = f = s = 0
        with open(path, encoding="utf-8") as log:
            for line in log:
                line = line.strip()
                if not line:
                    continue
                result = json.loads(line).get("result")
                if result in PASS:
                    p += 1
                elif result in SKIP:
                    s += 1
                else:
                    f += 1
                    print(f"{build}: {json.loads(line).get('name')}: {result}")
        print(f"{build}: {p} passed, {f} failed, {s} skipped")
        passed, failed, skipped = passed + p, failed + f, skipped + s
    if passed + failed == 0:
        failed = 1
        print("no test ran")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
