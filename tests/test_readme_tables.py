"""Tables in README.md are generated from the code; these tests keep them in step."""

from __future__ import annotations

from pathlib import Path

from gunicorn_prom_ext.settings import settings_reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def between_markers(text: str, name: str) -> str:
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    assert start in text and end in text, f"README.md lacks the {name} markers"
    return text.split(start, 1)[1].split(end, 1)[0]


def test_configuration_table_matches_code() -> None:
    # On failure, paste settings_reference_markdown() between the markers.
    table = between_markers(README.read_text(encoding="utf-8"), "settings-table")
    assert table == settings_reference_markdown()
