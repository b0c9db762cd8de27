"""`sdparta skydb get/set` against a real portal process, interoperating with the library."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from sdparta.store import PortalClient
from sdparta.store.crypto import KeyPair
from sdparta.store.skydb import get_json, set_json
from support.procs import PortalProcess, free_port


def skydb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sdparta", "skydb", *args], capture_output=True, text=True,
                          timeout=60)


def library_get(url: str, seed: str, key: str) -> Any:
    async def run() -> Any:
        store = PortalClient(url)
        try:
            return await get_json(store, KeyPair.from_seed(seed).public_key, key)
        finally:
            await store.aclose()

    return asyncio.run(run())


def library_set(url: str, seed: str, key: str, value: Any) -> int:
    async def run() -> int:
        store = PortalClient(url)
        try:
            return await set_json(store, KeyPair.from_seed(seed), key, value)
        finally:
            await store.aclose()

    return asyncio.run(run())


def test_cli_set_is_readable_by_the_library_and_back(portal: PortalProcess) -> None:
    done = skydb("set", "--portal", portal.url, "--seed", "cli-seed", "k", '{"n": [1, 2], "s": "ü"}')
    assert done.returncode == 0, done.stderr
    assert "revision 0" in done.stderr
    assert library_get(portal.url, "cli-seed", "k") == ({"n": [1, 2], "s": "ü"}, 0)
    assert library_set(portal.url, "cli-seed", "k", {"from": "library"}) == 1
    done = skydb("get", "--portal", portal.url, "--seed", "cli-seed", "k")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"from": "library"}
    again = skydb("set", "--portal", portal.url, "--seed", "cli-seed", "k", "[3]")
    assert again.returncode == 0 and "revision 2" in again.stderr


def test_cli_errors_are_messages_with_exit_1(portal: PortalProcess) -> None:
    missing = skydb("get", "--portal", portal.url, "--seed", "cli-seed", "missing")
    assert missing.returncode == 1 and "no value for key 'missing'" in missing.stderr and missing.stdout == ""
    bad_json = skydb("set", "--portal", portal.url, "--seed", "s", "k", "{bad")
    assert bad_json.returncode == 1 and "not valid JSON" in bad_json.stderr
    nan = skydb("set", "--portal", portal.url, "--seed", "s", "k", "NaN")
    assert nan.returncode == 1 and "not valid JSON" in nan.stderr
    dead = f"http://127.0.0.1:{free_port()}"
    down = skydb("get", "--portal", dead, "--seed", "s", "k")
    assert down.returncode == 1 and "unreachable" in down.stderr and "Traceback" not in down.stderr
    bad_url = skydb("get", "--portal", "not-a-url", "--seed", "s", "k")
    assert bad_url.returncode == 1 and "not a portal URL" in bad_url.stderr


def test_cli_with_a_dead_second_portal(portal: PortalProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = skydb("set", "--portal", dead, "--portal", portal.url, "--seed", "multi", "k", '"both"')
    assert done.returncode == 0, done.stderr
    done = skydb("get", "--portal", portal.url, "--portal", dead, "--seed", "multi", "k")
    assert done.returncode == 0 and json.loads(done.stdout) == "both"
