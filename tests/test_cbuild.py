"""cbuild.py's kernel cache: private, sealed and bounded. Each attack on it (a
library planted by another user, links, umask 000, a damaged or swapped library,
an edited probe verdict, a hung compiler) must leave the numbers the plain steps
give, bit for bit, never run the planted code (its constructor would write a
marker file), and leave the cache private."""

from __future__ import annotations

import ctypes
import os
import re
import stat
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import diffcli
from diffcli.engine import cbuild, native
from diffcli.graph.ops import OPS
from tests.test_native import T1, T2, _assert_same_results, _counting_runs, _plan_of, _values

AS_ROOT = os.geteuid() == 0
NOBODY = 65534


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch, tmp_path_factory):
    """As a new process: nothing loaded, no warning given, no timeout seen; the
    loops built before a batch runs; a cache shared by this module's tests."""
    monkeypatch.setenv("DIFFCLI_NATIVE", "wait")
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cbuild-cache"))
    monkeypatch.setattr(cbuild, "_loaded", {})
    monkeypatch.setattr(cbuild, "_warned", False)
    monkeypatch.setattr(cbuild, "_timed_out", False)


def _plain(expression, values, function=None):
    """The plain steps' result (of `function`, else of a new compile of the expression)."""
    previous = os.environ["DIFFCLI_NATIVE"]
    os.environ["DIFFCLI_NATIVE"] = "0"
    try:
        return (function or diffcli.compile(expression)).grad(values, batch_ndim=1)
    finally:
        os.environ["DIFFCLI_NATIVE"] = previous


def _run(expression, values):
    """(the result with loops allowed, the fusion, the CacheWarnings given)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = diffcli.compile(expression)
        result = f.grad(values, batch_ndim=1)
    return result, _plan_of(f)._fusion, [w for w in caught if issubclass(w.category, cbuild.CacheWarning)]


def _sources(expression, values) -> list[str]:
    """The C sources a run of the expression loads: the probe's and its loops'
    (from the safe shared cache, before a test makes an unsafe one)."""
    f = diffcli.compile(expression)
    _plain(expression, values, f)  # (its plan made, without loops)
    _, _, source = native._regroup(_plan_of(f), native._exact_nodes(native._agreed()))
    return [native._probe_source(), source]


def _planted_library(tmp_path, source: str, marker) -> bytes:
    """A library with the functions of `source` doing nothing (every result left
    as garbage), the right embedded key, and a constructor that writes `marker`."""
    names = re.findall(r"^void (\w+)\(", source, re.M)
    text = (f'#include <stdio.h>\nconst char diffcli_key[] = "{cbuild.key("kernel", source)}";\n'
            f'__attribute__((constructor)) static void planted(void) {{ FILE *f = fopen("{marker}", "w"); '
            'if (f) { fputs("planted code ran", f); fclose(f); } }\n'
            + "".join(f"void {name}(void) {{}}\n" for name in names))
    out = tmp_path / "planted.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), "-x", "c", "-"], input=text, text=True, check=True)
    return out.read_bytes()


def _plant(tmp_path, kernels, sources, marker) -> None:
    """Planted libraries, sealed as diffcli seals them (right key and digest), at
    the names the run will look for: only the directory checks can refuse them."""
    kernels.mkdir(parents=True, exist_ok=True)
    for source in sources:
        name = cbuild.key("kernel", source)
        (kernels / f"{name}.kernel").write_bytes(cbuild.sealed(name, _planted_library(tmp_path, source, marker)))


def _chown_tree(path, uid) -> None:
    os.lchown(path, uid, uid)
    for parent, directories, files in os.walk(path):
        for entry in directories + files:
            os.lchown(os.path.join(parent, entry), uid, uid)


def _belongs_to_another_user(monkeypatch, path) -> None:
    """As root: the tree is given to nobody. Otherwise (where files cannot be
    given away): this process takes another effective uid, so that what it owns
    is another user's to the checks."""
    if AS_ROOT:
        _chown_tree(path, NOBODY)
    else:
        monkeypatch.setattr(cbuild, "_euid", lambda: os.geteuid() + 1)


def _tree_modes(path) -> dict:
    return {str(p): stat.S_IMODE(p.lstat().st_mode) for p in [path, *path.rglob("*")]}


