"""The pipeline's flow: tensors worked on ahead by several threads, each base byte read once per restore, added
vocabulary rows coded against the base, unmatched bases refused, several fine-tunes or artifacts per base, a
memory limit below the checkpoint's size, and format-1 artifacts still read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from common import assert_same_tree, base_tensors, finetune, make_pair, write_safetensors

import modelcodecs
from modelcodecs import hfio, pipeline
from modelcodecs.cli import main

torch = pytest.importorskip("torch")


def _small_tensor_pair(root: Path, count: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """Many small fp32/bf16 tensors (a transformer layout in miniature) plus one larger one."""
    gen = torch.Generator().manual_seed(seed)
    base = {f"layers.{i}.w": torch.randn(24 + i, 16, generator=gen) * 0.02 for i in range(count)}
    base.update({f"layers.{i}.b": torch.randn(16, generator=gen).to(torch.bfloat16) for i in range(count // 2)})
    base["embed.weight"] = torch.randn(512, 64, generator=gen) * 0.02
    tuned = {k: (v.double() + torch.randn(v.shape, generator=gen, dtype=torch.float64) * 1e-4).to(v.dtype)
             for k, v in base.items()}
    tuned["layers.3.copy"] = tuned["layers.5.w"].clone()  # identical bytes: stored once
    return (write_safetensors(root / "base", base, extras=False),
            write_safetensors(root / "ft", tuned, shards=3, extras=True))


@pytest.mark.parametrize("window, small", [(64 << 20, 8 << 20), (4096, 1024), (40 << 10, 2048)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_many_small_tensors_restore_exactly(tmp_path, monkeypatch, window, small, threads):
    """Whatever runs ahead (window) and whatever is coded whole by one worker (small), the folder comes back."""
    monkeypatch.setattr(pipeline, "WINDOW_BYTES", window)
    monkeypatch.setattr(pipeline, "SMALL_TENSOR_BYTES", small)
    base_dir, ft_dir = _small_tensor_pair(tmp_path)
    art = tmp_path / "a.dvz"
    summary = modelcodecs.compress_model(ft_dir, art, codec={"id": "fmdelta", "chunk_elements": 4096},
                                         base_dir=base_dir, threads=threads)
    assert summary.deduplicated_tensors == 1 and summary.ratio > 1.2
    restored = modelcodecs.decompress_model(art, tmp_path / "out", base_dir=base_dir, threads=threads)
    assert_same_tree(ft_dir, tmp_path / "out")
    assert restored.file_sha256 == {e["name"]: e["sha256"] for e in modelcodecs.inspect_artifact(art)["files"]}
    assert modelcodecs.verify_artifact(art, base_dir=base_dir, reference_dir=ft_dir, threads=threads).ok


def _record_reads(monkeypatch) -> list[tuple[str, int, int]]:
    """Every (file, offset, size) read through hfio from now on."""
    reads: list[tuple[str, int, int]] = []
    original = hfio._read_exact

    def recording(handle, offset, size, into=None):
        reads.append((handle.name, offset, size))
        return original(handle, offset, size, into)

    monkeypatch.setattr(hfio, "_read_exact", recording)
    return reads


def _assert_base_read_once(reads: list[tuple[str, int, int]], base_dir: Path, art: Path) -> None:
    """The base file's headers (length, then JSON) were read once, then each base tensor ``art`` uses once."""
    base_reads = sorted((off, size) for name, off, size in reads if Path(name).is_relative_to(base_dir) and size)
    used = [t for t in modelcodecs.inspect_artifact(art)["tensor_list"] if t["base"] and t["original_bytes"]]
    assert len(used) >= 3
    for (a, n), (b, _) in zip(base_reads, base_reads[1:]):
        assert a + n <= b, f"base bytes {b}..{a + n} read twice"
    assert len(base_reads) == 2 + len(used)


@pytest.mark.parametrize("codec", ["fmdelta", "xor-zstd"])
def test_a_restore_reads_each_base_byte_once(tmp_path, monkeypatch, codec):
    base_dir, ft_dir = make_pair(tmp_path)
    art = tmp_path / "a.dvz"
    modelcodecs.compress_model(ft_dir, art, codec=codec, base_dir=base_dir, threads=2)
    reads = _record_reads(monkeypatch)
    modelcodecs.decompress_model(art, tmp_path / "out", base_dir=base_dir, threads=2)
    assert_same_tree(ft_dir, tmp_path / "out")
    _assert_base_read_once(reads, base_dir, art)


