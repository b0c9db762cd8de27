"""The headless layers never import textual (DESIGN §2): `sdparta bot` must run without a UI."""

from __future__ import annotations

import subprocess
import sys


def test_headless_layers_do_not_import_textual() -> None:
    code = (
        "import sys\n"
        "import sdparta.engine.call, sdparta.room.session, sdparta.store, sdparta.media.sinks, "
        "sdparta.media.sources, sdparta.commands.bot, sdparta.portal.server\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"textual imported by a headless layer: {out.stdout}"
