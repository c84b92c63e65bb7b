"""The Box image: built once (image/build.sh, cached), booted under QEMU by the tests of this folder."""

from __future__ import annotations

import pytest

from tests.support import boximage


@pytest.fixture(scope="session")
def box_image() -> boximage.Image:
    why = boximage.unavailable()
    if why:
        pytest.skip(f"the Box image cannot be built or booted here: {why}")
    return boximage.ensure_built()
