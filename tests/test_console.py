"""The console scripts' entry points: a Ctrl-C while torch is still importing is one line and exit 130."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest

from langbrt import console

SCRIPTS = {e.name: e.value for e in distribution("langbrt").entry_points if e.group == "console_scripts"}


def test_the_entry_module_imports_nothing_heavy():
    probe = "import sys, langbrt.console; print(sorted({'torch', 'numpy', 'PIL'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_while_importing_is_one_line_and_exit_130(signal_name):
    """The signal lands mid-import (here: the command's module sends it to itself and keeps importing); the
    process ends at once from the handler, never with a half-imported C extension's traceback."""
    done = _infer_in_a_child(f"""
        os.kill(os.getpid(), signal.{signal_name})
        time.sleep(30)
        raise SystemExit('still importing after the signal')
    """)
    assert (done.returncode, done.stderr) == (130, "langbrt-infer: interrupted while starting\n")


def _infer_in_a_child(importing: str, before: str = "") -> subprocess.CompletedProcess[str]:
    """Run `console.infer()` in a fresh interpreter whose import of the command's module runs `importing`
    (a function body) instead; `before` runs first, before langbrt is imported."""
    probe = "\n".join([
        "import importlib, os, signal, time",
        textwrap.dedent(before),
        "from langbrt import console",
        "def importing(name, package=None):",
        textwrap.indent(textwrap.dedent(importing).strip("\n"), "    "),
        "importlib.import_module = importing",
        "raise SystemExit(console.infer())",
    ])
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=20)


COMMAND_MODULES = {"langbrt-serve": "langbrt.runtime.cli_serve", "langbrt-export": "langbrt.export.cli",
                   "langbrt-infer": "langbrt.runtime.cli_infer", "langbrt-bench": "langbrt.runtime.cli_bench",
                   "langbrt-train": "langbrt.training.cli_train", "langbrt-eval": "langbrt.training.cli_eval"}


def test_the_installed_scripts_are_the_six_commands():
    assert sorted(SCRIPTS) == sorted(COMMAND_MODULES)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_runs_its_own_commands_main(script, monkeypatch):
    module_name, function = SCRIPTS[script].split(":")
    assert module_name == "langbrt.console"
    called = []
    real_import = importlib.import_module

    def fake_import(name: str, package: str | None = None):
        module = real_import(name, package)
        if name.startswith("langbrt."):  # not the imports the command's own modules make
            monkeypatch.setattr(module, "main", lambda: called.append(name) or 0)
        return module

    monkeypatch.setattr(importlib, "import_module", fake_import)
    assert getattr(console, function)() == 0
    assert called == [COMMAND_MODULES[script]]


def test_the_package_still_exports_its_public_names():
    import langbrt

    assert {name: getattr(langbrt, name).__name__ for name in langbrt.__all__} == {n: n for n in langbrt.__all__}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        langbrt.nope  # noqa: B018


def test_a_signal_the_parent_ignores_stays_ignored():
    """`cmd &` in a script starts with SIGINT ignored; the command must keep ignoring it, importing or running."""
    done = _infer_in_a_child("""
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        def main():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            return 0
        return type('M', (), {'main': staticmethod(main)})
    """, before="signal.signal(signal.SIGINT, signal.SIG_IGN)")
    assert (done.returncode, done.stderr) == (0, "")


def test_sigterm_is_handled_like_ctrl_c_so_commands_clean_up(monkeypatch):
    """`kill` or `docker stop` must run the same cleanup as Ctrl-C (temporary files removed), not die."""
    import signal

    handlers = []
    monkeypatch.setattr(signal, "signal", lambda signum, handler: handlers.append((signum, handler)))
    monkeypatch.setattr(importlib, "import_module", lambda name, package=None: type("M", (), {"main": lambda: 0}))
    assert console.infer() == 0
    assert handlers[-2:] == [(signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.default_int_handler)]


def test_serve_interrupted_while_its_server_stack_imports_is_one_line(monkeypatch, capsys):
    """langbrt-serve imports uvicorn and FastAPI only after binding its port, past the console's guard."""
    import builtins

    from langbrt.runtime import cli_serve

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "uvicorn":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert cli_serve.main(["--port", "0"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["langbrt-serve: interrupted while starting"]


def test_serve_without_its_extra_installed_is_one_line_naming_the_extra_before_binding(monkeypatch, capsys):
    """A plain `pip install langbrt` has no uvicorn: one line naming `langbrt[serve]`, not "listening on ..."
    followed by a ModuleNotFoundError traceback (QA, 2026-11-26)."""
    from langbrt.runtime import cli_serve

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "uvicorn" else real_find_spec(name, *args))
    monkeypatch.setattr(cli_serve, "_bind", lambda host, port: pytest.fail("bound a port without a server to run"))
    assert cli_serve.main(["--port", "0"]) == cli_serve.EXIT_NOT_SERVING
    assert capsys.readouterr().err.strip().splitlines() == [
        "langbrt-serve: error: the server needs the serve extra (uvicorn not installed): pip install 'langbrt[serve]'"]


def test_a_path_with_undecodable_bytes_prints_escaped_on_a_strict_utf8_stdout():
    """A command that prints a file name holding non-UTF-8 bytes (Python's lone surrogates) must not end in
    UnicodeEncodeError after its work is done when stdout is strict UTF-8 (QA, 2026-11-26)."""
    code = textwrap.dedent("""
        import sys, types
        sys.modules["fake_cli"] = types.SimpleNamespace(main=lambda: print("wrote bad\\udcff.png") or 0)
        from langbrt.console import _run
        sys.exit(_run("fake_cli", "fake"))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"wrote bad\\udcff.png\n"


def test_run_command_turns_sigterm_into_ctrl_c_so_a_python_m_command_cleans_up():
    """torchrun starts the README's multi-GPU training as `-m langbrt.training.cli_train` and forwards a
    SIGTERM to its workers: under `run_command` it lands as KeyboardInterrupt, which every command cleans up
    on (QA, 2026-11-26: the workers died with checkpoints and sample images half written)."""
    code = textwrap.dedent("""
        import os, signal, sys, time
        from langbrt.console import run_command
        def main():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
            except KeyboardInterrupt:
                print("cleaned up")
                return 130
        sys.exit(run_command(main))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (130, "cleaned up\n"), done.stderr


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_command_run_as_python_m_goes_through_run_command(script):
    """Each command module's `__main__` block calls its main through `run_command`, as its script does."""
    source = Path(importlib.util.find_spec(COMMAND_MODULES[script]).origin).read_text()
    assert "run_command(main)" in source.split('if __name__ == "__main__":')[-1], script
