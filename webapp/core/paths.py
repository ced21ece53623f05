"""Resolve a path a user typed to a real path inside the configured roots (``DELTAVAULT_MODEL_ROOTS``).

Refused: relative paths that climb (``..`` anywhere), anything that resolves (after following symlinks) outside
every root, and paths that do not exist. A relative path is taken relative to the first root.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from webapp.core.exceptions import ApplicationError


def model_roots() -> list[Path]:
    return [Path(root).resolve() for root in settings.DELTAVAULT_MODEL_ROOTS]


def path_resolve_in_roots(raw: str | os.PathLike, *, roots: list[Path] | None = None, kind: str = "any") -> Path:
    """Return the resolved path. ``kind``: "dir", "file" or "any"."""
    roots = model_roots() if roots is None else [Path(r).resolve() for r in roots]
    text = os.fspath(raw).strip() if raw is not None else ""
    if not text:
        raise ApplicationError("A path is required.")
    if "\x00" in text:
        raise ApplicationError("The path contains a NUL character.")
    candidate = Path(text)
    if ".." in candidate.parts:
        raise ApplicationError("Paths may not contain '..'.", extra={"path": text})
    if not roots:
        raise ApplicationError("No model roots are configured on the server (DELTAVAULT_MODEL_ROOTS).")
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()

    def within(path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in roots)

    if not resolved.exists() and within(Path(os.path.normpath(candidate))):
        # Typed inside the roots (a path the user may see) but missing, e.g. a link whose target is gone: say so,
        # rather than that it is outside.
        raise ApplicationError("The path does not exist.", extra={"path": text})
    if not within(resolved):
        raise ApplicationError(
            "The path is outside the folders models and datasets may be registered from ("
            + ", ".join(str(r) for r in roots) + ").",
            extra={"path": text, "roots": [str(r) for r in roots]},
        )
    if not resolved.exists():
        raise ApplicationError("The path does not exist.", extra={"path": text})
    if kind == "dir" and not resolved.is_dir():
        raise ApplicationError("The path is not a folder.", extra={"path": text})
    if kind == "file" and not resolved.is_file():
        raise ApplicationError("The path is not a file.", extra={"path": text})
    return resolved
