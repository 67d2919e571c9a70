"""Compiling generated C once per machine: a shared library per source, cached on disk.

The cache is DIFFCLI_CACHE_DIR, else $XDG_CACHE_HOME/diffcli, else ~/.cache/diffcli;
a library's key is the hash of its source, the compiler, the flags and the CPU
(-march=native code runs only where it was built). Any failure is a BuildError,
after which the caller runs without the library (native.py: the plain steps).

What a library can do inside the process is what anyone who can write the cache
could make it do, so the cache is private and every library is checked:

- Private. Every directory diffcli makes is 0700 and every file 0600, whatever
  the umask. Before each use the cache root and its kernels/ and probes/ are
  opened without following links and must belong to the effective user and be
  writable by no one else; every directory above the root must belong to that
  user or root and be writable by no one else unless it is sticky (as /tmp:
  others may not rename what is not theirs there). Otherwise the cache is
  refused, with one CacheWarning per process, and nothing is loaded or built.
  Work below the root goes through directory descriptors (dir_fd), so renaming
  a directory after its check redirects nothing.
- Sealed. A cached library is one file, written whole by diffcli (renamed into
  place): a line with its key and the SHA-256 of the library, then the library.
  It is read once through a descriptor opened without following links; if the
  line does not match (bits flipped, cut short, another key's file copied over
  this name, a link, not the user's file) the file is removed and rebuilt. The
  bytes checked are the bytes loaded: they are copied into a fresh anonymous
  file (memfd, else a private temporary file removed after loading) which is
  dlopen-ed, so nothing can swap the file between the check and the load. Each
  library also holds its key as data (diffcli_key), checked after loading.
- Bounded. A compile (and its wait for one of the two compiler slots) takes at
  most COMPILE_TIMEOUT seconds; after a timeout the process compiles nothing
  more (a hung compiler holds up one run by at most that, DIFFCLI_NATIVE=wait
  included). Compilers run in their own process group, which is stopped when
  diffcli exits, after at most EXIT_WAIT seconds for builds under way to land
  (none if the run was interrupted: abandon_builds), so no compiler is left an
  orphan and a short run still leaves its build to the next. Two processes do
  not compile the same library at once (a marker file).
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import functools
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
import warnings
from pathlib import Path

# -ffp-contract=off: no fused multiply-add, which rounds once instead of twice.
# -fno-math-errno: sqrt is the instruction, the same correctly rounded result.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared")
FORMAT = "2"  # bump when the generated code or the cache's files change meaning
COMPILE_TIMEOUT = 60  # seconds, waiting for a compiler slot included
STOP_GRACE = 2  # seconds between SIGTERM (gcc removes its temporary files) and SIGKILL
# At the end of a run, a build under way gets this long to land in the cache, so
# that a short run which never waited for its loops still leaves them to the next.
EXIT_WAIT = 5.0
MAX_FILE = 64 << 20  # a cached file bigger than this is not read (a kernel is far smaller)


class BuildError(Exception):
    pass


class CacheRefused(BuildError):
    """The cache is not private to this user: it is neither read nor written."""


class CacheWarning(UserWarning):
    """The compiled loops are off for this process (the cache is refused, or the compiler hung)."""


class BuildingElsewhere(Exception):
    """Another process (or thread) is compiling this very library: try again later."""


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
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- warnings, once per process

_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        # One line ("diffcli:0: CacheWarning: ..."): no source line to quote.
        warnings.warn_explicit(message, CacheWarning, "diffcli", 0)


# ---------------------------------------------------------------- the private directories

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _euid() -> int:
    return os.geteuid()


class _Private:
    """A directory of the cache, checked private, open as a descriptor."""

    def __init__(self, fd: int, path: str):
        self.fd, self.path = fd, path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def read(self, name: str) -> bytes | None:
        """The file's bytes; None when it is missing; a damaged file (a link, not
        a regular file of this user writable by no one else, too big) is removed
        and None returned."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError:  # a link (ELOOP), ...
            self.remove(name)
            return None
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_uid == _euid() and not st.st_mode & 0o022 \
                    and st.st_size <= MAX_FILE:
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks)
        finally:
            os.close(fd)
        self.remove(name)
        return None

    def remove(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise BuildError(f"cannot remove the damaged {self.path}/{name}: {error}") from None

    def create(self, name: str) -> int:
        """A new file, 0600 whatever the umask, open for writing."""
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=self.fd)
        os.fchmod(fd, 0o600)
        return fd

    def write_atomically(self, name: str, data: bytes) -> None:
        """The file written whole under a partial name, then renamed into place,
        so that no reader (another process) ever sees half of it."""
        partial = f"{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        self.remove(partial)  # left by a process that had this pid and thread id
        fd = self.create(partial)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(partial, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        finally:
            self.remove(partial)
        self.remove_stale_partials()

    def remove_stale_partials(self) -> None:
        """Partial files more than an hour old: their process died meanwhile."""
        for name in os.listdir(self.fd):
            if name.endswith(".tmp"):
                try:
                    if time.time() - os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mtime > 3600:
                        os.unlink(name, dir_fd=self.fd)
                except OSError:
                    pass


def private(kind: str) -> _Private:
    """The cache's directory `kind` (kernels, probes), made if missing, checked
    private along with everything above it; a CacheRefused (and its warning)
    when any check fails."""
    root = os.path.abspath(cache_dir())
    try:
        return _open_private(root, kind)
    except CacheRefused as refused:
        _warn_once(f"the kernel cache is not used, compiled loops are off: {refused}")
        raise


def _open_private(root: str, kind: str) -> _Private:
    parent, name = os.path.split(root)
    if not name:
        raise CacheRefused(f"{root} is the file system's root")
    # Links above the root are followed (/tmp -> /private/tmp), then each real directory checked.
    above = [part for part in os.path.realpath(parent).split(os.sep) if part]
    fd = os.open("/", _DIRECTORY)
    try:
        _check_above(os.fstat(fd), "/")
        at = "/"
        for i, part in enumerate(above + [name, kind]):
            at = os.path.join(at, part)
            opened = _step(fd, part, at)
            os.close(fd)
            fd = opened
            (_check_above if i < len(above) else _check_private)(os.fstat(fd), at)
        return _Private(fd, at)
    except OSError as error:
        os.close(fd)
        raise BuildError(f"cannot use the kernel cache {root}: {error}") from None
    except BaseException:
        os.close(fd)
        raise


def _step(fd: int, name: str, shown: str) -> int:
    """The directory `name` in the open directory fd (made 0700 if missing),
    opened without following a link."""
    try:
        try:
            return os.open(name, _DIRECTORY, dir_fd=fd)
        except FileNotFoundError:
            made = True
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
            except FileExistsError:
                made = False
            opened = os.open(name, _DIRECTORY, dir_fd=fd)
            if made:
                os.fchmod(opened, 0o700)
            return opened
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise CacheRefused(f"{shown} is a symbolic link or not a directory") from None
        raise


def _check_above(st: os.stat_result, shown: str) -> None:
    """A directory above the cache root: only this user or root may change it
    (in a sticky directory others may add entries, not rename this user's)."""
    if st.st_uid not in (0, _euid()):
        raise CacheRefused(f"{shown} belongs to user {st.st_uid}")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise CacheRefused(f"{shown} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")


def _check_private(st: os.stat_result, shown: str) -> None:
    if st.st_uid != _euid():
        raise CacheRefused(f"{shown} belongs to user {st.st_uid}, not {_euid()}")
    if st.st_mode & 0o022:
        raise CacheRefused(f"{shown} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")


# ---------------------------------------------------------------- sealed files: a key and a digest


def sealed(name: str, payload: bytes) -> bytes:
    """What the cache stores: a line naming the key and the payload's SHA-256, then the payload."""
    return f"diffcli {name} {hashlib.sha256(payload).hexdigest()}\n".encode() + payload


def unsealed(name: str, data: bytes) -> bytes | None:
    """The payload, if the line names this key and the payload's digest; else None."""
    line, newline, payload = data.partition(b"\n")
    if newline and line == f"diffcli {name} {hashlib.sha256(payload).hexdigest()}".encode():
        return payload
    return None


def recall(kind: str, name: str) -> str | None:
    """A text remembered under its key, None if missing or damaged (then removed)."""
    with private(kind) as directory:
        data = directory.read(f"{name}.txt")
        payload = None if data is None else unsealed(name, data)
        if data is not None and payload is None:
            directory.remove(f"{name}.txt")
        try:
            return None if payload is None else payload.decode()
        except UnicodeDecodeError:
            directory.remove(f"{name}.txt")
            return None


def remember(kind: str, name: str, text: str) -> None:
    with private(kind) as directory:
        directory.write_atomically(f"{name}.txt", sealed(name, text.encode()))


# ---------------------------------------------------------------- libraries

_loaded: dict[str, ctypes.CDLL] = {}  # key -> library, checked and loaded in this process
_images: list[int] = []  # the memfds loaded libraries were read from: kept open, as their names must not recur


def compiled(source: str) -> ctypes.CDLL:
    """The library of this C source: loaded (checked) from the cache, else built."""
    name = key("kernel", source)
    if name in _loaded:
        return _loaded[name]
    with private("kernels") as kernels:
        data = kernels.read(f"{name}.kernel")
        image = None if data is None else unsealed(name, data)
        if image is None:
            if data is not None:
                kernels.remove(f"{name}.kernel")  # damaged, or another key's: built again
            image = _build(kernels, name, source)
        library = _load(image, kernels)
    if _embedded_key(library, len(name)) != name:
        with private("kernels") as kernels:
            kernels.remove(f"{name}.kernel")
        raise BuildError("the cached library was built for another source; removed")
    _loaded[name] = library
    return library


def _embedded_key(library, size: int) -> str | None:
    try:
        return (ctypes.c_char * (size + 1)).in_dll(library, "diffcli_key").value.decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _load(image: bytes, kernels: _Private) -> ctypes.CDLL:
    """dlopen exactly these bytes, from an anonymous file (a private temporary
    file where there is none). A library that fails to load (as on a noexec
    mount) is a failed build, not a damaged one."""
    try:
        fd = os.memfd_create("diffcli-kernel", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            with open(fd, "wb", closefd=False) as file:
                file.write(image)
            library = ctypes.CDLL(f"/proc/self/fd/{fd}")
            _images.append(fd)
            return library
        except OSError:
            os.close(fd)  # (no /proc, or memfds not executable here): the temporary file
    temporary = f"load.{os.getpid()}.{threading.get_ident()}.{os.urandom(8).hex()}.tmp"
    written = kernels.create(temporary)
    try:
        with open(written, "wb") as file:
            file.write(image)
        try:
            return ctypes.CDLL(os.path.join(kernels.path, temporary))
        except OSError as error:
            raise BuildError(f"the library does not load: {error}") from None
    finally:
        kernels.remove(temporary)


# The compilers running now (Popen -> the files to remove if diffcli ends first),
# and whether diffcli is ending (then no compiler starts).
_children: dict = {}
_children_lock = threading.Lock()
_exiting = False
_abandoned = False  # interrupted: stop builds at exit without waiting for them
_timed_out = False
# At most two compilers at once per process (many plans could start builds together).
_compilers = threading.BoundedSemaphore(2)
_builds_under_way = 0


def _after_fork_in_child() -> None:
    """A forked child does not own its parent's compilers: its exit must not stop
    them, and locks held by the parent's other threads would stay held."""
    global _children, _children_lock, _compilers, _builds_under_way
    _children, _children_lock = {}, threading.Lock()
    _compilers, _builds_under_way = threading.BoundedSemaphore(2), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def abandon_builds() -> None:
    """The run was interrupted (Ctrl-C, SIGTERM): at exit, stop builds at once."""
    global _abandoned
    _abandoned = True


def in_background(build, name: str) -> threading.Thread:
    """Run build() in a daemon thread that the end of the process waits for, up
    to EXIT_WAIT (counted from the moment it is started, so a process that ends
    at once still waits for it)."""
    global _builds_under_way
    with _children_lock:
        _builds_under_way += 1

    def counted():
        global _builds_under_way
        try:
            build()
        finally:
            with _children_lock:
                _builds_under_way -= 1
    thread = threading.Thread(target=counted, name=name, daemon=True)
    thread.start()
    return thread


def _build(kernels: _Private, name: str, source: str) -> bytes:
    """Compile into a partial file of the private directory, read it back, and
    store it sealed; the library's bytes."""
    marker = f"{name}.building"
    _claim(kernels, marker)
    partial = f"{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        text = f'{source}\nconst char diffcli_key[] = "{name}";\n'
        _compile(text, os.path.join(kernels.path, partial), (os.path.join(kernels.path, marker),))
        image = kernels.read(partial)
        if not image:
            raise BuildError("the C compiler wrote no library")
        kernels.write_atomically(f"{name}.kernel", sealed(name, image))
        return image
    finally:
        kernels.remove(partial)
        kernels.remove(marker)


def _compile(text: str, output: str, leftovers: tuple) -> None:
    global _timed_out
    if _timed_out:
        raise BuildError(f"the C compiler took more than {COMPILE_TIMEOUT} s earlier in this process")
    deadline = time.monotonic() + COMPILE_TIMEOUT
    if not _compilers.acquire(timeout=COMPILE_TIMEOUT):
        raise BuildError(f"no compiler slot within {COMPILE_TIMEOUT} s")
    try:
        with _children_lock:
            if _exiting:
                raise BuildError("diffcli is exiting")
            build = subprocess.Popen([_compiler(), *FLAGS, "-o", output, "-x", "c", "-"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, umask=0o077)
            _children[build] = (output, *leftovers)
        try:
            _, errors = build.communicate(text, timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            _stop(build)
            _timed_out = True
            message = f"the C compiler took more than {COMPILE_TIMEOUT} s"
            _warn_once(f"{message}: it was stopped, compiled loops are off")
            raise BuildError(message) from None
        finally:
            with _children_lock:
                _children.pop(build, None)
    finally:
        _compilers.release()
    if build.returncode != 0:
        raise BuildError(f"the C compiler failed: {errors.strip()[:2000]}")


def _claim(kernels: _Private, marker: str) -> None:
    """Create the marker of a build, or raise BuildingElsewhere while a build of
    the same library (not older than a compile may take) holds it."""
    try:
        os.close(kernels.create(marker))
    except FileExistsError:
        try:
            age = time.time() - os.stat(marker, dir_fd=kernels.fd, follow_symlinks=False).st_mtime
        except OSError:
            age = COMPILE_TIMEOUT
        if age < COMPILE_TIMEOUT + STOP_GRACE:
            raise BuildingElsewhere(f"{kernels.path}/{marker}") from None
        kernels.remove(marker)  # left by a build that died
        os.close(kernels.create(marker))


def _stop(build: subprocess.Popen, grace: float | None = None, reap: bool = True) -> None:
    """End a compile's process group: SIGTERM first (gcc removes its temporary
    files), SIGKILL after the grace; then reap it, unless its thread does."""
    grace = STOP_GRACE if grace is None else grace
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(build.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        end = time.monotonic() + grace
        while build.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
    if not reap:
        return
    try:
        build.communicate(timeout=1)  # (reaps it and closes its pipes)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        pass


@atexit.register
def _stop_compilers() -> None:
    """No compiler outlives diffcli (nor starts while it ends); their partial
    files and markers go too. Builds under way first get EXIT_WAIT seconds to
    finish, unless the run was interrupted. (Build threads are daemons.)"""
    global _exiting
    if not _abandoned:
        _wait_for_builds(EXIT_WAIT)
    with _children_lock:
        _exiting = True
        running = list(_children.items())
    for build, leftovers in running:
        _stop(build, grace=0.5, reap=False)
        for path in leftovers:
            try:
                os.unlink(path)
            except OSError:
                pass


def _wait_for_builds(seconds: float) -> None:
    end = time.monotonic() + seconds
    try:
        while _builds_under_way and time.monotonic() < end:
            time.sleep(0.02)
    except BaseException:  # Ctrl-C or SIGTERM while waiting: stop them now, quietly
        pass


def function(library, name: str, arguments: int):
    """A C function taking a count and then pointers."""
    function = getattr(library, name)
    function.argtypes = (ctypes.c_ssize_t,) + (ctypes.c_void_p,) * (arguments - 1)
    function.restype = None
    return function
