"""Resolve a path a user typed to a real path inside their team's folders.

Each team registers models and datasets only from its own folders: ``<root>/<team slug>`` under every configured
root (``DELTAVAULT_MODEL_ROOTS``); :func:`team_roots` names them. Refused: relative paths that climb (``..``
anywhere), anything outside the team's folders (checked on the text first, so nothing outside is ever looked at,
then again after following symlinks), and paths that do not exist or cannot be read. A relative path is taken
relative to the team's first folder.

The messages never tell whether a path outside the team's folders exists, nor what the roots are.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from webapp.core.exceptions import ApplicationError

OUTSIDE = "The path is not inside your team's folders."


def model_roots() -> list[Path]:
    return [Path(root).resolve() for root in settings.DELTAVAULT_MODEL_ROOTS]


def team_roots(team) -> list[Path]:
    """The folders ``team`` may register models and datasets from (they need not exist yet)."""
    return [root / team.slug for root in model_roots()]


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def path_resolve_in_roots(raw: str | os.PathLike, *, roots: list[Path], kind: str = "any") -> Path:
    """Return the resolved path. ``roots``: the allowed folders (e.g. :func:`team_roots`); ``kind``: "dir",
    "file" or "any"."""
    text = os.fspath(raw).strip() if raw is not None else ""
    if not text:
        raise ApplicationError("A path is required.")
    if "\x00" in text:
        raise ApplicationError("The path contains a NUL character.")
    candidate = Path(text)
    if ".." in candidate.parts:
        raise ApplicationError("Paths may not contain '..'.", extra={"path": text})
    if not roots:
        raise ApplicationError("No folders are configured on the server to register models from.")
    configured = [Path(os.path.abspath(r)) for r in roots]
    resolved_roots = []
    for root in configured:
        try:
            resolved_roots.append(root.resolve())
        except (OSError, RuntimeError):
            continue
    if not candidate.is_absolute():
        candidate = configured[0] / candidate
    candidate = Path(os.path.abspath(candidate))
    if not _inside(candidate, configured + resolved_roots):
        raise ApplicationError(OUTSIDE, extra={"path": text})
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise ApplicationError("The path does not exist.", extra={"path": text}) from None
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop (RuntimeError before 3.13), a long name
        reason = getattr(exc, "strerror", None) or "a symlink loop"
        raise ApplicationError(f"The path cannot be read ({reason.lower()}).", extra={"path": text}) from None
    if not _inside(resolved, resolved_roots):
        raise ApplicationError(OUTSIDE, extra={"path": text})
    try:
        if kind == "dir" and not resolved.is_dir():
            raise ApplicationError("The path is not a folder.", extra={"path": text})
        if kind == "file" and not resolved.is_file():
            raise ApplicationError("The path is not a file.", extra={"path": text})
    except OSError as exc:
        raise ApplicationError(f"The path cannot be read ({(exc.strerror or '').lower()}).",
                               extra={"path": text}) from None
    return resolved
