"""Find codecs by id. Built-in codecs register in the package ``__init__`` (those that need numpy or torch by the
name of their class, imported when first used: a command starts without them); plug-ins use the entry-point group
``modelcodecs.codecs``."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .abc import Codec
from .errors import ConfigError, UnknownCodecError

ENTRY_POINT_GROUP = "modelcodecs.codecs"

codec_registry: dict[str, type[Codec]] = {}
_deferred: dict[str, str] = {}  # codec id -> "module:Class", imported when first asked for
_entry_points_loaded = False


def register_codec(cls: type[Codec], codec_id: str | None = None) -> type[Codec]:
    codec_registry[codec_id or cls.codec_id] = cls
    return cls


def register_deferred(codec_id: str, target: str) -> None:
    """Register the codec class ``target`` ("package.module:Class") under ``codec_id`` without importing it yet."""
    _deferred[codec_id] = target


def _load_deferred(codec_id: str) -> None:
    target = _deferred.get(codec_id)
    if target is not None and codec_id not in codec_registry:
        module, name = target.split(":")
        register_codec(getattr(import_module(module), name), codec_id)


def entry_points(*, group: str):
    """``importlib.metadata.entry_points``, imported only when an id is not built in (it costs start-up time)."""
    from importlib.metadata import entry_points as installed

    return installed(group=group)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in codec_registry:
            register_codec(entry.load(), entry.name)


def get_codec_class(codec_id: str) -> type[Codec]:
    _load_deferred(codec_id)
    if codec_id not in codec_registry:
        _load_entry_points()
    try:
        return codec_registry[codec_id]
    except KeyError:
        raise UnknownCodecError(codec_id) from None


def get_codec(config: dict[str, Any] | str) -> Codec:
    """Build a codec from ``{"id": ..., **options}`` or a bare id (all defaults)."""
    if isinstance(config, str):
        config = {"id": config}
    if not isinstance(config, dict) or not isinstance(config.get("id"), str):
        raise ConfigError("a codec config is a JSON object with a string 'id'")
    return get_codec_class(config["id"]).from_config(config)


def list_codecs() -> list[type[Codec]]:
    for codec_id in list(_deferred):
        _load_deferred(codec_id)
    _load_entry_points()
    return [codec_registry[key] for key in sorted(codec_registry)]
