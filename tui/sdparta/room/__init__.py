"""The room protocol (docs/protocol.md): keys, wire format, slots, presence and the session."""
