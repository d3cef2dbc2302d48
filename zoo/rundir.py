"""The run folder (`--out`): what may be used, one writer at a time, and replacement that loses nothing.

* `--out` may not be the working directory, an ancestor of it, the home folder, or a folder that
  holds an input of the run (`--data`, `--registry`, `--init-from`).
* A non-empty folder must be a zoo run (it has ``run.json`` or ``.zoo.lock``); zoo never writes
  into, let alone deletes, anything else.
* One writer per run: ``.zoo.lock`` is locked (``flock``) and holds the writer's PID. A second
  writer is refused naming that PID; a lock left by a dead process is taken over.
* `--force` moves the old run aside (``.NAME.replaced`` beside it) and deletes it only once the
  new run has written its first checkpoint or finished; a run that fails before that puts the old
  one back. A `--force` killed at any moment (SIGKILL included) is finished by the next
  `zoo train` on that ``--out``: the old run is put back if the new one has no checkpoint yet,
  else dropped; other commands name it (`replaced_note`). Nothing stays hidden.
* A run stopped by Ctrl-C or SIGTERM keeps its folder and records (a first run too), so that
  ``--resume`` continues it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from zoo.checkpointer import Checkpointer
from zoo.errors import RunDirError, TrainingError
from zoo.files import check_path_name
from zoo.interrupts import held

LOCK_FILE = ".zoo.lock"
RUN_FILE = "run.json"


def is_zoo_run(folder: Path) -> bool:
    return (folder / RUN_FILE).is_file() or (folder / LOCK_FILE).is_file()


def aside_of(out: Path) -> Path:
    """Where `--force` keeps the run it replaces until the new one is safe."""
    return out.with_name(f".{out.name}.replaced")


def left_aside(out: Path) -> list[Path]:
    """Runs an interrupted `--force` left beside ``out`` (``-PID`` suffixes: older zoo versions)."""
    parent = out.parent if str(out.name) else None
    if parent is None or not parent.is_dir():
        return []
    prefix = aside_of(out).name
    return sorted(p for p in parent.iterdir() if p.name == prefix or p.name.startswith(prefix + "-"))


def replaced_note(out: Path) -> str | None:
    """For commands that read ``out``: the run an interrupted `--force` left beside it, and what to do."""
    found = left_aside(out)
    if not found:
        return None
    return (
        f"note: an interrupted `zoo train --force` left the run it was replacing in {found[0]}; "
        f"`zoo train ... --out {out} --resume` puts it back (or drops it if {out} has a checkpoint), "
        f"or remove it with: rm -rf {found[0]}"
    )


def has_checkpoint(out: Path) -> bool:
    """The new run of a `--force` is safe: it wrote a checkpoint or finished."""
    return Checkpointer(out).latest() is not None or (out / "model").is_dir()


def check_out_path(out: Path, inputs: Iterable[tuple[str, str | Path | None]] = ()) -> None:
    """Refuse an ``--out`` whose replacement would destroy something that is not a zoo run."""
    check_path_name(out, "--out", RunDirError)
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        where = "the working directory" if target == cwd else f"an ancestor of the working directory ({cwd})"
        raise RunDirError(f"--out {out} is {where}; give a new folder for the run, e.g. --out runs/NAME")
    if target == Path.home().resolve():
        raise RunDirError(f"--out {out} is the home folder; give a new folder for the run, e.g. --out runs/NAME")
    for flag, value in inputs:
        if value is None or value == "":
            continue
        source = Path(value).resolve()
        if source == target or target in source.parents:
            raise RunDirError(f"--out {out} holds {flag} {value}; write the run to another folder")


class RunLock:
    """An exclusive ``flock`` on ``.zoo.lock`` with the holder's PID written in it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.fh: IO[str] | None = None

    def acquire(self) -> None:
        import fcntl

        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open while the run lives
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            fh.seek(0)
            holder = fh.read(32).strip() or "?"
            fh.close()
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise RunDirError(
                    f"{self.path.parent} is in use by another zoo process (PID {holder}); wait for it to "
                    "finish or stop it, or write this run to another --out"
                ) from None
            raise RunDirError(f"cannot lock {self.path}: {err.strerror or err}") from None
        # a lock file left by a dead process is taken over: flock died with it
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self.fh = fh

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()  # closing drops the flock
            self.fh = None


