"""The memory budget: how much memory one request may use, and the sizes it is
written in.

Every request is estimated before it runs (function.py: the result's bytes, the
derivative graph's nodes while it is built, the plan's peak live bytes from
evaluate.py) and refused with a BudgetError when an estimate exceeds the
budget. The budget is max_memory (compile's keyword, the CLI's --max-memory),
by default half of the smallest of the machine's physical memory, the
process's address-space limit (ulimit -v) and its cgroup's memory limit.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

from .errors import UsageError

# What one node of a derivative graph costs in all: the Node and its interning
# (about 400 bytes), its step in a plan (about 350) and its array at one point
# (about 130); measured with tracemalloc on tan(x) at orders 11 and 12.
BYTES_PER_NODE = 1024

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'2G', '500M', '1.5GiB', '4096' -> bytes (K, M, G, T are powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise UsageError(f"a memory size is a number with an optional unit K, M, G or T "
                         f"(like 2G or 500M), not '{text}'")
    size = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if size > 1 << 70:  # a zettabyte: no limit, in effect (and no float overflow below)
        size = 1 << 70
    size = int(size)
    if size < 1 << 20:
        raise UsageError(f"a memory budget of {format_size(size)} is too small to run anything: "
                         f"give at least 1M")
    return size


def resolve(max_memory: int | str | None) -> int:
    """The budget in bytes: max_memory as bytes or as a size like '2G', or the default."""
    if max_memory is None:
        return default_budget()
    if isinstance(max_memory, str):
        return parse_size(max_memory)
    if isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory < 1 << 20:
        raise UsageError(f"max_memory must be at least 1 MiB (a number of bytes or a size like '2G'), "
                         f"not {max_memory!r}")
    return max_memory


@lru_cache(maxsize=1)
def default_budget() -> int:
    """Half of the smallest of physical memory, the address-space limit and the
    cgroup's memory limit (each where known), read once per process."""
    limits = [_physical_memory(), _address_space_limit(), _cgroup_limit()]
    known = [n for n in limits if n]
    return max(1 << 20, min(known) // 2) if known else 4 << 30


def format_size(n: float) -> str:
    """Bytes in the unit that suits them: '512 B', '3.2 MiB', '1.5 GiB', '9.1e+03 TiB'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.3g} {unit}" if value < 1e6 else f"{value:.2g} {unit}"
    return f"{int(n)} B"


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on every platform
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # cgroup v1 says 'no limit' with a huge number
            return int(text)
    return None
