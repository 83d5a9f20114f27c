"""Finding a toolbox image and what it was built for, without loading the build machinery."""

from __future__ import annotations

import json
import os

from handcar.crashcart.errors import CrashcartError

DEFAULT_PREFIX = "/dev/crashcart"


class ImageInfo:
    def __init__(self, path: str, prefix: str, fs_format: str, tools: list[str]) -> None:
        self.path = path
        self.prefix = prefix
        self.fs_format = fs_format
        self.tools = tools


def default_cache_dir() -> str:
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "crashcart")
    if os.geteuid() == 0:
        return "/var/cache/crashcart"
    return os.path.join(os.path.expanduser("~"), ".cache", "crashcart")


def read_image_info(image: str) -> ImageInfo:
    """The sidecar JSON written beside each image: its mount point, format and tools."""
    base, ext = os.path.splitext(image)
    fs_format = "squashfs" if ext in (".squashfs", ".sqfs") else "erofs"
    try:
        with open(base + ".json") as f:
            meta = json.load(f)
        return ImageInfo(image, str(meta["prefix"]), str(meta["format"]), list(meta["tools"]))
    except (OSError, ValueError, KeyError):
        return ImageInfo(image, DEFAULT_PREFIX, fs_format, [])


def current_image(cache_dir: str) -> str | None:
    """The image the last `crashcart build` made, which sessions use by default."""
    link = os.path.join(cache_dir, "current")
    if os.path.islink(link):
        target = os.path.join(cache_dir, os.readlink(link))
        if os.path.isfile(target):
            return target
    return None


def find_image(path: str | None) -> ImageInfo | None:
    """The image at `path`, else the current one; None when nothing has been built yet."""
    if path:
        if not os.path.isfile(path):
            raise CrashcartError(f"{path}: no such image")
        return read_image_info(os.path.abspath(path))
    found = current_image(default_cache_dir())
    if found:
        return read_image_info(found)
    return None
