"""The codec registry and the typed config every codec shares (codecs/abc.py, codecs/registry.py)."""

import json
from importlib.metadata import EntryPoint

import pytest

import modelcodecs
from modelcodecs import registry
from modelcodecs.abc import Param
from modelcodecs.baselines import ZstdCodec
from modelcodecs.errors import ConfigError, UnknownCodecError


class PluginCodec(ZstdCodec):
    codec_id = "test-plugin"


def test_builtin_codecs_are_registered_with_capabilities():
    by_id = {cls.codec_id: cls for cls in modelcodecs.list_codecs()}
    assert {"fmdelta", "zstd", "xor-zstd"} <= set(by_id)
    assert by_id["fmdelta"].lossless and by_id["fmdelta"].needs_base
    assert by_id["zstd"].lossless and not by_id["zstd"].needs_base


def test_get_codec_from_id_and_config():
    assert modelcodecs.get_codec("zstd") == ZstdCodec()
    codec = modelcodecs.get_codec({"id": "zstd", "level": 7})
    assert codec.level == 7
    assert modelcodecs.get_codec(json.loads(json.dumps(codec.get_config()))) == codec


def test_unknown_codec_is_a_value_error_naming_the_id():
    with pytest.raises(UnknownCodecError, match="no-such-codec") as info:
        modelcodecs.get_codec({"id": "no-such-codec"})
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("config, message", [
    ({"id": "zstd", "level": 0}, "level: must be >= 1"),
    ({"id": "zstd", "level": 99}, "level: must be <= 19"),
    ({"id": "zstd", "level": "3"}, "level: expected int"),
    ({"id": "zstd", "level": True}, "level: expected int"),
    ({"id": "zstd", "lvl": 3}, "unknown option"),
    ({"id": "fmdelta", "context": "bogus"}, "context: must be one of"),
    ({"level": 3}, "string 'id'"),
    ("", "unknown codec"),
])
def test_invalid_configs_are_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        modelcodecs.get_codec(config)


def test_config_schema_describes_every_param_for_forms():
    schema = modelcodecs.get_codec_class("fmdelta").config_schema()
    assert schema["title"] == "fmdelta" and schema["x-lossless"] is True and schema["x-needs-base"] is True
    assert schema["properties"]["context"]["enum"] == ["exponent", "none"]
    assert schema["properties"]["chunk_elements"] == {
        "type": "integer", "default": 1 << 20, "minimum": 4096, "maximum": 1 << 26,
        "description": schema["properties"]["chunk_elements"]["description"]}
    json.dumps(schema)  # JSON-serialisable for the REST API


def test_float_params_accept_ints_but_not_nan():
    param = Param("scale", float, 1.0, "a scale", minimum=0.0)
    assert param.validate(2) == 2.0 and isinstance(param.validate(2), float)
    with pytest.raises(ConfigError, match="finite"):
        param.validate(float("nan"))


def test_plugins_are_found_through_the_entry_point_group(monkeypatch):
    entry = EntryPoint(name="test-plugin", value=f"{__name__}:PluginCodec", group=registry.ENTRY_POINT_GROUP)

    def fake_entry_points(*, group):
        return [entry] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "codec_registry", dict(registry.codec_registry))
    assert isinstance(modelcodecs.get_codec("test-plugin"), PluginCodec)
    assert PluginCodec in modelcodecs.list_codecs()
