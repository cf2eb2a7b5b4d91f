"""The producer's Lua scripts, shipped as package data in producer/lua/*.lua.

    load_lua("store_versions.lua", "store_next_version.lua")

joins the named files into one script (the first ones hold helpers the last one uses).
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def load_lua(*names: str) -> str:
    """The text of the named scripts of producer/lua, joined in order."""
    folder = resources.files(__package__ or "producer").joinpath("lua")
    return "\n".join(folder.joinpath(name).read_text(encoding="utf-8") for name in names)
