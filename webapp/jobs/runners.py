"""One runner per job kind, found through :data:`JOB_KINDS`.

A kind declares the inputs a user gives it, a ``check`` run at submit time (validates them and fills in what
follows from them, such as an artifact's pair and codec config) and a ``run`` that does the work in the worker and
returns the job's metrics. Adding a kind means one entry here (and its ``Job.Kind`` choice); the life cycle around
it (``webapp.jobs.services``) does not change.

A runner keeps everything it writes while in flight under :func:`job_work_dir` or :func:`job_restored_dir`, which
the life cycle removes after a failure, a cancel or a dead worker.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import modelcodecs
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webapp.core.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.reporter import JobReporter
from webapp.registry.models import Artifact, Dataset, GradientSet, ModelEntry, Pair
from webapp.registry.selectors import (artifact_base_dir, artifact_codec_class, artifact_expected_files,
                                       artifact_find_identical, model_changes)
from webapp.registry.storage import artifact_local_file, artifact_store, file_sha256, model_local_folder


@dataclass(frozen=True)
class JobInputs:
    """What a job works on. ``check`` functions return a copy with derived inputs filled in."""

    pair: Pair | None = None
    artifact: Artifact | None = None
    model: ModelEntry | None = None
    dataset: Dataset | None = None
    codec_config: dict | None = None
    gradient_set: GradientSet | None = None

    def given(self) -> set[str]:
        return {name for name in ("pair", "artifact", "model", "dataset", "codec_config", "gradient_set")
                if getattr(self, name)}


@dataclass(frozen=True)
class JobKind:
    inputs: frozenset[str]  # what a user gives this kind; anything else is refused at submit
    check: Callable[[JobInputs], JobInputs]
    run: Callable[..., dict]  # run(job=, reporter=) -> metrics


def job_work_dir(job: Job) -> Path:
    """The job's private scratch folder (partial artifacts, restored copies for evaluation)."""
    return Path(settings.DELTAVAULT_TMP_DIR) / f"job-{job.pk}"


def job_restored_dir(job: Job) -> Path:
    """Where a decompress job leaves the restored model for the user."""
    return Path(settings.DELTAVAULT_RESTORED_DIR) / str(job.pk)


def job_threads(job: Job) -> int | None:
    return (job.options or {}).get("threads") or settings.DELTAVAULT_JOB_THREADS


def _jsonable(summary: dict) -> dict:
    return {key: value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)
            for key, value in summary.items()}


def require_unchanged(*models: ModelEntry | None) -> None:
    """Fail the job before it reads a model whose files changed on disk since registration (sizes and
    modification times: cheap), rather than code or restore against bytes nobody registered."""
    for model in models:
        if model is None:
            continue
        changes = model_changes(model=model)
        if changes:
            raise ApplicationError(
                f"Model {model.name} changed on disk since it was registered ({'; '.join(changes[:5])}). If the "
                f"change is intended, rescan it on its page (/models/{model.pk}/), then run the job again.",
                extra={"model": model.pk, "changes": changes})


def job_model_folder(model: ModelEntry, reporter: JobReporter) -> Path:
    """``model``'s folder for the reporter's job: restored from the tensor store first when it is stored
    compressed (logged; the job's cancel stops the restore)."""
    return model_local_folder(model, threads=job_threads(reporter.job), cancel=reporter.cancelled, log=reporter.log)


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---- compress ------------------------------------------------------------------------------------------------
def _check_compress(inputs: JobInputs) -> JobInputs:
    if inputs.gradient_set is not None:
        return _check_compress_gradients(inputs)
    if inputs.model is not None:
        raise ApplicationError("A compress job of a pair takes no model (a model is a prior for gradient sets).")
    if inputs.pair is None:
        raise ApplicationError("A compress job needs a pair (base + fine-tuned model).")
    if not inputs.codec_config:
        raise ApplicationError("A compress job needs a codec config, e.g. {\"id\": \"zstd\"}.")
    try:
        codec = modelcodecs.get_codec(inputs.codec_config)
    except modelcodecs.ModelCodecError as exc:
        raise ApplicationError(f"Invalid codec config: {exc}", extra={"codec_config": inputs.codec_config}) from exc
    if codec.input_kind != "weights":
        raise ApplicationError(f"The codec {codec.codec_id!r} compresses {codec.input_kind}, not model checkpoints.")
    _check_calibration(codec, inputs)
    return replace(inputs, codec_config=codec.get_config())


