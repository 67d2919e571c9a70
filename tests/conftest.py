"""Every test runs the plain NumPy steps unless it asks for native.py's compiled
loops (tests/test_native.py does, and checks them against the plain steps bit
for bit): a batch must not switch paths halfway through a test because a
background compile finished, and tests of windows.py or diagonal.py must not be
bypassed by a loop."""

import pytest


@pytest.fixture(autouse=True)
def _plain_steps(monkeypatch):
    monkeypatch.setenv("DIFFCLI_NATIVE", "0")
