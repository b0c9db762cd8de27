"""The suite-wide network guard (tests/support/netguard.py): what it lets through and what it stops,
in this process and in the processes tests start.

Attempts that would leave the machine if the guard were broken run only where they cannot: as UDP
``connect`` (which sends nothing) in this process, and everything else in a child process inside a
fresh network namespace with no interface up (``unshare -n``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import netguard

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    assert netguard._policy is not None
    netguard._policy.allowed.clear()
    yield
    netguard._policy.allowed.clear()


def blocked(address: tuple[str, int], family: int = socket.AF_INET) -> bool:
    with netguard.expected_violations():
        try:
            netguard.check_address(address, family)
        except netguard.NetGuardError as exc:
            assert address[0] in str(exc) and "blocked" in str(exc)
            return True
    return False


def test_the_guard_is_installed_here_and_for_children() -> None:
    assert netguard.installed()
    assert socket.socket.connect.__qualname__.endswith("connect") and socket.socket.connect.__module__ == \
        netguard.__name__
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(netguard.SITE_DIR)
    assert os.environ[netguard.ENV_ACTIVE] == "1" and Path(os.environ[netguard.ENV_LOG]).exists()


def test_what_is_local(fresh_cache: None) -> None:
    for address in [("127.0.0.1", 80), ("127.8.9.10", 1), ("0.0.0.0", 9), ("224.0.0.251", 5353)]:
        assert not blocked(address), address
    for address in [("::1", 80), ("::", 9), ("ff02::fb", 5353), ("::ffff:127.0.0.1", 80)]:
        assert not blocked(address, socket.AF_INET6), address
    own = netguard.own_addresses()
    assert own, "no interface addresses found in /proc/net"
    for ip in own:
        assert not blocked((str(ip), 5000), socket.AF_INET6 if ip.version == 6 else socket.AF_INET), ip
    assert not blocked(("/tmp/x.sock", 0), socket.AF_UNIX)  # not an IP address family: not ours to judge


def test_what_is_not(fresh_cache: None) -> None:
    own = {str(ip) for ip in netguard.own_addresses()}
    candidates = [("8.8.8.8", 53), ("192.0.2.1", 9), ("10.0.1.2", 8787), ("203.0.113.1", 8787),
                  ("198.51.100.2", 1), ("224.0.0.251", 80), ("239.255.255.250", 1900), ("255.255.255.255", 67)]
    for address in candidates:
        if address[0] not in own:
            assert blocked(address), address
    for address in [("2001:4860:4860::8888", 53), ("fe80::1%lo", 1), ("ff02::1", 5353)]:
        if address[0].split("%")[0] not in own:
            assert blocked(address, socket.AF_INET6), address


def test_a_namespace_a_test_made_may_reach_the_labs_networks(fresh_cache: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netguard.ENV_HOME_NETNS, "net:[1]")  # as inside `ip netns exec <lab namespace>`
    for address in [("10.0.1.2", 8787), ("172.20.0.1", 1), ("192.168.1.1", 1), ("203.0.113.1", 8787),
                    ("198.51.100.2", 3478)]:
        assert not blocked(address), address
    assert not blocked(("fe80::1%eth0", 1), socket.AF_INET6)
    for address in [("8.8.8.8", 53), ("1.1.1.1", 443), ("100.64.0.1", 1)]:
        assert blocked(address), address


def test_names_resolve_only_when_the_answer_is_local() -> None:
    policy = netguard._policy
    assert policy is not None
    for name in ("localhost", "LOCALHOST.", "anything.localhost", socket.gethostname()):
        assert policy.name_allowed(name), name
    for name in ("relay.damus.io", "stun.l.google.com", "portal.example", "example.invalid"):
        assert not policy.name_allowed(name), name
    assert socket.getaddrinfo("localhost", 80)  # /etc/hosts: no DNS query


def test_loopback_and_own_addresses_work_for_real(fresh_cache: None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname(), timeout=5) as client:
        conn, _ = server.accept()
        client.sendall(b"hi")
        assert conn.recv(2) == b"hi"
        conn.close()
    for ip in netguard.own_addresses():  # ICE sends to this machine's own interface addresses
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if ip.version == 6 and ip.is_link_local:
            continue  # needs a scope id
        with socket.socket(family, socket.SOCK_DGRAM) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
            rx.bind((str(ip), 0))
            rx.settimeout(5)
            tx.sendto(b"ice", rx.getsockname())
            assert rx.recv(3) == b"ice"


def test_connecting_elsewhere_raises_and_is_logged() -> None:
    """A UDP connect sends nothing, so this is safe even if the guard were broken."""
    for address in [("8.8.8.8", 53), ("192.0.2.1", 9)]:
        with netguard.expected_violations() as seen, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(netguard.NetGuardError, match=f"connect to {address[0]}:{address[1]} blocked"):
                s.connect(address)
            assert s.connect_ex(("127.0.0.1", 9)) == 0  # the same socket may still go local
        assert [(r["what"], r["target"]) for r in seen] == [("connect to", f"{address[0]}:{address[1]}")]
        assert seen[0]["pid"] == os.getpid()


def _unshare_missing() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare(1) (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare -n` (a network namespace, CAP_SYS_ADMIN) is not permitted here: {probe.stderr.strip()}"
    return None


CHILD = textwrap.dedent('''
    import asyncio, json, socket, sys
    results = {"guarded": "sdparta_test_netguard" in sys.modules}

    def attempt(name, fn):
        try:
            fn()
            results[name] = "no error"
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}"

    def tcp(address):
        with socket.socket() as s:
            s.settimeout(2)
            s.connect(address)

    def udp_send(address):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", address)

    attempt("tcp 192.0.2.1", lambda: tcp(("192.0.2.1", 9)))
    attempt("tcp 8.8.8.8", lambda: tcp(("8.8.8.8", 53)))
    attempt("tcp 10.0.1.2", lambda: tcp(("10.0.1.2", 8787)))
    attempt("udp 8.8.8.8", lambda: udp_send(("8.8.8.8", 53)))
    attempt("create_connection", lambda: socket.create_connection(("8.8.8.8", 53), timeout=2).close())
    attempt("getaddrinfo", lambda: socket.getaddrinfo("relay.damus.io", 443))
    attempt("connect by name", lambda: tcp(("relay.damus.io", 443)))
    attempt("asyncio", lambda: asyncio.run(asyncio.open_connection("relay.damus.io", 443)))

    async def relay():
        from sdparta.nostr import Relay, RelayTimeouts
        client = Relay("wss://relay.damus.io/", timeouts=RelayTimeouts(backoff=(5, 5)))
        await client.start()
        for _ in range(500):
            if client.status().reason:
                break
            await asyncio.sleep(0.01)
        reason = client.status().reason
        await client.close()
        raise RuntimeError(reason)

    attempt("nostr relay", lambda: asyncio.run(relay()))
    print(json.dumps(results))
''')


def _run_child(env_home: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if env_home is not None:
        env[netguard.ENV_HOME_NETNS] = env_home
    with netguard.expected_violations() as seen:
        out = subprocess.run(["unshare", "-n", sys.executable, "-c", CHILD], capture_output=True, text=True,
                             env=env, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    results: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    results["_logged"] = json.dumps(sorted({r["target"] for r in seen}))
    return results


def test_a_child_process_carries_the_guard() -> None:
    if (reason := _unshare_missing()) is not None:
        pytest.skip(reason)
    results = _run_child("self")  # the child's own namespace counts as the suite's: the strict rules
    assert results.pop("guarded") is True
    logged = json.loads(results.pop("_logged"))
    for name, outcome in results.items():
        assert outcome.startswith(("NetGuardError", "ClientConnectorError", "RuntimeError")), (name, outcome)
        assert "netguard:" in outcome and "blocked" in outcome, (name, outcome)
    assert {"192.0.2.1:9", "8.8.8.8:53", "10.0.1.2:8787", "'relay.damus.io'"} <= set(logged)


def test_a_child_in_a_namespace_of_its_own_may_reach_the_lab_but_not_the_internet() -> None:
    if (reason := _unshare_missing()) is not None:
        pytest.skip(reason)
    results = _run_child(None)  # the suite's namespace differs from the child's: a lab namespace
    assert results["tcp 10.0.1.2"].startswith("OSError") and "netguard" not in results["tcp 10.0.1.2"]
    for name in ("tcp 8.8.8.8", "udp 8.8.8.8", "create_connection", "getaddrinfo", "tcp 192.0.2.1"):
        assert results[name].startswith("NetGuardError"), (name, results[name])


def test_children_started_like_the_bots_and_portals_are_guarded() -> None:
    """support/procs.py starts processes with the inherited environment (or a copy of it)."""
    code = "import sys; print('sdparta_test_netguard' in sys.modules)"
    inherited = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    copied = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SDPARTA_LOG": "INFO"})
    assert inherited.stdout.strip() == copied.stdout.strip() == "True", (inherited.stderr, copied.stderr)


def test_a_swallowed_violation_still_fails_the_test(tmp_path: Path) -> None:
    """Code under test that catches the guard's error (a pool marking a relay dead) must not hide it."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f'''
        import importlib.util, sys
        sys.path.insert(0, {str(TESTS)!r})
        spec = importlib.util.spec_from_file_location("suite_conftest", {str(TESTS / "conftest.py")!r})
        suite = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(suite)
        _network_guard = suite._network_guard
    '''))
    (tmp_path / "test_swallow.py").write_text(textwrap.dedent('''
        import socket

        def test_swallows():
            try:
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("8.8.8.8", 53))
            except OSError:
                pass  # "relay unreachable, try the next one"

        def test_clean():
            assert True
    '''))
    with netguard.expected_violations():
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                              str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "2 passed, 1 error" in out.stdout, out.stdout[-3000:]
    assert "ERROR test_swallow.py::test_swallows" in out.stdout
    assert "network guard: this test tried to reach hosts other than this machine" in out.stdout
    assert "connect to 8.8.8.8:53" in out.stdout
