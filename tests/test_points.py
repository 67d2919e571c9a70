"""Reading points (and the expression file): every input bounded before it is
read. Bombs, endless lines, undecodable bytes, absurd headers and numbers each
end with one clear line naming where, exit status 3 (2 for the expression),
every good record before them written, no traceback, in bounded memory (the
big ones run in a real process under RLIMIT_AS)."""

from __future__ import annotations

import gzip
import json
import os
import random
import resource
import shlex
import subprocess
import time
import zlib

import pytest
from click.testing import CliRunner

from diffcli.io import points
from diffcli.cli import cli
from diffcli.language.parse import MAX_EXPRESSION_CHARS
from tests.test_cli import _diffcli_command, _env

MEMORY_LIMIT = 1 << 30  # address space of each child: a 3 GB or 10 GiB read would fail loudly
EXPRESSION_BYTES = 4 * MAX_EXPRESSION_CHARS


def run(*args, input=None):
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _limited(args: list, tmp_path, stdin=None, shell_input: str | None = None, timeout=60):
    """diffcli in a real process with at most MEMORY_LIMIT of address space;
    shell_input: a shell command whose output is piped into it."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    command = _diffcli_command() + args
    if shell_input is not None:
        command = ["bash", "-c", f"{shell_input} | {shlex.join(command)}"]
    started = time.monotonic()
    proc = subprocess.run(command, input=stdin, capture_output=True, cwd=tmp_path, env=_env(),
                          preexec_fn=limit, timeout=timeout)
    proc.seconds = time.monotonic() - started
    proc.out, proc.err = proc.stdout.decode(), proc.stderr.decode()
    assert "Traceback" not in proc.err, proc.err
    return proc


def _gzip_bomb(path, prefix: bytes, gib: int, fill: bytes = b"0"):
    """A gzip file of about gib MB that expands to prefix + gib GiB of fill with no
    newline. One MiB of fill is compressed once and full-flushed, so the bytes stand
    alone and can be repeated (deflate's best is about 1,000:1). The CRC in the
    trailer is left 0 (it would mean hashing the GiBs): a reader has to stop long
    before it, and a reader that did not would fail on it, not pass."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    mebibyte = deflate.compress(fill * (1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.flush(zlib.Z_FINISH)
    size = len(prefix) + (gib << 30)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head)
        for _ in range(gib << 10):
            f.write(mebibyte)
        f.write(tail + (0).to_bytes(4, "little") + (size % (1 << 32)).to_bytes(4, "little"))


def test_the_gzip_bomb_builder_makes_what_it_says(tmp_path):
    path = tmp_path / "b.gz"
    _gzip_bomb(path, b"x\n1\n", 1)
    assert path.stat().st_size < 2 << 20
    with gzip.open(path) as f:
        assert f.read(4) == b"x\n1\n"
        assert f.read(100 << 20) == b"0" * (100 << 20)


# ---------------------------------------------------------------- the expression


def test_random_bytes_in_an_expression_file_are_an_error_naming_the_byte(tmp_path):
    """The issue's 175 random-byte files (158 were a traceback): each is exit 2 with one
    error; those that are not UTF-8 name the first bad byte's offset, as Python finds it."""
    rng = random.Random(14)
    path = tmp_path / "e.txt"
    undecodable = 0
    for _ in range(175):
        data = rng.randbytes(rng.randint(1, 200))
        path.write_bytes(data)
        result = run("eval", "-f", str(path), "--at", "x=1")
        assert result.exit_code == 2, (data, result.output)
        assert result.stdout == ""
        assert result.stderr.startswith("diffcli: error: ")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            undecodable += 1
            assert result.stderr.splitlines()[0] == (
                f"diffcli: error: the expression is not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset "
                f"{e.start} ({e.reason})")
    assert undecodable > 150


def test_an_undecodable_expression_file_stdin_and_argument(tmp_path):
    bad = b"x + 1\n+ \xc3("
    (tmp_path / "e.txt").write_bytes(bad)
    want = "diffcli: error: the expression is not UTF-8 text: byte 0xc3 at byte offset 8 (invalid continuation byte)\n"
    for args, stdin in ((["-f", str(tmp_path / "e.txt")], None), (["-f", "-"], bad)):
        result = run("eval", *args, "--at", "x=1", input=stdin)
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", want)
    # The argument arrives from argv with surrogate escapes for its undecodable bytes.
    proc = _limited(["eval", bad, "--at", "x=1"], tmp_path)
    assert (proc.returncode, proc.out, proc.err) == (2, "", want)


