"""``modelcodecs bench --cli`` and ``--smollm2``: whole commands against the ``zstd`` command line, and threads on a
real checkpoint of many small tensors.

* ``--cli``: one safetensors file (a synthetic fp32 pair, 64 Mi elements in 8 tensors unless told otherwise), in
  the page cache; ``zstd -1 -T1`` and ``zstd -d`` on the fine-tuned file beside ``modelcodecs compress/decompress
  --threads 1`` on its folder, each a fresh process (start-up counted), best of ``--repeat``. Targets: compress at
  least 0.8x and decompress at least 0.5x zstd's MB/s. Then the same on a synthetic bf16 pair in SmolLM2-135M's
  layout (``synthetic.smollm2_layout``: 272 tensors, most under 3 MB) at 1 and 2 threads: 2 threads at least
  1.7x as fast as 1, both ways. Wall and CPU seconds are reported for every command. Without the ``zstd``
  program the zstd rows say so.
* ``--smollm2``: SmolLM2-135M (272 tensors, most under 3 MB; ``modelcodecs.packaged``) as the base, a fine-tune of it
  made by a few AdamW steps on the Python documentation's text, and the same fine-tune with its vocabulary grown by
  1% (``resize_token_embeddings``): ratios, the cost of the added rows, and ``modelcodecs compress/decompress`` at 1
  and 2 threads (target: 2 threads at least 1.7x as fast as 1).
"""

from __future__ import annotations

import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

MB = 1e6


def _timed(cmd: list[str], repeat: int, before=None, cpu: list | None = None, env: dict | None = None) -> float:
    """Best wall-clock seconds of ``repeat`` runs of a command; with ``cpu``, also append its best CPU seconds
    (user + system of the process and its threads: on a shared machine, what other load affects least)."""
    best, best_cpu = math.inf, math.inf
    for _ in range(repeat):
        if before is not None:
            before()
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"bench: {' '.join(cmd)} failed:\n{proc.stderr.strip()[-2000:]}")
        best = min(best, seconds)
        best_cpu = min(best_cpu, after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime)
    if cpu is not None:
        cpu.append(best_cpu)
    return best


