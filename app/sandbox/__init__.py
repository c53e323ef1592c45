"""The sandbox partner: a Tokopedia-style API for `make run`, demos and the test-suite."""

from app.sandbox.app import create_sandbox_app

__all__ = ["create_sandbox_app"]
