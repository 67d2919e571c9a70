"""The command line: click commands over the diffcli API.

The only module that wires the others together and the only one that turns
errors into messages and exit statuses (see EXIT STATUS in `diffcli --help`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import io
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
import warnings

import click
import numpy as np

from . import __version__
from .allocator import keep_freed_memory
from .api import CHECK_METHOD, check, constant
from .api import compile as compile_expression
from .errors import (
    EXIT_BAD_DATA,
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_FAILED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    DiffcliError,
    ESCAPED_BYTE,
    ExpressionError,
    NumericError,
    UsageError,
    format_message,
    not_utf8,
)
from .language.parse import MAX_EXPRESSION_CHARS
from .io.render import (
    DelimitedWriter,
    check_document,
    check_summary,
    print_check,
    dot_text,
    print_backward_table,
    print_graph_tree,
    rich_escape,
    JsonArrayWriter,
    NdjsonWriter,
    QuietWriter,
    TableWriter,
    has_nonfinite,
    json_document_pieces,
    new_console,
    polynomial_text,
    print_tables,
    quiet_pieces,
    to_json_value,
)

EPILOG = """\b
EXIT STATUS
  0  success (warnings, if any, went to stderr; also when the reader
     of stdout went away, as with | head)
  1  a check you asked for failed
  2  usage, expression or shape error; a request over
     the memory budget (--max-memory)
  3  bad input data
  4  cannot write output (a full disk, an I/O error)
  130  interrupted
  143  terminated (SIGTERM)
"""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="diffcli")
def cli():
    """Exact derivatives of an expression at a point: automatic
    differentiation (reverse mode), not finite differences.

    \b
    diffcli eval 'x**2' --at x=3
    diffcli grad 'cos(x) + sin(x)' --at x=2
    diffcli jac 'x**2' --at 'x=[1, 2, -2]'
    diffcli vjp 'x**2' --at 'x=[1, 2, -2]' --seed '[1, 0.8, 0.6]'
    diffcli hess 'x * sin(y)' --at x=1,y=2
    diffcli grad 'x*y' --points points.csv --csv
    diffcli plot 'sin(x)' --over x=-3:3 --order 2

    \b
    Shell completion: eval "$(_DIFFCLI_COMPLETE=bash_source diffcli)"
    """


FORMATS = ["table", "json", "ndjson", "csv", "tsv", "parquet", "arrow", "arrows"]
OUTPUT_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json",
                     ".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".arrows": "arrows"}
BINARY_OUTPUTS = {"parquet": "Parquet", "arrow": "an Arrow IPC file", "arrows": "an Arrow IPC stream"}
# points.FORMATS, without importing it at start-up
INPUT_FORMATS = ["csv", "tsv", "ndjson", "json", "parquet", "arrow"]


def output_options(command):
    """The expression, point and output options every computing command takes
    (sqlite-utils' output_options): one decorator, applied under @cli.command."""
    command.__click_params__ = [*getattr(command, "__click_params__", []), *_shared_parameters()]
    return command


@functools.cache
def _shared_parameters() -> tuple:
    """The shared options' click parameters, built once and given to all seven
    commands: building them per command cost 6-7 ms of every start (measured),
    and a click parameter keeps no state of the command it belongs to."""
    def carrier():
        pass
    shared = _expression_input("Read the expression from FILE ('-' for stdin) instead of the argument.")
    _stacked(shared + _point_options() + _format_options() + _run_options() + _engine_options())(carrier)
    return tuple(carrier.__click_params__)


def _stacked(decorators: list):
    """One decorator that applies the list's, the first on top (its option first in --help)."""
    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply


def _expression_input(file_help: str) -> list:
    return [click.argument("expression", required=False),
            click.option("-f", "--file", "expression_file", metavar="FILE", help=file_help)]


def _point_options() -> list:
    return [
        click.option("-a", "--at", "at", multiple=True, metavar="NAME=VALUE",
                     help="A variable's value: a number or a literal like [1, 2] (arithmetic and "
                          "pi, e allowed). Repeat it, or write --at x=1,y=2. With --points, a "
                          "constant shared by every point; a point's own value wins."),
        click.option("--points", "points", metavar="FILE", multiple=True, callback=_one_or_more,
                     help="Evaluate at every point (record) of FILE: CSV, TSV, NDJSON, a JSON "
                          "array, Parquet or Arrow IPC; gzip, bzip2 or zstd allowed. '-' reads "
                          "stdin (only then). With --engine dask: repeatable, and a directory, a "
                          "glob or a URL (s3://...)."),
        click.option("--in", "input_format", type=click.Choice(INPUT_FORMATS),
                     help="Format of --points (default: from the file name, else sniffed)."),
        click.option("--chunk", type=click.IntRange(1, None), default=65536, show_default=True,
                     help="Points evaluated per vectorised pass."),
        click.option("--keep", multiple=True, metavar="COL",
                     help="Copy input column COL to the output (repeatable), to join results back."),
        click.option("--keep-all", is_flag=True, help="Copy every input column that is not a variable."),
        click.option("--skip-bad", is_flag=True,
                     help="Go on past bad records (an error record in JSON/NDJSON, skipped and "
                          "counted in CSV/TSV); the exit status is still 3."),
    ]


def _format_options() -> list:
    return [
        click.option("--format", "output_format", type=click.Choice(FORMATS),
                     help="Default: table on a terminal; otherwise json for one point, ndjson "
                          "for --points. parquet, arrow (an Arrow IPC file) and arrows (an IPC "
                          "stream) are binary: never to a terminal."),
        click.option("-o", "--output", "output", metavar="FILE",
                     help="Write to FILE instead of stdout; its extension gives the format unless "
                          "--format does (.csv .tsv .ndjson .jsonl .json .parquet .arrow .feather "
                          ".arrows)."),
        click.option("--json", "as_json", is_flag=True, help="Same as --format json."),
        click.option("--nl", "as_ndjson", is_flag=True, help="Same as --format ndjson."),
        click.option("--csv", "as_csv", is_flag=True, help="Same as --format csv."),
        click.option("--tsv", "as_tsv", is_flag=True, help="Same as --format tsv."),
        click.option("-q", "--quiet", is_flag=True,
                     help="Bare numbers: the derivative's components (the value's for eval), one "
                          "per line, or one point per line, tab-separated, with --points."),
        _digits_option(8, "Significant digits in tables (machine formats keep full precision)."),
        _color_option("Colour in tables; NO_COLOR is honoured."),
    ]


def _run_options() -> list:
    return [
        click.option("--kink", type=click.Choice(["subgradient", "error", "nan"]), default="subgradient",
                     show_default=True,
                     help="Where an operation is not differentiable (abs at 0, a tie in max, ...): "
                          "warn and use the documented subgradient, fail with status 1, or give nan."),
        click.option("--strict", is_flag=True, help="Exit with status 1 if any result is nan or infinite."),
        _max_memory_option(),
    ]


def _engine_options() -> list:
    return [
        click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                     help="dask: evaluate --points files in parallel on a Dask cluster, one task and "
                          "one --output DIR/ file per input file (needs: pip install 'diffcli[dask]')."),
        click.option("--scheduler", metavar="ADDRESS",
                     help="With --engine dask: the dask.distributed scheduler to use, like tcp://host:8786."),
        click.option("--workers", type=click.IntRange(1, None), metavar="N",
                     help="With --engine dask: start N worker processes on this machine for the run "
                          "(default: one per CPU)."),
    ]