def test_an_expression_file_is_read_no_further_than_its_limit(tmp_path):
    """/dev/zero and `yes x+` are endless: refused after the limit plus one byte, at once."""
    want = (f"diffcli: error: -f: the expression is longer than {EXPRESSION_BYTES:,} bytes; diffcli reads "
            f"at most {MAX_EXPRESSION_CHARS:,} characters\n")
    for proc in (_limited(["eval", "-f", "/dev/zero"], tmp_path),
                 _limited(["eval", "-f", "-"], tmp_path, shell_input="yes x+")):
        assert (proc.returncode, proc.out, proc.err) == (2, "", want)
        assert proc.seconds < 20


def test_the_expression_limit_is_exact(tmp_path):
    """limit bytes are read and parsed (and refused by the parser for their length);
    one byte more is refused without parsing."""
    path = tmp_path / "e.txt"
    path.write_bytes(b"1" * EXPRESSION_BYTES)
    result = run("eval", "-f", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"diffcli: error: the expression is {EXPRESSION_BYTES:,} characters long")
    path.write_bytes(b"1" * (EXPRESSION_BYTES + 1))
    result = run("eval", "-f", str(path))
    assert result.exit_code == 2 and "longer than 8,000,000 bytes" in result.stderr


def test_expression_file_errors_name_the_file():
    result = run("eval", "-f", "/nonexistent/e.txt")
    assert result.exit_code == 2
    assert result.stderr == "diffcli: error: -f: cannot read the expression from /nonexistent/e.txt: No such file or directory\n"
    result = run("eval", "-f", "-", "--points", "-", input="x")
    assert result.exit_code == 2 and result.stderr == "diffcli: error: -f - and --points - cannot both read stdin\n"


def test_a_closed_stdin_is_an_error_not_a_traceback(tmp_path):
    for args, want in ((["eval", "-f", "-"], (2, "diffcli: error: -f: cannot read the expression from stdin: stdin is closed\n")),
                       (["eval", "x", "--points", "-"], (3, "diffcli: error: cannot read points from stdin: it is closed\n"))):
        proc = subprocess.run(_diffcli_command() + args, capture_output=True, text=True, cwd=tmp_path,
                              env=_env(), preexec_fn=lambda: os.close(0), timeout=60)
        assert (proc.returncode, proc.stderr) == want and proc.stdout == ""


def test_an_expression_file_with_windows_line_ends_still_reads():
    result = run("grad", "-f", "-", "--at", "x=1", "-q", input=b"r = x*2\r\nr^2\r\n")
    assert (result.exit_code, result.stdout) == (0, "8\n")


# ---------------------------------------------------------------- undecodable points


def test_an_undecodable_record_comes_after_every_good_one(tmp_path):
    proc = _limited(["eval", "x", "--points", "-", "--csv"], tmp_path, stdin=b"x\n1\n\xff\n2\n")
    assert proc.returncode == 3
    assert proc.out == "value\n1.0\n"
    assert "line 3: not UTF-8 text (byte 0xff at byte offset 0 of the line: invalid start byte)\n" in proc.err
    skipped = run("eval", "x", "--points", "-", "--csv", "--skip-bad", input=b"x\n1\n2\xe9\n3\n")
    assert skipped.exit_code == 3 and skipped.stdout == "value\n1.0\n3.0\n"
    assert "line 3: not UTF-8 text (byte 0xe9 at byte offset 1 of the line: invalid continuation byte)" \
        in skipped.stderr


def test_an_undecodable_header_is_bad_data():
    result = run("eval", "x", "--points", "-", "--in", "csv", input=b"\xfex\n1\n")
    assert result.exit_code == 3 and result.stdout == ""
    assert result.stderr == ("diffcli: error: line 1: the header: not UTF-8 text (byte 0xfe at byte offset 0 of "
                             "the line: invalid start byte)\n")


def test_an_undecodable_byte_in_a_json_array_names_its_line():
    result = run("eval", "x", "--points", "-", "--json", input=b'[{"x": 1},\n {"x": 2},\n {"x": \xff}]')
    assert result.exit_code == 3
    assert [r["value"] for r in json.loads(result.stdout)] == [1.0, 2.0]  # the array is closed
    assert "line 3: not UTF-8 text (byte 0xff: invalid start byte); diffcli stops reading here" in result.stderr


def test_a_json_array_is_streamed_in_blocks_that_cut_elements_and_characters(monkeypatch):
    """JSON_BLOCK of 7 characters: every element crosses a block, the same records come out."""
    monkeypatch.setattr(points, "JSON_BLOCK", 7)
    records = [{"x": i, "note": "é" * (i % 5)} for i in range(60)]
    result = run("eval", "2*x", "--points", "-", "--in", "json", "--nl", "--keep", "note",
                 input=json.dumps(records).encode())
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == \
        [{"note": r["note"], "value": 2.0 * r["x"]} for r in records]


