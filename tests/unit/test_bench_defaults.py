"""The benchmark runs the guard with the guard's own defaults, and says so from the settings model."""

from __future__ import annotations

import contextlib
import inspect
import io

import pytest

from bench import association_cpu, idle, move
from bench.__main__ import parse_args
from bench.runs import BenchConfig
from guard.config.settings import ForwardSettings, NodeSettings


def test_benchmark_workers_default_is_the_guards_default() -> None:
    """Without --workers, the benchmark's guard forwards with forward.workers' default, not a number of its own."""
    expected = ForwardSettings().workers
    assert parse_args([]).workers == expected
    assert BenchConfig().workers == expected


def test_benchmark_forward_nice_default_is_the_guards_default() -> None:
    """Without --forward-nice, the benchmark's guard forwards at forward.nice's default priority."""
    expected = ForwardSettings().nice
    assert parse_args([]).forward_nice == expected
    assert parse_args(["--forward-nice", "0"]).forward_nice == 0
    assert BenchConfig().forward_nice == expected


def test_benchmark_help_states_the_guards_default() -> None:
    """``python -m bench --help`` names the default number of workers the settings model has."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        parse_args(["--help"])
    flat = " ".join(text.getvalue().split())
    assert f"guard forwarding workers (default {ForwardSettings().workers}, the guard's default" in flat


def test_benchmark_runs_the_listener_as_the_guard_does_by_default() -> None:
    """Without --listener-process / --no-listener-process, every benchmark's guard has node.listener_process's default."""
    expected = NodeSettings().listener_process
    assert parse_args([]).listener_process is expected
    assert parse_args(["--no-listener-process"]).listener_process is False
    assert BenchConfig().listener_process is expected
    for function in (association_cpu.measure, idle.run_idle, move.run_through_guard):
        assert inspect.signature(function).parameters["listener_process"].default is expected, function.__qualname__
