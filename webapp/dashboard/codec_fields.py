"""Build Django form fields from a codec's ``config_schema()`` (JSON Schema of its keyword arguments), so the job
form offers every registered codec's options without knowing the codec."""

from __future__ import annotations

from typing import Any

from django import forms


def field_name(codec_id: str, param: str) -> str:
    return f"cfg__{codec_id}__{param}"


def schema_field(name: str, prop: dict[str, Any]) -> forms.Field:
    """One form field for one JSON Schema property (integer / number / boolean / string, optional enum)."""
    kind = prop.get("type")
    default = prop.get("default")
    common: dict[str, Any] = {"label": name.replace("_", " "), "help_text": prop.get("description", ""),
                              "initial": default}
    if "enum" in prop:
        choices = [(value, str(value)) for value in prop["enum"]]
        coerce = {"integer": int, "number": float, "boolean": lambda v: v in (True, "True", "true")}.get(kind, str)
        return forms.TypedChoiceField(choices=choices, coerce=coerce, required=default is None, **common)
    if kind == "boolean":
        return forms.BooleanField(required=False, **common)
    if kind == "integer":
        return forms.IntegerField(min_value=prop.get("minimum"), max_value=prop.get("maximum"),
                                  required=default is None, **common)
    if kind == "number":
        field = forms.FloatField(min_value=prop.get("minimum"), max_value=prop.get("maximum"),
                                 required=default is None, **common)
        field.widget.attrs["step"] = "any"
        return field
    return forms.CharField(required=default is None, **common)


def codec_form_fields(schema: dict[str, Any], codec_id: str) -> dict[str, forms.Field]:
    return {field_name(codec_id, param): schema_field(param, prop)
            for param, prop in schema.get("properties", {}).items()}


def codec_config_from(cleaned: dict[str, Any], codec_id: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The codec config ``{"id": ..., **options}`` from a form's cleaned data (only options the user gave)."""
    config: dict[str, Any] = {"id": codec_id}
    for param in schema.get("properties", {}):
        value = cleaned.get(field_name(codec_id, param))
        if value is None or value == "":
            continue
        config[param] = value
    return config
