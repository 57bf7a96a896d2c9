"""The ``huddle-load`` command: every load generator, the merge and the report, by name.

    huddle-load chat --url http://a:8080,http://b:8080 --json chat.json --report chat/
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


def usage() -> str:
    lines = ["usage: huddle-load COMMAND [OPTIONS]   (huddle-load COMMAND --help)", ""]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


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
