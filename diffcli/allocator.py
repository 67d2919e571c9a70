"""glibc allocator tuning for the diffcli command's own process.

A plan frees and reallocates arrays of the same few sizes over and over. glibc
serves large requests with fresh mmap()s and trims the heap top as soon as
128 kB are free, so those arrays keep faulting in new pages (about 2 us a page
on this class of machine). Raising the mmap threshold and not trimming lets
freed memory be reused. It changes the whole process, so only the command
(cli.main) and the benchmark call it: importing diffcli into someone else's
program leaves their allocator alone.
"""

from __future__ import annotations

_tuned = False


def keep_freed_memory() -> None:
    """Once per process, where glibc is the allocator; elsewhere nothing."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 64 << 20)
        libc.mallopt(m_trim_threshold, 256 << 20)
    except (OSError, AttributeError):
        pass
