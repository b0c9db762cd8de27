"""The README's Quick start and `.ci/run` stay in step (CI must run the README's test line)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_has_two_lines_using_a_local_venv() -> None:
    lines = quick_start_lines()
    assert len(lines) == 2
    assert all(line.startswith("python3 -m venv .venv && .venv/bin/pip install") for line in lines)
    assert lines[0].endswith("sdparta demo")
    assert "pytest" in lines[1]


def test_ci_runs_the_readme_test_line() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert quick_start_lines()[1] in ci.splitlines()
