"""``modelcodecs bench --bitdelta BASE FT TRAIN HELDOUT``: BitDelta's size, quality, speed and memory on one pair.

* size: bits per binarised weight (scales included), the whole-checkpoint ratio (fine-tuned folder bytes /
  artifact bytes), what storing the rest raw (the reference) would give, and the paper's Llama-2-7B figure
  recomputed from its shapes in consistent units;
* quality: perplexity of base, fine-tune, BitDelta-Initial and distilled on the held-out text;
* speed: a distillation step of the 1-bit student against a step of a dense fp32 student (every weight trained,
  same teacher, model and batch), measured side by side; sign packing and decoding in MB of weights per CPU-second;
* memory: peak RSS of the process that ran the distilled ``compress_model`` (VmHWM).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MB = 1e6


def llama2_7b_figure() -> dict:
    """The paper's 10.87x for Llama-2-7B, recomputed from the model's shapes (fp16 original; 1 bit per weight of
    the 7 linear matrices of each of 32 blocks plus one fp32 scale each; embeddings, lm_head and norms in fp16)."""
    hidden, inter, layers, vocab = 4096, 11008, 32, 32000
    linear = layers * (4 * hidden * hidden + 3 * hidden * inter)
    other = 2 * vocab * hidden + (2 * layers + 1) * hidden
    original = 2 * (linear + other)
    compressed = linear / 8 + 4 * 7 * layers + 2 * other
    return {"original_bytes": original, "compressed_bytes": int(compressed), "ratio": round(original / compressed, 3),
            "original_GB": round(original / 1e9, 3), "original_GiB": round(original / 2**30, 3),
            "compressed_GB": round(compressed / 1e9, 3), "compressed_GiB": round(compressed / 2**30, 3),
            "paper_mixed_units": round((original / 1e9) / (compressed / 2**30), 2)}


def _child(argv: list[str]) -> None:
    """One ``compress_model`` in a fresh process (its own peak RSS), printing JSON."""
    from .. import compress_model
    from ..bench import _own_peak_rss

    args = json.loads(argv[0])
    losses = []
    summary = compress_model(args["ft"], args["artifact"], codec=args["config"], base_dir=args["base"],
                             threads=args["threads"], calibration_text=args.get("text"),
                             on_step=lambda point: losses.append(point["loss"]))
    print(json.dumps({"summary": summary.as_dict(), "losses": losses, "peak_rss": _own_peak_rss()}, default=str))


def _compress(config: dict, base: Path, ft: Path, text: Path | None, artifact: Path, threads: int) -> dict:
    args = {"config": config, "base": str(base), "ft": str(ft), "text": str(text) if text else None,
            "artifact": str(artifact), "threads": threads}
    code = "import sys; from modelcodecs.bitdelta.bench import _child; _child(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench: compress with {config} failed:\n{proc.stderr.strip()[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sizes(artifact: Path, ft: Path) -> dict:
    from ..pipeline import inspect_artifact

    info = inspect_artifact(artifact)
    signs = [t for t in info["tensor_list"] if "signs" in t["coders"]]
    rest = [t for t in info["tensor_list"] if "signs" not in t["coders"]]
    weights = sum(t["original_bytes"] // {"F32": 4, "BF16": 2, "F16": 2, "F64": 8}[t["dtype"]] for t in signs)
    sign_bytes = sum(t["compressed_bytes"] for t in signs)
    rest_raw = sum(t["original_bytes"] for t in rest)
    rest_coded = sum(t["compressed_bytes"] for t in rest)
    other = info["compressed_bytes"] - sign_bytes - rest_coded
    return {"binarised_tensors": len(signs), "binarised_weights": weights,
            "bits_per_binarised_weight": round(8 * sign_bytes / weights, 5) if weights else None,
            "lossless_tensors": len(rest), "lossless_raw_bytes": rest_raw, "lossless_coded_bytes": rest_coded,
            "artifact_bytes": info["compressed_bytes"], "original_bytes": info["original_bytes"],
            "ratio": info["ratio"],
            "ratio_if_rest_raw": round(info["original_bytes"] / (sign_bytes + rest_raw + other), 4)}


def _codec_speed(base: Path, ft: Path, repeat: int = 3) -> dict:
    """Sign packing (encode_tensor of the binarised weights, Initial scales) and decoding (W_base + α·S in the
    fine-tune's dtype), MB of fine-tuned weights per second on one thread (numpy): wall clock (each tensor's
    best of ``repeat``) and per CPU-second (every repeat, summed over the tensors: what one core does whatever
    the other processes' load)."""
    from ..hfio import ModelFolder
    from . import BitDeltaCodec
    from .distill import plan_weights

    codec = BitDeltaCodec(steps=0)
    codec.prepare(finetuned_dir=str(ft), base_dir=str(base))
    weights = plan_weights(ft, base)
    enc = dec = enc_cpu = dec_cpu = 0.0
    nbytes = 0
    with ModelFolder(ft) as tuned, ModelFolder(base) as based:
        for w in weights:
            ref = tuned.tensors[w.tensor]
            data, base_data = bytes(tuned.read_tensor(ref)), bytes(based.read_tensor(based.tensors[w.tensor]))
            out = bytearray(ref.spec.nbytes)
            best_e = best_d = float("inf")
            for _ in range(repeat):
                t, c = time.perf_counter(), time.process_time()
                chunks = list(codec.encode_tensor(ref.spec, memoryview(data), memoryview(base_data)))
                best_e, enc_cpu = min(best_e, time.perf_counter() - t), enc_cpu + time.process_time() - c
                t, c = time.perf_counter(), time.process_time()
                codec.decode_tensor(ref.spec, chunks, memoryview(base_data), memoryview(out))
                best_d, dec_cpu = min(best_d, time.perf_counter() - t), dec_cpu + time.process_time() - c
            enc, dec, nbytes = enc + best_e, dec + best_d, nbytes + ref.spec.nbytes
    return {"weights_MB": round(nbytes / MB, 1), "pack_MB_per_s": round(nbytes / MB / enc, 1),
            "decode_MB_per_s": round(nbytes / MB / dec, 1),
            "pack_MB_per_cpu_s": round(repeat * nbytes / MB / enc_cpu, 1),
            "decode_MB_per_cpu_s": round(repeat * nbytes / MB / dec_cpu, 1)}


def _step_times(base: Path, ft: Path, text: Path, *, batch_size: int, seq_len: int, steps: int) -> dict:
    """Median seconds of a distillation step, CPU (the ratio: it does not count other processes' load) and
    wall clock: 1-bit student (scales only) and dense fp32 student (every weight trained with AdamW), same
    teacher, batch and machine, one after the other."""
    import numpy as np
    import torch

    from .._torch import load_model, load_tokenizer
    from . import BitDeltaCodec
    from .distill import calibration_windows, distill_scales, distillation_loss, plan_weights

    codec = BitDeltaCodec(steps=steps, batch_size=batch_size, seq_len=seq_len, device="cpu")
    _, _, report = distill_scales(codec, finetuned_dir=ft, base_dir=base, weights=plan_weights(ft, base),
                                  text_path=text)
    binary, binary_cpu = report["seconds_per_step"], report["cpu_seconds_per_step"]
    teacher = load_model(ft, device="cpu", dtype=torch.float32)
    student = load_model(base, device="cpu", dtype=torch.float32).train()
    batches = calibration_windows(load_tokenizer(ft), text, count=steps * batch_size, seq_len=seq_len,
                                  seed=0).view(steps, batch_size, -1)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.0)
    times, cpu_times = [], []
    for step in range(steps):
        tick, cpu_tick = time.perf_counter(), time.process_time()
        with torch.no_grad():
            target = teacher(input_ids=batches[step]).logits.float()
        loss = distillation_loss(student(input_ids=batches[step]).logits.float(), target, "mse")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tick)
        cpu_times.append(time.process_time() - cpu_tick)
    dense, dense_cpu = float(np.median(times)), float(np.median(cpu_times))
    return {"steps_timed": steps, "threads": torch.get_num_threads(), "one_bit_step_s": binary,
            "dense_step_s": round(dense, 4), "wall_ratio": round(binary / dense, 3),
            "one_bit_step_cpu_s": binary_cpu, "dense_step_cpu_s": round(dense_cpu, 4),
            "ratio": round(binary_cpu / dense_cpu, 3)}


