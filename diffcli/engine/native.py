"""Fused C loops for the arithmetic of big batches, built with the machine's C compiler.

A plan spends most of a big batch in arithmetic ufuncs run one after another,
each a pass over memory at about 1.3 ns per entry and operation: the 35 steps of
T2 cost about 40 ns per point that way, though the arithmetic is a few
instructions, and every call hands the GIL over between threads.

Here a plan is regrouped into levels. The operations whose C result is exactly
the number the ufunc gives (+ - * /, negation, sqrt, abs, floor, ceil, x^2, 1/x,
comparisons, where, the zero-dominant cmul and cdiv: each one correctly
rounded IEEE operation, or a choice between such results; and sin and cos
where NumPy itself calls the C library for them, which `_agreed` checks) run in
one C loop per level and value shape, which keeps intermediates in registers
and writes out only what others read. Everything else (exp, log, tanh, pow,
sums, indexing, ...) stays the very NumPy kernel the plain plan calls, between
the loops; scatter_sum of vector windows is a C pass making the same additions
in the same order. So every number is the plain plan's, bit for bit (a NaN's
sign bit aside: the compiler may swap the operands of a commutative operation,
and x86 passes on the first operand's NaN). NumPy's own SIMD exp or log are not
replaced by the C library's, whose last bits differ. (FMA contraction is off,
nothing is compiled with -ffast-math: the compiler may vectorise, not reassociate.)

The C text is generated from the operations' C expressions (their records' c in
ops.py), shapes and slot
numbers, nothing else: constants reach it as an array at run time, and no user
text ever does. cbuild.py compiles it once per machine and plan shape (cached on
disk, privately, each library checked before it is loaded), in a background
thread: a batch that arrives before its loops are built runs the plain steps
instead; a batch big enough to amortise a compile (or any, with
DIFFCLI_NATIVE=wait) waits for it. Without a C compiler, with a failed build, or
with DIFFCLI_NATIVE=0, plans run their plain steps.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from pathlib import Path

import numpy as np

from . import cbuild
from .. import switches
from ..graph.ops import OPS



def library_functions() -> tuple[str, ...]:
    """The operations whose C expression is a function of the C library (their
    record's c is not exact): NumPy calls it for float64 on some machines and
    replaces it by its own SIMD code (whose last bits differ) on others, so it is
    used in a loop only where a probe finds NumPy's results the C library's
    (`_agreed`)."""
    return tuple(name for name, op in OPS.items() if op.c is not None and not op.c.exact)


def _c_of(node):
    op = OPS.get(node.op)  # (None for an input or a constant)
    return op.c if op is not None else None


def _template(node) -> str | None:
    """The node's C expression over {a}, {b}, {c}, if its operation has one for it."""
    c = _c_of(node)
    if c is None:
        return None
    return c.expression(node) if callable(c.expression) else c.expression

PRELUDE = """\
#include <math.h>
#include <stddef.h>
/* ops.py's zero-dominant product and quotient: 0 where the result is not finite
   and a (either) operand is 0. */
static inline double cmul(double a, double b) {
    double r = a * b;
    return (!isfinite(r) && (a == 0.0 || b == 0.0)) ? 0.0 : r;
}
static inline double cdiv(double a, double b) {
    double r = a / b;
    return (!isfinite(r) && a == 0.0) ? 0.0 : r;
}
"""

# Rough costs on the machine class this was measured on, for deciding whether a
# batch waits for its loops: a plain NumPy step costs about 1.5 ns per entry; a
# build (probe included, in an empty cache) about 0.3 s plus 0.6 ms per step.
PLAIN_SECONDS_PER_OPERATION = 1.5e-9
BUILD_SECONDS = 0.3
BUILD_SECONDS_PER_STEP = 0.6e-3
# A plan whose loop would hold more operations than this keeps its plain steps:
# gcc -O3 takes 0.17 s for 215 operations in one function, 0.95 s for 1,092 and
# 9 s for 4,309, and cutting a loop into parts in plan order made big gradient
# plans 2x slower than the plain steps (each term's forward values crossed into
# the parts computing its derivatives, hundreds of arrays per point: found by
# review). Cutting it well is a partitioning problem not solved here.
LOOP_NODES = 1024
MAX_FUSED = 4096


def mode() -> str:
    """DIFFCLI_NATIVE: "off" (0, off, false, no), "wait", or "on" (the default)."""
    value = switches.setting("native")
    if value in switches.OFF:
        return "off"
    return "wait" if value == "wait" else "on"


def enabled() -> bool:
    return mode() != "off"


def patience(work: int, steps: int) -> float | None:
    """How long a batch of `work` element operations on a plan of `steps` steps
    waits for its loops to be ready (None: until they are). It waits for a whole
    build when its plain steps would take three times as long as one, or always
    with DIFFCLI_NATIVE=wait; else only long enough to load a build from the
    cache (at most half its plain time), and runs the plain steps if that fails."""
    plain = work * PLAIN_SECONDS_PER_OPERATION
    if mode() == "wait" or plain > 3 * (BUILD_SECONDS + steps * BUILD_SECONDS_PER_STEP):
        return None
    return min(plain / 2, 0.05)


# ---------------------------------------------------------------- the plan in loops and steps


class Loop:
    """One fused C loop over every entry of values of one shape: reads the slots
    `reads` (each "full": an array of that shape, or "point": one number per
    point), writes the slots `writes`. Nested (an outer loop over rows of
    `width` entries, each read with its own row stride) when some operand is a
    view into rows of a wider array (x[1:]) or one number per point; else flat."""

    __slots__ = ("name", "shape", "nodes", "reads", "kinds", "writes", "nested", "width", "function")

    def __init__(self, name: str, shape: tuple):
        self.name = name
        self.shape = shape
        self.nodes: list = []
        self.reads: list[int] = []
        self.kinds: list[str] = []
        self.writes: list[int] = []
        self.nested = False
        self.width = 1
        self.function = None


class Scatter:
    """ops' scatter_sum of a vector's cotangent from windows of it (x[1:],
    x[:-1], x[3]) as one C pass per row instead of NumPy's row-by-row strided
    adds: the same additions in the same order for every entry (the first
    window's value + 0.0, then each later window's added), 0.0 where none reaches."""

    __slots__ = ("name", "node", "windows", "reads", "writes", "function")

    def __init__(self, name: str, node, windows: list[tuple[int, int]], slot):
        self.name = name
        self.node = node
        self.windows = windows  # (first entry, width) per argument
        self.reads = [slot[a.id] for a in node.args]
        self.writes = [slot[node.id]]
        self.function = None


def _scatter_windows(node) -> list[tuple[int, int]] | None:
    """(first entry, width) of each part of a scatter_sum into a vector, when
    every part is a unit-step slice or a single entry; else None."""
    parts, shape = node.attr
    if node.op != "scatter_sum" or len(shape) != 1:
        return None
    windows = []
    for items in parts:
        if len(items) != 1:
            return None
        item = items[0]
        if isinstance(item, int):
            windows.append((range(shape[0])[item], 1))
            continue
        if item[2] not in (None, 1):
            return None
        found = range(shape[0])[slice(*item)]
        windows.append((found.start, len(found)))
    return windows


class Fusion:
    """A plan's steps regrouped: loops of fused exact arithmetic, and the NumPy
    steps between them. `fusion_of` says whether a plan qualifies; the regrouping
    and the kernels are made by `ready`, in the background."""

    def __init__(self, plan):
        self.plan = plan
        self.actions = None  # (Loop or plain step, slots released after it), once built
        self.constants = None  # float64 array: a loop reads constant j as k[j]
        self.failed = False
        self.error = ""
        self._building = None
        self._lock = threading.Lock()
        self._input_shapes = [None if s is None else n.shape for n, s in zip(plan.inputs, plan.input_slots)]
        _fusions.add(self)

    def ready(self, patience: float | None) -> bool:
        """Whether the loops are built; starts building them (once) if not, and
        waits up to `patience` seconds (None: until done) for that. A build
        thread that is gone without a result (the process forked while it ran,
        or another process is building the same library) is started again."""
        if self.actions is not None:
            return True
        if self.failed:
            return False
        with self._lock:
            if self._building is None or not (self._building.is_alive() or self.actions is not None or self.failed):
                self._building = cbuild.in_background(self._build, "diffcli-compile")
            building = self._building
        building.join(patience)
        return self.actions is not None

    def _build(self):
        try:
            actions, constants, source = _regroup(self.plan, _exact_nodes(_agreed()))
            library = cbuild.compiled(source)
            for action, _ in actions:
                if type(action) in (Loop, Scatter):
                    action.function = cbuild.function(library, action.name, 3)
            self.constants = constants
            self.actions = actions
        except cbuild.BuildingElsewhere:
            pass  # no result and not failed: a later batch starts another thread, which finds the library
        except Exception as error:  # noqa: BLE001 - whatever fails, the plain steps give the same numbers
            self.error = f"{type(error).__name__}: {error}"
            self.failed = True

    # ------------------------------------------------------------ running

    def accepts(self, values, sliced) -> bool:
        """Whether these inputs fit: every input the plan uses is a float64 array
        of its value shape behind the same batch axes (so every value the plan
        computes has those batch axes in front of its value shape), laid out in
        C order (see _c_ordered)."""
        batch = None
        for v, s, shape in zip(values, sliced, self._input_shapes):
            if shape is None:
                continue
            if type(v) is not np.ndarray or v.dtype != np.float64 or not s or v.ndim <= len(shape):
                return False
            if not (v.flags.c_contiguous or _c_ordered(v)):
                return False
            if v.shape[v.ndim - len(shape):] != shape:
                return False
            lead = v.shape[:v.ndim - len(shape)]
            if batch is None:
                batch = lead
            elif lead != batch:
                return False
        return batch is not None

    def run(self, values, into=None) -> list:
        """Plan.run() for accepted inputs, with the loops in C."""
        plan = self.plan
        slots = plan.fresh_slots(values)
        batch = next(v.shape[:v.ndim - len(shape)] for v, shape in zip(values, self._input_shapes) if shape is not None)
        points = math.prod(batch)
        targets = plan.targets(into) or {}
        with np.errstate(all="ignore"):  # a plan looks for non-finite results itself
            for action, releases in self.actions:
                if type(action) is Loop:
                    self._run_loop(action, slots, batch, points, targets)
                elif type(action) is Scatter:
                    self._run_scatter(action, slots, batch, points, targets)
                else:  # a plan's Step
                    action.run(slots, targets.get(action.output))
                for r in releases:
                    slots[r] = None
        return plan.collect(slots)

    def _run_loop(self, loop: Loop, slots, batch, points, targets):
        shape = batch + loop.shape
        operands, strides = [], []  # (operands holds any contiguous copy alive until the call returns)
        for s, kind in zip(loop.reads, loop.kinds):
            array = slots[s]
            if loop.nested and kind == "full":
                array, stride = _rows(array, loop.width)
                strides.append(stride)
            elif not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
            operands.append(array)
        written = [_writable(targets.get(s), shape) for s in loop.writes]
        count = points * math.prod(loop.shape) // (loop.width if loop.nested else 1)
        _call(loop.function, count, operands + written, strides, self.constants)
        for s, w in zip(loop.writes, written):
            slots[s] = w

    def _run_scatter(self, scatter: Scatter, slots, batch, points, targets):
        operands, strides = [], []
        for s, (_, width) in zip(scatter.reads, scatter.windows):
            array, stride = _rows(slots[s], width)
            operands.append(array)
            strides.append(stride)
        out = _writable(targets.get(scatter.writes[0]), batch + scatter.node.shape)
        _call(scatter.function, points, operands + [out], strides, self.constants)
        slots[scatter.writes[0]] = out


def _call(function, count: int, arrays: list, strides: list, constants: np.ndarray) -> None:
    """function(count, p, k) as every generated function takes it: p the arrays'
    addresses (inputs, then outputs), then the address of the row strides."""
    strides = np.array(strides + [0], dtype=np.intp)
    pointers = np.array([_address(a) for a in arrays] + [_address(strides)], dtype=np.uintp)
    function(count, _address(pointers), _address(constants))  # (arrays, strides, pointers live through the call)


def _writable(target: np.ndarray | None, shape: tuple) -> np.ndarray:
    """The output's place when C code can write it as it is, else a fresh array."""
    if target is not None and target.shape == shape and target.flags.c_contiguous:
        return target
    return np.empty(shape)


_fusions: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: a lock another thread
    held stays held for ever, so every Fusion gets a fresh one."""
    for fusion in list(_fusions):
        fusion._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _rows(array: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """The array as rows of `width` contiguous entries a constant distance apart
    (a view where it is laid out so, as x[..., 1:] of a contiguous x, else a
    copy), and that distance in entries."""
    rows = np.reshape(array, (-1, width))  # a view when the layout allows, else a copy
    if (width > 1 and rows.strides[1] != 8) or rows.strides[0] % 8:
        rows = np.ascontiguousarray(rows)
    return rows, (rows.strides[0] // 8 if rows.shape[0] > 1 else width)


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _exact_nodes(agreed: frozenset):
    """A test: can a loop compute this node, exactly as NumPy does here? Its
    operation must be exact, and each argument a value of its own shape, one
    number per point, or a constant of one number (no other broadcasting)."""
    def is_exact(node) -> bool:
        c = _c_of(node)
        if c is None or not (c.exact or node.op in agreed) or _template(node) is None:
            return False
        return all(_one_number(a) if a.op == "const" else a.shape == node.shape or a.size == 1 for a in node.args)
    return is_exact


def _one_number(constant) -> bool:
    """A constant a loop can read as one number: of size 1, or every entry the
    same number (not zero, whose entries could differ in sign)."""
    return constant.size == 1 or (constant.uniform is not None and constant.uniform != 0.0)


def _expression(node, name) -> str:
    return _template(node).format(**dict(zip("abc", (name(a) for a in node.args))))


# Kernels that return their result with its axes in another order in memory
# (np.moveaxis): NumPy's ufuncs keep that order ("K") and its reductions add in
# memory order, so a loop, which writes C order, would change the last bits of
# a later sum. Plans with them (their record says it permutes) keep their plain steps.


def _c_ordered(array: np.ndarray) -> bool:
    """Whether the array's axes lie in memory in C order (strides shrinking from
    the first axis to the last, whatever the gaps: x[:, ::2], a column of a
    table), so the plain steps' ufuncs lay their results out in C order too, as
    a loop does, and later reductions add in the same order on both paths."""
    strides = [abs(stride) for stride, size in zip(array.strides, array.shape) if size > 1]
    return all(a >= b for a, b in zip(strides, strides[1:]))


def fusion_of(plan) -> Fusion | None:
    """A Fusion for the plan, or None unless every value it computes depends on
    an input (so has the batch axes), none is laid out in another axis order
    (an operation that permutes), and some of them a loop can compute."""
    if any(n.op in OPS and OPS[n.op].permutes for n in plan.order):
        return None
    varies: set[int] = set()
    for n in plan.order:
        if n.op == "var" or any(a.id in varies for a in n.args):
            varies.add(n.id)
        elif n.op != "const":
            return None  # computed from constants alone: no batch axes
    is_exact = _exact_nodes(frozenset())
    fused = sum(1 for step in plan.steps if is_exact(step.node))
    if not 0 < fused <= MAX_FUSED:
        return None
    return Fusion(plan)


def _through_memory(a, node, is_exact) -> bool:
    """Whether a loop computing node reads argument a from memory although a
    loop computes it too (a value of another shape: one number per point)."""
    return is_exact(a) and a.shape != node.shape


def _levels(plan, is_exact) -> dict[int, int]:
    """Node id -> its level. Level k runs its NumPy steps, then its loops (one per
    shape). A NumPy step's level is one more than its arguments'; a loop node's,
    as low as its arguments allow, then raised to the highest any reader allows
    (a NumPy step or the caller reads it from the level before its own, a loop
    of another shape too; a loop of its own shape from its own level), so that
    loops write out only what others read, not what they could compute later."""
    level: dict[int, int] = {}
    for n in plan.order:
        if n.op in ("var", "const"):
            level[n.id] = 0
        elif is_exact(n):
            level[n.id] = max((level[a.id] + _through_memory(a, n, is_exact) for a in n.args), default=0)
        else:
            level[n.id] = max((level[a.id] for a in n.args), default=0) + 1
    last = max(level.values(), default=0)
    latest = {n.id: last for n in plan.outputs}
    for n in reversed([step.node for step in plan.steps]):
        if is_exact(n):
            level[n.id] = latest.get(n.id, last)
        for a in n.args:
            if is_exact(a):
                by = level[n.id] if is_exact(n) and not _through_memory(a, n, is_exact) else level[n.id] - 1
                latest[a.id] = min(latest.get(a.id, by), by)
    return level


def _regroup(plan, is_exact) -> tuple[list, np.ndarray, str]:
    """(actions, the constants array, the C source of the loops)."""
    slot = plan.slot
    steps = {step.node.id: step for step in plan.steps}
    level = _levels(plan, is_exact)
    loops: dict[tuple, Loop] = {}
    numpy_steps: dict[int, list] = {}
    for n in (step.node for step in plan.steps):
        if is_exact(n):
            key = (level[n.id], n.shape)
            if key not in loops:
                loops[key] = Loop(f"loop{len(loops)}", n.shape)
            loops[key].nodes.append(n)
        else:
            numpy_steps.setdefault(level[n.id], []).append(n)
    _check_sizes(loops)
    loop_of = {n.id: loop for loop in loops.values() for n in loop.nodes}
    readers: dict[int, set] = {}  # slot -> the loops reading it (None: a NumPy step, the caller)
    for n in (step.node for step in plan.steps):
        for a in n.args:
            readers.setdefault(slot[a.id], set()).add(loop_of.get(n.id))
    for s in plan.output_slots:
        readers.setdefault(s, set()).add(None)
    constant_slots: dict[int, int] = {}
    ordered = []  # (action, slots it reads, slots it makes)
    sources = [PRELUDE]
    for k in range(max(level.values(), default=0) + 1):
        for n in numpy_steps.get(k, []):
            windows = _scatter_windows(n) if n.op == "scatter_sum" else None
            if windows is not None:
                scatter = Scatter(f"scatter{slot[n.id]}", n, windows, slot)
                ordered.append((scatter, scatter.reads, scatter.writes))
                sources.append(_scatter_source(scatter))
            else:
                ordered.append((steps[n.id], [slot[a.id] for a in n.args], [slot[n.id]]))
        for (at, _), loop in loops.items():
            if at == k:
                _plan_loop(loop, slot, constant_slots, readers)
                ordered.append((loop, loop.reads, loop.writes))
                sources.append(_loop_source(loop, slot, constant_slots))
    constants = np.zeros(len(constant_slots) + 1)
    for s, j in constant_slots.items():
        constants[j] = plan.order[s].uniform
    return _with_releases(plan, ordered), constants, "\n".join(sources)


def _check_sizes(loops: dict) -> None:
    """A cbuild.BuildError (so the plain steps) for a loop longer than LOOP_NODES or
    more than MAX_FUSED operations in all: their build would outlast its gain."""
    longest = max((len(loop.nodes) for loop in loops.values()), default=0)
    if longest > LOOP_NODES or sum(len(loop.nodes) for loop in loops.values()) > MAX_FUSED:
        raise cbuild.BuildError(f"a loop of {longest} operations: too long to compile (more than {LOOP_NODES}, "
                         f"or more than {MAX_FUSED} in all)")


def _plan_loop(loop: Loop, slot, constant_slots, readers):
    """A loop's operands, results, and whether (and how wide) it is nested."""
    inside = {n.id for n in loop.nodes}
    size = math.prod(loop.shape)
    views = False
    for n in loop.nodes:
        for a in n.args:
            if a.op == "const":
                constant_slots.setdefault(slot[a.id], len(constant_slots))
            elif a.id not in inside and slot[a.id] not in loop.reads:
                loop.reads.append(slot[a.id])
                loop.kinds.append("point" if a.shape != loop.shape else "full")
                views = views or a.op == "index"
    loop.writes = [slot[n.id] for n in loop.nodes if readers.get(slot[n.id], set()) - {loop}]
    loop.nested = size > 1 and (views or "point" in loop.kinds)
    loop.width = loop.shape[-1] if loop.nested and views else size


