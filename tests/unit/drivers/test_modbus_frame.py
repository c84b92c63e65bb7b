"""The screen for received Modbus TCP bytes, on literal frames."""

from __future__ import annotations

import pytest

from drivers.modbus._frame import Verdict, check_stream

READ_OK = bytes.fromhex("0001 0000 0007 01 03 04 3FC0 0000")
COILS_OK = bytes.fromhex("0002 0000 0004 01 01 01 05")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        READ_OK,
        READ_OK[:5],  # header not complete yet
        READ_OK[:9],  # body not complete yet
        READ_OK + COILS_OK,
        READ_OK + COILS_OK[:3],
        bytes.fromhex("0003 0000 0003 01 83 02"),  # exception: illegal address
        bytes.fromhex("0004 0000 0006 01 06 0001 0003"),  # write single register echo
        bytes.fromhex("0005 0000 0006 01 10 0001 0002"),  # write multiple registers
    ],
)
def test_well_formed(data: bytes) -> None:
    assert check_stream(data) is Verdict.OK


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("0001 0001 0007 01 03 04 3FC0 0000"),  # protocol id 1
        bytes.fromhex("0001 0000 0001 01"),  # length too small for a function code
        bytes.fromhex("0001 0000 00FF 01"),  # length over 254
        bytes.fromhex("0001 0000 0007 01 03 06 3FC0 0000"),  # byte count says 6, has 4
        bytes.fromhex("0001 0000 0006 01 03 03 3FC0 00"),  # odd byte count for registers
        bytes.fromhex("0001 0000 0003 01 03 00"),  # empty read
        bytes.fromhex("0001 0000 0002 01 83"),  # exception without its code
        bytes.fromhex("0001 0000 0003 01 80 02"),  # exception of function 0
        bytes.fromhex("0001 0000 0003 01 07 02"),  # a function we never ask for
        bytes.fromhex("0004 0000 0005 01 06 0001 00"),  # short write echo
        READ_OK + bytes.fromhex("0002 0001 0004 01 01 01 05"),  # good then bad
    ],
)
def test_garbled(data: bytes) -> None:
    assert check_stream(data) is Verdict.GARBLED
