from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operators' console: the Django admin over every app. It sits above lifecycle and webhooks
    (it may read both and call their services); nothing imports it."""

    name = "console"
    verbose_name = "Operations console"
