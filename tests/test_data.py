"""Tests for lth.data: IDX parsing, MNIST loading and splitting, and checksummed downloads."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lth.data import ImageData, Split, download, download_mnist, load_mnist, read_idx, write_idx
from lth.data.mnist import FILES, embedded_dir
from lth.errors import ConfigError, DataError, LthError

EMBEDDED = embedded_dir("mnist")


@pytest.fixture(scope="module")
def mnist() -> ImageData:
    """The embedded MNIST, loaded once for the whole module (it takes about a second)."""
    return load_mnist()


def idx_bytes(array: np.ndarray, tmp: Path) -> bytes:
    """The plain IDX encoding of ``array``."""
    return write_idx(tmp / "encode.idx", array).read_bytes()


def write_dataset(root: Path, *, n_train=12, n_test=4, hw=(5, 7), gz=False, seed=0) -> Path:
    """Write a small synthetic dataset in the MNIST layout; return its directory."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for role, array in arrays.items():
        write_idx(root / f"{FILES[role]}{suffix}", array)
    return root


def assert_one_line_naming(exc: pytest.ExceptionInfo, path: Path | str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message


# --- embedded MNIST --------------------------------------------------------------------------


def test_embedded_mnist_has_55000_5000_10000_split(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (55000, 5000, 10000)
    assert mnist.name == "mnist" and mnist.num_classes == 10 and mnist.shape == (1, 28, 28)


def test_embedded_mnist_shapes_and_dtypes(mnist):
    for split, n in ((mnist.train, 55000), (mnist.val, 5000), (mnist.test, 10000)):
        assert split.x.shape == (n, 1, 28, 28) and split.x.dtype == torch.float32
        assert split.y.shape == (n,) and split.y.dtype == torch.int64
        assert int(split.y.min()) >= 0 and int(split.y.max()) == 9


def test_train_split_is_normalized(mnist):
    assert abs(float(mnist.train.x.mean())) < 1e-4
    assert abs(float(mnist.train.x.std()) - 1.0) < 1e-3
    assert mnist.mean == pytest.approx(0.1307, abs=1e-3) and mnist.std == pytest.approx(0.308, abs=2e-3)


def test_val_split_is_last_training_images(mnist, tmp_path):
    labels = read_idx(EMBEDDED / "train-labels-idx1-ubyte.gz")
    assert torch.equal(mnist.val.y, torch.from_numpy(labels[-5000:]).long())
    assert torch.equal(mnist.train.y, torch.from_numpy(labels[:-5000]).long())


def test_to_device_returns_copy_with_same_data(mnist):
    moved = mnist.to("cpu")
    assert isinstance(moved, ImageData) and moved.shape == mnist.shape
    assert torch.equal(moved.test.y, mnist.test.y)


def test_unknown_embedded_dataset_is_config_error():
    with pytest.raises(ConfigError, match="kmnist"):
        load_mnist(name="kmnist")


# --- reading from a data directory -----------------------------------------------------------


def test_plain_and_gz_read_identically(tmp_path):
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    with gzip.open(EMBEDDED / "t10k-labels-idx1-ubyte.gz") as src:
        plain.write_bytes(src.read())
    a = read_idx(plain)
    b = read_idx(EMBEDDED / "t10k-labels-idx1-ubyte.gz")
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (10000,)
    assert np.array_equal(a, b)


def test_idx_roundtrip_preserves_dtype_and_shape(tmp_path):
    for dtype in ("u1", "i1", ">i2", "<i4", "f4", ">f8"):
        array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
        for name in ("a.idx", "a.idx.gz"):
            back = read_idx(write_idx(tmp_path / name, array))
            assert back.shape == array.shape and back.dtype == array.dtype.newbyteorder("=")
            assert np.array_equal(back, array)


def test_load_from_data_dir_plain_and_gz_agree(tmp_path):
    plain = load_mnist(write_dataset(tmp_path / "plain"), name="synthetic", val_size=3)
    packed = load_mnist(write_dataset(tmp_path / "gz", gz=True), name="synthetic", val_size=3)
    assert (len(plain.train), len(plain.val), len(plain.test)) == (9, 3, 4)
    assert plain.shape == (1, 5, 7) and plain.train.x.shape == (9, 1, 5, 7)
    assert torch.equal(plain.train.x, packed.train.x) and torch.equal(plain.test.y, packed.test.y)


def test_normalization_uses_train_split_statistics(tmp_path):
    root = write_dataset(tmp_path, n_train=10)
    images = read_idx(root / FILES["train_images"])
    data = load_mnist(root, val_size=4)
    train = images[:6].astype(np.float64) / 255
    assert data.mean == pytest.approx(train.mean()) and data.std == pytest.approx(train.std())
    expected_val = (images[6:].astype(np.float64) / 255 - train.mean()) / train.std()
    assert np.allclose(data.val.x[:, 0].numpy(), expected_val, atol=1e-5)


def test_val_size_zero_gives_empty_val_split(tmp_path):
    data = load_mnist(write_dataset(tmp_path), val_size=0)
    assert len(data.train) == 12 and len(data.val) == 0 and data.val.x.shape == (0, 1, 5, 7)


@pytest.mark.parametrize("val_size", [12, 13, -1])
def test_val_size_must_leave_training_images(tmp_path, val_size):
    with pytest.raises(ConfigError, match="val_size"):
        load_mnist(write_dataset(tmp_path), val_size=val_size)


# --- malformed files -------------------------------------------------------------------------


def test_truncated_file_is_data_error(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8), tmp_path)[:-5])
    with pytest.raises(DataError, match="truncated: expected 48 bytes of payload, found 43") as exc:
        read_idx(path)
    assert_one_line_naming(exc, path)