def test_a_corrupt_gzip_mid_stream_ends_a_closed_json_array(tmp_path):
    data = gzip.compress(b"x\n" + b"".join(b"%d\n" % i for i in range(50_000)))
    path = tmp_path / "p.csv.gz"
    path.write_bytes(data[:len(data) // 2])
    result = run("eval", "x", "--points", str(path), "--json")
    assert result.exit_code == 3
    values = [r["value"] for r in json.loads(result.stdout)]
    assert values and values == [float(i) for i in range(len(values))]
    assert "cannot read the points: Compressed file ended before the end-of-stream marker was " \
           "reached; diffcli stops reading here" in result.stderr


# ---------------------------------------------------------------- records too long


def test_a_gzip_bomb_with_no_newline_is_refused_at_the_record_limit(tmp_path):
    _gzip_bomb(tmp_path / "bomb.csv.gz", b"x\n1\n", 10)  # 10 MB on disk, 10 GiB inside
    proc = _limited(["eval", "x", "--points", "bomb.csv.gz", "--csv"], tmp_path)
    assert proc.returncode == 3
    assert proc.out == "value\n1.0\n"
    assert ("line 3: a record longer than 67,108,864 characters, the most diffcli reads; it stops "
            "reading here\n") in proc.err
    assert proc.seconds < 30


def test_a_gzip_bomb_inside_a_json_array_is_refused_at_the_record_limit(tmp_path):
    _gzip_bomb(tmp_path / "bomb.json.gz", b'[{"x": 1},\n{"x": 2, "note": "', 10)
    proc = _limited(["eval", "x", "--points", "bomb.json.gz", "--json"], tmp_path)
    assert proc.returncode == 3
    assert [r["value"] for r in json.loads(proc.out)] == [1.0]
    assert "line 2: an array element longer than 67,108,864 characters, the most diffcli reads" in proc.err


def test_an_endless_line_on_stdin_is_refused_at_the_record_limit(tmp_path):
    proc = _limited(["eval", "x", "--points", "-", "--nl"], tmp_path,
                    shell_input="(printf '{\"x\": 1}\\n'; yes 1 | tr -d '\\n')")
    assert proc.returncode == 3
    assert proc.out == '{"value": 1.0}\n'
    assert "line 2: a record longer than 67,108,864 characters" in proc.err


def test_the_record_limit_is_exact_and_stops_the_reading(monkeypatch):
    """A record of exactly the limit is read; one byte more is refused, and nothing after
    it is read, even with --skip-bad (where the next record starts is unknown)."""
    monkeypatch.setattr(points, "MAX_RECORD", 100)
    # The text blocks stay far below the limit, as the real ones do (2 MiB against 64 MiB).
    monkeypatch.setattr(points, "ARROW_BLOCK", 32)
    monkeypatch.setattr(points, "READ_PIECE", 16)
    fits = '{"x": 1, "pad": "' + "a" * (100 - 19) + '"}'
    assert len(fits) == 100
    text = f'{{"x": 0}}\n{fits}\n{fits[:-2]}a"}}\n{{"x": 3}}\n'
    result = run("eval", "x", "--points", "-", "--nl", "--skip-bad", input=text)
    assert result.exit_code == 3
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"value": 0.0}, {"value": 1.0},
        {"line": 3, "error": "a record longer than 100 characters, the most diffcli reads; it stops "
                             "reading here"}]


def test_a_json_array_on_one_line_is_streamed_but_each_element_is_limited(monkeypatch):
    monkeypatch.setattr(points, "MAX_RECORD", 100)
    monkeypatch.setattr(points, "JSON_BLOCK", 64)
    records = [{"x": i} for i in range(200)]  # 2 KB on one line, each element far below 100
    result = run("eval", "x", "--points", "-", "--in", "json", "-q", input=json.dumps(records))
    assert result.exit_code == 0 and result.stdout == "".join(f"{i}\n" for i in range(200))
    result = run("eval", "x", "--points", "-", "--in", "json", "-q",
                 input=json.dumps([{"x": 1}, {"x": 2, "pad": "a" * 100}, {"x": 3}]))
    assert result.exit_code == 3 and result.stdout == "1\n"
    assert "line 1: an array element longer than 100 characters" in result.stderr


def test_a_chunk_ends_at_the_record_limit_of_text(monkeypatch):
    """Many small records make chunks of at most MAX_RECORD of text, whatever --chunk
    says; the results are the same as one big chunk's."""
    monkeypatch.setattr(points, "MAX_RECORD", 50)
    seen = []
    original = points.PointSource.chunks
    monkeypatch.setattr(points.PointSource, "chunks",
                        lambda self: (seen.append(len(c)) or c for c in original(self)))
    text = "x\n" + "".join(f"{i}.25\n" for i in range(100))
    result = run("eval", "x^2", "--points", "-", "--in", "csv", "-q", input=text)
    assert result.exit_code == 0
    assert result.stdout == "".join(f"{(i + 0.25) ** 2}\n" for i in range(100))
    assert len(seen) > 1 and sum(seen) == 100 and max(seen) <= 50 // 5 + 1


