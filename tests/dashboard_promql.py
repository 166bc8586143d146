"""The PromQL that dashboards/ ships, read the way Grafana and Prometheus read it.

`panel_targets()` lists every query of every dashboard, `alert_rules()` every alert rule,
`recording_rules()` every recording rule (the SLO error ratios), `selectors()` finds the
series selectors of an expression (metric name, label matchers, range, the function around
it) without a PromQL parser, and `expand()` fills in Grafana's variables as Grafana would
before sending the query to Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "dashboards"
GRAFANA_DASHBOARDS = DASHBOARDS / "dashboards"
PROMETHEUS_DIR = DASHBOARDS / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERT_RULES = PROMETHEUS_DIR / "alerts.yml"
ALERT_RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
# promtool unit tests of alerts.yml: the alerts, the SLO rules, the SLO rules over days.
RULE_TEST_FILES = (
    ALERT_RULE_TESTS,
    PROMETHEUS_DIR / "slo_test.yml",
    PROMETHEUS_DIR / "slo_days_test.yml",
)

# Series Prometheus makes itself for every target: a rule may name them, no exporter does.
PROMETHEUS_SYNTHETIC = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
)

_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile"}
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_VARIABLE = re.compile(r"\$[A-Za-z_]\w*|\$\{[^}]+\}")
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:\\.|[^"\\])*)"\s*,?')


# -- reading the files ---------------------------------------------------------------------------
def dashboard_files() -> list[Path]:
    return sorted(GRAFANA_DASHBOARDS.rglob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included (rows themselves are not panels)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref_id: str
    expr: str
    instant: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.panel, self.ref_id)


def panel_targets() -> list[Target]:
    found = []
    for path in dashboard_files():
        dashboard = load_dashboard(path)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                found.append(
                    Target(
                        dashboard=dashboard["title"],
                        panel=panel["title"],
                        ref_id=target["refId"],
                        expr=target["expr"],
                        instant=bool(target.get("instant")) and not target.get("range"),
                    )
                )
    return found


def rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml, alerting and recording, in file order."""
    groups = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "record" in rule]


# -- scanning PromQL -----------------------------------------------------------------------------
@dataclass
class Selector:
    """One series selector: `name{matchers}[range]`, and the function it is an argument of."""

    name: str | None
    matchers: dict[str, tuple[str, str]] = field(default_factory=dict)
    range: str | None = None
    function: str | None = None


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char in "\"'`":
            end = i + 1
            while expr[end] != char:
                end += 2 if expr[end] == "\\" and char != "`" else 1
            tokens.append(("string", expr[i : end + 1]))
            i = end + 1
        elif char == "{":
            end = i + 1
            while expr[end] != "}":
                if expr[end] == '"':
                    end += 1
                    while expr[end] != '"':
                        end += 2 if expr[end] == "\\" else 1
                end += 1
            tokens.append(("matchers", expr[i + 1 : end]))
            i = end + 1
        elif char == "[":
            end = expr.index("]", i)
            tokens.append(("range", expr[i + 1 : end].strip()))
            i = end + 1
        elif char in "(),":
            tokens.append((char, char))
            i += 1
        elif match := _VARIABLE.match(expr, i):
            tokens.append(("variable", match.group()))
            i = match.end()
        elif match := _NUMBER.match(expr, i):
            tokens.append(("number", match.group()))
            i = match.end()
        elif match := _IDENT.match(expr, i):
            tokens.append(("ident", match.group()))
            i = match.end()
        else:
            tokens.append(("operator", char))
            i += 1
    return tokens


def parse_matchers(text: str) -> dict[str, tuple[str, str]]:
    matchers: dict[str, tuple[str, str]] = {}
    position = 0
    while position < len(text.strip()):
        match = _MATCHER.match(text, position)
        if not match:
            raise ValueError(f"cannot read label matchers {{{text}}}")
        matchers[match.group(1)] = (match.group(2), match.group(3))
        position = match.end()
    return matchers


def selectors(expr: str) -> list[Selector]:
    """The series selectors of `expr`, in order."""
    tokens = _tokens(expr)
    found: list[Selector] = []
    calls: list[str | None] = []
    aggregation: str | None = None  # `sum by (label) (...)`: the call opens after the clause
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("end", "")
        if kind == "ident" and text in _GROUPING and following[0] == "(":
            i = tokens.index((")", ")"), i)  # a label list, not series
        elif kind == "ident" and text in _AGGREGATIONS and following[1] in _GROUPING:
            aggregation = text
        elif kind == "ident" and following[0] == "(":
            calls.append(text)
            i += 1
        elif kind == "(":
            calls.append(aggregation)
            aggregation = None
        elif kind == ")":
            calls.pop()
        elif (kind == "ident" and text not in _KEYWORDS) or kind == "matchers":
            selector = Selector(name=text if kind == "ident" else None)
            if kind == "matchers":
                selector.matchers = parse_matchers(text)
            elif following[0] == "matchers":
                i += 1
                selector.matchers = parse_matchers(tokens[i][1])
            if selector.name is None and "__name__" in selector.matchers:
                selector.name = selector.matchers["__name__"][1]
            if i + 1 < len(tokens) and tokens[i + 1][0] == "range":
                i += 1
                selector.range = tokens[i][1]
            # The innermost call it is an argument of; None inside plain parentheses.
            selector.function = calls[-1] if calls else None
            found.append(selector)
        i += 1
    return found


def metric_names(expr: str) -> set[str]:
    return {s.name for s in selectors(expr) if s.name}


# -- Grafana's variables -------------------------------------------------------------------------
def regex_value(values: list[str]) -> str:
    """A multi-value variable as Grafana formats it for a Prometheus regex matcher."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand(expr: str, variables: Mapping[str, str]) -> str:
    """`expr` with `$name` and `${name}` replaced; an unknown variable is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"query uses ${name}, which the test does not fill in: {expr}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)