def test_overlong_file_is_data_error(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(np.zeros((3, 4), np.uint8), tmp_path) + b"\x00")
    with pytest.raises(DataError, match="overlong") as exc:
        read_idx(path)
    assert_one_line_naming(exc, path)


def test_bad_magic_is_data_error(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataError, match="bad magic") as exc:
        read_idx(path)
    assert_one_line_naming(exc, path)


def test_unknown_dtype_code_is_data_error(tmp_path):
    path = tmp_path / "x.idx"
    data = bytearray(idx_bytes(np.zeros(4, np.uint8), tmp_path))
    data[2] = 0x07
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="dtype code 0x07") as exc:
        read_idx(path)
    assert_one_line_naming(exc, path)


def test_corrupt_gzip_is_data_error(tmp_path):
    path = tmp_path / "x.idx.gz"
    packed = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8), tmp_path)))
    packed[20:30] = b"\xff" * 10
    path.write_bytes(bytes(packed))
    with pytest.raises(DataError, match="corrupt gzip") as exc:
        read_idx(path)
    assert_one_line_naming(exc, path)


def test_truncated_gzip_is_data_error(tmp_path):
    path = tmp_path / "x.idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8), tmp_path))[:-12])
    with pytest.raises(DataError) as exc:
        read_idx(path)
    assert_one_line_naming(exc, path)


def test_missing_file_is_named(tmp_path):
    root = write_dataset(tmp_path)
    (root / FILES["test_labels"]).unlink()
    with pytest.raises(DataError) as exc:
        load_mnist(root)
    assert_one_line_naming(exc, root / FILES["test_labels"])


def test_missing_path_to_read_idx_is_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file") as exc:
        read_idx(tmp_path / "nope.gz")
    assert_one_line_naming(exc, tmp_path / "nope.gz")


def test_mismatched_image_and_label_counts_is_data_error(tmp_path):
    root = write_dataset(tmp_path, n_train=12)
    write_idx(root / FILES["train_labels"], np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="11 labels") as exc:
        load_mnist(root, val_size=2)
    assert_one_line_naming(exc, root / FILES["train_labels"])


def test_label_out_of_range_is_data_error(tmp_path):
    root = write_dataset(tmp_path)
    labels = np.zeros(4, np.uint8)
    labels[2] = 10
    write_idx(root / FILES["test_labels"], labels)
    with pytest.raises(DataError, match="label 10 at index 2 is out of range") as exc:
        load_mnist(root, val_size=2)
    assert_one_line_naming(exc, root / FILES["test_labels"])


def test_images_must_be_3d_uint8(tmp_path):
    root = write_dataset(tmp_path)
    write_idx(root / FILES["train_images"], np.zeros((12, 5, 7), np.float32))
    with pytest.raises(DataError, match="3-D uint8") as exc:
        load_mnist(root, val_size=2)
    assert_one_line_naming(exc, root / FILES["train_images"])


