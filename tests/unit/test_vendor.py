"""Vendored browser code (huddle/web/vendor/) is exactly the published package file its
README names, with its licence beside it, and loads nothing from another host."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[2] / "huddle" / "web" / "vendor"


def test_each_vendored_package_has_a_licence_and_a_readme_naming_its_digest() -> None:
    packages = [p for p in VENDOR.iterdir() if p.is_dir()]
    assert packages, "no vendored packages"
    for package in packages:
        assert (package / "LICENSE").is_file(), package
        readme = (package / "README.md").read_text()
        named = dict(re.findall(r"sha256 of (\S+): ([0-9a-f]{64})", readme))
        scripts = sorted(p.name for p in package.glob("*.js"))
        assert sorted(named) == scripts, (package, named, scripts)
        for name, digest in named.items():
            assert hashlib.sha256((package / name).read_bytes()).hexdigest() == digest, name


def test_tus_client_is_version_4_3_1_and_names_no_other_host() -> None:
    script = (VENDOR / "tus-js-client" / "tus.min.js").read_text()
    assert "tus-js-client 4.3.1" in (VENDOR / "tus-js-client" / "README.md").read_text()
    assert not re.findall(r"https?://[A-Za-z0-9.-]+", script)
