"""Error notifications (seed node S2): Slack, Datadog Events, New Relic events."""

from app.notify.events import ErrorEvent
from app.notify.service import Notifier

__all__ = ["ErrorEvent", "Notifier"]
