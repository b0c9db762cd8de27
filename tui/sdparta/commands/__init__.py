"""One module per ``sdparta`` command; each has ``run(args) -> exit code``.

``sdparta.cli`` parses the command line and calls ``sdparta.commands.<command>.run``; the commands
never import the CLI. Options shared by the commands that join a room are in ``options``.
"""
