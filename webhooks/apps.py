from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from lifecycle import delivery
        from webhooks.services import WebhookDeliveryBackend

        delivery.register(WebhookDeliveryBackend())