class RunDir:
    """One run's ``--out`` on the main process: opened, committed once safe, aborted on failure."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.created = False
        self.aside: Path | None = None
        self.locks: list[RunLock] = []
        self.safe = False  # the new run has a checkpoint (or finished): nothing to put back

    def open(self, *, resume: bool, force: bool, inputs: Iterable[tuple[str, str | Path | None]] = ()) -> None:
        out = self.out
        check_path_name(out, "--out", RunDirError)  # a name the OS refuses, before anything is touched
        if out.exists() and not out.is_dir():
            raise RunDirError(f"--out {out} is a file, not a folder")
        check_out_path(out, inputs)
        self.recover()
        if out.is_dir() and any(out.iterdir()):
            if not is_zoo_run(out):
                raise RunDirError(
                    f"--out {out} is a folder with other files in it, not a zoo run; zoo writes runs only to "
                    "a new or empty folder (or an earlier run's), so give another --out"
                )
            self._lock(out)
            if resume:
                return
            if not force:
                raise RunDirError(f"{out} already holds a run; pass --resume to continue it or --force to replace it")
            self.aside = aside_of(out)
            os.replace(out, self.aside)  # the lock moves with the folder and stays held
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.created = not any(out.iterdir())
            probe = out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            self.abort()
            raise RunDirError(f"cannot write to --out {out}: {err.strerror or err}") from None
        if self.created:
            self._lock(out)

    def recover(self) -> None:
        """Finish a `--force` that was killed: with both runs' locks held (a `--force` still
        running holds them), put the old run back if the new one has no checkpoint, else drop it."""
        for aside in left_aside(self.out):
            locks = [RunLock(aside)] + ([RunLock(self.out)] if self.out.is_dir() and is_zoo_run(self.out) else [])
            if self.out.is_dir() and any(self.out.iterdir()) and len(locks) == 1:
                raise RunDirError(
                    f"{aside} holds the run an interrupted --force was replacing, and {self.out} is not a zoo run; "
                    f"move one of them away"
                )
            try:
                for lock in locks:
                    lock.acquire()
                with held():  # a signal now would leave both half-moved
                    if has_checkpoint(self.out):
                        shutil.rmtree(aside)
                        print(f"note: removed {aside}, the run an interrupted --force replaced", file=sys.stderr)
                    else:
                        shutil.rmtree(self.out, ignore_errors=True)
                        os.replace(aside, self.out)
                        print(
                            f"note: {self.out}: put back the run an interrupted --force was replacing", file=sys.stderr
                        )
            finally:
                for lock in locks:
                    lock.release()

    def _lock(self, folder: Path) -> None:
        lock = RunLock(folder)
        lock.acquire()
        self.locks.append(lock)

    def commit(self) -> None:
        """The new run has written a checkpoint or finished: the replaced run can go."""
        self.safe = True
        if self.aside is not None:
            with held():
                shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def abort(self, *, interrupted: bool = False) -> None:
        """A run that failed before its first checkpoint leaves things as they were: the replaced
        run back, a new folder removed, unless an interrupted new run has records to resume from."""
        if self.safe:
            return
        with held():
            if self.aside is not None:
                shutil.rmtree(self.out, ignore_errors=True)
                os.replace(self.aside, self.out)
                self.aside = None
            elif self.created and not (interrupted and (self.out / RUN_FILE).is_file()):
                shutil.rmtree(self.out, ignore_errors=True)

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
        self.locks.clear()


@contextlib.contextmanager
def run_directory(
    out: Path,
    *,
    resume: bool,
    force: bool,
    runtime: Any,
    inputs: Iterable[tuple[str, str | Path | None]] = (),
) -> Iterator[RunDir]:
    """Open ``out`` on the main process (the other ranks wait and learn whether it worked)."""
    rundir = RunDir(out)
    failure: BaseException | None = None
    if runtime.is_main:
        try:
            rundir.open(resume=resume, force=force, inputs=inputs)
        except BaseException as err:
            failure = err
    if runtime.dist.any_failed(failure is not None):
        if failure is not None:
            raise failure
        raise TrainingError("the main process could not open --out; see its message")
    try:
        yield rundir
    except BaseException as err:
        if runtime.is_main:
            rundir.abort(interrupted=isinstance(err, KeyboardInterrupt))
        raise
    else:
        if runtime.is_main:
            rundir.commit()
    finally:
        if runtime.is_main:
            rundir.release()
