"""Exceptions whose messages are meant for users: they name the entry, the field and the fix.

The CLI turns any `ZooError` into a one-line message and its ``exit_code``: 2 for bad input
(usage, specs, files), 1 for a run that failed while running (a NaN loss, a full disk); a
traceback only with `--debug`. Anything else is a bug in zoo or in a plugin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

EXIT_BAD_INPUT, EXIT_RUN_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class ZooError(Exception):
    """Base class of every error zoo reports to a user (bad input unless a subclass says)."""

    exit_code = EXIT_BAD_INPUT


class SpecError(ZooError):
    """One or more spec fields are invalid; each issue is `(path, message)`."""

    def __init__(self, issues: Sequence[tuple[str, str]], *, source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.issues) == 1:
            path, msg = self.issues[0]
            text = f"{head}{path}: {msg}" if path else f"{head}{msg}"
        else:
            lines = [f"  {p}: {m}" if p else f"  {m}" for p, m in self.issues]
            text = f"{head}{len(self.issues)} problems:\n" + "\n".join(lines)
        super().__init__(text)


class UnknownNameError(ZooError):
    """A name or type that is not registered; the message lists close matches and what exists."""

    def __init__(self, what: str, name: str, known: Iterable[str], *, hint: str = "") -> None:
        import difflib

        known = sorted(set(known))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        parts = [f"unknown {what} {name!r}"]
        if close:
            parts.append("did you mean " + " or ".join(repr(c) for c in close) + "?")
        parts.append("known: " + (", ".join(known) if known else "(none)"))
        if hint:
            parts.append(hint)
        self.name = name
        self.close_matches = close
        super().__init__("; ".join(parts))


class PluginError(ZooError):
    """A plugin is broken, or two plugins claim the same type."""


class ProtocolError(ZooError):
    """A trainer or sampler was given a model of the wrong protocol."""


class RuntimeConfigError(ZooError):
    """The requested device or precision cannot be used on this machine."""


class ArtifactError(ZooError):
    """A saved model or checkpoint is missing, corrupt, unsafe or does not match its spec."""


class DataError(ZooError):
    """A data file is missing, empty, undecodable or has the wrong shape."""


class DataMismatch(DataError):
    """The data does not fit the model; ``fields`` are the model-spec values that would fit it.

    The trainer does not know how the user named the model, so the message ends with a generic
    fix; `zoo train` / `zoo.train` replace it with one that names the preset (or the inline spec).
    """

    def __init__(self, problem: str, fields: dict[str, object]) -> None:
        self.problem, self.fields = problem, dict(fields)
        super().__init__(f"{problem}; {self.fix()}")

    def fix(self, preset: str | None = None, *, inline: bool = False) -> str:
        pairs = ", ".join(f"{k}={_json(v)}" for k, v in self.fields.items())
        if preset is not None:
            return "fix: " + " ".join(f"--set models.{preset}.{k}={_json(v)}" for k, v in self.fields.items())
        if inline:
            return f"fix: set {pairs} in the inline model spec"
        return f"fix: build the model with {pairs}"

    def for_model(self, preset: str | None, *, inline: bool) -> DataMismatch:
        """The same problem, its fix naming how the user chose the model."""
        err = DataMismatch(self.problem, self.fields)
        err.args = (f"{self.problem}; {self.fix(preset, inline=inline)}",)
        return err


def _json(value: object) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


class TrainingError(ZooError):
    """Training failed while running: a non-finite loss or gradient, a checkpoint it could not write."""

    exit_code = EXIT_RUN_FAILED


class RunDirError(ZooError):
    """An output folder zoo refuses to use: not a zoo run, in use by another process, or unsafe to replace."""
