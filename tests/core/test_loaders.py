"""Loaders return the documented shapes on bundled or generated data; bad files fail clearly.

IDX files are written here by an independent encoder (``struct``), so the reader is
checked against the format, not against itself.
"""

from __future__ import annotations

import gzip
import random
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from collapselab.core.data import (
    FASHION_MNIST_ROOT,
    LOADERS,
    check_data,
    from_dataset,
    load_breast_cancer,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_idx,
    load_idx_folder,
    load_iris,
    load_npz,
    load_pt,
    load_sklearn,
    load_wine,
    make_mnist1d,
    read_idx,
    select_classes,
)
from collapselab.core.errors import (
    CollapseLabError,
    DataFileError,
    EmptyClassError,
    LabelError,
    MissingFileError,
    NonFiniteError,
    ParameterError,
    ShapeError,
    UnknownNameError,
)

_CODES = {"u1": (0x08, ">u1"), "i1": (0x09, ">i1"), "i2": (0x0B, ">i2"), "i4": (0x0C, ">i4"), "f4": (0x0D, ">f4"), "f8": (0x0E, ">f8")}


def write_idx(path: Path, array: np.ndarray, kind: str = "u1", *, compress: bool | None = None) -> Path:
    """Encode ``array`` as IDX: magic 00 00 TT DD, big-endian uint32 dims, big-endian data."""
    code, be = _CODES[kind]
    head = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = head + np.ascontiguousarray(array, dtype=be).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


@pytest.fixture
def tiny_images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 4, 3), dtype=np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 0, 255
    labels = np.array([2, 0, 1, 2, 2, 0, 1, 1, 0, 2, 1, 0], dtype=np.uint8)
    return images, labels


# -- scikit-learn ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fn, shape, q",
    [
        ("digits", load_digits, (1797, 64), 10),
        ("iris", load_iris, (150, 4), 3),
        ("wine", load_wine, (178, 13), 3),
        ("breast_cancer", load_breast_cancer, (569, 30), 2),
    ],
)
def test_sklearn_shapes(name, fn, shape, q):
    data = load_sklearn(name)
    assert tuple(data.X.shape) == shape and data.X.dtype == torch.float64
    assert data.labels.dtype == torch.int64 and data.num_classes == q
    assert torch.equal(data.Y, torch.eye(q, dtype=torch.float64))
    assert int(data.class_counts.sum()) == shape[0] and bool((data.class_counts > 0).all())
    named = fn(dtype=torch.float32)
    assert named.X.dtype == torch.float32 and torch.equal(named.X, data.X.float()) and torch.equal(named.labels, data.labels)


def test_sklearn_digits_values_are_pixel_counts():
    X = load_digits().X
    assert float(X.min()) == 0.0 and float(X.max()) == 16.0 and bool((X == X.round()).all())


def test_sklearn_unknown_name_lists_known():
    with pytest.raises(UnknownNameError, match=r"unknown data set 'digitz'; known: breast_cancer, digits, iris, wine"):
        load_sklearn("digitz")


def test_loader_rejects_non_float_dtype():
    with pytest.raises(ParameterError, match=r"dtype must be a floating torch.dtype.*torch.int64"):
        load_sklearn("iris", dtype=torch.int64)


# -- MNIST-1D --------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_mnist1d_shapes_and_splits(no_network):
    data = make_mnist1d(100, seed=3)
    assert tuple(data.X.shape) == (100, 40) and data.num_classes == 10
    assert data.class_counts.tolist() == [10] * 10
    # the package standardises the whole set: global mean 0, standard deviation 1
    assert abs(float(data.X.mean())) < 1e-12
    assert abs(float(data.X.std(unbiased=False)) - 1.0) < 1e-12
    train = make_mnist1d(100, seed=3, split="train")
    test = make_mnist1d(100, seed=3, split="test")
    assert train.num_samples == 80 and test.num_samples == 20
    assert torch.equal(torch.cat([train.X, test.X]), data.X)


def test_mnist1d_seeded_and_leaves_global_rng_alone(no_network):
    np_state = np.random.get_state()
    py_state = random.getstate()
    a = make_mnist1d(50, seed=7)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    b = make_mnist1d(50, seed=7)
    c = make_mnist1d(50, seed=8)
    assert torch.equal(a.X, b.X) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.X, c.X)


