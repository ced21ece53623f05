"""The modelcodecs CLI: commands, JSON output, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import pytest
from common import assert_same_tree

from modelcodecs.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compress_decompress_verify_inspect(tmp_path, pair, capsys):
    base_dir, ft_dir = pair
    art = tmp_path / "m.dvz"
    code, out, err = run(capsys, "compress", "--codec", "xor-zstd", "--base", base_dir, ft_dir, "-o", art,
                         "--threads", "2", "--option", "level=3", "--option", "chunk_bytes=8192", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["codec"] == "xor-zstd" and summary["codec_config"]["level"] == 3
    assert summary["codec_config"]["chunk_bytes"] == 8192 and summary["ratio"] > 1

    code, out, err = run(capsys, "inspect", art, "--json")
    assert code == 0
    info = json.loads(out)
    for key in ("codec", "original_bytes", "compressed_bytes", "ratio", "tensors"):
        assert key in info
    assert info["compressed_bytes"] == art.stat().st_size

    code, out, _ = run(capsys, "inspect", art)
    assert code == 0 and "xor-zstd" in out and "layers.0.mlp.up.weight" in out

    code, out, err = run(capsys, "decompress", art, "--base", base_dir, "-o", tmp_path / "out", "-q")
    assert code == 0, err
    assert "verified" in out
    assert_same_tree(ft_dir, tmp_path / "out")

    code, out, _ = run(capsys, "verify", art, "--base", base_dir, ft_dir)
    assert code == 0 and out.startswith("OK")
    code, out, _ = run(capsys, "verify", art, ft_dir, "--base", base_dir, "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    (ft_dir / "README.md").write_text("edited")
    code, out, _ = run(capsys, "verify", art, "--base", base_dir, ft_dir)
    assert code == 1 and out.startswith("FAILED") and "README.md" in out


def test_compress_without_base_codes_the_checkpoint_alone(tmp_path, pair, capsys):
    """`compress` without --base (default codec, or fmdelta named) codes every float tensor by its bit fields."""
    _, ft_dir = pair
    for extra in ([], ["--codec", "fmdelta"]):
        art = tmp_path / f"alone{len(extra)}.dvz"
        code, out, err = run(capsys, "compress", ft_dir, "-o", art, "--json", *extra)
        assert code == 0, err
        summary = json.loads(out)
        assert summary["codec"] == "fmdelta-nobase" and summary["ratio"] > 1
        code, out, err = run(capsys, "decompress", art, "-o", tmp_path / f"out{len(extra)}", "-q")
        assert code == 0, err
        assert_same_tree(ft_dir, tmp_path / f"out{len(extra)}")
    info = json.loads(run(capsys, "inspect", art, "--json")[1])
    assert {c for t in info["tensor_list"] for c in t["coders"]} & {"fields"}


def test_codecs_listing(capsys):
    code, out, _ = run(capsys, "codecs", "--json")
    assert code == 0
    schemas = {s["title"]: s for s in json.loads(out)["codecs"]}
    assert {"zstd", "xor-zstd", "fmdelta"} <= set(schemas)
    assert schemas["zstd"]["properties"]["level"]["maximum"] == 19
    code, out, _ = run(capsys, "codecs")
    assert code == 0 and "xor-zstd" in out and "needs base" in out


@pytest.mark.parametrize("argv, code, message", [
    (["compress", "{ft}", "-o", "{tmp}/a.dvz", "--codec", "nope"], 2, "unknown codec id 'nope'"),
    (["compress", "{ft}", "-o", "{tmp}/a.dvz", "--codec", "zstd", "--option", "level=99"], 2, "level"),
    (["compress", "{ft}", "-o", "{tmp}/a.dvz", "--codec", "zstd", "--option", "level=x"], 2, "expected int"),
    (["compress", "{ft}", "-o", "{tmp}/a.dvz", "--codec", "zstd", "--option", "colour=red"], 2, "key one of"),
    (["compress", "{ft}", "-o", "{tmp}/a.dvz", "--codec", "xor-zstd"], 2, "needs the base"),
    (["compress", "{tmp}/nothing", "-o", "{tmp}/a.dvz", "--codec", "zstd"], 1, "not a folder"),
    (["compress", "{ft}", "-o", "{tmp}/no/such/a.dvz", "--codec", "zstd"], 2, "does not exist"),
    (["compress", "{ft}", "-o", "{tmp}", "--codec", "zstd"], 2, "is a folder"),
    (["decompress", "{tmp}/missing.dvz", "-o", "{tmp}/out"], 1, "cannot open"),
    (["inspect", "{ft}/config.json"], 1, "artifact"),
])
def test_errors_are_one_line(tmp_path, pair, capsys, argv, code, message):
    _, ft_dir = pair
    argv = [a.format(ft=ft_dir, tmp=tmp_path) for a in argv]
    got, out, err = run(capsys, *argv)
    assert got == code
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not list(tmp_path.glob("a.dvz*"))


def test_decompress_errors(tmp_path, artifact, capsys):
    path, base_dir, _ = artifact
    code, _, err = run(capsys, "decompress", path, "-o", tmp_path / "out")
    assert code == 1 and err.startswith("error: ") and "base" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    code, _, err = run(capsys, "decompress", path, "--base", base_dir, "-o", tmp_path / "busy")
    assert code == 2 and "not empty" in err
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(data)
    code, _, err = run(capsys, "decompress", path, "--base", base_dir, "-o", tmp_path / "out")
    assert code == 1 and "crc32" in err and not (tmp_path / "out").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["compress", "x"])  # -o missing
    assert exc.value.code == 2


def test_bench_is_delegated(monkeypatch):
    import modelcodecs.bench

    seen = []
    monkeypatch.setattr(modelcodecs.bench, "main", lambda argv: seen.append(argv) or 0)
    assert main(["bench", "--foo", "bar"]) == 0
    assert seen == [["--foo", "bar"]]


def test_python_dash_m_and_console_script(tmp_path, pair):
    """A real process: `python -m modelcodecs` compresses, and an error is one line with exit code 2."""
    _, ft_dir = pair
    env = dict(os.environ)
    ok = subprocess.run([sys.executable, "-m", "modelcodecs", "compress", "--codec", "zstd", str(ft_dir), "-o",
                         str(tmp_path / "a.dvz"), "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["codec"] == "zstd"
    bad = subprocess.run([sys.executable, "-m", "modelcodecs", "inspect", str(ft_dir / "README.md")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


def test_ctrl_c_leaves_nothing_partial(tmp_path, pair, capsys, monkeypatch):
    from modelcodecs.baselines import ZstdCodec

    base_dir, ft_dir = pair
    calls = []

    def interrupted(self, data, base, item):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return b"x", {}

    monkeypatch.setattr(ZstdCodec, "_encode_chunk", interrupted)
    code, _, err = run(capsys, "compress", "--codec", "zstd", ft_dir, "-o", tmp_path / "a.dvz", "--threads", "1")
    assert code == 130 and err.startswith("error: interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "ft"]


def test_lmgc_with_an_lm_prior_folder_compresses_decompresses_and_refuses_another_prior(tmp_path, capsys):
    """`compress --codec lmgc --prior DIR` on a gradient set; `decompress --prior` with that folder restores every
    file; with another causal LM folder it stops with a one-line error naming the recorded prior."""
    pytest.importorskip("transformers")
    from build_lmgc_prior_fixture import build
    from lmgc_priors import tiny_lm_prior, write_gradient_folder

    prior = build()  # the committed 48 KB prior of the backwards-compatibility fixture
    other = tiny_lm_prior(tmp_path / "other-llama", seed=1, hidden=16, layers=1, vocab_merges=16)
    grads = write_gradient_folder(tmp_path / "grads", steps=2, channels=1)
    art = tmp_path / "g.dvz"
    code, out, err = run(capsys, "compress", "--codec", "lmgc", "--prior", prior, grads, "-o", art,
                         "--option", "window_tokens=64", "--threads", "2", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["codec"] == "lmgc" and summary["codec_config"]["prior"] == str(prior)
    coded = {t["name"]: t["coders"] for t in json.loads(run(capsys, "inspect", art, "--json")[1])["tensor_list"]}
    assert coded["conv.weight"] == ["lmgc"] and coded["step_count"] == ["fallback"]

    code, out, err = run(capsys, "decompress", art, "--prior", prior, "-o", tmp_path / "out", "-q")
    assert code == 0 and "verified" in out, err
    assert_same_tree(grads, tmp_path / "out")

    code, out, err = run(capsys, "decompress", art, "--prior", other, "-o", tmp_path / "wrong", "-q")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
    assert "coded with prior 'hf:tiny-llama:" in err and "hf:other-llama:" in err
    assert not (tmp_path / "wrong").exists()
    code, out, err = run(capsys, "compress", "--codec", "zstd", "--prior", prior, grads, "-o", tmp_path / "z.dvz")
    assert code == 2 and "takes no prior" in err
