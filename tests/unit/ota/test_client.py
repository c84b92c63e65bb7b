"""The Box's TUF client's retry, abort and progress logic (ota/client.py), without sockets.

A local fetcher serves a real signed repository (cloud.tufrepo) from files and injects faults
per request; the retry decision (`_transient`) and the backoff are checked with literals.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

from cloud import tufrepo as repo
from ota import _fetch, client
from ota._fetch import CapExceededError, LinkError
from tests.support.wait import wait_for

HW = "boxd-x86"
BASE = "https://updates.test"
SIZE = 1024 * 1024
Fault = Callable[[str], None]


class FaultyFetcher(FetcherInterface):
    """Serves <repo>/metadata and <repo>/targets; `target_faults[i]` runs in the i-th target request's body."""

    def __init__(self, repo_dir: Path) -> None:
        self.repo_dir = repo_dir
        self.requests: list[str] = []
        self.request_faults: list[BaseException | None] = []  # raised at the n-th request of any file
        self.target_faults: list[BaseException | None] = []  # n-th target request: HTTP at once, else mid-body

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.requests.append(url)
        if self.request_faults and (fault := self.request_faults.pop(0)) is not None:
            raise fault
        rel = url.removeprefix(f"{BASE}/tuf/")
        path = self.repo_dir / rel
        if not path.is_file():
            raise exceptions.DownloadHTTPError(f"{url}: 404", 404)
        data = path.read_bytes()
        fault = self.target_faults.pop(0) if rel.startswith("targets/") and self.target_faults else None
        if isinstance(fault, exceptions.DownloadHTTPError):
            raise fault  # the answer to the request
        return self._chunks(data, fault)

    @staticmethod
    def _chunks(data: bytes, fault: BaseException | None) -> Iterator[bytes]:
        for i in range(0, len(data), _fetch.CHUNK):
            if fault is not None and i >= 256 * 1024:
                raise fault
            yield data[i : i + _fetch.CHUNK]

    def target_requests(self) -> int:
        return sum("/tuf/targets/" in u for u in self.requests)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, FaultyFetcher, Path]:
    repo_dir, keys = tmp_path / "repo", tmp_path / "keys"
    repo.init_repository(repo_dir, keys)
    bundle = tmp_path / "boxd-1.1.0.tar.gz"
    bundle.write_bytes(os.urandom(SIZE))
    repo.publish_release(repo_dir, keys, bundle, "1.1.0", [HW])
    state = tmp_path / "box"
    (state / "ota").mkdir(parents=True)
    shutil.copyfile(repo_dir / "metadata" / "1.root.json", state / "ota" / "root.json")
    return state, FaultyFetcher(repo_dir), bundle


def _leftovers(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "ota" / "downloads").iterdir())


def test_glitches_mid_download_are_retried_and_progress_is_reported(setup: tuple[Path, FaultyFetcher, Path]) -> None:
    state, fetcher, bundle = setup
    fetcher.target_faults = [ConnectionResetError(errno.ECONNRESET, "reset"), ssl.SSLEOFError("EOF")]
    seen: list[tuple[int, int]] = []
    release, path = client.download(state, BASE, "1.0.0", HW, bundle.name, fetcher=fetcher,
                                    progress=lambda done, total: seen.append((done, total)), backoff_s=0.001)
    assert path.read_bytes() == bundle.read_bytes()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == release.sha256
    assert fetcher.target_requests() == 3  # two cut, one whole
    assert _leftovers(state) == [bundle.name]
    assert seen[-1] == (SIZE, SIZE)
    assert all(total == SIZE for _, total in seen)
    restarts = [i for i in range(1, len(seen)) if seen[i] < seen[i - 1]]
    assert len(restarts) == 2  # each retry starts over from 0
    last_try = seen[restarts[-1] :]
    assert last_try == sorted(last_try) and len(last_try) >= _fetch.PROGRESS_STEPS // 2
    assert len(seen) <= 3 * (_fetch.PROGRESS_STEPS + 1) + 1  # about every 5 %, not every chunk


def test_a_refused_request_is_retried_before_anything_is_fetched(setup: tuple[Path, FaultyFetcher, Path]) -> None:
    state, fetcher, bundle = setup
    fetcher.request_faults = [ConnectionRefusedError(errno.ECONNREFUSED, "refused"), TimeoutError("timed out")]
    assert client.check_for_update(state, BASE, "1.0.0", HW, bundle.name, fetcher=fetcher, backoff_s=0.001)


