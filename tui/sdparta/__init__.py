"""sdparta: terminal WebRTC mesh calls signalled through decentralized storage."""

__version__ = "0.1.0"
