"""Suite-wide settings: a time limit on every test CI runs, so a hang fails one test with its traceback instead of
holding the whole run until CI's own limit (a forked DataLoader worker once did that).

Host tests (``tests/host/``) run through a real ComfyUI on this CPU and some legitimately take many minutes: they get
no limit. A test that needs another limit says so with ``@pytest.mark.timeout(seconds)``.
"""

from __future__ import annotations

import pathlib

import pytest

HOST_TESTS = pathlib.Path(__file__).parent / "host"
LIMIT_S = 900  # the slowest CI test (the toy study's memorise rung) takes about 2 minutes here; 900 s is a backstop


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("timeout"):  # pytest-timeout not installed (requirements-dev.txt has it)
        return
    for item in items:
        if not item.path.is_relative_to(HOST_TESTS) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LIMIT_S))
