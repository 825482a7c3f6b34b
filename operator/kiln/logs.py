"""The operator's logs: text lines for a terminal (the default), or one JSON object per line for log
pipelines (``--log-format json``): ``time``, ``level``, ``logger``, ``message`` and, for a message about
an object, its ``kind``, ``namespace`` and ``name`` (kopf's per-object loggers say which), plus
``exception`` when there is one."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
                 .replace("+00:00", "Z"), "level": record.levelname.lower(), "logger": record.name}
        ref = getattr(record, "k8s_ref", None)  # kopf.ObjectLogger's
        if isinstance(ref, dict):
            entry.update({k: ref[k] for k in ("kind", "namespace", "name") if ref.get(k)})
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """Log to stderr in ``fmt`` (text or json), replacing any handler set before."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