def _with_releases(plan, ordered) -> list:
    """Each action with the slots to drop after it: their last reader."""
    keep = set(plan.output_slots)
    last: dict[int, int] = {}
    for i, (_, reads, _) in enumerate(ordered):
        for s in reads:
            last[s] = i
    releases: list[list[int]] = [[] for _ in ordered]
    for s, i in last.items():
        if s not in keep and plan.order[s].op != "const":
            releases[i].append(s)
    return [(action, tuple(r)) for (action, _, _), r in zip(ordered, releases)]


def _loop_source(loop: Loop, slot, constant_slots) -> str:
    def variable(node):
        return f"v{slot[node.id]}"

    reads, writes = len(loop.reads), len(loop.writes)
    lines = [f"void {loop.name}(ptrdiff_t n, double *const *p, const double *k) {{",
             f"    const ptrdiff_t *stride = (const ptrdiff_t *)p[{reads + writes}];"]
    for i in range(reads):
        lines.append(f"    const double *restrict in{i} = p[{i}];")
    for i in range(writes):
        lines.append(f"    double *restrict out{i} = p[{reads + i}];")
    for s in sorted({slot[a.id] for n in loop.nodes for a in n.args if a.op == "const"}):
        lines.append(f"    const double v{s} = k[{constant_slots[s]}];")
    lines.append("    (void)stride;")
    if loop.nested:
        width, per_point = loop.width, math.prod(loop.shape) // loop.width
        lines.append("    for (ptrdiff_t r = 0; r < n; r++) {")
        full = 0
        for i, (s, kind) in enumerate(zip(loop.reads, loop.kinds)):
            if kind == "point":
                lines.append(f"        const double v{s} = in{i}[r / {per_point}];")
            else:
                lines.append(f"        const double *restrict row{i} = in{i} + r * stride[{full}];")
                full += 1
        lines.append(f"        for (ptrdiff_t j = 0; j < {width}; j++) {{")
        indent, here = "            ", f"r * {width} + j"
        reads_at = [None if kind == "point" else f"row{i}[j]" for i, kind in enumerate(loop.kinds)]
    else:
        lines.append("    for (ptrdiff_t i = 0; i < n; i++) {")
        indent, here = "        ", "i"
        reads_at = [f"in{i}[i]" for i in range(reads)]
    for s, at in zip(loop.reads, reads_at):
        if at is not None:
            lines.append(f"{indent}const double v{s} = {at};")
    for n in loop.nodes:
        lines.append(f"{indent}const double {variable(n)} = {_expression(n, variable)};")
    for i, s in enumerate(loop.writes):
        lines.append(f"{indent}out{i}[{here}] = v{s};")
    lines += (["        }"] if loop.nested else []) + ["    }", "}"]
    return "\n".join(lines)