# ---------------------------------------------------------------- absurd headers and values


@pytest.mark.parametrize("header,named,count,memory_bomb", [
    ("x[200000000]", "'x[200000000]'", "1 column", True),  # 3 GB of column plan before
    ("x[100000000000]", "'x[100000000000]'", "1 column", True),  # a MemoryError traceback before
    ("x[" + "9" * 5000 + "]", "'x[" + "9" * 38 + "'... (5,003 characters)", "1 column",
     False),  # int() refused 5,000 digits: a traceback before
    ("x[0],x[3]", "'x[3]'", "2 columns", False),
])
def test_a_header_cannot_declare_more_elements_than_it_has_columns(tmp_path, header, named, count,
                                                                   memory_bomb):
    args, text = ["eval", "sum(x)", "--points", "-", "--in", "csv"], f"{header}\n1\n"
    if memory_bomb:
        proc = _limited(args, tmp_path, stdin=text.encode())
        status, out, err = proc.returncode, proc.out, proc.err
    else:
        result = run(*args, input=text)
        status, out, err = result.exit_code, result.stdout, result.stderr
    assert (status, out) == (3, "")
    assert err == (f"diffcli: error: line 1: column {named} names an element past the header's {count} "
                   "(one column per element)\n")


def test_a_matrix_header_with_a_gap_names_the_first_missing_column():
    result = run("eval", "sum(A)", "--points", "-", "--in", "csv", input='"A[0,0]","A[0,1]","A[1,1]","A[2,0]"\n1,2,3,4\n')
    assert result.exit_code == 3
    assert result.stderr == "diffcli: error: line 1: the columns for 'A' are incomplete: no column A[1,0]\n"


@pytest.mark.parametrize("record,message", [
    ('{"x": 1' + "0" * 400 + "}", "line 2: x: an integer too large for a float"),
    ('{"x": [1, 1' + "0" * 400 + "]}", "line 2: x: an integer too large for a float"),
    ('{"x": 1' + "0" * 5000 + "}", "line 2: a number with more than 4,300 digits"),
    ('{"x": ' + "[" * 100_000 + "}", "line 2: JSON nested too deeply to read"),
    ("[" * 100_000, "line 2: JSON nested too deeply to read"),
    ('{"x": "' + "a" * 1_000_000 + '"}', 'line 2: x: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa... '
                                         '(1,000,002 characters) is not a number or an array of numbers'),
])
def test_absurd_ndjson_values_are_bad_records(record, message):
    result = run("eval", "x", "--points", "-", "--in", "ndjson", "-q", input=f'{{"x": 5}}\n{record}\n')
    assert result.exit_code == 3 and result.stdout == "5\n"
    assert result.stderr.splitlines()[0].startswith(message)
    assert len(result.stderr.splitlines()[0]) < 200


def test_absurd_json_array_elements_end_the_array():
    for element, message in (("[" * 100_000, "line 2: JSON nested too deeply to read"),
                             ('{"x": 1' + "0" * 5000 + "}", "line 2: a number with more than 4,300 digits")):
        result = run("eval", "x", "--points", "-", "--in", "json", "--json", input=f'[{{"x": 5}},\n{element}]')
        assert result.exit_code == 3
        assert json.loads(result.stdout) == [{"value": 5.0}]
        assert result.stderr.splitlines()[0].startswith(message)


@pytest.mark.parametrize("cell,message", [
    ('"' + "a" * 200_000 + '"', "line 3: not a valid CSV record (field larger than field limit (131072))"),
    ("[" * 100_000, "line 3: x: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['... (100,000 characters) is "
                    "not a literal like [1, 2, 3]"),
])
def test_absurd_csv_cells_are_bad_records(cell, message):
    result = run("eval", "x", "--points", "-", "--in", "csv", "--csv", "--keep", "id",
                 input=f"id,x\na,5\nb,{cell}\n")
    assert result.exit_code == 3 and result.stdout == "id,value\na,5.0\n"
    assert result.stderr.splitlines()[0] == message


# ---------------------------------------------------------------- NDJSON through polars blocks

_BASE = '{"x": %r, "v": [%r, 2.5, -1], "M": [[1, %r], [0.5, -2]], "id": "p%d"}'
EXPRESSION = "x * sum(v) + sum(M) * x^2"


def _ndjson_points(n=250):
    return [_BASE % (i / 7 + 0.5, -i / 3, i * 1e-7, i) for i in range(n)]


