"""Run folders: the embedded store every experiment writes (docs/reference/run-folders.md).

::

    runs/<experiment>/<run-id>/
      config.json      resolved configuration, seed, versions, device, threads, provenance
                       (command line, CPU model, git commit: core.provenance)
      status.json      {"status": "running" | "finished" | "failed", "error", "updated"} (atomic)
      metrics.csv      one row per logged step (append-only, flushed per row)
      claims.json      [{"id", "claim", "source", "comparator", "expected", "measured", "tolerance",
                         "tolerance_reason", "reference", "passed", "verdict"}] (see core.claims)
      figures/*.png    the experiment's plots (atomic); *.svg beside a light one, *.gif animations,
                       figures.json their captions, claims and paper figures
      paper.json       the paper's values beside ours (RunContext.paper_value)
      checkpoint.pt    latest state, written atomically (temp file + rename)
      log.txt

A crash loses at most the steps since the last checkpoint: every metrics row is
flushed (a killed process loses none) and metrics.csv is fsync'ed before each checkpoint
and when the run ends (so no checkpoint covers rows a system crash could lose, while a
row costs no disk sync), claims, figures and checkpoints are rewritten atomically
(:mod:`collapselab.core._files`: a new file keeps the user's umask), and a checkpoint records how many metrics rows it covers
and a digest of config.json. :meth:`RunFolder.load_checkpoint` checks the three against
each other: rows logged after the checkpoint and a row cut in the middle are dropped, a
checkpoint of another configuration or one that covers rows metrics.csv no longer holds
is refused (continuing would invent data), and without a checkpoint the run starts over.

Every failure to read or write a file is a :class:`~collapselab.core.errors.StorageError`
naming the path and the fix (permissions, read-only or full disk, a file-size limit).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ._files import atomic_torch_save, atomic_write_bytes, atomic_write_text, storage_errors
from .claims import Claim, jsonable as _jsonable
from .provenance import provenance
from .errors import CollapseLabError, ConfigError, DataFileError, MissingFileError, StorageError

_log = logging.getLogger("collapselab.store")

__all__ = [
    "Claim", "RunFolder", "STATUSES", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text", "new_run_id", "read_claims", "read_metrics",
    "storage_errors", "versions",
]  # fmt: skip

CONFIG, STATUS, METRICS, CLAIMS, CHECKPOINT, LOG, FIGURES = "config.json", "status.json", "metrics.csv", "claims.json", "checkpoint.pt", "log.txt", "figures"
STATUSES = ("running", "finished", "failed")

def versions() -> dict[str, str]:
    """Versions of Python and the numerical stack, recorded in every config.json."""
    import numpy
    import scipy

    from .. import __version__

    return {
        "collapselab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def new_run_id() -> str:
    """A sortable run id: UTC timestamp with microseconds."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _read_table(path: Path) -> tuple[list[str] | None, list[list[str]], int]:
    """metrics.csv as (header, complete rows, bytes of a row cut in the middle at the end).

    A row is complete when its line ends (every row is written with its line end in one
    flushed write); text after the last line end is a row cut by a crash or a full disk.
    """
    with storage_errors(path, "read"):
        raw = path.read_bytes()
    cut = raw.rfind(b"\n") + 1
    lines = list(csv.reader(io.StringIO(raw[:cut].decode("utf-8"), newline="")))
    header, rows = (lines[0], lines[1:]) if lines else (None, [])
    bad = [i for i, row in enumerate(rows) if len(row) != len(header or [])]
    if bad:
        raise DataFileError(f"{path}: row {bad[0] + 1} has {len(rows[bad[0]])} cells but the header has {len(header or [])}; the file was edited or damaged: start a new run")
    return header, rows, len(raw) - cut


