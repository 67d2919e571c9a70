"""diffcli plot: the sampled data, the terminal picture, figure files and the
refusals (diffcli/io/plot.py and the `plot` command)."""

from __future__ import annotations

import builtins
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import diffcli
from diffcli import cli as cli_module
from diffcli.io import plot as plotting
from diffcli.errors import UsageError

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


@pytest.fixture(autouse=True)
def _stdout_a_terminal(monkeypatch):
    """These tests look at what a terminal shows; off a terminal the default is JSON
    (tests/test_terminal.py runs the real command both ways)."""
    monkeypatch.setattr(cli_module, "_stdout_is_terminal", lambda: True)


def run(*args, env=None):
    return CliRunner().invoke(cli_module.cli, ["plot", *args], env=env)


def csv_rows(output: str) -> tuple[list[str], np.ndarray]:
    lines = output.strip().splitlines()
    return lines[0].split(","), np.array([[float(v) for v in line.split(",")] for line in lines[1:]])


# ---------------------------------------------------------------- the data against closed forms


def test_sampled_data_match_closed_forms():
    function = diffcli.compile("sin(x)")
    samples = plotting.sample(function, plotting.parse_over("x=-pi:pi"), {}, 3, 41)
    x = samples.x
    assert x[0] == pytest.approx(-np.pi) and x[-1] == pytest.approx(np.pi) and len(x) == 41
    expected = [np.sin(x), np.cos(x), -np.sin(x), -np.cos(x)]
    assert [c.order for c in samples.curves] == [0, 1, 2, 3]
    for curve, want in zip(samples.curves, expected):
        np.testing.assert_allclose(curve.y, want, atol=1e-14)


def test_all_orders_come_from_one_evaluation(monkeypatch):
    function = diffcli.compile("exp(2*x)")
    calls = []
    original = function.derivatives_along

    def counting(*args, **kwargs):
        calls.append(kwargs.get("batch_ndim"))
        return original(*args, **kwargs)

    monkeypatch.setattr(function, "derivatives_along", counting)
    samples = plotting.sample(function, plotting.parse_over("x=0:1"), {}, 4, 11, tangent_at=0.5)
    assert calls == [1]
    for curve in samples.curves:
        np.testing.assert_allclose(curve.y, 2.0 ** curve.order * np.exp(2 * samples.x), rtol=1e-13)


