"""Fetch MNIST-format datasets and CIFAR-10 over HTTP(S), verified by checksum.

MNIST and Fashion-MNIST are embedded in the package; this is for other datasets in the same
layout or for refreshing a data directory. Downloads go to a temporary file next to
the destination and are renamed into place only once complete and verified, so an interrupted
or corrupted download never leaves a file that looks valid.

Checksums are SHA-256 of the UNCOMPRESSED contents: the same data gzipped by different tools
(or mirrors) gives different ``.gz`` bytes, but always the same payload. CIFAR-10 is one archive,
verified by its own bytes' SHA-256 (and MD5), of which only the six batch files lth reads are extracted.
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


def fetch_or_fail(url: str, out, timeout: float) -> int:
    """:func:`fetch_to`, a network or transfer failure as one DataError line naming ``url``."""
    try:
        return fetch_to(url, out, timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"{url}: download failed: {describe(exc)}") from exc


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
            fetch_or_fail(url, out, timeout)
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


# --- CIFAR-10 -----------------------------------------------------------------------------------------

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# Of the archive's own bytes (it is not a per-file dataset): SHA-256 as Keras' cifar10 and torchvision's
# prototype datasets check it, MD5 as torchvision's CIFAR10 does; 170,498,071 bytes.
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
# The members lth reads (lth.data.cifar.FILES, under cifar-10-batches-py/ in the archive) and their MD5s
# (torchvision's): checked after extraction, and what lets a re-run skip files already in place.
CIFAR10_MEMBERS = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
MEMBER_LIMIT = 64 << 20  # a batch file is 31 MB; a bigger member is not one


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cifar10_in_place(dest: Path) -> bool:
    """All six batch files are in ``dest`` with their known MD5s."""
    try:
        return all((dest / n).is_file() and file_md5(dest / n) == md5 for n, md5 in CIFAR10_MEMBERS.items())
    except OSError:
        return False


def extract_members(archive: Path, out: Path, label: str) -> None:
    """Copy the archive's ``cifar-10-batches-py/<name>`` for every name in CIFAR10_MEMBERS into ``out``.

    Nothing else is extracted, and nothing is written under a name the archive chose: a member named
    ``../x`` or ``/etc/x`` is simply not one of the six, so path traversal cannot happen. A wanted member
    that is not a regular file (a link, a device), is too big, appears twice or is missing is refused.
    """
    import tarfile

    from lth.data.cifar import SUBDIR

    wanted = {f"{SUBDIR}/{n}": n for n in CIFAR10_MEMBERS}
    found: set[str] = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None:
                    continue
                if name in found:
                    raise DataError(f"{label}: member {member.name} appears twice")
                if not member.isreg():
                    raise DataError(f"{label}: member {member.name} is not a regular file (a link or device)")
                if member.size > MEMBER_LIMIT:
                    raise DataError(f"{label}: member {member.name} is {member.size:,} bytes, more than a "
                                    f"CIFAR-10 batch ({MEMBER_LIMIT:,} at most)")
                src = tar.extractfile(member)
                with src, open(out / name, "xb") as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                found.add(name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{label}: corrupt or truncated archive: {one_line(exc) or type(exc).__name__}") from exc
    missing = [n for n in CIFAR10_MEMBERS if n not in found]
    if missing:
        raise DataError(f"{label}: the archive lacks {', '.join(f'{SUBDIR}/{n}' for n in missing)}")
    for name, md5 in CIFAR10_MEMBERS.items():
        actual = file_md5(out / name)
        if actual != md5:
            raise DataError(f"{label}: member {SUBDIR}/{name} has MD5 {actual}, expected {md5}")


def download_cifar10(
    dest_dir: str | os.PathLike, *, url: str | None = None, base_url: str | None = None, timeout: float = 60
) -> Path:
    """Fetch ``cifar-10-python.tar.gz``, verify its SHA-256 and MD5, and put its six batch files
    (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) straight into ``dest_dir``; return ``dest_dir``
    (``load_cifar10(dest_dir)`` and ``--data-dir dest_dir`` read it).

    ``url`` replaces the archive's URL; ``base_url`` a mirror's prefix the file name is appended to. Files
    already in place with their MD5s are not fetched again. The archive goes to a temporary file and the
    members to a temporary directory inside ``dest_dir``, each renamed into place only once everything is
    verified; on any failure those are deleted and a one-line DataError says why.
    """
    import shutil

    dest = Path(dest_dir)
    if url is None:
        url = CIFAR10_URL if base_url is None else base_url.rstrip("/") + "/" + CIFAR10_URL.rsplit("/", 1)[1]
    try:
        dest.mkdir(parents=True, exist_ok=True)
        if cifar10_in_place(dest):
            return dest
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=".cifar-10-python.tar.gz.", suffix=".part")
        work = Path(tempfile.mkdtemp(dir=dest, prefix=".cifar-10-batches."))
    except OSError as exc:
        raise DataError(f"{dest}: cannot write: {one_line(exc.strerror or exc)}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            fetch_or_fail(url, out, timeout)
        sha, md5 = hashlib.sha256(), hashlib.md5()
        with open(tmp, "rb") as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
                md5.update(chunk)
        if sha.hexdigest() != CIFAR10_SHA256 or md5.hexdigest() != CIFAR10_MD5:
            raise DataError(f"{url}: checksum mismatch: expected SHA-256 {CIFAR10_SHA256} (MD5 {CIFAR10_MD5}), "
                            f"got {sha.hexdigest()} (MD5 {md5.hexdigest()})")
        extract_members(tmp, work, url)
        try:
            for name in CIFAR10_MEMBERS:
                os.replace(work / name, dest / name)
        except OSError as exc:
            raise DataError(f"{dest}: cannot write: {one_line(exc.strerror or exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    return dest


def download_dataset(name: str, dest_dir: str | os.PathLike, *, base_url: str | None = None) -> Path:
    """``lth data download NAME``: CIFAR-10's archive, or the four files of an MNIST-format dataset."""
    if name == "cifar10":
        return download_cifar10(dest_dir, base_url=base_url)
    return download_mnist(dest_dir, name=name, base_url=base_url)