def _check_calibration(codec: modelcodecs.Codec, inputs: JobInputs) -> None:
    """Codecs that train while compressing (BitDelta's distillation) need a dataset with enough tokens of the
    fine-tune's tokenizer; this is counted now rather than found out after an hour."""
    needed = codec.calibration_tokens()
    if not needed:
        if inputs.dataset is not None:
            raise ApplicationError(f"The codec {codec.codec_id!r} with this config uses no dataset.")
        return
    if inputs.dataset is None:
        raise ApplicationError(f"The codec {codec.codec_id!r} trains on calibration text: choose a dataset "
                               f"({needed:,} tokens).")
    from modelcodecs.evaluate import count_tokens  # imports transformers lazily, only here

    try:
        found = count_tokens(str(model_local_folder(inputs.pair.finetuned)), inputs.dataset.path, needed)
    except modelcodecs.ModelCodecError as exc:
        raise ApplicationError(f"Cannot read the dataset with the fine-tune's tokenizer: {exc}") from exc
    if found < needed:
        raise ApplicationError(
            f"The dataset {inputs.dataset.name!r} has {found:,} tokens; {codec.codec_id} needs steps x batch_size x "
            f"seq_len = {needed:,}. Choose a longer dataset or fewer steps.",
            extra={"tokens": found, "needed": needed})


def _check_compress_gradients(inputs: JobInputs) -> JobInputs:
    """A gradient set with a codec for gradients (``lmgc``, default) or one that needs no base (a baseline for
    the set's rate table); the prior is the built-in model or a registered model (``model``), checked here."""
    if inputs.pair is not None:
        raise ApplicationError("A compress job takes a pair or a gradient set, not both.")
    config = dict(inputs.codec_config or {"id": "lmgc"}) if isinstance(inputs.codec_config or {}, dict) \
        else {"id": inputs.codec_config}
    if inputs.dataset is not None:
        raise ApplicationError("A compress job of a gradient set takes no dataset.")
    if inputs.model is not None:
        try:
            codec_cls = modelcodecs.get_codec_class(str(config.get("id", "")))
        except modelcodecs.ModelCodecError:
            codec_cls = None
        if codec_cls is not None and not codec_cls.needs_prior:
            raise ApplicationError(f"The codec {codec_cls.codec_id!r} takes no prior.")
        config["prior"] = str(model_local_folder(inputs.model))
    try:
        codec = modelcodecs.get_codec(config)
    except modelcodecs.ModelCodecError as exc:
        raise ApplicationError(f"Invalid codec config: {exc}", extra={"codec_config": config}) from exc
    if codec.needs_base:
        raise ApplicationError(f"The codec {codec.codec_id!r} needs a base model; gradient sets have none.")
    if inputs.model is None and codec.needs_prior and getattr(codec, "prior", "builtin") != "builtin":
        raise ApplicationError("Choose the prior from the registry (model), or use the built-in prior.")
    try:
        codec.check_prior() if hasattr(codec, "check_prior") else None
    except modelcodecs.ModelCodecError as exc:
        raise ApplicationError(f"The prior cannot be used: {exc}") from exc
    return replace(inputs, codec_config=codec.get_config())


class _GradientProgress:
    """The reporter, with windows coded and bits per float so far in the stage (refreshed at most once a
    second, so the log gets a line per second, not per window)."""

    def __init__(self, reporter: JobReporter, codec: modelcodecs.Codec):
        self.reporter, self.stats = reporter, getattr(codec, "stats", None)
        self._suffix, self._at = "", 0.0

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        now = time.monotonic()
        if self.stats is not None and self.stats.windows and (now - self._at >= 1.0 or done >= total):
            self._at = now
            self._suffix = f" · {self.stats.windows} windows · {self.stats.bits_per_float:.2f} bits/float"
        self.reporter(done, total, stage + self._suffix)


