"""`atomic_folder`: a folder is replaced whole or not at all, and a failure leaves nothing hidden behind;
`atomic_paths`: files that belong together appear together, and with replace=False never over another's."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from langbrt import atomic
from langbrt.atomic import atomic_folder, atomic_write_text
from langbrt.errors import OutputWriteError


def _folder(path: Path, **files: str) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_new_folder_replaces_the_old_one_whole(tmp_path):
    _folder(tmp_path / "final", a="old", stale="old")
    with atomic_folder(tmp_path / "final") as staging:
        (staging / "a").write_text("new")
    assert _tree(tmp_path) == {"final/a": "new"}  # no stale file, no staging or .old folder left


def test_a_new_folder_gets_the_mode_mkdir_would_give(tmp_path):
    """Not mkdtemp's 0700: a Triton server or a colleague reading the folder runs as another user."""
    (tmp_path / "by-mkdir").mkdir()
    with atomic_folder(tmp_path / "final"):
        pass
    assert stat.S_IMODE((tmp_path / "final").stat().st_mode) == stat.S_IMODE((tmp_path / "by-mkdir").stat().st_mode)


def test_an_error_while_writing_keeps_the_old_folder_and_removes_the_staging_one(tmp_path):
    _folder(tmp_path / "final", a="old")
    with pytest.raises(OSError, match="disk full"), atomic_folder(tmp_path / "final") as staging:
        (staging / "a").write_text("half")
        raise OSError("disk full")
    assert _tree(tmp_path) == {"final/a": "old"} and [p.name for p in tmp_path.iterdir()] == ["final"]


def test_a_failed_rename_into_place_puts_the_old_folder_back(tmp_path, monkeypatch):
    _folder(tmp_path / "final", a="old")
    real_replace = os.replace

    def refuse_the_new_folder(src, dst):
        if ".partial" in str(src):
            raise OSError("rename refused")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", refuse_the_new_folder)
    with pytest.raises(OutputWriteError) as err, atomic_folder(tmp_path / "final") as staging:
        (staging / "a").write_text("new")
    assert _tree(tmp_path) == {"final/a": "old"} and [p.name for p in tmp_path.iterdir()] == ["final"]
    assert str(err.value) == f"cannot replace {tmp_path / 'final'}: rename refused; the old one is unchanged"


def test_a_failed_rename_of_a_new_folder_is_one_line_naming_it_not_the_staging_folder(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OutputWriteError) as err, atomic_folder(tmp_path / "final"):
        pass
    assert str(err.value) == f"cannot create {tmp_path / 'final'}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_when_the_old_folder_cannot_be_put_back_the_error_says_where_it_is(tmp_path, monkeypatch):
    _folder(tmp_path / "final", a="old")
    real_replace = os.replace

    def refuse_all_but_the_move_aside(src, dst):
        if not str(dst).endswith(".final.old"):
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", refuse_all_but_the_move_aside)
    with pytest.raises(OutputWriteError) as err, atomic_folder(tmp_path / "final"):
        pass
    assert f"the old one is at {tmp_path / '.final.old'}" in str(err.value) and "\n" not in str(err.value)
    assert _tree(tmp_path) == {".final.old/a": "old"}


def test_a_staging_folder_that_cannot_be_made_is_one_line_naming_the_target(tmp_path):
    with pytest.raises(OutputWriteError, match=f"cannot write {tmp_path / 'nope' / 'final'}: No such file"):
        with atomic_folder(tmp_path / "nope" / "final"):
            pass


def test_a_file_in_the_way_is_replaced_and_no_old_copy_of_it_is_left(tmp_path):
    (tmp_path / "final").write_text("a file")
    (tmp_path / ".final.old").write_text("left by a crash")
    with atomic_folder(tmp_path / "final") as staging:
        (staging / "a").write_text("new")
    assert _tree(tmp_path) == {"final/a": "new"}


def test_an_old_copy_that_cannot_be_deleted_is_a_warning_not_silence(tmp_path, monkeypatch):
    _folder(tmp_path / "final", a="old")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.shutil, "rmtree", refuse)
    with pytest.warns(UserWarning, match=r"\.final\.old could not be deleted \(Permission denied\)"):
        with atomic_folder(tmp_path / "final") as staging:
            (staging / "a").write_text("new")
    assert (tmp_path / "final" / "a").read_text() == "new"


