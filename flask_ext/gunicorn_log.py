"""``app.logger`` writing into gunicorn's error log while gunicorn serves the app."""

from __future__ import annotations

import logging
from typing import Any


class GunicornErrorLogHandler(logging.Handler):
    """Hands app.logger's records to gunicorn's error logger (its handlers, its format)."""

    def __init__(self, error_log: logging.Logger) -> None:
        super().__init__()
        self.error_log = error_log

    def emit(self, record: logging.LogRecord) -> None:
        self.error_log.handle(record)


_LEVEL_FROM_GUNICORN = "_gunicorn_prom_ext_level"


def share_gunicorn_log(logger: logging.Logger, gunicorn_log: Any) -> None:
    """Make ``logger`` (app.logger) write into gunicorn's error log.

    Flask's default stderr handler is replaced by one that passes records to gunicorn's
    ``gunicorn.error`` logger, so they get gunicorn's handlers and format (--error-logfile,
    --log-config, USR1 reopening). Handlers the project added stay. Unless the project
    set a level on app.logger, it follows gunicorn's --log-level. Idempotent.
    """
    error_log = getattr(gunicorn_log, "error_log", None)
    if not isinstance(error_log, logging.Logger):
        return  # a custom logger_class without gunicorn's error logger: leave it alone
    from flask.logging import default_handler

    for handler in list(logger.handlers):
        if handler is default_handler or isinstance(handler, GunicornErrorLogHandler):
            logger.removeHandler(handler)
    logger.addHandler(GunicornErrorLogHandler(error_log))
    if logger.level == logging.NOTSET or getattr(logger, _LEVEL_FROM_GUNICORN, False):
        logger.setLevel(error_log.getEffectiveLevel())
        setattr(logger, _LEVEL_FROM_GUNICORN, True)
