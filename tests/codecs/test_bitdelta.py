"""BitDelta: structure discovery per model family, exact round trips, distillation, restore, verify, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import modelcodecs
from modelcodecs.abc import EncodedChunk, TensorSpec
from modelcodecs.bitdelta.codec import BitDeltaCodec, to_float, write_float
from modelcodecs.hfio import ModelFolder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models: one thread is as fast, and two threads on a shared 2-core machine are 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAMILIES = {
    "llama": ("LlamaConfig", dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=1, tie_word_embeddings=False),
              {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    "qwen2": ("Qwen2Config", dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=1, tie_word_embeddings=True),
              {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    "gpt2": ("GPT2Config", dict(n_embd=16, n_layer=2, n_head=2, n_positions=64),
             {"c_attn", "c_proj", "c_fc"}),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                       num_attention_heads=2, max_position_embeddings=64),
                 {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}),
}


def _family_pair(root, family: str, *, dtype=torch.float32, vocab=40, tuned_vocab=None, seed=0):
    """A random base of ``family`` and a fine-tune = base + noise on every float tensor (optionally with a resized
    vocabulary), saved with save_pretrained."""
    config_name, options, _ = FAMILIES[family]
    config = getattr(transformers, config_name)(vocab_size=vocab, **options)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    base_dir, ft_dir = root / "base", root / "finetuned"
    model.to(dtype).save_pretrained(base_dir)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    if tuned_vocab:
        model.resize_token_embeddings(tuned_vocab)
    model.to(dtype).save_pretrained(ft_dir)
    return base_dir, ft_dir


def _tensors(folder) -> dict[str, tuple[TensorSpec, bytes]]:
    with ModelFolder(folder) as f:
        return {name: (ref.spec, bytes(f.read_tensor(ref))) for name, ref in f.tensors.items()}


def _expected_binarised(tuned: bytes, base: bytes, spec: TensorSpec, axis: int, granularity: str) -> bytes:
    """W_base + α·S computed independently of the codec's own helpers (except dtype I/O)."""
    t = to_float(tuned, spec.dtype).reshape(spec.shape)
    b = to_float(base, spec.dtype).reshape(spec.shape)
    delta = t - b
    if granularity == "matrix":
        alpha = np.float32(np.abs(delta).mean())
    else:
        alpha = np.abs(delta).mean(axis=1 - axis).astype(np.float32)
        alpha = alpha.reshape((-1, 1) if axis == 0 else (1, -1))
    out = bytearray(spec.nbytes)
    write_float(b + np.where(delta > 0, alpha, -alpha), spec.dtype, memoryview(out))
    return bytes(out)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_round_trips_linear_weights_binarised_and_the_rest_byte_for_byte(family, tmp_path):
    base_dir, ft_dir = _family_pair(tmp_path, family)
    artifact = tmp_path / "model.dvz"
    summary = modelcodecs.compress_model(ft_dir, artifact, codec={"id": "bitdelta", "steps": 0},
                                         base_dir=base_dir, threads=1)
    assert summary.prepared["binarised_tensors"] == {"llama": 14, "qwen2": 14, "gpt2": 8, "gpt_neox": 8}[family]
    out = tmp_path / "restored"
    modelcodecs.decompress_model(artifact, out, base_dir=base_dir, threads=1)
    tuned, base, restored = _tensors(ft_dir), _tensors(base_dir), _tensors(out)
    info = modelcodecs.inspect_artifact(artifact)
    signs = {t["name"] for t in info["tensor_list"] if "signs" in t["coders"]}
    # exactly the linear weights inside the blocks are binarised, whatever the family calls them
    assert signs and {name.split(".")[-2] for name in signs} == FAMILIES[family][2]
    assert all(".weight" in n and ("layers." in n or ".h." in n) for n in signs)
    assert not any("embed" in n or "wte" in n or "lm_head" in n or "norm" in n or "ln_" in n for n in signs)
    conv1d = family == "gpt2"
    for name, (spec, data) in tuned.items():
        if name in signs:
            axis = 1 if conv1d else 0
            assert restored[name][1] == _expected_binarised(data, base[name][1], spec, axis, "matrix"), name
        else:
            assert restored[name][1] == data, name
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 40)
    # bits per binarised weight, the scale included
    bits = sum(t["compressed_bytes"] * 8 for t in info["tensor_list"] if t["name"] in signs)
    weights = sum(tuned[n][0].numel for n in signs)
    assert bits / weights < 1.0 + 32 * len(signs) / weights + 1e-9


