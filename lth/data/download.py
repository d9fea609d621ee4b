"""Fetch MNIST-format datasets over HTTP(S), verified by checksum.

MNIST and Fashion-MNIST are embedded in the package; this is for other datasets in the same
layout or for refreshing a data directory. Downloads go to a temporary file next to
the destination and are renamed into place only once complete and verified, so an interrupted
or corrupted download never leaves a file that looks valid.

Checksums are SHA-256 of the UNCOMPRESSED contents: the same data gzipped by different tools
(or mirrors) gives different ``.gz`` bytes, but always the same payload.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from lth.errors import ConfigError, DataError
from lth.data.idx import one_line
from lth.data.mnist import FILES

CHUNK = 1 << 20

# Default public mirrors; the original yann.lecun.com site no longer serves the files.
MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

# SHA-256 of the uncompressed contents of each .gz file.
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}


def content_sha256(path: str | os.PathLike, *, label: str | os.PathLike | None = None) -> str:
    """SHA-256 hex digest of the file's contents, gunzipped first if its name ends in ``.gz``.

    ``label`` is the name used in errors (the final destination rather than a temp file).
    """
    label = path if label is None else label
    digest = hashlib.sha256()
    opener = gzip.open if Path(label).name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        kind = "corrupt gzip" if opener is gzip.open else "cannot read"
        raise DataError(f"{label}: {kind}: {one_line(exc) or type(exc).__name__}") from exc
    return digest.hexdigest()


def fetch_to(url: str, out, timeout: float) -> int:
    """Stream ``url`` into the open binary file ``out``; return the byte count.

    urllib does not complain when a server closes the connection early, so the count is
    checked against Content-Length here.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "lth"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        expected = response.headers.get("Content-Length")
        received = 0
        while chunk := response.read(CHUNK):
            out.write(chunk)
            received += len(chunk)
    if expected is not None and expected.isdigit() and int(expected) != received:
        raise DataError(f"{url}: incomplete download: expected {expected} bytes, received {received}")
    return received


def download(
    url: str, dest_path: str | os.PathLike, sha256: str | None = None, *, timeout: float = 60
) -> Path:
    """Download ``url`` to ``dest_path`` atomically; verify the uncompressed SHA-256 if given.

    On any failure (network, incomplete transfer, checksum mismatch) the partial or bad file is
    deleted, nothing appears at ``dest_path``, and a one-line DataError is raised.
    """
    dest = Path(dest_path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise DataError(f"{dest}: cannot write: {one_line(exc.strerror or exc)}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                fetch_to(url, out, timeout)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise DataError(f"{url}: download failed: {describe(exc)}") from exc
        if sha256 is not None:
            actual = content_sha256(tmp, label=dest)
            if actual != sha256.lower():
                raise DataError(
                    f"{dest}: checksum mismatch for {url}: expected SHA-256 {sha256}, got {actual}"
                )
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise DataError(f"{dest}: cannot write: {one_line(exc.strerror or exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def describe(exc: BaseException) -> str:
    """A short one-line reason for a network error (urllib nests the real one in ``reason``)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {one_line(exc.reason)}"
    if isinstance(exc, urllib.error.URLError):
        return one_line(exc.reason)
    return one_line(exc) or type(exc).__name__


def is_valid(path: Path, sha256: str) -> bool:
    """True if ``path`` exists and its uncompressed contents have the expected checksum."""
    if not path.is_file():
        return False
    try:
        return content_sha256(path) == sha256
    except DataError:
        return False


def download_mnist(
    dest_dir: str | os.PathLike, *, name: str = "mnist", base_url: str | None = None, timeout: float = 60
) -> Path:
    """Fetch the four ``.gz`` files of ``name`` into ``dest_dir``; return ``dest_dir``.

    Files already present with the right checksum are skipped, so this is cheap to re-run and
    resumes after a failure. ``base_url`` replaces the default mirror (any URL prefix the four
    standard file names can be appended to). The result can be read with
    ``load_mnist(dest_dir, name=name)``.
    """
    if name not in SHA256:
        raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(SHA256)})")
    base = (base_url or MIRRORS[name]).rstrip("/") + "/"
    dest = Path(dest_dir)
    for stem in FILES.values():
        file_name = f"{stem}.gz"
        checksum = SHA256[name][file_name]
        if not is_valid(dest / file_name, checksum):
            download(base + file_name, dest / file_name, checksum, timeout=timeout)
    return dest
