"""Multicast discovery, INF over multicast and an address change, inside a
private network namespace (``unshare -rn``): only a loopback interface, so
the multicast group 224.0.23.0:3610 is the test's own and nothing leaves the
machine.  The scenario runs in a child process (tests/lan_netns_scenario.py)
and reports what happened as JSON.

Where user namespaces are not allowed (some containers, hardened kernels) the
test skips and says why; the unicast tests (test_lan.py) still run.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from support import PYTHON, TESTS, subprocess_env


def netns_refusal():
    """Why a private network namespace cannot be made here, or None."""
    if shutil.which("unshare") is None:
        return "no 'unshare' command (util-linux)"
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        return "network namespaces are not allowed here: %s" % (probe.stderr.strip() or probe.returncode)
    return None


@pytest.fixture(scope="module")
def scenario():
    """Run the scenario once for this module's tests; its JSON result."""
    reason = netns_refusal()
    if reason:
        pytest.skip(reason)
    done = subprocess.run(["unshare", "-rn", PYTHON, str(TESTS / "lan_netns_scenario.py")],
                          capture_output=True, text=True, timeout=50, env=subprocess_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_multicast_discovery_inf_and_address_change_in_a_private_network_namespace(scenario):
    # found by multicast alone (no address configured), each at its own address
    assert scenario["discovered"] == {"026B01": "127.0.0.2", "027D01": "127.0.0.3", "027901": "127.0.0.4"}
    # the battery's CF change came as a multicast INF and was recorded, no extra poll
    assert scenario["inf"] == {"notifications": 1, "requests": 3}
    # the solar node moved without announcing itself: found again by rediscovery after one timeout
    assert scenario["moved"]["address"] == "127.0.0.9"
    assert scenario["moved"]["timeouts"] == 1 and scenario["moved"]["requests_at_new"] >= 2


def test_pychonet_discovers_the_simulated_nodes_by_multicast(scenario):
    if scenario["pychonet"] == "not installed":
        pytest.skip("pychonet is not installed (requirements-dev.txt: Python >= 3.10)")
    assert scenario["pychonet"] == {"127.0.0.2": ["026B01"], "127.0.0.3": ["027D01"], "127.0.0.9": ["027901"]}