def test_an_old_folder_left_aside_by_a_crash_is_cleared_by_the_next_replace(tmp_path):
    _folder(tmp_path / ".final.old", a="older")
    _folder(tmp_path / "final", a="old")
    with atomic_folder(tmp_path / "final") as staging:
        (staging / "a").write_text("new")
    assert _tree(tmp_path) == {"final/a": "new"}


@pytest.mark.parametrize("name", [
    pytest.param("a" * 251 + ".png", id="ascii-255-bytes"),
    pytest.param("é" * 120 + ".png", id="two-byte-characters-244-bytes"),
])
def test_a_file_or_folder_with_the_longest_legal_name_is_written(tmp_path, name):
    """QA, 2026-11-26: the temporary name beside a 249-byte output name ran past 255 bytes and the write
    failed 'File name too long', though the output itself was a legal name."""
    file_target = tmp_path / name
    atomic_write_text(file_target, "hello")
    assert file_target.read_text() == "hello"
    folder_target = tmp_path / ("d" + name[1:])
    with atomic_folder(folder_target) as staging:
        (staging / "x.txt").write_text("x")
    assert (folder_target / "x.txt").read_text() == "x"
    with atomic_folder(folder_target) as staging:  # replaces the old one, which goes aside first
        (staging / "y.txt").write_text("y")
    atomic_write_text(file_target, "again")
    assert _tree(folder_target) == {"y.txt": "y"} and file_target.read_text() == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([file_target.name, folder_target.name])


@pytest.mark.parametrize("through_link", [False, True], ids=["fifo", "symlink-to-fifo"])
def test_a_device_or_fifo_target_is_written_in_place_not_replaced_by_a_file(tmp_path, through_link):
    """QA, 2026-11-26: `--out /dev/null` (or a named pipe) had a regular file renamed over it: as root,
    `langbrt-eval --out /dev/null` turned /dev/null into a JSON report. A FIFO stands in for the device here."""
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    target = fifo
    if through_link:
        target = tmp_path / "link"
        target.symlink_to(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    atomic_write_text(target, "report")
    reader.join(timeout=10)
    assert received == ["report"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and target.is_symlink() == through_link
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"pipe", target.name})


def test_dev_stdout_on_a_redirected_stdout_is_never_renamed_over(tmp_path):
    """`--out /dev/stdout > report.json`: /dev/stdout then links to a regular file, and a rename would replace
    the link in /dev itself (as root). Checked without ever renaming: the block raises before its end."""
    import subprocess
    import sys

    probe = ("import sys\nfrom langbrt.atomic import atomic_path\ntry:\n"
             "    with atomic_path('/dev/stdout') as path:\n        sys.stderr.write(str(path))\n"
             "        raise KeyboardInterrupt\nexcept KeyboardInterrupt:\n    pass\n")
    with open(tmp_path / "report.json", "w") as stdout:
        run = subprocess.run([sys.executable, "-c", probe], stdout=stdout, stderr=subprocess.PIPE, text=True,
                             timeout=60)
    assert run.returncode == 0 and Path(run.stderr).parent != Path("/dev"), run.stderr
    assert not Path(run.stderr).exists() and Path("/dev/stdout").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert (tmp_path / "report.json").read_text() == ""


@pytest.mark.parametrize("redirect", ["w", "a"])
def test_dev_stdout_on_a_redirected_stdout_follows_what_was_printed(tmp_path, redirect):
    """QA: opening /dev/stdout by name reopened report.json, truncating what was printed before (`>>`: the
    file's older lines too), and the next print wrote over the report from offset 0 (`langbrt-eval --json
    --out /dev/stdout > r.json` left invalid JSON). Written through descriptor 1, it reads as on a terminal."""
    import subprocess
    import sys

    probe = ("from langbrt.atomic import atomic_write_text\nprint('before', flush=True)\n"
             "atomic_write_text('/dev/stdout', 'the report\\n')\nprint('after')\n")
    (tmp_path / "out.txt").write_text("older\n")
    with open(tmp_path / "out.txt", redirect) as stdout:
        run = subprocess.run([sys.executable, "-c", probe], stdout=stdout, stderr=subprocess.PIPE, text=True,
                             timeout=60)
    assert run.returncode == 0, run.stderr
    older = "older\n" if redirect == "a" else ""
    assert (tmp_path / "out.txt").read_text() == f"{older}before\nthe report\nafter\n"


