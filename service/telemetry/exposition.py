"""`/metrics` in the Prometheus text format (0.0.4), rendered on the event loop in a few ms.

prometheus-client's `generate_latest` builds every sample twice over (a `Sample` per child,
then one per series with its labels merged into a new dict, then a `Metric` that copies them)
and validates and escapes every label of every sample on every scrape: with 100 rooms, about
1,000 lines, that is 5-10 ms of CPU while deliveries wait. `TextExposition` writes the same
lines, in the same order, with less work:

- the service's own metrics (prometheus-client `Counter`, `Gauge` and `Histogram` objects) are
  read child by child, the way their own `collect()` reads them, without the merging;
- a child whose values have not changed since the last render gives the very text it gave
  then (a histogram child's lines included: most children do not move between two scrapes);
- a series' `name{labels} ` prefix is rendered the first time it is seen and reused while the
  series exists, and so is the text of recent values (most are small whole numbers). Each
  render keeps only what it used, so the caches never outgrow the series exported now;
- a collector that offers `text_series()` (the room members collector) gives its samples as
  plain pairs, rendered the same way; other collectors (process, platform, garbage
  collector) go through their own `collect()`;
- under eventlet and gevent a render gives the event loop a turn after each millisecond
  of its work (between two collectors), so a scrape holds no delivery up for longer.

`tests/test_telemetry.py` compares the output with `generate_latest`'s line for line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from math import copysign
from operator import attrgetter
from time import perf_counter
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_VALUE_MEMO_SIZE: Final = 4096  # texts of values kept between renders, at most
PAUSE_AFTER_S: Final = 0.001  # of rendering, before the event loop gets a turn
# prometheus-client's value class outside multiprocess mode: its float is `_value`, read
# without the lock (see `_read`) and, for a histogram's buckets, all at once with `map`.
_PLAIN_VALUES: Final = values.ValueClass is values.MutexValue
_VALUE: Final = attrgetter("_value")


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

    def __init__(
        self, registry: CollectorRegistry, pause: Callable[[], None] | None = None
    ) -> None:
        self.registry = registry
        # Under eventlet or gevent, a render lets the loop run every `PAUSE_AFTER_S` of its
        # work (between two collectors): a scrape delays a delivery by at most that much.
        self.pause = pause
        self._prefixes: dict[tuple[Any, ...], str] = {}
        self._values: dict[float, str] = {}
        self._children: dict[tuple[str, tuple[str, ...]], tuple[tuple[float, ...], str]] = {}

    def render(self) -> bytes:
        previous = self._prefixes
        current: dict[tuple[Any, ...], str] = {}
        values = self._values
        if len(values) > _VALUE_MEMO_SIZE:
            values.clear()
        cache = _ChildCache(self._children, previous, current, values)
        lines: list[str] = []
        add = lines.append
        collectors = getattr(self.registry, "collectors", None)
        pause = self.pause
        slice_started = perf_counter()
        for collector in collectors if collectors is not None else (self.registry,):
            if pause is not None and perf_counter() - slice_started > PAUSE_AFTER_S:
                pause()  # other renders may run meanwhile: they only read the shared caches
                slice_started = perf_counter()
            if type(collector) in _DIRECT:
                _render_wrapper(collector, cache, add)
                continue
            text_series = getattr(collector, "text_series", None)
            if text_series is not None:
                _render_series(text_series(), cache, add)
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
        self._children = cache.current
        return "".join(lines).encode()


class _ChildCache:
    """One render's view of the caches: what the last render left, what this one keeps."""

    __slots__ = ("current", "prefixes", "previous", "used_prefixes", "values")

    def __init__(
        self,
        previous: dict[tuple[str, tuple[str, ...]], tuple[tuple[float, ...], str]],
        prefixes: dict[tuple[Any, ...], str],
        used_prefixes: dict[tuple[Any, ...], str],
        values: dict[float, str],
    ) -> None:
        self.previous = previous
        self.current: dict[tuple[str, tuple[str, ...]], tuple[tuple[float, ...], str]] = {}
        self.prefixes, self.used_prefixes, self.values = prefixes, used_prefixes, values

    def line(
        self,
        name: str,
        labelnames: tuple[str, ...],
        suffix: str,
        labelvalues: tuple[str, ...],
        value: float,
        le: str = "",
    ) -> str:
        key = (suffix, name, labelvalues, le)
        prefix = self.prefixes.get(key)
        if prefix is None:
            labels = dict(zip(labelnames, labelvalues, strict=True))
            if le:
                labels["le"] = le
            prefix = _series_prefix(name + suffix, labels)
        self.used_prefixes[key] = prefix
        return f"{prefix}{_value_text(value, self.values)}\n"


