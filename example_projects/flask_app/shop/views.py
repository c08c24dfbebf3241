"""The catalog blueprint: a parametrised route and one that raises."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue

catalog = Blueprint("catalog", __name__, url_prefix="/catalog")


@catalog.route("/items/<int:item_id>")
def item(item_id: int) -> ResponseReturnValue:
    # Counted as http_route="/catalog/items/<int:item_id>", whatever the id.
    return jsonify(id=item_id, name=f"item {item_id}")


@catalog.route("/fail")
def fail() -> ResponseReturnValue:
    # Counted with status 500, the status the client gets.
    raise RuntimeError("this view always fails")


def register_errors(app: Flask) -> None:
    @app.errorhandler(404)
    def not_found(error: Exception) -> ResponseReturnValue:
        return jsonify(error="not found"), 404