def test_mnist1d_bad_parameters():
    with pytest.raises(ParameterError, match=r"num_samples must be a multiple of 10.*got 55"):
        make_mnist1d(55)
    with pytest.raises(ParameterError, match=r"split must be one of 'all', 'train', 'test', got 'val'"):
        make_mnist1d(50, split="val")


# -- IDX -------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_shapes_and_scaling(tmp_path, tiny_images, compress):
    images, labels = tiny_images
    ext = ".gz" if compress else ""
    ip = write_idx(tmp_path / f"img{ext}", images)
    lp = write_idx(tmp_path / f"lab{ext}", labels)
    data = load_idx(ip, lp)
    assert tuple(data.X.shape) == (12, 12) and data.X.dtype == torch.float64
    expected = images.reshape(12, -1).astype(np.float64) / 255.0
    assert np.array_equal(data.X.numpy(), expected)
    assert float(data.X.min()) == 0.0 and float(data.X.max()) == 1.0
    assert data.labels.tolist() == labels.tolist() and data.num_classes == 3
    raw = load_idx(ip, lp, scale=False, dtype=torch.float32)
    assert raw.X.dtype == torch.float32 and np.array_equal(raw.X.numpy(), images.reshape(12, -1).astype(np.float32))


@pytest.mark.parametrize("kind", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_idx_every_type_code(tmp_path, kind):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((3, 2, 5)) * 50).astype(np.dtype(_CODES[kind][1]).newbyteorder("="))
    if kind == "u1":
        arr = np.abs(arr)
    back = read_idx(write_idx(tmp_path / "a.idx", arr, kind))
    assert back.shape == (3, 2, 5) and np.array_equal(back.astype(np.float64), arr.astype(np.float64))


def test_load_idx_big_endian_types(tmp_path, tiny_images):
    images, labels = tiny_images
    signed = images.astype(np.int16) - 128
    data = load_idx(write_idx(tmp_path / "i16", signed, "i2"), write_idx(tmp_path / "l32", labels.astype(np.int32), "i4"))
    # only ubyte images are scaled; int16 values come back as stored
    assert np.array_equal(data.X.numpy(), signed.reshape(12, -1).astype(np.float64))
    assert data.labels.tolist() == labels.tolist()


def test_load_idx_classes_and_limit(tmp_path, tiny_images):
    images, labels = tiny_images
    ip, lp = write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", labels)
    data = load_idx(ip, lp, classes=[2, 0], limit_per_class=2)
    # first two samples of class 2 (indices 0, 3) and of class 0 (indices 1, 5), in file order
    keep = [0, 1, 3, 5]
    assert data.labels.tolist() == [0, 1, 0, 1] and data.num_classes == 2
    assert np.array_equal(data.X.numpy(), images[keep].reshape(4, -1) / 255.0)
    only_limit = load_idx(ip, lp, limit_per_class=1)
    assert only_limit.labels.tolist() == [2, 0, 1] and only_limit.num_classes == 3


