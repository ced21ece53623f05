"""Keep server paths out of what users see: job errors and logs name files, never where they live."""

from __future__ import annotations

import re

# An absolute path with at least one folder (``/srv/dv/tmp/job-3/x.dvz``), not preceded by a word character (so
# "MB/s" and "1/2" are left alone).
# The product's own URLs ("/models/12/") are left alone.
_URL_PREFIXES = "models|pairs|datasets|jobs|artifacts|teams|invitations|api|ws|tokens|workers|login|static"
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/])/(?!(?:" + _URL_PREFIXES + r")/)"
                            r"(?:[^\s/'\"`,:;()<>\[\]{}]+/)+([^\s/'\"`,:;()<>\[\]{}]*)")


def redact_paths(text: str) -> str:
    """``text`` with every absolute path replaced by ``…/<last part>``."""
    return _ABSOLUTE_PATH.sub(lambda m: f"…/{m.group(1)}" if m.group(1) else "…/", text)