def _assert_private(path) -> None:
    """Every directory 0700 and every file 0600, all regular, all the user's."""
    for p in [path, *path.rglob("*")]:
        st = p.lstat()
        assert st.st_uid == os.geteuid(), p
        if stat.S_ISDIR(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o700, p
        else:
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, p


# ---------------------------------------------------------------- planted libraries under unsafe layouts


def _world_writable_cache_dir(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(cache))
    return cache / "kernels", lambda: cache.chmod(0o777)


def _cache_dir_of_another_user(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(cache))
    return cache / "kernels", lambda: _belongs_to_another_user(monkeypatch, cache)


def _xdg_cache_home(mode, owner_of=None):
    """XDG_CACHE_HOME of this mode; owner_of: another user's, the directory
    itself ("xdg") or the diffcli directory in it ("diffcli")."""
    def layout(monkeypatch, tmp_path):
        xdg = tmp_path / "xdg"
        monkeypatch.delenv("DIFFCLI_CACHE_DIR")
        monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))

        def make_unsafe():
            xdg.chmod(mode)
            if owner_of:
                _belongs_to_another_user(monkeypatch, xdg if owner_of == "xdg" else xdg / "diffcli")
        return xdg / "diffcli" / "kernels", make_unsafe
    return layout


def _symlinked_kernels_dir(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(cache))
    elsewhere = tmp_path / "attacker" / "kernels"
    return elsewhere, lambda: (cache / "kernels").symlink_to(elsewhere)


def _symlinked_cache_root(monkeypatch, tmp_path):
    link = tmp_path / "cache"
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(link))
    elsewhere = tmp_path / "attacker"
    return elsewhere / "kernels", lambda: link.symlink_to(elsewhere)


UNSAFE_LAYOUTS = {
    "world-writable DIFFCLI_CACHE_DIR": _world_writable_cache_dir,
    "cache dir of another user": _cache_dir_of_another_user,
    "XDG_CACHE_HOME 1777, its diffcli made by another user": _xdg_cache_home(0o1777, "diffcli"),
    "XDG_CACHE_HOME 0777": _xdg_cache_home(0o777),
    "XDG_CACHE_HOME of another user": _xdg_cache_home(0o755, "xdg"),
    "symlinked kernels dir": _symlinked_kernels_dir,
    "symlinked cache root": _symlinked_cache_root,
}


@pytest.mark.parametrize("layout", UNSAFE_LAYOUTS)
def test_a_library_planted_in_an_unsafe_layout_never_runs(monkeypatch, tmp_path, layout):
    values = _values("xyz")
    sources = _sources(T2, values)
    marker = tmp_path / "planted-code-ran"
    kernels, make_unsafe = UNSAFE_LAYOUTS[layout](monkeypatch, tmp_path)
    _plant(tmp_path, kernels, sources, marker)
    make_unsafe()
    before = _tree_modes(tmp_path)
    monkeypatch.setattr(native, "_agreement", None)  # the probe's record is looked up too
    runs = _counting_runs(monkeypatch)
    result, fusion, warned = _run(T2, values)
    assert not marker.exists()
    assert runs == [] and fusion.failed and "the kernel cache is not used" in str(warned[0].message)
    assert len(warned) == 1
    _assert_same_results(result, _plain(T2, values))
    after = _tree_modes(tmp_path)
    assert {p: after.get(p) for p in before} == before  # nothing removed or changed
    assert all(mode == (0o700 if os.path.isdir(p) else 0o600) for p, mode in after.items() if p not in before)
    again, _, warned = _run(T1, _values("x"))
    assert warned == [] and not marker.exists()  # one warning per process
    _assert_same_results(again, _plain(T1, _values("x")))


def test_a_world_writable_cache_dir_is_refused_in_one_line_by_the_cli(tmp_path):
    from tests.test_cli import _diffcli_command, _env

    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    rows = "x,y,z\n" + "".join(f"{1 + i / 40_000!r},0.5,-0.25\n" for i in range(40_000))
    outputs = {}
    for mode in ("wait", "0"):
        proc = subprocess.run(_diffcli_command() + ["grad", T2, "--points", "-", "--in", "csv", "--format", "csv"],
                              input=rows, capture_output=True, text=True, timeout=120,
                              env={**_env(), "DIFFCLI_CACHE_DIR": str(cache), "DIFFCLI_NATIVE": mode})
        assert proc.returncode == 0
        outputs[mode] = proc.stdout, proc.stderr
    assert outputs["wait"][0] == outputs["0"][0] and outputs["0"][1] == ""
    (line,) = outputs["wait"][1].splitlines()
    assert line.startswith("warning: the kernel cache is not used") and "writable by others" in line
    assert list(cache.iterdir()) == []


