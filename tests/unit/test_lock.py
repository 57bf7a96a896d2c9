"""The lock files agree with pyproject.toml and with what is installed.

`scripts/lock.sh` writes `requirements/base.lock` (what the node needs) and
`requirements/dev.lock` (plus the test, lint and benchmark extras); `scripts/setup.sh` installs
from them alone. These checks fail when a range in pyproject.toml is changed without
re-locking, when a lock holds a package nothing asks for, or when the environment the tests run
in was not installed from the lock.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)==([^\s;\\]+)")


def read_lock(name: str) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    for number, line in enumerate(lines):
        match = PIN.match(line)
        if match is None:
            continue
        package = canonicalize_name(Requirement(match.group(1)).name)
        assert package not in pins, f"{name}: {package} pinned twice"
        pins[package] = Version(match.group(2))
        following = lines[number + 1] if number + 1 < len(lines) else ""
        assert "--hash=sha256:" in following, f"{name}: {package} has no hash"
    assert pins, f"{name} pins nothing"
    return pins


def read_inputs(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    texts: list[str] = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    build_in = (ROOT / "requirements" / "build.in").read_text().splitlines()
    texts += [line for line in build_in if line.strip() and not line.startswith("#")]
    return [Requirement(text) for text in texts]


# scripts/lock.sh resolves for the lowest 3.11 (--python-version 3.11), so markers such as
# `python_full_version < "3.11.3"` count as true whatever 3.11 runs the tests.
LOCKED_FOR = {"python_version": "3.11", "python_full_version": "3.11.0"}


def applies(requirement: Requirement, extras: Iterable[str] = ()) -> bool:
    if requirement.marker is None:
        return True
    marker = requirement.marker
    return any(marker.evaluate({**LOCKED_FOR, "extra": extra}) for extra in ("", *extras))


def closure(roots: list[Requirement]) -> set[str]:
    """Every distribution the roots need, from the installed packages' own metadata."""
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [
        (canonicalize_name(r.name), frozenset(r.extras)) for r in roots if applies(r)
    ]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if applies(requirement, extras):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return seen


@pytest.mark.parametrize(("lock", "extras"), [("base.lock", ()), ("dev.lock", ("dev", "bench"))])
def test_lock_pins_every_requirement_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    pins = read_lock(lock)
    for requirement in read_inputs(*extras):
        if not applies(requirement):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is in pyproject.toml but not in {lock}: re-lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, outside pyproject.toml's {requirement}: re-lock"
        )


@pytest.mark.parametrize(("lock", "extras"), [("base.lock", ()), ("dev.lock", ("dev", "bench"))])
def test_lock_holds_exactly_what_the_requirements_need(lock: str, extras: tuple[str, ...]) -> None:
    pins = set(read_lock(lock))
    needed = closure(read_inputs(*extras))
    assert not needed - pins, f"needed but not in {lock}: {sorted(needed - pins)}"
    assert not pins - needed, f"in {lock} but needed by nothing: {sorted(pins - needed)}"


def test_dev_lock_keeps_the_base_lock_versions() -> None:
    base, dev = read_lock("base.lock"), read_lock("dev.lock")
    differ = {name: (str(v), str(dev.get(name))) for name, v in base.items() if dev.get(name) != v}
    assert not differ, f"dev.lock moves base.lock's versions: {differ}"


def test_environment_is_installed_from_the_lock() -> None:
    wrong = {}
    for name, version in read_lock("dev.lock").items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong[name] = (str(version), "missing")
            continue
        if installed != version:
            wrong[name] = (str(version), str(installed))
    assert not wrong, f"installed differs from dev.lock (run scripts/setup.sh --dev): {wrong}"


def test_aiortc_and_its_srtp_binding_stay_pinned_exactly() -> None:
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        if requirement.name in ("aiortc", "pylibsrtp"):
            specs = list(requirement.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", text