def _vocab_pair(root: Path, extra_rows: int) -> tuple[Path, Path]:
    base = base_tensors(0)
    gen = torch.Generator().manual_seed(5)
    base["embed.weight"] = (torch.randn(400, 16, generator=gen) * 0.02)
    base["lm_head.weight"] = (torch.randn(400, 16, generator=gen) * 0.02)
    base["lm_head.bias"] = torch.zeros(400)
    tuned = finetune(base, 1, sigma=1e-4)
    tuned["lm_head.weight"] = (base["lm_head.weight"].double() + 1e-4).float()  # untied here
    for name in ("embed.weight", "lm_head.weight", "lm_head.bias"):
        t = tuned[name]
        rows = torch.randn((extra_rows, *t.shape[1:]), generator=gen) * 0.02
        tuned[name] = torch.cat([t, rows.to(t.dtype)])
    return (write_safetensors(root / "base", base, extras=False),
            write_safetensors(root / "ft", tuned, extras=True))


@pytest.mark.parametrize("codec", ["fmdelta", "xor-zstd"])
def test_added_vocabulary_rows_share_the_base(tmp_path, codec):
    sizes = {}
    for extra in (0, 4):
        base_dir, ft_dir = _vocab_pair(tmp_path / str(extra), extra)
        art = tmp_path / f"{extra}.dvz"
        modelcodecs.compress_model(ft_dir, art, codec=codec, base_dir=base_dir, threads=2)
        modelcodecs.decompress_model(art, tmp_path / f"out{extra}", base_dir=base_dir, threads=2)
        assert_same_tree(ft_dir, tmp_path / f"out{extra}")
        by_name = {t["name"]: t for t in modelcodecs.inspect_artifact(art)["tensor_list"]}
        for name in ("embed.weight", "lm_head.weight", "lm_head.bias"):
            assert by_name[name]["base"] == name
        sizes[extra] = art.stat().st_size
        one = modelcodecs.decode_tensor(art, "lm_head.weight", base_dir=base_dir)[1]
        assert len(one) == (400 + extra) * 16 * 4
    # the shared rows cost what they did; the new rows cost at most their own bytes (embed, lm_head, bias)
    assert sizes[4] <= sizes[0] + 4 * (16 + 16 + 1) * 4 + 512


def test_a_vocabulary_cut_uses_the_leading_base_rows(tmp_path):
    base = {"embed.weight": torch.randn(64, 8) * 0.02, "w": torch.randn(8, 8)}
    tuned = {"embed.weight": base["embed.weight"][:50] + 1e-5, "w": base["w"] + 1e-5}
    base_dir = write_safetensors(tmp_path / "base", base, extras=False)
    ft_dir = write_safetensors(tmp_path / "ft", tuned, extras=False)
    modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="fmdelta", base_dir=base_dir)
    modelcodecs.decompress_model(tmp_path / "a.dvz", tmp_path / "out", base_dir=base_dir)
    assert_same_tree(ft_dir, tmp_path / "out")
    # a base with fewer rows than the artifact used is the wrong base
    write_safetensors(tmp_path / "small", {"embed.weight": base["embed.weight"][:40], "w": base["w"]}, extras=False)
    with pytest.raises(modelcodecs.WrongBaseError, match="first 50 rows"):
        modelcodecs.decompress_model(tmp_path / "a.dvz", tmp_path / "out2", base_dir=tmp_path / "small")


def test_a_base_with_other_rows_is_refused_before_use(tmp_path):
    base_dir, ft_dir = _vocab_pair(tmp_path, 4)
    art = tmp_path / "a.dvz"
    modelcodecs.compress_model(ft_dir, art, codec="fmdelta", base_dir=base_dir)
    other = base_tensors(0)
    other.update({"embed.weight": torch.randn(400, 16) * 0.02, "lm_head.weight": torch.randn(400, 16) * 0.02,
                  "lm_head.bias": torch.zeros(400)})
    other_dir = write_safetensors(tmp_path / "other", other, extras=False)
    with pytest.raises(modelcodecs.WrongBaseError, match="differs"):
        modelcodecs.decompress_model(art, tmp_path / "out", base_dir=other_dir)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def _unmatched(tmp_path) -> tuple[Path, Path, Path]:
    base_dir, ft_dir = make_pair(tmp_path)
    stranger = write_safetensors(tmp_path / "stranger", {"other.weight": torch.randn(8, 8),
                                                         "embed.weight": torch.randn(3, 3)}, extras=False)
    return base_dir, ft_dir, stranger