def test_idx_bad_files(tmp_path, tiny_images):
    images, labels = tiny_images
    good_lab = write_idx(tmp_path / "lab", labels)
    good_img = write_idx(tmp_path / "img", images)
    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(DataFileError, match=r"magic number 0x01020801; an IDX file starts with 0x0000TTDD"):
        read_idx(bad_magic)
    bad_code = tmp_path / "code"
    bad_code.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataFileError, match=r"magic number 0x00000701"):
        read_idx(bad_code)
    truncated = tmp_path / "trunc"
    truncated.write_bytes(good_img.read_bytes()[:-5])
    with pytest.raises(DataFileError, match=r"declares shape \(12, 4, 3\) of uint8 \(144 data bytes\) but holds 139; the file is truncated"):
        read_idx(truncated)
    short_header = tmp_path / "header"
    short_header.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 12))
    with pytest.raises(DataFileError, match=r"declares 3 dimensions but ends inside the header"):
        read_idx(short_header)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00\x00")
    with pytest.raises(DataFileError, match=r"holds 2 bytes, too few for an IDX magic number"):
        read_idx(tiny)
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(gzip.compress(good_lab.read_bytes())[:-10])
    with pytest.raises(DataFileError, match=r"starts like gzip but does not decompress"):
        read_idx(bad_gz)
    with pytest.raises(MissingFileError, match=r"IDX file .*nothere does not exist"):
        read_idx(tmp_path / "nothere")
    with pytest.raises(DataFileError, match=r"images file .*img holds 12 images but labels file .*lab11 11 labels; pair matching files"):
        load_idx(good_img, write_idx(tmp_path / "lab11", labels[:11]))
    with pytest.raises(DataFileError, match=r"images file .*lab holds shape \(12,\); expected \(N, ...\) with at least 2 dimensions \(images and labels swapped\?\)"):
        load_idx(good_lab, good_lab)
    with pytest.raises(DataFileError, match=r"labels file .*img holds shape \(12, 4, 3\); expected \(N,\)"):
        load_idx(good_img, good_img)
    with pytest.raises(DataFileError, match=r"labels file .*labf holds float32 values; expected an integer type"):
        load_idx(good_img, write_idx(tmp_path / "labf", labels.astype(np.float32), "f4"))


def test_idx_classes_errors(tmp_path, tiny_images):
    images, labels = tiny_images
    ip, lp = write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", labels)
    with pytest.raises(ParameterError, match=r"classes \[7\] have no samples in this data \(its labels are \[0, 1, 2\]\)"):
        load_idx(ip, lp, classes=[0, 7])
    with pytest.raises(ParameterError, match=r"classes must be distinct, got \[1, 1\]"):
        load_idx(ip, lp, classes=[1, 1])
    with pytest.raises(ParameterError, match=r"limit_per_class must be int in \[1, inf\), got 0"):
        load_idx(ip, lp, limit_per_class=0)
    gap = write_idx(tmp_path / "gap", np.where(labels == 1, 2, labels).astype(np.uint8))
    with pytest.raises(EmptyClassError, match=r"classes must be 0..2 with every class present, but class 1 has no samples"):
        load_idx(ip, gap)


@pytest.mark.parametrize("spelling", ["{p}-{k}-idx{r}-ubyte.gz", "{p}-{k}-idx{r}-ubyte", "{p}-{k}.idx{r}-ubyte"])
def test_load_idx_folder(tmp_path, tiny_images, spelling):
    images, labels = tiny_images
    for prefix, n in (("train", 12), ("t10k", 6)):
        write_idx(tmp_path / spelling.format(p=prefix, k="images", r=3), images[:n])
        write_idx(tmp_path / spelling.format(p=prefix, k="labels", r=1), labels[:n])
    train = load_idx_folder(tmp_path)
    test = load_idx_folder(tmp_path, "test")
    assert tuple(train.X.shape) == (12, 12) and tuple(test.X.shape) == (6, 12)
    assert test.labels.tolist() == labels[:6].tolist()
    assert load_dataset(tmp_path, split="test").num_samples == 6


