from __future__ import annotations

from lifecycle.models import Lifecycle
from webhooks.models import Delivery


def deliveries_with_attempts(*, lifecycle: Lifecycle) -> list[Delivery]:
    return list(Delivery.objects.filter(lifecycle=lifecycle).select_related("endpoint").prefetch_related("attempts"))
