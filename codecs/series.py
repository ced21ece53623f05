"""Checkpoint series: the checkpoints of one training run, each coded against the one before it.

A series lives in one folder::

    series.json          the manifest (written to a temporary name, then renamed: always whole)
    step-<k>.<id>.dvz    one artifact per checkpoint

Checkpoint k is coded with FM-Delta against checkpoint k-1 (the one before it in the series), except every
``keyframe_every``-th link, which is coded without a base (``fmdelta-nobase``): restoring any checkpoint decodes at
most ``keyframe_every`` artifacts (the keyframe, then each link after it, each against the folder restored just
before). A tensor whose shape or dtype changed since the previous checkpoint (or that is new) is coded without a
base by FM-Delta itself; the manifest lists it under ``tensors_without_base``.

Steps are integers, strictly increasing, a constant ``interval`` apart (the difference of the first two unless
given): a checkpoint missing from the input, or given out of order, is refused with the step named. Deleting a
checkpoint that another is coded against first re-codes that one against the deleted one's base (or without a
base), then commits the new manifest, then removes files: a crash at any point leaves a consistent series (at worst
an unreferenced artifact, removed by the next write). Every artifact's sha256 is in the manifest and checked before
it is decoded; any damage is a :class:`CorruptArtifactError` naming the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .abc import FLOAT_DTYPES, CancelCheck, ProgressCallback, check_cancel
from .errors import ConfigError, CorruptArtifactError, ModelCodecError, ModelFormatError, VerificationError
from .pipeline import compress_model, decompress_model, inspect_artifact

MANIFEST = "series.json"
FORMAT = 1
LINK_CODEC = {"id": "fmdelta"}
KEYFRAME_CODEC = {"id": "fmdelta-nobase"}
_STEP = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits in a folder name: checkpoint-1500 -> 1500


class SeriesError(ConfigError):
    """A series input or operation that is refused (missing or reordered step, unknown step, ...)."""


@dataclass
class SeriesSummary:
    checkpoints: list[dict]
    original_bytes: int
    compressed_bytes: int
    ratio: float
    seconds: float
    keyframe_every: int
    counted: str = ("original = every file of every checkpoint folder; compressed = every artifact of the series "
                    "(the manifest is not counted)")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SeriesVerifyReport:
    ok: bool
    checkpoints: list[dict] = field(default_factory=list)
    message: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# -- input -----------------------------------------------------------------------------------------------------------

def discover_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """The checkpoint folders under ``root`` (``checkpoint-100``, ``step_200``, ...: the last number in each
    subfolder's name is its step), sorted by step. ``root`` itself must hold no model."""
    root = Path(root)
    if not root.is_dir():
        raise ModelFormatError(f"{root}: not a folder")
    found: dict[int, Path] = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        match = _STEP.search(child.name)
        if match is None:
            continue
        step = int(match.group(1))
        if step in found:
            raise SeriesError(f"step {step} appears twice: {found[step].name} and {child.name}")
        found[step] = child
    if not found:
        raise SeriesError(f"{root}: no checkpoint folders (subfolders named with their step, e.g. checkpoint-100)")
    return sorted(found.items())


def check_steps(steps: list[int], interval: int | None = None, after: int | None = None) -> int:
    """Refuse steps that are not strictly increasing by a constant interval (naming the first missing or reordered
    step); return the interval. ``after`` is the last step already in the series."""
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in steps):
        raise SeriesError(f"steps must be non-negative integers, got {steps!r}")
    seq = ([after] if after is not None else []) + list(steps)
    for prev, step in zip(seq, seq[1:]):  # order first: a reordered step is named as such, not as a gap
        if step <= prev:
            raise SeriesError(f"step {step} comes after step {prev}: checkpoints are out of order")
    if interval is None:
        if len(seq) < 2:
            return 0
        interval = seq[1] - seq[0]
    for prev, step in zip(seq, seq[1:]):
        if interval > 0 and step != prev + interval:
            if step > prev + interval:
                raise SeriesError(f"step {prev + interval} is missing (between step {prev} and step {step}; "
                                  f"the series saves every {interval} steps)")
            raise SeriesError(f"step {step} does not fit the series' interval of {interval} steps after step {prev}")
    if interval <= 0:
        raise SeriesError(f"the interval between steps must be positive, got {interval}")
    return interval