def test_gpt2_conv1d_row_scales_follow_the_output_axis_and_bf16_rounds_once(tmp_path):
    base_dir, ft_dir = _family_pair(tmp_path, "gpt2", dtype=torch.bfloat16)
    artifact = tmp_path / "model.dvz"
    modelcodecs.compress_model(ft_dir, artifact, codec={"id": "bitdelta", "steps": 0, "scale_granularity": "row"},
                               base_dir=base_dir, threads=1)
    out = tmp_path / "restored"
    modelcodecs.decompress_model(artifact, out, base_dir=base_dir, threads=1)
    tuned, base, restored = _tensors(ft_dir), _tensors(base_dir), _tensors(out)
    name = "transformer.h.0.attn.c_attn.weight"
    spec = tuned[name][0]
    assert spec.dtype == "BF16" and spec.shape == (16, 48)  # Conv1D: (in, out)
    assert restored[name][1] == _expected_binarised(tuned[name][1], base[name][1], spec, 1, "row")
    info = modelcodecs.inspect_artifact(artifact)
    entry = next(t for t in info["tensor_list"] if t["name"] == name)
    assert entry["compressed_bytes"] == 48 * 4 + 16 * 48 // 8


def test_resized_vocabulary_is_coded_losslessly_and_include_exclude_select_weights(tmp_path):
    base_dir, ft_dir = _family_pair(tmp_path, "llama", tuned_vocab=48)
    artifact = tmp_path / "model.dvz"
    modelcodecs.compress_model(ft_dir, artifact, base_dir=base_dir, threads=1,
                               codec={"id": "bitdelta", "steps": 0, "include": "*.mlp.*", "exclude": "*.down_proj*"})
    info = modelcodecs.inspect_artifact(artifact)
    signs = {t["name"] for t in info["tensor_list"] if "signs" in t["coders"]}
    assert {n.split(".")[-2] for n in signs} == {"gate_proj", "up_proj"}
    out = tmp_path / "restored"
    modelcodecs.decompress_model(artifact, out, base_dir=base_dir, threads=1)
    tuned, restored = _tensors(ft_dir), _tensors(out)
    assert restored["model.embed_tokens.weight"] == tuned["model.embed_tokens.weight"]
    assert tuned["model.embed_tokens.weight"][0].shape == (48, 16)
    report = modelcodecs.verify_artifact(artifact, base_dir=base_dir, reference_dir=ft_dir, threads=1)
    assert report.ok, report.message
    assert {e["name"] for e in report.tensors} == signs
    assert all(0 < e["relative_delta_error"] < 1 and e["max_abs_error"] > 0 for e in report.tensors)
    assert "losslessly coded tensors verified" in report.message


