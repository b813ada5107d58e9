"""The hostward agent: collectors -> detectors -> enforcers/transport, run by ``runtime.Agent``.

The agent imports only ``hostward.wire`` and ``hostward.core`` (never the manager) and keeps its import
set small (stdlib, pydantic, httpx, psutil) so that an idle agent stays well under its memory budget.
"""

from hostward import __version__ as AGENT_VERSION

__all__ = ["AGENT_VERSION"]
