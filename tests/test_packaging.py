"""The five top-level folders install as ONE import namespace, in a wheel as in an editable install."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"langbrt": "langbrt", "kernels": "langbrt/kernels", "training": "langbrt/training",
           "export": "langbrt/export", "runtime": "langbrt/runtime"}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path_factory.mktemp("cwd"))
    (wheel,) = out.glob("langbrt-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def source_modules() -> set[str]:
    """Every .py file of the five folders, named as it must appear inside the wheel."""
    names = set()
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            names.add(f"{package}/{path.relative_to(ROOT / folder).as_posix()}")
    return names


@pytest.mark.slow
def test_wheel_holds_every_module_under_langbrt(wheel_names):
    missing = sorted(source_modules() - wheel_names)
    assert missing == []


@pytest.mark.slow
def test_wheel_has_no_stray_top_level_packages(wheel_names):
    tops = {name.split("/")[0] for name in wheel_names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"langbrt"}


def test_subpackages_import_under_one_namespace():
    import langbrt.export
    import langbrt.kernels
    import langbrt.runtime
    import langbrt.training

    for module, folder in [(langbrt.kernels, "kernels"), (langbrt.training, "training"),
                           (langbrt.export, "export"), (langbrt.runtime, "runtime")]:
        assert Path(module.__file__).parent == ROOT / folder


def test_importing_langbrt_loads_no_heavy_backend():
    code = ("import sys, langbrt, langbrt.kernels; "
            "print(sorted(m for m in ('triton', 'transformers', 'open_clip', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_wheel_carries_the_bundled_model(wheel_names):
    for name in ("config.json", "model.safetensors", "prompt_bank.safetensors"):
        assert f"langbrt/assets/default_model/{name}" in wheel_names
