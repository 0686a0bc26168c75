"""Every entry point against one catalogue of bad inputs (`tests/bad_inputs.py`), table-driven.

The contract, whatever the entry point: awkward-but-valid inputs (1x1, grayscale, palette, RGBA, CMYK, 16-bit,
EXIF-rotated, non-ASCII prompts) WORK and come out upright at their own size; bad ones are refused with the
documented exit code or HTTP status and ONE clear line (never a traceback), which a command starts with
`PROG: error:` whichever command it is; no input file is ever modified.

Which cases reach which entry point, and why the others do not apply:
  images  -> infer, the Python API (load_image + Retoucher), serve, train (inside a source/target pair set).
             eval reads data folders through the very same `build_dataset` as train, so it is not repeated;
             export reads no image at all.
  prompts -> infer, the API, serve, export (--prompt bakes it). train and eval take no free-text prompt.
  model   -> infer, the API, serve, export, eval, bench, and train's --resume (its only model path).
  output  -> infer (-o), export (--output). serve, eval and the API write no files; train's unwritable
             --output is already pinned in test_train_cli.
  a disk that fills while writing -> every command that writes: infer, export, eval --out, bench --out,
             train. Not a bad input but the machine's failure: exit 4, one line, nothing half written left.
  SIGINT  -> infer on a folder: the one entry point that writes many files in one run.
Each console script also runs once as a real subprocess, so the installed entry point is checked too.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from bad_inputs import (
    BAD_IMAGES,
    IMAGE_CASES,
    MODEL_CASES,
    PROMPT_CASES,
    ImageCase,
    PromptCase,
    checksums,
    file_where_a_folder_is_expected,
)
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from langbrt import LangBRT, LangBRTConfig
from langbrt.errors import LangBRTError
from langbrt.export.cli import main as export_main
from langbrt.io import load_image
from langbrt.runtime import Retoucher
from langbrt.runtime.cli_bench import main as bench_main
from langbrt.runtime.cli_infer import main as infer_main
from langbrt.runtime.cli_serve import main as serve_main
from langbrt.runtime.serve_app import create_app
from langbrt.runtime.serve_config import ServeConfig
from langbrt.text import default_text_encoder
from langbrt.training.cli_eval import main as eval_main
from langbrt.training.cli_train import main as train_main

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN_FAST = ["--steps", "1", "--batch-size", "2", "--perceptual-weight", "0", "--semantic-weight", "0",
              "--adversarial-weight", "0", "--threads", "1", "--quiet", "--checkpoint-every", "1"]
OK = "ok"  # the API's "exit code" when nothing was raised


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and a training job shares this machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())  # MiniLM: any prompt encodes
    return model.save_pretrained(tmp_path_factory.mktemp("bad-inputs") / "tiny")


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[TestClient]:
    app = create_app(ServeConfig(model=str(checkpoint), device="cpu", max_delay_ms=0.0))
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.05)
        yield client


@dataclass
class Outcome:
    """What a user sees: an exit code / HTTP status / exception name, the error text, and any output image."""

    code: int | str
    err: str
    out: str = ""
    size: tuple[int, int] | None = None  # (W, H) of the output image, decoded
    prog: str | None = None  # the command that answered, if a command did: its error line starts "PROG: error:"


@dataclass
class Env:
    checkpoint: Path
    tmp: Path
    capsys: pytest.CaptureFixture[str]
    request: pytest.FixtureRequest

    @property
    def server(self) -> TestClient:
        return self.request.getfixturevalue("server")  # started only when a serve case runs


@pytest.fixture
def env(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> Env:
    return Env(checkpoint, tmp_path, capsys, request)


def _decoded_size(data: bytes | Path) -> tuple[int, int]:
    """(W, H) of a complete image; `Image.load` fails on a half-written one."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        img.load()
        return img.size


def _captured(env: Env, prog: str, code: int | str, size: tuple[int, int] | None = None) -> Outcome:
    captured = env.capsys.readouterr()
    return Outcome(code, captured.err, captured.out, size, prog)


