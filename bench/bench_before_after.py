"""Whole ``modelcodecs compress/decompress`` commands of two versions of the library, and the ``zstd`` command line,
run alternately on the same pair (files in the page cache), best of ``--rounds``: wall and CPU seconds (user +
system of the command and its threads; on a loaded machine the CPU seconds are what other load affects least).

"before" is a copy of another version's ``codecs/`` folder named ``modelcodecs`` (with the same native build)
put first on ``PYTHONPATH``, e.g. ``git archive MAIN codecs | tar -x -C B && mv B/codecs B/modelcodecs && cp
codecs/*.so B/modelcodecs/``; "after" is the installed library.

    python bench/bench_before_after.py --before B --base PAIR/base --finetuned PAIR/finetuned [--threads 1]
                                       [--rounds 3] [--workdir DIR]

A pair: ``modelcodecs.synthetic.make_synthetic_pair`` (the 268 MB fp32 file of ``modelcodecs bench --cli``), or
``python -c "from modelcodecs.synthetic import *; make_synthetic_pair('P', dtype='BF16', layout=smollm2_layout())"``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from modelcodecs.bench_cli import _clear, _folder_bytes, _timed, _warm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="a folder holding the other version as modelcodecs/")
    p.add_argument("--base", required=True, type=Path)
    p.add_argument("--finetuned", required=True, type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dv-before-after-"))
    work.mkdir(parents=True, exist_ok=True)
    _warm(args.base, args.finetuned)
    weights = sorted(args.finetuned.glob("*.safetensors"))
    env_before = {**os.environ, "PYTHONPATH": str(Path(args.before).resolve())}
    rows: dict[str, list[tuple[float, float]]] = {}

    def run(label: str, cmd: list[str], clear, env=None) -> None:
        cpu: list[float] = []
        wall = _timed(cmd, 1, clear, cpu, env=env)
        rows.setdefault(label, []).append((wall, cpu[0]))

    zstd = shutil.which("zstd")
    packed = work / "ft.zst"
    for _ in range(args.rounds):
        if zstd and len(weights) == 1:
            run("zstd -1 -T1", [zstd, "-1", "-T1", "-q", "-f", str(weights[0]), "-o", str(packed)], None)
            run("zstd -d", [zstd, "-d", "-q", "-f", str(packed), "-o", str(work / "ft.out")],
                _clear(work / "ft.out"))
        for label, env in (("before", env_before), ("after", None)):
            artifact, restored = work / f"{label}.dvz", work / f"{label}.out"
            threads = ["--threads", str(args.threads), "--base", str(args.base)]
            run(f"{label} compress", [sys.executable, "-m", "modelcodecs", "compress", "-q", *threads,
                                      str(args.finetuned), "-o", str(artifact)], _clear(artifact), env)
            run(f"{label} decompress", [sys.executable, "-m", "modelcodecs", "decompress", "-q", *threads,
                                        str(artifact), "-o", str(restored)], _clear(restored), env)
    size = _folder_bytes(args.finetuned)
    print(f"{size / 1e6:.1f} MB, {args.threads} thread(s), best of {args.rounds} rounds, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| command | wall s | CPU s | MB/s (wall) |\n|---|---|---|---|")
    for label, runs in rows.items():
        wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {size / 1e6 / wall:.0f} |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
