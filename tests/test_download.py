"""download_mnist against mirrors served here on 127.0.0.1, each misbehaving in its own way."""

import functools
import gzip
import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import utils.data
from utils.data import CANONICAL_FILES, MNISTDataError, download_mnist, load_mnist, load_split

TIMEOUT = 0.5  # seconds; the stalling mirror holds its answer much longer than this
DEADLINE = 1.0  # seconds for a whole file; the trickling mirror would take minutes
TRICKLE_INTERVAL = 0.02  # seconds between its bytes: well inside TIMEOUT, so never "stalled"
HTML_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Moved</h1></body></html>\n"


class MirrorHandler(BaseHTTPRequestHandler):
    """Answers /<behaviour>/<file name>; the behaviour says how this mirror misbehaves."""

    def do_GET(self):
        self.server.requests.append(self.path)
        behaviour, _, filename = self.path.strip("/").partition("/")
        getattr(self, f"answer_{behaviour}")(self.server.files.get(filename, b""))

    def log_message(self, *args):
        pass  # keep pytest's output clean

    def send_body(self, body, content_type="application/gzip", length=None):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def answer_forbidden(self, body):
        self.send_error(403)

    def answer_missing(self, body):
        self.send_error(404)

    def answer_unavailable(self, body):
        self.send_error(503)

    def answer_stall(self, body):
        self.server.release.wait(30)  # never answer while the test runs

    def answer_trickle(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for byte in body:
            if self.server.release.wait(TRICKLE_INTERVAL):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:  # the client gave up, as it should
                return

    def answer_truncated(self, body):
        self.send_body(body[: len(body) // 2], length=len(body))

    def answer_cut(self, body):
        # no Content-Length: the client cannot tell, only the gzip check can
        self.send_body(body[: len(body) // 2])

    def answer_empty(self, body):
        self.send_body(b"", length=0)

    def answer_html(self, body):
        self.send_body(HTML_PAGE, content_type="text/html", length=len(HTML_PAGE))

    def answer_recompressed(self, body):
        # the same IDX bytes compressed with another timestamp: valid, but not the listed .gz
        other = gzip.compress(gzip.decompress(body), mtime=1)
        self.send_body(other, length=len(other))

    def answer_good(self, body):
        self.send_body(body, length=len(body))


# What each bad mirror does, and the words the final message must use for it.
BAD_BEHAVIOURS = {
    "forbidden": "HTTP 403",
    "missing": "HTTP 404",
    "unavailable": "HTTP 503",
    "stall": "stalled",
    "trickle": "too slow",
    "truncated": "truncated",
    "cut": "corrupt gzip",
    "empty": "empty file (0 bytes)",
    "html": "HTML page",
    "recompressed": "MD5 of the .gz mismatch",
}


@pytest.fixture(scope="module")
def server(tiny_mnist):
    """One HTTP server on a free loopback port serving the tiny .gz files, shut down at the end."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    httpd.daemon_threads = True
    httpd.files = {tiny_mnist.file_name(key): tiny_mnist.gz_bytes(key) for key in CANONICAL_FILES}
    httpd.requests = []
    httpd.release = threading.Event()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Keep urllib on the loopback servers even where a proxy is configured."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def requests(server):
    """The paths the server is asked for during one test."""
    server.requests.clear()
    return server.requests


@pytest.fixture
def tiny_download(server, tiny_mnist):
    """download_mnist set up for the tiny files: their .gz MD5s and decompressed checksums."""
    resources = [
        (tiny_mnist.file_name(key), hashlib.md5(tiny_mnist.gz_bytes(key)).hexdigest())
        for key in CANONICAL_FILES
    ]
    return functools.partial(
        download_mnist, timeout=TIMEOUT, deadline=DEADLINE, resources=resources,
        expected=tiny_mnist.expected
    )


def closed_port_url():
    """A loopback URL where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_falls_through_bad_mirrors_to_the_good_one(
    tmp_path, server, requests, tiny_mnist, tiny_download, snapshot
):
    bad = [server.base_url + behaviour + "/" for behaviour in BAD_BEHAVIOURS]
    good = server.base_url + "good"  # no trailing slash: download_mnist adds it
    assert tiny_download(tmp_path, mirrors=bad + [good]) == tmp_path

    served = {tiny_mnist.file_name(key): tiny_mnist.gz_bytes(key) for key in CANONICAL_FILES}
    assert snapshot(tmp_path) == served  # and no temporary file left over
    for split in ("train", "test"):
        images, labels = load_split(tmp_path, split, verify_checksums=False)
        assert torch.equal(images, tiny_mnist.splits[split][0])
        assert torch.equal(labels, tiny_mnist.splits[split][1])

    first_file = tiny_mnist.file_name("train-images")
    asked_for_first = [path for path in requests if path.endswith(first_file)]
    assert asked_for_first == [f"/{b}/{first_file}" for b in [*BAD_BEHAVIOURS, "good"]]


def test_all_bad_mirrors_give_one_message_and_leave_nothing(
    tmp_path, server, requests, tiny_mnist, tiny_download, snapshot
):
    refused = closed_port_url()
    bad = [server.base_url + behaviour + "/" for behaviour in BAD_BEHAVIOURS] + [refused]
    with pytest.raises(MNISTDataError) as caught:
        tiny_download(tmp_path, mirrors=bad)

    message = str(caught.value)
    filename = tiny_mnist.file_name("train-images")
    lines = message.splitlines()
    for behaviour, phrase in {**BAD_BEHAVIOURS, refused: "unreachable"}.items():
        url = (refused if behaviour == refused else f"{server.base_url}{behaviour}/") + filename
        line = next(line for line in lines if url in line)
        assert phrase in line, line
    assert "make run DATA_DIR=" in message
    assert snapshot(tmp_path) == {}  # no partial or temporary file

    # a rerun starts clean and succeeds once a good mirror answers
    tiny_download(tmp_path, mirrors=bad[:1] + [server.base_url + "good/"])
    assert len(snapshot(tmp_path)) == 4


def test_failed_download_removes_the_empty_folders_it_created(tmp_path, server, tiny_download):
    data_dir = tmp_path / "data" / "mnist"  # neither folder exists yet, as on a first run
    with pytest.raises(MNISTDataError) as caught:
        tiny_download(data_dir, mirrors=[server.base_url + "forbidden/", closed_port_url()])
    assert str(data_dir) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_download_keeps_an_empty_folder_that_was_there(tmp_path, server, tiny_download):
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    with pytest.raises(MNISTDataError):
        tiny_download(data_dir, mirrors=[server.base_url + "forbidden/"])
    assert data_dir.is_dir() and list(data_dir.iterdir()) == []


def test_failed_download_keeps_a_folder_it_created_once_it_holds_a_file(
    tmp_path, server, tiny_mnist, tiny_download
):
    # the first file arrives; the second is refused, since no mirror matches its listed MD5
    first, second = tiny_mnist.file_name("train-images"), tiny_mnist.file_name("train-labels")
    resources = [(first, hashlib.md5(tiny_mnist.gz_bytes("train-images")).hexdigest()),
                 (second, "0" * 32)]
    data_dir = tmp_path / "data" / "mnist"
    with pytest.raises(MNISTDataError, match=f"Could not download {second}"):
        tiny_download(data_dir, mirrors=[server.base_url + "good/"], resources=resources)
    assert [path.name for path in data_dir.iterdir()] == [first]


def test_download_into_a_file_says_it_is_a_file(tmp_path, server, requests, tiny_download):
    a_file = tmp_path / "mnist"
    a_file.write_bytes(b"not a folder")
    with pytest.raises(MNISTDataError) as caught:
        tiny_download(a_file, mirrors=[server.base_url + "good/"])
    assert str(caught.value).startswith(f"{a_file} is a file, not a folder.")
    assert requests == []
    assert a_file.read_bytes() == b"not a folder"


def test_files_present_and_valid_are_not_fetched_again(
    tmp_path, server, requests, tiny_mnist, tiny_download, snapshot
):
    tiny_mnist.write(tmp_path)
    # one file compressed differently from the mirror's: same IDX bytes, so still valid
    other_gz = gzip.compress(tiny_mnist.files["test-labels"], mtime=5)
    (tmp_path / tiny_mnist.file_name("test-labels")).write_bytes(other_gz)
    before = snapshot(tmp_path)

    tiny_download(tmp_path, mirrors=[server.base_url + "good/"])
    assert requests == []
    assert snapshot(tmp_path) == before


def test_bad_file_already_there_is_reported_not_replaced(
    tmp_path, server, requests, tiny_mnist, tiny_download, snapshot
):
    tiny_mnist.write(tmp_path)
    bad_path = tmp_path / tiny_mnist.file_name("train-labels")
    bad_path.write_bytes(HTML_PAGE)
    before = snapshot(tmp_path)

    with pytest.raises(MNISTDataError, match="already there") as caught:
        tiny_download(tmp_path, mirrors=[server.base_url + "good/"])
    assert str(bad_path) in str(caught.value) and "not a gzip file" in str(caught.value)
    assert snapshot(tmp_path) == before
    assert requests == []


def test_defaults_are_torchvision_file_names_and_checksums(tmp_path, server, requests):
    # the tiny file served under the real name fails torchvision's MD5 for the real .gz
    with pytest.raises(MNISTDataError) as caught:
        download_mnist(tmp_path, mirrors=[server.base_url + "good/"], timeout=TIMEOUT)
    assert requests == ["/good/train-images-idx3-ubyte.gz"]
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(caught.value)  # torchvision's table
    assert list(tmp_path.iterdir()) == []


def test_load_mnist_downloads_only_when_asked(
    tmp_path, server, requests, tiny_mnist, tiny_download, monkeypatch
):
    good = functools.partial(tiny_download, mirrors=[server.base_url + "good/"])
    monkeypatch.setattr(utils.data, "download_mnist", good)

    with pytest.raises(MNISTDataError, match="not found"):
        load_mnist(tmp_path, verify_checksums=False)
    assert requests == []

    loaded = load_mnist(tmp_path, download=True, verify_checksums=False)
    assert len(requests) == 4
    assert torch.equal(loaded["test"][1], tiny_mnist.splits["test"][1])
