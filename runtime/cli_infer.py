"""`langbrt-infer`: retouch photos (files, folders, globs) with a checkpoint, an ONNX file or an engine.

GFPGAN/CodeFormer habits: inputs -> a results folder (`retouched/` beside the inputs by default), a suffix on
outputs (`<stem>_retouched.<ext>`), the retouch pasted back into the full-resolution photo. One bad file is
reported on one stderr line and skipped (exit 1 at the end); a bad model, prompt or option stops before
anything is written (exit 2); an output that cannot be written once running (a full disk) stops the run in
one line (exit 4), keeping the photos already done, which are complete. Inputs are never overwritten, outputs
only with --overwrite: not even one another run writes while this one works on the photo (`_staged`). With
--overwrite, an earlier run's maps and mask of a photo that this run does not replace are removed once its new
outputs are in place (`Runner.remove_earlier_maps`).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from langbrt.atomic import TargetExistsError, atomic_paths
from langbrt.bundled import default_model_path
from langbrt.cli_args import THREADS_HELP, OneLineParser, device_arg, non_empty, non_empty_path, positive_int
from langbrt.cli_errors import error_line, fail
from langbrt.cli_pipes import print_out, quiet_on_broken_pipe
from langbrt.console import run_command
from langbrt.errors import LangBRTError, LangBRTInputError, OutputWriteError, TooManyPixelsError
from langbrt.exit_codes import EXIT_INTERRUPTED, EXIT_OUTPUT_NOT_WRITTEN, EXIT_USAGE
from langbrt.io import (
    DEFAULT_MAX_PIXELS,
    READ_SUFFIXES,
    WRITE_SUFFIXES,
    LoadedImage,
    load_image,
    output_note,
    write_image,
)
from langbrt.orphan_cleanup import remove_orphaned_temporaries
from langbrt.output_paths import check_name_lengths, refuse_dangling_link
from langbrt.text import normalize_prompt

from .backends.base import PRECISIONS, BackendName
from .infer_names import (
    OUTPUT_DIR,
    SUFFIX,
    is_only_map_or_mask_of,
    map_name,
    mask_name,
    output_folder,
    output_format,
    output_stems,
    output_suffix,
)
from .preprocess import nonzero_box
from .retoucher import Retoucher

PROG = "langbrt-infer"
OVERLAY_COLOR = torch.tensor([1.0, 0.15, 0.1])[:, None, None]  # (3, 1, 1) red-orange heat
OVERLAY_ALPHA = 0.6
EXIT_FAILED_FILES = 1


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Remove the facial blemishes you name from photos. "
                "Writes <stem>_retouched.<ext> into a results folder; the rest of each photo is untouched.")
    p.add_argument("images", nargs="+", help="image files, folders (their images, not recursive) or globs")
    p.add_argument("--model", type=non_empty, help="checkpoint folder or .safetensors file, .onnx file or "
                   ".engine/.plan (default: the bundled model)")
    p.add_argument("--backend", default="auto", choices=[b.value for b in BackendName],
                   help="what runs the model; auto: by --model (folder: torch, .onnx, .engine)")
    p.add_argument("--prompt", action="append", dest="prompts", metavar="TEXT",
                   help="a blemish to remove, e.g. 'acne on the cheeks' (repeatable; default: the model's own)")
    p.add_argument("-o", "--output", type=non_empty_path,
                   help=f"results folder (default: {OUTPUT_DIR}/ beside each input)")
    p.add_argument("--save-maps", action="store_true",
                   help="also write <stem>_map_<k>_<prompt>.png heat-map overlays and <stem>_mask.png")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (never an input), and remove the maps and mask an earlier run "
                   "wrote for the photo that this run does not replace")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="largest W*H of a photo, read from its header before decoding; a larger one is refused as "
                   f"a bad file (default: {DEFAULT_MAX_PIXELS}, {DEFAULT_MAX_PIXELS / 1e6:g} MP)")
    p.add_argument("--json", action="store_true", help="print one JSON object with per-file results and timings")
    p.add_argument("--device", type=device_arg, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp16 needs CUDA (torch) or an fp16 engine; default: fp32 / the artifact's own")
    p.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)
    return p


def expand_inputs(items: list[str]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files, folders and globs -> image files (sorted; one per resolved file, in its first spelling) and the
    items that matched nothing."""
    files: list[Path] = []
    missing: list[dict[str, str]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in READ_SUFFIXES)
        elif path.exists():
            found = [path]
        else:
            found = sorted(Path(f) for f in glob.glob(item) if Path(f).is_file())
        if not found:
            missing.append({"input": item, "error": f"{item}: no such file, or no images in it"})
        files += found
    first_spelling = {}
    for f in files:
        first_spelling.setdefault(f.resolve(), f)
    return list(first_spelling.values()), missing


