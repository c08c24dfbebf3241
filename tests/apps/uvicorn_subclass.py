"""A project's own subclass of uvicorn's worker, as uvicorn's docs suggest for passing
uvicorn settings (``-k uvicorn_subclass.ProjectUvicornWorker``)."""

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]


class ProjectUvicornWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "asyncio", "http": "h11"}