def _run_compress(*, job: Job, reporter: JobReporter) -> dict:
    if job.gradient_set_id is not None:
        return _run_compress_gradients(job=job, reporter=reporter)
    pair = job.pair
    if pair is None:
        raise ApplicationError("The job's pair was deleted.")
    codec = modelcodecs.get_codec(job.codec_config)
    require_unchanged(pair.base if codec.needs_base else None, pair.finetuned)
    final_name = f"{job.team.slug}/job-{job.pk}-{codec.codec_id}.dvz"
    # The artifact is written in the job's scratch folder, outside the storage, so a killed worker leaves no
    # visible file and no row.
    tmp_path = _fresh_dir(job_work_dir(job)) / "artifact.dvz"
    base_dir = str(job_model_folder(pair.base, reporter)) if codec.needs_base else None
    reporter.log(f"compressing {pair.finetuned.name} with {codec.codec_id}"
                 + (f" against {pair.base.name}" if base_dir else ""))
    calibration = {}
    if codec.calibration_tokens():
        if job.dataset is None or not Path(job.dataset.path).is_file():
            raise ApplicationError("The job's calibration dataset was deleted.")
        calibration = {"calibration_text": job.dataset.path, "on_step": reporter.training_step}
        reporter.log(f"distilling on {job.dataset.name} ({codec.calibration_tokens():,} tokens)")
    try:
        summary = modelcodecs.compress_model(
            job_model_folder(pair.finetuned, reporter), tmp_path, codec=codec, base_dir=base_dir,
            threads=job_threads(job),
            progress=reporter, cancel=reporter.cancelled, **calibration,
        ).as_dict()
        reporter.stage("storing artifact")
        content_sha256 = _payload_sha256(tmp_path)
        same = artifact_find_identical(pair=pair, codec_config=codec.get_config(), content_sha256=content_sha256)
        if same is not None:
            # Same pair, codec config and bytes: the artifact exists already; keep one copy.
            reporter.log(f"identical to {same.label}: not stored twice")
            summary["identical_artifact_id"] = same.pk
            return {k: summary[k] for k in ("original_bytes", "compressed_bytes", "ratio", "mb_per_s", "seconds",
                                            "peak_rss_bytes", "identical_artifact_id") if k in summary}
        with transaction.atomic():
            artifact = Artifact(
                team=job.team, pair=pair, job=job, codec_id=codec.codec_id, codec_config=codec.get_config(),
                storage_name=final_name, content_sha256=content_sha256,
                original_bytes=int(summary["original_bytes"]),
                compressed_bytes=int(summary["compressed_bytes"]),
                ratio=float(summary["ratio"]),
                metrics={**{k: summary[k] for k in ("mb_per_s", "seconds", "peak_rss_bytes", "tensors", "files",
                                                    "codec_report")}, "lossless": codec.lossless},
                sha256=file_sha256(tmp_path)[1],
            )
            artifact.full_clean()
            artifact.storage_name = artifact_store(local=tmp_path, name=final_name)
            artifact.save()
    finally:
        shutil.rmtree(job_work_dir(job), ignore_errors=True)
    reporter.log(f"artifact #{artifact.pk}: {artifact.original_bytes} -> {artifact.compressed_bytes} bytes "
                 f"(ratio {artifact.ratio:.3f})")
    return {**_jsonable(summary), **reporter.training_metrics(), "artifact_id": artifact.pk}


def _run_compress_gradients(*, job: Job, reporter: JobReporter) -> dict:
    gradients = job.gradient_set
    if gradients is None:
        raise ApplicationError("The job's gradient set was deleted.")
    codec = modelcodecs.get_codec(job.codec_config)
    final_name = f"{job.team.slug}/job-{job.pk}-{codec.codec_id}.dvz"
    tmp_path = _fresh_dir(job_work_dir(job)) / "artifact.dvz"
    prior = getattr(codec, "prior", None)
    reporter.log(f"compressing gradient set {gradients.name} with {codec.codec_id}"
                 + (f" (prior: {prior})" if prior else ""))
    try:
        summary = modelcodecs.compress_model(
            gradients.path, tmp_path, codec=codec, threads=job_threads(job),
            progress=_GradientProgress(reporter, codec), cancel=reporter.cancelled,
        ).as_dict()
        stats = getattr(codec, "stats", None)
        if stats is not None:
            summary.update(windows=stats.windows, bits_per_float=round(stats.bits_per_float, 4),
                           ideal_bits=round(stats.ideal_bits, 1), tokens=stats.tokens)
        summary["floats"] = gradients.float_count
        summary["rate"] = round(summary["compressed_bytes"] / summary["original_bytes"], 4)
        reporter.stage("storing artifact")
        with transaction.atomic():
            artifact = Artifact(
                team=job.team, gradient_set=gradients, job=job, codec_id=codec.codec_id,
                codec_config=codec.get_config(), storage_name=final_name,
                content_sha256=_payload_sha256(tmp_path), sha256=file_sha256(tmp_path)[1],
                original_bytes=int(summary["original_bytes"]), compressed_bytes=int(summary["compressed_bytes"]),
                ratio=float(summary["ratio"]),
                metrics={k: summary[k] for k in ("mb_per_s", "seconds", "peak_rss_bytes", "tensors", "files",
                                                 "rate", "floats", "windows", "bits_per_float") if k in summary},
            )
            artifact.full_clean()
            artifact.storage_name = artifact_store(local=tmp_path, name=final_name)
            artifact.save()
    finally:
        shutil.rmtree(job_work_dir(job), ignore_errors=True)
    reporter.log(f"artifact #{artifact.pk}: rate {summary['rate']:.4f} ({artifact.original_bytes} -> "
                 f"{artifact.compressed_bytes} bytes)")
    return {**_jsonable(summary), "artifact_id": artifact.pk}