# A line put in the middle of a good file, with what it is: the careful path's verdict
# must come out whichever path reads it (good ones with their values, bad ones named).
ODD_LINES = {
    "a missing key": '{"x": 1, "v": [1, 2, 3]}',
    "a string for a number": '{"x": "1.5", "v": [1, 2, 3], "M": [[1, 2], [3, 4]]}',
    "a boolean for a number": '{"x": true, "v": [1, 2, 3], "M": [[1, 2], [3, 4]]}',
    "a null": '{"x": null, "v": [1, 2, 3], "M": [[1, 2], [3, 4]]}',
    "a vector too short": '{"x": 1, "v": [1, 2], "M": [[1, 2], [3, 4]]}',
    "a ragged matrix": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3]]}',
    "a flat matrix": '{"x": 1, "v": [1, 2, 3], "M": [1, 2, 3, 4]}',
    "a scalar for a vector": '{"x": 1, "v": 3, "M": [[1, 2], [3, 4]]}',
    "a null in a list": '{"x": 1, "v": [1, null, 3], "M": [[1, 2], [3, 4]]}',
    "a boolean in a list": '{"x": 1, "v": [1, true, 3], "M": [[1, 2], [3, 4]]}',
    "not JSON": "not json",
    "an array": "[1, 2, 3]",
    "two objects": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]]}{"x": 2}',
    "a blank line": "",
    "a key twice (json keeps the last)": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "x": 9}',
    "a key twice, once escaped": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "\\u0078": 9}',
    "a key twice, the second null": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "x": null}',
    "an extra key": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "extra": {"x": [1]}}',
    "a variable's name as a string": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "note": "x"}',
    "other key order, odd spaces": '\t{ "M":[[1,2],[3,4]],"v" : [1,2,3] , "x":1 }  ',
    "a colon in a string": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": "a:b"}',
    "-0 (json: the integer 0)": '{"x": -0, "v": [-0, -0.0, 0], "M": [[-0, 2], [3, 4]]}',
    "NaN and Infinity": '{"x": NaN, "v": [1, Infinity, 3], "M": [[1, 2], [3, 4]]}',
    "1e400": '{"x": 1e400, "v": [1, 2, 3], "M": [[1, 2], [3, 4]]}',
    "a 30-digit integer": '{"x": 123456789012345678901234567890, "v": [1, 2, 3], "M": [[1, 2], [3, 4]]}',
    "a 400-digit integer": '{"x": 1' + "0" * 400 + ', "v": [1, 2, 3], "M": [[1, 2], [3, 4]]}',
    "a lone surrogate": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "s": "\\ud800"}',
    "a control character": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "s": "a\tb"}',
    "not UTF-8": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "s": "\udcff"}',
    "a BOM": '\ufeff{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]]}',
    "a CR line end": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]]}\r',
    "a kept number": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": 17}',
    "a kept null": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": null}',
    "a kept list": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": ["a"]}',
    "a kept key twice": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": "a", "id": "b"}',
    "a kept key twice, the second null": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": "a", "id": null}',
    "a kept key nested": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "m": {"id": "a"}}',
    "a kept string with escapes": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": "a\\"b\\\\c\\u00e9\\n"}',
    "a kept lone surrogate": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": "\\ud800"}',
    "a kept surrogate pair": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": "\\ud83d\\ude00"}',
    "a kept non-ASCII string": '{"x": 1, "v": [1, 2, 3], "M": [[1, 2], [3, 4]], "id": "naïve ☃"}',
}


def _with_line(odd: str, at: int = 120) -> bytes:
    lines = _ndjson_points()
    lines[at] = odd
    return "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n"


def _fast_and_careful(monkeypatch, args, data):
    """The command's result by the polars blocks and by the careful path alone, and
    how many blocks polars read."""
    monkeypatch.setattr(points, "ARROW_BLOCK", 2048)
    monkeypatch.setattr(points, "READ_PIECE", 512)
    parse, parsed = points._NdjsonBlocks._parse, []
    monkeypatch.setattr(points._NdjsonBlocks, "_parse",
                        lambda self, text, n: parsed.append(parse(self, text, n)) or parsed[-1])
    fast = run(*args, input=data)
    monkeypatch.setattr(points._NdjsonBlocks, "_parse", lambda self, text, n: None)
    careful = run(*args, input=data)
    return fast, careful, sum(p is not None for p in parsed)


@pytest.mark.parametrize("options", [["--nl"], ["--nl", "--skip-bad"], ["--keep", "id", "--skip-bad", "--nl"],
                                     ["--keep", "id", "--csv"]])