def refuse_prompt_files(prompts: list[str]) -> None:
    """Refuse a --prompt that names a file (`prompts.txt`, `@prompts.txt`, `lists/acne`): one line, exit 2.

    Why: its text was retouched for as a blemish ("prompts.txt") without a word, the photos written and the user
    never told that no prompt they meant was used (QA). --prompt takes the words; a file of them is read by the
    shell (`--prompt "$(head -1 prompts.txt)"`). A bare word that happens to name a file in the current folder
    ("acne") is still a prompt: only a name with a suffix, a folder or a leading @ is taken for a path.
    """
    for prompt in prompts:
        name = prompt.removeprefix("@")
        looks_like_a_path = prompt.startswith("@") or os.sep in name or Path(name).suffix != ""
        if looks_like_a_path and os.path.isfile(name):
            raise LangBRTInputError(f"--prompt {prompt!r} names a file; --prompt takes the words of one blemish, "
                                    "e.g. --prompt 'acne on the cheeks' (repeat it for several)")


def overlay(image: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """Paint a map (1, H, W) in [0, 1] over the photo (3, H, W) so a person can see what a prompt found.

    Only the box around the map's non-zero pixels is painted: where the map is 0 the paint's weight is 0 and
    the blend gives the photo's own value, so copying the photo there writes the same file (at 12 MP the
    blend over the whole frame took 0.3 s of CPU for a map that covers a few percent of it).
    """
    painted = image.clone()  # (3, H, W)
    region = nonzero_box(heat[0])
    if region is not None:
        rows, cols = region
        a = heat[:, rows, cols].clamp(0, 1) * OVERLAY_ALPHA  # (1, h', w')
        painted[:, rows, cols] = image[:, rows, cols] * (1 - a) + OVERLAY_COLOR * a  # (3, h', w')
    return painted


class Runner:
    """Retouches one file at a time and writes its outputs; raises LangBRTError for that file only."""

    def __init__(self, retoucher: Retoucher, prompts: list[str], args: argparse.Namespace,
                 stems: dict[Path, str]) -> None:
        self.retoucher = retoucher
        self.prompts = prompts  # normalised, checked by the backend
        self.args = args
        self.stems = stems  # every input -> the name its outputs start with (`output_stems`)
        self.inputs = {f.resolve() for f in stems}  # never written to

    def planned(self, source: Path, suffix: str) -> dict[str, Path]:
        """The output paths of one photo whose retouched image is written with `suffix`."""
        folder, stem = output_folder(source, self.args.output), self.stems[source]
        out = {"image": folder / f"{stem}{SUFFIX}{suffix}"}
        if self.args.save_maps:
            for k, prompt in enumerate(self.prompts):
                out[f"map_{k}"] = folder / map_name(stem, k, prompt)
            out["mask"] = folder / mask_name(stem)
        return out

    def targets(self, source: Path, image: LoadedImage) -> dict[str, Path]:
        """Every output path of one photo, checked before the model runs for it."""
        out = self.planned(source, output_suffix(image, source))
        for path in out.values():
            if path.resolve() in self.inputs:
                raise LangBRTInputError(f"{source}: output {path} would overwrite an input; use -o DIR")
            # lexists: a dangling link in its place is an existing output (exists() follows it); False for a name too
            # long, refused when written
            if os.path.lexists(path) and not self.args.overwrite:
                raise LangBRTInputError(f"{source}: {path} exists; pass --overwrite to replace it")
        return out

    def check_all(self) -> None:
        """Before any photo is retouched: no planned output is an input, and every output folder takes files.

        Raises LangBRTInputError; otherwise a read-only folder or a clash with an input failed the run file by
        file after the model had run for each. The format is guessed from the file name here (a PNG named .jpg
        is caught later, by `targets`).
        """
        names_in: dict[Path, set[str]] = {}
        for source in self.stems:
            guess = source.suffix if source.suffix.lower() in WRITE_SUFFIXES else ".png"
            for path in self.planned(source, guess).values():
                if path.resolve() in self.inputs:
                    raise LangBRTInputError(f"{source}'s output {path} would overwrite an input; use -o DIR")
                names_in.setdefault(path.parent, set()).add(path.name)
        for folder in sorted(names_in):
            _probe_writable(folder)
            remove_orphaned_temporaries(folder, names_in[folder])  # of a run killed while writing these outputs

    def process(self, source: Path) -> dict[str, Any]:
        """Retouch one photo and write its outputs; the report has a "warning" when the output lost bits or
        frames, or an earlier run's map could not be removed (`remove_earlier_maps`)."""
        try:
            image = load_image(source, max_pixels=self.args.max_pixels)
        except TooManyPixelsError as err:
            raise TooManyPixelsError(f"{err}; pass a larger --max-pixels (W*H) to retouch it") from None
        targets = self.targets(source, image)
        [result] = self.retoucher.retouch([image], [self.prompts])
        fmt = output_format(image)
        with _staged(source, targets, replace=self.args.overwrite) as staged:
            write_image(staged["image"], result.image, alpha=image.alpha, format=fmt, exif=image.exif,
                        icc_profile=image.icc_profile, bit_depth=image.output_bit_depth, lossless=image.lossless)
            if self.args.save_maps:
                for k in range(len(result.prompts)):
                    # a preview at the photo's size: fast zlib, 6x less CPU at 12 MP for 13 % more bytes
                    write_image(staged[f"map_{k}"], overlay(image.rgb, result.maps[k : k + 1]), format="PNG",
                                fast=True)
                # at the image's depth: an 8-bit mask shows values under 1/510 as 0 where a 16-bit output changed
                write_image(staged["mask"], result.mask.expand(3, -1, -1), format="PNG",
                            bit_depth=image.output_bit_depth)
        notes = [output_note(image)]
        if self.args.overwrite:
            notes.append(self.remove_earlier_maps(source, targets))
        report = {
            "input": str(source),
            "output": str(targets["image"]),
            "maps": [str(p) for k, p in targets.items() if k.startswith("map_")],
            "mask": str(targets["mask"]) if "mask" in targets else None,
            "size": list(image.size),
            "bit_depth": image.output_bit_depth,
            "prompts": result.prompts,
            "changed_fraction": float((result.mask > 0).float().mean()),
            "timing_ms": {k: round(v, 3) for k, v in result.timing.items()},
        }
        notes = [note for note in notes if note is not None]
        return {**report, "warning": f"{source}: {'; '.join(notes)}"} if notes else report

    def remove_earlier_maps(self, source: Path, targets: dict[str, Path]) -> str | None:
        """Under --overwrite, once this photo's outputs are in place: remove the maps and the mask an earlier run
        wrote for it that this run did not replace (other prompts, or no --save-maps). Returns a warning when
        one could not be removed, else None: the photo is retouched all the same.

        Why: the folder must describe this result only (QA: a run with new prompts left the old run's maps, two
        `map_0_*` of one photo, and a mask that was no longer its). Only files named as this photo's maps or mask
        and as no other photo's output (`is_only_map_or_mask_of`), regular files, never an input; removed after
        the new outputs are in place, so a crash in between leaves old and new together, never neither.
        """
        folder, name = targets["image"].parent, self.stems[source]
        written = {path.name for path in targets.values()}
        try:
            with os.scandir(folder) as entries:
                earlier = [Path(entry.path) for entry in entries if entry.name not in written
                           and is_only_map_or_mask_of(entry.name, name) and entry.is_file(follow_symlinks=False)]
        except OSError as err:
            return f"could not look for an earlier run's maps and mask in {folder} ({err.strerror or err})"
        for path in earlier:
            if path.resolve() in self.inputs:
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                return f"could not remove an earlier run's {path} ({err.strerror or err}); delete it by hand"
        return None


def _without_lone_surrogates(value: Any) -> Any:
    """`value` with every string's undecodable file-name bytes (Python's lone surrogates, U+DC80-U+DCFF)
    written as backslash escapes ('bad\\xff.png'): json.dumps would emit them as '\\udcff', which strict JSON
    parsers refuse (QA, 2026-11-26)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {key: _without_lone_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    return value


def _probe_writable(folder: Path) -> None:
    """Create `folder` if needed and write a temporary file in it: the only test that also catches read-only
    mounts and immutable folders (os.access answers yes to root). Folders it created are removed again."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise LangBRTInputError(f"cannot write into {folder} ({err.strerror or err})") from None
    finally:
        for path in created:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()


@contextlib.contextmanager
def _staged(source: Path, targets: dict[str, Path], replace: bool) -> Iterator[dict[str, Path]]:
    """Temporary files beside all of one photo's outputs, renamed into place together once all are written.

    Why: a Ctrl-C or a full disk between the retouched image and its maps must not leave a photo half done
    (an image without its maps, counted as not retouched); on any error every temporary file is removed. A
    failed write is one OutputWriteError naming the photo and the folder, not the temporary file that failed.

    Without `replace`, an output that appeared after `Runner.targets` checked it (another run writing the same
    folder) is not replaced and none of the photo's outputs is left: one LangBRTInputError line, a bad file.
    """
    folder = targets["image"].parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        image_last = {**{key: path for key, path in targets.items() if key != "image"}, "image": targets["image"]}
        with atomic_paths(image_last, replace=replace) as staged:  # image last: where it is, its maps are too
            yield staged
    except TargetExistsError as err:
        raise LangBRTInputError(f"{source}: {err.filename} appeared while this run worked on it (another run?); "
                                "pass --overwrite to replace it") from None
    except (OSError, OutputWriteError) as err:
        why = err.__cause__ if isinstance(err.__cause__, OSError) else err  # write_image's OutputWriteError
        reason = why.strerror if isinstance(why, OSError) and why.strerror else why
        raise OutputWriteError(f"{source}: cannot write into {folder} ({reason})",
                               errno=why.errno if isinstance(why, OSError) else None) from None


def missing_folders(files: list[Path], output: Path | None) -> list[Path]:
    """The output folders (and their ancestors) that do not exist yet, deepest first: what a run that stops
    early removes again where it wrote nothing into them, so Ctrl-C or a full disk leaves no empty results
    folder behind."""
    folders = {output_folder(source, output) for source in files}
    missing = {p for folder in folders for p in (folder, *folder.parents) if not p.exists()}
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders of `missing_folders` that a stopped run wrote nothing into (deepest first)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_results_folder(folder: Path) -> None:
    """Refuse, before any work, a results folder that is (or sits below) an existing file, or whose name is too
    long for a file system."""
    check_name_lengths(folder, "-o")
    refuse_dangling_link(folder, "-o")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise LangBRTInputError(f"-o {folder}: {existing} is a file, not a folder; pass a folder (created if missing)")


@quiet_on_broken_pipe(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_pixels < 1:  # as langbrt-serve words it
        parser.error("--max-pixels must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        refuse_prompt_files(args.prompts or [])
        prompts = [normalize_prompt(p) for p in args.prompts] if args.prompts else None
        files, missing = expand_inputs(args.images)
        if not files:
            return fail(PROG, "no input images: " + "; ".join(m["error"] for m in missing), EXIT_USAGE)
        if args.output is not None:
            check_results_folder(args.output)
        stems = output_stems(files, args.output)
        retoucher = Retoucher.load(args.model or default_model_path(), args.backend, args.device, args.precision,
                                   batch_size=1)
        [checked] = retoucher.check_prompts(prompts, 1)
        runner = Runner(retoucher, checked, args, stems)
        runner.check_all()
    except LangBRTError as err:
        return fail(PROG, err, EXIT_USAGE)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted before any image was retouched", file=sys.stderr)
        return EXIT_INTERRUPTED
    results, failed, created = [], list(missing), missing_folders(files, args.output)
    for item in missing:
        print(error_line(PROG, item["error"]), file=sys.stderr)
    from tqdm import tqdm

    stopped: OutputWriteError | None = None
    with tqdm(files, desc="retouching", unit="img", disable=len(files) < 2 or None, file=sys.stderr) as bar:
        try:
            for source in bar:
                try:
                    results.append(runner.process(source))
                    if "warning" in results[-1]:
                        tqdm.write(f"{PROG}: warning: {results[-1]['warning']}", file=sys.stderr)
                except LangBRTError as err:
                    failed.append({"input": str(source), "error": str(err)})
                    if isinstance(err, OutputWriteError) and err.every_write_fails:  # so would every later photo
                        stopped = err
                        break
                    tqdm.write(error_line(PROG, err), file=sys.stderr)
        except KeyboardInterrupt:  # Ctrl-C: writes are atomic, so every output already there is complete
            bar.close()
            _remove_empty(created)
            print(f"{PROG}: interrupted after {len(results)} of {len(files)} image(s)", file=sys.stderr)
            return EXIT_INTERRUPTED
    if stopped is not None:
        _remove_empty(created)
    if args.json:
        print_out(json.dumps(_without_lone_surrogates({"results": results, "failed": failed}), indent=2))
    if stopped is not None:
        return fail(PROG, f"{stopped}; stopped there: {len(results)} of {len(files)} image(s) retouched, their "
                    "outputs complete", EXIT_OUTPUT_NOT_WRITTEN)
    if results and not args.json:
        folders = sorted({str(Path(r["output"]).parent) for r in results})
        print_out(f"retouched {len(results)} image(s) into {', '.join(folders)}")
    return EXIT_FAILED_FILES if failed else 0


if __name__ == "__main__":
    sys.exit(run_command(main))