def test_bad_inputs_are_named(tmp_path):
    llama_base, llama_ft = _family_pair(tmp_path / "llama", "llama")
    gpt2_base, _ = _family_pair(tmp_path / "gpt2", "gpt2")
    with pytest.raises(modelcodecs.WrongBaseError, match="does not match"):  # the pipeline's check
        modelcodecs.compress_model(llama_ft, tmp_path / "a.dvz", codec={"id": "bitdelta", "steps": 0},
                                   base_dir=gpt2_base)
    with pytest.raises(modelcodecs.WrongBaseError, match="different architectures"):  # bitdelta's own
        modelcodecs.compress_model(llama_ft, tmp_path / "a.dvz", codec={"id": "bitdelta", "steps": 0},
                                   base_dir=gpt2_base, allow_unmatched_base=True)
    # same family, other widths: the mismatched linear weights are named
    wide = tmp_path / "wide"
    config = transformers.LlamaConfig(vocab_size=40, **{**FAMILIES["llama"][1], "intermediate_size": 32})
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(wide)
    with pytest.raises(modelcodecs.WrongBaseError, match="gate_proj"):
        modelcodecs.compress_model(llama_ft, tmp_path / "b.dvz", codec={"id": "bitdelta", "steps": 0},
                                   base_dir=wide)
    # not a causal LM
    not_lm = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=16, vocab_size=40)).save_pretrained(not_lm)
    with pytest.raises(modelcodecs.ModelCodecError, match="causal|architectures"):
        modelcodecs.compress_model(not_lm, tmp_path / "c.dvz", codec={"id": "bitdelta", "steps": 0},
                                   base_dir=not_lm)
    assert not list(tmp_path.glob("*.dvz")) and not list(tmp_path.glob(".*partial*"))
    # distillation without calibration text
    with pytest.raises(modelcodecs.ConfigError, match="calibration"):
        modelcodecs.compress_model(llama_ft, tmp_path / "d.dvz", codec={"id": "bitdelta", "steps": 2},
                                   base_dir=llama_base)
    # decoding without the base, or with another base
    artifact = tmp_path / "ok.dvz"
    modelcodecs.compress_model(llama_ft, artifact, codec={"id": "bitdelta", "steps": 0}, base_dir=llama_base)
    with pytest.raises(modelcodecs.WrongBaseError, match="base"):
        modelcodecs.decompress_model(artifact, tmp_path / "r1")
    other_base, _ = _family_pair(tmp_path / "other", "llama", seed=5)
    with pytest.raises(modelcodecs.WrongBaseError, match="differs"):
        modelcodecs.decompress_model(artifact, tmp_path / "r2", base_dir=other_base)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_corrupt_signs_chunks_are_refused():
    codec = BitDeltaCodec()
    spec = TensorSpec("w", "F32", (4, 8))
    base = memoryview(bytearray(spec.nbytes))
    good = EncodedChunk("signs", b"\0" * 4 + b"\xff" * 4, {"n": 32, "scales": 1, "axis": 0})
    out = bytearray(spec.nbytes)
    codec.decode_tensor(spec, [good], base, memoryview(out))
    assert np.all(np.frombuffer(out, np.float32) == 0)
    bad = [EncodedChunk("signs", b"\0" * 7, good.meta), EncodedChunk("signs", good.payload, {**good.meta, "axis": 2}),
           EncodedChunk("signs", good.payload, {**good.meta, "scales": 3}),
           EncodedChunk("signs", good.payload, {**good.meta, "n": 31})]
    for chunk in bad:
        with pytest.raises(modelcodecs.CorruptArtifactError):
            codec.decode_tensor(spec, [chunk], base, memoryview(out))
    with pytest.raises(modelcodecs.WrongBaseError):
        codec.decode_tensor(spec, [good], None, memoryview(out))
    with pytest.raises(modelcodecs.ConfigError):
        modelcodecs.get_codec({"id": "bitdelta", "loss": "l1"})
    assert json.loads(json.dumps(codec.get_config())) == modelcodecs.get_codec(codec.get_config()).get_config()


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    from modelcodecs import synthetic

    return synthetic.write_text_dataset(tmp_path_factory.mktemp("calib") / "train.txt", n_lines=400, seed=7,
                                        domain="chat")


DISTILL = {"id": "bitdelta", "steps": 30, "batch_size": 4, "seq_len": 32, "lr": 3e-4, "device": "cpu"}


def test_distillation_lowers_the_loss_and_beats_initial_perplexity_and_the_folder_loads(tiny, calibration, tmp_path):
    from modelcodecs.evaluate import evaluate_perplexity

    steps = []
    distilled, initial = tmp_path / "distilled.dvz", tmp_path / "initial.dvz"
    summary = modelcodecs.compress_model(tiny.finetuned, distilled, codec=DISTILL, base_dir=tiny.base, threads=1,
                                         calibration_text=calibration, on_step=steps.append)
    modelcodecs.compress_model(tiny.finetuned, initial, codec={**DISTILL, "steps": 0}, base_dir=tiny.base,
                               threads=1)
    assert [s["step"] for s in steps] == list(range(1, 31))
    losses = [s["loss"] for s in steps]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert summary.prepared["initial_loss"] == losses[0] and summary.prepared["final_loss"] == losses[-1]
    ppl = {}
    for name, artifact in (("distilled", distilled), ("initial", initial)):
        out = tmp_path / name
        modelcodecs.decompress_model(artifact, out, base_dir=tiny.base, threads=1)
        ppl[name] = evaluate_perplexity(out, tiny.dataset, device="cpu")["perplexity"]
    ppl["finetuned"] = evaluate_perplexity(tiny.finetuned, tiny.dataset, device="cpu")["perplexity"]
    assert abs(ppl["distilled"] - ppl["finetuned"]) < abs(ppl["initial"] - ppl["finetuned"])
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "distilled")
    generated = model.generate(torch.tensor([[1, 5, 9]]), max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 7)


