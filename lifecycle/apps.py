from django.apps import AppConfig


class LifecycleConfig(AppConfig):
    name = "lifecycle"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from lifecycle import keycache
        from lifecycle.models import ApiKey, Project
        from orchestrator import telemetry

        telemetry.setup()
        # Requests read keys and their projects from each process's memory (lifecycle.keycache): a change
        # saved through the ORM anywhere (the API, the admin, a command) makes every process read them again.
        for model in (ApiKey, Project):
            post_save.connect(keycache.changed, sender=model, dispatch_uid=f"keycache-save-{model.__name__}")
            post_delete.connect(keycache.changed, sender=model, dispatch_uid=f"keycache-delete-{model.__name__}")
