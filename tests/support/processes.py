"""The rig's process helpers under their old import path, kept only for tests/ui until its
own rig moves onto tests/support/rig (the console's work in progress); everything else
imports tests.support.rig.processes."""

from tests.support.rig.processes import ProcessGroup, ServiceProcess, free_port, launch

__all__ = ["ProcessGroup", "ServiceProcess", "free_port", "launch"]
