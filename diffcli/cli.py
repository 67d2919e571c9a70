"""The command line: click commands over the diffcli API.

The only module that wires the others together and the only one that turns
errors into messages and exit statuses (see EXIT STATUS in `diffcli --help`).
"""

from __future__ import annotations

import functools
import os
import re
import sys

import click

from . import __version__
from .api import compile as compile_expression
from .api import constant
from .errors import EXIT_INTERRUPTED, DiffcliError, UsageError, format_message
from .render import has_nonfinite, json_document, print_tables, quiet_lines, to_json_value

EPILOG = """\b
EXIT STATUS
  0  success (warnings, if any, went to stderr)
  1  a check you asked for failed
  2  usage, expression or shape error
  3  bad input data
  130  interrupted
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
    """


def common_options(command):
    """The expression, the point and the output options every command shares."""
    options = [
        click.argument("expression", required=False),
        click.option("-f", "--file", "expression_file", type=click.File("r", encoding="utf-8"),
                     help="Read the expression from FILE ('-' for stdin) instead of the argument."),
        click.option("-a", "--at", "at", multiple=True, metavar="NAME=VALUE",
                     help="A variable's value: a number or a literal like [1, 2] (arithmetic and "
                          "pi, e allowed). Repeat it, or write --at x=1,y=2."),
        click.option("--format", "output_format", type=click.Choice(["table", "json"]),
                     help="table (default on a terminal) or json (default otherwise)."),
        click.option("--json", "as_json", is_flag=True, help="Same as --format json."),
        click.option("-q", "--quiet", is_flag=True,
                     help="Bare numbers, one per line: the derivative's components (the value's "
                          "for eval)."),
        click.option("--digits", type=click.IntRange(1, 17), default=8, show_default=True,
                     help="Significant digits in tables (JSON always has full precision)."),
        click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
                     show_default=True, help="Colour in tables; NO_COLOR is honoured."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _wrt_option(command):
    return click.option("--wrt", multiple=True, metavar="NAME",
                        help="Differentiate with respect to NAME only (repeatable).")(command)


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
@common_options
@_handle_errors
def eval_command(**options):
    """The value of EXPRESSION at a point.

    \b
    diffcli eval 'x**2' --at x=3
    diffcli eval 'r = sqrt(x^2 + y^2); r * sin(r)' --at x=3,y=4
    """
    _run("value", options)


@cli.command("grad", epilog=EPILOG)
@common_options
@_wrt_option
@_handle_errors
def grad_command(**options):
    """The gradient of a scalar EXPRESSION with respect to each variable
    (each of the variable's own shape).

    \b
    diffcli grad 'cos(x) + sin(x)' --at x=2
    diffcli grad 'x*y' --at x=3 --at y=4 --wrt x
    diffcli grad 'cumsum(2*x)[-1]' --at 'x=[2, 2, 2]'
    """
    _run("gradient", options)


@cli.command("jac", epilog=EPILOG)
@common_options
@_wrt_option
@_handle_errors
def jac_command(**options):
    """The full Jacobian of EXPRESSION per variable: shape = output shape +
    variable shape, all rows from one batched reverse pass.

    \b
    diffcli jac 'x**2' --at 'x=[1, 2, -2]'
    diffcli jac '[x*y, sin(y)]' --at x=1,y=2
    """
    _run("jacobian", options)


@cli.command("vjp", epilog=EPILOG)
@common_options
@_wrt_option
@click.option("--seed", required=True, metavar="VALUE",
              help="The vector v of v^T J, of the output's shape (PyTorch's backward(gradient=v)).")
@_handle_errors
def vjp_command(**options):
    """The vector-Jacobian product v^T J of EXPRESSION, per variable.

    \b
    diffcli vjp 'x**2' --at 'x=[1, 2, -2]' --seed '[1, 0.8, 0.6]'
    """
    _run("vjp", options)


# ---------------------------------------------------------------- shared machinery


def _run(kind: str, options: dict) -> None:
    source = _read_expression(options["expression"], options["expression_file"])
    at = parse_at(options["at"])
    try:
        function = compile_expression(source)
        wrt = list(options.get("wrt") or ()) or None
        if kind == "value":
            result = function.eval(at)
        elif kind == "gradient":
            result = function.grad(at, wrt=wrt)
        elif kind == "jacobian":
            result = function.jacobian(at, wrt=wrt)
        else:
            seed = _value("--seed", options["seed"])
            result = function.vjp(seed, at, wrt=wrt)
    except DiffcliError as e:
        raise e.with_source(source)
    for diagnostic in result.diagnostics:
        _stderr("warning: " + diagnostic.format(source))
    extra = {"seed": to_json_value(seed)} if kind == "vjp" else None
    _write(source, at, result, options, extra)


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _write(source, at, result, options, extra=None) -> None:
    fmt = "json" if options["as_json"] else options["output_format"]
    if options["quiet"]:
        click.echo("\n".join(quiet_lines(result)))
        return
    if fmt is None:
        fmt = "table" if _stdout_is_terminal() else "json"
    if fmt == "json":
        if has_nonfinite(result):
            _stderr("warning: non-finite numbers are written as null in JSON")
        click.echo(json_document(source, at, result, extra))
        return
    print_tables(_console(options["color"]), result, options["digits"])


def _console(color: str):
    from rich.console import Console

    if color == "always":
        return Console(force_terminal=True, highlight=False)
    if color == "never" or os.environ.get("NO_COLOR"):
        return Console(no_color=True, color_system=None, highlight=False)
    return Console(highlight=False)


def _read_expression(argument: str | None, file) -> str:
    if argument is not None and file is not None:
        raise UsageError("give the expression as an argument or with -f FILE, not both")
    if file is not None:
        return file.read()
    if argument is None:
        raise UsageError("no expression: give it as an argument (in quotes) or with -f FILE")
    return argument


def parse_at(items: tuple[str, ...]) -> dict:
    """--at x=1 --at 'y=[1, 2]' --at a=1,b=pi/2 -> {name: array}."""
    values: dict = {}
    for item in items:
        for piece in _split_top_level(item):
            name, sep, text = piece.partition("=")
            name = name.strip()
            if not sep or not _NAME.match(name):
                raise UsageError(f"--at expects NAME=VALUE, got '{piece}'")
            if name in values:
                raise UsageError(f"'{name}' is given twice in --at")
            if not text.strip():
                raise UsageError(f"--at {name}= has no value")
            values[name] = _value(f"--at {name}", text)
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
    click.echo(message, err=True)


def _quiet_broken_pipe() -> None:
    # The reader went away (e.g. `| head -1`): stop quietly, as cat does.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    sys.exit(0)


def main() -> None:
    try:
        cli(prog_name="diffcli")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    main()


