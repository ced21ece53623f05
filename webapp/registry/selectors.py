"""Reads of the registry. Every getter is scoped to a team or to the teams a user is in, and answers Http404 for
anything else, so another team's ids look like ids that do not exist."""

from __future__ import annotations

import django_filters
import modelcodecs
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from webapp.core.exceptions import ApplicationError
from webapp.registry.models import Artifact, Dataset, GradientSet, ModelEntry, Pair, StoredTensor, StoredTensorRef
from webapp.teams.models import Team


def _scope(qs: QuerySet, *, team: Team | None, user: AbstractBaseUser | None) -> QuerySet:
    if team is None and user is None:
        raise ValueError("a registry selector needs a team or a user")
    if team is not None:
        qs = qs.filter(team=team)
    if user is not None:
        qs = qs.filter(team__memberships__user=user)
    return qs


class ModelFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    architecture = django_filters.CharFilter()
    source = django_filters.ChoiceFilter(choices=ModelEntry.Source.choices)

    class Meta:
        model = ModelEntry
        fields = ["name", "architecture", "source"]


class PairFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    model = django_filters.NumberFilter(method="filter_model")

    class Meta:
        model = Pair
        fields = ["name", "model"]

    def filter_model(self, queryset, name, value):
        from django.db.models import Q

        return queryset.filter(Q(base_id=value) | Q(finetuned_id=value))


class ArtifactFilter(django_filters.FilterSet):
    pair = django_filters.NumberFilter(field_name="pair_id")
    codec = django_filters.CharFilter(field_name="codec_id")
    verification = django_filters.ChoiceFilter(choices=Artifact.Verification.choices)

    class Meta:
        model = Artifact
        fields = ["pair", "codec", "verification"]


def model_list(*, team: Team | None = None, user: AbstractBaseUser | None = None,
               filters: dict | None = None) -> QuerySet[ModelEntry]:
    qs = _scope(ModelEntry.objects.select_related("team"), team=team, user=user)
    return ModelFilter(filters or {}, qs).qs.order_by("-created_at", "-id")


def model_changes(*, model: ModelEntry) -> list[str]:
    """How the model folder differs from what was recorded when it was registered (or last rescanned), by a cheap
    check of each recorded file's size and modification time (no hashing). Empty when unchanged, and for a model
    stored compressed: the registry holds its bytes, whatever happens to the folder."""
    if model.storage == ModelEntry.Storage.COMPRESSED:
        return []
    return model_folder_changes(model=model)


def model_folder_changes(*, model: ModelEntry) -> list[str]:
    """:func:`model_changes` of the folder at ``model.path``, however the model is stored."""
    from pathlib import Path

    folder = Path(model.path)
    if not folder.is_dir():
        return [f"the folder {model.path} does not exist"]
    changes = []
    for entry in model.files or []:
        name = entry.get("name")
        if not name:
            continue
        try:
            stat = (folder / name).stat()
        except OSError:
            changes.append(f"{name} is missing")
            continue
        if "size" in entry and stat.st_size != entry["size"]:
            changes.append(f"{name}: {entry['size']} bytes when registered, {stat.st_size} now")
        elif "mtime_ns" in entry and stat.st_mtime_ns != entry["mtime_ns"]:
            changes.append(f"{name} was modified since it was registered")
    return changes


def model_stored_bytes(*, model: ModelEntry) -> dict:
    """What a model stored compressed takes in its team's tensor store: ``stored_bytes`` (every object it needs,
    shared ones included) and ``unique_stored_bytes`` (objects no other model needs: what deleting it frees)."""
    from django.db.models import Count, Sum

    tensors = StoredTensor.objects.filter(pk__in=StoredTensorRef.objects.filter(model=model).values("tensor_id"))
    total = tensors.aggregate(total=Sum("stored_bytes"))["total"] or 0
    unique = (tensors.annotate(models=Count("refs")).filter(models=1)
              .aggregate(total=Sum("stored_bytes"))["total"] or 0)
    return {"stored_bytes": total, "unique_stored_bytes": unique}


def model_get(*, id: int, team: Team | None = None, user: AbstractBaseUser | None = None) -> ModelEntry:
    return get_object_or_404(_scope(ModelEntry.objects.select_related("team"), team=team, user=user), pk=id)


