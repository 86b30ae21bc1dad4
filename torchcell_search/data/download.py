"""Fetch the official data sources into the data-directory layout the readers expect.

Every file of :data:`SOURCES` is fetched to ``dest/<relative path>`` from its official
home, or from ``base_url/<relative path>`` when a mirror is given (also what the tests do).
Downloads are resumable: bytes go to ``<file>.part`` and a later call continues with an
HTTP ``Range`` request (a server that ignores ``Range`` and answers 200 restarts the file).
A finished file is verified (Content-Length, sha256 where the table has one, gzip/zip
integrity) and only then renamed into place, so ``dest`` never holds half a file under its
final name. Files already in place are skipped.

The official files keep their upstream formats (e.g. Costanzo's pair-wise zip, the BioGRID
organism zip, the YEASTRACT matrix); the readers in ``data/`` read those as well as the
curated mirror described in ``shared/data/README.md``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from torchcell_search.errors import DataError

__all__ = ["SOURCES", "Source", "download"]

_TIMEOUT_S = 60.0
_CHUNK = 1 << 16
_USER_AGENT = "torchcell-search-download/0.1"


@dataclass(frozen=True)
class Source:
    """One file to fetch: where it lands (relative to ``dest``) and its official URL."""

    path: str  # relative path under dest, "/"-separated; also the path under a mirror base_url
    url: str  # the official download address
    sha256: str | None = None  # hex digest where the upstream file is pinned
    description: str = ""


_CELLMAP = "https://thecellmap.org/costanzo2016/data_files"
_YEAST_GEM = "https://raw.githubusercontent.com/SysBioChalmers/yeast-GEM/v9.0.2"
_INFERELATOR = "https://raw.githubusercontent.com/flatironinstitute/inferelator/master"

#: The official sources, in download order. Paths under ``dest`` follow the data layout.
SOURCES: tuple[Source, ...] = (
    Source(
        "costanzo2016/SGA_pairwise.zip",
        f"{_CELLMAP}/Raw%20genetic%20interaction%20datasets:%20Pair-wise%20interaction%20format.zip",
        description="Costanzo 2016 Data File S1: SGA_NxN / SGA_ExN_NxE / SGA_ExE pair-wise tables",
    ),
    Source(
        "costanzo2016/strain_ids_and_single_mutant_fitness.xlsx",
        f"{_CELLMAP}/strain_ids_and_single_mutant_fitness.xlsx",
        description="Costanzo 2016 single-mutant fitness per strain",
    ),
    Source(
        "graph/BIOGRID-ORGANISM-4.4.235.tab3.zip",
        "https://downloads.thebiogrid.org/Download/BioGRID/Release-Archive/BIOGRID-4.4.235/"
        "BIOGRID-ORGANISM-4.4.235.tab3.zip",
        description="BioGRID 4.4.235 organism files (Saccharomyces_cerevisiae_S288c tab3 inside)",
    ),
    Source(
        "graph/YEASTRACT_20190713_BOTH.tsv",
        f"{_INFERELATOR}/data/yeast/YEASTRACT_20190713_BOTH.tsv",
        description="YEASTRACT TF x target 0/1 matrix as distributed by the inferelator",
    ),
    Source("graph/yeast-GEM.xml", f"{_YEAST_GEM}/model/yeast-GEM.xml", description="Yeast9 SBML model"),
    Source("graph/yeast-GEM.LICENSE.md", f"{_YEAST_GEM}/LICENSE.md", description="Yeast-GEM licence (CC-BY-4.0)"),
    Source(
        "graph/SGDgeneNames.tsv",
        f"{_YEAST_GEM}/data/databases/SGDgeneNames.tsv",
        description="SGD systematic/standard gene names (gene universe)",
    ),
    Source(
        "graph/inviable_orfs_yeast_deletion_project.txt",
        f"{_YEAST_GEM}/data/physiology/inviable_orfs_yeast_deletion_project.txt",
        description="Yeast Deletion Project inviable ORFs (essential genes)",
    ),
    Source(
        "graph/gene_association.sgd.gz",
        "https://current.geneontology.org/annotations/sgd.gaf.gz",
        description="SGD Gene Ontology annotations (GAF)",
    ),
    Source(
        "graph/gene_ontology.obo",
        "https://purl.obolibrary.org/obo/go.obo",
        description="Gene Ontology (OBO)",
    ),
)


def download(
    dest: Path,
    *,
    base_url: str | None = None,
    progress: bool = True,
    sources: tuple[Source, ...] | None = None,
    timeout: float = _TIMEOUT_S,
) -> list[Path]:
    """Fetch every source into ``dest``, resuming partial downloads.

    Example:
        ``download(Path("data"), base_url="http://mirror.example/torchcell")`` fetches
        ``http://mirror.example/torchcell/graph/SGDgeneNames.tsv`` to
        ``data/graph/SGDgeneNames.tsv`` and so on.

    Args:
        dest: Directory to write the layout into (created).
        base_url: Mirror to fetch ``<base_url>/<relative path>`` from instead of the
            official URLs (default: the official homes).
        progress: Show a tqdm bar per file.
        sources: Files to fetch (default: :data:`SOURCES`).
        timeout: Seconds to wait for a connection or a read before giving up.

    Returns:
        The paths of all files now in place, in ``sources`` order.

    Raises:
        DataError: an HTTP error, an unreachable host or a timeout, a truncated or corrupt
            file (its ``.part`` is removed so the next call starts afresh), or ``dest`` not
            writable. The message names the URL.
    """
    dest = Path(dest)
    sources = SOURCES if sources is None else sources
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"download destination {dest}: cannot create ({e.strerror or e})") from e
    out = []
    for src in sources:
        url = f"{base_url.rstrip('/')}/{src.path}" if base_url else src.url
        target = dest.joinpath(*src.path.split("/"))
        if not target.exists():
            _fetch(url, target, sha256=src.sha256, progress=progress, timeout=timeout)
        out.append(target)
    return out


def _fetch(url: str, target: Path, *, sha256: str | None, progress: bool, timeout: float) -> None:
    """Download ``url`` to ``target`` via ``target.part``, resuming, verifying, renaming."""
    part = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"download {url}: cannot create {target.parent} ({e.strerror or e})") from e
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # our .part is already complete (or longer than the file)
            _finish(url, part, target, expected=None, sha256=sha256)
            return
        raise DataError(f"download {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, socket.timeout, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"download {url}: unreachable ({reason})") from e

    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        if offset and status == 206:
            mode, expected = "ab", (offset + remaining if remaining is not None else None)
        else:  # a fresh start, or the server ignored Range and sends the whole file
            offset, mode, expected = 0, "wb", remaining
        bar = tqdm(
            total=expected, initial=offset, unit="B", unit_scale=True, desc=target.name,
            disable=not progress, leave=False,
        )
        try:
            with open(part, mode) as fh:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    bar.update(len(chunk))
        except (socket.timeout, OSError) as e:
            # Keep the .part: the next call resumes from it.
            got = part.stat().st_size if part.exists() else 0
            raise DataError(f"download {url}: connection lost after {got} bytes ({e}); run again to resume") from e
        finally:
            bar.close()
    _finish(url, part, target, expected=expected, sha256=sha256)


def _finish(url: str, part: Path, target: Path, *, expected: int | None, sha256: str | None) -> None:
    """Verify ``part`` and rename it to ``target``; remove it when it is corrupt."""
    size = part.stat().st_size
    if expected is not None and size != expected:
        if size > expected:
            part.unlink(missing_ok=True)
        raise DataError(f"download {url}: got {size} bytes, Content-Length says {expected}; run again to resume")
    problem = _verify(part, target.name, sha256)
    if problem:
        part.unlink(missing_ok=True)
        raise DataError(f"download {url}: {problem}; the partial file was removed, run again")
    os.replace(part, target)


def _verify(path: Path, name: str, sha256: str | None) -> str | None:
    """The problem with a downloaded file, or None when every available check passes."""
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != sha256.lower():
            return f"sha256 {digest.hexdigest()} does not match the expected {sha256}"
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        elif name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                return f"zip member {bad} is corrupt"
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        return f"corrupt {'gzip' if name.endswith('.gz') else 'zip'} file ({e})"
    return None
