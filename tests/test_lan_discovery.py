"""Multicast discovery, INF over multicast and an address change, inside a
private network namespace (``unshare -rn``): only a loopback interface, so
the multicast group 224.0.23.0:3610 is the test's own and nothing leaves the
machine.  The scenario runs in a child process (tests/lan_netns_scenario.py)
and reports what happened as JSON.  IPv6 (ff02::1, ::1, link-local
addresses) has its own scenario (tests/lan_netns_ipv6_scenario.py) on a veth
link, since Linux sends no IPv6 multicast over loopback.

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


def ipv6_netns_refusal():
    """Why the IPv6 scenario cannot run here, or None."""
    reason = netns_refusal()
    if reason:
        return reason
    if shutil.which("ip") is None:
        return "no 'ip' command (iproute2; tests/run.sh installs it)"
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link add v0 type veth peer name v1 && "
                            "test -e /proc/sys/net/ipv6/conf/v0"], capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        return "no veth link or no IPv6 in a network namespace here: %s" % (probe.stderr.strip() or "no IPv6")
    return None


@pytest.fixture(scope="module")
def ipv6_scenario():
    """tests/lan_netns_ipv6_scenario.py in its own namespace; its JSON result."""
    reason = ipv6_netns_refusal()
    if reason:
        pytest.skip(reason)
    done = subprocess.run(["unshare", "-rn", PYTHON, str(TESTS / "lan_netns_ipv6_scenario.py")],
                          capture_output=True, text=True, timeout=50, env=subprocess_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ipv6_unicast_to_loopback_and_to_a_link_local_address_with_its_interface(ipv6_scenario):
    unicast = ipv6_scenario["unicast"]
    assert unicast["devices"] == {"027D01": "::1", "027901": "fe80::12%v0"}
    assert unicast["soc"] == [50] and unicast["answers"] == 2 and unicast["timeouts"] == 0


def test_ipv6_multicast_discovery_on_every_interface_and_inf_recorded_once(ipv6_scenario):
    found = ipv6_scenario["all_interfaces"]
    assert found["discovered"] == {"026B01": "fd00::2", "027D01": "fd00::3", "027901": "fd00::4"}
    assert found["links"] == ["lo", "v0", "v1"]
    # the battery's CF change came as one multicast INF, heard on v0 and v1, recorded once, no extra poll
    assert found["inf"] == {"notifications": 1, "requests": 3, "cf_records": 1}


def test_ipv6_multicast_discovery_on_the_interface_of_a_link_local_address(ipv6_scenario):
    found = ipv6_scenario["one_interface"]
    assert found["discovered"] == {"026B01": "fd00::2", "027D01": "fd00::3", "027901": "fd00::4"}
    assert found["links"] == ["v0"]
