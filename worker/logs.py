"""structlog set-up: JSON lines when stderr is not a terminal (ECS, CloudWatch), readable console
output when it is. Raw event bodies never go to INFO."""

from __future__ import annotations

import logging
import sys

import structlog


class _CurrentStderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured: a test
    harness (or a caller) that swaps and closes stderr must not leave the logger writing to a closed
    file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(debug: bool = False, json_logs: bool | None = None, level: str | None = None) -> None:
    as_json = not sys.stderr.isatty() if json_logs is None else json_logs
    level_number = logging.DEBUG if debug else logging.getLevelName(level or "INFO")
    logging.basicConfig(level=level_number, stream=sys.stderr, format="%(message)s")
    for noisy in ("botocore", "aiobotocore", "werkzeug", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