def test_load_idx_folder_errors(tmp_path, tiny_images):
    with pytest.raises(MissingFileError, match=r"folder .*absent does not exist"):
        load_idx_folder(tmp_path / "absent")
    with pytest.raises(MissingFileError, match=r"has no images file; expected one of train-images-idx3-ubyte.gz, train-images-idx3-ubyte"):
        load_idx_folder(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", tiny_images[0])
    with pytest.raises(MissingFileError, match=r"has no labels file; expected one of train-labels-idx1-ubyte.gz"):
        load_idx_folder(tmp_path)
    with pytest.raises(ParameterError, match=r"split must be one of 'train', 'test', got 'val'"):
        load_idx_folder(tmp_path, "val")


# -- Fashion-MNIST ---------------------------------------------------------------------

fashion = pytest.mark.skipif(not FASHION_MNIST_ROOT.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")


@fashion
def test_fashion_mnist_test_split():
    data = load_fashion_mnist("test", dtype=torch.float32)
    assert tuple(data.X.shape) == (10000, 784) and data.X.dtype == torch.float32
    assert data.num_classes == 10 and data.class_counts.tolist() == [1000] * 10
    assert float(data.X.min()) == 0.0 and float(data.X.max()) == 1.0
    assert data.name == "fashion_mnist(test)"


@fashion
def test_fashion_mnist_train_classes_and_limit():
    data = load_fashion_mnist("train", classes=[9, 0], limit_per_class=3)
    assert tuple(data.X.shape) == (6, 784) and data.num_classes == 2 and data.class_counts.tolist() == [3, 3]
    raw_labels = read_idx(FASHION_MNIST_ROOT / "train-labels-idx1-ubyte.gz")
    raw_images = read_idx(FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz")
    first = np.sort(np.concatenate([np.flatnonzero(raw_labels == 9)[:3], np.flatnonzero(raw_labels == 0)[:3]]))
    assert data.labels.tolist() == [0 if raw_labels[i] == 9 else 1 for i in first]
    assert np.array_equal(data.X.numpy(), raw_images[first].reshape(6, 784) / 255.0)
    assert load_dataset("fashion_mnist", split="test", limit_per_class=1).num_samples == 10


def test_fashion_mnist_missing_root(tmp_path):
    with pytest.raises(MissingFileError, match=r"Fashion-MNIST not found at .*nope; install it with `apt-get install dataset-fashion-mnist`"):
        load_fashion_mnist(root=tmp_path / "nope")


# -- npz / pt --------------------------------------------------------------------------


def _arrays():
    rng = np.random.default_rng(2)
    return rng.standard_normal((7, 3)), np.array([0, 1, 2, 0, 1, 2, 2]), rng.standard_normal((3, 4))


def test_load_npz(tmp_path):
    X, labels, Y = _arrays()
    np.savez(tmp_path / "with_y.npz", X=X, labels=labels, Y=Y)
    data = load_npz(tmp_path / "with_y.npz")
    assert np.array_equal(data.X.numpy(), X) and data.labels.tolist() == labels.tolist() and np.array_equal(data.Y.numpy(), Y)
    assert data.name == "with_y"
    np.savez(tmp_path / "plain.npz", feats=X, y=labels)
    plain = load_npz(tmp_path / "plain.npz", x_key="feats", labels_key="y")
    assert torch.equal(plain.Y, torch.eye(3, dtype=torch.float64))
    ignored = load_npz(tmp_path / "with_y.npz", y_key=None, dtype=torch.float32)
    assert ignored.Y.shape == (3, 3) and ignored.X.dtype == torch.float32
    # the round trip of ClassificationData.to_numpy, the CLI's layout
    np.savez(tmp_path / "rt.npz", **data.to_numpy())
    assert torch.equal(load_dataset(tmp_path / "rt.npz").X, data.X)


def test_load_npz_errors(tmp_path):
    X, labels, _ = _arrays()
    with pytest.raises(MissingFileError, match=r"load_npz: file .*none.npz does not exist"):
        load_npz(tmp_path / "none.npz")
    np.savez(tmp_path / "nolab.npz", X=X)
    with pytest.raises(DataFileError, match=r"has no array 'labels' \(arrays: X\)"):
        load_npz(tmp_path / "nolab.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(DataFileError, match=r"junk.npz is not an .npz archive \(no zip header\)"):
        load_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", X)
    with pytest.raises(DataFileError, match=r"holds a single array, not an .npz archive"):
        load_npz(tmp_path / "single.npy")
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}], dtype=object), labels=labels)
    with pytest.raises(DataFileError, match=r"cannot be read without pickle"):
        load_npz(tmp_path / "obj.npz")
    Xn = X.copy()
    Xn[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=Xn, labels=labels)
    with pytest.raises(NonFiniteError, match=r"load_npz\(nan.npz\): X has 1 non-finite entry, first NaN at index \(2, 1\)"):
        load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "badlab.npz", X=X, labels=labels + 0.5)
    with pytest.raises(LabelError, match=r"labels must be integers, got non-integral values such as 0.5"):
        load_npz(tmp_path / "badlab.npz")