# ---- decompress ----------------------------------------------------------------------------------------------
def _artifact_inputs(inputs: JobInputs) -> JobInputs:
    """The pair and codec config of a job that reads an artifact come from the artifact."""
    artifact = inputs.artifact
    return replace(inputs, pair=artifact.pair, gradient_set=artifact.gradient_set,
                   codec_config=dict(artifact.codec_config or {"id": artifact.codec_id}))


def _check_decompress(inputs: JobInputs) -> JobInputs:
    if inputs.artifact is None:
        raise ApplicationError("A decompress job needs an artifact.")
    return _artifact_inputs(inputs)


def restore_artifact(*, job: Job, artifact: Artifact, out_dir: Path, reporter: JobReporter) -> dict:
    """Decompress ``artifact`` into ``out_dir`` (which must not exist yet) and check it against the registry;
    returns the decompress summary with a ``verification`` entry. Every job that restores an artifact goes through
    here.

    The hashes inside an artifact only prove it is intact: whoever edits it can re-seal them. So the artifact file
    is checked against the sha256 recorded when it was stored (``artifact_local_file``), and the restored files
    against the fine-tuned model's recorded hashes; a mismatch marks the artifact failed and removes ``out_dir``.
    """
    base_dir = artifact_base_dir(artifact)
    if base_dir is not None:
        require_unchanged(artifact.pair.base)
    with artifact_local_file(artifact) as path:
        summary = _jsonable(modelcodecs.decompress_model(
            path, out_dir, base_dir=base_dir, threads=job_threads(job), progress=reporter,
            cancel=reporter.cancelled,
        ).as_dict())
    reporter.stage("verifying")
    verification = _verify_restored(job=job, artifact=artifact, out_dir=out_dir, reporter=reporter,
                                    restored_sha256=summary.pop("file_sha256", {}))
    if verification["status"] in (Artifact.Verification.VERIFIED, Artifact.Verification.FAILED):
        artifact.verification = verification["status"]
        artifact.verified_at = timezone.now()
        artifact.save(update_fields=["verification", "verified_at"])
    if verification["status"] == Artifact.Verification.FAILED:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise ApplicationError(
            f"Restored files differ from the fine-tuned model: {', '.join(verification['mismatched'][:10])}"
        )
    reporter.log(f"verification: {verification['status']} ({verification['checked']} files)")
    summary["verification"] = verification
    return summary