def test_an_unmatched_base_is_refused_unless_allowed(tmp_path):
    _, ft_dir, stranger = _unmatched(tmp_path)
    with pytest.raises(modelcodecs.WrongBaseError) as err:
        modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="fmdelta", base_dir=stranger)
    text = str(err.value)
    assert str(stranger) in text and str(ft_dir) in text and "0 of its" in text and "embed.weight" in text
    assert not list(tmp_path.glob("a.dvz*"))
    modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="fmdelta", base_dir=stranger,
                               allow_unmatched_base=True)
    modelcodecs.decompress_model(tmp_path / "a.dvz", tmp_path / "out", base_dir=stranger)
    assert_same_tree(ft_dir, tmp_path / "out")


def test_a_base_sharing_under_half_the_bytes_is_refused(tmp_path):
    big = {"big": torch.randn(64, 64), "small": torch.randn(4, 4)}
    ft_dir = write_safetensors(tmp_path / "ft", big, extras=False)
    base_dir = write_safetensors(tmp_path / "base", {"small": big["small"]}, extras=False)
    with pytest.raises(modelcodecs.WrongBaseError, match=r"1 of its 2 tensors \(64 of 16,448 bytes, 0%\)"):
        modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="xor-zstd", base_dir=base_dir)
    # a codec that does not use the base is not concerned
    modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="zstd", base_dir=base_dir)


