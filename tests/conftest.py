"""Shared test plumbing. Integration tests use the real Docker Engine, real Unix users and a real
ds01d started hermetically under a temporary root (``ds01d --root``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
BIN = Path(sys.executable).parent  # the venv's bin: ds01d and every CLI command live here

os.environ.setdefault("HYPOTHESIS_PROFILE", "ci")
try:
    from hypothesis import settings

    settings.register_profile("ci", deadline=None, max_examples=200)
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
except ImportError:  # pragma: no cover
    pass

# cluster mode (issue 18): one Slurm test cluster and one cluster-mode head per session, shared by
# tests/cluster and tests/security (defined once here, so it is brought up once)
from tests.cluster.fixtures import cluster, slurm_cluster  # noqa: E402,F401
