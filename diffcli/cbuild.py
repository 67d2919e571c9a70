"""Compiling generated C once per machine: a shared library per source, cached on disk.

The cache is DIFFCLI_CACHE_DIR, else $XDG_CACHE_HOME/diffcli, else ~/.cache/diffcli;
a library's name is the hash of its source, the compiler, the flags and the CPU
(-march=native code runs only where it was built). Files are written whole or
not at all (another process may be loading them), a build outlives a process
that ends before it, two processes do not compile the same library at once, and
a cut-short file is rebuilt rather than loaded. Any failure is a BuildError,
after which the caller runs without the library (native.py: the plain steps).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

# -ffp-contract=off: no fused multiply-add, which rounds once instead of twice.
# -fno-math-errno: sqrt is the instruction, the same correctly rounded result.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared")
FORMAT = "1"  # bump when the generated code changes meaning
COMPILE_TIMEOUT = 300  # seconds


class BuildError(Exception):
    pass


def _compiler() -> str | None:
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def cache_dir() -> Path:
    configured = os.environ.get("DIFFCLI_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "diffcli"


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """What the compiled code depends on besides its source: -march=native
    means the CPU's model and features (x86's "flags", ARM's "Features" and
    part numbers), else what the platform module says."""
    import platform

    wanted = ("flags", "Features", "model name", "CPU implementer", "CPU architecture", "CPU variant", "CPU part")
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name.strip() in wanted:
                    found.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return f"{platform.machine()} {platform.system()} {platform.processor()} {sorted(found.items())}"


def key(*parts: str) -> str:
    """A cache key: the parts, and what any compiled code depends on besides its source."""
    compiler = _compiler()
    if compiler is None:
        raise BuildError("no C compiler (cc, gcc or clang) on PATH")
    text = "\0".join((FORMAT, compiler, " ".join(FLAGS), _machine()) + parts)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def write_atomically(path: Path, write) -> None:
    """write(partial path), then the file renamed into place, so that no reader
    (another process) ever sees half of it; the partial file goes on failure.
    Partial files more than an hour old (a process that died meanwhile) go too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    _remove_stale_partials(path.parent)


def _remove_stale_partials(directory: Path) -> None:
    import time

    for stale in directory.glob("*.tmp"):
        try:
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink()
        except OSError:
            pass


class BuildingElsewhere(Exception):
    """Another process (or thread) is compiling this very library: try again later."""


# At most two compilers at once per process (many plans could start builds together).
_compilers = threading.BoundedSemaphore(2)
# The compiler writes a partial file and the shell renames it into place, so the
# build lands (and the next process finds it) even when this process ends first:
# a short command-line run starts a build without waiting for it. The marker
# file says the build is on, so that other processes do not start it again.
_SCRIPT = ('c="$1"; p="$2"; f="$3"; m="$4"; shift 4; '
           '"$c" "$@" -o "$p" -x c - && mv -f "$p" "$f"; s=$?; rm -f "$m"; exit $s')


def compiled(source: str) -> ctypes.CDLL:
    library = cache_dir() / "kernels" / f"{key('kernel', source)}.so"
    if library.exists():
        if _complete(library):
            return ctypes.CDLL(str(library))  # (an OSError here, as on a noexec mount, is a failed build)
        library.unlink()  # cut short (a full disk, a copied cache): loading it could crash the process
    library.parent.mkdir(parents=True, exist_ok=True)
    marker = library.with_name(library.name + ".building")
    _claim(marker)
    partial = library.with_name(f"{library.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with _compilers:
        build = subprocess.Popen(["sh", "-c", _SCRIPT, "sh", _compiler(), str(partial), str(library), str(marker),
                                  *FLAGS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
        try:
            _, errors = build.communicate(source, timeout=COMPILE_TIMEOUT)
        except subprocess.TimeoutExpired:
            _stop(build)
            raise BuildError(f"the C compiler took more than {COMPILE_TIMEOUT} s") from None
        finally:
            if build.returncode != 0:
                for leftover in (partial, marker):
                    if leftover.exists():
                        leftover.unlink()
    if build.returncode != 0:
        raise BuildError(f"the C compiler failed: {errors.strip()[:2000]}")
    _remove_stale_partials(library.parent)
    return ctypes.CDLL(str(library))


def _claim(marker: Path) -> None:
    """Create the marker of a build, or raise BuildingElsewhere while a build of
    the same library (not older than a compile may take) holds it."""
    import time

    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        try:
            fresh = time.time() - marker.stat().st_mtime < COMPILE_TIMEOUT
        except OSError:
            fresh = False
        if fresh:
            raise BuildingElsewhere(str(marker)) from None
        marker.unlink(missing_ok=True)  # left by a build that died
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))


def _stop(build: subprocess.Popen) -> None:
    """End a compile: SIGTERM first (gcc removes its temporary files), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(build.pid, sig)
            build.communicate(timeout=2)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def _complete(library: Path) -> bool:
    """Whether a cached ELF library is whole: the linker puts the section
    header table last, so it must end where the file does. (dlopen of a cut
    file can kill the process with SIGBUS instead of failing.) Other formats pass."""
    import struct

    try:
        with open(library, "rb") as file:
            header = file.read(64)
            size = os.fstat(file.fileno()).st_size
    except OSError:
        return False
    if header[:4] != b"\x7fELF" or len(header) < 64:
        return header[:4] != b"\x7fELF"
    order = "<" if header[5] == 1 else ">"
    wide = header[4] == 2  # 64-bit: e_shoff at 0x28, e_shentsize and e_shnum at 0x3A; 32-bit: 0x20, 0x2E
    (table,) = struct.unpack_from(order + ("Q" if wide else "I"), header, 0x28 if wide else 0x20)
    entry, count = struct.unpack_from(order + "HH", header, 0x3A if wide else 0x2E)
    return table + entry * count == size


def function(library, name: str, arguments: int):
    """A C function taking a count and then pointers."""
    function = getattr(library, name)
    function.argtypes = (ctypes.c_ssize_t,) + (ctypes.c_void_p,) * (arguments - 1)
    function.restype = None
    return function
