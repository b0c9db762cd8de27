"""Media: sources (test pattern, tone, camera, microphone), sinks (one mixer → sound card / WAV,
latest-frame video slot), audio analysis, and the frame → terminal cells renderer.

Modules, not re-exports, so importing the renderer does not pull in aiortc.  No textual here.
"""
