"""Every model module, imported so that Base.metadata is complete (Alembic, tests)."""

from app.airlock.models import AirlockConnector, AsyncCall, AsyncCallLog, WebhookSecret
from app.clients.models import ApiClient
from app.commlog.models import CommLog
from app.db import Base
from app.directory.models import DirectoryService
from app.orders.models import Order, SyncPeer
from app.throttling.models import ThrottlingConfig, ThrottlingRuntime

__all__ = [
    "AirlockConnector",
    "ApiClient",
    "AsyncCall",
    "AsyncCallLog",
    "Base",
    "CommLog",
    "DirectoryService",
    "Order",
    "SyncPeer",
    "ThrottlingConfig",
    "ThrottlingRuntime",
    "WebhookSecret",
]
