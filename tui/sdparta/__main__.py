"""Allow ``python -m sdparta``."""

from sdparta.cli import main

raise SystemExit(main())
