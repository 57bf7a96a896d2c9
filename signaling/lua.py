"""Redis Lua scripts are `.lua` files in a `lua/` folder beside the package that runs them,
shipped as package data; each documents its KEYS and ARGV at the top."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def lua_script(package: str, name: str) -> str:
    """The text of `PACKAGE/lua/NAME.lua`, read once."""
    return files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
