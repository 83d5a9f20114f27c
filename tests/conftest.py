"""Registers the shared fixtures for every directory below; their code lives in harness.py,
which tests import by name (several directories have a conftest.py, so `from conftest import`
would be ambiguous)."""

from harness import _require_root, hc, hx, make_config, open_rootfs, rootfs, runc  # noqa: F401
