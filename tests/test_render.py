"""render.py: the pieces a big result is written in add up to the text the
whole-string code wrote, long tables stay aligned, and a closed pipe under a
rich Console is a BrokenPipeError (as for every other writer)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from diffcli import api
from diffcli.io import render


def _result(kind, expression, at, **request):
    return api.compile(expression).compute(kind, at, **request)


@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (3, 4), (2, 3, 4), (1, 1, 1), (2, 0, 3), (3, 70)])
@pytest.mark.parametrize("per_piece", [1, 2, 5, 64, 65536])
def test_json_array_pieces_add_up_to_json_dumps(shape, per_piece):
    array = np.random.default_rng(1).standard_normal(shape)
    if array.size > 1:
        array.flat[1] = np.nan
        array.flat[-1] = -np.inf
    pieces = list(render.json_array_pieces(array, per_piece))
    assert "".join(pieces) == json.dumps(render.to_json_value(array))
    if array.size > per_piece:  # really written in pieces, none much longer than asked
        assert len(pieces) > 1


def test_json_document_pieces_are_the_document():
    at = {"x": np.linspace(0, 1, 80)}
    result = _result("jacobian", "cumsum(x) * x[0]", at)
    text = "".join(render.json_document_pieces("cumsum(x) * x[0]", at, result))
    doc = json.loads(text)
    assert list(doc) == ["expression", "at", "value", "jacobian"]
    np.testing.assert_array_equal(doc["jacobian"]["x"], result.derivatives["x"])  # 6,400 > _SMALL: a hole
    assert text == json.dumps(doc)  # the same spelling as one json.dumps


def test_quiet_pieces_are_one_number_per_line():
    result = _result("gradient", "sum(x^2)", {"x": np.arange(5.0)})
    pieces = list(render.quiet_pieces(result, numbers_per_piece=2))
    assert len(pieces) == 3
    assert "".join(pieces) == "0\n2\n4\n6\n8\n"


def test_a_wide_csv_row_is_written_in_pieces_with_the_same_text(monkeypatch):
    result = _result("jacobian", "[x * y, sin(y), x]", {"x": 2.0, "y": 3.0}).with_batch_axis()
    whole = io.StringIO()
    render.DelimitedWriter(whole, ",").write(result, {"id": ["a,b"]})
    monkeypatch.setattr(render, "WIDE", 2)
    pieces = io.StringIO()
    render.DelimitedWriter(pieces, ",").write(result, {"id": ["a,b"]})
    assert pieces.getvalue() == whole.getvalue()
    header, row = whole.getvalue().splitlines()
    assert header.startswith('id,value[0],value[1],value[2]') and row.startswith("\"a,b\",6.0,")


def _render(console_width, tables):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=console_width, color_system=None)
    for table in tables:
        console.print(table)
    return console.file.getvalue()


def test_a_long_table_is_drawn_in_aligned_blocks(monkeypatch):
    result = _result("jacobian", "x^2", {"x": np.array([1.0, -2.0, 30.0, 4.5, 1e-7])})
    (leaf,) = render.leaves(result)[1:]
    one = _render(120, render._leaf_tables(leaf, 6))
    monkeypatch.setattr(render, "TABLE_BLOCK", 2)
    blocks = list(render._leaf_tables(leaf, 6))
    assert len(blocks) == 3
    text = _render(120, blocks)
    rows = [line.rstrip() for line in text.splitlines() if line.strip().startswith("value[")]
    assert [r.split() for r in rows] == [line.split() for line in one.splitlines()
                                          if line.strip().startswith("value[")]
    assert len({len(r) for r in rows}) == 1  # every block has the same column widths
    assert rows[4].split()[-1] == "2e-07"


def test_a_closed_pipe_under_rich_is_broken_pipe_error():
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    console = render.new_console(file=ClosedPipe(), color_system=None)
    with pytest.raises(BrokenPipeError):  # rich's own Console exits with status 1 here
        console.print("x")


def test_a_constant_vector_node_is_labelled():
    function = api.compile("[1] + x")
    graph, root = function.graph({"x": (1,)})
    labels = [render.node_label(node) for node in [root, *root.args]]
    assert any(label.endswith("const 1 1") for label in labels), labels


def _awkward_floats(n_random=20_000, seed=3):
    """Floats whose text is easy to get wrong: signed zeros, subnormals, the ends of
    the range, both sides of repr's switches to an exponent (1e-4, 1e16), non-finite,
    and random bit patterns (every exponent)."""
    rng = np.random.default_rng(seed)
    named = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 1e308,
             1.7976931348623157e308, -1.7976931348623157e308, 1e16, 9999999999999998.0, 1e15, 1e22,
             1e-4, 9.999999999999999e-05, 1e-5, 0.1, 1 / 3, 100.0, -2.5, 123456789.0,
             float("nan"), float("inf"), float("-inf")]
    bits = rng.integers(0, 2**64 - 1, n_random, dtype=np.uint64, endpoint=True)
    return np.concatenate([named, bits.view(np.float64), rng.standard_normal(n_random)])


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_columnar_number_text_is_python_repr_exactly(delimiter):
    numbers = _awkward_floats()
    matrix = np.stack([numbers, numbers[::-1], -numbers], axis=1)
    expected = "".join(delimiter.join(map(repr, row)) + "\n" for row in matrix.tolist())
    assert render.rows_text(matrix, delimiter) == expected


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_columns_without_exponents_written_as_floats_are_python_repr_exactly(delimiter):
    """Rows with no number that repr writes with an exponent (nor nan) are written
    by polars as floats, not cast to text, and a few rows with some by repr between
    them: still repr's text, bit patterns of every exponent in repr's positional
    range and its edges included."""
    numbers = _awkward_floats(200_000, seed=4)
    size = np.abs(numbers)
    with np.errstate(invalid="ignore"):
        positional = numbers[((size >= 1e-4) & (size < 1e16)) | (size == 0) | np.isinf(size)]
    assert positional.size > 100_000 and {1e-4, 9999999999999998.0, -0.0, float("inf")} <= set(positional.tolist())
    matrix = np.stack([positional, positional[::-1], np.round(positional, 3)], axis=1)
    expected = "".join(delimiter.join(map(repr, row)) + "\n" for row in matrix.tolist())
    assert render.rows_text(matrix, delimiter) == expected
    # A few rows with an exponent or a nan (the first, two in a row, the last): by repr, between float rows.
    for row, value in [(0, 1e-05), (1, float("nan")), (2, 1.5e-07), (5000, 1e16), (len(matrix) - 1, -2e-300)]:
        matrix[row, row % 3] = value
    expected = "".join(delimiter.join(map(repr, row)) + "\n" for row in matrix.tolist())
    assert render.rows_text(matrix, delimiter) == expected


def test_a_long_csv_is_the_same_text_as_a_short_one():
    """From COLUMNAR_ROWS rows on the CSV writer formats by column; the text is the same."""
    numbers = _awkward_floats(n_random=1000)
    matrix = np.stack([numbers, -numbers], axis=1)
    assert len(matrix) >= render.COLUMNAR_ROWS
    columnar, by_row = io.StringIO(), io.StringIO()
    render.DelimitedWriter(columnar, ",")._write_rows(matrix, {})
    render.DelimitedWriter(by_row, ",")._write_rows(matrix[:1], {})
    for start in range(1, len(matrix), render.COLUMNAR_ROWS - 1):
        render.DelimitedWriter(by_row, ",")._write_rows(matrix[start:start + render.COLUMNAR_ROWS - 1], {})
    assert columnar.getvalue() == by_row.getvalue()


def _awkward_results(n):
    """A batched result of each kind, every array full of _awkward_floats."""
    from diffcli.api import Result

    numbers = _awkward_floats(n_random=n)
    rng = np.random.default_rng(7)

    def awkward(*shape):  # the named awkward ones first, then random ones, as many as it takes
        cycled = np.resize(np.concatenate([numbers[:24], rng.permutation(numbers)]), n * int(np.prod(shape)))
        return cycled.reshape((n, *shape))
    shapes = {"x": (), "v": (3,), "M": (2, 2)}
    yield Result(awkward(), "value")
    for kind in ("gradient", "vjp", "hvp"):
        yield Result(awkward(), kind, {"x": awkward(), "v": awkward(3), "M": awkward(2, 2)}, shapes=shapes)
    yield Result(awkward(2), "jacobian", {"x": awkward(2), "v": awkward(2, 3), "M": awkward(2, 2, 2)}, shapes=shapes)
    yield Result(awkward(), "hessian", {"x": {"x": awkward(), "v": awkward(3)}, "v": {"x": awkward(3),
                                                                                   "v": awkward(3, 3)}}, shapes=shapes)
    yield Result(awkward(2), "derivative", {"v": awkward(2, 3, 3)}, order=2, shapes=shapes)
    yield Result(awkward(2), "jvp", jvp=awkward(2), shapes=shapes)


@pytest.mark.parametrize("separator", ["\n", ",\n"])
def test_columnar_json_records_are_the_per_point_text_exactly(separator):
    """Every kind, vectors and matrices, random bit patterns, -0.0, subnormals, 1e308,
    nan and inf (null): polars' records are _record_texts' byte for byte."""
    n = 3000
    prefixes = [f'{{"id": {json.dumps(f"p{i}")}, ' for i in range(n)]
    for result in _awkward_results(n):
        per_point = render._record_texts(result)
        assert render.records_text(result, separator) == "".join(r + separator for r in per_point).encode()
        assert render.records_text(result, separator, prefixes) == "".join(
            p + r[1:] + separator for p, r in zip(prefixes, per_point)).encode()
        assert any("null" in r for r in per_point[:50])  # nan and inf among the first points


@pytest.mark.parametrize("writer", [render.NdjsonWriter, render.JsonArrayWriter])
def test_a_long_json_batch_is_the_same_text_as_short_ones(writer):
    """From COLUMNAR_ROWS points on the JSON writers build records by column; the text
    is the same as batches of fewer (and reads back bit for bit)."""
    for result in _awkward_results(1500):
        whole, pieces = io.StringIO(), io.StringIO()
        w = writer(whole)
        w.write(result, {"id": [f"p{i}" for i in range(1500)]})
        w.close()
        w = writer(pieces)
        for start in range(0, 1500, 400):
            w.write(_batch_slice(result, start, start + 400), {"id": [f"p{i}" for i in range(start, start + 400)]})
        w.close()
        assert whole.getvalue() == pieces.getvalue()
    records = [json.loads(line) for line in whole.getvalue().strip("[]\n").split(",\n")] \
        if writer is render.JsonArrayWriter else [json.loads(line) for line in whole.getvalue().splitlines()]
    got = np.array([r["jvp"] for r in records], dtype=np.float64)
    want = np.asarray(result.jvp)
    finite = np.isfinite(want)
    assert np.array_equal(got[finite].view(np.uint64), want[finite].view(np.uint64))  # -0.0 and subnormals too
    assert np.isnan(got[~finite]).all()


def _batch_slice(result, start, stop):
    def cut(tree):
        return {k: cut(v) for k, v in tree.items()} if isinstance(tree, dict) else tree[start:stop]
    return result.replace(value=result.value[start:stop], derivatives=cut(result.derivatives),
                          jvp=None if result.jvp is None else result.jvp[start:stop])


@pytest.mark.parametrize("rows", [0, 3, render.COLUMNAR_ROWS - 1, render.COLUMNAR_ROWS, 2000])
@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_delimited_text_is_a_quoted_header_and_repr_rows_on_either_side_of_the_columnar_path(rows, delimiter):
    """What plot's CSV and DelimitedWriter share: labels quoted only where they must
    be, then each row of numbers as repr writes it, whether repr or polars writes it."""
    numbers = _awkward_floats(rows, seed=rows)[:rows]
    matrix = np.stack([numbers, -numbers], axis=1)
    labels = ['x[0]', 'say "hi", or\ttab']
    quoted = {",": 'x[0],"say ""hi"", or\ttab"', "\t": 'x[0]\t"say ""hi"", or\ttab"'}[delimiter]
    expected = quoted + "\n" + "".join(delimiter.join(map(repr, row)) + "\n" for row in matrix.tolist())
    assert render.delimited_text(labels, matrix, delimiter) == expected


# ---------------------------------------------------------------- graph: DOT and data with values and adjoints


def _graph(*args):
    from click.testing import CliRunner

    from diffcli.cli import cli

    return CliRunner().invoke(cli, ["graph", *args])


def test_graph_dot_at_a_point_puts_values_and_adjoints_in_the_labels():
    result = _graph("x*y", "--dot", "--at", "x=1,y=2")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert '  n0 [label="#0 var x\\nvalue 1\\nadjoint 2"];' in lines  # d(x*y)/dx = y
    assert '  n1 [label="#1 var y\\nvalue 2\\nadjoint 1"];' in lines  # d(x*y)/dy = x
    assert '  n2 [label="#2 mul\\nvalue 2\\nadjoint 1"];' in lines
    assert "  n0 -> n2;" in lines and "  n1 -> n2;" in lines
    assert '  n0 [label="#0 var x"];' in _graph("x*y", "--dot").stdout.splitlines()  # no point: no numbers


def test_graph_json_gives_nodes_edges_values_and_adjoints():
    doc = json.loads(_graph("cos(x) + sin(x)", "--at", "x=2", "--format", "json").stdout)
    ops = {node["op"]: node for node in doc["nodes"]}
    assert doc["output"] == ops["add"]["id"] and ops["var"]["name"] == "x"
    assert sorted(map(tuple, doc["edges"])) == sorted(
        [(ops["var"]["id"], ops["cos"]["id"]), (ops["var"]["id"], ops["sin"]["id"]),
         (ops["cos"]["id"], ops["add"]["id"]), (ops["sin"]["id"], ops["add"]["id"])])
    assert ops["cos"]["value"] == math.cos(2) and ops["sin"]["value"] == math.sin(2)
    assert ops["var"]["adjoint"] == pytest.approx(math.cos(2) - math.sin(2), rel=1e-15)
    assert ops["cos"]["adjoint"] == 1.0 and doc["backward_order"][0] == doc["output"]
    plain = json.loads(_graph("x*y").stdout)  # off a terminal, JSON is the default
    assert [n["op"] for n in plain["nodes"]] == ["var", "var", "mul"] and "value" not in plain["nodes"][0]


def test_graph_ndjson_and_csv_are_a_record_per_node():
    records = [json.loads(line) for line in _graph("x*y", "--at", "x=3,y=4", "--nl").stdout.splitlines()]
    assert [(r["id"], r["args"], r["value"], r["adjoint"]) for r in records] == \
        [(0, [], 3.0, 4.0), (1, [], 4.0, 3.0), (2, [0, 1], 12.0, 1.0)]
    csv = _graph("sum(log(x)*y)", "--at", "x=0,y=[1,2]", "--csv").stdout.splitlines()
    assert csv[0] == "id,op,label,shape,args,value,adjoint"
    assert "1,log,#1 log,,0,-inf,3.0" in csv and '2,var,#2 var y 2,2,,"[1.0, 2.0]","[-inf, -inf]"' in csv


def test_graph_refuses_two_formats():
    result = _graph("x", "--dot", "--json")
    assert result.exit_code == 2 and "choose one output format, not dot and json" in result.stderr


# ---------------------------------------------------------------- tables: rich's layout, in column blocks


def _rich_table_text(matrix: bool, headers, rows) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if matrix:
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 2))
        table.add_column(headers[0])
        for header in headers[1:]:
            table.add_column(header, justify="right")
    else:
        table = Table(show_header=False, box=None, padding=(0, 1, 0, 2))
        table.add_column()
        table.add_column(justify="right")
    for row in rows:
        table.add_row(*row)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(table)
    return "".join(line.rstrip() + "\n" for line in console.file.getvalue().splitlines())


@pytest.mark.parametrize("matrix", [True, False])
def test_grid_text_is_what_rich_tables_drew_without_trailing_spaces(matrix):
    headers = ["", "x[0]", "x[10]"] if matrix else ["", ""]
    rows = [["value[0]", "2", "-0.41614684"], ["value[11]", "1e-07", "0"]] if matrix else \
        [["value[0]", "2"], ["d2/dx[0]dy[1]", "-1.5e+300"]]
    widths = [max(len(c) for c in column) for column in zip(headers, *rows)]
    text = render.grid_text(matrix, headers, rows, widths).plain
    assert text == _rich_table_text(matrix, headers, rows)


def test_column_blocks_keep_the_labels_and_fit_the_room():
    widths = [8] + [10] * 9  # a label column and nine of numbers: 3 + 1 padding and divider each
    blocks = render.column_blocks(widths, 1, 60, 1)
    assert all(block[0] == 0 for block in blocks)
    assert [c for block in blocks for c in block[1:]] == list(range(1, 10))  # each column once, in order
    assert all(sum(widths[c] + 4 for c in block) <= 60 for block in blocks) and len(blocks) == 3
    assert render.column_blocks([30, 50], 1, 20, 1) == [[0, 1]]  # a column wider than the room still gets a block
