"""The `wirelab bench` group: instant help, and option lists that match the scenarios."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from wirelab.bench import commands, lb, multiplex, slowloris, upload, versions
from wirelab.bench.fanout import IMPLS
from wirelab.clients import TRANSPORTS


def test_help_imports_no_scenario() -> None:
    """`wirelab bench --help` must stay instant: only click is loaded until a command runs."""
    code = (
        "import sys; from wirelab.cli import main\n"
        "try: main(['bench', '--help'])\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('rich', 'httpx', 'psutil', 'websockets', 'PIL', 'wirelab.bench.notify',"
        " 'wirelab.bench.upload', 'wirelab.bench.retry', 'wirelab.bench.lb', 'wirelab.bench.impair')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_option_lists_match_the_scenarios() -> None:
    assert commands.TRANSPORTS == TRANSPORTS
    assert commands.IMPLS == IMPLS
    assert tuple(upload.MODES) == commands.UPLOAD_MODES
    assert lb.IMPLS == commands.LB_IMPLS
    assert slowloris.IMPLS == commands.SLOWLORIS_IMPLS
    assert versions.IMPLS == commands.VERSIONS_IMPLS
    assert tuple(mode.name for mode in multiplex.MODES) == commands.MULTIPLEX_MODES
    assert multiplex.SERVERS == commands.MULTIPLEX_SERVERS


def test_an_unknown_transport_is_a_usage_error() -> None:
    result = CliRunner().invoke(commands.bench, ["notify", "--transports", "get,carrier-pigeon"])
    assert result.exit_code == 2
    assert "choose from get, short, long, sse, ws" in result.output


def test_an_unknown_upload_mode_or_size_is_a_usage_error() -> None:
    result = CliRunner().invoke(commands.bench, ["upload", "--modes", "single,carrier-pigeon"])
    assert result.exit_code == 2 and "choose from single, tus-1m" in result.output
    result = CliRunner().invoke(commands.bench, ["upload", "--size", "12KiB"])
    assert result.exit_code == 2 and "below the smallest allowed, 1MiB" in result.output


def test_a_fault_rate_outside_0_to_1_is_a_usage_error() -> None:
    result = CliRunner().invoke(commands.bench, ["retry", "--fault-rate", "1.5"])
    assert result.exit_code == 2 and "--fault-rate" in result.output
