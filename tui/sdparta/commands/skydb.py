"""``sdparta skydb get|set``: SkyDB JSON from the command line (like skynet-js db.getJSON/setJSON)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from sdparta.config import ConfigError, config_path, load_settings
from sdparta.store import Store, StoreError, open_store
from sdparta.store.crypto import KeyPair
from sdparta.store.skydb import get_json, set_json


def run(args: argparse.Namespace) -> int:
    """``--portal`` URLs, else the config file's ``portals``; 2 when neither names one."""
    try:
        portals = args.portal or configured_portals()
    except ConfigError as exc:
        print(f"sdparta skydb: config error: {exc}", file=sys.stderr)
        return 2
    if not portals:
        print(f"sdparta skydb: no portal: give --portal URL, or set portals = [\"URL\"] in {config_path()}",
              file=sys.stderr)
        return 2
    if args.skydb_command == "get":
        return run_get(portals, args.seed, args.key)
    return run_set(portals, args.seed, args.key, args.json)


def configured_portals() -> list[str]:
    """The config file's portals; [] when the file names none (the built-in default portal is for
    calls on this machine: skydb debugs a portal you name, so it is not guessed)."""
    settings = load_settings()
    return list(settings["portals"]) if settings.sources["portals"].startswith("config file") else []


def _run(portals: list[str], action: str, work: Any) -> int:
    """Open the store, run ``work(store)``, map every failure to a message and exit code 1."""

    async def main() -> int:
        store = open_store(portals)
        try:
            result: int = await work(store)
            return result
        finally:
            await store.aclose()

    try:
        return asyncio.run(main())
    except ValueError as exc:  # bad portal URL or key
        print(f"skydb {action}: {exc}", file=sys.stderr)
    except StoreError as exc:
        print(f"skydb {action} failed: {exc}", file=sys.stderr)
    return 1


def run_get(portals: list[str], seed: str, key: str) -> int:
    """``sdparta skydb get``: print the JSON value stored under (seed, key) on stdout."""

    async def work(store: Store) -> int:
        result = await get_json(store, KeyPair.from_seed(seed).public_key, key)
        if result is None:
            print(f"skydb get: no value for key {key!r} under this seed on {', '.join(portals)}",
                  file=sys.stderr)
            return 1
        print(json.dumps(result.data, ensure_ascii=False))
        return 0

    return _run(portals, "get", work)


def run_set(portals: list[str], seed: str, key: str, json_text: str) -> int:
    """``sdparta skydb set``: store the JSON text under (seed, key); the revision goes to stderr."""
    try:
        value = json.loads(json_text, parse_constant=_refuse_constant)
    except ValueError as exc:
        print(f"skydb set: the value is not valid JSON ({exc}); quote it for the shell, "
              """e.g. '{"a": 1}'""", file=sys.stderr)
        return 1

    async def work(store: Store) -> int:
        revision = await set_json(store, KeyPair.from_seed(seed), key, value)
        print(f"stored {key!r} at revision {revision}", file=sys.stderr)
        return 0

    return _run(portals, "set", work)


def _refuse_constant(name: str) -> float:
    """NaN and Infinity are not JSON (Python's parser accepts them by default)."""
    raise ValueError(f"{name} is not valid JSON")