def test_distillation_cancels_within_a_step_and_fails_on_nan_with_the_step(tiny, calibration, tmp_path,
                                                                          monkeypatch):
    from modelcodecs.bitdelta import distill

    steps = []
    with pytest.raises(modelcodecs.CancelledError):
        modelcodecs.compress_model(tiny.finetuned, tmp_path / "a.dvz", codec=DISTILL, base_dir=tiny.base,
                                   calibration_text=calibration, on_step=steps.append,
                                   cancel=lambda: len(steps) >= 3)
    assert len(steps) == 3 and not list(tmp_path.iterdir())
    real = distill.distillation_loss
    calls = []

    def poisoned(student, teacher, kind):
        calls.append(1)
        loss = real(student, teacher, kind)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(distill, "distillation_loss", poisoned)
    with pytest.raises(distill.DistillationError, match="step 2 of 30"):
        modelcodecs.compress_model(tiny.finetuned, tmp_path / "b.dvz", codec=DISTILL, base_dir=tiny.base,
                                   calibration_text=calibration)
    assert not list(tmp_path.iterdir())
    with pytest.raises(modelcodecs.ConfigError, match="needs steps x batch_size x seq_len"):
        modelcodecs.compress_model(tiny.finetuned, tmp_path / "c.dvz", base_dir=tiny.base,
                                   codec={**DISTILL, "steps": 10_000}, calibration_text=calibration)