def _scatter_source(scatter: Scatter) -> str:
    """Per row, the vector cut where any window starts or ends; on each piece
    the same windows cover every entry, so it is one branch-free inner loop."""
    size = scatter.node.shape[0]
    parts = len(scatter.windows)
    lines = [f"void {scatter.name}(ptrdiff_t n, double *const *p, const double *k) {{",
             f"    const ptrdiff_t *stride = (const ptrdiff_t *)p[{parts + 1}];",
             f"    double *restrict out = p[{parts}];",
             "    (void)k;",
             "    for (ptrdiff_t r = 0; r < n; r++) {"]
    for i in range(parts):
        lines.append(f"        const double *restrict row{i} = (const double *)p[{i}] + r * stride[{i}];")
    lines.append(f"        double *restrict o = out + r * {size};")
    cuts = sorted({0, size} | {lo for lo, _ in scatter.windows} | {lo + w for lo, w in scatter.windows})
    for start, stop in zip(cuts, cuts[1:]):
        total = "0.0"
        for i, (lo, width) in enumerate(scatter.windows):
            if lo <= start and stop <= lo + width:
                entry = f"row{i}[j - {lo}]"
                total = f"({entry} + 0.0)" if total == "0.0" else f"({total} + {entry})"
        lines.append(f"        for (ptrdiff_t j = {start}; j < {stop}; j++) o[j] = {total};")
    lines += ["    }", "}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- which C functions agree with NumPy

_agreement: frozenset | None = None


def _agreed() -> frozenset:
    """The library_functions() whose C result is NumPy's, bit for bit, on every
    probe value (once per process). Where NumPy calls the C library itself (sin
    and cos with NumPy 2.4 on x86-64) they agree everywhere; an independent
    implementation, even one within an ulp, differs on a good fraction of 40,000
    values, so it is caught. sin and cos also count only if sin and cos of one
    argument in one loop (which the compiler turns into one sincos call) agree."""
    global _agreement
    if _agreement is None:  # (two threads may both probe: the same answer; no lock a fork could strand)
        _agreement = _probe_cached()
    return _agreement


def _probe_cached() -> frozenset:
    """_probe(), remembered on disk (about 30 ms saved per process) for this
    NumPy build and the CPU features it uses (NPY_DISABLE_CPU_FEATURES changes
    which loops it runs), C library, compiler and CPU. A remembered answer is
    sealed with its key (cbuild.recall) and checked again on a few hundred
    values before this process uses it, so an edited file cannot let a function
    that differs from NumPy into the loops: then the whole probe runs again."""
    import platform

    try:
        from numpy._core import _multiarray_umath
    except ImportError:  # NumPy 1.x
        from numpy.core import _multiarray_umath

    numpy_build = Path(_multiarray_umath.__file__)
    features = sorted(name for name, on in getattr(_multiarray_umath, "__cpu_features__", {}).items() if on)
    chosen = [os.environ.get(name, "") for name in ("NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES")]
    key = cbuild.key("probe", np.__version__, str(numpy_build), str(numpy_build.stat().st_mtime_ns),
                     " ".join(platform.libc_ver()), " ".join(features), *chosen, _probe_source())
    remembered = cbuild.recall("probes", key)
    if remembered is not None:
        agreed = frozenset(remembered.split())
        if agreed <= set(library_functions()) and not _disagreeing(agreed, _probe_values(spot=True)):
            return agreed
    agreed = _probe()
    cbuild.remember("probes", key, " ".join(sorted(agreed)))
    return agreed


def _probe_values(spot: bool = False) -> np.ndarray:
    """40,000 values (a few hundred for a spot check) where C libraries and
    NumPy's SIMD code tend to differ: small, big, tiny and huge magnitudes,
    multiples of pi/4, whole numbers, and the special values."""
    rng = np.random.default_rng(20261128 if spot else 20261127)
    sizes = (64, 64, 32, 128) if spot else (8192, 8192, 4096, 16384)
    magnitudes = 10.0 ** rng.uniform(-310, 308, sizes[3])
    special = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, np.pi, np.pi / 2, np.pi / 4, 1e-300, 5e-324, 1e300,
               1.7976931348623157e308, 710.0, -745.0, np.inf, -np.inf, np.nan]
    whole = np.arange(-20.0, 21.0) if spot else np.arange(-300.0, 301.0)
    return np.concatenate([rng.uniform(-4, 4, sizes[0]), rng.uniform(-1000, 1000, sizes[1]),
                           rng.uniform(0, 1, sizes[2]), magnitudes * rng.choice([-1.0, 1.0], magnitudes.size),
                           np.arange(-64, 65) * (np.pi / 4), whole, special])