def _payload_sha256(path: Path) -> str:
    """sha256 of an artifact's coded data (every chunk, in order), which is what two runs of one codec config on
    one pair make alike; the index after it carries a creation time, so the whole file's hash would differ."""
    from modelcodecs.container import FOOTER

    with open(path, "rb") as fh:
        fh.seek(-FOOTER.size, 2)
        data_end = FOOTER.unpack(fh.read(FOOTER.size))[0]
        fh.seek(0)
        digest = hashlib.sha256()
        left = data_end
        while left > 0:
            block = fh.read(min(left, 1 << 20))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def _lossy_errors(*, job: Job, artifact: Artifact, reporter: JobReporter) -> dict:
    """A lossy artifact against its fine-tune: the error of every approximated tensor (relative Frobenius error
    of its delta, max abs error); the tensors it codes losslessly were checked by hash while restoring."""
    if artifact.pair is None:
        return {"status": "skipped", "reason": "lossy codec and no fine-tuned model recorded", "checked": 0,
                "mismatched": []}
    with artifact_local_file(artifact) as path:
        report = modelcodecs.verify_artifact(path, base_dir=job_model_folder(artifact.pair.base, reporter),
                                             reference_dir=job_model_folder(artifact.pair.finetuned, reporter),
                                             threads=job_threads(job),
                                             cancel=reporter.cancelled)
    errors = report.tensors
    return {"status": "lossy" if report.ok else str(Artifact.Verification.FAILED), "message": report.message,
            "checked": len(report.files), "mismatched": [f["name"] for f in report.files if not f["ok"]],
            "worst_relative_delta_error": max((e["relative_delta_error"] for e in errors), default=None),
            "worst_max_abs_error": max((e["max_abs_error"] for e in errors), default=None),
            "tensor_errors": errors}


def _verify_restored(*, job: Job, artifact: Artifact, out_dir: Path, restored_sha256: dict,
                     reporter: JobReporter) -> dict:
    """Compare every restored file's sha256 with the fine-tuned model's recorded hashes. The restore hashed every
    file as it wrote it and checked it against the artifact (``restored_sha256``), so nothing is read again; the
    folder is listed for files the fine-tune does not have. A lossy artifact reports the error of every
    approximated tensor instead."""
    codec_cls = artifact_codec_class(artifact)
    if codec_cls is not None and not codec_cls.lossless:
        return _lossy_errors(job=job, artifact=artifact, reporter=reporter)
    recorded = artifact_expected_files(artifact)
    if recorded is None:
        return {"status": "skipped", "reason": "no recorded hashes of the fine-tuned model",
                "checked": 0, "mismatched": []}
    restored = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()}
    mismatched = sorted(restored - set(recorded)) + [
        name for name, sha in sorted(recorded.items())
        if name not in restored or restored_sha256.get(name) != sha]
    status = Artifact.Verification.FAILED if mismatched else Artifact.Verification.VERIFIED
    return {"status": str(status), "checked": len(recorded), "mismatched": mismatched}


def _run_decompress(*, job: Job, reporter: JobReporter) -> dict:
    artifact = job.artifact
    if artifact is None:
        raise ApplicationError("The job's artifact was deleted.")
    out_dir = job_restored_dir(job)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    reporter.log(f"restoring artifact #{artifact.pk} ({artifact.codec_id})")
    try:
        summary = restore_artifact(job=job, artifact=artifact, out_dir=out_dir, reporter=reporter)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    summary["output_dir"] = str(out_dir)
    return summary


# ---- evaluate ------------------------------------------------------------------------------------------------
# what each dataset kind measures, and the options of the evaluator that change its result (part of the cache key)
EVALUATION_OPTIONS = {Dataset.Kind.TEXT: ("max_tokens",), Dataset.Kind.LABELLED: ("max_examples",)}
HIGHER_IS_BETTER = {"perplexity": False, "top1_accuracy": True, "accuracy": True, "macro_f1": True}


def _evaluated_model(inputs: JobInputs) -> ModelEntry | None:
    """The model whose quality an evaluate job measures: the model, or the artifact's fine-tune."""
    if inputs.model is not None:
        return inputs.model
    return inputs.artifact.pair.finetuned if inputs.artifact is not None and inputs.artifact.pair else None


def _check_evaluate(inputs: JobInputs) -> JobInputs:
    if inputs.dataset is None:
        raise ApplicationError("An evaluate job needs a dataset.")
    if (inputs.model is None) == (inputs.artifact is None):
        raise ApplicationError("An evaluate job needs exactly one of a model or an artifact.")
    inputs = _artifact_inputs(inputs) if inputs.artifact is not None else inputs
    if inputs.dataset.kind == Dataset.Kind.LABELLED:
        from modelcodecs.evaluate import classifier_labels, label_ids, read_labelled

        model = _evaluated_model(inputs)
        if model is None:
            raise ApplicationError("An accuracy job on an artifact needs the artifact's pair (its fine-tune).")
        try:
            labels = classifier_labels(str(model_local_folder(model)))
            label_ids(read_labelled(inputs.dataset.path), labels, inputs.dataset.name)
        except modelcodecs.ModelCodecError as exc:
            raise ApplicationError(f"Cannot measure accuracy of {model.name} on {inputs.dataset.name}: {exc}",
                                   extra={"model": model.pk, "dataset": inputs.dataset.pk}) from exc
    return inputs


