"""Gradient sets: folders of safetensors files of gradient tensors, one file per recorded step.

* :class:`GradientRecorder` -- add it to a PyTorch training loop: every ``every`` steps, after ``backward()``, it
  writes the named parameters' ``.grad`` to ``step_<step>.safetensors`` (tensors named by parameter, the step in
  the file's metadata) and keeps count of what that cost (seconds, bytes).
* :func:`gradient_set_info` -- the summary the registry shows: steps, tensors, dtypes, shapes, bytes, and the
  non-float tensors (which ``lmgc`` codes with its lossless fallback).

A gradient set is read like any model folder (:class:`modelcodecs.hfio.ModelFolder`), so every codec, the container
and the pipeline work on it unchanged.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .abc import FLOAT_DTYPES
from .errors import ConfigError
from .hfio import ModelFolder, TensorRef

STEP_FILE = re.compile(r"step[_-]?(\d+)\.safetensors$")


@dataclass
class RecorderCost:
    steps_recorded: int = 0
    tensors_written: int = 0
    bytes_written: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


class GradientRecorder:
    """Writes named parameters' gradients every ``every`` steps into ``out_dir``.

    >>> recorder = GradientRecorder(model, "grads/", every=10)      # doctest: +SKIP
    >>> for step, batch in enumerate(loader):                      # doctest: +SKIP
    ...     loss(model(batch)).backward()
    ...     recorder.record(step)          # before optimizer.zero_grad()
    ...     optimizer.step(); optimizer.zero_grad()
    """

    def __init__(self, model, out_dir: str | os.PathLike, *, every: int = 1, params: list[str] | None = None,
                 prefix: str = "step"):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"every must be a positive integer, got {every!r}")
        named = dict(model.named_parameters())
        if params is not None:
            missing = sorted(set(params) - set(named))
            if missing:
                raise ConfigError(f"the model has no parameter(s) {', '.join(missing)}")
            named = {name: named[name] for name in params}
        self.params = {name: p for name, p in named.items() if p.requires_grad}
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.every, self.prefix = every, prefix
        self.cost = RecorderCost()

    def record(self, step: int) -> Path | None:
        """Write this step's gradients if ``step`` is a multiple of ``every``; returns the file written."""
        if step % self.every:
            return None
        from safetensors.torch import save_file

        started = time.perf_counter()
        tensors = {name: p.grad.detach().to("cpu").contiguous() for name, p in self.params.items()
                   if p.grad is not None}
        if not tensors:
            return None
        path = self.out_dir / f"{self.prefix}_{step:08d}.safetensors"
        tmp = path.with_name(f".{path.name}.partial")
        save_file(tensors, str(tmp), metadata={"step": str(step), "kind": "gradients"})
        os.replace(tmp, path)
        self.cost.steps_recorded += 1
        self.cost.tensors_written += len(tensors)
        self.cost.bytes_written += path.stat().st_size
        self.cost.seconds += time.perf_counter() - started
        return path


def _step_of(name: str) -> int | None:
    match = STEP_FILE.search(name)
    return int(match.group(1)) if match else None


def gradient_set_info(folder: str | os.PathLike) -> dict:
    """Summary of a gradient set (from the safetensors headers only)."""
    with ModelFolder(folder, unique_names=False) as grads:
        files = [p for p in grads.files if p.kind == "safetensors"]
        refs: list[TensorRef] = list(grads.iter_tensors())
        total = grads.total_bytes
        hashes = [{"name": p.name, "size": p.size, "sha256": grads.file_sha256(p.name)} for p in grads.files]
    dtypes = Counter(r.spec.dtype for r in refs)
    steps = sorted({s for s in (_step_of(p.name) for p in files) if s is not None})
    params: dict[str, dict] = {}
    for r in refs:
        params.setdefault(r.spec.name, {"dtype": r.spec.dtype, "shape": list(r.spec.shape), "steps": 0})
        params[r.spec.name]["steps"] += 1
    non_float = sorted({r.spec.name for r in refs if r.spec.dtype not in FLOAT_DTYPES})
    return {
        "files": len(files), "steps": steps, "tensors": len(refs),
        "floats": sum(r.spec.numel for r in refs if r.spec.dtype in FLOAT_DTYPES),
        "dtypes": dict(sorted(dtypes.items())), "total_bytes": total,
        "params": [{"name": k, **v} for k, v in sorted(params.items())][:500],
        "non_float_tensors": non_float, "file_hashes": hashes,
    }

