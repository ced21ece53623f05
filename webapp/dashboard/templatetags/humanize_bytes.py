from django import template

from webapp.jobs.metrics import format_bytes
from webapp.jobs.metrics import metric_rows as _metric_rows

register = template.Library()


@register.filter
def bytes(value):  # noqa: A001 - the template name reads best as "bytes"
    """1536 -> "1.5 KiB"."""
    return format_bytes(value)


@register.filter
def intcomma_plain(value):
    """1234567 -> "1,234,567" (without django.contrib.humanize)."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return value


@register.filter
def metric_rows(metrics):
    """A job's metrics as labelled rows with units (``webapp.jobs.metrics``), as the live page shows them."""
    return _metric_rows(metrics)