def test_labels_must_be_1d_uint8(tmp_path):
    root = write_dataset(tmp_path)
    write_idx(root / FILES["train_labels"], np.zeros((12, 1), np.uint8))
    with pytest.raises(DataError, match="1-D uint8") as exc:
        load_mnist(root, val_size=2)
    assert_one_line_naming(exc, root / FILES["train_labels"])


def test_train_and_test_image_sizes_must_match(tmp_path):
    root = write_dataset(tmp_path)
    write_idx(root / FILES["test_images"], np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(DataError, match="5x6") as exc:
        load_mnist(root, val_size=2)
    assert_one_line_naming(exc, root / FILES["test_images"])


@settings(max_examples=40, deadline=None)
@given(data=st.data(), gz=st.booleans())
def test_any_truncation_of_valid_idx_raises_data_error(tmp_path_factory, data, gz):
    tmp = tmp_path_factory.mktemp("trunc")
    shape = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3), label="shape")
    full = idx_bytes(np.ones(shape, np.int16), tmp)
    if gz:
        full = gzip.compress(full)
    cut = data.draw(st.integers(0, len(full) - 1), label="cut")
    path = tmp / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(full[:cut])
    with pytest.raises(DataError) as exc:
        read_idx(path)
    assert_one_line_naming(exc, path)


def test_data_error_is_an_lth_error():
    assert issubclass(DataError, LthError)


def test_split_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.int64))


# --- downloads -------------------------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 (ephemeral port) serving ``tmp_path / 'srv'``; yields its URL."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def uncompressed_sha256(path: Path) -> str:
    with gzip.open(path) as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_download_with_right_checksum_succeeds(server, tmp_path):
    url, root = server
    src = EMBEDDED / "t10k-labels-idx1-ubyte.gz"
    shutil.copy(src, root / src.name)
    dest = tmp_path / "out" / src.name
    download(url + src.name, dest, uncompressed_sha256(src), timeout=10)
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == [src.name]


def test_download_with_wrong_checksum_raises_and_leaves_no_file(server, tmp_path):
    url, root = server
    src = EMBEDDED / "t10k-labels-idx1-ubyte.gz"
    shutil.copy(src, root / src.name)
    dest = tmp_path / "out" / src.name
    with pytest.raises(DataError, match="checksum mismatch") as exc:
        download(url + src.name, dest, "0" * 64, timeout=10)
    assert_one_line_naming(exc, dest)
    assert list(dest.parent.iterdir()) == []


def test_download_http_error_is_one_line_data_error(server, tmp_path):
    url, _ = server
    dest = tmp_path / "out" / "missing.gz"
    with pytest.raises(DataError, match="HTTP 404") as exc:
        download(url + "missing.gz", dest, timeout=10)
    assert "\n" not in str(exc.value)
    assert list(dest.parent.iterdir()) == []


def test_download_connection_refused_is_one_line_data_error(tmp_path):
    with socket.socket() as sock:  # find a port nobody is listening on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError, match="download failed") as exc:
        download(f"http://127.0.0.1:{port}/x.gz", tmp_path / "x.gz", timeout=5)
    assert "\n" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_download_mnist_fetches_missing_and_skips_valid_files(server, tmp_path):
    url, root = server
    dest = tmp_path / "mnist"
    dest.mkdir()
    for stem in FILES.values():
        shutil.copy(EMBEDDED / f"{stem}.gz", root / f"{stem}.gz")
    shutil.copy(EMBEDDED / "train-images-idx3-ubyte.gz", dest)  # already present and valid
    (root / "train-images-idx3-ubyte.gz").unlink()  # so fetching it would fail
    assert download_mnist(dest, base_url=url) == dest
    for stem in FILES.values():
        assert (dest / f"{stem}.gz").read_bytes() == (EMBEDDED / f"{stem}.gz").read_bytes()


def test_unnormalized_pixels_lie_in_unit_interval():
    from lth.data import load_mnist

    data = load_mnist(normalize=False, val_size=5000)
    assert float(data.train.x.min()) == 0.0 and float(data.train.x.max()) == 1.0