# -- manifest ----------------------------------------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(series_dir: str | os.PathLike) -> dict:
    path = Path(series_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeriesError(f"{series_dir}: not a checkpoint series (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise CorruptArtifactError(f"{path}: unreadable series manifest: {exc}") from None
    ok = (isinstance(manifest, dict) and manifest.get("format") == FORMAT
          and isinstance(manifest.get("keyframe_every"), int) and manifest["keyframe_every"] >= 1
          and isinstance(manifest.get("checkpoints"), list))
    if ok:
        steps = set()
        for c in manifest["checkpoints"]:
            ok = ok and isinstance(c, dict) and isinstance(c.get("step"), int) and isinstance(c.get("file"), str) \
                and "/" not in c["file"] and c["file"].endswith(".dvz") and isinstance(c.get("sha256"), str) \
                and (c.get("base_step") is None or c.get("base_step") in steps)
            if ok:
                steps.add(c["step"])
    if not ok:
        raise CorruptArtifactError(f"{path}: malformed series manifest")
    return manifest


def _write_manifest(series_dir: Path, manifest: dict) -> None:
    tmp = series_dir / f".{MANIFEST}.partial-{os.urandom(6).hex()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, series_dir / MANIFEST)
    _sweep(series_dir, manifest)


def _sweep(series_dir: Path, manifest: dict) -> None:
    """Remove artifacts the manifest no longer names (left by a crash or by a re-basing)."""
    named = {c["file"] for c in manifest["checkpoints"]}
    for path in series_dir.glob("step-*.dvz"):
        if path.name not in named:
            path.unlink(missing_ok=True)


def _by_step(manifest: dict, step: int) -> dict:
    for c in manifest["checkpoints"]:
        if c["step"] == step:
            return c
    steps = [c["step"] for c in manifest["checkpoints"]]
    raise SeriesError(f"step {step} is not in the series (steps: {', '.join(map(str, steps)) or 'none'})")


def _chain(manifest: dict, step: int) -> list[dict]:
    """The checkpoints to decode, keyframe first, to restore ``step``."""
    chain = [_by_step(manifest, step)]
    while chain[-1]["base_step"] is not None:
        chain.append(_by_step(manifest, chain[-1]["base_step"]))
    return chain[::-1]


def _depth(manifest: dict, step: int) -> int:
    return len(_chain(manifest, step))


# -- writing -----------------------------------------------------------------------------------------------------------

def series_create(series_dir: str | os.PathLike, *, keyframe_every: int = 8, interval: int | None = None) -> dict:
    """Start an empty series in ``series_dir`` (absent or empty)."""
    if isinstance(keyframe_every, bool) or not isinstance(keyframe_every, int) or not 1 <= keyframe_every <= 1000:
        raise ConfigError(f"keyframe_every must be an integer from 1 to 1000, got {keyframe_every!r}")
    series_dir = Path(series_dir)
    if series_dir.exists() and any(series_dir.iterdir()):
        raise ConfigError(f"{series_dir}: output folder exists and is not empty")
    series_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "keyframe_every": keyframe_every, "interval": interval,
                "link_codec": LINK_CODEC, "keyframe_codec": KEYFRAME_CODEC, "checkpoints": []}
    _write_manifest(series_dir, manifest)
    return manifest


def _encode(series_dir: Path, step: int, folder: Path, base_step: int | None, base_dir: Path | None, *,
            threads, progress, cancel) -> dict:
    name = f"step-{step}.{os.urandom(4).hex()}.dvz"
    codec = KEYFRAME_CODEC if base_step is None else LINK_CODEC
    summary = compress_model(folder, series_dir / name, codec=codec, base_dir=base_dir, threads=threads,
                             progress=progress, cancel=cancel)
    info = inspect_artifact(series_dir / name)
    without = [t["name"] for t in info["tensor_list"]
               if base_step is not None and t["base"] is None and t["dtype"] in FLOAT_DTYPES]
    return {"step": step, "file": name, "base_step": base_step, "codec": codec["id"],
            "sha256": _sha256_file(series_dir / name), "original_bytes": summary.original_bytes,
            "compressed_bytes": summary.compressed_bytes, "tensors_without_base": without}


def series_append(series_dir: str | os.PathLike, checkpoints: Iterable[tuple[int, str | os.PathLike]], *,
                  threads: int | None = None, progress: ProgressCallback | None = None,
                  cancel: CancelCheck | None = None) -> list[dict]:
    """Add checkpoints (step, folder), in order, after the series' last one; returns their manifest records.
    The previous checkpoint is read from its original folder when it was added in the same call, else restored
    from the series."""
    series_dir = Path(series_dir)
    manifest = read_manifest(series_dir)
    items = [(step, Path(folder)) for step, folder in checkpoints]
    last = manifest["checkpoints"][-1]["step"] if manifest["checkpoints"] else None
    manifest["interval"] = check_steps([s for s, _ in items], manifest.get("interval"), last) or None
    added = []
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=series_dir) as scratch:
        prev_dir = None
        if last is not None and items:
            prev_dir = Path(scratch) / f"step-{last}"
            restore_checkpoint(series_dir, last, prev_dir, threads=threads, cancel=cancel)
        for step, folder in items:
            check_cancel(cancel)
            keyframe = last is None or _depth(manifest, last) >= manifest["keyframe_every"]
            record = _encode(series_dir, step, folder, None if keyframe else last,
                             None if keyframe else prev_dir, threads=threads, progress=progress, cancel=cancel)
            manifest["checkpoints"].append(record)
            _write_manifest(series_dir, manifest)
            added.append(record)
            last, prev_dir = step, folder
    return added


