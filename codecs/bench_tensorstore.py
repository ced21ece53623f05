"""``modelcodecs bench --tensorstore``: bytes on disk of a team's tensor store (``modelcodecs.tensorstore``) against
the logical bytes of the models in it.

On the real SmolLM2-135M-Instruct in bf16 (``modelcodecs.packaged.smollm2_folder``):

* ``re-upload``: the model stored, then an identical copy of its folder stored again (a team uploading the same
  checkpoint twice);
* ``frozen layers``: the model stored, then a real fine-tune of it stored, trained by AdamW on CPython's
  documentation text (``packaged.python_docs_corpus``) with everything frozen but the last ``train_layers``
  decoder layers (the embeddings, tied to the output head, frozen too), saved in bf16 by ``save_pretrained``.

Each store is timed in this process (CPU seconds from ``resource.getrusage``), and every model is restored from the
store and compared with its folder file by file (sha256). ``fmdelta-nobase alone`` is what the same models cost
coded one by one without sharing (the sum of their object bytes as if each model had its own store).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from .bench_nobase import _tree_digest
from .errors import ConfigError
from .tensorstore import iter_object_files, restore_model, store_model

MB = 1e6


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _store_bytes(root: Path) -> int:
    return sum(path.stat().st_size for _, path in iter_object_files(root))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def make_frozen_finetune(base: Path, out_dir: Path, corpus: Path, *, train_layers: int, steps: int,
                         seed: int = 0, log=print) -> Path:
    """Fine-tune ``base`` with all but its last ``train_layers`` decoder layers frozen (reused when written)."""
    if (out_dir / "model.safetensors").is_file():
        return out_dir
    import torch

    from ._torch import load_model, load_tokenizer

    log(f"--tensorstore: fine-tuning the last {train_layers} layers of SmolLM2-135M, {steps} AdamW steps")
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(base)
    model = load_model(base, device="cpu", dtype=torch.float32)
    layers = model.model.layers
    for param in model.parameters():
        param.requires_grad_(False)
    trained = [p for layer in layers[len(layers) - train_layers:] for p in layer.parameters()]
    for param in trained:
        param.requires_grad_(True)
    model.train()
    ids = tokenizer(corpus.read_text(encoding="utf-8")[:100_000], return_tensors="pt")["input_ids"][0]
    optimiser = torch.optim.AdamW(trained, lr=1e-4)
    for step in range(steps):
        batch = ids[step * 2 * 128:(step + 1) * 2 * 128].reshape(2, 128)
        model(input_ids=batch, labels=batch).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.eval().to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    return out_dir


def run_case(name: str, first: Path, second: Path, work: Path, threads: int, log=print) -> dict:
    """Store ``first`` then ``second`` in one fresh store (and each alone in its own); restore and compare both."""
    shared = work / "store-shared"
    shutil.rmtree(shared, ignore_errors=True)
    rows = []
    for label, folder in (("first", first), ("second", second)):
        log(f"--tensorstore: {name}: storing the {label} model")
        wall, cpu = time.perf_counter(), _cpu_s()
        summary = store_model(folder, shared, threads=threads)
        wall, cpu = time.perf_counter() - wall, _cpu_s() - cpu
        out = work / f"restored-{label}"
        shutil.rmtree(out, ignore_errors=True)
        restore_wall, restore_cpu = time.perf_counter(), _cpu_s()
        restore_model(summary.manifest, shared, out, threads=threads)
        restore_wall, restore_cpu = time.perf_counter() - restore_wall, _cpu_s() - restore_cpu
        if _tree_digest(out) != _tree_digest(folder):
            raise RuntimeError(f"{name}: the {label} model did not restore byte for byte")
        shutil.rmtree(out)
        alone = work / f"store-alone-{label}"
        shutil.rmtree(alone, ignore_errors=True)
        store_model(folder, alone, threads=threads)
        rows.append({"model": label, "logical_bytes": summary.logical_bytes, "written_bytes": summary.written_bytes,
                     "deduplicated_bytes": summary.deduplicated_bytes, "store_bytes_after": _store_bytes(shared),
                     "alone_bytes": _store_bytes(alone), "store_s": round(wall, 2), "store_cpu_s": round(cpu, 2),
                     "restore_s": round(restore_wall, 2), "restore_cpu_s": round(restore_cpu, 2),
                     "tensors": summary.tensors_total, "new_objects": len(summary.new_keys)})
        shutil.rmtree(alone)
    shutil.rmtree(shared)
    logical = sum(r["logical_bytes"] for r in rows)
    on_disk = rows[-1]["store_bytes_after"]
    return {"name": name, "rows": rows, "logical_bytes": logical, "bytes_on_disk": on_disk,
            "alone_bytes": sum(r["alone_bytes"] for r in rows), "on_disk_over_logical": on_disk / logical}


def format_case(case: dict) -> str:
    lines = [f"### {case['name']}", "",
             "| model | logical MB | new MB written | deduplicated MB | store MB after | alone MB | store s (CPU s) "
             "| restore s (CPU s) |", "|---|---|---|---|---|---|---|---|"]
    for r in case["rows"]:
        lines.append(f"| {r['model']} | {r['logical_bytes'] / MB:.2f} | {r['written_bytes'] / MB:.2f} | "
                     f"{r['deduplicated_bytes'] / MB:.2f} | {r['store_bytes_after'] / MB:.2f} | "
                     f"{r['alone_bytes'] / MB:.2f} | {r['store_s']} ({r['store_cpu_s']}) | "
                     f"{r['restore_s']} ({r['restore_cpu_s']}) |")
    lines.append("")
    lines.append(f"Both models: {case['logical_bytes'] / MB:.2f} MB logical, **{case['bytes_on_disk'] / MB:.2f} MB "
                 f"on disk ({case['on_disk_over_logical']:.4f})**; each stored alone (fmdelta-nobase objects, no "
                 f"sharing) {case['alone_bytes'] / MB:.2f} MB.")
    return "\n".join(lines)


def main(args) -> int:
    """Entry from ``modelcodecs bench --tensorstore`` (args: workdir, tensorstore_steps, tensorstore_layers,
    threads, json, quiet)."""
    from .packaged import python_docs_corpus, smollm2_folder

    if not args.workdir:
        raise ConfigError("--tensorstore needs --workdir (SmolLM2 folders are cached there)")
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    threads = int(str(args.threads).split(",")[0])

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    base = smollm2_folder(root / "smollm2-bf16", dtype="BF16")
    again = root / "smollm2-bf16-again"
    if not again.is_dir():
        shutil.copytree(base, again)
    train, _ = python_docs_corpus(root / "corpus")
    tuned = make_frozen_finetune(base, root / f"smollm2-bf16-last{args.tensorstore_layers}-"
                                 f"{args.tensorstore_steps}steps", train, train_layers=args.tensorstore_layers,
                                 steps=args.tensorstore_steps, log=log)
    work = root / "tensorstore-work"
    work.mkdir(exist_ok=True)
    cases = [run_case("SmolLM2-135M-Instruct bf16 stored twice (re-upload)", base, again, work, threads, log),
             run_case(f"SmolLM2-135M-Instruct bf16 + a fine-tune of its last {args.tensorstore_layers} layers "
                      f"({args.tensorstore_steps} AdamW steps)", base, tuned, work, threads, log)]
    report = {"threads": threads, "load_average_end": os.getloadavg(), "cases": cases}
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print("\n\n".join(format_case(c) for c in cases))
        print(f"\n(threads {threads}; load average at the end {report['load_average_end']})")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


__all__ = ["format_case", "main", "make_frozen_finetune", "run_case"]
