"""The shipped dashboard and rules, rendered with a namespace.

Only PromQL is rewritten (panel targets, template variable queries, rule expressions) and
the names of recording rules; titles, descriptions, legends and annotations are kept as
they are. The uid and title of a namespaced dashboard carry the namespace, so dashboards of
several namespaces can live in one Grafana.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

import yaml

from .names import name_map
from .promql import rename_metrics

DASHBOARD_FILE = "dashboard.json"
RULES_FILE = "rules.yml"
DASHBOARD_UID = "gunicorn-prom-ext"
# Where each alert's runbook_url points in the shipped file; `rules --runbook-base`
# replaces it with wherever the team publishes docs/runbooks.md.
RUNBOOK_BASE = "docs/runbooks.md"
# The latency objective's threshold: a bucket boundary of the default duration buckets.
SLO_LATENCY_SECONDS = 0.5


def read_packaged(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


# --- dashboard ------------------------------------------------------------------------------


def dump_dashboard(dashboard: Mapping[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def dashboard_text(namespace: str = "") -> str:
    """The dashboard JSON with ``namespace`` applied (the shipped file itself when empty)."""
    text = read_packaged(DASHBOARD_FILE)
    if not namespace:
        return text
    return dump_dashboard(namespace_dashboard(json.loads(text), namespace))


def namespace_dashboard(dashboard: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    result: dict[str, Any] = copy.deepcopy(dict(dashboard))
    names = name_map(namespace)
    for panel in iter_panels(result):
        for target in panel.get("targets") or ():
            if isinstance(target.get("expr"), str):
                target["expr"] = rename_metrics(target["expr"], names)
    for variable in (result.get("templating") or {}).get("list") or ():
        if variable.get("type") != "query":
            continue
        if isinstance(variable.get("definition"), str):
            variable["definition"] = rename_metrics(variable["definition"], names)
        query = variable.get("query")
        if isinstance(query, str):
            variable["query"] = rename_metrics(query, names)
        elif isinstance(query, dict) and isinstance(query.get("query"), str):
            query["query"] = rename_metrics(query["query"], names)
    if namespace:
        result["uid"] = namespaced_uid(namespace)
        result["title"] = f"{result.get('title', '')} ({namespace})"
    return result


def namespaced_uid(namespace: str) -> str:
    # Grafana caps uids at 40 characters; a long namespace is hashed to stay unique.
    uid = f"{DASHBOARD_UID}-{namespace}"
    if len(uid) <= 40:
        return uid
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:16]
    return f"{DASHBOARD_UID}-{digest}"


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels") or ():
        yield panel
        yield from panel.get("panels") or ()


# --- rules ----------------------------------------------------------------------------------


class _RulesDumper(yaml.SafeDumper):
    """Block scalars for multi-line PromQL, keys in the order written."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_RulesDumper.add_representer(str, _represent_str)


def dump_rules(rules: Mapping[str, Any]) -> str:
    return yaml.dump(
        rules, Dumper=_RulesDumper, sort_keys=False, width=1 << 16, allow_unicode=True, indent=2
    )


def rules_text(namespace: str = "", runbook_base: str | None = None) -> str:
    """The rules file with ``namespace`` applied (the shipped file itself when unchanged)."""
    text = read_packaged(RULES_FILE)
    if not namespace and runbook_base in (None, RUNBOOK_BASE):
        return text
    return dump_rules(namespace_rules(yaml.safe_load(text), namespace, runbook_base))


def namespace_rules(
    rules: Mapping[str, Any], namespace: str, runbook_base: str | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = copy.deepcopy(dict(rules))
    recorded = [rule["record"] for rule in iter_rules(result) if "record" in rule]
    names = name_map(namespace, recorded)
    for rule in iter_rules(result):
        rule["expr"] = rename_metrics(rule["expr"], names)
        if "record" in rule:
            rule["record"] = names[rule["record"]]
        url = (rule.get("annotations") or {}).get("runbook_url")
        if runbook_base and isinstance(url, str) and url.startswith(RUNBOOK_BASE + "#"):
            rule["annotations"]["runbook_url"] = runbook_base + url[len(RUNBOOK_BASE) :]
    return result


def iter_rules(rules: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for group in rules.get("groups") or ():
        yield from group.get("rules") or ()
