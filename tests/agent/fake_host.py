"""A stand-in for `chroot /host`: runs systemctl and reboot against a recorded fake host.

usage: python fake_host.py COMMAND ARGS...   (state in $FAKE_HOST_DIR)
- services.json: the active units; `systemctl is-active --quiet U`, `stop U`, `start U`,
  `daemon-reload` act on it;
- calls.jsonl: every command line, one JSON list per line;
- fail.txt (optional): command lines (space-joined) that exit 1.
"""

import json
import os
import sys
from pathlib import Path


def main() -> int:
    state = Path(os.environ["FAKE_HOST_DIR"])
    argv = sys.argv[1:]
    with open(state / "calls.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(argv) + "\n")
    failing = state / "fail.txt"
    if failing.exists() and " ".join(argv) in failing.read_text().splitlines():
        print(f"fake host: {' '.join(argv)} fails", file=sys.stderr)
        return 1
    services_file = state / "services.json"
    active = set(json.loads(services_file.read_text())) if services_file.exists() else set()
    if argv[:1] in (["reboot"], ["nvidia-ctk"]):
        return 0
    if argv[:1] != ["systemctl"]:
        print(f"fake host: unknown command {argv}", file=sys.stderr)
        return 127
    verb = argv[1]
    if verb == "daemon-reload":
        return 0
    unit = argv[-1]
    if verb == "is-active":
        return 0 if unit in active else 3
    if verb == "stop":
        active.discard(unit)
    elif verb == "start":
        active.add(unit)
    else:
        return 1
    services_file.write_text(json.dumps(sorted(active)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
