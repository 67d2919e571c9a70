"""Plots: a function and its derivatives sampled over a range, drawn in the
terminal (uniplot) or to a file (matplotlib), or written as data.

No click here; cli.py wires it in. The drawing libraries are imported inside
the functions that draw, so that no other command pays for them at start-up
(matplotlib is an optional extra: pip install "diffcli[plot]").

Every curve comes from one vectorised evaluation: the samples (and the
tangent point, if any) are the batch axis of one `derivatives_along` call.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..api import Function, constant
from ..errors import DiffcliError, Diagnostic, UsageError
from ..graph.ops import describe
from .render import component_labels, delimited_text, format_number, to_json_value

MAX_POINTS = 1_000_000
MAX_TERMINAL_CURVES = 6  # uniplot has six colours and six ASCII marks; more would repeat
MAX_FIGURE_CURVES = 10  # matplotlib's default colour cycle
TERMINAL_COLORS = ["blue", "magenta", "green", "yellow", "cyan", "red"]
FIGURE_FORMATS = ("svg", "png", "pdf")
EXTRA_HINT = 'pip install "diffcli[plot]"'

_TARGET = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[([^\]]*)\])?\s*=(.*)$", re.S)


@dataclass(frozen=True)
class Axis:
    """The variable a plot varies: a scalar variable, or one component of a
    vector or matrix variable (index), from lo to hi."""

    name: str
    index: tuple[int, ...] | None
    lo: float
    hi: float

    @property
    def label(self) -> str:
        return self.name if self.index is None else f"{self.name}[{','.join(map(str, self.index))}]"


@dataclass
class Curve:
    order: int  # 0 for the value itself
    component: tuple[int, ...]  # index into the output; () for a scalar output
    column: str  # the CSV column, in the naming of `grad --order N`
    legend: str  # f, f', f''[0] ... (formula appended by `with_formulas`)
    y: np.ndarray


@dataclass
class Tangent:
    at: float
    value: np.ndarray  # f at the point, one entry per output component
    slope: np.ndarray

    def line(self, x: np.ndarray, component: tuple) -> np.ndarray:
        return self.value[component] + self.slope[component] * (x - self.at)

    def equations(self, axis_label: str, components: list[tuple], digits: int) -> list[str]:
        lines = []
        for c in components:
            value, slope = float(self.value[c]), float(self.slope[c])
            intercept = value - slope * self.at
            sign = "-" if intercept < 0 else "+"
            name = "f" + (f"[{','.join(map(str, c))}]" if c else "")
            at = format_number(self.at, digits)
            lines.append(f"tangent at {axis_label} = {at}: y = {format_number(slope, digits)} "
                         f"{axis_label} {sign} {format_number(abs(intercept), digits)}  "
                         f"({name}({at}) = {format_number(value, digits)}, "
                         f"{name}'({at}) = {format_number(slope, digits)})")
        return lines


@dataclass
class Samples:
    source: str
    axis: Axis
    at: dict  # the fixed variables
    x: np.ndarray
    curves: list[Curve]
    out_shape: tuple
    tangent: Tangent | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    kinks: list[Diagnostic] = field(default_factory=list)

    @property
    def components(self) -> list[tuple]:
        return list(np.ndindex(*self.out_shape))


# ---------------------------------------------------------------- reading --over and --tangent-at


def parse_over(text: str) -> Axis:
    """'x=-3:3', 'x=-pi:pi' or 'x[0]=-1:1' -> Axis."""
    name, index, rest = _split_target(text, "--over", "x=-3:3")
    bounds = rest.split(":")
    if len(bounds) != 2 or not all(b.strip() for b in bounds):
        raise UsageError(f"--over expects NAME=FROM:TO, like x=-3:3, got '{text}'")
    lo, hi = (_scalar(f"--over {name}", b) for b in bounds)
    if not lo < hi:
        raise UsageError(f"--over {name}: the range must go up, but {lo!r} is not below {hi!r}")
    width = hi - lo
    if not math.isfinite(width) or width <= 1e-9 * max(abs(lo), abs(hi)) or width < 1e-300:
        raise UsageError(f"--over {name}: the range {lo!r}:{hi!r} is too wide or too narrow to sample "
                         f"in float64")
    return Axis(name, index, lo, hi)


def parse_point(text: str) -> tuple[str, tuple[int, ...] | None, float]:
    """'x=1' or 'x[0]=0.5' -> (name, index, value), for --tangent-at."""
    name, index, rest = _split_target(text, "--tangent-at", "x=1")
    return name, index, _scalar(f"--tangent-at {name}", rest)


def parse_ylim(text: str) -> tuple[float, float]:
    """'-5:5' or '-pi:pi' -> (lo, hi), for --ylim."""
    bounds = text.split(":")
    if len(bounds) != 2 or not all(b.strip() for b in bounds):
        raise UsageError(f"--ylim expects FROM:TO, like -5:5, got '{text}'")
    lo, hi = (_scalar("--ylim", b) for b in bounds)
    if not lo < hi:
        raise UsageError(f"--ylim: the range must go up, but {lo!r} is not below {hi!r}")
    if not math.isfinite(hi - lo):
        raise UsageError(f"--ylim: the range {lo!r}:{hi!r} is too wide to draw in float64")
    return lo, hi


def _split_target(text: str, option: str, example: str):
    match = _TARGET.match(text)
    if not match or not match.group(3).strip():
        raise UsageError(f"{option} expects NAME=..., like {example}, got '{text}'")
    name, index_text, rest = match.groups()
    index = None
    if index_text is not None:
        try:
            index = tuple(int(part) for part in index_text.split(","))
        except ValueError:
            raise UsageError(f"{option}: the index of {name} must be whole numbers, like "
                             f"{name}[0] or {name}[1,2], got '[{index_text}]'") from None
    return name, index, rest


def _scalar(what: str, text: str) -> float:
    try:
        value = constant(text)
    except DiffcliError as e:
        raise UsageError(f"{what}: '{text.strip()}' is not a constant ({e.message})") from None
    if value.shape != () or not math.isfinite(float(value)):
        raise UsageError(f"{what}: '{text.strip()}' must be one finite number")
    return float(value)


# ---------------------------------------------------------------- sampling


def sample(function: Function, axis: Axis, at: dict, order: int, points: int,
           tangent_at: float | None = None) -> Samples:
    """f and its derivatives of orders 1..order along axis at `points` evenly
    spaced samples (and at tangent_at), in one vectorised evaluation."""
    if not 2 <= points <= MAX_POINTS:
        raise UsageError(f"--samples must be between 2 and {MAX_POINTS:,}, not {points:,}")
    shape = _axis_shape(function, axis, at)
    x = np.linspace(axis.lo, axis.hi, points)
    where = x if tangent_at is None else np.append(x, tangent_at)
    batch = _batch_point(axis, at, shape, where)
    direction = np.zeros(shape)
    direction[axis.index or ()] = 1.0
    result = function.derivatives_along(order, {axis.name: direction}, batch, batch_ndim=1)
    out_shape = result.value.shape[1:]
    columns = [result.value] + [result[k] for k in range(1, order + 1)]
    if not any(np.isfinite(np.asarray(c)[:points]).any() for c in columns):
        raise UsageError(f"nothing to draw: the expression is not finite anywhere on "
                         f"{axis.label}={axis.lo!r}:{axis.hi!r}")
    samples = Samples(function.source, axis, dict(at), x, [], out_shape,
                      diagnostics=result.diagnostics, kinks=result.kinks)
    for k, array in enumerate(columns):
        for c in samples.components:
            samples.curves.append(Curve(k, c, _column(k, c, out_shape, axis), _legend(k, c),
                                        array[(slice(0, points),) + c]))
    if tangent_at is not None:
        samples.tangent = _tangent(tangent_at, columns[0][-1], columns[1][-1], axis)
    return samples


def _axis_shape(function: Function, axis: Axis, at: dict) -> tuple:
    name = axis.name
    if name not in function.variables:
        known = ", ".join(function.variables) or "none"
        raise UsageError(f"--over {name}: '{name}' is not a variable of the expression (variables: {known})")
    shape = np.shape(at[name]) if name in at else ()
    if axis.index is None:
        if name in at:
            what = describe(shape)
            hint = (f"; to vary one of its components, write --over '{name}[0]=...' and keep "
                    f"--at {name}=[...] for the rest") if shape else ""
            raise UsageError(f"{name} is varied by --over, so it cannot also be fixed with --at "
                             f"(here {what}){hint}")
        return ()
    if not shape:
        given = "it is a scalar" if name in at else f"give its value with --at {name}=[...]"
        raise UsageError(f"--over {axis.label}: an index needs a vector or matrix variable; {given} "
                         f"(a scalar is varied with --over {name}=FROM:TO)")
    if len(axis.index) != len(shape) or not all(-n <= i < n for i, n in zip(axis.index, shape)):
        raise UsageError(f"--over {axis.label}: no such component of {name}, which is {describe(shape)}")
    return shape


def _batch_point(axis: Axis, at: dict, shape: tuple, where: np.ndarray) -> dict:
    """Every variable with the samples as a leading batch axis: the varied one
    (or its component) takes the sample values; the others are fixed."""
    n = len(where)
    batch = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,) + np.shape(v)) for k, v in at.items()}
    if axis.index is None:
        batch[axis.name] = where
    else:
        varied = np.array(batch[axis.name])
        varied[(slice(None),) + axis.index] = where
        batch[axis.name] = varied
    return batch


def _column(order: int, component: tuple, out_shape: tuple, axis: Axis) -> str:
    out = component_labels("value", out_shape)[_flat(component, out_shape)] if out_shape else ""
    if order == 0:
        return out or "value"
    return f"d{order if order > 1 else ''}{out}/" + f"d{axis.label}" * order


def _flat(component: tuple, shape: tuple) -> int:
    return int(np.ravel_multi_index(component, shape)) if shape else 0


def _legend(order: int, component: tuple) -> str:
    name = "f" + (f"[{','.join(map(str, component))}]" if component else "")
    return name + ("'" * order if order <= 3 else f"^({order})")


def _tangent(at: float, value: np.ndarray, slope: np.ndarray, axis: Axis) -> Tangent:
    if not np.all(np.isfinite(value)) or not np.all(np.isfinite(slope)):
        raise UsageError(f"--tangent-at {axis.label}={at!r}: the function or its derivative is not "
                         f"finite there (value {value.tolist()}, derivative {slope.tolist()})")
    return Tangent(at, np.asarray(value), np.asarray(slope))


def with_formulas(samples: Samples, function: Function, width: int) -> None:
    """Append '= formula' to the legends where it is short enough to read:
    the source for f, and `--symbolic`'s formula for each derivative (only
    for a scalar output of a scalar variable, where one formula is one curve)."""
    if samples.out_shape or samples.axis.index is not None:
        return
    orders = max(c.order for c in samples.curves)
    texts = [" ".join(samples.source.split())]
    shapes = {k: np.shape(v) for k, v in samples.at.items()}
    for k in range(1, orders + 1):
        formulas = function.formulas("derivative", shapes, wrt=[samples.axis.name], order=k)
        texts.append(formulas[samples.axis.name])
    for curve, text in zip(samples.curves, texts):
        if len(text) <= width and ";" not in text:  # let-bindings read badly in a legend
            curve.legend = f"{curve.legend}({samples.axis.name}) = {text}"


# ---------------------------------------------------------------- poles and the visible window


def window(samples: Samples) -> tuple[float, float]:
    """The y range to show: the union of each curve's range, with a margin.
    A pole (tan, 1/x) sends a few samples towards infinity and would flatten
    everything else into a line, so a curve with samples far outside its
    quartiles (beyond Tukey's fences at 20 interquartile ranges: ordinary
    growth such as x^5 or exp stays inside them) is shown only up to the
    fences at 3 interquartile ranges. A tangent line is clipped to the range
    of the curves: it is there to be read near its point."""
    ys = [c.y for c in samples.curves]
    ranges = [_curve_range(y[np.isfinite(y)]) for y in ys]
    ranges = [r for r in ranges if r is not None]
    if not ranges:
        return -1.0, 1.0
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    if hi - lo < 1e-12 * max(1.0, abs(hi)):  # a constant: give it some room
        lo, hi = lo - 1.0, hi + 1.0
    margin = 0.05 * (hi - lo)
    return lo - margin, hi + margin


def _curve_range(values: np.ndarray) -> tuple[float, float] | None:
    if values.size == 0:
        return None
    q1, q3 = np.percentile(values, [25, 75])
    spread = q3 - q1
    low, high = float(values.min()), float(values.max())
    if low >= q1 - 20 * spread and high <= q3 + 20 * spread:
        return low, high
    return max(low, q1 - 3 * spread), min(high, q3 + 3 * spread)


def broken(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """x and y with NaN wherever the line must not be drawn: at non-finite
    samples, and between two samples where it would leave the window at the
    top and come back at the bottom (or the reverse) in one step. A curve
    that crosses the whole visible range between neighbouring samples is a
    pole, not a slope anyone could read, and joining the two sides would draw
    a false vertical line."""
    y = np.where(np.isfinite(y), y, np.nan)
    with np.errstate(invalid="ignore"):
        jumps = np.flatnonzero(((y[:-1] > hi) & (y[1:] < lo)) | ((y[:-1] < lo) & (y[1:] > hi)))
    if jumps.size == 0:
        return x, y
    middle = (x[jumps] + x[jumps + 1]) / 2
    return np.insert(x, jumps + 1, middle), np.insert(y, jumps + 1, np.nan)


def clipped(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The curve cut to the window lo <= y <= hi: each segment between two
    samples is cut where it crosses the window's top or bottom, and a NaN ends
    each visible piece. For a drawing library that walks every pixel of each
    segment it is given (uniplot does: one segment of tan's derivative from
    y = 1.4e7 took an array of 92 x 14,501,624 pixels), so that its work and
    memory are bounded by the samples and the plot's size, never by the y
    range. As in `broken`, a segment with a non-finite end is a gap, and so is
    one that crosses the whole window in one step (a pole)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x0, x1, y0, y1 = x[:-1], x[1:], y[:-1], y[1:]
    with np.errstate(all="ignore"):
        finite = np.isfinite(y0) & np.isfinite(y1)
        pole = ((y0 > hi) & (y1 < lo)) | ((y0 < lo) & (y1 > hi))
        dy = y1 - y0
        flat = dy == 0
        t_lo = np.where(flat, -np.inf, (lo - y0) / dy)
        t_hi = np.where(flat, np.inf, (hi - y0) / dy)
        t_start = np.maximum(0.0, np.minimum(t_lo, t_hi))
        t_end = np.minimum(1.0, np.maximum(t_lo, t_hi))
        visible = finite & ~pole & (t_start <= t_end) & (~flat | ((y0 >= lo) & (y0 <= hi)))
    # A piece goes on through the next segment when that one starts where this one ends.
    goes_on = np.zeros(len(visible), dtype=bool)
    goes_on[:-1] = visible[:-1] & (t_end[:-1] == 1.0) & visible[1:] & (t_start[1:] == 0.0)
    chosen = np.flatnonzero(visible)
    last = ~goes_on[chosen]  # these write their end point and a NaN after their start
    counts = np.where(last, 3, 1)
    starts = np.cumsum(counts) - counts
    out_x = np.full(int(counts.sum()), np.nan)
    out_y = np.full(len(out_x), np.nan)

    def at(t, i):  # the point at t along segment i; its samples exactly at t = 0 and 1
        with np.errstate(all="ignore"):
            inside_x = x0[i] + t * (x1[i] - x0[i])
            inside_y = y0[i] + t * dy[i]
        return (np.where(t == 0, x0[i], np.where(t == 1, x1[i], inside_x)),
                np.where(t == 0, y0[i], np.where(t == 1, y1[i], np.clip(inside_y, lo, hi))))
    out_x[starts], out_y[starts] = at(t_start[chosen], chosen)
    ends = chosen[last]
    out_x[starts[last] + 1], out_y[starts[last] + 1] = at(t_end[ends], ends)
    return out_x, out_y


# ---------------------------------------------------------------- the terminal


def terminal_plot(samples: Samples, width: int, height: int, color: bool,
                  ylim: tuple[float, float] | None = None) -> str:
    """The plot as text of at most width x height characters: with colour, in
    block characters, one colour per curve; without, in ASCII, one mark per
    curve (+ x o * ~ .), so the curves stay apart in black and white. The y
    range is ylim, else `window`'s; each curve is cut to it (`clipped`)."""
    try:
        from uniplot import plot_to_string
    except ImportError:  # pragma: no cover - a runtime dependency
        raise UsageError("the terminal plot needs uniplot: pip install uniplot") from None
    series = _series(samples, MAX_TERMINAL_CURVES, "the terminal plot")
    lo, hi = ylim or window(samples)
    xs, ys, labels, missing = [], [], [], []
    for label, y in series:
        bx, by = clipped(samples.x, y, lo, hi)
        if not np.isfinite(by).any():  # uniplot cannot draw an empty series; say so instead
            why = "outside this window" if np.isfinite(y).any() else "not finite anywhere in this window"
            missing.append(f"{label}: {why}")
            continue
        xs.append(bx)
        ys.append(by)
        labels.append(_shorten(label, max(16, width // 2 - 6)))  # two to a line
    options = dict(lines=True, legend_labels=labels, x_min=samples.axis.lo, x_max=samples.axis.hi,
                   y_min=lo, y_max=hi, line_length_hard_cap=width,
                   color=TERMINAL_COLORS[:len(ys)] if color else False,
                   character_set="block" if color else "ascii")
    # Frame, x labels and legend take the lines the plotting area does not;
    # the legend may wrap, so measure once and give back any excess.
    rows = max(3, height - 4)
    text = plot_to_string(ys, xs, width=max(10, width - 2), height=rows, **options)
    excess = len(text.splitlines()) - height + len(missing)
    if excess > 0:
        text = plot_to_string(ys, xs, width=max(10, width - 2), height=max(3, rows - excess), **options)
    notes = "".join(f"\n{note}" for note in missing)
    return text + notes


def _series(samples: Samples, limit: int, what: str) -> list[tuple[str, np.ndarray]]:
    series = [(c.legend, c.y) for c in samples.curves]
    if samples.tangent is not None:
        at = format_number(samples.tangent.at, 6)
        for c in samples.components:
            name = f" to f[{','.join(map(str, c))}]" if c else ""
            series.append((f"tangent{name} at {samples.axis.label} = {at}",
                           samples.tangent.line(samples.x, c)))
    if len(series) > limit:
        raise UsageError(f"{what} draws at most {limit} curves, but this one has {len(series)} "
                         f"({len(samples.components)} output component(s) x "
                         f"{len(samples.curves) // len(samples.components)} orders"
                         f"{' + tangents' if samples.tangent is not None else ''}): lower --order, plot "
                         f"one component by indexing the expression, like '(...)[0]', or write the "
                         f"data with --format csv")
    return series


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# ---------------------------------------------------------------- a figure file (matplotlib)


def figure_format(path: str) -> str:
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in FIGURE_FORMATS:
        raise UsageError(f"--output {path}: the file name must end in .svg, .png or .pdf")
    return suffix


def write_figure(samples: Samples, path: str, *, width_inches: float = 7.0, height_inches: float = 4.4,
                 dpi: int = 150, ylim: tuple[float, float] | None = None) -> None:
    """A publication-quality figure: axes labelled, one line per curve (each
    tagged gid='curve-N' in SVG), the tangent dashed, poles as gaps."""
    fmt = figure_format(path)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(f"--output needs matplotlib, an optional extra: {EXTRA_HINT}") from None
    series = _series(samples, MAX_FIGURE_CURVES, "a figure")
    lo, hi = ylim or window(samples)
    figure = Figure(figsize=(width_inches, height_inches), dpi=dpi, layout="constrained")
    axes = figure.add_subplot()
    curve_count = len(samples.curves)
    for i, (label, y) in enumerate(series):
        bx, by = broken(samples.x, y, lo, hi)
        tangent = i >= curve_count
        (line,) = axes.plot(bx, by, label=_shorten(label, 70), linewidth=1.0 if tangent else 1.6,
                            linestyle="--" if tangent else "-", color="0.45" if tangent else None)
        line.set_gid(f"tangent-{i - curve_count}" if tangent else f"curve-{i}")
    if samples.tangent is not None:
        t = samples.tangent
        axes.plot([t.at] * len(samples.components), [t.value[c] for c in samples.components], "o",
                  color="0.3", markersize=4)
    axes.set_xlim(samples.axis.lo, samples.axis.hi)
    axes.set_ylim(lo, hi)
    axes.axhline(0, color="0.8", linewidth=0.8, zorder=0)
    axes.set_xlabel(samples.axis.label)
    axes.set_ylabel("f and its derivatives" if curve_count > len(samples.components) else "f")
    axes.set_title(_shorten(" ".join(samples.source.split()), 80), fontsize="medium")
    axes.grid(True, linewidth=0.4, alpha=0.5)
    axes.legend(fontsize="small", loc="best")
    try:
        figure.savefig(path, format=fmt, metadata=_reproducible(fmt))
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def _reproducible(fmt: str) -> dict:
    # No creation date, so the same plot gives the same file (and a clean diff).
    return {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}[fmt]


# ---------------------------------------------------------------- the data


def data_columns(samples: Samples) -> tuple[list[str], np.ndarray]:
    labels = [samples.axis.label] + [c.column for c in samples.curves]
    return labels, np.column_stack([samples.x] + [c.y for c in samples.curves])


def csv_text(samples: Samples) -> str:
    """x, value, d/dx, d2/dxdx, ... one sample per row (column names as in
    `grad --order N --csv`); non-finite numbers as nan, inf, -inf."""
    return delimited_text(*data_columns(samples))


def _per_order(samples: Samples) -> list[np.ndarray]:
    """The value and each derivative as one array of shape (samples,) + output shape."""
    orders = max(c.order for c in samples.curves)
    n = len(samples.x)
    return [np.column_stack([c.y for c in samples.curves if c.order == k]).reshape((n,) + samples.out_shape)
            for k in range(orders + 1)]


def json_text(samples: Samples) -> str:
    """One document, columns as arrays: x, value and derivatives[k-1] for
    order k (per sample; a list per sample for a vector output)."""
    n = len(samples.x)
    per_order = _per_order(samples)
    doc = {"expression": samples.source,
           "over": {"variable": samples.axis.label, "from": samples.axis.lo, "to": samples.axis.hi,
                    "samples": n},
           "at": {k: to_json_value(v) for k, v in samples.at.items()},
           "x": to_json_value(samples.x),
           "value": to_json_value(per_order[0]),
           "derivatives": [to_json_value(d) for d in per_order[1:]]}
    if samples.tangent is not None:
        t = samples.tangent
        doc["tangent"] = {"at": t.at, "value": to_json_value(t.value), "slope": to_json_value(t.slope),
                          "intercept": to_json_value(t.value - t.slope * t.at)}
    return json.dumps(doc, allow_nan=False) + "\n"


def ndjson_pieces(samples: Samples, per_piece: int = 4096):
    """One object per sample, with the keys of the JSON document's columns:
    {"x": ..., "value": ..., "derivatives": [f', f'', ...]}, null where a
    number is not finite; a few thousand lines per piece of text."""
    per_order = _per_order(samples)
    for start in range(0, len(samples.x), per_piece):
        stop = start + per_piece
        xs = to_json_value(samples.x[start:stop])
        values = to_json_value(per_order[0][start:stop])
        derivatives = [to_json_value(d[start:stop]) for d in per_order[1:]]
        yield "".join(json.dumps({"x": x, "value": v, "derivatives": list(d)}) + "\n"
                      for x, v, *d in zip(xs, values, *derivatives))


def has_nonfinite(samples: Samples) -> bool:
    return not all(np.all(np.isfinite(c.y)) for c in samples.curves)