def _render_series(
    series: tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]],
    cache: _ChildCache,
    add: Callable[[str], None],
) -> None:
    """A gauge family given as `(name, help, labelnames, [(labelvalues, value)])`, the samples
    in the order to write them."""
    name, documentation, labelnames, samples = series
    add(f"# HELP {name} {_escape_help(documentation)}\n# TYPE {name} gauge\n")
    previous, current = cache.previous.get, cache.current
    for labelvalues, value in samples:  # counts: never -0.0
        key = (name, labelvalues)
        state = (value,)
        cached = previous(key)
        if cached is not None and cached[0] == state:
            text = cached[1]
        else:
            text = cache.line(name, labelnames, "", labelvalues, value)
        current[key] = (state, text)
        add(text)


def _render_wrapper(wrapper: Any, cache: _ChildCache, add: Callable[[str], None]) -> None:
    """A Counter, Gauge or Histogram: the lines its `collect()` would give, read child by child.
    A child whose values are those of the last render gives the text it gave then."""
    name, kind = wrapper._name, wrapper._type
    family = name + "_total" if kind == "counter" else name
    add(f"# HELP {family} {_escape_help(wrapper._documentation)}\n# TYPE {family} {kind}\n")
    labelnames = wrapper._labelnames
    if labelnames:
        with wrapper._lock:
            children = list(wrapper._metrics.items())
    else:
        children = [((), wrapper)]
    line, previous, current = cache.line, cache.previous.get, cache.current
    histogram = kind == "histogram"
    suffix = "_total" if kind == "counter" else ""
    value_of = _VALUE if _PLAIN_VALUES else _read

    for labelvalues, child in children:
        key = (name, labelvalues)
        cached = previous(key)
        if histogram and type(child) is Histogram:
            counts = tuple(map(value_of, child._buckets))
            total = value_of(child._sum)
            state: tuple[float, ...] = (*counts, total)
            if cached is not None and cached[0] == state:  # counts and sums are never -0.0
                text = cached[1]
            else:
                text = _histogram_text(child, cache, name, labelnames, labelvalues, counts, total)
        elif not histogram and "_child_samples" not in vars(child):  # not a gauge's function
            value = value_of(child._value)
            # A gauge set to -0.0 equals 0.0 but is written "-0.0": the sign is in the state.
            state = (value, copysign(1.0, value)) if value == 0.0 else (value,)
            if cached is not None and cached[0] == state:
                text = cached[1]
            else:
                text = line(name, labelnames, suffix, labelvalues, value)
        else:  # a gauge's function, or another kind: read afresh every time
            for sample_suffix, sample_labels, value, *_ in child._child_samples():
                le = sample_labels.get("le", "")
                add(line(name, labelnames, sample_suffix, labelvalues, value, le))
            continue
        current[key] = (state, text)
        add(text)


def _histogram_text(
    child: Any,
    cache: _ChildCache,
    name: str,
    labelnames: tuple[str, ...],
    labelvalues: tuple[str, ...],
    counts: tuple[float, ...],
    total: float,
) -> str:
    lines = []
    count = 0.0
    for bound, bucket in zip(child._upper_bounds, counts, strict=True):
        count += bucket
        le = _value_text(bound, cache.values)
        lines.append(cache.line(name, labelnames, "_bucket", labelvalues, count, le))
    lines.append(cache.line(name, labelnames, "_count", labelvalues, count))
    if child._upper_bounds[0] >= 0:
        lines.append(cache.line(name, labelnames, "_sum", labelvalues, total))
    return "".join(lines)


def _read(holder: Any) -> float:
    """A value's float without its lock: the lock guards read-modify-write, and reading one
    attribute is atomic. Under eventlet and gevent every value's lock is a green lock, and
    taking a thousand of them was half a scrape's time. (Another value class: its `get()`.)"""
    raw = getattr(holder, "_value", None)
    return raw if type(raw) is float else float(holder.get())


def _value_text(value: float, memo: dict[float, str]) -> str:
    if value == 0.0 and copysign(1.0, value) < 0:  # -0.0: equal to 0.0 as a memo key
        return floatToGoString(value)  # type: ignore[no-any-return,no-untyped-call]
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