def test_a_sticky_directory_above_the_cache_is_accepted(monkeypatch, tmp_path):
    """In a sticky directory (as /tmp) others may add entries but not rename or
    remove this user's: a cache made there by diffcli is private. (The planted
    variant is refused above: its diffcli directory is another user's.)"""
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    xdg.chmod(0o1777)
    monkeypatch.delenv("DIFFCLI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    values = _values("xyz")
    runs = _counting_runs(monkeypatch)
    result, _, warned = _run(T2, values)
    assert runs and warned == []
    _assert_same_results(result, _plain(T2, values))
    _assert_private(xdg / "diffcli")


def test_a_symlinked_library_file_is_removed_and_rebuilt(monkeypatch, tmp_path):
    values = _values("xyz")
    sources = _sources(T2, values)
    marker = tmp_path / "planted-code-ran"
    cache = tmp_path / "cache"
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(cache))
    _plant(tmp_path, tmp_path / "attacker", sources, marker)
    (cache / "kernels").mkdir(parents=True, mode=0o700)
    for planted in (tmp_path / "attacker").iterdir():
        (cache / "kernels" / planted.name).symlink_to(planted)
    monkeypatch.setattr(native, "_agreement", None)  # the probe's library is loaded too
    runs = _counting_runs(monkeypatch)
    result, _, warned = _run(T2, values)
    assert not marker.exists() and runs and warned == []
    _assert_same_results(result, _plain(T2, values))
    for planted in (tmp_path / "attacker").iterdir():
        library = cache / "kernels" / planted.name
        assert not library.is_symlink() and cbuild.unsealed(library.stem, library.read_bytes()) is not None
    _assert_private(cache / "kernels")


def test_umask_000_still_makes_a_private_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFCLI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "missing" / "cache"))  # made by diffcli too
    monkeypatch.setattr(native, "_agreement", None)
    values = _values("xyz")
    old = os.umask(0)
    try:
        runs = _counting_runs(monkeypatch)
        result, _, _ = _run(T2, values)
    finally:
        os.umask(old)
    assert runs
    _assert_same_results(result, _plain(T2, values))
    _assert_private(tmp_path / "missing")
    assert {p.parent.name for p in (tmp_path / "missing").rglob("*.*")} == {"kernels", "probes"}


# ---------------------------------------------------------------- damaged and swapped libraries


def _cached(expression, values, monkeypatch):
    """Run once (the loops built), then forget the loaded libraries, as a new process would."""
    result, _, _ = _run(expression, values)
    monkeypatch.setattr(cbuild, "_loaded", {})
    return result


def _kernel_file(expression, values):
    name = cbuild.key("kernel", _sources(expression, values)[1])
    return cbuild.cache_dir() / "kernels" / f"{name}.kernel"


