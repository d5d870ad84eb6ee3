"""Fixtures of the acceptance tests shared between modules."""

from tests.acceptance.test_launch import slurm  # noqa: F401 (the real Slurm cluster fixture)