class RunFolder:
    """One run's folder. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._columns: list[str] | None = None
        self._rows = 0
        self._cut = 0  # bytes of a partial last row of metrics.csv (dropped on resume)
        self._claims: list[Claim] = []
        self.resumed_at: int | None = None  # metrics rows the loaded checkpoint covers
        self.dropped_rows = 0  # complete rows after the checkpoint, dropped by load_checkpoint
        if (self.path / METRICS).exists():
            self._columns, rows, self._cut = _read_table(self.path / METRICS)
            self._rows = len(rows)
        if (self.path / CLAIMS).exists():
            self._claims = [Claim.from_json(c) for c in read_claims(self.path)]

    def _hint(self) -> str:
        return f"; the run folder {self.path} keeps its last checkpoint: fix this, then continue it with --resume {self.path}"

    @contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """Inside: a failed write becomes a StorageError naming ``path``, the fix and how to resume."""
        try:
            with storage_errors(path):
                yield
        except StorageError as exc:
            err = StorageError(f"{exc}{self._hint()}")
            err.errno = exc.errno
            raise err from exc.__cause__

    # -- creation --------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, experiment: str, config: dict[str, Any], *, run_id: str | None = None, extra: dict[str, Any] | None = None) -> "RunFolder":
        """Make ``root/experiment/run_id`` and write config.json (fails if it exists).

        ``run_id`` may name a subfolder (``"sweep-<id>/seed-3"``: the run folders of a sweep).
        """
        path = Path(root) / experiment / (run_id or new_run_id())
        with storage_errors(path, "create the run folder"):
            try:
                path.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                if path.is_dir():
                    raise ConfigError(f"run folder {path} exists already; pick another run id or use --resume {path}") from None
                raise
            (path / FIGURES).mkdir()
        doc = {"experiment": experiment, "config": _jsonable(config), "versions": versions(), "provenance": provenance(), "created": _now()}
        doc.update(_jsonable(extra or {}))
        atomic_write_text(path / CONFIG, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> "RunFolder":
        """Reopen an existing run folder (for ``--resume`` and reports)."""
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise MissingFileError(f"{path} is not a run folder (no {CONFIG})")
        return cls(path)

    @property
    def config(self) -> dict[str, Any]:
        """The parsed config.json; a damaged one is a DataFileError."""
        p = self.path / CONFIG
        with storage_errors(p, "read"):
            text = p.read_text()
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFileError(f"{p} is not valid JSON ({exc}); the run folder is damaged and cannot be checked or continued: start a new run") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or "experiment" not in doc:
            raise DataFileError(f"{p} lacks the keys 'experiment' and 'config'; the run folder is damaged: start a new run")
        return doc

    def _config_digest(self) -> str:
        doc = self.config
        key = json.dumps({"experiment": doc["experiment"], "config": doc["config"]}, sort_keys=True)
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    @property
    def log_file(self) -> Path:
        return self.path / LOG

    # -- status ----------------------------------------------------------------------
    def write_status(self, status: str, *, error: str | None = None) -> None:
        """Record (atomically) whether the run is ``running``, ``finished`` or ``failed`` (with ``error``)."""
        if status not in STATUSES:
            raise ConfigError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        if status != "running":
            self._sync_metrics()
        doc: dict[str, Any] = {"status": status, "updated": _now()}
        if error is not None:
            doc["error"] = error
        with self._writing(self.path / STATUS):
            atomic_write_text(self.path / STATUS, json.dumps(doc, indent=2) + "\n")

    @contextmanager
    def running(self, what: str) -> Iterator[None]:
        """Inside: status ``running``; on leaving, ``finished``, or ``failed`` with the error (then re-raised).

        A KeyboardInterrupt is recorded as ``interrupted``. When the disk that stopped the run
        refuses the status too, the run reads as incomplete (status still ``running``).
        """
        self.write_status("running")
        try:
            yield
        except BaseException as exc:
            message = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            _log.error("%s stopped: %s", what, message, exc_info=not isinstance(exc, (CollapseLabError, KeyboardInterrupt)))
            try:
                self.write_status("failed", error=message)
            except OSError:
                pass
            raise
        self.write_status("finished")

    @property
    def status(self) -> dict[str, Any] | None:
        """status.json (None if absent; an unreadable one reads as status ``"unreadable"``)."""
        p = self.path / STATUS
        if not p.exists():
            return None
        try:
            doc = json.loads(p.read_text())
            if isinstance(doc, dict) and doc.get("status") in STATUSES:
                return doc
            return {"status": "unreadable", "error": f"{p} holds no known status"}
        except (OSError, ValueError) as exc:
            return {"status": "unreadable", "error": f"{p} is unreadable ({exc})"}

    # -- metrics ---------------------------------------------------------------------
    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.csv (written through to the operating system at once;
        synced to disk before the next checkpoint).

        The first row fixes the columns; a later row may omit columns (left blank) but
        may not add new ones, so the file stays one rectangular table.
        """
        row = {k: _cell(v) for k, v in row.items()}
        path = self.path / METRICS
        if self._cut:
            raise DataFileError(f"{path} ends with a row cut in the middle; reopen the run with --resume {self.path}, which drops it")
        if self._columns is None:
            columns = list(row)
            with self._writing(path), open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(columns)
            self._columns = columns
        unknown = [k for k in row if k not in self._columns]
        if unknown:
            raise ConfigError(f"metrics row has columns {unknown} not in the header {self._columns}; log every column from the first row on")
        buf = io.StringIO()
        csv.writer(buf).writerow([row.get(c, "") for c in self._columns])
        with self._writing(path), open(path, "a", newline="") as fh:
            fh.write(buf.getvalue())  # one write per row: a crash cuts at most the last row
        self._rows += 1

    def _sync_metrics(self) -> None:
        """fsync metrics.csv: the rows logged so far survive a system crash."""
        path = self.path / METRICS
        if path.exists():
            with self._writing(path), open(path, "rb") as fh:
                os.fsync(fh.fileno())

    def num_metric_rows(self) -> int:
        """Complete data rows in metrics.csv (the header excluded)."""
        return self._rows

    def truncate_metrics(self, rows: int) -> None:
        """Keep only the first ``rows`` complete data rows and drop a cut last row (atomically)."""
        path = self.path / METRICS
        if not path.exists():
            return
        header, body, _ = _read_table(path)
        buf = io.StringIO()
        w = csv.writer(buf)
        if header is not None:
            w.writerow(header)
            w.writerows(body[:rows])
        with self._writing(path):
            atomic_write_text(path, buf.getvalue())
        self._columns = header
        self._rows = min(rows, len(body))
        self._cut = 0

    # -- claims ----------------------------------------------------------------------
    def add_claim(self, claim: Claim) -> Claim:
        """Record a claim (replacing one with the same id) and rewrite claims.json atomically."""
        claims = [c for c in self._claims if c.id != claim.id] + [claim]
        with self._writing(self.path / CLAIMS):
            atomic_write_text(self.path / CLAIMS, json.dumps([c.to_json() for c in claims], indent=2) + "\n")
        self._claims = claims
        return claim

    @property
    def claims(self) -> list[Claim]:
        return list(self._claims)

    # -- figures ---------------------------------------------------------------------
    def save_figure(self, fig: Any, name: str, *, dpi: int = 110) -> Path:
        """Write a matplotlib figure to ``figures/<name>`` (PNG) atomically; the figure stays open."""
        path = self.figures / name
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        with self._writing(path):
            atomic_write_bytes(path, buf.getvalue())
        return path

    # -- checkpoints -----------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically write ``state`` plus the metrics row count and the config digest to checkpoint.pt."""
        self._sync_metrics()
        payload = dict(state)
        payload["_metrics_rows"] = self.num_metric_rows()
        payload["_config_digest"] = self._config_digest()
        with self._writing(self.path / CHECKPOINT):
            atomic_torch_save(self.path / CHECKPOINT, payload)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint, with metrics.csv cut back to the rows it covers (and the
        temporary files of writes a crash cut short removed).

        Without a checkpoint the run starts over: metrics.csv and claims.json are emptied and
        None is returned (the caller says so). A checkpoint written for another configuration,
        or one covering more rows than metrics.csv holds complete, is refused: continuing
        would mix two runs or invent the missing rows.
        """
        for tmp in [*self.path.glob(".*.tmp"), *self.figures.glob(".*.tmp")]:  # a write the crash cut short
            with self._writing(tmp):
                tmp.unlink()
        path = self.path / CHECKPOINT
        if not path.exists():
            self.truncate_metrics(0)
            if (self.path / CLAIMS).exists():
                with self._writing(self.path / CLAIMS):
                    (self.path / CLAIMS).unlink()
            self._claims = []
            return None
        try:
            with storage_errors(path, "read"):
                state = torch.load(path, map_location="cpu", weights_only=False)
        except StorageError:
            raise
        except Exception as exc:  # a torn file cannot happen (atomic rename), a foreign one can
            raise DataFileError(f"{path} is not a readable checkpoint ({exc})") from None
        digest = state.pop("_config_digest", None)
        if digest is not None and digest != self._config_digest():
            raise DataFileError(f"{path} was written for another configuration than {self.path / CONFIG} (was config.json edited?); start a new run")
        rows = int(state.pop("_metrics_rows", 0))
        if rows > self._rows:
            raise DataFileError(
                f"{self.path / METRICS} holds {self._rows} complete rows but {path} covers {rows}: rows were lost (the file was cut or edited); "
                "continuing would leave a gap: restore the file or start a new run"
            )
        self.dropped_rows = self._rows - rows
        self.truncate_metrics(rows)
        self.resumed_at = rows
        return state


def _cell(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float):
        return repr(v)  # shortest round-trip form: resume can compare to the last digit
    return v


def read_metrics(path: Path) -> list[dict[str, str]]:
    """metrics.csv of a run folder as a list of dicts (strings); a row cut at the end is left out."""
    header, rows, _ = _read_table(Path(path) / METRICS)
    return [dict(zip(header or [], row)) for row in rows]


def read_claims(path: Path) -> list[dict[str, Any]]:
    """claims.json of a run folder (empty list if absent)."""
    p = Path(path) / CLAIMS
    if not p.exists():
        return []
    with storage_errors(p, "read"):
        text = p.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{p} is not valid JSON ({exc})") from None
