"""Every model module, imported so that Base.metadata is complete (Alembic, tests)."""

from app.clients.models import ApiClient
from app.commlog.models import CommLog
from app.db import Base

__all__ = ["ApiClient", "Base", "CommLog"]
