"""`sdparta skydb get/set` against a real portal process, interoperating with the library."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sdparta.store import PortalClient
from sdparta.store.crypto import KeyPair
from sdparta.store.skydb import get_json, set_json
from support.procs import PortalProcess, free_port


def skydb(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``sdparta skydb ARGS`` with ``config`` as its config file (default: none at all)."""
    env = {**os.environ, "SDPARTA_CONFIG": str(config or Path("/nonexistent/sdparta-test-config.toml"))}
    return subprocess.run([sys.executable, "-m", "sdparta", "skydb", *args], capture_output=True, text=True,
                          timeout=60, env=env)


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
    bad_url = skydb("get", "--portal", "not-a-url", "--seed", "s", "k")  # a bad option: caught before any request
    assert bad_url.returncode == 2 and bad_url.stderr.startswith("sdparta skydb: --portal: 'not-a-url' is not a URL")


def test_the_portal_comes_from_the_config_file_when_not_given(portal: PortalProcess, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'portals = ["{portal.url}"]\n')
    done = skydb("set", "--seed", "cfg-seed", "k", '{"via": "config"}', config=config)
    assert done.returncode == 0, done.stderr
    assert library_get(portal.url, "cfg-seed", "k") == ({"via": "config"}, 0)
    done = skydb("get", "--seed", "cfg-seed", "k", config=config)
    assert done.returncode == 0 and json.loads(done.stdout) == {"via": "config"}, done.stderr


def test_no_portal_anywhere_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    done = skydb("get", "--seed", "s", "k", config=config)  # no file: the built-in local default is not guessed
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f'sdparta skydb: no portal: give --portal URL, or set portals = ["URL"] '
                                        f"in {config}"]
    config.write_text('name = "ana"\n')  # a config file without portals
    assert skydb("get", "--seed", "s", "k", config=config).returncode == 2
    config.write_text('portals = ["ftp://x"]\n')
    bad = skydb("get", "--seed", "s", "k", config=config)
    assert bad.returncode == 2 and "portals: 'ftp://x' is not a URL" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_cli_with_a_dead_second_portal(portal: PortalProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = skydb("set", "--portal", dead, "--portal", portal.url, "--seed", "multi", "k", '"both"')
    assert done.returncode == 0, done.stderr
    done = skydb("get", "--portal", portal.url, "--portal", dead, "--seed", "multi", "k")
    assert done.returncode == 0 and json.loads(done.stdout) == "both"
