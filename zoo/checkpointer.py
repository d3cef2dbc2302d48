"""A run's checkpoints: which exist, which one a run resumes from, and writing new ones.

``RUN/checkpoints/step-00000100`` folders are written atomically (the last ``keep`` stay); a named
one (``best``) sits beside them and is never pruned. A folder counts only when complete (its
``state.json`` is there): an empty or half-copied ``step-*`` is passed over with a note, never
resumed from. Resuming from step N moves the step checkpoints past N (never N itself) to
``checkpoints/set-aside``, so "the latest" is always on the history being trained. The engine
writes through it (periodic, named, and the one a stop writes), resume finds its checkpoint
through it, and `--force` asks it whether a new run has a checkpoint yet. The format of one
checkpoint is `zoo.checkpoints`.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from zoo import checkpoints
from zoo.distributed import DistInfo
from zoo.errors import ArtifactError, RunDirError, TrainingError

STEP_DIR = re.compile(r"^step-(\d{8})$")
SET_ASIDE = "set-aside"
BEST = "best"

Resume = bool | str | Path  # False: a new run; True or "last": the latest checkpoint; "best"; a checkpoint folder


def is_complete(folder: Path) -> bool:
    return (folder / "state.json").is_file()


class Checkpointer:
    """The checkpoints of the run in ``out`` (``out/checkpoints``), keeping the last ``keep`` step ones."""

    def __init__(self, out: Path, keep: int = 3, dist: DistInfo | None = None) -> None:
        self.root = Path(out) / "checkpoints"
        self.keep = keep
        self.dist = dist or DistInfo("none")

    def step_dirs(self) -> list[Path]:
        """Every ``step-N`` folder, complete or not, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)), key=lambda p: p.name)

    def steps(self) -> list[Path]:
        """The complete ``step-N`` checkpoints, oldest first."""
        return [p for p in self.step_dirs() if is_complete(p)]

    def latest(self) -> Path | None:
        done = self.steps()
        return done[-1] if done else None

    def last_good(self) -> str:
        """What a failed run leaves to resume from, for its error message."""
        last = self.latest()
        return f"last good checkpoint kept: {last}" if last else "no checkpoint was written yet"

    def clean_stale(self) -> None:
        """Remove what a killed process left half-written: temporary and replaced directories."""
        for folder in (self.root.parent, self.root):
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
                        shutil.rmtree(p, ignore_errors=True)

    def resume_point(self, resume: Resume, *, notes: bool = True) -> Path | None:
        """The checkpoint a run continues from: None for a new run (or a resumed one with none
        yet). With ``notes``, an incomplete newer ``step-N`` passed over is said on stderr."""
        if resume is False:
            return None
        if resume is True or resume == "last":
            for skipped in reversed(self.step_dirs()):
                if is_complete(skipped):
                    break
                if notes:
                    print(
                        f"note: {skipped} is incomplete (no state.json); resuming from an earlier one", file=sys.stderr
                    )
            return self.latest()
        if resume == BEST:
            best = self.root / BEST
            if not is_complete(best):
                raise RunDirError(
                    f"no best checkpoint in {self.root}: a trainer with the best-checkpoint callback keeps one "
                    "(callbacks = ['best-checkpoint']); resume with --resume last instead"
                )
            return best
        path = Path(resume)
        if not is_complete(path):
            raise RunDirError(f"{path}: not a checkpoint folder (no state.json); give one under RUN/checkpoints")
        return path

    def set_aside_after(self, step: int) -> list[str]:
        """Move the step folders past ``step`` to ``set-aside`` (replacing same-named ones there);
        the one at ``step`` stays. Returns their names."""
        later = [p for p in self.step_dirs() if int(p.name[5:]) > step]
        if later:
            (self.root / SET_ASIDE).mkdir(exist_ok=True)
        for path in later:
            target = self.root / SET_ASIDE / path.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            path.replace(target)
        return [p.name for p in later]

    def write(self, state: checkpoints.TrainState, name: str | None = None) -> Path | None:
        """The full state as ``step-N`` (then only the last ``keep`` stay) or as ``name`` (replacing
        it). A collective: every rank calls it; returns the path on rank 0."""
        path = self.root / (name or f"step-{state.step:08d}")
        try:
            checkpoints.save_checkpoint(path, state, self.dist)
        except ArtifactError as err:
            raise TrainingError(
                f"checkpoint at step {state.step} could not be written ({err}); " + self.last_good()
            ) from None
        if self.dist.rank != 0:
            return None
        if name is None:
            for old in self.steps()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        return path


def check_name(name: str) -> bool:
    """A name a callback may give a checkpoint: letters, digits, '-' and '_', not a name zoo uses."""
    plain = name.replace("-", "").replace("_", "").isalnum() and name[:1].isalpha()
    return plain and name != SET_ASIDE and not STEP_DIR.match(name)