@pytest.mark.parametrize("odd", ODD_LINES)
def test_the_polars_blocks_give_the_careful_path_s_verdict_on_every_odd_line(monkeypatch, odd, options):
    args = ["grad", EXPRESSION, "--points", "-", "--in", "ndjson", *options]
    fast, careful, by_polars = _fast_and_careful(monkeypatch, args, _with_line(ODD_LINES[odd]))
    assert (fast.exit_code, fast.stdout, fast.stderr) == (careful.exit_code, careful.stdout, careful.stderr)
    assert by_polars >= 5  # every block but the odd line's (10 blocks of ~2 KiB)
    assert fast.stdout.count("\n") >= 120


def test_a_default_is_used_only_where_a_record_leaves_its_variable_out(monkeypatch):
    lines = ['{"v": [1, 2, 3], "M": [[1, 2], [3, 4]]}'] * 600
    lines[150] = '{"v": [1, 2, 3], "M": [[1, 2], [3, 4]], "x": 5}'  # its own x wins over --at
    args = ["grad", EXPRESSION, "--points", "-", "--in", "ndjson", "--nl", "--at", "x=2"]
    fast, careful, by_polars = _fast_and_careful(monkeypatch, args, ("\n".join(lines) + "\n").encode())
    assert fast.exit_code == 0 and fast.stdout == careful.stdout and by_polars >= 4
    values = [json.loads(line)["value"] for line in fast.stdout.splitlines()]
    assert values[150] == 5 * 6 + 10 * 25 and values[0] == values[599] == 2 * 6 + 10 * 4


def test_a_good_ndjson_file_never_takes_the_careful_path_and_a_bad_one_only_for_its_block(monkeypatch):
    calls = []
    careful = points._ObjectReader.chunks
    monkeypatch.setattr(points._ObjectReader, "chunks",
                        lambda self, records: calls.append(1) or careful(self, records))
    monkeypatch.setattr(points, "ARROW_BLOCK", 4096)
    monkeypatch.setattr(points, "READ_PIECE", 1024)
    good = ("\n".join(_ndjson_points()) + "\n").encode()
    result = run("grad", EXPRESSION, "--points", "-", "--in", "ndjson", "--nl", input=good)
    assert result.exit_code == 0 and result.stdout.count("\n") == 250 and calls == []
    result = run("grad", EXPRESSION, "--points", "-", "--in", "ndjson", "--nl", "--skip-bad",
                 input=_with_line('{"x": "oops"}', at=200))
    assert result.exit_code == 3 and calls == [1]
    assert result.stderr.startswith("line 201: x: \"oops\" is not a number")


