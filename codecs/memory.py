"""Peak resident memory of this process, and resetting it so one piece of work (a job in a long-lived worker)
can be measured on its own."""

from __future__ import annotations

import resource

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def peak_rss() -> int:
    """This process's peak resident memory in bytes since it started or since :func:`reset_peak_rss`. Linux's
    VmHWM, unlike ``ru_maxrss``, does not inherit the peak of the parent a Celery pool process was forked from
    and can be reset; elsewhere ``ru_maxrss`` (a lifetime peak)."""
    try:
        with open(_STATUS) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident size (Linux: write "5" to /proc/self/clear_refs). False when the
    system does not allow it, in which case :func:`peak_rss` stays a lifetime peak."""
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
