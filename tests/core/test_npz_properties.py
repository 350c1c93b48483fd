"""Property tests of the ``.npz`` reader (``read_npz``, ``load_npz``): any archive, intact or with
flipped bytes, a cut tail, a wrong CRC or a garbled compressed stream, gives either exactly the
arrays that were saved or a :class:`CollapseLabError`, never another exception."""

from __future__ import annotations

import io
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from collapselab.core.data import load_npz, read_npz
from collapselab.core.errors import CollapseLabError, DataFileError


def _archive(X, labels, compressed):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, X=X, labels=labels)
    return bytearray(buf.getvalue())


@st.composite
def damaged_archives(draw):
    """(bytes, X, labels): an archive of random arrays, then 0-3 byte flips and maybe a cut."""
    N, M = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    X = draw(hnp.arrays(draw(st.sampled_from([np.float16, np.float32, np.float64, np.int64, np.bool_])), (N, M)))
    labels = draw(hnp.arrays(np.int64, (N,), elements=st.integers(0, 2)))
    raw = _archive(X, labels, draw(st.booleans()))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw), X, labels


@given(damaged_archives())
def test_read_npz_gives_the_saved_arrays_or_a_collapselab_error(case):
    raw, X, labels = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        path.write_bytes(raw)
        try:
            arrays = read_npz(path, ["X", "labels"])
        except CollapseLabError as exc:
            event(type(exc).__name__)
            return
        event("arrays")
        # zip CRCs cover every member's bytes: whatever was read is what was saved
        assert arrays["X"].dtype == X.dtype and np.array_equal(arrays["X"], X, equal_nan=X.dtype.kind == "f")
        assert np.array_equal(arrays["labels"], labels)
        try:
            load_npz(path)
        except CollapseLabError:
            pass


@pytest.mark.parametrize("compressed", [False, True])
def test_a_wrong_crc_is_a_data_file_error(tmp_path, compressed):
    raw = _archive(np.ones((3, 2)), np.arange(3), compressed)
    # zipfile checks the CRC of the central directory: invert the first entry's (X.npy, saved first)
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        assert z.namelist()[0] == "X.npy"
    entry = raw.find(b"PK\x01\x02")
    (crc,) = struct.unpack_from("<I", raw, entry + 16)
    struct.pack_into("<I", raw, entry + 16, crc ^ 0xFFFFFFFF)
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match=r"bad\.npz is a damaged \.npz archive \(BadZipFile: Bad CRC-32.*save it again"):
        read_npz(path, ["X", "labels"])