def run_bitdelta(args, log) -> dict:
    from ..bench import _load, machine
    from ..evaluate import evaluate_perplexity
    from ..pipeline import decompress_model

    base, ft, train, heldout = (Path(p) for p in args.bitdelta)
    work = Path(args.workdir or "bitdelta-bench")
    shutil.rmtree(work / "artifacts", ignore_errors=True)
    (work / "artifacts").mkdir(parents=True)
    load_start = _load()
    common = {"id": "bitdelta", "batch_size": args.bd_batch, "seq_len": args.bd_seq_len, "lr": args.bd_lr,
              "device": "cpu"}
    variants = {"initial": ({**common, "steps": 0}, None), "distilled": ({**common, "steps": args.bd_steps}, train)}
    if args.bd_row:
        variants["initial-row"] = ({**common, "steps": 0, "scale_granularity": "row"}, None)
        variants["distilled-row"] = ({**common, "steps": args.bd_steps, "scale_granularity": "row"}, train)
    if args.bd_train_rest:
        variants["distilled-train-rest"] = ({**common, "steps": args.bd_steps, "train_rest": True}, train)

    def compress(label: str) -> dict:
        log(f"compressing: BitDelta {label}")
        config, text = variants[label]
        run = _compress(config, base, ft, text, work / "artifacts" / f"{label}.dvz", threads=1)
        log(f"compressed: BitDelta {label}")
        return run

    # each compress is a child process of its own (its own peak RSS); --bd-parallel runs several at once
    with ThreadPoolExecutor(args.bd_parallel) as pool:
        runs = dict(zip(variants, pool.map(compress, variants)))
    for label, run in runs.items():
        artifact = work / "artifacts" / f"{label}.dvz"
        run["sizes"] = _sizes(artifact, ft)
        decompress_model(artifact, work / "artifacts" / label, base_dir=base, threads=1)
    quality = {}
    for label, folder in (("base", base), ("finetuned", ft),
                          *((name, work / "artifacts" / name) for name in runs)):
        log(f"perplexity: {label}")
        quality[label] = evaluate_perplexity(folder, heldout, max_tokens=args.bd_eval_tokens, device="cpu")
    log("speed: sign packing and decoding")
    codec_speed = _codec_speed(base, ft)
    log("speed: 1-bit and dense student steps")
    steps = _step_times(base, ft, train, batch_size=args.bd_batch, seq_len=args.bd_seq_len,
                        steps=args.bd_speed_steps)
    ft_fp32 = runs["distilled"]["sizes"]["original_bytes"]  # an fp32 pair: the folder is the fp32 size
    report = {"machine": machine(), "load_average_start": load_start, "load_average_end": _load(),
              "command": "modelcodecs bench " + " ".join(args.argv), "pair": [str(base), str(ft)],
              "runs": runs, "quality": quality, "codec_speed": codec_speed, "step_times": steps,
              "llama2_7b": llama2_7b_figure()}
    ppl = {k: v["perplexity"] for k, v in quality.items()}
    initial_gap = abs(ppl["initial"] - ppl["finetuned"])
    distilled_gap = abs(ppl["distilled"] - ppl["finetuned"])
    # the gap to the fine-tune of every variant, as a fraction of (matrix) Initial's gap
    report["gap_ratios"] = {label: round(abs(ppl[label] - ppl["finetuned"]) / initial_gap, 4) if initial_gap else None
                            for label in runs}
    if "distilled-train-rest" in runs:
        # what training the rest costs: its tensors now differ from the fine-tune, so they are stored as trained
        rest, scales_only = runs["distilled-train-rest"]["sizes"], runs["distilled"]["sizes"]
        report["train_rest_extra_bytes"] = rest["artifact_bytes"] - scales_only["artifact_bytes"]
    rss = runs["distilled"]["peak_rss"]
    report["targets"] = [
        {"target": "binarised matrices <= 1.01 bits per weight with their scales",
         "value": runs["distilled"]["sizes"]["bits_per_binarised_weight"], "limit": 1.01},
        {"target": "distilled perplexity gap <= 50% of Initial's gap (held-out)",
         "value": round(distilled_gap / initial_gap, 4) if initial_gap else None, "limit": 0.5},
        {"target": "1-bit student step <= 1.5x dense fp32 student step", "value": steps["ratio"], "limit": 1.5},
        {"target": "sign packing >= 400 MB/s per core", "value": codec_speed["pack_MB_per_cpu_s"], "limit": 400,
         "higher": True},
        {"target": "decoding >= 400 MB/s per core", "value": codec_speed["decode_MB_per_cpu_s"], "limit": 400,
         "higher": True},
        {"target": "compress peak RSS <= 2.5x fine-tune fp32 size + 1 GB (MB)", "value": round(rss / MB),
         "limit": round((2.5 * ft_fp32 + 1e9) / MB)},
    ]
    for t in report["targets"]:
        t["ok"] = t["value"] is not None and (t["value"] >= t["limit"] if t.get("higher") else t["value"] <= t["limit"])
    return report