def test_a_link_down_for_every_attempt_gives_up_with_the_count(setup: tuple[Path, FaultyFetcher, Path]) -> None:
    state, fetcher, bundle = setup
    fetcher.request_faults = [ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")] * 3
    with pytest.raises(client.OtaError, match=r"gave up after 3 attempts.*Connection refused"):
        client.download(state, BASE, "1.0.0", HW, bundle.name, fetcher=fetcher, attempts=3, backoff_s=0.001)
    assert len(fetcher.requests) == 3
    assert _leftovers(state) == []


@pytest.mark.parametrize(("status", "tries"), [(403, 1), (404, 1), (500, 3), (503, 3)])
def test_http_4xx_is_an_answer_and_5xx_a_glitch(setup: tuple[Path, FaultyFetcher, Path], status: int,
                                                tries: int) -> None:
    state, fetcher, bundle = setup
    client.check_for_update(state, BASE, "1.0.0", HW, bundle.name, fetcher=fetcher)  # metadata now current
    fetcher.requests.clear()
    fetcher.target_faults = [exceptions.DownloadHTTPError(f"HTTP {status}", status)] * 3
    with pytest.raises(client.OtaError, match=f"HTTP {status}"):
        client.download(state, BASE, "1.0.0", HW, bundle.name, fetcher=fetcher, attempts=3, backoff_s=0.001)
    assert fetcher.target_requests() == tries
    assert _leftovers(state) == []


def test_a_tampered_target_is_not_retried(setup: tuple[Path, FaultyFetcher, Path]) -> None:
    state, fetcher, bundle = setup
    (served,) = (fetcher.repo_dir / "targets").glob(f"*.{bundle.name}")
    served.write_bytes(b"x" * SIZE)
    with pytest.raises(client.OtaError, match="does not match the length or hash"):
        client.download(state, BASE, "1.0.0", HW, bundle.name, fetcher=fetcher, backoff_s=0.001)
    assert fetcher.target_requests() == 1
    assert _leftovers(state) == []


def test_an_abort_set_before_the_start_fetches_nothing(setup: tuple[Path, FaultyFetcher, Path]) -> None:
    state, fetcher, bundle = setup
    abort = threading.Event()
    abort.set()
    with pytest.raises(client.OtaAbortedError, match=r"^aborted: "):
        client.download(state, BASE, "1.0.0", HW, bundle.name, fetcher=fetcher, abort=abort)
    assert fetcher.requests == []


def test_an_abort_between_chunks_leaves_nothing(setup: tuple[Path, FaultyFetcher, Path]) -> None:
    state, fetcher, bundle = setup
    abort = threading.Event()

    def progress(done: int, _total: int) -> None:
        if done > SIZE // 2:
            abort.set()

    with pytest.raises(client.OtaAbortedError, match=r"^aborted: "):
        client.download(state, BASE, "1.0.0", HW, bundle.name, fetcher=fetcher, abort=abort, progress=progress)
    assert fetcher.target_requests() == 1
    assert _leftovers(state) == []


def test_an_abort_ends_a_backoff_wait(setup: tuple[Path, FaultyFetcher, Path]) -> None:
    state, fetcher, bundle = setup
    fetcher.request_faults = [ConnectionRefusedError(errno.ECONNREFUSED, "refused")] * 5
    abort = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:  # a backoff of up to a minute: the test would hang without the abort
            client.download(state, BASE, "1.0.0", HW, bundle.name, fetcher=fetcher, abort=abort, backoff_s=1000)
        except client.OtaError as e:
            outcome.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: fetcher.requests, what="the first request")
    abort.set()
    worker.join(30)
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], client.OtaAbortedError), outcome
    assert len(fetcher.requests) == 1


def test_which_failures_are_glitches() -> None:
    def wrapped(cause: BaseException) -> exceptions.DownloadError:
        e = exceptions.DownloadError("Failed to download x")
        e.__cause__ = cause
        return e

    transient = [LinkError("cut short"), exceptions.SlowRetrievalError("slow"),
                 exceptions.DownloadHTTPError("x", 502), wrapped(ConnectionResetError()), wrapped(TimeoutError()),
                 wrapped(ssl.SSLEOFError())]
    final = [exceptions.DownloadHTTPError("x", 401), exceptions.DownloadHTTPError("x", 403),
             exceptions.DownloadHTTPError("x", 404), CapExceededError("x"),
             exceptions.DownloadLengthMismatchError("x"), exceptions.LengthOrHashMismatchError("x"),
             exceptions.UnsignedMetadataError("x"), exceptions.BadVersionNumberError("x"),
             exceptions.ExpiredMetadataError("x"), exceptions.DownloadError("only https"),
             wrapped(ssl.SSLCertVerificationError("bad cert")), wrapped(ValueError("x"))]
    assert [client._transient(e) for e in transient] == [True] * len(transient)
    assert [client._transient(e) for e in final] == [False] * len(final)


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    assert [client.backoff_delay(n, 2.0, 1.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert client.backoff_delay(10, 2.0, 1.0) == client.BACKOFF_CAP_S
    assert client.backoff_delay(1000, 2.0, 0.5) == client.BACKOFF_CAP_S / 2
    assert client.backoff_delay(3, 2.0, 0.0) == 0.0
