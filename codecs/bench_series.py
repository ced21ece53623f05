"""``modelcodecs bench --series``: a real checkpoint series, coded as a series, by lmz and by zstd.

The series is made here, on CPython's pydoc topics (``packaged.python_docs_corpus``), causal-LM loss, AdamW on fp32
master weights, a checkpoint saved every ``--series-every`` steps in ``--series-dtype`` (``checkpoint-<step>/``:
config and weights, as a trainer saves them), by one of two models (``--series-model``):

* ``smollm2-135m``: SmolLM2-135M-Instruct (``packaged.smollm2_folder``) continued; about 100 s per step on a loaded
  2-core machine, so only a few steps fit;
* ``llama-scratch``: a Llama built from SmolLM2's configuration with its real tokenizer and vocabulary
  (``packaged.smollm2_tokenizer``) but a few narrow layers (``--series-layers``, ``--series-hidden``), trained from
  random initialisation: a few hundred steps fit, and its loss visibly falls.

Then, on the same directory:

* ``series``: :func:`modelcodecs.series.compress_series` (FM-Delta against the previous checkpoint, a keyframe
  without a base every ``--keyframe-every``; and as one chain), bytes of each checkpoint's artifact;
* ``lmz``: ``lmz compress -j 1`` of the whole run directory (it codes tensors against matching ones in an earlier
  file), bytes of the archive / number of checkpoints;
* ``zstd-3``: ``modelcodecs compress --codec zstd`` of each checkpoint.

The series is verified (every checkpoint restored in order, every file's sha256 checked against the one recorded
from the original) and its last checkpoint restored through its chain and compared with the original folder; lmz's
archive is restored and compared too; zstd is not restored here (its round trips are in the test suite).
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .bench_nobase import MB, _folder_bytes, _timed, _tree_digest
from .errors import ConfigError


SERIES_MODELS = ("smollm2-135m", "llama-scratch")


@dataclass(frozen=True)
class Recipe:
    """How a series model is trained: AdamW's learning rate, sequences per step, tokens per sequence."""

    lr: float
    batch: int
    seq_len: int


# the pretrained model is continued gently; the one built from scratch needs a larger rate to learn in a few
# hundred steps, and is small enough for longer batches on a CPU
RECIPES = {"smollm2-135m": Recipe(lr=1e-4, batch=2, seq_len=32),
           "llama-scratch": Recipe(lr=1e-3, batch=8, seq_len=64)}
HEAD_DIM = 32
HELD_OUT_WINDOWS = 16