def test_a_library_with_flipped_bits_is_rebuilt_not_loaded(monkeypatch, tmp_path):
    """Flipped bits in code could kill every later run (SIGILL): the digest sees them first."""
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path / "cache"))
    values = _values("xyz")
    _cached(T2, values, monkeypatch)
    library = _kernel_file(T2, values)
    whole = library.read_bytes()
    for damaged in (whole[:len(whole) // 2] + bytes(b ^ 0xFF for b in whole[len(whole) // 2:]),
                    whole[:-1], whole[:200], whole + b"\0"):
        library.write_bytes(damaged)
        runs = _counting_runs(monkeypatch)
        result, _, _ = _run(T2, values)
        assert runs
        _assert_same_results(result, _plain(T2, values))
        assert cbuild.unsealed(library.stem, library.read_bytes()) is not None  # rebuilt, sealed
        monkeypatch.setattr(cbuild, "_loaded", {})
    _assert_private(tmp_path / "cache")


def test_another_expressions_library_copied_over_the_name_is_not_used(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)  # positive: no infinities, so no second plan watching for them
    values = {name: rng.uniform(0.5, 2, 40_000) for name in "xyz"}
    other = "x * y - z / (1 + x * x)"
    _cached(T2, values, monkeypatch)
    _cached(other, values, monkeypatch)
    library, donor = _kernel_file(T2, values), _kernel_file(other, values)
    assert library != donor

    library.write_bytes(donor.read_bytes())  # the whole file: its line names the other key
    runs = _counting_runs(monkeypatch)
    result, _, _ = _run(T2, values)
    assert runs
    _assert_same_results(result, _plain(T2, values))

    # Sealed anew under this key (as only someone who can write the cache could):
    # its digest passes, the key it holds does not; the plain steps run.
    monkeypatch.setattr(cbuild, "_loaded", {})
    image = cbuild.unsealed(donor.stem, donor.read_bytes())
    library.write_bytes(cbuild.sealed(library.stem, image))
    runs = _counting_runs(monkeypatch)
    result, fusion, _ = _run(T2, values)
    assert runs == [] and fusion.failed and "another source" in fusion.error
    _assert_same_results(result, _plain(T2, values))
    assert not library.exists()  # and the next run builds it again


def test_the_key_a_library_holds_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    source = "double plus_one(double x) { return x + 1; } /* test_the_key_a_library_holds */"
    library = cbuild.compiled(source)
    assert cbuild._embedded_key(library, 64) == cbuild.key("kernel", source)


# ---------------------------------------------------------------- the probe's verdict


def _sin_one_ulp_up(monkeypatch):
    """NumPy's sin made one ulp off the C library's (on every machine), for the
    plain steps as for the probe."""
    sin = OPS["sin"]
    monkeypatch.setitem(OPS, "sin", sin._replace(kernel=lambda node: lambda x: np.nextafter(np.sin(x), np.inf)))


def test_an_edited_probe_verdict_cannot_change_a_result(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_agreement", None)
    truth = native._agreed()
    (record,) = (tmp_path / "probes").iterdir()
    # Well-formed and sealed (as the user could write it): every function admitted.
    record.write_bytes(cbuild.sealed(record.stem, " ".join(native.library_functions()).encode()))
    _sin_one_ulp_up(monkeypatch)
    monkeypatch.setattr(native, "_agreement", None)
    expression = "sin(x) * cos(y) + tanh(x) * exp(y) + log(1 + x^2) + atan(y) * sinh(x / 4)"
    values = _values("xy")
    runs = _counting_runs(monkeypatch)
    result, _, _ = _run(expression, values)
    assert runs
    _assert_same_results(result, _plain(expression, values))
    assert "sin" not in native._agreement and native._agreement == truth - {"sin", "cos"}
    remembered = cbuild.unsealed(record.stem, record.read_bytes()).decode().split()
    assert remembered == sorted(native._agreement)  # the verdict written again


def test_a_probe_record_that_is_not_sealed_is_probed_again(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_agreement", None)
    truth = native._agreed()
    (record,) = (tmp_path / "probes").iterdir()
    for edited in (" ".join(native.library_functions()).encode(), b"", b"\xff\xfe"):
        record.write_bytes(edited)
        probed = []
        monkeypatch.setattr(native, "_probe", lambda: probed.append(1) or truth)
        monkeypatch.setattr(native, "_agreement", None)
        assert native._agreed() == truth and probed == [1]
        assert cbuild.unsealed(record.stem, record.read_bytes()) == " ".join(sorted(truth)).encode()


def test_a_remembered_verdict_is_spot_checked_cheaply(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_agreement", None)
    truth = native._agreed()
    checked = []
    disagreeing = native._disagreeing
    monkeypatch.setattr(native, "_disagreeing", lambda names, x: checked.append(x.size) or disagreeing(names, x))
    monkeypatch.setattr(native, "_probe", lambda: pytest.fail("probed again"))
    monkeypatch.setattr(native, "_agreement", None)
    assert native._agreed() == truth
    assert len(checked) == 1 and 200 <= checked[0] <= 1000


# ---------------------------------------------------------------- the compiler: bounded, never an orphan


@pytest.fixture
def hung_compiler(monkeypatch, tmp_path):
    """A `cc` that never ends (it even ignores SIGTERM), first on PATH; the
    file it writes its process ids to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pids = tmp_path / "compiler-pids"
    cc = bin_dir / "cc"
    cc.write_text(f"#!/bin/sh\ntrap '' TERM\necho $$ >> {pids}\nsleep 300 &\necho $! >> {pids}\nwait\n")
    cc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cbuild, "COMPILE_TIMEOUT", 0.5)
    monkeypatch.setattr(cbuild, "STOP_GRACE", 0.2)
    monkeypatch.setattr(native, "_agreement", None)
    yield pids
    for pid in pids.read_text().split() if pids.exists() else ():  # (a failed test leaves no orphan either)
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as info:  # a zombie is not running
        return info.read().rsplit(")", 1)[1].split()[0] != "Z"


def _all_ended(pids_file, within: float = 5.0) -> bool:
    pids = [int(line) for line in pids_file.read_text().split()]
    assert pids
    end = time.monotonic() + within
    while any(_alive(pid) for pid in pids) and time.monotonic() < end:
        time.sleep(0.05)
    return not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize("mode", ["wait", "on"])
def test_a_hung_compiler_is_stopped_within_the_bound(monkeypatch, tmp_path, hung_compiler, mode):
    monkeypatch.setenv("DIFFCLI_NATIVE", mode)
    values = _values("xyz")
    start = time.monotonic()
    result, fusion, warned = _run(T2, values)
    took = time.monotonic() - start
    _assert_same_results(result, _plain(T2, values))
    if mode == "on":
        assert took < 0.5  # the batch did not wait for the build
        fusion._building.join(10)
        assert not fusion._building.is_alive()
    else:
        assert took < 0.5 + 2 * 0.2 + 1  # the timeout, the grace before SIGKILL, and some slack
        assert len(warned) == 1 and "took more than 0.5 s" in str(warned[0].message)
    assert fusion.failed and "took more than" in fusion.error
    assert _all_ended(hung_compiler)
    assert cbuild._children == {}
    assert [p.name for p in (tmp_path / "cache" / "kernels").iterdir()] == []
    start = time.monotonic()  # no second wait in this process
    again, fusion, _ = _run(T1, _values("x"))
    if mode == "on":
        fusion._building.join(0.5)
    assert time.monotonic() - start < 0.5 and fusion.failed
    _assert_same_results(again, _plain(T1, _values("x")))


def test_a_compiler_does_not_outlive_diffcli(tmp_path, hung_compiler):
    """A short run starts a build in the background and ends: the compiler is
    stopped with it, and its marker and partial file go."""
    script = textwrap.dedent(f"""
        import numpy as np, diffcli, diffcli.engine.cbuild
        diffcli.engine.cbuild.EXIT_WAIT = 0.5  # (the hung compiler never finishes: only the stop is tested)
        f = diffcli.compile({T2!r})
        f.grad({{k: np.ones(40_000) for k in "xyz"}}, batch_ndim=1)
        import time
        deadline = time.monotonic() + 10
        pids = {str(hung_compiler)!r}
        while time.monotonic() < deadline:
            try:
                if len(open(pids).read().split()) >= 2:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        print("exiting")
    """)
    env = {**os.environ, "DIFFCLI_NATIVE": "on", "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout == "exiting\n", proc.stderr
    assert _all_ended(hung_compiler)
    assert [p.name for p in (tmp_path / "cache" / "kernels").iterdir()] == []


# ---------------------------------------------------------------- the build itself (moved from test_native)


def test_partial_files_of_dead_processes_are_removed(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    old, recent = kernels / "a.kernel.1.2.tmp", kernels / "b.kernel.3.4.tmp"
    for partial in (old, recent):
        partial.write_text("half a library")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    cbuild.compiled("void nothing(void) {}")
    assert not old.exists() and recent.exists()


def test_a_library_another_process_is_building_is_not_built_twice(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    source = "double thrice(double x) { return 3 * x; } /* test_another_process */"
    library = tmp_path / "kernels" / f"{cbuild.key('kernel', source)}.kernel"
    library.parent.mkdir()
    marker = library.with_name(library.name.replace(".kernel", ".building"))
    marker.touch()
    with pytest.raises(cbuild.BuildingElsewhere):
        cbuild.compiled(source)
    assert not library.exists()
    old = time.time() - cbuild.COMPILE_TIMEOUT - 10  # a marker its build left when it died
    os.utime(marker, (old, old))
    thrice = cbuild.compiled(source).thrice
    thrice.restype, thrice.argtypes = ctypes.c_double, (ctypes.c_double,)
    assert thrice(2.0) == 6.0
    assert library.exists() and not marker.exists()


def test_a_compile_that_times_out_leaves_nothing_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path / "cache"))
    scratch = tmp_path / "compiler-scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where gcc keeps its temporary files
    monkeypatch.setattr(cbuild, "COMPILE_TIMEOUT", 0.3)
    body = "\n".join(f"double f{i}(double x) {{ return x * {i} + f{i - 1}(x) / 3; }}" for i in range(1, 20_000))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(cbuild.BuildError, match="took more than"):
            cbuild.compiled("double f0(double x) { return x; }\n" + body)
    assert list(scratch.iterdir()) == []
    assert list((tmp_path / "cache" / "kernels").iterdir()) == []


def test_without_memfd_a_private_temporary_file_is_loaded_and_removed(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.delattr(os, "memfd_create")
    source = "double half(double x) { return x / 2; } /* test_without_memfd */"
    half = cbuild.compiled(source).half
    half.restype, half.argtypes = ctypes.c_double, (ctypes.c_double,)
    assert half(3.0) == 1.5
    assert [p.suffix for p in (tmp_path / "kernels").iterdir()] == [".kernel"]


def test_sigterm_stops_the_compiler_with_diffcli(tmp_path, hung_compiler):
    """A CLI run killed with SIGTERM (a CI timeout, kill) while its build is
    under way exits 143 and takes its compiler with it."""
    from tests.test_cli import _diffcli_command, _env

    # More than one of the CSV reader's 2 MiB blocks: a whole chunk is read while stdin stays open.
    rows = "x,y,z\n" + "".join(f"{1 + i / 40_000!r},0.5,-0.25\n" for i in range(120_000))
    env = {**_env(), "DIFFCLI_NATIVE": "on", "PATH": os.environ["PATH"],
           "DIFFCLI_CACHE_DIR": str(tmp_path / "cache")}
    # The rows through a pipe that stays open: the run is still reading when the
    # compiler has started.
    proc = subprocess.Popen(_diffcli_command() + ["grad", T2, "--points", "-", "--in", "csv", "--chunk", "40000",
                                                   "--format", "csv"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    proc.stdin.write(rows.encode())
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not (hung_compiler.exists() and len(hung_compiler.read_text().split()) >= 2):
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)
    proc.terminate()
    _, errors = proc.communicate(timeout=30)
    assert proc.returncode == 143, errors
    assert b"Traceback" not in errors
    assert _all_ended(hung_compiler)


@pytest.fixture
def slow_compiler(monkeypatch, tmp_path):
    """The machine's compiler behind a one-second delay, first on PATH."""
    real = cbuild._compiler()
    bin_dir = tmp_path / "slow-bin"
    bin_dir.mkdir()
    cc = bin_dir / "cc"
    cc.write_text(f"#!/bin/sh\nsleep 1\nexec {real} \"$@\"\n")
    cc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "kernels"


def _short_run(extra: str = "") -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import numpy as np, diffcli
        f = diffcli.compile({T2!r})
        f.grad({{k: np.ones(40_000) for k in "xyz"}}, batch_ndim=1)  # starts a build, does not wait
        {extra}
        print("done")
    """)
    env = {**os.environ, "DIFFCLI_NATIVE": "on", "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)


def test_a_short_run_leaves_its_build_to_the_next(slow_compiler):
    """A run that ends while its build is under way waits (up to EXIT_WAIT) for
    it to land, so the next run loads it instead of compiling again: without
    that, every short run on a machine started a compile and killed it."""
    proc = _short_run()
    assert proc.stdout == "done\n", proc.stderr
    assert [p.suffix for p in slow_compiler.iterdir()] == [".kernel", ".kernel"]  # the probe's and the plan's


def test_an_interrupted_run_does_not_wait_for_its_build(slow_compiler):
    started = time.monotonic()
    proc = _short_run("import diffcli.engine.cbuild; diffcli.engine.cbuild.abandon_builds()")
    assert proc.stdout == "done\n", proc.stderr
    assert time.monotonic() - started < 1 + 5  # (python and NumPy start; the compile alone is 1 s + gcc)
    assert not slow_compiler.exists() or [p.suffix for p in slow_compiler.iterdir()] != [".kernel", ".kernel"]


def test_a_forked_child_leaves_its_parents_compiler_alone(slow_compiler):
    """The child's exit must not stop the build its parent started."""
    proc = _short_run("import os, time, diffcli.engine.cbuild as c\n"
                      "        while not c._children: time.sleep(0.01)  # fork while a compiler runs\n"
                      "        pid = os.fork()\n"
                      "        if pid == 0:\n"
                      "            import sys\n"
                      "            c.EXIT_WAIT = 0; sys.exit(0)\n"
                      "        os.waitpid(pid, 0)\n")
    assert proc.stdout == "done\n", proc.stderr
    assert [p.suffix for p in slow_compiler.iterdir()] == [".kernel", ".kernel"]