def _infer(env: Env, *args: object, model: Path | None = None) -> Outcome:
    out = env.tmp / "results"
    argv = [*map(str, args), "--model", str(model or env.checkpoint), "--device", "cpu"]
    if "-o" not in argv:
        argv += ["-o", str(out)]
    try:
        code = infer_main(argv)
    except SystemExit as exit_:  # argparse
        code = int(exit_.code or 0)
    outputs = sorted(out.glob("*_retouched.*")) if out.is_dir() else []
    return _captured(env, "langbrt-infer", code, _decoded_size(outputs[0]) if len(outputs) == 1 else None)


def _api(env: Env, image: Path | None = None, prompts: list[str] | None = None, model: Path | None = None) -> Outcome:
    try:
        retoucher = Retoucher.load(model or env.checkpoint, device="cpu")
        loaded = load_image(image) if image is not None else torch.rand(3, 30, 48)
        [result] = retoucher.retouch([loaded], prompts)
    except LangBRTError as err:
        return Outcome(type(err).__name__, str(err))
    return Outcome(OK, "", size=(result.image.shape[2], result.image.shape[1]))


def _serve(env: Env, body: bytes, media_type: str, prompts: list[str] | None = None) -> Outcome:
    if prompts is None:
        response = env.server.post("/v1/retouch", content=body, headers={"content-type": media_type})
    else:
        response = env.server.post("/v1/retouch", files={"image": ("face.png", body, media_type)},
                                   data={"prompt": prompts})
    if response.status_code != 200:
        return Outcome(response.status_code, response.json()["error"]["message"])
    return Outcome(200, "", size=_decoded_size(response.content))