def format_bitdelta(report: dict) -> str:
    lines = [f"# BitDelta on {report['pair'][1]} over {report['pair'][0]}", "",
             f"{report['command']}; load average {report['load_average_start']} -> {report['load_average_end']}",
             "", "| variant | bits/binarised weight | ratio (file) | ratio if the rest were raw | perplexity |"
             " artifact bytes | compress s | distill s/step | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    q = report["quality"]
    lines.append(f"| base | - | - | - | {q['base']['perplexity']:.4f} | - | - | - | - |")
    lines.append(f"| fine-tune | - | 1 | - | {q['finetuned']['perplexity']:.4f} | - | - | - | - |")
    for name, run in report["runs"].items():
        s, prepared = run["sizes"], run["summary"].get("prepared", {})
        lines.append(f"| {name} | {s['bits_per_binarised_weight']} | {s['ratio']} | {s['ratio_if_rest_raw']} | "
                     f"{q[name]['perplexity']:.4f} | {s['artifact_bytes']:,} | {run['summary']['seconds']} | "
                     f"{prepared.get('seconds_per_step', '-')} | {run['peak_rss'] / MB:.0f} |")
    d = report["runs"]["distilled"]
    lines += ["", f"distillation loss: first {d['losses'][0]:.5g}, last {d['losses'][-1]:.5g}" if d["losses"]
              else "", f"speed: {json.dumps(report['codec_speed'])}", f"steps: {json.dumps(report['step_times'])}",
              f"Llama-2-7B recomputed: {json.dumps(report['llama2_7b'])}",
              f"perplexity gap to the fine-tune / Initial's: {json.dumps(report['gap_ratios'])}"]
    if "train_rest_extra_bytes" in report:
        lines.append(f"train_rest: {report['train_rest_extra_bytes']:,} more bytes than scales only")
    lines += ["", "Targets:"]
    for t in report["targets"]:
        lines.append(f"- {'MET ' if t['ok'] else 'MISSED'} {t['target']}: {t['value']} (limit {t['limit']})")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--bd-steps", type=int, default=200, help="bitdelta: distillation steps")
    parser.add_argument("--bd-batch", type=int, default=4, help="bitdelta: batch size")
    parser.add_argument("--bd-seq-len", type=int, default=128, help="bitdelta: tokens per sequence")
    parser.add_argument("--bd-lr", type=float, default=1e-4, help="bitdelta: learning rate")
    parser.add_argument("--bd-row", action="store_true", help="bitdelta: also one scale per row (Initial and "
                        "distilled)")
    parser.add_argument("--bd-train-rest", action="store_true", help="bitdelta: also a distillation that trains "
                        "the tensors that are not binarised (train_rest=True), stored as trained")
    parser.add_argument("--bd-parallel", type=int, default=1, help="bitdelta: compress processes run at once")
    parser.add_argument("--bd-eval-tokens", type=int, default=8192, help="bitdelta: held-out tokens scored")
    parser.add_argument("--bd-speed-steps", type=int, default=5, help="bitdelta: steps timed per student")
