"""Dashboard forms. They only validate input; views pass ``cleaned_data`` to the services."""

from __future__ import annotations

from django import forms

import modelcodecs

from webapp.dashboard.codec_fields import codec_config_from, codec_form_fields
from webapp.registry.models import Dataset


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(d, initial) for d in data]
        return [single(data, initial)] if data else []


class TeamCreateForm(forms.Form):
    name = forms.CharField(max_length=100)


ROLE_CHOICES = [("admin", "Admin: manages members"), ("member", "Member: registers and runs jobs"),
                ("viewer", "Viewer: reads only")]


class InvitationForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial="member")


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES, label="Role")


class _ModelRegisterForm(forms.Form):
    name = forms.CharField(max_length=200)
    store_compressed = forms.BooleanField(
        required=False, label="Store compressed",
        help_text="Then code every tensor losslessly into the team's tensor store (a job; tensors other models "
                  "share are kept once), restored on demand.")
    field_order = ["name"]


class ModelPathForm(_ModelRegisterForm):
    path = forms.CharField(max_length=1024, help_text="A model folder on the server, inside the allowed roots.")
    field_order = ["name", "path"]


class ModelUploadForm(_ModelRegisterForm):
    files = MultipleFileField(help_text="*.safetensors weights, config.json and tokenizer files.")
    field_order = ["name", "files"]


class PairCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    base = forms.ModelChoiceField(queryset=None, empty_label=None)
    finetuned = forms.ModelChoiceField(queryset=None, empty_label=None, label="Fine-tuned")

    def __init__(self, *args, models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["base"].queryset = models
        self.fields["finetuned"].queryset = models
        # Models are listed newest first: the fine-tune is usually registered after its base. Never preselect the
        # same model twice.
        ids = list(models.values_list("pk", flat=True)[:2])
        if len(ids) == 2 and not self.is_bound:
            self.initial.setdefault("finetuned", ids[0])
            self.initial.setdefault("base", ids[1])


DATASET_KIND_HELP = ("Text: perplexity and next-token accuracy of a causal LM. Labelled: a CSV (header row) or "
                     "JSONL file with 'text' and 'label' fields, for a sequence classifier's accuracy and macro-F1.")


class DatasetPathForm(forms.Form):
    name = forms.CharField(max_length=200)
    path = forms.CharField(max_length=1024, help_text="A UTF-8 text file on the server, inside the allowed roots.")
    kind = forms.ChoiceField(choices=Dataset.Kind.choices, initial=Dataset.Kind.TEXT, required=False,
                             help_text=DATASET_KIND_HELP)

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or Dataset.Kind.TEXT


class DatasetUploadForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(help_text="A UTF-8 text file.")
    kind = forms.ChoiceField(choices=Dataset.Kind.choices, initial=Dataset.Kind.TEXT, required=False,
                             help_text=DATASET_KIND_HELP)

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or Dataset.Kind.TEXT


class ArtifactImportForm(forms.Form):
    file = forms.FileField(help_text="A .dvz artifact made with `modelcodecs compress`.")


KIND_CHOICES = [("compress", "Compress a pair"), ("decompress", "Decompress and verify an artifact"),
                ("evaluate", "Evaluate quality (model or artifact; perplexity or accuracy by dataset kind)")]
QUEUE_CHOICES = [("auto", "Auto (GPU for model-running work when a GPU worker is live)"), ("cpu", "CPU worker"),
                 ("gpu", "GPU worker")]


class ArtifactChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return obj.label  # "fmdelta (chunk_elements=262144) artifact #3 of pair X"


class JobForm(forms.Form):
    """Kind, inputs, queue, and one fieldset per codec built from ``config_schema()``; only the chosen codec's
    fields are read."""

    kind = forms.ChoiceField(choices=KIND_CHOICES)
    pair = forms.ModelChoiceField(queryset=None, required=False, help_text="Compress: the base + fine-tune to code.")
    codec = forms.ChoiceField(choices=(), required=False, help_text="Compress: the codec.")
    artifact = ArtifactChoiceField(queryset=None, required=False,
                                   help_text="Decompress / evaluate: the artifact to restore.")
    model = forms.ModelChoiceField(queryset=None, required=False, help_text="Evaluate: a registered model.")
    dataset = forms.ModelChoiceField(queryset=None, required=False,
                                     help_text="Evaluate: a text dataset. Compress: calibration text for codecs "
                                               "that train (BitDelta's distillation).")
    queue = forms.ChoiceField(choices=QUEUE_CHOICES, initial="auto")
    threads = forms.IntegerField(min_value=1, max_value=256, required=False,
                                 help_text="Threads for the job (empty: the worker's default).")
    repeat = forms.BooleanField(required=False, label="Run even if the pair has an artifact of this codec config",
                                help_text="Compress: otherwise such a job is refused (it would make the same "
                                          "artifact).")

    MAIN = ("kind", "pair", "codec", "artifact", "model", "dataset", "queue", "threads", "repeat")
    # Which kinds use which inputs (the page hides the others).
    KINDS_OF_FIELD = {"pair": "compress", "codec": "compress", "artifact": "decompress evaluate",
                      "model": "evaluate", "dataset": "evaluate compress", "repeat": "compress"}

    def __init__(self, *args, codecs: list, pairs, artifacts, models, datasets, queues_online: set[str] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if queues_online is not None:  # say which queues no live worker serves
            self.fields["queue"].choices = [
                (value, label if value == "auto" or value in queues_online else f"{label} (no live worker)")
                for value, label in QUEUE_CHOICES]
        self.codecs = {cls.codec_id: cls for cls in codecs if getattr(cls, "input_kind", "weights") == "weights"}
        self.schemas = {cid: cls.config_schema() for cid, cls in self.codecs.items()}
        self.fields["codec"].choices = [
            (cid, f"{cid} ({'lossless' if cls.lossless else 'lossy'})") for cid, cls in self.codecs.items()]
        if "fmdelta" in self.codecs and not self.is_bound and "codec" not in self.initial:
            self.fields["codec"].initial = "fmdelta"
        self.fields["pair"].queryset = pairs
        self.fields["artifact"].queryset = artifacts
        self.fields["model"].queryset = models
        self.fields["dataset"].queryset = datasets
        only = list(datasets[:2])
        if len(only) == 1 and "dataset" not in self.initial:
            self.initial["dataset"] = only[0].pk  # the only dataset: nothing to choose
        self._codec_field_names: dict[str, list[str]] = {}
        for cid, schema in self.schemas.items():
            fields = codec_form_fields(schema, cid)
            self.fields.update(fields)
            self._codec_field_names[cid] = list(fields)
            if self.is_bound and self.data.get("codec") != cid:
                for name in fields:      # another codec's options are neither required nor validated
                    self.fields[name].required = False
                    self.fields[name].disabled = True

    @property
    def main_fields(self):
        return [(self[name], self.KINDS_OF_FIELD.get(name, "")) for name in self.MAIN]

    @property
    def codec_fieldsets(self):
        return [(cid, self.codecs[cid].description, [self[n] for n in names])
                for cid, names in self._codec_field_names.items()]

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        if kind == "compress":
            if not data.get("pair"):
                self.add_error("pair", "Choose the pair to compress.")
            if not data.get("codec"):
                self.add_error("codec", "Choose a codec.")
        elif kind == "decompress" and not data.get("artifact"):
            self.add_error("artifact", "Choose the artifact to decompress.")
        elif kind == "evaluate":
            if not data.get("dataset"):
                self.add_error("dataset", "Choose a dataset.")
            if bool(data.get("model")) == bool(data.get("artifact")):
                self.add_error(None, "Evaluate either a model or an artifact (exactly one).")
        return data

    def service_kwargs(self) -> dict:
        """Keyword arguments for ``webapp.jobs.services.job_submit`` (besides team and user)."""
        data = self.cleaned_data
        kind = data["kind"]
        kwargs: dict = {"kind": kind, "queue": data["queue"]}
        if data.get("threads"):
            kwargs["options"] = {"threads": data["threads"]}
        if kind == "compress":
            codec_id = data["codec"]
            kwargs["pair"] = data["pair"]
            kwargs["codec_config"] = codec_config_from(data, codec_id, self.schemas[codec_id])
            kwargs["repeat"] = bool(data.get("repeat"))
            # the dataset field serves evaluate jobs and codecs that train while compressing; the others get none
            if data.get("dataset") and _trains_on_text(kwargs["codec_config"]):
                kwargs["dataset"] = data["dataset"]
        elif kind == "decompress":
            kwargs["artifact"] = data["artifact"]
        else:
            kwargs["dataset"] = data["dataset"]
            if data.get("model"):
                kwargs["model"] = data["model"]
            else:
                kwargs["artifact"] = data["artifact"]
        return kwargs


class JobSearchForm(forms.Form):
    """Filters of the jobs page (GET); ``filters()`` gives ``webapp.jobs.selectors.job_list`` its filters."""

    q = forms.CharField(required=False, label="Search",
                        widget=forms.TextInput(attrs={"placeholder": "#id, stage, error, name…"}))
    status = forms.ChoiceField(required=False, choices=())
    kind = forms.ChoiceField(required=False, choices=())
    codec = forms.ChoiceField(required=False, choices=())
    pair = forms.ChoiceField(required=False, choices=())
    model = forms.ChoiceField(required=False, choices=())
    who = forms.ChoiceField(required=False, choices=(), label="Who")

    def __init__(self, *args, statuses, kinds, codecs, pairs, models, usernames, **kwargs):
        super().__init__(*args, **kwargs)
        any_ = [("", "any")]
        self.fields["status"].choices = any_ + list(statuses)
        self.fields["kind"].choices = any_ + list(kinds)
        self.fields["codec"].choices = any_ + [(c, c) for c in codecs]
        self.fields["pair"].choices = any_ + [(str(p.pk), p.name) for p in pairs]
        self.fields["model"].choices = any_ + [(str(m.pk), m.name) for m in models]
        self.fields["who"].choices = any_ + [(u, u) for u in usernames]

    def filters(self) -> dict:
        data = self.cleaned_data
        filters = {key: data[key] for key in ("q", "codec", "pair", "model", "who") if data.get(key)}
        for key in ("status", "kind"):
            if data.get(key):
                filters[key] = [data[key]]
        return filters


def _trains_on_text(codec_config: dict) -> bool:
    """Does this codec config read calibration text while compressing (BitDelta with steps > 0)?"""
    try:
        return modelcodecs.get_codec(codec_config).calibration_tokens() > 0
    except modelcodecs.ModelCodecError:
        return True  # let job_submit give the config error


class GradientSetPathForm(forms.Form):
    name = forms.CharField(max_length=200)
    path = forms.CharField(max_length=1024, help_text="A folder of gradient *.safetensors files (one per step) on "
                                                      "the server, inside your team's folders.")


class GradientCompressForm(forms.Form):
    """Compress a gradient set: LM-GC with the built-in prior or a registered causal LM, or a baseline."""

    CODECS = (("lmgc", "LM-GC"), ("zstd", "zstd -19 (baseline)"))
    codec = forms.ChoiceField(choices=CODECS)
    prior = forms.ModelChoiceField(queryset=None, required=False, empty_label="built-in context model",
                                   help_text="LM-GC only: a registered causal LM as the prior (slow on a CPU).")

    def __init__(self, *args, models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["prior"].queryset = models

    def codec_config(self) -> dict:
        return {"id": "zstd", "level": 19} if self.cleaned_data["codec"] == "zstd" else {"id": "lmgc"}
