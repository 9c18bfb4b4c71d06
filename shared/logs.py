"""One log format for every process: timestamp, level, logger, message. Personal data (email,
comment text) is only ever logged at DEBUG."""

from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO", service: str = "nps") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every rebalance and retry at INFO/WARNING; our loop logs what matters.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