def compress_series(checkpoints: str | os.PathLike | Iterable[tuple[int, str | os.PathLike]],
                    series_dir: str | os.PathLike, *, keyframe_every: int = 8, interval: int | None = None,
                    threads: int | None = None, progress: ProgressCallback | None = None,
                    cancel: CancelCheck | None = None) -> SeriesSummary:
    """Code a whole series: ``checkpoints`` is a folder of checkpoint folders (see :func:`discover_checkpoints`)
    or (step, folder) pairs in order. Nothing is written when a step is missing or out of order."""
    items = discover_checkpoints(checkpoints) if isinstance(checkpoints, (str, os.PathLike)) else \
        [(step, Path(folder)) for step, folder in checkpoints]
    if not items:
        raise SeriesError("a series needs at least one checkpoint")
    interval = check_steps([s for s, _ in items], interval) or None
    started = time.perf_counter()
    series_dir = Path(series_dir)
    series_create(series_dir, keyframe_every=keyframe_every, interval=interval)
    try:
        records = series_append(series_dir, items, threads=threads, progress=progress, cancel=cancel)
    except BaseException:
        shutil.rmtree(series_dir, ignore_errors=True)
        raise
    original = sum(r["original_bytes"] for r in records)
    compressed = sum(r["compressed_bytes"] for r in records)
    return SeriesSummary(checkpoints=records, original_bytes=original, compressed_bytes=compressed,
                         ratio=round(original / compressed, 4) if compressed else 0.0,
                         seconds=round(time.perf_counter() - started, 3), keyframe_every=keyframe_every)


# -- reading -----------------------------------------------------------------------------------------------------------

def _checked_path(series_dir: Path, record: dict) -> Path:
    path = series_dir / record["file"]
    try:
        digest = _sha256_file(path)
    except OSError as exc:
        raise CorruptArtifactError(f"checkpoint step {record['step']}: {record['file']} is unreadable: "
                                   f"{exc.strerror or exc}") from None
    if digest != record["sha256"]:
        raise CorruptArtifactError(f"checkpoint step {record['step']}: {record['file']} does not match its "
                                   "recorded sha256 (damaged link)")
    return path


@contextmanager
def _naming(record: dict) -> Iterator[None]:
    try:
        yield
    except (CorruptArtifactError, VerificationError) as exc:
        raise CorruptArtifactError(f"checkpoint step {record['step']}: {exc}") from exc
    except ModelCodecError as exc:
        raise type(exc)(f"checkpoint step {record['step']}: {exc}") from exc


def _restore_chain(series_dir: Path, manifest: dict, chain: list[dict], out_dir: Path, *, threads, progress,
                   cancel) -> None:
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=out_dir.parent) as scratch:
        prev = None
        for i, record in enumerate(chain):
            target = out_dir if i == len(chain) - 1 else Path(scratch) / f"step-{record['step']}"
            with _naming(record):
                decompress_model(_checked_path(series_dir, record), target, base_dir=prev, threads=threads,
                                 progress=progress if target is out_dir else None, cancel=cancel)
            if prev is not None:
                shutil.rmtree(prev, ignore_errors=True)
            prev = target