def test_load_pt(tmp_path):
    X, labels, Y = _arrays()
    Xt, lt, Yt = torch.from_numpy(X), torch.from_numpy(labels), torch.from_numpy(Y)
    torch.save({"X": Xt, "labels": lt, "Y": Yt}, tmp_path / "d.pt")
    data = load_pt(tmp_path / "d.pt")
    assert torch.equal(data.X, Xt) and torch.equal(data.labels, lt) and torch.equal(data.Y, Yt)
    torch.save((Xt.float(), lt), tmp_path / "t.pth")
    tup = load_dataset(tmp_path / "t.pth")
    assert tup.X.dtype == torch.float64 and torch.equal(tup.X, Xt.float().double()) and tup.Y.shape == (3, 3)
    torch.save([Xt, lt, Yt], tmp_path / "l.pt")
    assert torch.equal(load_pt(tmp_path / "l.pt").Y, Yt)


def test_load_pt_errors(tmp_path):
    X, labels, _ = _arrays()
    torch.save({"inputs": torch.from_numpy(X)}, tmp_path / "k.pt")
    with pytest.raises(DataFileError, match=r"has no entry 'X' \(entries: inputs\)"):
        load_pt(tmp_path / "k.pt")
    torch.save(torch.from_numpy(X), tmp_path / "tensor.pt")
    with pytest.raises(DataFileError, match=r"holds a Tensor; expected a dict with 'X' and 'labels' or a tuple"):
        load_pt(tmp_path / "tensor.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(DataFileError, match=r"junk.pt is not a loadable torch file of tensors"):
        load_pt(tmp_path / "junk.pt")
    with pytest.raises(MissingFileError, match=r"load_pt: file .*absent.pt does not exist"):
        load_pt(tmp_path / "absent.pt")
    with pytest.raises(MissingFileError, match=r"is a folder, not a file"):
        load_pt(tmp_path)


# -- torch Dataset ---------------------------------------------------------------------


class _Pairs(torch.utils.data.Dataset):
    """Map-style dataset yielding (numpy image, int label)."""

    def __init__(self, images: np.ndarray, labels: list[int]) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def test_from_dataset_shapes():
    rng = np.random.default_rng(3)
    images = rng.standard_normal((10, 2, 3))
    labels = [0, 1, 2, 1, 0, 2, 2, 1, 0, 0]
    data = from_dataset(_Pairs(images, labels), batch_size=4)
    assert tuple(data.X.shape) == (10, 6) and data.labels.tolist() == labels
    assert np.array_equal(data.X.numpy(), images.reshape(10, 6))
    td = torch.utils.data.TensorDataset(torch.from_numpy(images).float(), torch.tensor(labels))
    assert torch.equal(from_dataset(td).X, torch.from_numpy(images).float().double().reshape(10, 6))
    stream = from_dataset(_Stream([(torch.tensor([1.0, 2.0]), 1), (torch.tensor([3.0, 4.0]), 0)]), num_classes=2)
    assert stream.X.tolist() == [[1.0, 2.0], [3.0, 4.0]] and stream.num_classes == 2


def test_from_dataset_errors():
    with pytest.raises(ShapeError, match=r"from_dataset: the dataset is empty"):
        from_dataset(_Stream([]))
    with pytest.raises(ShapeError, match=r"cannot stack the dataset's items"):
        from_dataset(_Stream([(torch.zeros(2), 0), (torch.zeros(3), 1)]))
    with pytest.raises(ParameterError, match=r"must yield \(input, label\) pairs, got 3-tuples"):
        from_dataset(_Stream([(torch.zeros(2), 0, 5)]))
    with pytest.raises(ShapeError, match=r"labels of shape \(2,\) per item \(one-hot"):
        from_dataset(_Stream([(torch.zeros(2), torch.tensor([1.0, 0.0]))]))
    with pytest.raises(EmptyClassError, match=r"classes must be 0..2 with every class present, but class 1 has no samples"):
        from_dataset(_Stream([(torch.zeros(2), 0), (torch.ones(2), 2)]))
    with pytest.raises(LabelError, match=r"labels must be integers in \[0, 2\) \(C = 2 classes given\), found 2 among the values \{0, 2\}; remap"):
        from_dataset(_Stream([(torch.zeros(2), 0), (torch.ones(2), 2)]), num_classes=2)


# -- selection and the registry --------------------------------------------------------


def test_select_classes_on_data():
    X = torch.arange(16, dtype=torch.float64).reshape(8, 2)
    data = check_data(X, [3, 1, 0, 3, 1, 2, 3, 0], Y=4 * torch.eye(4, dtype=torch.float64))
    sub = select_classes(data, [3, 0], limit_per_class=2)
    assert sub.labels.tolist() == [0, 1, 0, 1] and torch.equal(sub.X, X[[0, 2, 3, 7]])
    assert torch.equal(sub.Y, torch.eye(2, dtype=torch.float64))
    kept = select_classes(data, [3, 0], Y=data.Y[[3, 0]])
    assert tuple(kept.Y.shape) == (2, 4) and torch.equal(kept.targets, data.targets[[0, 2, 3, 6, 7]])
    limited = select_classes(data, limit_per_class=1)
    assert limited.labels.tolist() == [3, 1, 0, 2] and torch.equal(limited.Y, data.Y)


def test_registry_and_dispatch(tmp_path):
    assert set(LOADERS) == {"breast_cancer", "digits", "fashion_mnist", "iris", "mnist1d", "wine"}
    with pytest.raises(TypeError):
        LOADERS["mine"] = load_iris  # read-only registry
    assert tuple(load_dataset("iris").X.shape) == (150, 4)
    assert tuple(load_dataset("mnist1d", num_samples=20).X.shape) == (20, 40)
    with pytest.raises(UnknownNameError, match=r"unknown data set 'cifar10'; known: breast_cancer, digits, fashion_mnist, iris, mnist1d, wine, or a path"):
        load_dataset("cifar10")
    with pytest.raises(MissingFileError, match=r"load_npz: file .*missing.npz does not exist"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(DataFileError, match=r"has suffix '.csv'; expected a folder of IDX files, .npz, .pt or .pth"):
        load_dataset(tmp_path / "data.csv")


def test_every_error_is_a_collapselab_error(tmp_path):
    for call in (lambda: load_sklearn("x"), lambda: load_npz(tmp_path / "x.npz"), lambda: read_idx(tmp_path / "x")):
        with pytest.raises(CollapseLabError):
            call()


# -- the array and label contract ---------------------------------------------------------


def test_damaged_npz_and_array_aliases(tmp_path):
    from collapselab.core.data import read_npz

    X, labels = np.arange(600.0).reshape(200, 3), np.arange(200) % 4
    path = tmp_path / "d.npz"
    np.savez(path, features=X, labels=labels)  # `features` for `X`: one file for every command
    data = load_dataset(path)
    assert torch.equal(data.X, torch.from_numpy(X)) and data.num_classes == 4
    assert set(read_npz(path, ("X", "labels"))) == {"X", "labels"}
    torch.save({"features": torch.from_numpy(X), "labels": torch.from_numpy(labels)}, tmp_path / "d.pt")
    assert torch.equal(load_dataset(tmp_path / "d.pt").X, data.X)
    np.savez(path, X=X, features=X, labels=labels)
    with pytest.raises(ShapeError, match=r"holds both 'X' and 'features'; keep one of them"):
        load_dataset(path)
    np.savez(path, X=X, labels=labels)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # a byte of X's data: headers intact, CRC wrong
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match=r"is a damaged .npz archive \(BadZipFile: Bad CRC-32"):
        load_dataset(path)


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, 1, -1, 2], r"labels must be integers in \[0, 3\), found -1 among the values \{-1, 0, 1, 2\}; remap them to 0..C-1 with labels = np.unique"),
        ([3, 7, 9, 3], r"classes must be 0..9 with every class present, but class 0 has no samples \(label values \{3, 7, 9\}\); remap"),
        ([0.0, 1.0, 1.5, 0.0], r"labels must be integers, got non-integral values such as 1.5"),
        ([True, False, True, False], r"labels must be integers, got booleans"),
    ],
)
def test_label_contract_of_the_loaders(tmp_path, labels, message):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((4, 2)), labels=np.array(labels))
    with pytest.raises(CollapseLabError, match=message):
        load_dataset(path)


def test_labels_fixed_by_Y_rows(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((4, 2)), labels=np.array([0, 1, 2, 0]), Y=np.eye(2))
    with pytest.raises(LabelError, match=r"labels must be integers in \[0, 2\) \(C = 2 classes given\), found 2"):
        load_dataset(path)