def _score_key(dataset: Dataset, options: dict) -> str:
    used = {k: options[k] for k in EVALUATION_OPTIONS[dataset.kind] if options.get(k)}
    return f"{dataset.pk}:{dataset.sha256}:{json.dumps(used, sort_keys=True)}"


def _score(*, model_dir: Path, dataset: Dataset, options: dict, reporter: JobReporter, which: str) -> dict:
    """Score one model folder on the dataset with the evaluator its kind calls for; running scores stream to the
    job's row (``metrics.partial.<which>``) as they come."""
    from modelcodecs import evaluate  # imports torch lazily, only here

    kwargs = {k: options[k] for k in EVALUATION_OPTIONS[dataset.kind] if options.get(k)}
    partial = lambda scores: reporter.partial(which, scores)  # noqa: E731
    reporter.unit = "examples" if dataset.kind == Dataset.Kind.LABELLED else "tokens"
    if dataset.kind == Dataset.Kind.LABELLED:
        reporter.stage(f"evaluating accuracy of the {which} model")
        result = evaluate.evaluate_classification(str(model_dir), str(dataset.path), progress=reporter,
                                                  cancel=reporter.cancelled, partial=partial, **kwargs)
    else:
        reporter.stage(f"evaluating perplexity of the {which} model")
        result = evaluate.evaluate_perplexity(str(model_dir), str(dataset.path), progress=reporter,
                                              cancel=reporter.cancelled, partial=partial, **kwargs)
    return _jsonable(result)


def _original_scores(*, model: ModelEntry, dataset: Dataset, options: dict, reporter: JobReporter) -> dict:
    """The fine-tune's own scores, cached on the model per dataset (and its content) and evaluator options."""
    key = _score_key(dataset, options)
    cached = (model.scores or {}).get(key)
    if cached:
        reporter.log(f"original scores of {model.name} on {dataset.name}: cached")
        return cached
    scores = _score(model_dir=job_model_folder(model, reporter), dataset=dataset, options=options,
                    reporter=reporter,
                    which="original")
    with transaction.atomic():
        row = ModelEntry.objects.select_for_update().get(pk=model.pk)
        row.scores = {**(row.scores or {}), key: scores}
        row.save(update_fields=["scores"])
    return scores


def quality_delta(original: dict, restored: dict) -> dict:
    """restored - original for every score both have."""
    return {k: restored[k] - original[k] for k in HIGHER_IS_BETTER
            if isinstance(original.get(k), (int, float)) and isinstance(restored.get(k), (int, float))}


def _run_evaluate(*, job: Job, reporter: JobReporter) -> dict:
    dataset = job.dataset
    if dataset is None:
        raise ApplicationError("The job's dataset was deleted.")
    if not Path(dataset.path).is_file():
        raise ApplicationError(f"The dataset file {dataset.path} is missing.")
    options = job.options or {}
    started = time.perf_counter()
    try:
        if job.artifact is not None:
            finetuned = job.artifact.pair.finetuned if job.artifact.pair else None
            if finetuned is None:
                raise ApplicationError("The artifact's pair was deleted: there is no original to compare with.")
            require_unchanged(finetuned)
            # restore (and check against the registry) first: nothing is scored for an artifact that fails
            model_dir = job_work_dir(job) / "restored"
            shutil.rmtree(job_work_dir(job), ignore_errors=True)
            reporter.set_span(0.0, 20.0)
            reporter.log(f"restoring artifact #{job.artifact.pk} for evaluation")
            reporter.unit = "bytes"
            restore_artifact(job=job, artifact=job.artifact, out_dir=model_dir, reporter=reporter)
            reporter.set_span(20.0, 50.0)
            original = _original_scores(model=finetuned, dataset=dataset, options=options, reporter=reporter)
            reporter.set_span(50.0, 100.0)
            restored = _score(model_dir=model_dir, dataset=dataset, options=options, reporter=reporter,
                              which="restored")
        elif job.model is not None:
            require_unchanged(job.model)
            original = restored = _original_scores(model=job.model, dataset=dataset, options=options,
                                                   reporter=reporter)
        else:
            raise ApplicationError("The job's model or artifact was deleted.")
    finally:
        shutil.rmtree(job_work_dir(job), ignore_errors=True)
    delta = quality_delta(original, restored)
    metrics = {**restored, "dataset": dataset.name, "dataset_kind": dataset.kind, "original": original,
               "restored": restored, "delta": delta, "seconds": round(time.perf_counter() - started, 3)}
    if job.artifact is not None:
        with transaction.atomic():
            artifact = Artifact.objects.select_for_update().get(pk=job.artifact.pk)
            artifact.quality = {**(artifact.quality or {}), str(dataset.pk): {
                "dataset": dataset.name, "kind": dataset.kind, "original": original, "restored": restored,
                "delta": delta, "job_id": job.pk}}
            if isinstance(restored.get("perplexity"), (int, float)):
                artifact.perplexity = float(restored["perplexity"])
            artifact.save(update_fields=["quality", "perplexity"])
    reporter.log(", ".join(f"{k} {original[k]:.4f} -> {restored[k]:.4f} ({v:+.4f})" for k, v in delta.items()))
    return metrics


