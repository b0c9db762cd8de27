"""The Textual terminal client (renders engine snapshots; no network here)."""

from sdparta.ui.app import SdpartaApp, run_join_app

__all__ = ["SdpartaApp", "run_join_app"]
