"""``modelcodecs bench --series``: a real checkpoint series, coded as a series, by lmz and by zstd.

The series is made here: SmolLM2-135M-Instruct (``packaged.smollm2_folder``, fp32 master weights) trained with
AdamW on CPython's pydoc topics (``packaged.python_docs_corpus``), causal-LM loss, a checkpoint saved every
``--series-every`` steps as bf16 safetensors (``checkpoint-<step>/``: config and weights, as a trainer saves them).

Then, on the same directory:

* ``series``: :func:`modelcodecs.series.compress_series` (FM-Delta against the previous checkpoint, a keyframe
  without a base every ``--keyframe-every``), bytes of each checkpoint's artifact;
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
from pathlib import Path

from .bench_nobase import MB, _folder_bytes, _timed, _tree_digest


def make_training_run(out_dir: Path, cache: Path, *, steps: int, every: int, seq_len: int = 32, batch: int = 2,
                      lr: float = 1e-4, seed: int = 0, log=print) -> Path:
    """Train SmolLM2-135M for ``steps`` AdamW steps, saving ``checkpoint-<k>`` (bf16) every ``every`` steps
    (step 0 included). A run already complete in ``out_dir`` is reused."""
    import torch

    from ._torch import load_model, load_tokenizer
    from .packaged import python_docs_corpus, smollm2_folder

    out_dir = Path(out_dir)
    wanted = [out_dir / f"checkpoint-{k}" for k in range(0, steps + 1, every)]
    if all((w / "model.safetensors").is_file() for w in wanted):
        return out_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    model_dir = smollm2_folder(cache / "smollm2-f32", dtype="F32")
    train_txt, _ = python_docs_corpus(cache / "python-docs")
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(model_dir)
    ids = torch.tensor(tokenizer(train_txt.read_text(encoding="utf-8"))["input_ids"], dtype=torch.long)
    model = load_model(model_dir, device="cpu", dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0:
            copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp / f"checkpoint-{step}",
                                                                    safe_serialization=True)
            log(f"  step {step}: saved ({time.perf_counter() - started:.0f} s)")
        if step == steps:
            break
        starts = torch.randint(0, ids.numel() - seq_len - 1, (batch,), generator=gen)
        x = torch.stack([ids[s:s + seq_len] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def run_series_bench(run: Path, work: Path, *, keyframe_every: int, lmz: str | None, log) -> dict:
    from .series import compress_series, discover_checkpoints, restore_checkpoint, verify_series

    checkpoints = discover_checkpoints(run)
    digests = {step: _tree_digest(folder) for step, folder in checkpoints}
    originals = {step: _folder_bytes(folder) for step, folder in checkpoints}
    rows = {}

    log("  series")
    series_dir = work / "series"
    shutil.rmtree(series_dir, ignore_errors=True)
    started = time.process_time()
    summary = compress_series(run, series_dir, keyframe_every=keyframe_every, threads=1)
    cpu = time.process_time() - started
    log("  series: verify (every checkpoint restored in order, every file's sha256 checked)")
    report = verify_series(series_dir, threads=1)
    last = checkpoints[-1][0]
    out = work / f"restored-{last}"
    shutil.rmtree(out, ignore_errors=True)
    restored = restore_checkpoint(series_dir, last, out, threads=1)
    same = report.ok and _tree_digest(out) == digests[last]
    shutil.rmtree(out, ignore_errors=True)
    rows["series"] = {"per_checkpoint": {c["step"]: c["compressed_bytes"] for c in summary.checkpoints},
                      "total": summary.compressed_bytes, "compress_cpu_s": cpu, "byte_identical": same,
                      "last_step_links": restored["links"],
                      "codecs": {c["step"]: c["codec"] for c in summary.checkpoints}}

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


def format_series(result: dict) -> str:
    steps = result["checkpoints"]
    n = len(steps)
    orig = result["original_bytes"]
    lines = [f"### SmolLM2-135M training run: {n} bf16 checkpoints (steps {steps[0]}..{steps[-1]}), "
             f"{orig[steps[0]] / MB:.1f} MB each; series keyframe every {result['keyframe_every']}", "",
             "| tool | total MB | MB per checkpoint (mean) | first checkpoint MB | later checkpoints MB (mean) "
             "| total / original | compress CPU-s | byte-identical |", "|---|---|---|---|---|---|---|---|"]
    total_orig = sum(orig.values())
    for name, row in result["rows"].items():
        per = row["per_checkpoint"]
        first = f"{per[steps[0]] / MB:.2f}" if per else "-"
        later = f"{sum(per[s] for s in steps[1:]) / max(1, n - 1) / MB:.2f}" if per and n > 1 else "-"
        lines.append(f"| {name} | {row['total'] / MB:.2f} | {row['total'] / n / MB:.2f} | {first} | {later} | "
                     f"{row['total'] / total_orig:.4f} | {row['compress_cpu_s']:.1f} | "
                     f"{'-' if row['byte_identical'] is None else 'yes' if row['byte_identical'] else 'NO'} |")
    series = result["rows"]["series"]["per_checkpoint"]
    lines += ["", "Series, per checkpoint (MB): " + ", ".join(f"{s}: {series[s] / MB:.2f}" for s in steps)]
    return "\n".join(lines)


def main(args) -> int:
    import shutil as _shutil

    lmz = args.lmz or _shutil.which("lmz")
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    log(f"training run: {args.series_steps} steps, a checkpoint every {args.series_every}")
    run = make_training_run(root / "run", root, steps=args.series_steps, every=args.series_every, log=log)
    work = root / "series-work"
    work.mkdir(exist_ok=True)
    result = run_series_bench(run, work, keyframe_every=args.keyframe_every, lmz=lmz, log=log)
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(format_series(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


__all__ = ["format_series", "main", "make_training_run", "run_series_bench"]
