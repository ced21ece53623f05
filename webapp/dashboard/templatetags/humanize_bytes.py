from django import template

register = template.Library()


@register.filter
def bytes(value):  # noqa: A001 - the template name reads best as "bytes"
    """1536 -> "1.5 KiB"."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@register.filter
def intcomma_plain(value):
    """1234567 -> "1,234,567" (without django.contrib.humanize)."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return value


@register.filter
def metric_key(value):
    """"mb_per_s" -> "mb per s" (as the live page script shows it)."""
    return str(value).replace("_", " ")


@register.filter
def metric_value(value):
    """Numbers rounded for reading, containers as JSON (as the live page script shows them)."""
    import json

    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)
