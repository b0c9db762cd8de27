"""The embedded Skynet-API-compatible portal (``sdparta portal``)."""
