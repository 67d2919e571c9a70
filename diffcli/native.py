"""Fused elementwise kernels, compiled with the machine's C compiler, for big batches.

A plan in which every operation maps entry to entry (the value and gradient of
a scalar function of scalars, over a batch) spends most of its time in
arithmetic ufuncs run one after another, each a pass over memory at about
1.3 ns per entry and operation: the 35 steps of T2 cost about 40 ns per point
that way, though the arithmetic itself is a few instructions.

Here such a plan is cut into stages. The arithmetic whose C operation gives
exactly the number the ufunc gives (+ - * /, negation, sqrt, abs, floor, ceil,
x^2, 1/x, comparisons, where, and the zero-dominant cmul and cdiv: each is one
correctly rounded IEEE operation, or a choice between such results) is fused
into one C loop per stage that keeps its intermediates in registers and writes
only what later stages or the caller read. Everything else (sin, exp, log,
tanh, pow, ...) stays the very NumPy ufunc the plain plan calls, on the same
contiguous arrays, between the loops. So every number is the plain plan's, bit
for bit: NumPy's own SIMD exp or log are not replaced by the C library's,
whose last bits can differ. (FMA contraction is off, and nothing is compiled
with -ffast-math, so the compiler may vectorise but not reassociate.)

The C text is generated from the op names in the table below, slot numbers and
nothing else: constants reach it as an array at run time, and no user text
ever does. It is compiled once per machine and plan shape (cached by the hash
of source, compiler and CPU in DIFFCLI_CACHE_DIR, else ~/.cache/diffcli), in
a background thread, so a batch that arrives before the kernel is ready runs
the plain steps instead; only a batch big enough to amortise a compile waits
for it. Without a C compiler, or with DIFFCLI_NATIVE=0, plans run as before.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from .ops import OPS

# A C expression per operation, over its operands a, b, c. Only operations whose
# C result is the ufunc's own, bit for bit (see the module docstring).
EXACT = {
    "add": "{a} + {b}",
    "sub": "{a} - {b}",
    "mul": "{a} * {b}",
    "div": "{a} / {b}",
    "neg": "-{a}",
    "sqrt": "sqrt({a})",
    "abs": "fabs({a})",
    "floor": "floor({a})",
    "ceil": "ceil({a})",
    "cmul": "cmul({a}, {b})",
    "cdiv": "cdiv({a}, {b})",
    "where": "{a} != 0.0 ? {b} : {c}",
    "lt": "{a} < {b} ? 1.0 : 0.0",
    "le": "{a} <= {b} ? 1.0 : 0.0",
    "gt": "{a} > {b} ? 1.0 : 0.0",
    "ge": "{a} >= {b} ? 1.0 : 0.0",
    "eq": "{a} == {b} ? 1.0 : 0.0",
    "ne": "{a} != {b} ? 1.0 : 0.0",
}
# ops._pow_kernel's fast paths for a constant exponent, which are exact.
EXACT_POWERS = {2.0: "{a} * {a}", 1.0: "{a}", -1.0: "1.0 / {a}"}
# Functions of the C library that NumPy calls for float64 on some machines and
# replaces by its own SIMD code (whose last bits differ) on others: used in a
# loop only where a probe finds NumPy's results the C library's (`_agreed`).
LIBRARY = ("sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh",
           "exp", "expm1", "log", "log1p", "log2", "log10", "cbrt")

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
# -ffp-contract=off: no fused multiply-add, which rounds once instead of twice.
# -fno-math-errno: sqrt is the instruction, the same correctly rounded result.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared")
FORMAT = "1"  # bump when the generated code changes meaning

# From this many element operations (steps x entries) on, a batch waits for its
# kernels to compile (about 0.1 s, once per machine and plan) instead of running
# the plain steps meanwhile. (Smaller batches than evaluate.NATIVE_MIN_ELEMENTS
# never ask for kernels.)
NATIVE_WAIT_WORK = 1 << 24


def enabled() -> bool:
    return os.environ.get("DIFFCLI_NATIVE", "1") != "0"


# ---------------------------------------------------------------- the plan in stages


class Stage:
    """One fused C loop: reads the slots `reads`, writes the slots `writes`."""

    __slots__ = ("name", "reads", "writes", "nodes", "function")

    def __init__(self, name: str):
        self.name = name
        self.reads: list[int] = []
        self.writes: list[int] = []
        self.nodes: list = []
        self.function = None


class Fusion:
    """A plan's steps regrouped: loops of fused exact arithmetic, and the NumPy
    steps between them. `fusion_of` says whether a plan qualifies; the regrouping
    and the kernels are made by `ready`, in the background."""

    def __init__(self, plan, shape):
        self.plan = plan
        self.shape = shape  # the value shape every computed node has
        self.actions = None  # (Stage or plain step, slots released after it), once built
        self.constants = None  # float64 array: a loop reads constant j as k[j]
        self.failed = False
        self.error = ""
        self._building = None
        self._lock = threading.Lock()

    def ready(self, wait: bool) -> bool:
        """Whether the kernels are loaded; starts building them (once) if not,
        and with wait, waits for that."""
        if self.actions is not None:
            return True
        if self.failed:
            return False
        with self._lock:
            if self._building is None:
                self._building = threading.Thread(target=self._build, name="diffcli-compile", daemon=True)
                self._building.start()
            building = self._building
        if wait:
            building.join()
        return self.actions is not None

    def _build(self):
        try:
            exact = _exact_nodes(_agreed())
            actions, constants, source = _regroup(self.plan, exact)
            library = _compiled(source)
            for action, _ in actions:
                if type(action) is Stage:
                    action.function = _function(library, action.name, 3)
            self.constants = constants
            self.actions = actions
        except (OSError, subprocess.SubprocessError, BuildError) as error:
            self.error = str(error)
            self.failed = True

    # ------------------------------------------------------------ running

    def accepts(self, values, sliced) -> bool:
        """Whether these inputs fit: every input the plan uses is a float64 array
        with the batch and the common value shape."""
        shape = None
        for v, s, slot in zip(values, sliced, self.plan._input_slots):
            if slot is None:
                continue
            if type(v) is not np.ndarray or v.dtype != np.float64 or not s:
                return False
            if shape is None:
                shape = v.shape
            elif v.shape != shape:
                return False
        return shape is not None and shape[len(shape) - len(self.shape):] == self.shape

    def run(self, values, into=None) -> list:
        """Plan.run() for accepted inputs, with the stages' C loops."""
        plan = self.plan
        slots: list = [None] * plan._size
        for s, v in plan._constants:
            slots[s] = v
        shape = None
        for s, v in zip(plan._input_slots, values):
            if s is not None:
                slots[s] = v if v.flags.c_contiguous else np.ascontiguousarray(v)
                shape = v.shape
        count = int(np.prod(shape))
        targets = {}
        if into is not None:
            targets = {s: place for s, place, copy in zip(plan._output_slots, into, plan._copy_output)
                       if place is not None and not copy and place.flags.c_contiguous and place.shape == shape}
        constants = self.constants.ctypes.data
        from .evaluate import quiet_floating_point

        with quiet_floating_point():
            for action, releases in self.actions:
                if type(action) is Stage:
                    written = [targets.get(s) for s in action.writes]
                    written = [np.empty(shape) if w is None else w for w in written]
                    pointers = np.array([_address(slots[s]) for s in action.reads] + [_address(w) for w in written],
                                        dtype=np.uintp)
                    action.function(count, pointers.ctypes.data, constants)
                    for s, w in zip(action.writes, written):
                        slots[s] = w
                else:
                    kernel, unary, arguments, out, _ = action
                    target = targets.get(out)
                    arguments = (arguments(slots),) if unary else arguments(slots)
                    if target is not None and type(kernel) is np.ufunc:
                        slots[out] = kernel(*arguments, out=target)
                    else:
                        slots[out] = kernel(*arguments)
                for r in releases:
                    slots[r] = None
        return [slots[s].copy() if copy else slots[s] for s, copy in zip(plan._output_slots, plan._copy_output)]



