"""An append-only log-file store: an example of a third-party SuperVM back end."""

from supervm_logfile.storage import LogFileStorage

__all__ = ["LogFileStorage"]
