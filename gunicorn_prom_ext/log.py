"""The logger shape the package writes to: gunicorn's ``arbiter.log`` / ``worker.log``.

Gunicorn's ``glogging.Logger`` is not a ``logging.Logger``, so code that logs takes
anything with these methods; a plain ``logging.Logger`` fits too (for tests and tools).
"""

from __future__ import annotations

from typing import Any, Protocol


class Log(Protocol):
    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None: ...
    def info(self, msg: str, *args: Any, **kwargs: Any) -> None: ...
    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None: ...
    def error(self, msg: str, *args: Any, **kwargs: Any) -> None: ...
    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None: ...
