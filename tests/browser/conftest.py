"""Browser tests: a Huddle node and headless Chromium in a network namespace of their own.

These tests never skip. Without root (for ``ip netns``), without /usr/bin/chromium or without
Playwright they fail and say what to install: ``scripts/setup.sh --dev`` provides all three.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.harness import NamespacedNode, namespaced_node, require_browser_environment
from tests.browser.netns import NetworkNamespace, network_namespace


@pytest.fixture
def netns() -> Iterator[NetworkNamespace]:
    require_browser_environment()
    with network_namespace() as ns:
        yield ns


@pytest.fixture
def ns_node(netns: NetworkNamespace, tmp_path: Path) -> Iterator[NamespacedNode]:
    with namespaced_node(netns, tmp_path) as node:
        yield node
