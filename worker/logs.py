"""structlog set-up: JSON lines when stderr is not a terminal (ECS, CloudWatch), readable console
output when it is.

No raw event bodies at any level: the code never logs a body (only `source_id`, `error_code`, the
field at fault), botocore's own loggers (which log request and response bodies at DEBUG) stay at
WARNING even with `--debug`, and tracebacks are plain text (`format_exc_info`, and the console
renderer's `plain_traceback`): never rich's, which print every frame's local variables, message
bodies included (structlog's default when it is not configured and rich is installed)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(debug: bool = False, json_logs: bool | None = None, level: str | None = None) -> None:
    as_json = not sys.stderr.isatty() if json_logs is None else json_logs
    level_number = logging.DEBUG if debug else logging.getLevelName(level or "INFO")
    logging.basicConfig(level=level_number, stream=sys.stderr, format="%(message)s")
    for noisy in ("botocore", "aiobotocore", "werkzeug", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