def _function(library, name: str, arguments: int):
    """A C function taking a count and then pointers."""
    function = getattr(library, name)
    function.argtypes = (ctypes.c_ssize_t,) + (ctypes.c_void_p,) * (arguments - 1)
    function.restype = None
    return function


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _exact_nodes(agreed: frozenset):
    """A test: is this node's operation one a loop computes exactly as NumPy does here?"""
    def is_exact(node) -> bool:
        if node.op == "pow":
            exponent = node.args[1]
            return exponent.op == "const" and exponent.scalar in EXACT_POWERS
        return node.op in EXACT or node.op in agreed
    return is_exact


def _expression(node, name) -> str:
    if node.op == "pow":
        return EXACT_POWERS[node.args[1].scalar].format(a=name(node.args[0]))
    if node.op in EXACT:
        return EXACT[node.op].format(**dict(zip("abc", (name(a) for a in node.args))))
    return f"{node.op}({name(node.args[0])})"


def fusion_of(plan) -> Fusion | None:
    """A Fusion for the plan, or None unless every operation is elementwise,
    every computed value has one value shape (constants one number each), every
    one depends on an input, and some of it is arithmetic a loop can do."""
    order = plan.order
    shapes = {n.shape for n in order if n.op != "const"}
    if len(shapes) != 1 or any(n.op == "const" and n.size != 1 for n in order):
        return None
    varies: set[int] = set()
    is_exact = _exact_nodes(frozenset())
    for n in order:
        if n.op == "var" or any(a.id in varies for a in n.args):
            varies.add(n.id)
        elif n.op != "const":
            return None  # a value computed from constants alone: one number, not an array
        if n.op not in ("var", "const") and not is_exact(n) and not getattr(OPS[n.op].kernel, "elementwise", False):
            return None
    if not any(is_exact(n) for n in plan._computed):
        return None
    return Fusion(plan, shapes.pop())


