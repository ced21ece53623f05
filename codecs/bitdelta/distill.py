"""BitDelta's scale distillation: teacher = the fine-tune, student = base + α·sign for every binarised weight.

One model is loaded (the fine-tune, in fp32); each binarised weight gets a torch parametrization that returns
either the fine-tuned weight (teacher pass, no gradient) or ``W_base + α·S`` (student pass). Everything that is not
binarised is shared, which is exact: those tensors are restored byte for byte. The student's weight is a
differentiable function of α, so autograd gives exact gradients (dL/dα = Σ dL/dW ⊙ S), unlike the reference's
1-bit matmul; only the scales train. Memory: the fine-tune in fp32, the binarised weights' base in fp32 and their
signs as int8 (about 2.25x the fine-tune's fp32 size), plus activations.

``train_rest`` also trains every float parameter that is not binarised (embeddings, lm_head, norms, biases), as the
reference does by accident: the student then has its own values of them (the teacher pass swaps the fine-tune's
values back in with ``torch.func.functional_call``), and they must be stored instead of the fine-tune's.
"""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._torch import load_model, load_tokenizer, resolve_device
from ..abc import CancelCheck, ProgressCallback, check_cancel
from ..errors import ConfigError, ModelCodecError, ModelFormatError, UnsupportedDtypeError, WrongBaseError
from ..evaluate import read_tokens
from ..hfio import ModelFolder
from .codec import BINARISABLE_DTYPES, initial_scales, scale_shape, to_float
from .structure import LinearWeight, linear_weights, read_config


class DistillationError(ModelCodecError, RuntimeError):
    """The distillation diverged (NaN/Inf loss)."""


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def plan_weights(finetuned_dir, base_dir, *, include: str = "", exclude: str = "") -> list[LinearWeight]:
    """The binarised weights of the fine-tune, checked against the base: same architecture, and every one present
    in the base with the same dtype and shape (a resized vocabulary only touches tensors coded losslessly)."""
    tuned_type, base_type = read_config(finetuned_dir).get("model_type"), read_config(base_dir).get("model_type")
    if tuned_type != base_type:
        raise WrongBaseError(f"the base is a {base_type!r} model and the fine-tune a {tuned_type!r} model: "
                             f"different architectures")
    with ModelFolder(finetuned_dir) as tuned, ModelFolder(base_dir) as base:
        weights = linear_weights(finetuned_dir, include=include, exclude=exclude, tensor_names=set(tuned.tensors))
        missing = [w.tensor for w in weights if w.tensor not in tuned.tensors]
        if missing:
            raise ModelFormatError(f"the fine-tune's checkpoint lacks weights its config describes: "
                                   f"{_names(missing)}")
        odd = [w.tensor for w in weights if tuned.tensors[w.tensor].spec.dtype not in BINARISABLE_DTYPES]
        if odd:
            raise UnsupportedDtypeError(f"bitdelta binarises F16/BF16/F32/F64 weights only: {_names(odd)}")
        mismatched = [f"{w.tensor} ({_describe(base.tensors.get(w.tensor))} in the base, "
                      f"{_describe(tuned.tensors[w.tensor])} in the fine-tune)"
                      for w in weights
                      if w.tensor not in base.tensors or base.tensors[w.tensor].spec != tuned.tensors[w.tensor].spec]
        if mismatched:
            raise WrongBaseError(f"{len(mismatched)} linear weight(s) of the fine-tune have no equal-shaped base "
                                 f"tensor (different architectures?): {_names(mismatched, 3)}")
    return weights


def _describe(ref) -> str:
    return "absent" if ref is None else f"{ref.spec.dtype}{list(ref.spec.shape)}"


def calibration_windows(tokenizer, text_path, *, count: int, seq_len: int, seed: int):
    """``count`` windows of ``seq_len`` consecutive tokens from the start of the text, in a seeded order."""
    import torch

    ids = read_tokens(tokenizer, text_path, count * seq_len)
    if len(ids) < count * seq_len:
        raise ConfigError(f"{text_path}: {len(ids)} tokens of text, distillation needs steps x batch_size x "
                          f"seq_len = {count * seq_len}")
    windows = torch.tensor(ids[:count * seq_len], dtype=torch.long).view(count, seq_len)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return windows[order]


def _student_parametrization(base: np.ndarray, positive: np.ndarray, alpha: np.ndarray, axis: int, switch):
    import torch

    class BinaryDelta(torch.nn.Module):
        """Teacher pass: the fine-tuned weight. Student pass: W_base + α·S, as the decoder computes it."""

        def __init__(self):
            super().__init__()
            self.register_buffer("base", torch.from_numpy(base))
            self.register_buffer("sign", torch.from_numpy(np.where(positive, 1, -1).astype(np.int8)))
            self.alpha = torch.nn.Parameter(torch.from_numpy(alpha.reshape(scale_shape(base.shape, axis,
                                                                                       alpha.size)).copy()))

        def forward(self, original):
            if switch.teacher:
                return original
            return self.base + self.alpha * self.sign

    return BinaryDelta()


class _Switch:
    teacher = True