def _warm(*paths: Path) -> None:
    """Read every file once so the page cache holds it."""
    for root in paths:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            with open(path, "rb") as fh:
                while fh.read(8 << 20):
                    pass


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _modelcodecs(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelcodecs", *args]


def _clear(*paths: Path):
    def clear() -> None:
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    return clear


def pair_speeds(base: Path, ft: Path, work: Path, threads: int, repeat: int, extra: tuple[str, ...] = ()) -> dict:
    """``modelcodecs compress`` and ``decompress`` of one pair as whole commands (fresh processes)."""
    artifact, restored = work / "pair.dvz", work / "restored"
    cpu: list[float] = []
    comp = _timed(_modelcodecs("compress", "-q", "--threads", str(threads), "--base", str(base), str(ft), "-o",
                               str(artifact), *extra), repeat, _clear(artifact), cpu)
    size = artifact.stat().st_size
    dec = _timed(_modelcodecs("decompress", "-q", "--threads", str(threads), "--base", str(base), str(artifact),
                              "-o", str(restored)), repeat, _clear(restored), cpu)
    original = _folder_bytes(ft)
    same = all((restored / p.relative_to(ft)).read_bytes() == p.read_bytes() for p in ft.rglob("*") if p.is_file())
    _clear(artifact, restored)()
    return {"threads": threads, "compress_s": comp, "decompress_s": dec, "compress_cpu_s": cpu[0],
            "decompress_cpu_s": cpu[1], "artifact_bytes": size,
            "original_bytes": original, "ratio": original / size, "compress_mb_s": original / MB / comp,
            "decompress_mb_s": original / MB / dec, "exact": same}


def _zstd_speeds(ft_file: Path, work: Path, repeat: int, log) -> dict | None:
    """``zstd -1 -T1`` and ``zstd -d`` on one file, or None without the program."""
    zstd = shutil.which("zstd")
    if zstd is None:
        return None
    size = ft_file.stat().st_size
    packed, unpacked = work / "ft.zst", work / "ft.out"
    log(f"--cli: zstd -1 -T1 / zstd -d on {ft_file}")
    cpu: list[float] = []
    comp = _timed([zstd, "-1", "-T1", "-q", "-f", str(ft_file), "-o", str(packed)], repeat, _clear(packed), cpu)
    dec = _timed([zstd, "-d", "-q", "-f", str(packed), "-o", str(unpacked)], repeat, _clear(unpacked), cpu)
    result = {"compress_s": comp, "decompress_s": dec, "compress_mb_s": size / MB / comp,
              "decompress_mb_s": size / MB / dec, "compress_cpu_s": cpu[0], "decompress_cpu_s": cpu[1],
              "ratio": size / packed.stat().st_size}
    _clear(packed, unpacked)()
    return result


def _versus_zstd(mine: dict, zstd: dict, what: str) -> list[dict]:
    """The targets against zstd (MB/s of whole commands, 1 thread), with the same ratio in CPU seconds beside."""
    targets = []
    for way, tool, limit in (("compress", "zstd -1 -T1", 0.8), ("decompress", "zstd -d", 0.5)):
        value = mine[f"{way}_mb_s"] / zstd[f"{way}_mb_s"]
        per_cpu = zstd[f"{way}_cpu_s"] / mine[f"{way}_cpu_s"]
        targets.append({"target": f"{what}: modelcodecs {way} --threads 1 >= {limit}x {tool} (MB/s; per CPU-second "
                                  f"{per_cpu:.2f}x)", "value": value, "limit": limit, "ok": value >= limit,
                        "per_cpu": per_cpu})
    return targets


def cli_case(work: Path, *, elements: int, tensors: int, repeat: int, seed: int,
             layout: list | None = None, log=print) -> dict:
    from . import synthetic

    log(f"--cli: generating an fp32 pair of {elements} elements in {tensors} tensors")
    pair = synthetic.make_synthetic_pair(work / "cli-pair", dtype="F32", n_elements=elements, delta_sigma=1e-4,
                                         seed=seed, n_tensors=tensors)
    ft_file = pair.finetuned / "model.safetensors"
    _warm(pair.base, pair.finetuned)
    out: dict = {"name": "whole commands vs the zstd CLI", "file_bytes": ft_file.stat().st_size,
                 "elements": elements, "tensors": tensors, "repeat": repeat, "targets": []}
    out["zstd"] = _zstd_speeds(ft_file, work, repeat, log)
    if out["zstd"] is None:
        out["note"] = "the zstd program is not installed (apt-get install zstd): no zstd figures, no targets"
    log("--cli: modelcodecs compress / decompress --threads 1")
    out["modelcodecs"] = pair_speeds(pair.base, pair.finetuned, work, 1, repeat)
    shutil.rmtree(work / "cli-pair", ignore_errors=True)
    if out["zstd"]:
        out["targets"] = _versus_zstd(out["modelcodecs"], out["zstd"], "fp32 file")
        out["compress_vs_zstd"], out["decompress_vs_zstd"] = (t["value"] for t in out["targets"])
    layout = synthetic.smollm2_layout() if layout is None else layout
    log(f"--cli: generating a bf16 pair in SmolLM2-135M's layout ({len(layout)} tensors)")
    # delta 1e-3: a ratio near a real SmolLM2 fine-tune's (about 2.6 here, 2.3 for the --smollm2 one)
    pair = synthetic.make_synthetic_pair(work / "cli-layout", dtype="BF16", layout=layout, delta_sigma=1e-3,
                                         seed=seed)
    ft_file = pair.finetuned / "model.safetensors"
    _warm(pair.base, pair.finetuned)
    sizes = [math.prod(shape) * 2 for _, shape in layout]
    lay: dict = {"file_bytes": ft_file.stat().st_size, "tensors": len(layout),
                 "tensors_under_3mb": sum(1 for size in sizes if size < 3e6), "largest_tensor_bytes": max(sizes),
                 "zstd": _zstd_speeds(ft_file, work, repeat, log), "runs": []}
    for threads in (1, 2):
        log(f"--cli: SmolLM2 layout, modelcodecs compress / decompress --threads {threads}")
        lay["runs"].append(pair_speeds(pair.base, pair.finetuned, work, threads, repeat))
    shutil.rmtree(work / "cli-layout", ignore_errors=True)
    one, two = lay["runs"]
    if lay["zstd"]:
        out["targets"] += _versus_zstd(one, lay["zstd"], "SmolLM2 layout, bf16")
    for way in ("compress", "decompress"):
        value = one[f"{way}_s"] / two[f"{way}_s"]
        lay[f"{way}_2t_vs_1t"] = value
        out["targets"].append({"target": f"SmolLM2 layout: {way}, 2 threads / 1 thread, wall (CPU s 1T "
                                         f"{one[f'{way}_cpu_s']:.2f}, 2T {two[f'{way}_cpu_s']:.2f})",
                               "value": value, "limit": 1.7, "ok": value >= 1.7})
    out["layout"] = lay
    return out


def make_smollm2_pair(root: Path, *, steps: int = 3, grow: float = 0.01, seed: int = 0, log=print) -> dict:
    """SmolLM2-135M as the base; a fine-tune by ``steps`` AdamW steps on the Python documentation's text; the same
    fine-tune with ``grow`` more vocabulary rows. Folders already written under ``root`` are reused."""
    from .packaged import python_docs_corpus, smollm2_folder

    base = smollm2_folder(root / "base")
    ft, grown = root / "finetuned", root / "finetuned-grown"
    if not (ft / "model.safetensors").is_file() or not (grown / "model.safetensors").is_file():
        import torch

        from ._torch import load_model, load_tokenizer

        log(f"--smollm2: fine-tuning SmolLM2-135M, {steps} AdamW steps on the Python docs")
        torch.manual_seed(seed)
        train, _ = python_docs_corpus(root / "corpus")
        tokenizer = load_tokenizer(base)
        model = load_model(base, device="cpu")
        model.train()
        ids = tokenizer(train.read_text(encoding="utf-8")[:200_000], return_tensors="pt")["input_ids"][0]
        optimiser = torch.optim.AdamW(model.parameters(), lr=2e-5)
        for step in range(steps):
            start = step * 2 * 128
            batch = ids[start:start + 2 * 128].reshape(2, 128)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
        model.eval()
        model.save_pretrained(ft, safe_serialization=True)
        tokenizer.save_pretrained(ft)
        vocab = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(vocab + max(1, round(vocab * grow)))
        model.save_pretrained(grown, safe_serialization=True)
        tokenizer.save_pretrained(grown)
    return {"base": base, "finetuned": ft, "grown": grown}


def smollm2_case(root: Path, work: Path, *, repeat: int, steps: int, log=print) -> dict:
    from .hfio import ModelFolder

    pair = make_smollm2_pair(root, steps=steps, log=log)
    _warm(pair["base"], pair["finetuned"], pair["grown"])
    with ModelFolder(pair["finetuned"]) as folder:
        sizes = sorted(ref.spec.nbytes for ref in folder.iter_tensors())
    out = {"name": f"SmolLM2-135M, fine-tuned by {steps} AdamW steps", "tensors": len(sizes),
           "tensors_under_3mb": sum(1 for s in sizes if s < 3e6), "largest_tensor_bytes": sizes[-1], "runs": []}
    for threads in (1, 2):
        log(f"--smollm2: modelcodecs compress / decompress --threads {threads}")
        out["runs"].append(pair_speeds(pair["base"], pair["finetuned"], work, threads, repeat))
    log("--smollm2: the fine-tune with 1% more vocabulary")
    out["grown"] = pair_speeds(pair["base"], pair["grown"], work, 2, 1)
    one, two = out["runs"]
    out["added_rows_cost"] = out["grown"]["artifact_bytes"] / one["artifact_bytes"]
    out["targets"] = [
        {"target": "compress, 2 threads / 1 thread (whole command)", "value": one["compress_s"] / two["compress_s"],
         "limit": 1.7, "ok": one["compress_s"] / two["compress_s"] >= 1.7},
        {"target": "decompress, 2 threads / 1 thread (whole command)",
         "value": one["decompress_s"] / two["decompress_s"], "limit": 1.7,
         "ok": one["decompress_s"] / two["decompress_s"] >= 1.7},
        {"target": "artifact of the fine-tune with 1% more vocabulary / without", "value": out["added_rows_cost"],
         "limit": 1.02, "ok": out["added_rows_cost"] <= 1.02}]
    return out


def format_cases(cases: list[dict]) -> str:
    lines = []
    for case in cases:
        lines.append(f"### {case['name']}")
        if "modelcodecs" in case:
            lay = case["layout"]
            lines += [f"best of {case['repeat']}, whole commands (fresh processes, start-up counted); wall s and "
                      f"CPU s (user + system, all threads)", "",
                      "| file | command | ratio | compress wall / CPU s | decompress wall / CPU s | compress MB/s "
                      "| decompress MB/s |", "|---|---|---|---|---|---|---|"]
            for label, runs, z in (
                    (f"fp32, {case['file_bytes'] / MB:.0f} MB, {case['tensors']} tensors", [case["modelcodecs"]],
                     case["zstd"]),
                    (f"SmolLM2 layout bf16, {lay['file_bytes'] / MB:.0f} MB, {lay['tensors']} tensors "
                     f"({lay['tensors_under_3mb']} under 3 MB)", lay["runs"], lay["zstd"])):
                rows = [(f"modelcodecs --threads {r['threads']}", r) for r in runs]
                rows += [("zstd -1 -T1 / zstd -d", z)] if z else []
                for name, r in rows:
                    lines.append(f"| {label} | {name} | {r['ratio']:.4f} | {r['compress_s']:.2f} / "
                                 f"{r['compress_cpu_s']:.2f} | {r['decompress_s']:.2f} / {r['decompress_cpu_s']:.2f} "
                                 f"| {r['compress_mb_s']:.0f} | {r['decompress_mb_s']:.0f} |")
                if not z:
                    lines.append(f"| {label} | zstd: {case['note']} | | | | | |")
        else:
            lines += [f"{case['tensors']} tensors ({case['tensors_under_3mb']} under 3 MB; largest "
                      f"{case['largest_tensor_bytes'] / MB:.1f} MB)", "",
                      "| threads | ratio | compress s | decompress s | compress / decompress CPU s | compress MB/s "
                      "| decompress MB/s | exact |", "|---|---|---|---|---|---|---|---|"]
            for r in case["runs"]:
                lines.append(f"| {r['threads']} | {r['ratio']:.4f} | {r['compress_s']:.2f} | {r['decompress_s']:.2f} "
                             f"| {r['compress_cpu_s']:.2f} / {r['decompress_cpu_s']:.2f} "
                             f"| {r['compress_mb_s']:.0f} | {r['decompress_mb_s']:.0f} "
                             f"| {'yes' if r['exact'] else 'NO'} |")
            g = case["grown"]
            lines.append(f"\n1% more vocabulary: artifact {g['artifact_bytes']:,} bytes vs "
                         f"{case['runs'][0]['artifact_bytes']:,} (x{case['added_rows_cost']:.4f}), exact: "
                         f"{'yes' if g['exact'] else 'NO'}")
        lines.append("")
        for t in case.get("targets", []):
            lines.append(f"- {'MET ' if t['ok'] else 'MISSED'} {t['target']}: {t['value']:.3f} (limit {t['limit']})")
        lines.append("")
    return "\n".join(lines)