def _probe_source() -> str:
    lines = [PRELUDE]
    for name in library_functions():
        call = OPS[name].c.expression.format(a="x[i]")
        lines.append(f"void probe_{name}(ptrdiff_t n, const double *restrict x, double *restrict y) "
                     f"{{ for (ptrdiff_t i = 0; i < n; i++) y[i] = {call}; }}")
    lines.append("void probe_sincos(ptrdiff_t n, const double *restrict x, double *restrict s, double *restrict c) "
                 "{ for (ptrdiff_t i = 0; i < n; i++) { s[i] = sin(x[i]); c[i] = cos(x[i]); } }")
    return "\n".join(lines)


def _probe() -> frozenset:
    names = library_functions()
    return frozenset(names) - _disagreeing(names, _probe_values())


def _disagreeing(names, x: np.ndarray) -> set:
    """Those of the named library_functions() whose C results on x differ from
    NumPy's in any bit (sin and cos both, if one sincos call differs)."""
    if not names:
        return set()
    library = cbuild.compiled(_probe_source())

    def same(a, b):
        return np.array_equal(a.view(np.uint64), b.view(np.uint64))

    differ = set()
    with np.errstate(all="ignore"):
        numpy_results = {name: OPS[name].kernel(None)(x) for name in names}
        for name in names:
            y = np.empty_like(x)
            cbuild.function(library, f"probe_{name}", 3)(x.size, _address(x), _address(y))
            if not same(y, numpy_results[name]):
                differ.add(name)
        if {"sin", "cos"} <= set(names):
            s, c = np.empty_like(x), np.empty_like(x)
            cbuild.function(library, "probe_sincos", 4)(x.size, _address(x), _address(s), _address(c))
            if not (same(s, numpy_results["sin"]) and same(c, numpy_results["cos"])):
                differ |= {"sin", "cos"}
    return differ
