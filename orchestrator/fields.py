"""Request fields that accept exactly what the OpenAPI schema says, nothing DRF would coerce."""

from __future__ import annotations

from rest_framework import serializers


class StrictUUIDField(serializers.UUIDField):
    """A UUID as a string. (DRF's own also takes integers, and so ``false`` as UUID 0.)"""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false``. (DRF's own also takes 0, 1, "yes", "on"...)"""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictCharField(serializers.CharField):
    """A JSON string, as given. (DRF's own also takes numbers and trims whitespace.)"""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
