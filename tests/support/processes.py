"""Run the real service processes for end-to-end tests (moved to tests.support.rig.processes;
these names stay importable from here)."""

from tests.support.rig.processes import ProcessGroup, ServiceProcess, free_port, launch

__all__ = ["ProcessGroup", "ServiceProcess", "free_port", "launch"]
