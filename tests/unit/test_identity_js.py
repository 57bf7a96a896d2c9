"""The web app's twin of the dev login's ``slug_identity`` (huddle/web/app/identity.js) gives the
same identity for every name: the app turns "Bob" typed in New chat into the identity "Bob"
signs in as, or the message goes to an identity nobody has."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from signaling.auth import slug_identity

ROOT = Path(__file__).resolve().parents[2]
IDENTITY_JS = ROOT / "huddle" / "web" / "app" / "identity.js"

# Where Python's and JavaScript's strings could part: case mappings that grow a letter or end
# in ASCII (İ, the Kelvin sign), whitespace one language trims and the other does not, letters
# beyond the BMP (two UTF-16 units), and the 128-character cut.
NAMES = [
    "Bob",
    "Ada Lovelace",
    "  Ada   Lovelace  ",
    "Bob.Smith@Example.com",
    "a+b:c_d",
    "a/b\\c",
    "Émile Zola!",
    "--x--",
    "李雷",
    "张三 Bob",
    "Алиса",
    "한국",  # Hangul syllables: NFKD makes them jamo
    "नमस्ते",  # vowel signs are marks
    "\u0663x",  # an Arabic-Indic digit
    "x\u0301y",  # a lone combining accent
    "a--b",
    "\U00020000",  # a CJK ideograph beyond the BMP
    "!!!",
    "",
    " ",
    "İstanbul",
    "\u212aelvin",
    "STRASSE Straße",
    "ΣΊΣΥΦΟΣ",
    "ǅemal",
    "ﬁne",
    "\uff22\uff4f\uff42",  # fullwidth Bob
    "\u3000Bob\u3000",
    "\ufeffbob",
    "\x1fbob\x1c",
    "bob\u200b",
    "\u0085bob\u00a0",
    "😀 Ada 😀",
    "\U0001d400da",  # a mathematical bold A
    "tab\tand\nnewline",
    "a" * 300,
    "a" * 127 + " b",
    "é" * 200 + "x",
]


def test_the_apps_slug_identity_is_the_dev_logins() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (20 or newer) is needed for the SDK's tests: apt-get install nodejs")
    script = (
        "import { readFileSync } from 'node:fs';"
        f"const {{ slugIdentity }} = await import({json.dumps(IDENTITY_JS.as_uri())});"
        "const names = JSON.parse(readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(names.map(slugIdentity)));"
    )
    result = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=json.dumps(NAMES),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    got = dict(zip(NAMES, json.loads(result.stdout), strict=True))
    assert got == {name: slug_identity(name) for name in NAMES}