def restore_checkpoint(series_dir: str | os.PathLike, step: int, out_dir: str | os.PathLike, *,
                       threads: int | None = None, progress: ProgressCallback | None = None,
                       cancel: CancelCheck | None = None) -> dict:
    """Restore checkpoint ``step`` into ``out_dir`` (absent or empty), byte for byte, every hash checked; decodes
    at most ``keyframe_every`` artifacts. Returns {"step", "links"}."""
    series_dir, out_dir = Path(series_dir), Path(out_dir)
    manifest = read_manifest(series_dir)
    chain = _chain(manifest, step)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir}: output folder exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _restore_chain(series_dir, manifest, chain, out_dir, threads=threads, progress=progress, cancel=cancel)
    return {"step": step, "links": len(chain)}


def verify_series(series_dir: str | os.PathLike, *, threads: int | None = None,
                  cancel: CancelCheck | None = None) -> SeriesVerifyReport:
    """Decode every checkpoint in order (each against the one restored before it) and check every hash."""
    series_dir = Path(series_dir)
    manifest = read_manifest(series_dir)
    results, problems = [], []
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=series_dir) as scratch:
        restored: dict[int, Path] = {}
        for record in manifest["checkpoints"]:
            check_cancel(cancel)
            base = record["base_step"]
            if base is not None and base not in restored:
                results.append({"step": record["step"], "ok": False,
                                "message": f"its base, step {base}, could not be restored"})
                continue
            target = Path(scratch) / f"step-{record['step']}"
            try:
                with _naming(record):
                    decompress_model(_checked_path(series_dir, record), target,
                                     base_dir=restored.get(base) if base is not None else None, threads=threads,
                                     cancel=cancel)
            except ModelCodecError as exc:
                problems.append(str(exc))
                results.append({"step": record["step"], "ok": False, "message": str(exc)})
                continue
            results.append({"step": record["step"], "ok": True, "message": "every file's sha256 verified"})
            for old in [s for s in restored if s != record["step"]]:  # only the newest is ever a base
                shutil.rmtree(restored.pop(old), ignore_errors=True)
            restored[record["step"]] = target
    ok = not problems and all(r["ok"] for r in results)
    return SeriesVerifyReport(ok=ok, checkpoints=results,
                              message="every checkpoint verified" if ok else "; ".join(problems[:3]) or
                              "some checkpoints could not be restored")


def delete_checkpoint(series_dir: str | os.PathLike, step: int, *, threads: int | None = None,
                      cancel: CancelCheck | None = None) -> dict:
    """Remove checkpoint ``step``. The checkpoint coded against it (if any) is first re-coded against the deleted
    one's base (or without a base when the deleted one was a keyframe); returns {"deleted", "rebased"}."""
    series_dir = Path(series_dir)
    manifest = read_manifest(series_dir)
    record = _by_step(manifest, step)
    child = next((c for c in manifest["checkpoints"] if c["base_step"] == step), None)
    rebased = None
    if child is not None:
        with tempfile.TemporaryDirectory(prefix=".rebase-", dir=series_dir) as scratch:
            child_dir = Path(scratch) / "child"
            restore_checkpoint(series_dir, child["step"], child_dir, threads=threads, cancel=cancel)
            base_dir = None
            if record["base_step"] is not None:
                base_dir = Path(scratch) / "base"
                restore_checkpoint(series_dir, record["base_step"], base_dir, threads=threads, cancel=cancel)
            new = _encode(series_dir, child["step"], child_dir, record["base_step"], base_dir, threads=threads,
                          progress=None, cancel=cancel)
        manifest["checkpoints"] = [new if c is child else c for c in manifest["checkpoints"]]
        rebased = child["step"]
    manifest["checkpoints"] = [c for c in manifest["checkpoints"] if c["step"] != step]
    _write_manifest(series_dir, manifest)  # commits the delete; the old files go after it
    return {"deleted": step, "rebased": rebased}


def series_info(series_dir: str | os.PathLike) -> dict:
    """The manifest plus totals and each checkpoint's chain length (from the manifest alone)."""
    manifest = read_manifest(series_dir)
    original = sum(c["original_bytes"] for c in manifest["checkpoints"])
    compressed = sum(c["compressed_bytes"] for c in manifest["checkpoints"])
    checkpoints = [{**c, "links": _depth(manifest, c["step"])} for c in manifest["checkpoints"]]
    return {**manifest, "checkpoints": checkpoints, "original_bytes": original, "compressed_bytes": compressed,
            "ratio": round(original / compressed, 4) if compressed else 0.0}


__all__ = ["SeriesError", "SeriesSummary", "SeriesVerifyReport", "check_steps", "compress_series",
           "delete_checkpoint", "discover_checkpoints", "read_manifest", "restore_checkpoint", "series_append",
           "series_create", "series_info", "verify_series"]
