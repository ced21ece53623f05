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
