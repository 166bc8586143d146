"""`/metrics` in the Prometheus text format (0.0.4), rendered on the event loop in a few ms.

prometheus-client's `generate_latest` builds every sample twice over (a `Sample` per child,
then one per series with its labels merged into a new dict, then a `Metric` that copies them)
and validates and escapes every label of every sample on every scrape: with 100 rooms, about
1,000 lines, that is 5-10 ms of CPU while deliveries wait. `TextExposition` writes the same
lines, in the same order, with less work:

- the service's own metrics (prometheus-client `Counter`, `Gauge` and `Histogram` objects) are
  read child by child, the way their own `collect()` reads them, without the merging;
- a series' `name{labels} ` prefix is rendered the first time it is seen and reused while the
  series exists (each render keeps only the prefixes it used, so the cache never outgrows the
  series exported now), and so is the text of recent values (most are small whole numbers);
- other collectors (process, platform, garbage collector, the room members collector) go
  through their own `collect()`.

`tests/test_telemetry.py` compares the output with `generate_latest`'s line for line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_VALUE_MEMO_SIZE: Final = 4096  # texts of values kept between renders, at most


class ChatRegistry(CollectorRegistry):
    """A registry that keeps its collectors in registration order for `TextExposition`
    (`generate_latest` writes them in that order)."""

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self.collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self.collectors.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self.collectors.remove(collector)


# The wrappers read child by child: exactly these classes, whose `_child_samples` is theirs.
_DIRECT: Final = frozenset({Counter, Gauge, Histogram})


class TextExposition:
    """The text format of `registry`, line for line what `generate_latest` writes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._prefixes: dict[tuple[Any, ...], str] = {}
        self._values: dict[float, str] = {}

    def render(self) -> bytes:
        previous = self._prefixes
        current: dict[tuple[Any, ...], str] = {}
        values = self._values
        if len(values) > _VALUE_MEMO_SIZE:
            values.clear()
        lines: list[str] = []
        add = lines.append
        collectors = getattr(self.registry, "collectors", None)
        for collector in collectors if collectors is not None else (self.registry,):
            if type(collector) in _DIRECT:
                _render_wrapper(collector, previous, current, values, add)
                continue
            for metric in collector.collect():
                name, kind = metric.name, metric.type
                if kind == "counter":
                    name += "_total"
                elif kind == "unknown":
                    kind = "untyped"
                add(f"# HELP {name} {_escape_help(metric.documentation)}\n# TYPE {name} {kind}\n")
                for sample in metric.samples:
                    key = (sample.name, *sample.labels.values())
                    prefix = previous.get(key) or _series_prefix(sample.name, sample.labels)
                    current[key] = prefix
                    add(f"{prefix}{_value_text(sample.value, values)}\n")
        self._prefixes = current
        return "".join(lines).encode()


def _render_wrapper(
    wrapper: Any,
    previous: dict[tuple[Any, ...], str],
    current: dict[tuple[Any, ...], str],
    values: dict[float, str],
    add: Callable[[str], None],
) -> None:
    """A Counter, Gauge or Histogram: the lines its `collect()` would give, read child by child."""
    name, kind = wrapper._name, wrapper._type
    family = name + "_total" if kind == "counter" else name
    add(f"# HELP {family} {_escape_help(wrapper._documentation)}\n# TYPE {family} {kind}\n")
    labelnames = wrapper._labelnames
    if labelnames:
        with wrapper._lock:
            children = list(wrapper._metrics.items())
    else:
        children = [((), wrapper)]

    def line(suffix: str, labelvalues: tuple[str, ...], value: float, le: str = "") -> None:
        key = (suffix, name, labelvalues, le)
        prefix = previous.get(key)
        if prefix is None:
            labels = dict(zip(labelnames, labelvalues, strict=True))
            if le:
                labels["le"] = le
            prefix = _series_prefix(name + suffix, labels)
        current[key] = prefix
        add(f"{prefix}{_value_text(value, values)}\n")

    for labelvalues, child in children:
        if kind == "counter":
            line("_total", labelvalues, _read(child._value))
        elif kind == "histogram" and type(child) is Histogram:
            count = 0.0
            for bound, bucket in zip(child._upper_bounds, child._buckets, strict=True):
                count += _read(bucket)
                line("_bucket", labelvalues, count, _value_text(bound, values))
            line("_count", labelvalues, count)
            if child._upper_bounds[0] >= 0:
                line("_sum", labelvalues, _read(child._sum))
        elif kind == "gauge" and "_child_samples" not in vars(child):  # not set_function's
            line("", labelvalues, _read(child._value))
        else:
            for suffix, sample_labels, value, *_ in child._child_samples():
                line(suffix, labelvalues, value, sample_labels.get("le", ""))


def _read(holder: Any) -> float:
    """A value's float without its lock: the lock guards read-modify-write, and reading one
    attribute is atomic. Under eventlet and gevent every value's lock is a green lock, and
    taking a thousand of them was half a scrape's time. (Another value class: its `get()`.)"""
    raw = getattr(holder, "_value", None)
    return raw if type(raw) is float else float(holder.get())


def _value_text(value: float, memo: dict[float, str]) -> str:
    text = memo.get(value)
    if text is None:
        text = memo[value] = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _series_prefix(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name + " "
    pairs = ",".join(
        f'{key}="{_escape_label_value(value)}"' for key, value in sorted(labels.items())
    )
    return f"{name}{{{pairs}}} "


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
