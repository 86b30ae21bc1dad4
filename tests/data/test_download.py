"""Downloads against a real HTTP server on 127.0.0.1 (with Range support) in a thread."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path
from typing import Iterator

import pytest

from torchcell_search.cli import main
from torchcell_search.data.download import SOURCES, Source, download
from torchcell_search.errors import DataError


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range ``bytes=N-`` support; records each request's Range."""

    ranges: list[str | None]
    honour_range: bool = True

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        self.ranges.append(rng)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "not found")
            return
        body = path.read_bytes()
        if rng and self.honour_range and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes=") : -1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server:
    def __init__(self, root: Path, honour_range: bool) -> None:
        self.ranges: list[str | None] = []
        handler = type("H", (_RangeHandler,), {"ranges": self.ranges, "honour_range": honour_range})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_TEXT = b"Systematic_name\tStandard_name\n" + b"".join(b"Y%05dW\tGENE%d\n" % (i, i) for i in range(3000))
_GZ = gzip.compress(b"gene_a\tgene_b\n" + b"YAL001C\tYAL002W\n" * 5000)


@pytest.fixture()
def mirror(tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    (root / "graph").mkdir(parents=True)
    (root / "costanzo2016").mkdir()
    (root / "graph" / "names.tsv").write_bytes(_TEXT)
    (root / "costanzo2016" / "eps.tsv.gz").write_bytes(_GZ)
    (root / "graph" / "broken.tsv.gz").write_bytes(_GZ[: len(_GZ) // 2] + b"\x00" * 64)
    return root


@pytest.fixture()
def server(mirror: Path) -> Iterator[_Server]:
    s = _Server(mirror, honour_range=True)
    yield s
    s.close()


_SOURCES = (
    Source("graph/names.tsv", "http://unused.invalid/names.tsv", sha256=hashlib.sha256(_TEXT).hexdigest()),
    Source("costanzo2016/eps.tsv.gz", "http://unused.invalid/eps.tsv.gz"),
)


def test_download_fetches_every_file_into_the_layout(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    paths = download(dest, base_url=server.url, progress=False, sources=_SOURCES)
    assert paths == [dest / "graph" / "names.tsv", dest / "costanzo2016" / "eps.tsv.gz"]
    assert paths[0].read_bytes() == _TEXT and paths[1].read_bytes() == _GZ
    # no .part files remain
    assert not list(dest.rglob("*.part"))
    # a second call finds everything in place and makes no request
    n = len(server.ranges)
    download(dest, base_url=server.url, progress=False, sources=_SOURCES)
    assert len(server.ranges) == n


def test_download_resumes_a_partial_file_with_a_range_request(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    part = dest / "graph" / "names.tsv.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(_TEXT[:1000])
    download(dest, base_url=server.url, progress=False, sources=_SOURCES[:1])
    # the server was asked only for the missing bytes, and the file is complete and verified
    assert server.ranges == ["bytes=1000-"]
    assert (dest / "graph" / "names.tsv").read_bytes() == _TEXT
    assert not part.exists()


def test_download_restarts_when_the_server_ignores_range(mirror: Path, tmp_path: Path) -> None:
    s = _Server(mirror, honour_range=False)
    try:
        dest = tmp_path / "data"
        part = dest / "graph" / "names.tsv.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(b"garbage that must not be kept")
        download(dest, base_url=s.url, progress=False, sources=_SOURCES[:1])
        assert s.ranges == ["bytes=29-"]
        assert (dest / "graph" / "names.tsv").read_bytes() == _TEXT
    finally:
        s.close()


def test_download_404_raises_data_error_naming_the_url(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.tsv: HTTP 404"):
        download(tmp_path / "d", base_url=server.url, progress=False, sources=(Source("graph/missing.tsv", "x"),))
    assert not (tmp_path / "d" / "graph" / "missing.tsv").exists()


def test_download_detects_a_corrupt_gzip(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    with pytest.raises(DataError, match="broken.tsv.gz: corrupt gzip"):
        download(dest, base_url=server.url, progress=False, sources=(Source("graph/broken.tsv.gz", "x"),))
    # neither the final file nor the corrupt .part is left behind
    assert not (dest / "graph" / "broken.tsv.gz").exists()
    assert not (dest / "graph" / "broken.tsv.gz.part").exists()


def test_download_detects_a_sha256_mismatch(server: _Server, tmp_path: Path) -> None:
    bad = (Source("graph/names.tsv", "x", sha256="0" * 64),)
    with pytest.raises(DataError, match="sha256"):
        download(tmp_path / "d", base_url=server.url, progress=False, sources=bad)
    assert not (tmp_path / "d" / "graph" / "names.tsv").exists()


def test_download_unreachable_host_raises_data_error(tmp_path: Path) -> None:
    # a port nobody listens on: bind one, then close it
    s = _Server(tmp_path, honour_range=True)
    url = s.url
    s.close()
    with pytest.raises(DataError, match="unreachable"):
        download(tmp_path / "d", base_url=url, progress=False, sources=_SOURCES[:1], timeout=5)


def test_cli_download_exits_2_on_a_bad_base_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _Server(tmp_path, honour_range=True)
    url = s.url
    s.close()
    status = main(["data", "download", "--dest", str(tmp_path / "d"), "--base-url", url])
    err = capsys.readouterr().err
    assert status == 2
    # one line naming the URL
    assert err.count("\n") == 1 and url in err and "error" in err


def test_sources_table_is_well_formed() -> None:
    paths = [s.path for s in SOURCES]
    assert len(set(paths)) == len(paths)
    assert all(p.split("/")[0] in {"costanzo2016", "graph"} for p in paths)
    assert all(s.url.startswith("https://") for s in SOURCES)