def pair_list(*, team: Team | None = None, user: AbstractBaseUser | None = None,
              filters: dict | None = None) -> QuerySet[Pair]:
    qs = _scope(Pair.objects.select_related("team", "base", "finetuned"), team=team, user=user)
    return PairFilter(filters or {}, qs).qs.order_by("-created_at", "-id")


def pair_get(*, id: int, team: Team | None = None, user: AbstractBaseUser | None = None) -> Pair:
    qs = _scope(Pair.objects.select_related("team", "base", "finetuned"), team=team, user=user)
    return get_object_or_404(qs, pk=id)


def dataset_list(*, team: Team | None = None, user: AbstractBaseUser | None = None,
                 filters: dict | None = None) -> QuerySet[Dataset]:
    qs = _scope(Dataset.objects.select_related("team"), team=team, user=user)
    return qs.order_by("-created_at", "-id")


def dataset_get(*, id: int, team: Team | None = None, user: AbstractBaseUser | None = None) -> Dataset:
    return get_object_or_404(_scope(Dataset.objects.select_related("team"), team=team, user=user), pk=id)


def artifact_list(*, team: Team | None = None, user: AbstractBaseUser | None = None,
                  filters: dict | None = None) -> QuerySet[Artifact]:
    qs = _scope(Artifact.objects.select_related("team", "pair", "pair__base", "pair__finetuned", "job"),
                team=team, user=user)
    return ArtifactFilter(filters or {}, qs).qs.order_by("-created_at", "-id")


def artifact_get(*, id: int, team: Team | None = None, user: AbstractBaseUser | None = None) -> Artifact:
    qs = _scope(Artifact.objects.select_related("team", "pair", "pair__base", "pair__finetuned", "job"),
                team=team, user=user)
    return get_object_or_404(qs, pk=id)




# ---- what a delete takes with it ----------------------------------------------------------------------------
def model_delete_impact(*, model: ModelEntry) -> dict:
    """What deleting ``model`` removes besides it: the pairs it is in (as base or fine-tune) and their artifacts
    (an artifact cannot be restored without its pair's base)."""
    from django.db.models import Q

    pairs = list(Pair.objects.filter(Q(base=model) | Q(finetuned=model)).select_related("base", "finetuned"))
    return {"pairs": pairs, "artifacts": list(artifact_list(team=model.team).filter(pair__in=pairs))}


def pair_delete_impact(*, pair: Pair) -> dict:
    """What deleting ``pair`` removes besides it: its artifacts."""
    return {"pairs": [pair], "artifacts": list(artifact_list(team=pair.team, filters={"pair": pair.pk}))}


# ---- identical artifacts -------------------------------------------------------------------------------------
def artifact_find_same_config(*, pair: Pair | None, codec_config: dict | None) -> Artifact | None:
    """The newest artifact of ``pair`` made with exactly ``codec_config`` (a compress job would repeat it)."""
    if pair is None or not codec_config:
        return None
    for artifact in artifact_list(team=pair.team, filters={"pair": pair.pk}):
        if (artifact.codec_config or {"id": artifact.codec_id}) == codec_config:
            return artifact
    return None


def artifact_find_identical(*, pair: Pair, codec_config: dict, content_sha256: str) -> Artifact | None:
    """An artifact of ``pair`` with the same codec config and the same file content, if one exists."""
    for artifact in artifact_list(team=pair.team, filters={"pair": pair.pk}).filter(content_sha256=content_sha256):
        if (artifact.codec_config or {"id": artifact.codec_id}) == codec_config:
            return artifact
    return None


def artifact_codec_class(artifact: Artifact) -> type[modelcodecs.Codec] | None:
    try:
        return modelcodecs.get_codec_class(artifact.codec_id)
    except modelcodecs.ModelCodecError:
        return None


def artifact_expected_files(artifact: Artifact) -> dict[str, str] | None:
    """File name -> sha256 the registry recorded for what ``artifact`` must restore (its pair's fine-tuned model,
    or its gradient set's files), or None when nothing can be compared (a lossy codec, neither pair nor gradient
    set, no hashes recorded)."""
    codec_cls = artifact_codec_class(artifact)
    if codec_cls is not None and not codec_cls.lossless:
        return None
    if artifact.pair is not None:
        files = artifact.pair.finetuned.files
    elif artifact.gradient_set is not None:
        files = artifact.gradient_set.files
    else:
        return None
    recorded = {f["name"]: f.get("sha256") for f in files or [] if f.get("name")}
    return recorded if recorded and all(recorded.values()) else None