# ---- store compressed -------------------------------------------------------------------------------------------
def _check_store(inputs: JobInputs) -> JobInputs:
    model = inputs.model
    if model is None:
        raise ApplicationError("A store job needs a model.")
    if model.storage == ModelEntry.Storage.COMPRESSED:
        raise ApplicationError(f"Model {model.name} is stored compressed already.")
    return inputs


def _run_store(*, job: Job, reporter: JobReporter) -> dict:
    """Put the model's files into its team's tensor store, where tensors already there (another model's frozen
    layers, a re-upload) are referenced rather than written again; then record it (``model_store_commit``)."""
    from modelcodecs.tensorstore import store_model

    from webapp.registry.services import model_store_commit
    from webapp.registry.storage import tensor_store_root

    model = job.model
    if model is None:
        raise ApplicationError("The job's model was deleted.")
    if model.storage == ModelEntry.Storage.COMPRESSED:
        raise ApplicationError(f"Model {model.name} is stored compressed already.")
    require_unchanged(model)
    root = tensor_store_root(job.team_id)

    def live(summary) -> None:
        reporter.partial("store", {"tensors_done": summary.tensors_done, "tensors_total": summary.tensors_total,
                                   "written_bytes": summary.written_bytes,
                                   "deduplicated_bytes": summary.deduplicated_bytes})

    def store(rewrite=()):
        return store_model(model.path, root, threads=job_threads(job), progress=reporter,
                           cancel=reporter.cancelled, on_tensor=live, rewrite=rewrite)

    reporter.log(f"storing {model.name} in the team's tensor store")
    summary = store()
    recorded = {f["name"]: f.get("sha256") for f in model.files or [] if f.get("name")}
    stored = {f["name"]: f["sha256"] for f in summary.manifest["files"]}
    if recorded and stored != recorded:
        differ = sorted(name for name in set(stored) | set(recorded) if stored.get(name) != recorded.get(name))
        raise ApplicationError(f"Model {model.name}'s files differ from the ones registered ({', '.join(differ[:5])})"
                               ": rescan it, then store it again.", extra={"files": differ})
    reporter.stage("recording")
    model_store_commit(model=model, summary=summary, rewrite_missing=lambda keys: store(rewrite=keys))
    result = summary.as_dict()
    reporter.log(f"{result['logical_bytes']} logical bytes: {result['written_bytes']} new bytes written, "
                 f"{result['deduplicated_bytes']} bytes already stored")
    return result


JOB_KINDS: dict[str, JobKind] = {
    Job.Kind.COMPRESS: JobKind(frozenset({"pair", "gradient_set", "model", "codec_config", "dataset"}),
                               _check_compress, _run_compress),
    Job.Kind.DECOMPRESS: JobKind(frozenset({"artifact"}), _check_decompress, _run_decompress),
    Job.Kind.EVALUATE: JobKind(frozenset({"model", "artifact", "dataset"}), _check_evaluate, _run_evaluate),
    Job.Kind.STORE: JobKind(frozenset({"model"}), _check_store, _run_store),
}
