"""Loaded by every Python process a test starts (this directory is first on PYTHONPATH, set by
tests/conftest.py): installs the network guard of ``tests/support/netguard.py``, then runs any other
``sitecustomize`` the interpreter would have loaded. A guard that cannot be installed is logged as a
violation, so the test that started the process fails instead of running unguarded."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _install() -> None:
    path = os.path.join(os.path.dirname(_HERE), "netguard.py")
    spec = importlib.util.spec_from_file_location("sdparta_test_netguard", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.install()


def _chain() -> None:
    """Run the sitecustomize this directory shadows, if there is one."""
    others = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None and spec.origin != __file__:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if os.environ.get("SDPARTA_NETGUARD") == "1":
    try:
        _install()
    except Exception as exc:  # never run unguarded without saying so
        log = os.environ.get("SDPARTA_NETGUARD_LOG")
        sys.stderr.write(f"netguard: could not guard {sys.argv[:3]}: {exc!r}\n")
        if log:
            import json

            with open(log, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[:6], "what": "install failed",
                                    "target": repr(exc)}) + "\n")
_chain()
