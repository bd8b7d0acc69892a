"""The pipeline fixture (real scheduler and sender processes, the stub) for the Prometheus run."""

from tests.pipeline.conftest import pipeline  # noqa: F401 - re-exported as a fixture