def _one_or_more(ctx, param, values):
    """--points once gives its value, as it always did; several give a tuple (--engine dask)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _digits_option(default: int, help_text: str):
    return click.option("--digits", type=click.IntRange(1, 17), default=default, show_default=True,
                        help=help_text)


def _color_option(help_text: str):
    return click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
                        show_default=True, help=help_text)


class _MemorySize(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        from .budget import parse_size

        try:
            return parse_size(value)
        except DiffcliError as e:
            self.fail(e.message, param, ctx)


def _max_memory_option():
    return click.option("--max-memory", "max_memory", type=_MemorySize(),
                        help="The memory one request may use, like 2G or 500M (K, M, G, T are powers of "
                             "1024): a request estimated to need more is refused (status 2) before it runs. "
                             "Default: half of physical memory, or of ulimit -v or the cgroup's limit "
                             "when smaller.")


def _symbolic_option(command):
    return click.option("--symbolic", is_flag=True,
                        help="Print the derivative as a formula in diffcli's language (feed it "
                             "back to `diffcli eval`). Needs no --at: variables are scalars "
                             "unless --at gives them a shape.")(command)


def _tangent_option(command):
    return click.option("--tangent", "tangent", multiple=True, required=True, metavar="NAME=VALUE",
                        help="The direction v for variable NAME (repeatable, or NAME=..,OTHER=..); "
                             "of the variable's shape.")(command)


def _check_options(command):
    command = click.option("--tol", type=click.FloatRange(0, None, min_open=True), default=1e-6,
                           show_default=True,
                           help="Largest error --check accepts: |autodiff - fd| / max(1, |fd|).")(command)
    return click.option("--check", is_flag=True,
                        help="Also compute the derivatives by central differences with Richardson "
                             "extrapolation, show the error of each entry, and exit with status 1 if "
                             "any exceeds --tol.")(command)


def _wrt_option(command):
    return click.option("--wrt", multiple=True, metavar="NAME",
                        help="Differentiate with respect to NAME only (repeatable).")(command)


@dataclasses.dataclass(frozen=True)
class Options:
    """A computing command's options as click parsed them, one field an option
    (the command's own ones default to what they are where a command lacks them)."""

    expression: str | None
    expression_file: str | None
    at: tuple[str, ...]
    points: str | tuple[str, ...] | None  # a tuple: several files, for --engine dask
    input_format: str | None
    chunk: int
    keep: tuple[str, ...]
    keep_all: bool
    skip_bad: bool
    output_format: str | None
    output: str | None
    as_json: bool
    as_ndjson: bool
    as_csv: bool
    as_tsv: bool
    quiet: bool
    digits: int
    color: str
    kink: str
    strict: bool
    max_memory: int | None
    engine: str
    scheduler: str | None
    workers: int | None
    wrt: tuple[str, ...] = ()
    order: int = 1
    symbolic: bool = False
    check: bool = False
    tol: float = 1e-6
    seed: str | None = None
    tangent: tuple[str, ...] = ()
    polynomial: bool = False

    @property
    def formats(self) -> list[str]:
        """The output formats asked for, --format first, then --json, --nl, --csv, --tsv."""
        flags = (self.output_format, self.as_json and "json", self.as_ndjson and "ndjson",
                 self.as_csv and "csv", self.as_tsv and "tsv")
        return [f for f in flags if f]

    @property
    def compile_kink(self) -> str:
        """What the compiled function does at a kink (--kink error is the CLI's own: it stops)."""
        return "nan" if self.kink == "nan" else "subgradient"

    @property
    def stop_on_kink(self) -> bool:
        return self.kink == "error"


def _handle_errors(run):
    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        except DiffcliError as e:
            _stderr(f"error: {e}")
            sys.exit(e.exit_status)
        except KeyboardInterrupt:
            _stderr("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            _quiet_broken_pipe()
    return wrapper


@cli.command("eval", epilog=EPILOG)
@output_options
@_handle_errors
def eval_command(**given):
    """The value of EXPRESSION at a point.

    \b
    diffcli eval 'x**2' --at x=3
    diffcli eval 'r = sqrt(x^2 + y^2); r * sin(r)' --at x=3,y=4
    """
    _run("value", Options(**given))


@cli.command("grad", epilog=EPILOG)
@output_options
@_wrt_option
@click.option("--order", type=click.IntRange(1, None), default=1, show_default=True,
              help="The Nth derivative tensor (shape = output shape + N x the variable's shape); "
                   "needs one --wrt variable when there are several.")
@_symbolic_option
@_check_options
@_handle_errors
def grad_command(**given):
    """The gradient of a scalar EXPRESSION with respect to each variable
    (each of the variable's own shape), or with --order N the Nth derivative.

    \b
    diffcli grad 'cos(x) + sin(x)' --at x=2
    diffcli grad 'x*y' --at x=3 --at y=4 --wrt x
    diffcli grad 'cos(x) + sin(x)' --at x=2 --order 2
    diffcli grad 'sin(x) + cos(x)' --symbolic
    """
    options = Options(**given)
    _run("derivative" if options.order > 1 else "gradient", options)


@cli.command("jac", epilog=EPILOG)
@output_options
@_wrt_option
@_symbolic_option
@_check_options
@_handle_errors
def jac_command(**given):
    """The full Jacobian of EXPRESSION per variable: shape = output shape +
    variable shape, all rows from one batched reverse pass.

    \b
    diffcli jac 'x**2' --at 'x=[1, 2, -2]'
    diffcli jac '[x*y, sin(y)]' --at x=1,y=2
    """
    _run("jacobian", Options(**given))


@cli.command("vjp", epilog=EPILOG)
@output_options
@_wrt_option
@click.option("--seed", required=True, metavar="VALUE",
              help="The vector v of v^T J, of the output's shape (PyTorch's backward(gradient=v)).")
@_check_options
@_handle_errors
def vjp_command(**given):
    """The vector-Jacobian product v^T J of EXPRESSION, per variable.

    \b
    diffcli vjp 'x**2' --at 'x=[1, 2, -2]' --seed '[1, 0.8, 0.6]'
    """
    _run("vjp", Options(**given))


@cli.command("hess", epilog=EPILOG)
@output_options
@_wrt_option
@_symbolic_option
@_check_options
@_handle_errors
def hess_command(**given):
    """The Hessian of a scalar EXPRESSION, as blocks: for variables a and b the
    block of second derivatives d2/da db has shape shape(a) + shape(b).

    \b
    diffcli hess 'x * sin(y)' --at x=1,y=2
    diffcli hess 'sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)' --at 'x=[1, 1.2, 0.8]'
    """
    _run("hessian", Options(**given))


@cli.command("jvp", epilog=EPILOG)
@output_options
@_tangent_option
@_handle_errors
def jvp_command(**given):
    """The Jacobian-vector product J v of EXPRESSION: the directional derivative
    along the tangent v, of the output's shape. Variables without --tangent have
    tangent 0.

    \b
    diffcli jvp '[x*y, sin(y)]' --at x=1,y=2 --tangent x=1
    """
    _run("jvp", Options(**given))


@cli.command("hvp", epilog=EPILOG)
@output_options
@_tangent_option
@_handle_errors
def hvp_command(**given):
    """The Hessian-vector product H v of a scalar EXPRESSION, per variable,
    without forming the Hessian. Variables without --tangent have tangent 0.

    \b
    diffcli hvp 'x^2 * y' --at x=1,y=2 --tangent x=1
    """
    _run("hvp", Options(**given))


@cli.command("series", epilog=EPILOG)
@output_options
@click.option("--order", type=click.IntRange(0, None), required=True,
              help="The highest power of the series (orders up to 1,000 are answered).")
@click.option("--wrt", "wrt", multiple=True, metavar="NAME",
              help="The scalar variable of the series, the others fixed (needed when there are several).")
@click.option("--tangent", "tangent", multiple=True, metavar="NAME=VALUE",
              help="Instead of --wrt: the series of f(x + t v) in t, v given per variable (repeatable, "
                   "of the variable's shape; the others fixed).")
@click.option("--polynomial", is_flag=True,
              help="Print the Taylor polynomial (in the variable, or in t along --tangent) as an expression "
                   "diffcli reads back.")
@_handle_errors
def series_command(**given):
    """The Taylor coefficients c_k = f^(k)/k! of EXPRESSION about the point, k = 0..N,
    by Taylor propagation (any order up to 1,000 in milliseconds), along a scalar
    variable or along --tangent.

    \b
    diffcli series 'tan(x)' --at x=0.7 --order 10
    diffcli series 'exp(x)' --at x=0 --order 4 --polynomial
    diffcli series 'sin(x[0]) * x[1]' --at 'x=[1, 2]' --tangent 'x=[1, 0]' --order 3
    """
    _run("series", Options(**given))


@cli.command("graph", epilog=EPILOG)
@_stacked(_expression_input("Read the expression from FILE ('-' for stdin)."))
@click.option("-a", "--at", "at", multiple=True, metavar="NAME=VALUE",
              help="A point: adds the backward pass, node by node, as a table.")
@click.option("--dot", is_flag=True, help="Print Graphviz DOT text instead of a tree.")
@_digits_option(6, "Significant digits in the backward-pass table.")
@_color_option("Colour; NO_COLOR is honoured.")
@_handle_errors
def graph_command(expression, expression_file, at, dot, digits, color):
    """The DAG of EXPRESSION: one node per distinct subexpression (shared nodes
    are shown once and referred to by id). With --at, also the backward pass in
    the order it runs: each node's value and its adjoint d(output)/d(node).

    \b
    diffcli graph 'sin(x) * exp(sin(x)) + x'
    diffcli graph 'cos(x) + sin(x)' --at x=2
    diffcli graph 'x * y + y' --dot | dot -Tsvg > graph.svg
    """
    source = _read_expression(expression, expression_file)
    values = parse_at(at)
    try:
        function = compile_expression(source)
        shapes = {n: np.shape(values[n]) if n in values else () for n in function.variables}
        graph, root = function.graph(shapes)
        if dot:
            click.echo(dot_text(root), nl=False)
            return
        steps = function.backward_pass(values) if values else None  # an error here leaves stdout empty
        console = _console(color)
        print_graph_tree(console, root)
        if steps is not None:
            console.print()
            print_backward_table(console, steps, digits)
    except DiffcliError as e:
        raise e.with_source(source)


@cli.command("plot", epilog=EPILOG)
@_stacked(_expression_input("Read the expression from FILE ('-' for stdin)."))
@click.option("--over", required=True, metavar="NAME=FROM:TO",
              help="The variable to vary and its range, like x=-3:3 or x=-pi:pi; one component "
                   "of a vector variable as 'x[0]=-1:1' (the rest fixed by --at).")
@click.option("-a", "--at", "at", multiple=True, metavar="NAME=VALUE",
              help="The other variables' values (repeatable, or --at y=1,z=2).")
@click.option("--order", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Draw the derivatives f', f'', ... up to this order.")
@click.option("--points", "points", type=click.IntRange(2, None), metavar="N",
              help="Samples over the range (default: 4 per terminal column; 1001 for --output; "
                   "101 for --format).")
@click.option("--tangent-at", "tangent_at", metavar="NAME=VALUE",
              help="Draw the tangent line at this point and print its equation.")
@click.option("--width", type=click.IntRange(20, None), help="Columns (default: the terminal's).")
@click.option("--height", type=click.IntRange(8, None), help="Lines (default: the terminal's).")
@click.option("-o", "--output", metavar="FILE",
              help='Write a figure to FILE.svg, .png or .pdf (needs: pip install "diffcli[plot]").')
@click.option("--format", "output_format", type=click.Choice(["json", "csv"]),
              help="Write the sampled data (x, value, d/dx, ...) instead of a picture.")
@_digits_option(8, "Significant digits in the tangent's equation.")
@_color_option("Colour; NO_COLOR is honoured (without colour, each curve has its own mark).")
@_max_memory_option()
@_handle_errors
def plot_command(expression, expression_file, over, at, order, points, tangent_at, width, height,
                 output, output_format, digits, color, max_memory):
    """Plot EXPRESSION and its derivatives over a range: in the terminal, to
    an SVG/PNG/PDF figure, or as data. All curves come from one vectorised
    evaluation over the samples.

    \b
    diffcli plot 'sin(x)' --over x=-3:3
    diffcli plot 'sin(x)' --over x=-pi:pi --order 2 --tangent-at x=1
    diffcli plot 'x * y^2' --over y=-1:1 --at x=2
    diffcli plot 'sum(x^2)' --over 'x[0]=-1:1' --at 'x=[0, 1, 2]'
    diffcli plot 'tan(x)' --over x=-3:3 --output tan.svg
    diffcli plot 'sin(x)' --over x=0:1 --points 5 --format csv
    """
    from .io import plot as plotting

    source = _read_expression(expression, expression_file)
    axis = plotting.parse_over(over)
    values = parse_at(at)
    tangent = _tangent_point(plotting, tangent_at, axis)
    if output is not None and output_format is not None:
        raise UsageError("choose --output FILE (a figure) or --format (the data), not both")
    if output is not None:
        plotting.figure_format(output)  # a bad file name fails before any work
    width, height = _plot_size(width, height, tangent is not None)
    if points is None:
        points = 101 if output_format else 1001 if output else 4 * width
    try:
        function = compile_expression(source, max_memory=max_memory)
        samples = plotting.sample(function, axis, values, order, points, tangent)
        for diagnostic in samples.diagnostics[:1] + samples.kinks:
            _stderr("warning: " + diagnostic.format(source))
        if output_format is not None:
            _write_plot_data(plotting, samples, output_format)
        else:
            plotting.with_formulas(samples, function, 48)
            _draw(plotting, samples, output, width, height, color)
    except DiffcliError as e:
        raise e.with_source(source)
    if samples.tangent is not None:
        for equation in samples.tangent.equations(axis.label, samples.components, digits):
            _stderr(equation) if output_format else click.echo(equation)  # stdout holds only data with --format


def _plot_size(width: int | None, height: int | None, tangent: bool) -> tuple[int, int]:
    """The plot's columns and lines: as given, else the terminal's, leaving room
    for the prompt and the tangent's equation."""
    import shutil  # only for a terminal

    columns, lines = shutil.get_terminal_size()
    return width or columns, height or max(8, lines - 1 - tangent)


def _write_plot_data(plotting, samples, output_format: str) -> None:
    if output_format == "json" and plotting.has_nonfinite(samples):
        _stderr("warning: non-finite numbers are written as null in JSON")
    text = plotting.csv_text(samples) if output_format == "csv" else plotting.json_text(samples)
    click.echo(text, nl=False)


def _draw(plotting, samples, output: str | None, width: int, height: int, color: str) -> None:
    """The plot as a figure file (--output), else in the terminal."""
    if output is not None:
        plotting.write_figure(samples, output)
        _stderr(f"diffcli: wrote {output}")
    else:
        use_color = _wants_color(color)
        click.echo(plotting.terminal_plot(samples, width, height, use_color), color=use_color)


def _tangent_point(plotting, text: str | None, axis) -> float | None:
    if text is None:
        return None
    name, index, value = plotting.parse_point(text)
    if (name, index) != (axis.name, axis.index):
        given = name if index is None else f"{name}[{','.join(map(str, index))}]"
        raise UsageError(f"--tangent-at {given}: the tangent is along the plotted variable, "
                         f"--tangent-at {axis.label}=...")
    return value


def _wants_color(color: str) -> bool:
    if color == "always":
        return True
    return color == "auto" and _console(color).color_system is not None


# ---------------------------------------------------------------- shared machinery


def _run(kind: str, options: Options) -> None:
    if options.points == "-" and options.expression_file == "-":
        raise UsageError("-f - and --points - cannot both read stdin")
    source = _read_expression(options.expression, options.expression_file)
    at = parse_at(options.at)
    request = _request(kind, options)
    if options.engine == "dask":
        sys.exit(_run_on_dask(kind, source, at, request, options))
    _refuse_dask_options(options)
    fmt = _output_format(options)
    with _output_file(options.output):
        _compute_and_write(kind, source, at, request, fmt, options)


def _request(kind: str, options: Options) -> dict:
    """The keyword arguments of the API call that computes `kind`."""
    request = {"wrt": list(options.wrt) or None, "order": options.order}
    if kind == "vjp":
        request["seed"] = _value("--seed", options.seed)
    if kind in ("jvp", "hvp") or kind == "series" and options.tangent:
        request["tangents"] = parse_at(options.tangent, "--tangent")
    if kind == "series" and options.tangent and options.wrt:
        raise UsageError("a series is along --wrt NAME or along --tangent, not both")
    return request


@contextlib.contextmanager
def _output_file(path: str | None):
    """With --output FILE, stdout is FILE for the block (opened first, so a path
    that cannot be written fails before any work); closing it is writing it."""
    if path is None:
        yield
        return
    try:
        raw = open(path, "wb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise UsageError(f"--output {path}: cannot write it: {e.strerror}") from None
    previous = sys.stdout
    sys.stdout = _Stdout(io.TextIOWrapper(raw, encoding="utf-8"))
    try:
        yield
    finally:
        stream, sys.stdout = sys.stdout, previous
        with _output_errors():
            stream.stream.close()


def _compute_and_write(kind, source, at, request, fmt, options: Options) -> None:
    try:
        function = compile_expression(source, kink=options.compile_kink, max_memory=options.max_memory)
        if options.symbolic:
            _run_symbolic(function, kind, at, request, fmt, options)
            return
        if options.points is not None:
            if options.check:
                raise UsageError("--check works at one point (--at), not with --points")
            sys.exit(_run_points(function, kind, at, request, fmt, options))
        result = function.compute(kind, at, **request)
        report = check(function, result, at, seed=request.get("seed"), tolerance=options.tol) \
            if options.check else None
        _report_problems(result, source, options.kink, options.strict)
        if options.polynomial:
            _write_polynomial(function, result, at, request, fmt)
            return
    except DiffcliError as e:
        raise e.with_source(source)
    _write_single(source, at, result, fmt, options, _request_echo(kind, request), report)
    if report is not None:
        if fmt != "table":
            _stderr(check_summary(report))
        if not report.passed:
            sys.exit(EXIT_CHECK_FAILED)


def _write_polynomial(function, result, at, request, fmt) -> None:
    """series --polynomial: the Taylor polynomial as an expression (in JSON beside the coefficients)."""
    if fmt not in ("table", "json", "quiet"):
        raise UsageError(f"--polynomial writes text or JSON, not {fmt}")
    coefficients = result["coefficients"]
    if coefficients.ndim != 1:
        raise UsageError("--polynomial needs a scalar expression; the coefficients of each component are "
                         "printed without it")
    tangents = request.get("tangents")
    if tangents:
        variable, about = "t", 0.0
    else:
        variable = (request["wrt"] or function.variables)[0]
        about = float(np.asarray(at[variable]))
    text = polynomial_text(coefficients, variable, about)
    if fmt == "json":
        click.echo(json.dumps({"expression": function.source, "at": {k: to_json_value(v) for k, v in at.items()},
                               "series": {"order": result.order, "coefficients": to_json_value(coefficients),
                                          "polynomial": text}}))
    else:
        click.echo(text)


def _request_echo(kind: str, request: dict) -> dict:
    """What a one-point JSON document repeats of the request beside the point: the seed, the tangents."""
    if kind == "vjp":
        return {"seed": to_json_value(request["seed"])}
    if kind in ("jvp", "hvp") or kind == "series" and "tangents" in request:
        return {"tangent": {k: to_json_value(v) for k, v in request["tangents"].items()}}
    return {}


def _report_problems(result, source: str, kink: str, strict: bool) -> None:
    """Warnings on stderr; --kink error and --strict turn theirs into status 1."""
    kink_spans = {found.span for found in result.kinks}
    for diagnostic in result.diagnostics:
        if diagnostic.span not in kink_spans:  # a kink's own warning says it better
            _stderr("warning: " + diagnostic.format(source))
    for found in result.kinks:
        if kink == "error":
            raise NumericError(found.message + " (--kink error)", found.span)
        _stderr("warning: " + found.format(source))
    if strict and has_nonfinite(result):
        raise NumericError("the result is not finite (--strict)")


def _run_symbolic(function, kind, at, request, fmt, options: Options) -> None:
    if options.points is not None:
        raise UsageError("--symbolic prints a formula; it does not take --points")
    if fmt not in ("table", "json", "quiet"):
        raise UsageError(f"--symbolic writes a table, JSON or -q, not {fmt}")
    entries, payload = _formulas(function, kind, at, request)
    if fmt == "quiet":
        click.echo("\n".join(text for _, text in entries))
    elif fmt == "json":
        click.echo(json.dumps({"expression": function.source, kind: payload}))
    else:
        console = _console(options.color)
        for label, text in entries:
            console.print(f"[bold]{label}[/bold] = {rich_escape(text)}", highlight=False, soft_wrap=True)


def _formulas(function, kind, at, request) -> tuple[list[tuple[str, str]], dict]:
    """The derivative's formulas as (label, text) lines and as the JSON payload."""
    shapes = {k: np.shape(v) for k, v in at.items() if k in function.variables}
    wrt, order = request["wrt"], request["order"]
    if kind == "derivative" and wrt is None and len(function.variables) == 1:
        wrt = list(function.variables)
    formulas = function.formulas(kind, shapes, wrt=wrt, order=order)
    if kind == "derivative":
        ((name, text),) = formulas.items()
        return [(f"d{order}/d{name}{order}", text)], {"order": order, "wrt": name, "value": text}
    if kind == "hessian":
        return [(f"d2/d{a}d{b}", text) for a, row in formulas.items() for b, text in row.items()], formulas
    return [(f"d/d{name}", text) for name, text in formulas.items()], formulas


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _output_format(options: Options) -> str:
    chosen = set(options.formats)
    if len(chosen) > 1:
        raise UsageError(f"choose one output format, not {' and '.join(sorted(chosen))}")
    if options.quiet:
        return "quiet"
    if not chosen and options.output:
        return _format_from_extension(options.output)
    if chosen:
        fmt = chosen.pop()
        if fmt in BINARY_OUTPUTS and not options.output and _stdout_is_terminal():
            raise UsageError(f"--format {fmt} writes {BINARY_OUTPUTS[fmt]}, binary data, and stdout is a "
                             f"terminal: redirect it to a file (> points.{fmt}) or pipe it")
        return fmt
    if _stdout_is_terminal():
        return "table"
    return "ndjson" if options.points is not None else "json"


def _format_from_extension(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in OUTPUT_EXTENSIONS:
        raise UsageError(f"--output {path}: choose the format with --format (the name's "
                         f"extension is not one of {', '.join(OUTPUT_EXTENSIONS)})")
    return OUTPUT_EXTENSIONS[suffix]


def _write_single(source, at, result, fmt, options: Options, extra: dict, report=None) -> None:
    if fmt == "quiet":
        _write_pieces(quiet_pieces(result))
    elif fmt == "json":
        if has_nonfinite(result):
            _stderr("warning: non-finite numbers are written as null in JSON")
        trailer = {"check": check_document(report, CHECK_METHOD)} if report is not None else None
        _write_pieces(itertools.chain(json_document_pieces(source, at, result, extra, trailer), ["\n"]))
    elif fmt == "table":
        console = _console(options.color)
        print_tables(console, result, options.digits)
        if report is not None:
            print_check(console, result, report, options.digits)
    else:  # one point through the streaming writers: header and one row
        writer = _writer(fmt, options.color, options.digits)
        writer.write(result.with_batch_axis(), {})
        writer.close()
        _warn_nonfinite(writer)


def _write_pieces(pieces) -> None:
    """A one-point document, piece by piece (a big array is never one string);
    Ctrl-C waits until the whole document is written, so it is never cut."""
    out = sys.stdout
    with _interrupts_deferred():
        for piece in pieces:
            out.write(piece)
        out.flush()


def _run_points(function, kind, at, request, fmt, options: Options) -> int:
    from .io.pipeline import run_points

    source = _open_points(function, at, options)
    writer = _writer(fmt, options.color, options.digits)
    with _progress(fmt) as on_progress:
        try:
            outcome = run_points(function, kind, source.chunks(), writer, request=request,
                                 skip_bad=options.skip_bad, stop_on_kink=options.stop_on_kink,
                                 stop_on_nonfinite=options.strict,
                                 on_bad=lambda bad: _stderr(f"{bad.where}: {bad.message}"),
                                 on_progress=on_progress)
        except KeyboardInterrupt:
            # Every write is whole (_Stdout), so the output so far ends on a record;
            # a JSON array gets its closing bracket.
            writer.close()
            raise
    return _report_outcome(outcome, function.source, writer)


def _open_points(function, at: dict, options: Options):
    """The --points reader, with a word on stderr where the user may wonder."""
    from .io import points as points_module  # only --points pays for reading points

    path = options.points
    if path == "-" and sys.stdin is not None and sys.stdin.isatty():
        _stderr("diffcli: reading points from the terminal; end with Ctrl-D")
    stream = points_module.open_points(path)
    input_format = options.input_format or (None if path == "-" else points_module.format_from_name(path))
    source = points_module.PointSource(stream, input_format, function.variables, at,
                                       chunk_size=options.chunk, keep=options.keep, keep_all=options.keep_all)
    if source.sniffed:
        _stderr(f"diffcli: reading --points as {source.format} (sniffed; --in chooses)")
    for name in at:
        if name not in function.variables:
            _stderr(f"warning: '{name}' is given but not used by the expression")
    return source


def _report_outcome(outcome, source: str, writer) -> int:
    """A --points run's warnings, failure and bad records on stderr; its exit status."""
    kinks = [] if outcome.failure is not None else list(outcome.kinks.values())
    for diagnostic in outcome.diagnostics + kinks:
        _stderr("warning: " + diagnostic.format(source))
    _warn_nonfinite(writer)
    if outcome.failure is not None:
        _stderr("error: " + outcome.failure.format(source))
        return EXIT_CHECK_FAILED
    if outcome.stopped_at is not None:
        _stderr(f"diffcli: stopped at the bad record on {outcome.stopped_at.where} after "
                f"{_count(outcome.points, 'good point')} (--skip-bad goes on past bad records)")
    elif outcome.skipped:
        _stderr(f"diffcli: skipped {_count(outcome.skipped, 'bad record')}; wrote "
                f"{_count(outcome.points, 'point')}")
    return EXIT_BAD_DATA if outcome.had_bad_records else EXIT_OK


def _refuse_dask_options(options: Options) -> None:
    for name, value in (("scheduler", options.scheduler), ("workers", options.workers)):
        if value is not None:
            raise UsageError(f"--{name} goes with --engine dask")
    if isinstance(options.points, tuple):
        raise UsageError("--points once without --engine dask (which reads several files)")


def _run_on_dask(kind, source, at, request, options: Options) -> int:
    """--engine dask: each --points file a task on the cluster, writing its
    own file in --output DIR/; warnings and bad records reported per file."""
    from .io import cluster

    _refuse_local_options(options)
    fmt = _dask_output_format(options)
    cluster.require_dask()
    directory = options.output
    try:
        compile_expression(source, max_memory=options.max_memory)  # a bad expression fails here, once
        paths = cluster.expand_points([options.points] if isinstance(options.points, str) else options.points)
        outputs = cluster.output_names(paths, directory, fmt)
        os.makedirs(directory, exist_ok=True)
        job = cluster.make_request(source, kind, at=at, kink=options.compile_kink,
                                   max_memory=options.max_memory, chunk=options.chunk,
                                   keep=options.keep, keep_all=options.keep_all,
                                   skip_bad=options.skip_bad, stop_on_kink=options.stop_on_kink,
                                   stop_on_nonfinite=options.strict, input_format=options.input_format,
                                   **request)
        reports = _run_files(cluster, job, paths, outputs, fmt, options)
    except OSError as e:
        raise UsageError(f"--output {directory}: {e.strerror or e}") from None
    except DiffcliError as e:
        raise e.with_source(source)
    return _report_partitions(reports, source)


def _refuse_local_options(options: Options) -> None:
    """What --engine dask cannot do: read stdin, write stdout, check, print formulas."""
    if options.points is None or options.points == "-":
        raise UsageError("--engine dask reads --points files (or a directory, a glob, URLs), not stdin")
    if not options.output:
        raise UsageError("--engine dask writes one file per input file: give --output DIR/")
    if options.scheduler is not None and options.workers is not None:
        raise UsageError("choose --scheduler ADDRESS (a running cluster) or --workers N, not both")
    if options.check or options.symbolic:
        raise UsageError("--engine dask computes at --points; --check and --symbolic are single-process")


def _run_files(cluster, job, paths, outputs, fmt: str, options: Options) -> list:
    """Each file a task on the cluster, with the points done so far on the progress display."""
    run_id = cluster.new_run_id()
    try:
        with cluster.connect(options.scheduler, options.workers) as client, _progress("dask") as shown:
            done = [0]

            def on_done(report):
                done[0] += report.points
                shown(done[0])
            return cluster.run_files(client, job, paths, outputs, fmt, on_done=on_done, run_id=run_id)
    finally:
        cluster.remove_temporaries(outputs, run_id)  # again, once a LocalCluster's workers are gone


def _dask_output_format(options: Options) -> str:
    chosen = options.formats
    if options.quiet or chosen[:1] == ["table"]:
        raise UsageError("--engine dask writes files: --format parquet (default), arrow, arrows, csv, tsv, "
                         "ndjson or json")
    if len(set(chosen)) > 1:
        raise UsageError(f"choose one output format, not {' and '.join(sorted(set(chosen)))}")
    return chosen[0] if chosen else "parquet"


def _report_partitions(reports, source: str) -> int:
    """Each file's warnings, bad records and failure on stderr, in input order;
    the exit status of the worst (a partition that could not run, then bad data,
    then a failed check)."""
    seen_kinks: set = set()
    for report in reports:
        _report_partition(report, source, seen_kinks)
    skipped = sum(report.skipped for report in reports)
    if skipped:
        _stderr(f"diffcli: skipped {_count(skipped, 'bad record')}; wrote "
                f"{_count(sum(r.points for r in reports), 'point')}")
    statuses = {report.exit_status for report in reports} - {EXIT_OK}
    for status in (EXIT_USAGE, EXIT_OUTPUT_FAILED, EXIT_BAD_DATA, EXIT_CHECK_FAILED):
        if status in statuses:
            return status
    return max(statuses, default=EXIT_OK)


def _report_partition(report, source: str, seen_kinks: set) -> None:
    """One file's lines on stderr; a kink another file already reported is not repeated."""
    for text in report.warnings:
        _stderr(f"warning: {report.path}: {text}")
    for span, text in report.kinks:
        if span not in seen_kinks and report.failure is None:
            seen_kinks.add(span)
            _stderr(f"warning: {report.path}: {text}")
    for line, message in report.bad:
        _stderr(f"{report.path}: line {line}: {message}")
    if report.error is not None:
        _stderr(f"error: {report.path}: {report.error.with_source(source)}")
    elif report.stopped_at is not None:
        _stderr(f"error: {report.path}: stopped at the bad record on line {report.stopped_at[0]}; "
                f"no output file for it (--skip-bad goes on past bad records)")
    elif report.failure is not None:
        _stderr(f"error: {report.path}: {report.failure}; no output file for it")


def _console(color: str):
    if color == "always":
        return new_console(force_terminal=True, highlight=False)
    if color == "never" or os.environ.get("NO_COLOR"):
        return new_console(no_color=True, color_system=None, highlight=False)
    return new_console(highlight=False)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _writer(fmt: str, color: str = "auto", digits: int = 8):
    out = sys.stdout
    if fmt in BINARY_OUTPUTS:
        from .io.columnar import ArrowWriter

        out.flush()
        return ArrowWriter(_Stdout(out.buffer), fmt, _interrupts_deferred)
    if fmt == "ndjson":
        return NdjsonWriter(out, _interrupts_deferred)
    if fmt == "json":
        return JsonArrayWriter(out, _interrupts_deferred)
    if fmt in ("csv", "tsv"):
        return DelimitedWriter(out, "," if fmt == "csv" else "\t", _interrupts_deferred)
    if fmt == "quiet":
        return QuietWriter(out, _interrupts_deferred)
    return TableWriter(_console(color), digits)


def _warn_nonfinite(writer) -> None:
    if writer.nonfinite:
        _stderr("warning: non-finite numbers are written as null in JSON")


@contextlib.contextmanager
def _progress(fmt: str):
    """A transient progress display on stderr, only when stderr is a terminal,
    not with -q, and only once the run has taken more than a second."""
    if fmt == "quiet" or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    started = time.monotonic()
    progress = Progress(SpinnerColumn(), TextColumn("{task.completed:,} points"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    task = None

    def update(n):
        nonlocal task
        if task is None:
            if time.monotonic() - started < 1.0:
                return
            progress.start()
            task = progress.add_task("points", total=None)
        progress.update(task, completed=n)

    try:
        yield update
    finally:
        if task is not None:
            progress.stop()


def _read_expression(argument: str | None, path: str | None) -> str:
    if argument is not None and path is not None:
        raise UsageError("give the expression as an argument or with -f FILE, not both")
    if path is not None:
        return _read_expression_file(path)
    if argument is None:
        raise UsageError("no expression: give it as an argument (in quotes) or with -f FILE")
    # Python decodes argv with surrogateescape: a byte that is not UTF-8 arrives as U+DC80..U+DCFF.
    bad = re.search(ESCAPED_BYTE, argument)
    if bad:
        data = argument.encode("utf-8", "surrogateescape")
        raise _undecodable(data, len(argument[:bad.start()].encode("utf-8", "surrogateescape")))
    return argument


def _read_expression_file(path: str) -> str:
    """The expression in FILE ('-' = stdin). At most the size limit plus one byte
    is read, so `-f /dev/zero` or `yes | diffcli eval -f -` is refused at once."""
    limit = 4 * MAX_EXPRESSION_CHARS  # UTF-8 takes at most 4 bytes a character
    try:
        if path == "-":
            if sys.stdin is None:
                raise OSError("stdin is closed")
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as file:
                data = file.read(limit + 1)
    except OSError as e:
        source = "stdin" if path == "-" else path
        raise UsageError(f"-f: cannot read the expression from {source}: {e.strerror or e}") from None
    if len(data) > limit:
        raise ExpressionError(f"-f: the expression is longer than {limit:,} bytes; diffcli reads "
                              f"at most {MAX_EXPRESSION_CHARS:,} characters")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _undecodable(data, e.start) from None


def _undecodable(data: bytes, offset: int) -> ExpressionError:
    """The expression's bytes are not UTF-8 at offset: say which byte, where, and why."""
    byte, reason = not_utf8(data[offset:])
    return ExpressionError(f"the expression is not UTF-8 text: {byte} at byte offset {offset:,} ({reason})")


def parse_at(items: tuple[str, ...], option: str = "--at") -> dict:
    """--at x=1 --at 'y=[1, 2]' --at a=1,b=pi/2 -> {name: array}."""
    values: dict = {}
    for item in items:
        for piece in _split_top_level(item):
            name, sep, text = piece.partition("=")
            name = name.strip()
            if not sep or not _NAME.match(name):
                raise UsageError(f"{option} expects NAME=VALUE, got '{piece}'")
            if name in values:
                raise UsageError(f"'{name}' is given twice in {option}")
            if not text.strip():
                raise UsageError(f"{option} {name}= has no value")
            values[name] = _value(f"{option} {name}", text)
    return values


def _value(what: str, text: str):
    try:
        return constant(text)
    except DiffcliError as e:
        raise UsageError(f"{what}: {format_message(e.message, e.span, text)}") from None


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so x=[1,2],y=3 is two assignments."""
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return pieces


def _stderr(message: str) -> None:
    # A stderr that cannot be written (2>/dev/full) must not stop the run or
    # turn a warning into a traceback: the exit status still says how it ended.
    try:
        click.echo(message, err=True)
    except OSError:
        pass


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """diffcli's own warnings (the kernel cache refused, a compiler stopped) as
    one 'warning:' line like every other; anyone else's as Python prints them."""
    if category.__module__.startswith("diffcli."):
        _stderr(f"warning: {message}")
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _terminated(signum, frame) -> None:
    # SIGTERM (kill, a CI timeout) ends the run through SystemExit, so that the
    # exit handlers run: a compiler started for the kernel cache is stopped too.
    _abandon_builds()
    sys.exit(EXIT_TERMINATED)


def _abandon_builds() -> None:
    """An interrupted run does not wait at exit for a compile it started."""
    cbuild = sys.modules.get("diffcli.cbuild")  # (loaded only if a build may have started)
    if cbuild is not None:
        cbuild.abandon_builds()


def _quiet_broken_pipe() -> None:
    # The reader went away (e.g. `| head -1`): stop quietly, as cat does.
    _discard_stdout()
    sys.exit(EXIT_OK)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered (and Python's
    flush at exit) goes nowhere instead of failing again outside any handler."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class OutputFailed(Exception):
    """stdout could not be written: a full disk, an I/O error (not a closed pipe)."""

    def __init__(self, error: OSError):
        super().__init__(error.strerror or str(error))
        self.reason = error.strerror or str(error)


class _Stdout:
    """sys.stdout of the diffcli process. Each write and flush is whole with
    respect to Ctrl-C (it waits until the call is over), and the writers write
    whole records in one call, so an interrupted run ends on a record boundary;
    a failed write becomes OutputFailed, so main() can tell it from every other
    OSError. A closed pipe stays BrokenPipeError."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        with _interrupts_deferred(), _output_errors():
            return self.stream.write(text)

    def flush(self):
        with _interrupts_deferred(), _output_errors():
            self.stream.flush()

    @property
    def buffer(self):
        """The binary stream under a text one (the JSON writers write polars' bytes
        there), kept whole and with its failures reported as this one's."""
        return _Stdout(self.stream.buffer)

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def _output_errors():
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        raise OutputFailed(e) from None


@contextlib.contextmanager
def _interrupts_deferred():
    """Ctrl-C (SIGINT) during the block takes effect when it ends. SIGINT is
    blocked in this thread, not only caught: a blocking write to a pipe that a
    caught signal interrupts loses the rest of its data (Python 3.11 reported
    3,000,000 characters written of which 131,072 reached the reader). The
    handler catches a SIGINT that another thread (OpenBLAS, the progress
    display) receives meanwhile."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending SIGINT arrives here, noted
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt
        elif received and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


def main() -> None:
    keep_freed_memory()  # the command's own process only: importing diffcli changes no allocator
    _pyarrow_without_pandas(sys.argv[1:])
    warnings.showwarning = _show_warning
    signal.signal(signal.SIGTERM, _terminated)
    if sys.stdout is None:  # started with stdout closed (>&-): Python gives None
        _stderr("diffcli: cannot write output: stdout is closed")
        sys.exit(EXIT_OUTPUT_FAILED)
    stdout = sys.stdout
    sys.stdout = _Stdout(stdout)
    try:
        status = _run_guarded()
    finally:
        sys.stdout = stdout
    # The work is done and written: the collector need not walk every object again
    # while the interpreter ends (with polars loaded that took 0.3-0.4 s of a 10^6-point
    # CSV run, measured against os._exit; frozen, 0.1 s). Nothing of diffcli's
    # relies on a collector-run finalizer: output is flushed and files closed above.
    gc.freeze()
    sys.exit(status)


def _pyarrow_without_pandas(args: list[str]) -> None:
    """Where pandas is installed, pyarrow imports it the first time it converts an
    array (to tell pandas objects apart): 0.3-0.4 s of every --points run, more than
    reading 10^6 points from Parquet. The command never gives pyarrow a pandas
    object, so in its own process pandas is marked missing before pyarrow looks;
    not for --engine dask, whose data frames are pandas'."""
    if "pandas" not in sys.modules and "dask" not in args and "--engine=dask" not in args:
        sys.meta_path.insert(0, _NoPandas())


class _NoPandas:
    """A module finder that finds no pandas: `import pandas` raises
    ModuleNotFoundError, which pyarrow takes as pandas not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (diffcli's command does not use it)", name=name)
        return None


def _run_guarded() -> int:
    """Run the command and flush its output here, where a failure to write (the
    flush at interpreter exit would report it as an ignored exception) can still
    be reported: one line and status 4 for a full disk or an I/O error, status 0
    for a reader that went away, 130 for Ctrl-C."""
    try:
        try:
            # Not click's standalone mode: it turns Ctrl-C during parsing into
            # "Aborted!" and status 1, and a closed pipe into status 1.
            returned = cli.main(prog_name="diffcli", standalone_mode=False)
            status = returned if isinstance(returned, int) else EXIT_OK  # --help, --version: 0
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else EXIT_OK if e.code is None else 1
        except click.ClickException as e:
            with contextlib.suppress(OSError):  # (2>/dev/full: the status still tells)
                e.show()
            status = e.exit_code
        except click.Abort:
            raise KeyboardInterrupt from None
        except MemoryError:
            # The estimate before a run (--max-memory) should prevent this; if it
            # was too low, still one line and no traceback.
            _stderr("error: out of memory: the request needs more memory than is available "
                    "(lower --max-memory, --chunk or the size of the request)")
            status = EXIT_USAGE
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_OK
    except OutputFailed as e:
        _discard_stdout()
        _stderr(f"diffcli: cannot write output: {e.reason}")
        return EXIT_OUTPUT_FAILED
    except KeyboardInterrupt:
        _abandon_builds()
        _stderr("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    main()