def artifact_base_dir(artifact: Artifact) -> str | None:
    """The base model folder the artifact's codec needs, or None when it needs none."""
    try:  # the instance decides: a lossy codec needs the base only with on_delta
        needs_base = modelcodecs.get_codec(artifact.codec_config or {"id": artifact.codec_id}).needs_base
    except modelcodecs.ModelCodecError:
        return None
    if not needs_base:
        return None
    if artifact.pair is None:
        raise ApplicationError("The artifact needs its base model, but its pair was deleted.")
    from webapp.registry.storage import model_local_folder

    return str(model_local_folder(artifact.pair.base))
# ---- which artifact to keep -----------------------------------------------------------------------------------
# the score a dataset kind is judged by, and whether higher is better
PRIMARY_METRIC = {Dataset.Kind.TEXT: ("perplexity", False), Dataset.Kind.LABELLED: ("accuracy", True)}


def _options(config: dict) -> dict:
    """The codec options that differ from the codec's defaults (what tells two artifacts of a codec apart)."""
    import modelcodecs

    codec_id = (config or {}).get("id") or ""
    config = {k: v for k, v in (config or {}).items() if k != "id"}
    try:
        defaults = {p.name: p.default for p in modelcodecs.get_codec_class(codec_id).params}
    except modelcodecs.ModelCodecError:
        defaults = {}
    return {k: v for k, v in config.items() if k not in defaults or defaults[k] != v}


def _original_of(model: ModelEntry, dataset: Dataset) -> dict | None:
    """The fine-tune's cached scores on ``dataset`` (any evaluator options; the latest written wins)."""
    prefix = f"{dataset.pk}:{dataset.sha256}:"
    found = [v for k, v in (model.scores or {}).items() if k.startswith(prefix)]
    return found[-1] if found else None


def artifact_training_label(artifact: Artifact) -> str | None:
    """For codecs that train while compressing (a ``steps`` option, e.g. BitDelta): ``<codec> initial`` when
    untrained (BitDelta-Initial) or ``<codec> distilled (N steps)``, so both show side by side; None otherwise."""
    steps = (artifact.codec_config or {}).get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int):
        return None
    return f"{artifact.codec_id} initial" if steps == 0 else f"{artifact.codec_id} distilled ({steps} steps)"


