"""The ``huddle-load`` command: every load generator, the merge and the report, by name.

    huddle-load chat --url http://a:8080,http://b:8080 --json chat.json --report chat/
    huddle-load chat --url ... --shard 1/2 --start-at 2026-12-06T12:00:00Z --json A.json
    huddle-load merge A.json B.json --json ALL.json --report all/

``huddle-load NAME ARGS`` is ``python -m benchmarks.MODULE ARGS`` (``--help`` after the name
shows that generator's options); the key and secret are best kept in ``HUDDLE_API_KEY`` and
``HUDDLE_API_SECRET``, out of the command line other users can see.
"""

from __future__ import annotations

import importlib
import sys
from typing import Final, NoReturn

from benchmarks.common import run_main

COMMANDS: Final = {
    "chat": ("benchmarks.chat_load", "group chat deliveries: latency, rate, loss"),
    "sfu": ("benchmarks.sfu_load", "SFU forwarding: CPU per packet, loss, delay"),
    "media": ("benchmarks.media_load", "uploads, downloads, thumbnails"),
    "signaling": ("benchmarks.signaling_load", "connections, memory, round trips"),
    "merge": ("benchmarks.merge", "merge the shards' JSON (--shard I/N) into one"),
    "report": ("benchmarks.report", "draw index.html and plots from a JSON result"),
}


EXAMPLE: Final = """
against running nodes (key and secret in HUDDLE_API_KEY / HUDDLE_API_SECRET):
  huddle-load chat --url http://a:8080,http://b:8080 --json chat.json --report chat/
from two machines, measuring together, then merged:
  huddle-load chat --url URLS --shard 1/2 --start-at 2026-12-06T12:00:00Z --json a.json
  huddle-load chat --url URLS --shard 2/2 --start-at 2026-12-06T12:00:00Z --json b.json
  huddle-load merge a.json b.json --json all.json --report all/
(--shard and --start-at work with every generator; sfu shares out --rooms, media the
--clients of each phase. See benchmarks/README.md.)"""


def usage() -> str:
    lines = ["usage: huddle-load COMMAND [OPTIONS]   (huddle-load COMMAND --help)", ""]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines) + "\n" + EXAMPLE


def main() -> NoReturn:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"huddle-load: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(entry[0])
    sys.argv = [f"huddle-load {args[0]}", *args[1:]]
    run_main(module.main)


if __name__ == "__main__":
    main()
