from django.conf import settings
from django.db import models

from webapp.teams.models import Team


class ModelEntry(models.Model):
    """A model checkpoint folder the team registered ("Model" in the UI). ``path`` is absolute, on the server."""

    class Source(models.TextChoices):
        PATH = "path", "Server path"
        UPLOAD = "upload", "Upload"

    class Storage(models.TextChoices):
        FOLDER = "folder", "Folder"
        COMPRESSED = "compressed", "Stored compressed"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1024)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PATH)
    layout = models.CharField(max_length=32)
    architecture = models.CharField(max_length=200, blank=True, default="")
    model_type = models.CharField(max_length=100, blank=True, default="")
    dtypes = models.JSONField(default=dict, blank=True)
    parameter_count = models.BigIntegerField(default=0)
    tensor_count = models.IntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    files = models.JSONField(default=list, blank=True)
    # quality scores of this model, cached by evaluate jobs: {"<dataset id>:<dataset sha256>:<options>": metrics}
    scores = models.JSONField(default=dict, blank=True)
    # COMPRESSED: the registry holds the model as tensor-store objects (``StoredTensor``), described by
    # ``store_manifest`` (``modelcodecs.tensorstore``); ``total_bytes`` stays the logical size.
    storage = models.CharField(max_length=12, choices=Storage.choices, default=Storage.FOLDER)
    store_manifest = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "model"
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="modelentry_unique_team_name")]

    def __str__(self) -> str:
        return self.name


class StoredTensor(models.Model):
    """One object of a team's tensor store: a tensor (or non-tensor file) coded losslessly, kept once however many
    models hold it. Its reference count is the number of its ``refs``; a row with none is deleted with its file."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="stored_tensors")
    key = models.CharField(max_length=64, help_text="Content hash of the tensor (dtype, shape, bytes).")
    logical_bytes = models.BigIntegerField(default=0)
    stored_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "key"]
        constraints = [models.UniqueConstraint(fields=["team", "key"], name="storedtensor_unique_team_key")]

    def __str__(self) -> str:
        return self.key


class StoredTensorRef(models.Model):
    """``model`` needs ``tensor`` to be restored."""

    # RESTRICT: a tensor with refs is never deleted alone, only with its models (a team deleted whole)
    tensor = models.ForeignKey(StoredTensor, on_delete=models.RESTRICT, related_name="refs")
    model = models.ForeignKey(ModelEntry, on_delete=models.CASCADE, related_name="tensor_refs")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tensor", "model"], name="storedtensorref_unique_tensor_model")]


class Pair(models.Model):
    """A base model and a fine-tune of it; compress jobs code the fine-tune against the base."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="pairs")
    name = models.CharField(max_length=200)
    base = models.ForeignKey(ModelEntry, on_delete=models.PROTECT, related_name="pairs_as_base")
    finetuned = models.ForeignKey(ModelEntry, on_delete=models.PROTECT, related_name="pairs_as_finetuned")
    report = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="pair_unique_team_name"),
            models.CheckConstraint(condition=~models.Q(base=models.F("finetuned")), name="pair_base_not_finetuned"),
        ]

    def __str__(self) -> str:
        return self.name


class Dataset(models.Model):
    """A file used to evaluate models: plain text (perplexity, next-token accuracy of a causal LM) or labelled
    text (CSV/JSONL with ``text`` and ``label``: accuracy and macro-F1 of a sequence classifier)."""

    class Source(models.TextChoices):
        PATH = "path", "Server path"
        UPLOAD = "upload", "Upload"

    class Kind(models.TextChoices):
        TEXT = "text", "Text (perplexity)"
        LABELLED = "labelled", "Labelled (classification accuracy)"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1024)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PATH)
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.TEXT)
    # labelled: {"format", "rows", "labels": {label: count}} as validated at registration
    info = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="dataset_unique_team_name")]

    def __str__(self) -> str:
        return self.name


class GradientSet(models.Model):
    """A folder of gradient tensors (safetensors files, one per recorded training step) the team registered.
    Compressed by codecs whose ``input_kind`` is ``gradients`` (LM-GC)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="gradient_sets")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1024)
    source = models.CharField(max_length=10, choices=ModelEntry.Source.choices, default=ModelEntry.Source.PATH)
    description = models.TextField(blank=True, default="")
    steps = models.JSONField(default=list, blank=True)
    tensor_count = models.IntegerField(default=0)
    float_count = models.BigIntegerField(default=0)
    dtypes = models.JSONField(default=dict, blank=True)
    total_bytes = models.BigIntegerField(default=0)
    params = models.JSONField(default=list, blank=True)  # name, dtype, shape, steps (first 500)
    non_float_tensors = models.JSONField(default=list, blank=True)
    files = models.JSONField(default=list, blank=True)  # name, size, sha256
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "gradient set"
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="gradientset_unique_team_name")]

    def __str__(self) -> str:
        return self.name


class Artifact(models.Model):
    """A compressed fine-tune (one ``.dvz`` file in the ``artifacts`` storage), made by a compress job or
    imported (``source``)."""

    class Source(models.TextChoices):
        JOB = "job", "Compress job"
        IMPORT = "import", "Imported"


    class Verification(models.TextChoices):
        UNVERIFIED = "unverified", "Unverified"
        VERIFIED = "verified", "Verified"
        FAILED = "failed", "Failed"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="artifacts")
    pair = models.ForeignKey(Pair, null=True, blank=True, on_delete=models.PROTECT, related_name="artifacts")
    gradient_set = models.ForeignKey(GradientSet, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="artifacts")
    job = models.OneToOneField("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="output_artifact")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.JOB)
    codec_id = models.CharField(max_length=64)
    codec_config = models.JSONField(default=dict, blank=True)
    storage_name = models.CharField(max_length=512, unique=True)
    content_sha256 = models.CharField(max_length=64, blank=True, default="", db_index=True,
                                      help_text="sha256 of the artifact file; equal files of one pair and codec "
                                                "config are the same artifact.")
    # sha256 of the whole artifact file, recorded when it was stored: every restore checks the file against it first
    sha256 = models.CharField(max_length=64, blank=True, default="")
    original_bytes = models.BigIntegerField(default=0)
    compressed_bytes = models.BigIntegerField(default=0)
    ratio = models.FloatField(default=0.0)
    verification = models.CharField(max_length=12, choices=Verification.choices, default=Verification.UNVERIFIED)
    verified_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    perplexity = models.FloatField(null=True, blank=True)
    # evaluate jobs' results, one entry per dataset: {"<dataset id>": {"dataset", "kind", "original": metrics,
    # "restored": metrics, "job_id"}}: the original fine-tune's scores beside the restored model's
    quality = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.label

    @property
    def codec_options(self) -> str:
        """The codec's options besides its id, e.g. ``chunk_elements=262144, threads_hint=1`` ('' when none)."""
        config = {k: v for k, v in (self.codec_config or {}).items() if k != "id"}
        return ", ".join(f"{key}={config[key]}" for key in sorted(config))

    @property
    def codec_label(self) -> str:
        """``fmdelta (chunk_elements=262144)``: the codec with its options, to tell artifacts apart."""
        options = self.codec_options
        return f"{self.codec_id} ({options})" if options else self.codec_id

    @property
    def label(self) -> str:
        """``fmdelta (chunk_elements=262144) artifact #3 of pair demo``."""
        text = f"{self.codec_label} artifact #{self.pk}"
        if self.pair_id:
            return f"{text} of pair {self.pair.name}"
        return f"{text} of gradient set {self.gradient_set.name}" if self.gradient_set_id else text