def pair_comparison(*, pair: Pair, dataset: Dataset | None = None, tolerance_pct: float = 1.0,
                    tolerance_points: float = 0.5) -> dict:
    """Everything needed to choose which artifact of ``pair`` to keep.

    One row per artifact: codec, non-default options, bits per weight (8 x artifact bytes / the fine-tune's
    parameters), ratio, compress speed, verification, and its quality on ``dataset`` (default: the dataset most
    artifacts were evaluated on) as original -> restored with the delta. Lossless artifacts take the original's
    quality (it is their quality by construction) once the fine-tune has been scored. ``pareto`` lists the artifacts
    no other beats on both size and quality; ``within`` those whose quality is within the tolerance (perplexity
    at most ``tolerance_pct`` % above the original, accuracy at most ``tolerance_points`` points below), and
    ``recommended`` the smallest of those.
    """
    artifacts = list(artifact_list(team=pair.team, filters={"pair": pair.pk}))
    evaluated: dict[str, int] = {}
    for artifact in artifacts:
        for key in (artifact.quality or {}):
            evaluated[key] = evaluated.get(key, 0) + 1
    datasets = {str(d.pk): d for d in Dataset.objects.filter(team=pair.team, pk__in=[int(k) for k in evaluated])}
    if dataset is None and datasets:
        dataset = datasets[max((k for k in evaluated if k in datasets), key=lambda k: evaluated[k])]
    metric, higher = PRIMARY_METRIC[dataset.kind] if dataset is not None else (None, False)
    original = _original_of(pair.finetuned, dataset) if dataset is not None else None
    weights = pair.finetuned.parameter_count or 0
    rows = []
    for artifact in artifacts:
        metrics = artifact.metrics or {}
        quality = (artifact.quality or {}).get(str(dataset.pk)) if dataset is not None else None
        lossless = metrics.get("lossless")
        if lossless is None:
            lossless = _codec_lossless(artifact.codec_id)
        if quality is None and lossless and original is not None:
            quality = {"original": original, "restored": original, "delta": {k: 0.0 for k in original
                                                                             if isinstance(original[k], float)},
                       "from": "lossless: the original's scores"}
        rows.append({
            "artifact_id": artifact.pk, "job_id": artifact.job_id, "codec": artifact.codec_id,
            "label": artifact_training_label(artifact) or artifact.codec_label,
            "training_label": artifact_training_label(artifact), "source": artifact.source,
            "codec_options": artifact.codec_options,
            "options": _options(artifact.codec_config), "lossless": lossless,
            "ratio": artifact.ratio, "compressed_bytes": artifact.compressed_bytes,
            "original_bytes": artifact.original_bytes,
            "bits_per_weight": 8 * artifact.compressed_bytes / weights if weights else None,
            "mb_per_s": metrics.get("mb_per_s"), "seconds": metrics.get("seconds"),
            "verification": artifact.verification, "quality": quality,
            "score": (quality or {}).get("restored", {}).get(metric) if metric else None,
            "changes": [{"metric": k, "original": quality["original"][k], "restored": quality["restored"][k],
                         "delta": v} for k, v in (quality or {}).get("delta", {}).items()],
            "raw_fallback": [r.get("name") for r in (metrics.get("codec_report") or {}).get("raw_fallback", [])],
        })
    rows.sort(key=lambda r: -(r["ratio"] or 0))
    scored = [r for r in rows if isinstance(r["score"], (int, float))]

    def better_or_equal(a: float, b: float) -> bool:
        return a >= b if higher else a <= b

    pareto = [r["artifact_id"] for r in scored if not any(
        o is not r and o["compressed_bytes"] <= r["compressed_bytes"] and better_or_equal(o["score"], r["score"])
        and (o["compressed_bytes"] < r["compressed_bytes"] or o["score"] != r["score"]) for o in scored)]
    reference = (original or {}).get(metric) if metric else None
    within = []
    if isinstance(reference, (int, float)):
        limit = reference - tolerance_points / 100 if higher else reference * (1 + tolerance_pct / 100)
        within = [r["artifact_id"] for r in scored if better_or_equal(r["score"], limit)]
    recommended = min((r for r in rows if r["artifact_id"] in within), key=lambda r: r["compressed_bytes"],
                      default=None)
    return {
        "pair_id": pair.pk, "weights": weights, "dataset": dataset, "datasets": list(datasets.values()),
        "metric": metric, "higher_is_better": higher, "original": original, "rows": rows, "pareto": pareto,
        "tolerance": {"perplexity_pct": tolerance_pct, "accuracy_points": tolerance_points},
        "within": within, "recommended": recommended["artifact_id"] if recommended else None,
    }


def _codec_lossless(codec_id: str) -> bool | None:
    import modelcodecs

    try:
        return modelcodecs.get_codec_class(codec_id).lossless
    except modelcodecs.ModelCodecError:
        return None




def gradient_set_list(*, team: Team | None = None, user: AbstractBaseUser | None = None) -> QuerySet[GradientSet]:
    return _scope(GradientSet.objects.select_related("team"), team=team, user=user)


def gradient_set_get(*, id: int, team: Team | None = None, user: AbstractBaseUser | None = None) -> GradientSet:
    return get_object_or_404(gradient_set_list(team=team, user=user), pk=id)


def gradient_set_rate_table(*, gradient_set: GradientSet) -> list[dict]:
    """One row per artifact made from the set (every codec and prior run on it), best rate first: rate =
    compressed / original bytes, bits per float over the set's float gradients."""
    rows = []
    for artifact in gradient_set.artifacts.order_by("compressed_bytes", "id"):
        config = artifact.codec_config or {}
        rows.append({
            "artifact_id": artifact.pk, "codec_id": artifact.codec_id,
            "prior": config.get("prior") if "prior" in config else None,
            "codec_config": config, "original_bytes": artifact.original_bytes,
            "compressed_bytes": artifact.compressed_bytes,
            "rate": round(artifact.compressed_bytes / artifact.original_bytes, 4) if artifact.original_bytes else 0.0,
            "bits_per_float": round(8 * artifact.compressed_bytes / gradient_set.float_count, 3)
            if gradient_set.float_count else 0.0,
            "mb_per_s": (artifact.metrics or {}).get("mb_per_s"), "verification": artifact.verification,
        })
    return rows
