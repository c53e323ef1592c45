"""Sluice's Airflow provider: BizMicroServices calling TechMicroServices by name through the
Sluice directory (the seed's operators, sensor and task group).

Import them from `sluice_airflow.biz`, as the seed does from `coworks.biz`:

    from sluice_airflow.biz import biz, TechMicroServiceOperator, TechMicroServiceAsyncGroup
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager lists for this package (it imports nothing of Airflow's)."""
    return {
        "package-name": "sluice-airflow",
        "name": "Sluice",
        "description": "Call services by name through the Sluice directory and await their async calls.",
        "versions": [__version__],
    }
