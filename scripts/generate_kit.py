"""Writes the operator kit's package data: the Grafana dashboard and the Prometheus rules.

    .venv/bin/python scripts/generate_kit.py                   # rewrite both files
    .venv/bin/python scripts/generate_kit.py --print dashboard # print one instead

Needs grafana-foundation-sdk (the `test` extra). The sources are kit_dashboard.py (with
kit_panels.py) and kit_rules.py beside this file; tests/test_kit_files.py checks that the
committed files are what this script writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KIT = REPO / "gunicorn_prom_ext" / "kit"


def generated() -> dict[str, str]:
    """File name under gunicorn_prom_ext/kit -> its content."""
    import kit_dashboard
    import kit_rules

    from gunicorn_prom_ext.kit.render import (
        DASHBOARD_FILE,
        RULES_FILE,
        dump_dashboard,
        dump_rules,
    )

    return {
        DASHBOARD_FILE: dump_dashboard(kit_dashboard.build()),
        RULES_FILE: dump_rules(kit_rules.rules()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", choices=("dashboard", "rules"), dest="show")
    args = parser.parse_args(argv)
    files = generated()
    if args.show:
        sys.stdout.write(files["dashboard.json" if args.show == "dashboard" else "rules.yml"])
        return 0
    for name, content in files.items():
        (KIT / name).write_text(content, encoding="utf-8")
        print(f"wrote {(KIT / name).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
    raise SystemExit(main())
