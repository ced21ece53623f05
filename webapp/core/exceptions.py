class ApplicationError(Exception):
    """A broken business rule. The API answers 400 with ``{"message": ..., "extra": {...}}``."""

    def __init__(self, message: str, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
