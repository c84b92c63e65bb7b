"""The Box's TUF client (ota/client.py) over a flaky link: a real reference cloud, and the
fault-injecting proxy (tests/support/faultproxy.py) between the Box and the HTTPS enrollment port.

Shows: resets and cuts mid-download are retried and the file arrives whole and verified; a link
refused for longer than all attempts gives up with the count; an abort ends a stalled download at
once; 403 and 404 are answers, not glitches (counted at the proxy: never retried). Every failure
leaves nothing in the Box's download directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import pytest

from cloud import tufrepo as repo
from cloud.platform import Cloud
from ota import client
from tests.support.cloudkit import provision
from tests.support.faultproxy import Direction, FaultProxy
from tests.support.wait import wait_for
from trust import identity

HW = "boxd-x86"
SIZE = 4 * 1024 * 1024  # big enough that a cut lands mid-file


class _Backoff(TypedDict):
    backoff_s: float


FAST: _Backoff = {"backoff_s": 0.02}


@pytest.fixture
def proxy(fresh_cloud: Cloud) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", fresh_cloud.settings.enroll_port) as p:
        yield p


def _box(cloud: Cloud, tmp_path: Path, serial: str) -> Path:
    state = tmp_path / "box"
    provision(cloud, state, serial)
    (state / "ota").mkdir()
    shutil.copyfile(cloud.ota_repo / "metadata" / "1.root.json", state / "ota" / "root.json")  # shipped in the image
    return state


def _publish(cloud: Cloud, tmp_path: Path, version: str = "1.1.0") -> Path:
    bundle = tmp_path / f"boxd-{version}.tar.gz"
    bundle.write_bytes(os.urandom(SIZE))
    repo.publish_release(cloud.ota_repo, cloud.ota_keys, bundle, version, [HW])
    return bundle


def _url(proxy: FaultProxy) -> str:
    return f"https://localhost:{proxy.port}"


def _downloads(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "ota" / "downloads").iterdir())


def test_resets_and_cuts_mid_download_are_retried(fresh_cloud: Cloud, proxy: FaultProxy, tmp_path: Path) -> None:
    state = _box(fresh_cloud, tmp_path, "FLAKY-1")
    bundle = _publish(fresh_cloud, tmp_path)
    proxy.set_bandwidth(1_000_000, Direction.DOWN)  # slow enough to cut the target mid-file
    cuts: list[int] = []
    trouble: list[BaseException] = []

    def saboteur() -> None:
        try:
            for cut in (proxy.reset_all, proxy.close_all):  # an RST, then a FIN (a body cut short)
                start = proxy.downstream_bytes

                def half_a_mb_more(start: int = start) -> bool:
                    return proxy.downstream_bytes > start + 512 * 1024

                wait_for(half_a_mb_more, 60, "half a MB more")
                cuts.append(cut())
            proxy.set_bandwidth(None)  # then the link is healthy
        except BaseException as e:
            trouble.append(e)

    seen: list[tuple[int, int]] = []
    thread = threading.Thread(target=saboteur)
    thread.start()
    try:
        release, path = client.download(state, _url(proxy), "1.0.0", HW, bundle.name, attempts=5,
                                        progress=lambda done, total: seen.append((done, total)), **FAST)
    finally:
        thread.join(60)
    assert not trouble and len(cuts) == 2 and all(cuts)  # each cut hit the target download's connection
    assert path.read_bytes() == bundle.read_bytes()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == release.sha256
    assert _downloads(state) == [bundle.name]
    assert seen[-1] == (SIZE, SIZE)
    assert sum(1 for i in range(1, len(seen)) if seen[i] < seen[i - 1]) == 2  # two tries started over


def test_a_link_refused_longer_than_all_attempts(fresh_cloud: Cloud, proxy: FaultProxy, tmp_path: Path) -> None:
    state = _box(fresh_cloud, tmp_path, "FLAKY-2")
    bundle = _publish(fresh_cloud, tmp_path)
    proxy.refuse()
    with pytest.raises(client.OtaError, match=r"gave up after 3 attempts.*refused") as info:
        client.download(state, _url(proxy), "1.0.0", HW, bundle.name, attempts=3, **FAST)
    assert not isinstance(info.value, client.OtaAbortedError)
    assert _downloads(state) == []
    proxy.refuse(False)  # the link is back: nothing the failure left gets in the way
    _, path = client.download(state, _url(proxy), "1.0.0", HW, bundle.name, **FAST)
    assert path.read_bytes() == bundle.read_bytes()


def test_an_abort_ends_a_stalled_download(fresh_cloud: Cloud, proxy: FaultProxy, tmp_path: Path) -> None:
    state = _box(fresh_cloud, tmp_path, "FLAKY-3")
    bundle = _publish(fresh_cloud, tmp_path)
    ident = identity.load(state)
    proxy.set_bandwidth(1_000_000, Direction.DOWN)
    abort = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:  # a read timeout of 10 minutes: only the abort can end the stalled read in time
            client.download(state, _url(proxy), "1.0.0", HW, bundle.name, abort=abort,
                            fetcher=client.BoxFetcher(ident, timeout=600), **FAST)
        except client.OtaError as e:
            outcome.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: proxy.downstream_bytes > 512 * 1024, 60, "the target download under way")
    proxy.stall()
    abort.set()
    worker.join(60)
    assert not worker.is_alive(), "the abort did not end the stalled download"
    assert len(outcome) == 1 and isinstance(outcome[0], client.OtaAbortedError), outcome
    assert str(outcome[0]).startswith("aborted: ")
    assert _downloads(state) == []


@pytest.mark.parametrize("answer", [403, 404])
def test_403_and_404_are_answers_not_glitches(fresh_cloud: Cloud, proxy: FaultProxy, tmp_path: Path,
                                              answer: int) -> None:
    state = _box(fresh_cloud, tmp_path, f"FLAKY-4-{answer}")
    bundle = _publish(fresh_cloud, tmp_path)
    assert client.check_for_update(state, _url(proxy), "1.0.0", HW, bundle.name)  # the Box's metadata is current
    if answer == 403:
        fresh_cloud.revoke(f"FLAKY-4-{answer}")  # every request gets 403
    else:
        for served in (fresh_cloud.ota_repo / "targets").glob(f"*.{bundle.name}"):
            served.unlink()  # the metadata names it, the server has no such file

    ident = identity.load(state)

    class Counting(client.BoxFetcher):
        """The Box's fetcher, counting its requests (it keeps its connection open between them)."""

        requests = 0

        def _fetch(self, url: str) -> Iterator[bytes]:
            Counting.requests += 1
            return super()._fetch(url)

    def requests(attempts: int) -> int:
        before = Counting.requests
        with pytest.raises(client.OtaError, match=f"HTTP {answer}"):
            client.download(state, _url(proxy), "1.0.0", HW, bundle.name, attempts=attempts,
                            fetcher=Counting(ident), **FAST)
        return Counting.requests - before

    one_try = requests(1)
    # 403: the root-chain probe (a 403 ends the chain) and timestamp.json (final);
    # 404: the root-chain probe (404: no newer root), timestamp.json, the target (final)
    assert one_try == {403: 2, 404: 3}[answer]
    assert requests(5) == one_try
    assert _downloads(state) == []
