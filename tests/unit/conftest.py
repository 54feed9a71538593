"""Unit tests import the collection's module_utils the way the driver does."""

import pytest
from release_rollback import content


@pytest.fixture(scope="session")
def mu():
    class _MU:
        stages = content.module_utils("stages")
        plan = content.module_utils("plan")
        manifest = content.module_utils("manifest")
        releases = content.module_utils("releases")
        audit = content.module_utils("audit")
        flagd = content.module_utils("flagd")
        report = content.module_utils("report")

    return _MU
