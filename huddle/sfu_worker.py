"""The node's SFU worker program (``python -m huddle.sfu_worker``, started by ``sfu.pool``):
an ``sfu.worker`` set up as the node sets itself up, with JSON log lines and the collector
settled once start-up is done."""

from __future__ import annotations

import sys

from huddle import collector, logs
from sfu import worker


def setup(config: worker.WorkerConfig) -> None:
    logs.configure(config.log_level, "json")


def main(argv: list[str] | None = None) -> int:
    return worker.main(argv, setup=setup, on_ready=collector.settle)


if __name__ == "__main__":
    sys.exit(main())
