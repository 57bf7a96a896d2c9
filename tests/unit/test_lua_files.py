"""Redis Lua scripts live in `.lua` files (package data), each documenting KEYS and ARGV."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("signaling", "chat", "media_store", "calls", "sfu")


def lua_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).glob("lua/*.lua"))


def test_every_script_documents_its_keys_and_argv_at_the_top() -> None:
    assert lua_files(), "no .lua files found"
    for path in lua_files():
        text = path.read_text()
        header = []
        for line in text.splitlines():
            if not line.startswith("--"):
                break
            header.append(line)
        head = "\n".join(header)
        uses_keys = re.search(r"\bKEYS\[", text) is not None
        uses_argv = re.search(r"\bARGV\[", text) is not None
        assert header, f"{path}: no comment header"
        if uses_keys:
            assert "KEYS" in head, f"{path}: KEYS used but not documented at the top"
        if uses_argv:
            assert "ARGV" in head, f"{path}: ARGV used but not documented at the top"


def test_every_script_file_is_loaded_by_its_package() -> None:
    for path in lua_files():
        package = path.parent.parent
        sources = "\n".join(p.read_text() for p in package.rglob("*.py"))
        loaded = re.search(rf"lua_script\(\s*\"{package.name}\",\s*\"{path.stem}\"", sources)
        assert loaded, f"{path} is not loaded anywhere in {package.name}/"


def test_scripts_load_as_package_data() -> None:
    from signaling.lua import lua_script

    for path in lua_files():
        assert lua_script(path.parent.parent.name, path.stem) == path.read_text()


# Packages whose Python holds no Lua: every script is a .lua file.
LUA_FREE = ("chat", "media_store", "signaling", "calls")


def test_no_lua_inside_python_sources() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for pkg in LUA_FREE
        for path in sorted((ROOT / pkg).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bredis\.p?call\(", line)
    ]
    assert not found, f"Lua in Python sources (move it to PACKAGE/lua/NAME.lua): {found}"
