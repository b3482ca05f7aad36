"""Security promises run as real users against the real engine: the integration fixtures."""

from tests.integration.conftest import (base_image, daemon, docker_client, projects,  # noqa: F401
                                        pytest_runtest_makereport)