def test_vectors_and_matrices_from_json_lists_are_numpy_s(monkeypatch):
    import numpy as np

    rng = np.random.default_rng(4)
    x, v, M = rng.standard_normal(700), rng.standard_normal((700, 3)), rng.standard_normal((700, 3, 3))
    text = "".join(json.dumps({"x": a, "v": b, "M": c}) + "\n" for a, b, c in zip(x.tolist(), v.tolist(), M.tolist()))
    result = run("grad", "x * (v @ M @ v)", "--points", "-", "--in", "ndjson", "--nl", input=text)
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    quadratic = np.einsum("ni,nij,nj->n", v, M, v)
    np.testing.assert_allclose([r["value"] for r in records], x * quadratic, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([r["gradient"]["x"] for r in records], quadratic, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([r["gradient"]["v"] for r in records],
                               x[:, None] * np.einsum("nij,nj->ni", M + M.transpose(0, 2, 1), v), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([r["gradient"]["M"] for r in records], x[:, None, None] * v[:, :, None] * v[:, None, :],
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the text formats through the real command

T2 = "x*y + sin(y)*z + log(x)*exp(-z) + sqrt(x^2 + y^2 + z^2)"


def _t2_by_hand(x, y, z):
    """T2's value and gradient written out in NumPy (as bench/run.py's scripts do)."""
    import numpy as np

    r, ez, lx, sy = np.sqrt(x * x + y * y + z * z), np.exp(-z), np.log(x), np.sin(y)
    return {"value": x * y + sy * z + lx * ez + r, "x": y + ez / x + x / r, "y": x + np.cos(y) * z + y / r,
            "z": sy - lx * ez + z / r}


def _text_points(path, fmt: str, columns: dict):
    names = list(columns)
    rows = list(zip(*(columns[k].tolist() for k in names)))
    if fmt in ("csv", "tsv"):
        d = "," if fmt == "csv" else "\t"
        path.write_text(d.join(names) + "\n" + "".join(d.join(map(repr, row)) + "\n" for row in rows))
    elif fmt == "ndjson":
        path.write_text("".join(json.dumps(dict(zip(names, row))) + "\n" for row in rows))
    else:  # an element a line, after the "[" on line 1
        path.write_text("[\n" + ",\n".join(json.dumps(dict(zip(names, row))) for row in rows) + "\n]\n")


def _text_results(text: str, fmt: str) -> dict:
    import csv
    import io

    import numpy as np

    if fmt in ("csv", "tsv"):
        rows = list(csv.DictReader(io.StringIO(text), delimiter="," if fmt == "csv" else "\t"))
        return {k: np.array([float(r[k if k == "value" else f"d/d{k}"]) for r in rows]) for k in
                ("value", "x", "y", "z")}
    records = [json.loads(line) for line in text.splitlines()] if fmt == "ndjson" else json.loads(text)
    return {"value": np.array([r["value"] for r in records]),
            **{k: np.array([r["gradient"][k] for r in records]) for k in "xyz"}}


def _real(args: list, **options):
    return subprocess.run(_diffcli_command() + args, capture_output=True, env=_env(), timeout=180, **options)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "ndjson", "json"])
def test_every_text_format_through_the_real_command_is_numpy_s(tmp_path, fmt):
    import numpy as np

    rng = np.random.default_rng(11)
    n = 3000
    columns = {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": rng.uniform(-1, 1, n)}
    path = tmp_path / f"p.{fmt}"
    _text_points(path, fmt, columns)
    proc = _real(["grad", T2, "--points", str(path), "--format", fmt], text=True)
    assert proc.returncode == 0, proc.stderr
    got, want = _text_results(proc.stdout, fmt), _t2_by_hand(**columns)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_awkward_floats_through_the_json_formats_bit_for_bit(tmp_path, fmt):
    """Every finite float64 (signed zeros, subnormals, 1e308, random bit patterns) read
    and written back as the shortest repr: json reads back the same bits."""
    import numpy as np

    from tests.test_render import _awkward_floats

    numbers = _awkward_floats(n_random=3000)
    numbers = numbers[np.isfinite(numbers)]
    path = tmp_path / f"p.{fmt}"
    _text_points(path, fmt, {"x": numbers})
    proc = _real(["eval", "x", "--points", str(path), "--format", fmt], text=True)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()] if fmt == "ndjson" else json.loads(proc.stdout)
    back = np.array([r["value"] for r in records])
    assert np.array_equal(back.view(np.uint64), numbers.view(np.uint64))
    assert proc.stdout.startswith("{" if fmt == "ndjson" else "[\n{")
    assert '"value": -0.0}' in proc.stdout and '"value": 5e-324}' in proc.stdout


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_a_bad_record_in_the_middle_of_100000_json_records(tmp_path, fmt):
    """Exit 3, the exact line, and every good record before it written, through the
    real command (NDJSON: polars rejects the block, the careful path names the line)."""
    import numpy as np

    rng = np.random.default_rng(12)
    n = 100_000
    columns = {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": rng.uniform(-1, 1, n)}
    path = tmp_path / f"p.{fmt}"
    _text_points(path, fmt, columns)
    lines = path.read_text().split("\n")
    line = 50_001 if fmt == "ndjson" else 50_002  # a JSON array: "[" on line 1
    lines[line - 1] = '{"x": 1.5, "y": "oops", "z": 0.25}' + ("," if fmt == "json" else "")
    path.write_text("\n".join(lines))
    proc = _real(["grad", T2, "--points", str(path), "--format", fmt], text=True)
    assert proc.returncode == 3
    assert proc.stderr.startswith(f'line {line}: y: "oops" is not a number'), proc.stderr
    assert "after 50,000 good points" in proc.stderr
    got = _text_results(proc.stdout, fmt)
    want = _t2_by_hand(**{k: v[:50_000] for k, v in columns.items()})
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-13, atol=1e-15)


def test_json_formats_are_the_same_whatever_the_chunk_and_block_sizes(tmp_path, monkeypatch):
    """NDJSON and JSON in, NDJSON and JSON out: polars' blocks, the evaluator's chunks
    and the writers' per-point and by-column paths cut anywhere, the same text; the
    same text, too, as the CSV reader's results."""
    import numpy as np

    rng = np.random.default_rng(13)
    n = 600  # more than COLUMNAR_ROWS: the writers take both paths
    columns = {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": rng.uniform(-1, 1, n)}
    for fmt in ("csv", "ndjson", "json"):
        _text_points(tmp_path / f"p.{fmt}", fmt, columns)
    cases = [(fmt, out, chunk, block) for fmt in ("ndjson", "json") for out in ("ndjson", "json")
             for chunk in (7, 550, 65536) for block in [(points.ARROW_BLOCK, points.READ_PIECE)]]
    cases += [("ndjson", "ndjson", 1, (points.ARROW_BLOCK, points.READ_PIECE)), ("json", "json", 1, (0, 0))]
    cases += [("ndjson", out, chunk, block) for out in ("ndjson", "json") for chunk in (7, 65536)
              for block in [(4096, 1024), (700, 100)]]
    references = {out: run("grad", T2, "--points", str(tmp_path / "p.csv"), "--format", out).stdout
                  for out in ("ndjson", "json")}
    assert references["ndjson"].count("\n") == n and references["json"].count("\n") == n + 2
    for fmt, out, chunk, (block, piece) in cases:
        if block:
            monkeypatch.setattr(points, "ARROW_BLOCK", block)
            monkeypatch.setattr(points, "READ_PIECE", piece)
        result = run("grad", T2, "--points", str(tmp_path / f"p.{fmt}"), "--format", out, "--chunk", str(chunk))
        assert result.exit_code == 0 and result.stdout == references[out], (fmt, out, chunk, block)


# ---------------------------------------------------------------- issue 15: NDJSON as bytes


@pytest.mark.parametrize("fmt", ["csv", "tsv", "ndjson", "json", "parquet"])
def test_a_kept_lone_surrogate_is_a_bad_record_in_every_output(tmp_path, fmt):
    """'\\ud800' decodes to half a UTF-16 pair, which neither UTF-8 text nor an Arrow
    string can hold: the record is bad data (its line, exit 3, the good points written),
    not a UnicodeEncodeError traceback; --skip-bad goes on past it."""
    path = tmp_path / "p.ndjson"
    path.write_text('{"x": 1.0, "id": "a"}\n{"x": 2.0, "id": "\\ud800"}\n{"x": 3.0, "id": "\\ud83d\\ude00"}\n')
    out = tmp_path / f"out.{fmt}"
    args = ["grad", "x^2", "--points", str(path), "--keep", "id", "--format", fmt, "--output", str(out)]
    for extra, ids in [([], ["a"]), (["--skip-bad"], ["a", "\U0001F600"])]:
        proc = subprocess.run(_diffcli_command() + args + extra, capture_output=True, text=True, env=_env(),
                              timeout=60)
        assert proc.returncode == 3 and "Traceback" not in proc.stderr
        assert proc.stderr.splitlines()[0] == ('line 2: "id": "\\ud800" holds a lone surrogate (\\ud800, half '
                                               'of a UTF-16 pair), which is not text that diffcli can write')
        assert _kept_ids(out, fmt) == ids


def _kept_ids(path, fmt: str) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).column("id").to_pylist()
    text = path.read_text(encoding="utf-8")
    if fmt in ("csv", "tsv"):
        return [line.split("," if fmt == "csv" else "\t")[0] for line in text.splitlines()[1:]]
    records = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
    return [r["id"] for r in records if "id" in r]


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_json_records_written_as_bytes_keep_a_full_disk_and_head_quiet(tmp_path, fmt):
    """From COLUMNAR_ROWS points the JSON writers write polars' bytes to stdout's binary
    buffer: a full disk is still one line and status 4, a closed pipe still quiet, and
    the text is the per-point writers' (a batch of 1 point each)."""
    path = tmp_path / "p.ndjson"
    path.write_text("".join(f'{{"x": {i / 7!r}, "id": "p{i}"}}\n' for i in range(3000)))
    command = " ".join(_diffcli_command()) + f" grad 'x^2' --points {path} --keep id --format {fmt}"
    proc = subprocess.run(["bash", "-c", command + " > /dev/full"], capture_output=True, text=True, env=_env(),
                          timeout=60)
    assert (proc.returncode, proc.stderr) == (4, "diffcli: cannot write output: No space left on device\n")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command + " | head -1"], capture_output=True,
                          text=True, env=_env(), timeout=60)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout.strip() in ('[', '{"id": "p0", "value": '
                                                                                 '0.0, "gradient": {"x": 0.0}}')
    whole = subprocess.run(_diffcli_command() + shlex.split(command)[len(_diffcli_command()):], capture_output=True,
                           env=_env(), timeout=60).stdout
    one_by_one = subprocess.run(_diffcli_command() + shlex.split(command)[len(_diffcli_command()):] + ["--chunk", "1"],
                                capture_output=True, env=_env(), timeout=60).stdout
    assert whole == one_by_one and whole.count(b'"id": "p') == 3000


def test_a_bom_on_the_first_line_is_refused_by_the_blocks_as_by_the_careful_path(monkeypatch):
    """The blocks are bytes, and json.loads takes bytes after a BOM (or in UTF-16) where
    it refuses the text: the first record is read as text, so the verdict is the careful one."""
    args = ["grad", EXPRESSION, "--points", "-", "--in", "ndjson", "--nl"]
    data = "\ufeff".encode() + _with_line(ODD_LINES["a kept number"])
    fast, careful, _ = _fast_and_careful(monkeypatch, args, data)
    assert (fast.exit_code, fast.stdout, fast.stderr) == (careful.exit_code, careful.stdout, careful.stderr)
    assert fast.exit_code == 3 and fast.stderr.startswith("line 1: not valid JSON (Unexpected UTF-8 BOM")
