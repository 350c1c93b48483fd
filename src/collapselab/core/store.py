"""Run folders: the embedded store every experiment writes (DESIGN.md, "Run folders").

::

    runs/<experiment>/<run-id>/
      config.json      resolved configuration, seed, versions, device
      metrics.csv      one row per logged step (append-only, flushed per row)
      claims.json      [{"id", "claim", "source", "comparator", "expected", "measured", "tolerance",
                         "tolerance_reason", "reference", "passed", "verdict"}] (see core.claims)
      figures/*.png    the experiment's plots
      checkpoint.pt    latest state, written atomically (temp file + rename)
      log.txt

A crash loses at most the steps since the last checkpoint: every metrics row is
flushed and fsync'ed, claims are rewritten atomically, and a checkpoint records how
many metrics rows it covers so that ``resume`` drops rows logged after it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from .claims import Claim, jsonable as _jsonable
from .errors import ConfigError, DataFileError, MissingFileError

__all__ = ["Claim", "RunFolder", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text", "new_run_id", "read_claims", "read_metrics", "versions"]

CONFIG, METRICS, CLAIMS, CHECKPOINT, LOG, FIGURES = "config.json", "metrics.csv", "claims.json", "checkpoint.pt", "log.txt", "figures"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically: a crash leaves the old file or the new one, never a torn one."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


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


class RunFolder:
    """One run's folder. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._columns: list[str] | None = None
        self._rows = 0
        self._claims: list[Claim] = []
        if (self.path / METRICS).exists():
            with open(self.path / METRICS, newline="") as fh:
                reader = csv.reader(fh)
                self._columns = next(reader, None)
                self._rows = sum(1 for _ in reader)
        if (self.path / CLAIMS).exists():
            self._claims = [Claim.from_json(c) for c in read_claims(self.path)]

    # -- creation --------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, experiment: str, config: dict[str, Any], *, run_id: str | None = None, extra: dict[str, Any] | None = None) -> "RunFolder":
        """Make ``root/experiment/run_id`` and write config.json (fails if it exists)."""
        path = Path(root) / experiment / (run_id or new_run_id())
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise ConfigError(f"run folder {path} exists already; pick another run id or use --resume {path}") from None
        (path / FIGURES).mkdir()
        doc = {"experiment": experiment, "config": _jsonable(config), "versions": versions(), "created": _dt.datetime.now(_dt.timezone.utc).isoformat()}
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
        """The parsed config.json."""
        return json.loads((self.path / CONFIG).read_text())

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    @property
    def log_file(self) -> Path:
        return self.path / LOG

    # -- metrics ---------------------------------------------------------------------
    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.csv and flush it to disk.

        The first row fixes the columns; a later row may omit columns (left blank) but
        may not add new ones, so the file stays one rectangular table.
        """
        row = {k: _cell(v) for k, v in row.items()}
        path = self.path / METRICS
        if self._columns is None:
            self._columns = list(row)
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(self._columns)
        unknown = [k for k in row if k not in self._columns]
        if unknown:
            raise ConfigError(f"metrics row has columns {unknown} not in the header {self._columns}; log every column from the first row on")
        with open(path, "a", newline="") as fh:
            csv.writer(fh).writerow([row.get(c, "") for c in self._columns])
            fh.flush()
            os.fsync(fh.fileno())
        self._rows += 1

    def num_metric_rows(self) -> int:
        """Data rows in metrics.csv (the header excluded)."""
        return self._rows

    def truncate_metrics(self, rows: int) -> None:
        """Keep only the first ``rows`` data rows (used on resume, atomically)."""
        path = self.path / METRICS
        if not path.exists():
            return
        with open(path, newline="") as fh:
            lines = list(csv.reader(fh))
        header, body = lines[0], lines[1:]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(body[:rows])
        atomic_write_text(path, buf.getvalue())
        self._rows = min(rows, len(body))

    # -- claims ----------------------------------------------------------------------
    def add_claim(self, claim: Claim) -> Claim:
        """Record a claim (replacing one with the same id) and rewrite claims.json atomically."""
        self._claims = [c for c in self._claims if c.id != claim.id] + [claim]
        atomic_write_text(self.path / CLAIMS, json.dumps([c.to_json() for c in self._claims], indent=2) + "\n")
        return claim

    @property
    def claims(self) -> list[Claim]:
        return list(self._claims)

    # -- checkpoints -----------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically write ``state`` (plus the metrics row count) to checkpoint.pt."""
        payload = dict(state)
        payload["_metrics_rows"] = self.num_metric_rows()
        atomic_torch_save(self.path / CHECKPOINT, payload)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint (or None: then the run starts over); drops metrics rows written after it."""
        path = self.path / CHECKPOINT
        if not path.exists():
            self.truncate_metrics(0)  # nothing to continue from: the run starts over
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a torn file cannot happen (atomic rename), a foreign one can
            raise DataFileError(f"{path} is not a readable checkpoint ({exc})") from None
        self.truncate_metrics(int(state.pop("_metrics_rows", 0)))
        return state


def _cell(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float):
        return repr(v)  # shortest round-trip form: resume can compare to the last digit
    return v


def read_metrics(path: Path) -> list[dict[str, str]]:
    """metrics.csv of a run folder as a list of dicts (strings)."""
    with open(Path(path) / METRICS, newline="") as fh:
        return list(csv.DictReader(fh))


def read_claims(path: Path) -> list[dict[str, Any]]:
    """claims.json of a run folder (empty list if absent)."""
    p = Path(path) / CLAIMS
    if not p.exists():
        return []
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{p} is not valid JSON ({exc})") from None
