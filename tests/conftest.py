"""Registers the shared fixtures; their code lives in harness.py, which tests import by name
(several directories have a conftest.py, so `from conftest import` would be ambiguous)."""

from harness import _require_root, hc, make_config, rootfs  # noqa: F401
from helpers_exec import hx, xrootfs  # noqa: F401, E402
from helpers_security import open_rootfs  # noqa: F401, E402