def _stages(order, outputs, is_exact) -> dict[int, int]:
    """Node id -> its stage. A NumPy step's stage is the most NumPy steps on any
    path to it, counting itself; it runs after loop stage - 1. An exact node
    runs in the last loop that is still in time for every reader (loop k runs
    after the NumPy steps of stage k), so that a loop writes out only what a
    NumPy step or the caller reads, not values it could compute later."""
    stage: dict[int, int] = {}
    for n in order:
        if not is_exact(n) and n.op not in ("var", "const"):
            stage[n.id] = max((stage[a.id] for a in n.args if a.id in stage), default=0) + 1
    last = max(stage.values(), default=0)
    latest = {n.id: last for n in outputs}
    for n in reversed(order):
        if is_exact(n):
            stage[n.id] = latest.get(n.id, last)
        if n.id in stage:
            # A NumPy step needs its arguments a loop earlier; an exact one, in its own loop at the latest.
            by = stage[n.id] - (0 if is_exact(n) else 1)
            for a in n.args:
                latest[a.id] = min(latest.get(a.id, by), by)
    return stage


def _regroup(plan, is_exact) -> tuple[list, np.ndarray, str]:
    """(actions, the constants array, the C source of the loops)."""
    slot = plan._slot
    steps = {n.id: step for n, step in zip(plan._computed, plan._steps)}
    stage_of = _stages(plan.order, plan.outputs, is_exact)
    count = max(stage_of.values()) + 1
    loops = [Stage(f"stage{k}") for k in range(count)]
    numpy_steps: list[list] = [[] for _ in range(count)]
    for n in plan._computed:
        (loops[stage_of[n.id]].nodes if is_exact(n) else numpy_steps[stage_of[n.id]]).append(n)
    readers: dict[int, set[int]] = {}  # slot -> the loops reading it (-1: a NumPy step, the caller)
    for n in plan._computed:
        where = stage_of[n.id] if is_exact(n) else -1
        for a in n.args:
            readers.setdefault(slot[a.id], set()).add(where)
    for s in plan._output_slots:
        readers.setdefault(s, set()).add(-1)
    constant_slots: dict[int, int] = {}
    ordered = []  # (action, slots it reads, slots it makes)
    sources = [PRELUDE]
    for k in range(count):
        for n in numpy_steps[k]:
            ordered.append((steps[n.id], [slot[a.id] for a in n.args], [slot[n.id]]))
        loop = loops[k]
        if not loop.nodes:
            continue
        inside = {n.id for n in loop.nodes}
        for n in loop.nodes:
            for a in n.args:
                if a.op == "const":
                    constant_slots.setdefault(slot[a.id], len(constant_slots))
                elif a.id not in inside and slot[a.id] not in loop.reads:
                    loop.reads.append(slot[a.id])
        loop.writes = [slot[n.id] for n in loop.nodes if readers.get(slot[n.id], set()) - {k}]
        ordered.append((loop, loop.reads, loop.writes))
        sources.append(_stage_source(loop, slot, constant_slots))
    constants = np.zeros(len(constant_slots) + 1)
    for s, j in constant_slots.items():
        constants[j] = plan.order[s].scalar
    return _with_releases(plan, ordered), constants, "\n".join(sources)


def _with_releases(plan, ordered) -> list:
    """Each action with the slots to drop after it: their last reader."""
    keep = set(plan._output_slots)
    last: dict[int, int] = {}
    for i, (_, reads, _) in enumerate(ordered):
        for s in reads:
            last[s] = i
    releases: list[list[int]] = [[] for _ in ordered]
    for s, i in last.items():
        if s not in keep and plan.order[s].op != "const":
            releases[i].append(s)
    return [(action, tuple(r)) for (action, _, _), r in zip(ordered, releases)]