def _free_large_blocks() -> None:
    """Pin glibc's mmap threshold at its 128 KiB default. glibc raises it when a large block is freed, after which
    each step's weight-sized temporaries come from the heap and stay there: on SmolLM2-135M the peak RSS grew by
    0.8 GB a step (3.4 GB after 3 steps) instead of staying at 2.1 GB. Other C libraries: nothing to do."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def distill_scales(codec, *, finetuned_dir, base_dir, weights: list[LinearWeight], text_path,
                   progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
                   on_step: Callable[[dict], None] | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Train one scale per binarised matrix (or row) for ``codec.steps`` steps (with ``codec.train_rest``, every
    other float parameter too); returns (scales by tensor name, trained other tensors by checkpoint name in fp32,
    report). ``on_step({"step", "steps", "loss", "lr"})`` is called after every step; ``cancel`` is polled before
    every step."""
    import torch
    from torch.nn.utils import parametrize

    if not Path(text_path).is_file():
        raise ConfigError(f"calibration text {text_path} does not exist")
    device = resolve_device(codec.device)
    _free_large_blocks()
    torch.manual_seed(codec.seed)
    started = time.perf_counter()
    tokenizer = load_tokenizer(finetuned_dir)
    batches = calibration_windows(tokenizer, text_path, count=codec.steps * codec.batch_size,
                                  seq_len=codec.seq_len, seed=codec.seed).view(codec.steps, codec.batch_size, -1)
    check_cancel(cancel)
    model = load_model(finetuned_dir, device=device, dtype=torch.float32)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    modules = dict(model.named_modules())
    binarised = {f"{weight.module}.weight" for weight in weights}
    rest = {name: parameter for name, parameter in model.named_parameters()
            if codec.train_rest and name not in binarised and parameter.is_floating_point()}
    # checkpoint names of the trained tensors: tied weights (lm_head = embed_tokens) appear under each name
    rest_names = {key: name for key, value in model.state_dict(keep_vars=True).items()
                  for name, parameter in rest.items() if value is parameter}
    teacher_rest = {name: parameter.detach().clone() for name, parameter in rest.items()}
    switch = _Switch()
    scales = []
    with ModelFolder(finetuned_dir) as tuned, ModelFolder(base_dir) as base:
        for weight in weights:
            check_cancel(cancel)
            ref = tuned.tensors[weight.tensor]
            tuned_values = to_float(tuned.read_tensor(ref), ref.spec.dtype).reshape(ref.spec.shape)
            base_values = to_float(base.read_tensor(base.tensors[weight.tensor]), ref.spec.dtype).reshape(
                ref.spec.shape).astype(np.float32)
            delta = tuned_values - base_values
            alpha = initial_scales(delta, weight.out_axis, codec.scale_granularity)
            student = _student_parametrization(base_values, delta > 0, alpha, weight.out_axis, switch).to(device)
            parametrize.register_parametrization(modules[weight.module], "weight", student, unsafe=True)
            scales.append(student.alpha)
            del tuned_values, base_values, delta
    for parameter in rest.values():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW([*scales, *rest.values()], lr=codec.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=codec.steps)
    losses, step_seconds, step_cpu_seconds = [], [], []
    setup_seconds = time.perf_counter() - started
    for step in range(codec.steps):
        check_cancel(cancel)
        tick, cpu_tick = time.perf_counter(), time.process_time()
        input_ids = batches[step].to(device)
        with torch.no_grad():
            switch.teacher = True
            target = torch.func.functional_call(model, teacher_rest, args=(),
                                                kwargs={"input_ids": input_ids}).logits.float()
        switch.teacher = False
        logits = model(input_ids=input_ids).logits.float()
        loss = distillation_loss(logits, target, codec.loss)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DistillationError(f"distillation diverged at step {step + 1} of {codec.steps}: loss is {value}")
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(value)
        step_seconds.append(time.perf_counter() - tick)
        step_cpu_seconds.append(time.process_time() - cpu_tick)
        if on_step is not None:
            on_step({"step": step + 1, "steps": codec.steps, "loss": value, "lr": lr})
        if progress is not None:
            progress(step + 1, codec.steps, "distilling scales")
    result = {}
    for weight, alpha in zip(weights, scales):
        result[weight.tensor] = alpha.detach().float().cpu().numpy().reshape(-1).astype(np.float32)
    trained_rest = {key: rest[name].detach().float().cpu().numpy() for key, name in rest_names.items()}
    report = {
        "device": device, "loss": codec.loss, "initial_loss": losses[0], "final_loss": losses[-1],
        "min_loss": min(losses), "calibration_tokens": codec.calibration_tokens(),
        "seconds_per_step": round(float(np.median(step_seconds)), 4),
        "cpu_seconds_per_step": round(float(np.median(step_cpu_seconds)), 4), "setup_seconds": round(setup_seconds, 3),
        "distill_seconds": round(sum(step_seconds), 3),
        "trained_rest_tensors": len(trained_rest),
        "trained_rest_weights": sum(parameter.numel() for parameter in rest.values()),
    }
    del model, optimizer, scales, rest, teacher_rest
    return result, trained_rest, report


def distillation_loss(student_logits, teacher_logits, kind: str):
    import torch.nn.functional as F

    if kind == "mse":
        return F.mse_loss(student_logits, teacher_logits)
    vocab = student_logits.shape[-1]
    return F.kl_div(F.log_softmax(student_logits.reshape(-1, vocab), -1),
                    F.log_softmax(teacher_logits.reshape(-1, vocab), -1), log_target=True, reduction="batchmean")