def test_cli_distils_with_calibration_text_and_verify_prints_per_tensor_errors(tiny, calibration, tmp_path,
                                                                               capsys):
    from modelcodecs.cli import main

    out = tmp_path / "m.dvz"
    assert main(["compress", str(tiny.finetuned), "-o", str(out), "--codec", "bitdelta", "--base", str(tiny.base),
                 "--option", "steps=2", "--option", "seq_len=16", "--option", "device=cpu",
                 "--calibration-text", str(calibration), "-q", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prepared"]["steps"] == 2 and summary["prepared"]["final_loss"] > 0
    assert main(["verify", str(out), str(tiny.finetuned), "--base", str(tiny.base), "-q"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("OK: lossy artifact") and "relative delta error" in printed


def test_train_rest_stores_the_trained_tensors_bit_exact_and_the_rest_of_scales_only_stays_the_fine_tunes(
        tiny, calibration, tmp_path):
    config = {**DISTILL, "steps": 4, "train_rest": True}
    artifact = tmp_path / "rest.dvz"
    summary = modelcodecs.compress_model(tiny.finetuned, artifact, codec=config, base_dir=tiny.base, threads=1,
                                         calibration_text=calibration)
    modelcodecs.decompress_model(artifact, tmp_path / "rest", base_dir=tiny.base, threads=1)
    # the same seeded distillation again, to read the values the student trained
    codec = modelcodecs.get_codec(config)
    codec.prepare(finetuned_dir=str(tiny.finetuned), base_dir=str(tiny.base), calibration_text=str(calibration))
    tuned, restored = _tensors(tiny.finetuned), _tensors(tmp_path / "rest")
    binarised = {name for name in tuned if name.endswith("proj.weight")}
    trained = set(codec._trained)
    assert summary.prepared["trained_rest_tensors"] == len(trained) > 0
    assert trained == {name for name, (spec, _) in tuned.items() if name not in binarised and spec.dtype == "F32"}
    for name in trained:
        spec = tuned[name][0]
        expected = bytearray(spec.nbytes)
        write_float(codec._trained[name], spec.dtype, memoryview(expected))
        assert restored[name][1] == bytes(expected), name
    assert any(restored[name][1] != tuned[name][1] for name in trained)
    inspected = modelcodecs.inspect_artifact(artifact)["tensor_list"]
    assert all("trained" in t["coders"] for t in inspected if t["name"] in trained)
    verified = modelcodecs.verify_artifact(artifact, base_dir=tiny.base, reference_dir=tiny.finetuned, threads=1)
    assert verified.ok and {t["name"] for t in verified.tensors} >= trained

    scales_only = tmp_path / "scales.dvz"
    modelcodecs.compress_model(tiny.finetuned, scales_only, codec={**config, "train_rest": False},
                               base_dir=tiny.base, threads=1, calibration_text=calibration)
    modelcodecs.decompress_model(scales_only, tmp_path / "scales", base_dir=tiny.base, threads=1)
    kept = _tensors(tmp_path / "scales")
    assert all(kept[name][1] == tuned[name][1] for name in tuned if name not in binarised)


def test_finetune_record_is_reused_for_the_same_settings_and_other_settings_are_refused(tiny, tmp_path):
    from modelcodecs.finetune import finetune_causal_lm

    settings = dict(steps=2, batch_size=2, seq_len=16, lr=1e-4)
    made = finetune_causal_lm(tiny.base, tiny.dataset, tmp_path / "ft", **settings)
    assert not made["reused"] and made["settings"]["steps"] == 2
    assert (tmp_path / "ft.json").is_file() and not (tmp_path / "ft" / "ft.json").exists()
    again = finetune_causal_lm(tiny.base, tiny.dataset, tmp_path / "ft", **settings)
    assert again == {**made, "reused": True}
    (tmp_path / "moved").mkdir()
    (tmp_path / "ft").rename(tmp_path / "moved" / "ft")
    (tmp_path / "ft.json").rename(tmp_path / "moved" / "ft.json")
    moved = finetune_causal_lm(tiny.base, tiny.dataset, tmp_path / "moved" / "ft", **settings)
    assert moved == {**made, "reused": True, "out_dir": str(tmp_path / "moved" / "ft")}
    with pytest.raises(modelcodecs.ConfigError, match="other settings"):
        finetune_causal_lm(tiny.base, tiny.dataset, tmp_path / "moved" / "ft", **{**settings, "lr": 3e-5})


def test_bench_reports_every_variant_from_its_artifact(tiny, calibration, tmp_path, capsys):
    from modelcodecs.bench import main

    out = tmp_path / "bench.json"
    assert main(["--bitdelta", str(tiny.base), str(tiny.finetuned), str(calibration), str(tiny.dataset),
                 "--workdir", str(tmp_path / "work"), "--bd-steps", "2", "--bd-batch", "1", "--bd-seq-len", "16",
                 "--bd-eval-tokens", "128", "--bd-speed-steps", "1", "--bd-row", "--bd-train-rest",
                 "--bd-parallel", "2", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    variants = ["initial", "distilled", "initial-row", "distilled-row", "distilled-train-rest"]
    assert list(report["runs"]) == variants
    for label in variants:
        sizes = report["runs"][label]["sizes"]
        artifact = tmp_path / "work" / "artifacts" / f"{label}.dvz"
        assert sizes["artifact_bytes"] == artifact.stat().st_size
        assert report["quality"][label]["tokens"] == report["quality"]["finetuned"]["tokens"]
    assert report["gap_ratios"]["initial"] == 1.0
    assert report["train_rest_extra_bytes"] == (report["runs"]["distilled-train-rest"]["sizes"]["artifact_bytes"]
                                                - report["runs"]["distilled"]["sizes"]["artifact_bytes"])
    assert report["runs"]["distilled-train-rest"]["summary"]["prepared"]["trained_rest_tensors"] > 0
    assert report["step_times"]["one_bit_step_cpu_s"] > 0 and report["step_times"]["dense_step_cpu_s"] > 0
    assert all(isinstance(t["ok"], bool) for t in report["targets"])
    assert "| distilled-train-rest |" in capsys.readouterr().out