def build_model(name: str, cache: Path, *, hidden: int, layers: int, seed: int):
    """The model a series trains, in fp32, and its tokenizer. ``smollm2-135m``: the pretrained SmolLM2-135M-Instruct
    (``hidden`` and ``layers`` unused); ``llama-scratch``: a Llama with SmolLM2's configuration and tokenizer (its
    49152-token vocabulary, tied embeddings) but ``layers`` decoder layers of width ``hidden`` (heads of
    ``HEAD_DIM``, intermediate size 3 x hidden), randomly initialised with ``seed``."""
    import torch

    from ._torch import load_model, load_tokenizer
    from .packaged import smollm2_folder, smollm2_tokenizer

    if name == "smollm2-135m":
        model_dir = smollm2_folder(cache / "smollm2-f32", dtype="F32")
        return load_model(model_dir, device="cpu", dtype=torch.float32), load_tokenizer(model_dir)
    if name != "llama-scratch":
        raise ConfigError(f"series model must be one of {', '.join(SERIES_MODELS)}, got {name!r}")
    if hidden < HEAD_DIM or hidden % (2 * HEAD_DIM) or layers < 1:
        raise ConfigError(f"llama-scratch needs a width that is a multiple of {2 * HEAD_DIM} and at least one "
                          f"layer, got width {hidden}, {layers} layers")
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = smollm2_tokenizer(cache / "smollm2-tokenizer")
    heads = hidden // HEAD_DIM
    config = AutoConfig.from_pretrained(folder)
    config.update({"hidden_size": hidden, "intermediate_size": 3 * hidden, "num_hidden_layers": layers,
                   "num_attention_heads": heads, "num_key_value_heads": heads // 2, "head_dim": HEAD_DIM})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32), load_tokenizer(folder)


def make_training_run(out_dir: Path, cache: Path, *, steps: int, every: int, model_name: str = "smollm2-135m",
                      dtype: str = "BF16", hidden: int = 128, layers: int = 4, seed: int = 0, log=print) -> dict:
    """Train ``model_name`` (:func:`build_model`) for ``steps`` AdamW steps on the pydoc training text (its
    :data:`RECIPES` entry), saving ``checkpoint-<k>`` (``save_pretrained`` in ``dtype``, BF16 or F32, from fp32
    master weights) every ``every`` steps, step 0 included. Returns the training record (also written beside the
    run as ``<run>.training.json``): the training loss of every step, the held-out loss at every checkpoint, CPU
    and wall seconds. A run already complete in ``out_dir`` with the same settings is reused."""
    import torch

    from ._torch import no_hf_progress_bars
    from .packaged import python_docs_corpus

    if dtype not in ("BF16", "F32"):
        raise ConfigError(f"series dtype must be BF16 or F32, got {dtype!r}")
    out_dir = Path(out_dir)
    recipe = RECIPES.get(model_name)
    if recipe is None:
        raise ConfigError(f"series model must be one of {', '.join(SERIES_MODELS)}, got {model_name!r}")
    settings = {"model": model_name, "dtype": dtype, "steps": steps, "every": every, "seed": seed,
                **asdict(recipe), **({"hidden": hidden, "layers": layers} if model_name == "llama-scratch" else {})}
    record_path = out_dir.with_name(f"{out_dir.name}.training.json")
    wanted = [out_dir / f"checkpoint-{k}" for k in range(0, steps + 1, every)]
    if record_path.is_file() and all((w / "model.safetensors").is_file() for w in wanted):
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record["settings"] == settings:
            return record
    shutil.rmtree(out_dir, ignore_errors=True)
    record_path.unlink(missing_ok=True)
    model, tokenizer = build_model(model_name, cache, hidden=hidden, layers=layers, seed=seed)
    train_txt, heldout_txt = python_docs_corpus(cache / "python-docs")
    ids = torch.tensor(tokenizer(train_txt.read_text(encoding="utf-8"))["input_ids"], dtype=torch.long)
    heldout = torch.tensor(tokenizer(heldout_txt.read_text(encoding="utf-8"))["input_ids"], dtype=torch.long)
    # fixed held-out windows, evenly spaced: the same text is scored at every checkpoint
    span = recipe.seq_len
    heldout_x = torch.stack([heldout[s:s + span] for s in
                             torch.linspace(0, heldout.numel() - span - 1, HELD_OUT_WINDOWS).long().tolist()])
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    gen = torch.Generator().manual_seed(seed)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    train_losses, heldout_losses = [], {}
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                heldout_losses[step] = model(input_ids=heldout_x, labels=heldout_x).loss.item()
            saved = model if dtype == "F32" else copy.deepcopy(model).to(torch.bfloat16)
            with no_hf_progress_bars():
                saved.save_pretrained(tmp / f"checkpoint-{step}", safe_serialization=True)
            log(f"  step {step}: held-out loss {heldout_losses[step]:.3f}, saved "
                f"({time.perf_counter() - wall:.0f} s)")
        if step == steps:
            break
        starts = torch.randint(0, ids.numel() - span - 1, (recipe.batch,), generator=gen)
        x = torch.stack([ids[s:s + span] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_losses.append(loss.item())
    record = {"settings": settings, "parameters": sum(p.numel() for p in model.parameters()),
              "train_losses": train_losses, "heldout_losses": heldout_losses,
              "train_cpu_s": time.process_time() - cpu, "train_wall_s": time.perf_counter() - wall}
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return json.loads(record_path.read_text(encoding="utf-8"))  # as reused runs see it: JSON keys are strings


def _series_row(run: Path, work: Path, checkpoints: list, digests: dict, keyframe_every: int, log) -> dict:
    """Code ``run`` as a series, verify it, restore its last checkpoint through its chain and compare it."""
    from .series import compress_series, restore_checkpoint, verify_series

    series_dir = work / f"series-k{keyframe_every}"
    shutil.rmtree(series_dir, ignore_errors=True)
    started = time.process_time()
    summary = compress_series(run, series_dir, keyframe_every=keyframe_every, threads=1)
    cpu = time.process_time() - started
    log(f"  series (keyframe every {keyframe_every}): verify (every checkpoint restored in order, every file's "
        "sha256 checked)")
    report = verify_series(series_dir, threads=1)
    last = checkpoints[-1][0]
    out = work / f"restored-{last}"
    shutil.rmtree(out, ignore_errors=True)
    restored = restore_checkpoint(series_dir, last, out, threads=1)
    same = report.ok and _tree_digest(out) == digests[last]
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(series_dir)
    return {"per_checkpoint": {c["step"]: c["compressed_bytes"] for c in summary.checkpoints},
            "total": summary.compressed_bytes, "compress_cpu_s": cpu, "byte_identical": same,
            "last_step_links": restored["links"], "codecs": {c["step"]: c["codec"] for c in summary.checkpoints}}


def run_series_bench(run: Path, work: Path, *, keyframe_every: int, lmz: str | None, log) -> dict:
    """The series coded with a keyframe every ``keyframe_every`` checkpoints and as one chain (a single keyframe,
    as lmz codes a directory), zstd-3 per checkpoint, and lmz on the whole directory when ``lmz`` is given."""
    from .series import discover_checkpoints

    checkpoints = discover_checkpoints(run)
    digests = {step: _tree_digest(folder) for step, folder in checkpoints}
    originals = {step: _folder_bytes(folder) for step, folder in checkpoints}
    rows = {}
    for interval in sorted({min(keyframe_every, len(checkpoints)), len(checkpoints)}):
        name = "series, one chain" if interval >= len(checkpoints) else f"series, keyframe every {interval}"
        log(f"  {name}")
        rows[name] = _series_row(run, work, checkpoints, digests, interval, log)

    log("  zstd-3")
    py = [sys.executable, "-m", "modelcodecs"]
    sizes, cpu = {}, 0.0
    for step, folder in checkpoints:
        art = work / f"zstd-{step}.dvz"
        art.unlink(missing_ok=True)
        cpu += _timed(py + ["compress", "--codec", "zstd", str(folder), "-o", str(art), "--threads", "1", "-q"])[1]
        sizes[step] = art.stat().st_size
        art.unlink()
    rows["zstd-3"] = {"per_checkpoint": sizes, "total": sum(sizes.values()), "compress_cpu_s": cpu,
                      "byte_identical": None}

    if lmz:
        log("  lmz")
        archive, out = work / "run.lmz", work / "lmz-restored"
        shutil.rmtree(out, ignore_errors=True)
        _, cpu = _timed([lmz, "compress", "-j", "1", "-q", "-f", str(run), str(archive)])
        _timed([lmz, "decompress", "-j", "1", "-q", "-f", str(archive), str(out)])
        restored = out if (out / checkpoints[0][1].name).is_dir() else out / run.name
        same = all(_tree_digest(restored / folder.name) == digests[step] for step, folder in checkpoints)
        total = archive.stat().st_size
        rows["lmz"] = {"per_checkpoint": None, "total": total, "compress_cpu_s": cpu, "byte_identical": same}
        shutil.rmtree(out, ignore_errors=True)
        archive.unlink()
    return {"run": str(run), "checkpoints": [s for s, _ in checkpoints], "original_bytes": originals,
            "keyframe_every": keyframe_every, "rows": rows}


def _mean(values) -> float:
    return sum(values) / len(values)


def format_series(result: dict) -> str:
    steps = result["checkpoints"]
    n = len(steps)
    orig = result["original_bytes"]
    training = result["training"]
    settings = training["settings"]
    model = (f"{settings['model']} ({training['parameters'] / 1e6:.2f} M parameters"
             + (f", {settings['layers']} layers of width {settings['hidden']}" if "hidden" in settings else "")
             + ")")
    losses, heldout = training["train_losses"], training["heldout_losses"]
    head = min(10, len(losses))
    lines = [f"### {model} training run: {n} {settings['dtype']} checkpoints (steps {steps[0]}..{steps[-1]}), "
             f"{orig[steps[0]] / MB:.2f} MB each", "",
             f"AdamW lr {settings['lr']:g}, {settings['batch']} x {settings['seq_len']} tokens per step; training "
             f"loss (mean of {head} steps) {_mean(losses[:head]):.3f} first, {_mean(losses[-head:]):.3f} last; "
             f"held-out loss {heldout[str(steps[0])]:.3f} at step {steps[0]}, {heldout[str(steps[-1])]:.3f} at "
             f"step {steps[-1]}; training {training['train_wall_s']:.0f} s wall, {training['train_cpu_s']:.0f} "
             "CPU-s", "",
             "| tool | total MB | MB per checkpoint (mean) | first checkpoint MB | later checkpoints MB (mean) "
             "| total / original | compress CPU-s | byte-identical |", "|---|---|---|---|---|---|---|---|"]
    total_orig = sum(orig.values())
    for name, row in result["rows"].items():
        per = row["per_checkpoint"]
        first = f"{per[steps[0]] / MB:.2f}" if per else "-"
        later = f"{_mean([per[s] for s in steps[1:]]) / MB:.2f}" if per and n > 1 else "-"
        lines.append(f"| {name} | {row['total'] / MB:.2f} | {row['total'] / n / MB:.2f} | {first} | {later} | "
                     f"{row['total'] / total_orig:.4f} | {row['compress_cpu_s']:.1f} | "
                     f"{'-' if row['byte_identical'] is None else 'yes' if row['byte_identical'] else 'NO'} |")
    for name, row in result["rows"].items():
        if name.startswith("series"):
            per = row["per_checkpoint"]
            lines += ["", f"{name}, per checkpoint (MB): " + ", ".join(f"{s}: {per[s] / MB:.2f}" for s in steps)]
    lines += ["", "Held-out loss per checkpoint: " + ", ".join(f"{s}: {heldout[str(s)]:.3f}" for s in steps)]
    return "\n".join(lines)


def main(args) -> int:
    import shutil as _shutil

    lmz = args.lmz or _shutil.which("lmz")
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    log(f"training run: {args.series_model}, {args.series_steps} steps, a {args.series_dtype} checkpoint every "
        f"{args.series_every}")
    run = root / f"run-{args.series_model}-{args.series_dtype.lower()}"
    training = make_training_run(run, root, steps=args.series_steps, every=args.series_every,
                                 model_name=args.series_model, dtype=args.series_dtype, hidden=args.series_hidden,
                                 layers=args.series_layers, seed=args.seed, log=log)
    work = root / "series-work"
    work.mkdir(exist_ok=True)
    result = run_series_bench(run, work, keyframe_every=args.keyframe_every, lmz=lmz, log=log)
    result["training"] = training
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(format_series(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


__all__ = ["RECIPES", "SERIES_MODELS", "build_model", "format_series", "main", "make_training_run", "run_series_bench"]