def test_csv_output_matches_closed_forms_with_other_variables_fixed():
    result = run("x * y^3", "--over", "y=-1:1", "--at", "x=2", "--order", "2", "--samples", "9",
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    header, data = csv_rows(result.output)
    assert header == ["y", "value", "d/dy", "d2/dydy"]
    y = np.linspace(-1, 1, 9)
    np.testing.assert_allclose(data, np.column_stack([y, 2 * y**3, 6 * y**2, 12 * y]), atol=1e-14)


def test_json_output_has_columns_and_the_tangent():
    result = run("x^2", "--over", "x=0:2", "--samples", "3", "--format", "json", "--tangent-at", "x=1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    doc = json.loads(lines[0])
    assert doc["x"] == [0.0, 1.0, 2.0]
    assert doc["value"] == [0.0, 1.0, 4.0]
    assert doc["derivatives"] == [[0.0, 2.0, 4.0]]
    assert doc["tangent"] == {"at": 1.0, "value": 1.0, "slope": 2.0, "intercept": -1.0}
    assert lines[1].startswith("tangent at x = 1: y = 2 x - 1")  # on stderr, mixed in by CliRunner


def test_tangent_equation_values():
    result = run("sin(x)", "--over", "x=-3:3", "--tangent-at", "x=1", "--width", "60", "--height", "16",
                 "--color", "never")
    assert result.exit_code == 0, result.output
    equation = result.output.splitlines()[-1]
    slope, intercept = np.cos(1), np.sin(1) - np.cos(1)
    assert equation == (f"tangent at x = 1: y = {slope:.8g} x + {intercept:.8g}  "
                        f"(f(1) = {np.sin(1):.8g}, f'(1) = {slope:.8g})")
    assert "tangent at x = 1" in result.output.splitlines()[-2]  # its legend entry


# ---------------------------------------------------------------- the terminal picture


def test_terminal_snapshot_at_80_by_24_without_colour():
    result = run("sin(x)", "--over", "x=-3:3", "--width", "80", "--height", "24", "--color", "never")
    assert result.exit_code == 0, result.output
    expected = (SNAPSHOTS / "plot-sin-80x24.txt").read_text(encoding="utf-8")
    assert result.output == expected
    lines = result.output.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    assert "\x1b[" not in result.output


@pytest.mark.parametrize("width,height", [(40, 12), (100, 30), (132, 50)])
def test_terminal_plot_fits_the_size_asked_for(width, height):
    result = run("sin(x)", "--over", "x=-3:3", "--order", "2", "--width", str(width), "--height", str(height),
                 "--color", "never")
    lines = result.output.splitlines()
    assert result.exit_code == 0
    assert height - 2 <= len(lines) <= height
    assert max(len(line) for line in lines) <= width


def test_terminal_size_is_the_default(monkeypatch):
    result = run("sin(x)", "--over", "x=-3:3", "--color", "never", env={"COLUMNS": "50", "LINES": "15"})
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 50 and len(lines) <= 14


def test_colour_always_never_and_no_color(monkeypatch):
    args = ["sin(x)", "--over", "x=-3:3", "--width", "60", "--height", "14"]
    coloured = run(*args, "--color", "always")
    assert "\x1b[34m" in coloured.output and "\x1b[35m" in coloured.output  # one colour per curve
    assert "\x1b[" not in run(*args, "--color", "never").output
    # auto: colour on a terminal (FORCE_COLOR makes rich treat the test's stdout as one) ...
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b[34m" in run(*args).output
    # ... unless NO_COLOR, and then each curve keeps its own mark
    monkeypatch.setenv("NO_COLOR", "1")
    plain = run(*args)
    assert "\x1b[" not in plain.output
    assert "++ f(x) = sin(x)" in plain.output and "xx f'(x) = cos(x)" in plain.output


def test_poles_are_gaps_not_vertical_lines():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 50.0, -50.0, np.inf, 2.0])
    bx, by = plotting.broken(x, y, -10.0, 10.0)
    assert np.isnan(by[2]) and bx[2] == 1.5  # split between +50 and -50
    assert np.isnan(by[4])  # inf became a gap
    assert np.count_nonzero(np.isnan(by)) == 2 and len(by) == 6


def test_window_ignores_a_pole_but_not_ordinary_growth():
    tan = plotting.sample(diffcli.compile("tan(x)"), plotting.parse_over("x=-3:3"), {}, 1, 400)
    lo, hi = plotting.window(tan)
    assert -40 < lo < -2 and 2 < hi < 40
    quintic = plotting.sample(diffcli.compile("x^5"), plotting.parse_over("x=-3:3"), {}, 1, 400)
    lo, hi = plotting.window(quintic)
    assert lo < -243 and hi > 405  # all of x^5 and 5x^4


def test_clipped_cuts_segments_at_the_window_and_leaves_poles_as_gaps():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([0.0, 20.0, 1e300, -100.0, 5.0, np.nan, 1.0])
    cx, cy = plotting.clipped(x, y, -10.0, 10.0)
    pieces = [p for p in np.split(np.column_stack([cx, cy]), np.flatnonzero(np.isnan(cy)) + 1) if len(p)]
    pieces = [p[~np.isnan(p[:, 1])] for p in pieces]
    pieces = [p for p in pieces if len(p)]
    # 0 -> 20 is cut where it leaves the top (x = 0.5); 1e300 -> -1e300 is a pole: nothing;
    # -100 -> 5 comes in at the bottom at x = 3 + 90/105; the nan is a gap
    assert len(pieces) == 2
    np.testing.assert_allclose(pieces[0], [[0.0, 0.0], [0.5, 10.0]])
    np.testing.assert_allclose(pieces[1], [[3 + 90 / 105, -10.0], [4.0, 5.0]])
    assert np.all(np.abs(cy[np.isfinite(cy)]) <= 10.0)


def test_clipped_keeps_a_curve_inside_the_window_as_one_piece():
    x = np.linspace(0, 1, 50)
    cx, cy = plotting.clipped(x, np.sin(x), -2.0, 2.0)
    assert cx[:-1].tolist() == x.tolist() and cy[:-1].tolist() == np.sin(x).tolist() and np.isnan(cy[-1])


def test_ylim_chooses_the_window_and_a_curve_outside_it_is_named():
    result = run("x^2 + 100", "--over", "x=-1:1", "--ylim", "-5:5", "--width", "60", "--height", "14",
                 "--color", "never")
    assert result.exit_code == 0, result.output
    lines = result.stdout.rstrip().splitlines()
    assert lines[-1] == "f(x) = x^2 + 100: outside this window"
    assert any(line.endswith("│ -5") for line in lines)  # the bottom is the --ylim's


@pytest.mark.parametrize("ylim,message", [("5", "--ylim expects FROM:TO"), ("5:-5", "the range must go up"),
                                          ("a:1", "is not a constant")])
def test_a_bad_ylim_is_a_usage_error(ylim, message):
    result = run("x", "--over", "x=0:1", "--ylim", ylim)
    assert result.exit_code == 2 and message in result.stderr


def test_points_is_refused_with_a_hint_to_samples():
    result = run("sin(x)", "--over", "x=0:1", "--points", "5", "--format", "csv")
    assert result.exit_code == 2 and result.stdout == ""
    assert "plot takes --samples N for the number of samples (--points was renamed" in result.stderr
    assert len(run("sin(x)", "--over", "x=0:1", "--samples", "5", "--format", "csv").stdout.splitlines()) == 6


@pytest.mark.parametrize("flags", [["--json"], ["--format", "json"]])
def test_json_flag_and_format_give_the_same_document(flags):
    doc = json.loads(run("x^2", "--over", "x=0:1", "--samples", "3", *flags).stdout)
    assert doc["x"] == [0.0, 0.5, 1.0] and doc["value"] == [0.0, 0.25, 1.0]
    assert doc["derivatives"] == [[0.0, 1.0, 2.0]] and doc["over"]["samples"] == 3


def test_ndjson_is_one_sample_a_line():
    result = run("x^3", "--over", "x=0:2", "--samples", "3", "--order", "2", "--nl")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records == [{"x": 0.0, "value": 0.0, "derivatives": [0.0, 0.0]},
                       {"x": 1.0, "value": 1.0, "derivatives": [3.0, 6.0]},
                       {"x": 2.0, "value": 8.0, "derivatives": [12.0, 12.0]}]
    assert run("1/x", "--over", "x=-1:1", "--samples", "3", "--nl").stdout.splitlines()[1] == \
        '{"x": 0.0, "value": null, "derivatives": [null]}'


def test_two_formats_are_refused():
    result = run("x", "--over", "x=0:1", "--json", "--csv")
    assert result.exit_code == 2 and "choose one output format, not csv and json" in result.stderr


# ---------------------------------------------------------------- figures (matplotlib)


def test_svg_parses_and_has_one_path_per_curve(tmp_path):
    out = tmp_path / "tan.svg"
    result = run("tan(x)", "--over", "x=-3:3", "--order", "2", "--tangent-at", "x=0.5", "--output", str(out))
    assert result.exit_code == 0, result.output
    root = ET.parse(out).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    curves = [g for g in root.iter(ns + "g") if g.get("id", "").startswith("curve-")]
    tangents = [g for g in root.iter(ns + "g") if g.get("id", "").startswith("tangent-")]
    assert len(curves) == 3 and len(tangents) == 1
    for group in curves:
        path = group.find(ns + "path")
        assert path is not None
        # A pole is a gap: each tan curve's path starts afresh (M) once per branch.
        assert path.get("d").count("M") >= 2


def test_png_is_rendered_at_its_size_and_is_not_blank(tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "sin.png"
    result = run("sin(x)", "--over", "x=-pi:pi", "--order", "2", "--output", str(out))
    assert result.exit_code == 0, result.output
    image = imread(out)
    assert image.shape[:2] == (660, 1050)  # 7 x 4.4 inches at 150 dpi
    rgb = image[..., :3]
    not_white = np.any(rgb < 0.9, axis=-1)
    assert 0.01 < not_white.mean() < 0.5
    colours = {tuple(np.round(p, 1)) for p in rgb[not_white][::7]}
    assert len(colours) >= 4  # three curve colours besides black text


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = run("sin(x)", "--over", "x=-3:3", "--output", str(tmp_path / "a.svg"))
    assert result.exit_code == 2
    assert 'pip install "diffcli[plot]"' in result.output
    assert not (tmp_path / "a.svg").exists()


def test_matplotlib_is_not_imported_by_the_cli():
    import subprocess
    import sys

    code = "import sys, diffcli.cli, diffcli.io.plot; print('matplotlib' in sys.modules, 'uniplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---------------------------------------------------------------- vectors: what can be drawn, what cannot


def test_vector_output_draws_each_component():
    result = run("[sin(x), x^2]", "--over", "x=0:1", "--samples", "3", "--format", "csv")
    assert result.exit_code == 0, result.output
    header, data = csv_rows(result.output)
    assert header == ["x", "value[0]", "value[1]", "dvalue[0]/dx", "dvalue[1]/dx"]
    x = np.array([0, 0.5, 1])
    np.testing.assert_allclose(data[:, 1:], np.column_stack([np.sin(x), x**2, np.cos(x), 2 * x]), atol=1e-15)
    picture = run("[sin(x), x^2]", "--over", "x=0:1", "--width", "70", "--height", "16", "--color", "never")
    assert "f[0]" in picture.output and "f[1]'" in picture.output


def test_a_component_of_a_vector_variable():
    result = run("sum(x^2) * y", "--over", "x[1]=-1:1", "--at", "x=[3, 0, 1]", "--at", "y=2",
                 "--order", "2", "--samples", "5", "--format", "csv")
    assert result.exit_code == 0, result.output
    header, data = csv_rows(result.output)
    assert header == ["x[1]", "value", "d/dx[1]", "d2/dx[1]dx[1]"]
    t = np.linspace(-1, 1, 5)
    np.testing.assert_allclose(data[:, 1:], np.column_stack([2 * (10 + t**2), 4 * t, 4 + 0 * t]), atol=1e-14)


@pytest.mark.parametrize("args,message", [
    (["sum(x^2)", "--over", "x=-1:1", "--at", "x=[1, 2]"],
     "x is varied by --over, so it cannot also be fixed with --at (here a 2-vector); to vary one of its "
     "components, write --over 'x[0]=...'"),
    (["sum(x^2)", "--over", "x[0]=-1:1"], "an index needs a vector or matrix variable; give its value with --at"),
    (["sum(x^2)", "--over", "x[2]=-1:1", "--at", "x=[1, 2]"], "no such component of x, which is a 2-vector"),
    (["x^2", "--over", "y=0:1"], "'y' is not a variable of the expression (variables: x)"),
    (["x^2", "--over", "x=1:0"], "the range must go up"),
    (["x^2", "--over", "x=0"], "--over expects NAME=FROM:TO"),
    (["x*y", "--over", "x=0:1"], "no value for variable y: give --at y=..."),
    (["x^2", "--over", "x=0:1", "--tangent-at", "y=1"], "the tangent is along the plotted variable"),
    (["1/x", "--over", "x=-1:1", "--tangent-at", "x=0"], "not finite there"),
    (["x^2", "--over", "x=0:1", "--output", "a.jpg"], "must end in .svg, .png or .pdf"),
    (["x^2", "--over", "x=0:1", "--output", "a.svg", "--format", "csv"], "not both"),
    (["[x, x, x, x]", "--over", "x=0:1", "--order", "2"], "draws at most 6 curves, but this one has 12"),
])
def test_refusals_are_clear_usage_errors(args, message):
    result = run(*args, "--width", "60", "--height", "12")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_parse_over_accepts_constants_and_indices():
    assert plotting.parse_over("x=-pi:2*pi") == plotting.Axis("x", None, -np.pi, 2 * np.pi)
    assert plotting.parse_over("A[1,0]=0:1").label == "A[1,0]"
    with pytest.raises(UsageError, match="whole numbers"):
        plotting.parse_over("x[a]=0:1")


def test_a_pole_is_reported_and_drawn_without_failing():
    result = run("1/x", "--over", "x=-1:1", "--samples", "201", "--width", "60", "--height", "14",
                 "--color", "never")
    assert result.exit_code == 0
    assert "warning: div produced inf" in result.output


@pytest.mark.parametrize("args,message", [
    (["log(x)", "--over", "x=-2:-1", "--order", "1", "--format", "csv", "--at", "y=1"], None),
    (["sqrt(-1 - x*x)", "--over", "x=-2:-1", "--width", "60", "--height", "15"], "nothing to draw"),
    (["x", "--over", "x=0:5e-324"], "too wide or too narrow"),
    (["x", "--over", "x=-1e308:1e308"], "too wide or too narrow"),
    (["x", "--over", "x=0:1", "--output", "/nonexistent/dir/a.svg"], "cannot write /nonexistent/dir/a.svg"),
])
def test_plot_edge_cases_give_messages_not_tracebacks(args, message):
    result = run(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if message:
        assert result.exit_code == 2 and message in result.stderr


def test_a_curve_with_no_finite_sample_is_named_instead_of_drawn():
    result = run("log(x)", "--over", "x=-2:-1", "--width", "60", "--height", "15", "--color", "never")
    assert result.exit_code == 0
    assert result.stdout.rstrip().splitlines()[-1] == "f(x) = log(x): not finite anywhere in this window"
