"""Hook implementations this plugin contributes (loaded from the ``supervm`` entry-point group)."""

from __future__ import annotations

import logging

from supervm import hookimpl
from supervm.storage import Storage
from supervm.url import StorageURL

log = logging.getLogger("supervm_logfile")


@hookimpl
def supervm_storage_opened(storage: Storage, url: StorageURL) -> None:
    """Log every store opened through ``supervm.open_storage``."""
    log.info("opened %s store for %s", type(storage).__name__, url.scheme)