def _click(env: Env, command: Callable[..., None], *args: object) -> Outcome:
    with warnings.catch_warnings():  # the warning filters pytest installs would swallow them: let them print
        warnings.simplefilter("always")
        result = CliRunner().invoke(command, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a raw exception would be a traceback for the user
    return Outcome(result.exit_code, result.stderr, result.stdout, prog=command.name)


def _export(env: Env, *args: object, model: Path | None = None, output: Path | None = None) -> Outcome:
    if output is None:
        output = env.tmp / "exported" / "tiny.onnx"
        output.parent.mkdir(exist_ok=True)
    code = export_main(["--model", str(model or env.checkpoint), "--output", str(output), *map(str, args)])
    return _captured(env, "langbrt-export", code)


def _bench(env: Env, *args: object, model: Path) -> Outcome:
    code = bench_main(["--model", str(model), "--device", "cpu", "--seconds", "0.01", *map(str, args)])
    return _captured(env, "langbrt-bench", code)


def _assert_one_clear_line(outcome: Outcome, *names: str) -> None:
    """One line naming `names`; a command's failure (exit status > 0) says it in the form every command shares."""
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1, outcome.err
    assert all(name in lines[0] for name in names), (names, lines[0])
    if outcome.prog is not None and outcome.code != 0:
        assert lines[0].startswith(f"{outcome.prog}: error: "), lines[0]


def _assert_no_traceback(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.err + outcome.out


# ---------------------------------------------------------------------------------------------- images


def _image_infer(env: Env, path: Path, case: ImageCase) -> Outcome:
    return _infer(env, path)


def _image_api(env: Env, path: Path, case: ImageCase) -> Outcome:
    return _api(env, image=path)


def _image_serve(env: Env, path: Path, case: ImageCase) -> Outcome:
    return _serve(env, path.read_bytes(), case.media_type)


def _pair_folder(root: Path, path: Path) -> Path:
    """source/ and target/ with two good pairs and a third made of `path` on both sides."""
    data = root / "data"
    for side in ("source", "target"):
        (data / side).mkdir(parents=True)
        for name in ("a", "b"):
            Image.new("RGB", (32, 32), (150, 110, 95)).save(data / side / f"{name}.png")
        (data / side / path.name).write_bytes(path.read_bytes())
    return data


def _image_train(env: Env, path: Path, case: ImageCase, strict: bool = False) -> Outcome:
    data = _pair_folder(env.tmp, path)
    before = checksums(data)
    outcome = _click(env, train_main, "--data", data, "--output", env.tmp / "run", *TRAIN_FAST,
                     "--strict" if strict else "--no-strict")
    assert checksums(data) == before
    return outcome


def _image_train_strict(env: Env, path: Path, case: ImageCase) -> Outcome:
    return _image_train(env, path, case, strict=True)


# entry point -> (runner, its answer for a good image, its answer for a bad one)
IMAGE_ENTRIES: dict[str, tuple[Callable[[Env, Path, ImageCase], Outcome], object, Callable[[ImageCase], object]]] = {
    "infer": (_image_infer, 0, lambda case: 1),  # 1: a per-file failure, reported and skipped
    "api": (_image_api, OK, lambda case: "TooManyPixelsError" if case.status == 413 else "LangBRTInputError"),
    "serve": (_image_serve, 200, lambda case: case.status),
    "train": (_image_train, 0, lambda case: 0),  # skipped with a warning; the run goes on
    "train-strict": (_image_train_strict, 0, lambda case: 2),
}


# A good image trains the same with or without --strict, so only train-strict runs the good ones.
IMAGE_MATRIX = [pytest.param(entry, case, id=f"{entry}-{case}") for entry in IMAGE_ENTRIES for case in IMAGE_CASES
                if not (entry == "train" and case.ok)]


@pytest.mark.parametrize(("entry", "case"), IMAGE_MATRIX)
def test_every_image_case_is_handled_by_every_entry_point(env: Env, entry: str, case: ImageCase) -> None:
    run, good, bad = IMAGE_ENTRIES[entry]
    (env.tmp / "inputs").mkdir()
    path = case.build(env.tmp / "inputs")
    before = checksums(env.tmp / "inputs")
    outcome = run(env, path, case)
    _assert_no_traceback(outcome)
    if case.ok:
        assert outcome.code == good, outcome.err
        if entry.startswith("train"):
            assert "skipping" not in outcome.err, outcome.err
        else:
            assert outcome.size == case.size  # upright, full size: (W, H)
    else:
        assert outcome.code == bad(case), outcome.err
        names = {"serve": [], "train": ["Warning: skipping", path.name]}.get(entry, [path.name])
        _assert_one_clear_line(outcome, *names)
        assert outcome.size is None
    assert checksums(env.tmp / "inputs") == before


# ---------------------------------------------------------------------------------------------- prompts


def _prompt_infer(env: Env, text: str) -> Outcome:
    photo = env.tmp / "face.png"
    Image.new("RGB", (48, 30), (180, 130, 110)).save(photo)
    return _infer(env, photo, "--prompt", text)


def _prompt_api(env: Env, text: str) -> Outcome:
    return _api(env, prompts=[text])


def _prompt_serve(env: Env, text: str) -> Outcome:
    buf = io.BytesIO()
    Image.new("RGB", (48, 30), (180, 130, 110)).save(buf, format="PNG")
    return _serve(env, buf.getvalue(), "image/png", prompts=[text])


def _prompt_export(env: Env, text: str) -> Outcome:
    return _export(env, "--prompt", text, "--extra-prompt-slots", "0")


PROMPT_ENTRIES: dict[str, tuple[Callable[[Env, str], Outcome], object, object]] = {
    "infer": (_prompt_infer, 0, 2),
    "api": (_prompt_api, OK, "LangBRTInputError"),
    "serve": (_prompt_serve, 200, 422),
    "export": (_prompt_export, 0, 2),
}


@pytest.mark.parametrize("case", PROMPT_CASES, ids=str)
@pytest.mark.parametrize("entry", PROMPT_ENTRIES)
def test_every_prompt_case_is_handled_by_every_entry_point(env: Env, entry: str, case: PromptCase) -> None:
    run, good, bad = PROMPT_ENTRIES[entry]
    before = checksums(env.checkpoint)
    outcome = run(env, case.text)
    _assert_no_traceback(outcome)
    if case.ok:
        assert outcome.code == good, outcome.err
    else:
        assert outcome.code == bad, outcome.err
        _assert_one_clear_line(outcome, "prompt")
        assert not (env.tmp / "results").exists() and not list((env.tmp / "exported").glob("*"))
    assert checksums(env.checkpoint) == before


# ---------------------------------------------------------------------------------------------- models


def _model_infer(env: Env, model: Path) -> Outcome:
    photo = env.tmp / "face.png"
    Image.new("RGB", (48, 30)).save(photo)
    return _infer(env, photo, model=model)


def _model_serve(env: Env, model: Path) -> Outcome:
    """The app answers /healthz but never turns ready; /readyz says why (the CLI then exits 1)."""
    failures: list[str] = []
    app = create_app(ServeConfig(model=str(model), device="cpu"), on_load_failure=failures.append)
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while not failures and time.monotonic() < deadline:
            time.sleep(0.02)
        response = client.get("/readyz")
    return Outcome(response.status_code, response.json()["error"]["message"])


MODEL_ENTRIES: dict[str, tuple[Callable[[Env, Path], Outcome], object]] = {
    "infer": (_model_infer, 2),
    "api": (lambda env, model: _api(env, model=model), "LangBRTError"),
    "serve": (_model_serve, 503),
    "export": (lambda env, model: _export(env, model=model), 2),
    "eval": (lambda env, model: _click(env, eval_main, "--model", model, "--device", "cpu"), 2),
    "bench": (lambda env, model: _bench(env, model=model), 2),
    "train-resume": (lambda env, model: _click(env, train_main, "--resume", model, *TRAIN_FAST), 2),
}


@pytest.mark.parametrize("case", MODEL_CASES)
@pytest.mark.parametrize("entry", MODEL_ENTRIES)
def test_a_model_path_that_is_not_a_model_is_refused_by_every_entry_point(env: Env, entry: str, case: str) -> None:
    model = MODEL_CASES[case](env.tmp)
    before = checksums(model)
    run, expected = MODEL_ENTRIES[entry]
    outcome = run(env, model)
    _assert_no_traceback(outcome)
    if expected == "LangBRTError":
        assert outcome.code in ("CheckpointError", "LangBRTInputError"), outcome
    else:
        assert outcome.code == expected, outcome.err
    _assert_one_clear_line(outcome, model.name)
    assert checksums(model) == before


# ---------------------------------------------------------------------------------------------- outputs


def _output_infer(env: Env, output: Path) -> Outcome:
    return _infer(env, env.tmp / "face.png", "-o", output)


OUTPUT_ENTRIES: dict[str, tuple[Callable[[Env, Path], Outcome], int]] = {
    "infer": (_output_infer, 2),  # refused before any work starts
    "export": (lambda env, output: _export(env, output=output / "tiny.onnx"), 2),
}


@pytest.mark.parametrize("entry", OUTPUT_ENTRIES)
def test_an_unwritable_output_folder_is_one_line_and_nothing_is_written(env: Env, entry: str) -> None:
    output = file_where_a_folder_is_expected(env.tmp)
    Image.new("RGB", (48, 30)).save(env.tmp / "face.png")
    before = checksums(env.tmp)
    run, expected = OUTPUT_ENTRIES[entry]
    outcome = run(env, output)
    _assert_no_traceback(outcome)
    assert outcome.code == expected, outcome.err
    _assert_one_clear_line(outcome, output.name)
    assert checksums(env.tmp) == before and sorted(p.name for p in env.tmp.iterdir()) == ["face.png", "out"]


# ---------------------------------------------------------------------------------------------- a full disk


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fill_disk_in_image_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow writes half an image, then the disk is full."""
    def save(self: Image.Image, fp: io.BufferedWriter, *args: object, **kwargs: object) -> None:
        fp.write(b"\x89PNG half an image")
        raise _no_space()

    monkeypatch.setattr(Image.Image, "save", save)


def _fill_disk_in_onnx_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exported model is half written, then the disk is full."""
    def save(proto: onnx.ModelProto, f: str, *args: object, **kwargs: object) -> None:
        Path(f).write_bytes(b"half a model")
        raise _no_space()

    monkeypatch.setattr(onnx, "save", save)


def _fill_disk_in_text_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """A temporary file written by `atomic_write_text` (a report, a run's config) gets half its text, then the
    disk is full; other text files are written as usual."""
    real = Path.write_text

    def write_text(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if not self.name.endswith(".tmp"):
            return real(self, data, *args, **kwargs)
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise _no_space()

    monkeypatch.setattr(Path, "write_text", write_text)


def _full_infer(env: Env, out: Path) -> Outcome:
    return _infer(env, env.tmp / "face.png", "-o", out / "results")


def _full_eval(env: Env, out: Path) -> Outcome:
    return _click(env, eval_main, "--model", env.checkpoint, "--device", "cpu", "--num-samples", "2", "--json",
                  "--out", out / "eval.json")


def _full_bench(env: Env, out: Path) -> Outcome:
    return _bench(env, "--batch-sizes", "1", "--warmup", "0", "--json", "--out", out / "bench.json",
                  model=env.checkpoint)


# entry point -> (runner writing under a given folder, where the disk fills, what the line names, whether the
# result is printed all the same: a report that took minutes to measure must not be lost with its file)
FULL_DISK_ENTRIES: dict[str, tuple[Callable[[Env, Path], Outcome], Callable[[pytest.MonkeyPatch], None], str,
                                   bool]] = {
    "infer": (_full_infer, _fill_disk_in_image_save, "face.png", False),
    "export": (lambda env, out: _export(env, output=out / "tiny.onnx"), _fill_disk_in_onnx_save, "tiny.onnx", False),
    "eval": (_full_eval, _fill_disk_in_text_files, "eval.json", True),
    "bench": (_full_bench, _fill_disk_in_text_files, "bench.json", True),
    "train": (lambda env, out: _click(env, train_main, "--output", out / "run", *TRAIN_FAST), _fill_disk_in_text_files,
              "train_config.json", False),
}


@pytest.mark.parametrize("entry", FULL_DISK_ENTRIES)
def test_a_disk_that_fills_while_writing_is_exit_4_in_one_line_and_leaves_nothing_half_written(
        env: Env, entry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run, fill_disk, named, printed = FULL_DISK_ENTRIES[entry]
    Image.new("RGB", (48, 30), (180, 130, 110)).save(env.tmp / "face.png")
    out = env.tmp / "out"
    out.mkdir()
    before = checksums(env.tmp / "face.png", env.checkpoint)
    fill_disk(monkeypatch)
    outcome = run(env, out)
    _assert_no_traceback(outcome)
    assert outcome.code == 4, outcome.err  # not 2: the command was right, and works once there is room
    _assert_one_clear_line(outcome, named, "No space left on device")
    assert bool(outcome.out.strip()) == printed, outcome.out
    # no temporary file, no partial output; a training run's lock file (empty, no record) may stay
    assert [p for p in out.rglob("*") if p.is_file() and p.relative_to(out) != Path("run/.lock")] == []
    assert checksums(env.tmp / "face.png", env.checkpoint) == before


# ---------------------------------------------------------------------------------------------- real processes


def _script(name: str) -> str:
    return str(BIN / name)


def _one_line_exit(proc: subprocess.CompletedProcess[str], code: int, *names: str) -> None:
    assert proc.returncode == code, proc.stderr
    _assert_no_traceback(Outcome(code, proc.stderr, proc.stdout))
    _assert_one_clear_line(Outcome(code, proc.stderr, prog=Path(proc.args[0]).name), *names)


@pytest.mark.slow
def test_ctrl_c_in_the_middle_of_a_folder_leaves_only_complete_outputs(checkpoint: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(6):  # large enough (about 0.2 s each to retouch and encode) to interrupt in the middle
        noise = np.random.default_rng(k).integers(0, 256, (480, 640, 3), dtype=np.uint8)  # (H, W, 3)
        Image.fromarray(noise).save(photos / f"face_{k}.png", compress_level=1)
    before = checksums(photos)
    out = tmp_path / "out"
    proc = subprocess.Popen([_script("langbrt-infer"), str(photos), "--model", str(checkpoint), "--device", "cpu",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 90
        while not list(out.glob("*_retouched.png")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, (proc.returncode, stderr)  # the shell convention, 130
    _assert_no_traceback(Outcome(proc.returncode, stderr, stdout))
    assert stderr.strip().splitlines()[-1].startswith("langbrt-infer: interrupted after "), stderr
    written = sorted(out.iterdir())
    assert 1 <= len(written) < 6, "the interrupt came after the last image"
    assert all(not p.name.startswith(".") and p.suffix != ".tmp" for p in written), written  # no temp files
    for path in written:
        assert _decoded_size(path) == (640, 480)  # complete and decodable
    assert checksums(photos) == before


@pytest.mark.slow
def test_langbrt_serve_with_a_text_file_as_model_exits_2_before_it_listens(tmp_path: Path) -> None:
    """A path no backend loads is the flags' fault, refused as langbrt-infer refuses it (exit 2, one line),
    before uvicorn starts: no log line of a server that never served comes first."""
    model = MODEL_CASES["text-file"](tmp_path)
    proc = subprocess.run([_script("langbrt-serve"), "--model", str(model), "--port", "0", "--device", "cpu"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2, proc.stderr
    _assert_no_traceback(Outcome(2, proc.stderr, proc.stdout))
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("langbrt-serve: error: ") and model.name in lines[0], lines
    assert "cannot tell which backend loads this" in lines[0], lines


def test_langbrt_serve_with_a_missing_model_is_one_usage_line(tmp_path: Path, capsys) -> None:
    """In process: the flag check runs before uvicorn is imported, so nothing binds a port."""
    with pytest.raises(SystemExit) as exit_:
        serve_main(["--model", str(tmp_path / "nowhere"), "--port", "0"])
    outcome = Outcome(exit_.value.code, capsys.readouterr().err, prog="langbrt-serve")
    assert outcome.code == 2
    _assert_one_clear_line(outcome, "nowhere", "no such file")


@pytest.mark.slow
def test_langbrt_train_skips_a_corrupt_pair_with_one_warning_line(tmp_path: Path) -> None:
    corrupt = BAD_IMAGES[0].build(tmp_path)
    data = _pair_folder(tmp_path, corrupt)
    before = checksums(data)
    proc = subprocess.run([_script("langbrt-train"), "--data", str(data), "--output", str(tmp_path / "run"),
                           *TRAIN_FAST], capture_output=True, text=True, env=ENV, timeout=120)
    _one_line_exit(proc, 0, "Warning: skipping", corrupt.name)
    assert checksums(data) == before


@pytest.mark.slow
def test_langbrt_export_with_a_text_file_as_model_exits_2(tmp_path: Path) -> None:
    model = MODEL_CASES["text-file"](tmp_path)
    proc = subprocess.run([_script("langbrt-export"), "--model", str(model), "--output", str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, env=ENV, timeout=120)
    _one_line_exit(proc, 2, model.name)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_langbrt_eval_with_a_folder_without_config_exits_2(tmp_path: Path) -> None:
    model = MODEL_CASES["folder-without-config"](tmp_path)
    proc = subprocess.run([_script("langbrt-eval"), "--model", str(model), "--device", "cpu"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    _one_line_exit(proc, 2, model.name, "config.json")