def test_a_closed_descriptor_is_one_output_error_and_nothing_is_created(tmp_path):
    """`--out /dev/stdout >&-`: stat() of the link failed, so it was taken for a missing file and a temporary file
    renamed over the link in /dev itself (as root). A closed /dev/fd/N stands in for it here."""
    fd = os.open(tmp_path / "x", os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    with pytest.raises(OutputWriteError, match="Bad file descriptor"):
        atomic_write_text(f"/dev/fd/{fd}", "report")
    assert (tmp_path / "x").read_text() == ""


def _targets(folder: Path) -> dict[str, Path]:
    return {name: folder / f"{name}.png" for name in ("map", "mask", "image")}


def test_files_that_belong_together_appear_together(tmp_path):
    with atomic.atomic_paths(_targets(tmp_path)) as staged:
        for name, tmp in staged.items():
            tmp.write_text(name)
    assert _tree(tmp_path) == {"image.png": "image", "map.png": "map", "mask.png": "mask"}


def test_an_interrupt_while_syncing_a_later_file_changes_no_target_and_leaves_no_temporary(tmp_path, monkeypatch):
    """QA, 2026-11-26: each file was renamed after its own fsync, so a Ctrl-C during the image's fsync (a slow
    disk) left the photo's maps and mask in place without it."""
    real_fsync, synced = os.fsync, []

    def fsync(fd):
        synced.append(fd)
        if len(synced) == 3:
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt), atomic.atomic_paths(_targets(tmp_path)) as staged:
        for name, tmp in staged.items():
            tmp.write_text(name)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_during_the_renames_takes_effect_after_the_last_one(tmp_path, monkeypatch):
    import signal

    real_replace, renamed = os.replace, []

    def replace(src, dst):
        if not renamed:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the first rename and the others
        renamed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), atomic.atomic_paths(_targets(tmp_path)) as staged:
        for name, tmp in staged.items():
            tmp.write_text(name)
    assert _tree(tmp_path) == {"image.png": "image", "map.png": "map", "mask.png": "mask"}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _fails_for_the_image(real):  # type: ignore[no-untyped-def]
    """`real` (os.replace or os.link) raising EIO for the image target: an I/O error midway through a photo."""
    def call(src, dst):  # type: ignore[no-untyped-def]
        if Path(dst).name == "image.png":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(src, dst)
    return call


def test_a_rename_that_fails_removes_the_targets_made_before_it(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "replace", _fails_for_the_image(os.replace))
    (tmp_path / "mask.png").write_text("old")  # an earlier output, replaced by --overwrite: kept as written
    with pytest.raises(OSError, match="Input/output error"), atomic.atomic_paths(_targets(tmp_path)) as staged:
        for name, tmp in staged.items():
            tmp.write_text(name)
    assert _tree(tmp_path) == {"mask.png": "mask"}


def _write_each(staged: dict[str, Path]) -> None:
    for name, tmp in staged.items():
        tmp.write_text(name)


def test_without_replace_new_targets_are_placed_with_the_mode_open_gives(tmp_path):
    with atomic.atomic_paths(_targets(tmp_path), replace=False) as staged:
        _write_each(staged)
    assert _tree(tmp_path) == {"image.png": "image", "map.png": "map", "mask.png": "mask"}
    assert all(stat.S_IMODE(p.stat().st_mode) == atomic.new_file_mode() and p.stat().st_nlink == 1
               for p in tmp_path.iterdir())


def test_without_replace_a_target_that_appears_before_the_rename_is_kept_and_the_others_are_undone(tmp_path):
    """QA: two runs into one folder both passed the caller's check, and the second rename replaced the first
    run's image, leaving the photo's image from one run and its maps from the other."""
    with pytest.raises(atomic.TargetExistsError) as err, \
            atomic.atomic_paths(_targets(tmp_path), replace=False) as staged:
        _write_each(staged)
        (tmp_path / "image.png").write_text("another run's")  # the last target: map and mask were placed first
    assert err.value.filename == str(tmp_path / "image.png")
    assert _tree(tmp_path) == {"image.png": "another run's"}  # no map, no mask, no temporary


