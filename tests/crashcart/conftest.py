"""Registers crashcart's fixtures; tests import helpers from .crashcart_fixtures."""

from .crashcart_fixtures import (  # noqa: F401
    busybox_rootfs,
    container,
    crashcart,
    image_cache,
    runc_container,
    unchanged,
)
