"""Issue 11 figures: a job's peak memory measured on its own (VmHWM reset) in a process that earlier held a big
buffer, and how soon a zstd-19 compress stops after a cancel (pieces of 256 KiB vs whole 4 MiB chunks).

    python bench/bench_job_memory_cancel.py
"""

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

import modelcodecs
from modelcodecs import baselines
from modelcodecs.memory import peak_rss, reset_peak_rss


def peak_memory() -> None:
    d = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    base = {f"w{i}": (rng.standard_normal((256, 256)) * 0.02).astype(np.float32) for i in range(4)}
    ft = {k: v + (rng.standard_normal(v.shape) * 1e-4).astype(np.float32) for k, v in base.items()}
    for name, tensors in (("base", base), ("ft", ft)):
        (d / name).mkdir()
        save_file(tensors, str(d / name / "model.safetensors"))
    big = np.ones(400 << 20, dtype=np.uint8)  # an earlier 400 MB job in the same worker process
    del big

    def run(tag: str) -> None:
        s = modelcodecs.compress_model(d / "ft", d / f"{tag}.dvz", codec={"id": "fmdelta"},
                                       base_dir=d / "base").as_dict()
        print(f"{tag}: compress of {s['original_bytes'] / 1e6:.2f} MB reports peak RSS "
              f"{s['peak_rss_bytes'] / 2**20:.0f} MiB")

    run("without reset")
    print("reset:", reset_peak_rss())
    run("after reset (what a job now reports)")


def cancel_latency() -> None:
    d = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    (d / "ft").mkdir()
    save_file({f"w{i}": rng.standard_normal((1024, 1024)).astype(np.float32) for i in range(16)},
              str(d / "ft" / "model.safetensors"))

    def trial(tag: str) -> None:
        asked = {"t": None}
        threading.Timer(2.0, lambda: asked.__setitem__("t", time.perf_counter())).start()
        try:
            modelcodecs.compress_model(d / "ft", d / "out.dvz", codec={"id": "zstd", "level": 19}, threads=2,
                                       cancel=lambda: asked["t"] is not None)
            print(tag, "finished before the cancel")
        except modelcodecs.CancelledError:
            print(f"{tag}: stopped {time.perf_counter() - asked['t']:.2f} s after the cancel")

    trial("pieces of 256 KiB")
    whole = baselines.zstd_compress
    baselines.zstd_compress = lambda data, level, cancel=None: whole(data, level)
    try:
        trial("whole 4 MiB chunks")
    finally:
        baselines.zstd_compress = whole


if __name__ == "__main__":
    peak_memory()
    cancel_latency()
