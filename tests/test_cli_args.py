"""The CLIs share one error-line format, and the argparse ones the same `--device` / `--precision` vocabulary."""

from __future__ import annotations

import pytest

from langbrt.runtime.backends.base import PRECISIONS
from langbrt.runtime.cli_bench import build_parser as bench_parser
from langbrt.runtime.cli_infer import build_parser as infer_parser
from langbrt.runtime.cli_serve import build_parser as serve_parser

PARSERS = {"langbrt-infer": (infer_parser, ["img.png"]), "langbrt-bench": (bench_parser, []),
           "langbrt-serve": (serve_parser, [])}


@pytest.mark.parametrize("prog", PARSERS)
@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1"])
def test_every_device_a_backend_accepts_is_accepted(prog: str, device: str) -> None:
    build, positional = PARSERS[prog]
    assert build().parse_args([*positional, "--device", device]).device == device


@pytest.mark.parametrize("prog", PARSERS)
@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:one", "cpu:0", "cuda:99999999999999999999"])
def test_a_bad_device_is_one_usage_line(prog: str, device: str, capsys: pytest.CaptureFixture[str]) -> None:
    build, positional = PARSERS[prog]
    with pytest.raises(SystemExit) as exited:
        build().parse_args([*positional, "--device", device])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"{prog}: error: argument --device: '{device}' is not a device: use cpu, cuda or cuda:N")
    assert err.rstrip().endswith(f"(see {prog} --help)")


@pytest.mark.parametrize("prog", ["langbrt-infer", "langbrt-serve"])
def test_only_precisions_a_backend_runs_are_offered(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    build, positional = PARSERS[prog]
    for precision in PRECISIONS:
        assert build().parse_args([*positional, "--precision", precision]).precision == precision
    with pytest.raises(SystemExit) as exited:
        build().parse_args([*positional, "--precision", "bf16"])
    assert exited.value.code == 2 and "invalid choice: 'bf16'" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--timeout-s", "--max-body-mb", "--max-inflight-body-mb", "--body-timeout-s"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "ten"])
def test_serve_number_flags_refuse_what_no_limit_can_be(flag: str, value: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`nan` slipped past every `<= 0` check (a nan body timeout answered every upload 408 at once), and
    `inf` overflowed int() in a traceback."""
    with pytest.raises(SystemExit) as exited:
        serve_parser().parse_args([flag, value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert f"argument {flag}: must be a finite number > 0, got {value}" in err


def test_a_zero_delay_is_allowed_but_not_a_negative_or_nan_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_parser().parse_args(["--max-delay-ms", "0"]).max_delay_ms == 0.0
    for value in ("-1", "nan"):
        with pytest.raises(SystemExit):
            serve_parser().parse_args(["--max-delay-ms", value])
        assert "must be a finite number >= 0" in capsys.readouterr().err


def test_a_device_this_machine_lacks_is_one_line_naming_what_it_has(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from langbrt.devices import require_device
    from langbrt.errors import LangBRTInputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LangBRTInputError, match=r"--device cuda:1: PyTorch sees no CUDA GPU on this machine; use "
                                                r"--device cpu"):
        require_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(LangBRTInputError, match=r"--device cuda:2: this machine has 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        require_device("cuda:2")
    assert require_device("cuda:1") == torch.device("cuda", 1) and require_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["mps", "xpu", "meta"])
def test_a_device_type_other_than_cpu_or_cuda_is_one_input_error(name: str) -> None:
    """From Python (`Retoucher.load(device="mps")`), where no argparse pattern checks the name first; 'mps' on a
    build without it used to end in torch's RuntimeError from deep inside the model load (QA)."""
    from langbrt.devices import require_device
    from langbrt.errors import LangBRTInputError

    with pytest.raises(LangBRTInputError, match=f"--device {name}: LangBRT runs on cpu, cuda or cuda:N"):
        require_device(name)


def test_eval_takes_the_same_device_names(capsys: pytest.CaptureFixture[str]) -> None:
    from click.testing import CliRunner

    from langbrt.training.cli_eval import main

    result = CliRunner().invoke(main, ["--model", "m", "--device", "cuda:99999999999"])
    assert result.exit_code == 2 and "is not a device: use cpu, cuda or cuda:N" in result.output
    assert result.output.count("\n") == 1


def test_serve_refuses_a_device_this_machine_lacks_as_a_flag_error(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from langbrt.runtime.cli_serve import _check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parser = serve_parser()
    with pytest.raises(SystemExit) as exited:
        _check(parser.parse_args(["--device", "cuda"]), parser)
    assert exited.value.code == 2 and "--device cuda: PyTorch sees no CUDA GPU" in capsys.readouterr().err


def test_an_error_line_is_prog_error_message_on_one_line_whatever_the_message_holds() -> None:
    from langbrt.cli_errors import error_line, usage_error_line

    assert error_line("langbrt-x", "first\nsecond") == "langbrt-x: error: first second"
    assert usage_error_line("langbrt-x", "--n must be 1+") == "langbrt-x: error: --n must be 1+ (see langbrt-x --help)"


@pytest.mark.parametrize(("token", "env", "named"), [
    ("", None, "argument --token: is empty"),
    ("caf\u00e9", None, "argument --token: must be printable ASCII"),
    ("two words", None, "argument --token: must be printable ASCII"),
    (None, "caf\u00e9", "LANGBRT_SERVE_TOKEN must be printable ASCII"),
])
def test_serve_refuses_a_token_no_request_could_send(token: str | None, env: str | None, named: str,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """QA: `--token "$TOKEN"` with the variable unset served the API to anyone; a non-ASCII token was never matched
    (clients send header values as Latin-1), so every request was 401."""
    from langbrt.runtime.cli_serve import TOKEN_ENV, _check

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(TOKEN_ENV, env)
    parser = serve_parser()
    with pytest.raises(SystemExit) as exited:
        _check(parser.parse_args([] if token is None else ["--token", token]), parser)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and named in err and err.count("\n") == 1


def test_serve_takes_its_token_from_the_environment_when_no_flag_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from langbrt.runtime.cli_serve import TOKEN_ENV, _check

    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    parser = serve_parser()
    args = parser.parse_args([])
    _check(args, parser)
    assert args.token == "s3cret-token"
    args = parser.parse_args(["--token", "from-flag"])
    _check(args, parser)
    assert args.token == "from-flag"
