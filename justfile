# sdparta developer commands (the README's Quick start does the same without just)

venv := ".venv"
py := venv / "bin/python"

# create the virtual environment with test dependencies
setup:
    python3 -m venv {{venv}}
    {{venv}}/bin/pip install -q -e '.[test]'

# a portal, two bots and the app, all local
demo: setup
    {{venv}}/bin/sdparta demo

# the whole test suite
test: setup
    {{py}} -m pytest -q -ra

# benchmark figures (writes the table to docs/benchmarks.md)
bench: setup
    {{py}} tests/bench/run.py --write docs/benchmarks.md

# ruff and the layer contracts (import-linter, see pyproject.toml)
lint: setup
    {{venv}}/bin/ruff check tui tests
    {{venv}}/bin/lint-imports