def _stage_source(stage: Stage, slot, constant_slots) -> str:
    def variable(node):
        return f"v{slot[node.id]}"

    lines = [f"void {stage.name}(ptrdiff_t n, double *const *p, const double *k) {{"]
    for i, s in enumerate(stage.reads):
        lines.append(f"    const double *restrict in{i} = p[{i}];")
    for i, s in enumerate(stage.writes):
        lines.append(f"    double *restrict out{i} = p[{len(stage.reads) + i}];")
    constants = sorted({slot[a.id] for n in stage.nodes for a in n.args if a.op == "const"})
    for s in constants:
        lines.append(f"    const double v{s} = k[{constant_slots[s]}];")
    lines.append("    for (ptrdiff_t i = 0; i < n; i++) {")
    for i, s in enumerate(stage.reads):
        lines.append(f"        const double v{s} = in{i}[i];")
    for n in stage.nodes:
        lines.append(f"        const double {variable(n)} = {_expression(n, variable)};")
    for i, s in enumerate(stage.writes):
        lines.append(f"        out{i}[i] = v{s};")
    lines += ["    }", "}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- which C functions agree with NumPy

_agreement: frozenset | None = None
_agreement_lock = threading.Lock()


def _agreed() -> frozenset:
    """The LIBRARY functions whose C result is NumPy's, bit for bit, on every
    probe value (once per process). Where NumPy calls the C library itself (sin
    and cos with NumPy 2.4 on x86-64) they agree everywhere; an independent
    implementation, even one within an ulp, differs on a good fraction of 40,000
    values, so it is caught. sin and cos also count only if sin and cos of one
    argument in one loop (which the compiler turns into one sincos call) agree."""
    global _agreement
    with _agreement_lock:
        if _agreement is None:
            _agreement = _probe()
        return _agreement


def _probe_values() -> np.ndarray:
    rng = np.random.default_rng(20261127)
    magnitudes = 10.0 ** rng.uniform(-310, 308, 16384)
    special = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, np.pi, np.pi / 2, np.pi / 4, 1e-300, 5e-324, 1e300,
               1.7976931348623157e308, 710.0, -745.0, np.inf, -np.inf, np.nan]
    return np.concatenate([rng.uniform(-4, 4, 8192), rng.uniform(-1000, 1000, 8192), rng.uniform(0, 1, 4096),
                           magnitudes * rng.choice([-1.0, 1.0], magnitudes.size), np.arange(-64, 65) * (np.pi / 4),
                           np.arange(-300.0, 301.0), special])


def _probe_source() -> str:
    lines = [PRELUDE]
    for name in LIBRARY:
        lines.append(f"void probe_{name}(ptrdiff_t n, const double *restrict x, double *restrict y) "
                     f"{{ for (ptrdiff_t i = 0; i < n; i++) y[i] = {name}(x[i]); }}")
    lines.append("void probe_sincos(ptrdiff_t n, const double *restrict x, double *restrict s, double *restrict c) "
                 "{ for (ptrdiff_t i = 0; i < n; i++) { s[i] = sin(x[i]); c[i] = cos(x[i]); } }")
    return "\n".join(lines)


def _probe() -> frozenset:
    library = _compiled(_probe_source())
    x = _probe_values()
    from .evaluate import quiet_floating_point

    def same(a, b):
        return np.array_equal(a.view(np.uint64), b.view(np.uint64))

    agreed = set()
    with quiet_floating_point():
        numpy_results = {name: OPS[name].kernel(None)(x) for name in LIBRARY}
        for name in LIBRARY:
            y = np.empty_like(x)
            _function(library, f"probe_{name}", 3)(x.size, _address(x), _address(y))
            if same(y, numpy_results[name]):
                agreed.add(name)
        s, c = np.empty_like(x), np.empty_like(x)
        _function(library, "probe_sincos", 4)(x.size, _address(x), _address(s), _address(c))
        if not (same(s, numpy_results["sin"]) and same(c, numpy_results["cos"])):
            agreed -= {"sin", "cos"}
    return frozenset(agreed)


# ---------------------------------------------------------------- compiling, cached


class BuildError(Exception):
    pass


def _compiler() -> str | None:
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cache_dir() -> Path:
    configured = os.environ.get("DIFFCLI_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "diffcli"


def _machine() -> str:
    """What the compiled code depends on besides its source: -march=native
    means the CPU's features."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return f"{os.uname().machine} {flags}"


def _compiled(source: str) -> ctypes.CDLL:
    compiler = _compiler()
    if compiler is None:
        raise BuildError("no C compiler (cc, gcc or clang) on PATH")
    key = hashlib.sha256("\0".join((FORMAT, compiler, " ".join(FLAGS), _machine(), source)).encode()).hexdigest()
    directory = _cache_dir() / "kernels"
    library = directory / f"{key[:32]}.so"
    if not library.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f"{key[:32]}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            done = subprocess.run([compiler, *FLAGS, "-o", str(partial), "-x", "c", "-"], input=source,
                                  capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise BuildError(f"{compiler} failed: {done.stderr.strip()[:2000]}")
            os.replace(partial, library)  # atomic: another process never loads half a file
        finally:
            if partial.exists():
                partial.unlink()
    return ctypes.CDLL(str(library))