def test_without_replace_a_dangling_symlink_in_the_way_is_not_followed_or_replaced(tmp_path):
    (tmp_path / "mask.png").symlink_to(tmp_path / "nowhere")
    with pytest.raises(atomic.TargetExistsError), atomic.atomic_paths(_targets(tmp_path), replace=False) as staged:
        _write_each(staged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"] and not (tmp_path / "nowhere").exists()


def test_undoing_a_refused_call_leaves_a_file_another_process_renamed_over_ours(tmp_path, monkeypatch):
    real_link = os.link

    def link(src, dst):
        if Path(dst).name == "image.png":  # meanwhile, an --overwrite run replaced our map, then wrote the image
            (tmp_path / "theirs").write_text("their map")
            os.replace(tmp_path / "theirs", tmp_path / "map.png")
            (tmp_path / "image.png").write_text("their image")
        real_link(src, dst)

    monkeypatch.setattr(atomic.os, "link", link)
    with pytest.raises(atomic.TargetExistsError), atomic.atomic_paths(_targets(tmp_path), replace=False) as staged:
        _write_each(staged)
    assert _tree(tmp_path) == {"image.png": "their image", "map.png": "their map"}


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP], ids=["EPERM", "EOPNOTSUPP"])
def test_without_hard_links_new_targets_are_renamed_into_place(tmp_path, monkeypatch, code):
    """FAT, exFAT, some FUSE mounts: os.link fails; the check-then-rename fallback still writes new outputs."""
    def no_links(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "link", no_links)
    with atomic.atomic_paths(_targets(tmp_path), replace=False) as staged:
        _write_each(staged)
    assert _tree(tmp_path) == {"image.png": "image", "map.png": "map", "mask.png": "mask"}


def test_without_hard_links_an_existing_target_is_still_refused_and_the_others_undone(tmp_path, monkeypatch):
    def no_links(src, dst):
        if Path(dst).name == "image.png":
            (tmp_path / "image.png").write_text("another run's")  # appears just before the fallback's check
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(atomic.os, "link", no_links)
    with pytest.raises(atomic.TargetExistsError), atomic.atomic_paths(_targets(tmp_path), replace=False) as staged:
        _write_each(staged)
    assert _tree(tmp_path) == {"image.png": "another run's"}


def test_another_link_error_is_an_os_error_not_a_refusal_and_undoes_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "link", _fails_for_the_image(os.link))
    with pytest.raises(OSError, match="Input/output error") as err, \
            atomic.atomic_paths(_targets(tmp_path), replace=False) as staged:
        _write_each(staged)
    assert not isinstance(err.value, atomic.TargetExistsError) and list(tmp_path.iterdir()) == []


def test_with_replace_a_target_that_appears_before_the_rename_is_replaced(tmp_path):
    """The default (langbrt-infer --overwrite): the new files win, all of them."""
    with atomic.atomic_paths(_targets(tmp_path)) as staged:
        _write_each(staged)
        (tmp_path / "image.png").write_text("another run's")
    assert _tree(tmp_path) == {"image.png": "image", "map.png": "map", "mask.png": "mask"}


def test_dev_stdout_closed_at_start_is_refused_even_once_descriptor_1_is_reused(tmp_path):
    """`--out /dev/stdout >&-`: Python starts with sys.stdout None, and the next file opened takes descriptor 1;
    the report must not go into that file."""
    import subprocess
    import sys

    probe = ("import os, sys\nfrom langbrt.atomic import atomic_write_text\n"
             "from langbrt.errors import OutputWriteError\n"
             "other = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\nassert other == 1, other\n"
             "try:\n    atomic_write_text('/dev/stdout', 'report')\nexcept OutputWriteError as err:\n"
             "    sys.stderr.write(str(err))\n")
    run = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "other")], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, timeout=60, close_fds=True,
                         preexec_fn=lambda: os.close(1))
    assert "Bad file descriptor" in run.stderr, run.stderr
    assert (tmp_path / "other").read_text() == ""