def test_cli_unmatched_base_and_its_override(tmp_path, capsys):
    _, ft_dir, stranger = _unmatched(tmp_path)
    code = main(["compress", "--base", str(stranger), str(ft_dir), "-o", str(tmp_path / "a.dvz")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: the base") and "--allow-unmatched-base" in err
    code = main(["compress", "--base", str(stranger), str(ft_dir), "-o", str(tmp_path / "a.dvz"),
                 "--allow-unmatched-base"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2])
def test_several_finetunes_and_artifacts_share_one_base(tmp_path, monkeypatch, capsys, threads):
    """One command, three fine-tunes: each base byte is read once and fingerprinted once for all of them, on the
    command's ``threads`` worker threads (not as many per fine-tune)."""
    base = base_tensors(0)
    base_dir = write_safetensors(tmp_path / "base", base, extras=False)
    fts = [write_safetensors(tmp_path / f"ft{i}", finetune(base, i + 1), extras=True) for i in range(3)]
    fingerprints = []
    workers = set()
    original = pipeline.tensor_digest

    def counting(data, version):
        fingerprints.append(bytes(data))
        if threading.current_thread().name.startswith("modelcodecs-tensor"):
            workers.add(threading.get_ident())
        return original(data, version)

    monkeypatch.setattr(pipeline, "tensor_digest", counting)
    reads = _record_reads(monkeypatch)
    code = main(["compress", "--base", str(base_dir), *map(str, fts), "-o", str(tmp_path / "arts"), "--json",
                 "--threads", str(threads)])
    assert code == 0
    summaries = json.loads(capsys.readouterr().out)["artifacts"]
    n = summaries[0]["tensors"]
    assert [s["tensors"] for s in summaries] == [n, n, n] and n > 10
    # every fine-tuned tensor is hashed once per fine-tune; each base tensor used is fingerprinted once in all
    used = [t for t in modelcodecs.inspect_artifact(tmp_path / "arts" / "ft0.dvz")["tensor_list"] if t["base"]]
    assert len(fingerprints) == 3 * n + len(used)
    _assert_base_read_once(reads, base_dir, tmp_path / "arts" / "ft0.dvz")
    assert 1 <= len(workers) <= threads
    arts = [tmp_path / "arts" / f"ft{i}.dvz" for i in range(3)]
    fingerprints.clear()
    workers.clear()
    reads.clear()
    code = main(["decompress", "--base", str(base_dir), *map(str, arts), "-o", str(tmp_path / "out"), "--json",
                 "--threads", str(threads)])
    assert code == 0, capsys.readouterr().err
    assert len(json.loads(capsys.readouterr().out)["restored"]) == 3
    for i, ft in enumerate(fts):
        assert_same_tree(ft, tmp_path / "out" / f"ft{i}")
    assert len(fingerprints) == 3 * n + len(used)
    _assert_base_read_once(reads, base_dir, arts[0])
    assert 1 <= len(workers) <= threads


def test_a_failing_finetune_among_several_leaves_no_partial_artifact(tmp_path):
    """Coded side by side, one fine-tune that cannot be read stops the command; no partial artifact is left."""
    base = base_tensors(0)
    base_dir = write_safetensors(tmp_path / "base", base, extras=False)
    good = write_safetensors(tmp_path / "good", finetune(base, 1), extras=False)
    bad = write_safetensors(tmp_path / "bad", finetune(base, 2), extras=False)
    weights = bad / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 64)  # its header still parses; the last tensor's bytes are short
    outs = [tmp_path / "good.dvz", tmp_path / "bad.dvz"]
    with pytest.raises(modelcodecs.ModelCodecError):
        modelcodecs.compress_models([good, bad], outs, codec="fmdelta", base_dir=base_dir, threads=2)
    # side by side, the good one was not complete either: nothing is left but the inputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "base", "good"]


MEMORY_CHILD = textwrap.dedent("""
    import os, resource, sys, threading
    import modelcodecs
    from modelcodecs import pipeline
    base, ft, art, out, headroom = sys.argv[1:6]
    # the address space counts reservations, not memory: 1 MB thread stacks (MALLOC_ARENA_MAX=1 in the
    # environment: no 64 MB arena per thread), and a window of tensors in flight sized for this small checkpoint
    # (64 MB by default, for real ones)
    threading.stack_size(1 << 20)
    pipeline.WINDOW_BYTES = 4 << 20
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + int(headroom), vm + int(headroom)))
    modelcodecs.compress_model(ft, art, codec="fmdelta", base_dir=base, threads=2)
    modelcodecs.decompress_model(art, out, base_dir=base, threads=2)
""")


def test_compress_and_restore_under_a_memory_limit_below_the_checkpoint(tmp_path):
    """The address space may grow by half the checkpoint's size only (RLIMIT_AS, as ``prlimit --as``): tensors
    stream one at a time, so it still compresses and restores exactly."""
    gen = torch.Generator().manual_seed(0)
    base = {f"w{i}": torch.randn(1024, 1024, generator=gen) * 0.02 for i in range(24)}  # 24 x 4 MB
    tuned = {k: v + torch.randn(v.shape, generator=gen) * 1e-4 for k, v in base.items()}
    base_dir = write_safetensors(tmp_path / "base", base, extras=False)
    ft_dir = write_safetensors(tmp_path / "ft", tuned, extras=False)
    checkpoint = (ft_dir / "model.safetensors").stat().st_size
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}

    def child(script: str, name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, str(base_dir), str(ft_dir), str(tmp_path / f"{name}.dvz"),
                               str(tmp_path / name), str(checkpoint // 2)], capture_output=True, text=True, env=env)

    proc = child(MEMORY_CHILD, "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_tree(ft_dir, tmp_path / "out")
    # and the limit is real: the checkpoint held in memory at once does not fit
    proc = child(MEMORY_CHILD.replace("modelcodecs.compress_model(", f"hold = bytearray({checkpoint})\n"
                                      "modelcodecs.compress_model("), "held")
    assert proc.returncode != 0 and "MemoryError" in proc.stderr


def test_format_1_artifacts_still_restore(tmp_path):
    """The committed format-1 fixture (sha256 per tensor) decodes through the new pipeline."""
    fixture = Path(__file__).parent / "fixture" / "dvz" / "format.01"
    arts = sorted(fixture.glob("*.dvz"))
    assert arts
    for art in arts:
        info = modelcodecs.inspect_artifact(art)
        assert info["format_version"] == 1
        out = tmp_path / art.stem
        modelcodecs.decompress_model(art, out, base_dir=fixture / "base" if any(
            t["base"] for t in info["tensor_list"]) else None)
        assert_same_tree(fixture / "finetuned", out)


def _restored_in_parts(tmp_path: Path, monkeypatch) -> tuple[Path, Path, Path]:
    """A pair whose largest tensor (embed.weight, 128 KB in chunks of 16 KB) is restored in parts: the size up to
    which a tensor is decoded whole is lowered to 2 KB (parts of 1 KB or more: one chunk each)."""
    monkeypatch.setattr(pipeline, "SMALL_TENSOR_BYTES", 2048)
    base_dir, ft_dir = _small_tensor_pair(tmp_path)
    art = tmp_path / "a.dvz"
    modelcodecs.compress_model(ft_dir, art, codec={"id": "fmdelta", "chunk_elements": 4096}, base_dir=base_dir,
                               threads=2)
    return base_dir, ft_dir, art


@pytest.mark.parametrize("threads", [1, 3])
def test_a_tensor_restored_in_parts_reads_its_base_once_and_comes_back_exactly(tmp_path, monkeypatch, threads):
    base_dir, ft_dir, art = _restored_in_parts(tmp_path, monkeypatch)
    reads = _record_reads(monkeypatch)
    modelcodecs.decompress_model(art, tmp_path / "out", base_dir=base_dir, threads=threads)
    assert_same_tree(ft_dir, tmp_path / "out")
    embed = hfio.ModelFolder(base_dir).tensors["embed.weight"]
    parts = sorted((off, size) for name, off, size in reads
                   if Path(name).is_relative_to(base_dir) and embed.offset <= off < embed.offset + embed.spec.nbytes)
    assert len(parts) == 8 and sum(size for _, size in parts) == embed.spec.nbytes
    for (a, n), (b, _) in zip(parts, parts[1:]):
        assert a + n == b


def test_a_tensor_restored_in_parts_is_checked_whole_before_anything_is_visible(tmp_path, monkeypatch):
    from common import reseal_index

    base_dir, _, art = _restored_in_parts(tmp_path, monkeypatch)
    # a forged digest for the tensor: caught at its last part
    with modelcodecs.container.ContainerReader(art) as reader:
        index = reader.index
    record = next(t for t in index["tensors"] if t["name"] == "embed.weight")
    record[pipeline.HASH_KEY] = "0" * len(record[pipeline.HASH_KEY])
    forged = tmp_path / "forged.dvz"
    reseal_index(art, forged, json.dumps(index).encode())
    with pytest.raises(modelcodecs.VerificationError, match="embed.weight"):
        modelcodecs.decompress_model(forged, tmp_path / "out", base_dir=base_dir, threads=2)
    # a base whose tensor differs in its first part only: the wrong base is named, not a corrupted artifact
    other = tmp_path / "other"
    shutil.copytree(base_dir, other)
    embed = hfio.ModelFolder(other).tensors["embed.weight"]
    with open(other / embed.file, "r+b") as fh:
        fh.seek(embed.offset + 100)
        byte = fh.read(1)
        fh.seek(embed.offset + 100)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(modelcodecs.WrongBaseError, match="embed.weight"):
        modelcodecs.decompress_model(art, tmp_path / "out", base_dir=other, threads=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dvz", "base", "forged.dvz", "ft", "other"]


def test_progress_of_several_finetunes_counts_them_together(tmp_path):
    """Side by side, one bar: bytes done never go back, and the end is every fine-tune's bytes."""
    base = base_tensors(0)
    base_dir = write_safetensors(tmp_path / "base", base, extras=False)
    fts = [write_safetensors(tmp_path / f"ft{i}", finetune(base, i + 1), extras=True) for i in range(2)]
    calls: list[tuple[int, int]] = []
    summaries = modelcodecs.compress_models(fts, [tmp_path / "a.dvz", tmp_path / "b.dvz"], codec="fmdelta",
                                            base_dir=base_dir, progress=lambda d, t, _: calls.append((d, t)))
    total = sum(s.original_bytes for s in summaries)
    assert calls[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    calls.clear()
    modelcodecs.decompress_models([tmp_path / "a.dvz", tmp_path / "b.dvz"], [tmp_path / "x", tmp_path / "y"],
                                  base_dir=base_dir, progress=lambda d, t, _: calls.append((d, t)))
    assert calls[-1] == (total, total) and all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
