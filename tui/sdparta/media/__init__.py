"""Media: sources (camera, microphone, test pattern, tone), sinks (mixer → device/WAV, latest video
frame), analysis helpers, and the frame → terminal cells renderer.  No textual imports here."""
