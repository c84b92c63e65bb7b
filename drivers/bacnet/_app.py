"""The bacpypes3 application of the Box: strict socket binding, I-Am and COV hooks.

Does: `App` is bacpypes3's BACnet/IP application with the standard services, over a
link layer whose UDP sockets are bound once, without SO_REUSEPORT, to the interface's
own address and its subnet broadcast address (`_Server`); it passes incoming I-Am
messages and COV notifications to the `Stack` that owns it. Also the small values
that cross to the rest of the driver (`IAm`, `Ref`, `Reading`) and the decoding of a
bacpypes3 value into a `Reading`. Does not: send requests (`_stack`).

bacpypes3 (0.0.110, pinned) behaviour this works around: its `IPv4DatagramServer`
binds with SO_REUSEPORT (another process of the same user could take a share of our
unicast traffic) and retries a failed bind forever, every second, in a task of its
own; `Application.close()` only closes link layers it made from network-port
objects; I-Am messages only reach ``who_is`` futures; its COV client
(``change_of_value``) renews in untracked tasks and drops failures, so we send
SubscribeCOV ourselves and take the notifications here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bacpypes3.apdu import ErrorPDU, ErrorRejectAbortNack, RejectPDU, SimpleAckPDU
from bacpypes3.app import Application
from bacpypes3.appservice import ApplicationServiceAccessPoint
from bacpypes3.comm import bind
from bacpypes3.errors import ServicesError
from bacpypes3.ipv4 import IPv4DatagramProtocol, IPv4DatagramServer
from bacpypes3.ipv4.bvll import BVLLCodec
from bacpypes3.ipv4.service import BIPNormal, UDPMultiplexer
from bacpypes3.netservice import NetworkServiceAccessPoint, NetworkServiceElement
from bacpypes3.pdu import IPv4Address
from bacpypes3.primitivedata import Atomic, ObjectType

from drivers._types import Quality, Value
from drivers.bacnet._names import property_type
from drivers.bacnet._values import ValueTypeError, to_value

if TYPE_CHECKING:
    from drivers.bacnet._stack import Stack

@dataclass(frozen=True, slots=True)
class IAm:
    """What a device says of itself in an I-Am."""

    instance: int
    address: str  # "ip:port"
    max_apdu: int
    segmentation: str  # e.g. "segmented-both", "no-segmentation"
    vendor_id: int


@dataclass(frozen=True, slots=True)
class Ref:
    """One property of one object, as the stack reads it."""

    object_type: str
    instance: int
    property: str


@dataclass(frozen=True, slots=True)
class Reading:
    """The outcome of reading one property."""

    value: Value
    quality: Quality = Quality.GOOD
    detail: str = ""  # why, when the quality is not GOOD


CovCallback = Callable[[str, int, Ref, list[tuple[str, Reading]]], Awaitable[bool]]
IAmCallback = Callable[[IAm], None]


def address_key(address: Any) -> str:
    """A bacpypes3 address as "ip:port"."""
    pair = getattr(address, "addrTuple", None) or IPv4Address(address).addrTuple
    return f"{pair[0]}:{pair[1]}"


def failure_text(pdu: ErrorRejectAbortNack) -> str:
    """A device's Error/Reject/Abort as words, e.g. "error object/unknown-object"."""
    if isinstance(pdu, ErrorPDU):
        return f"error {pdu.errorClass}/{pdu.errorCode}"
    kind = "reject" if isinstance(pdu, RejectPDU) else "abort"
    return f"{kind} {pdu.apduAbortRejectReason}"


def decode(any_value: Any, ref: Ref) -> Reading:
    cls = property_type(ref.object_type, ref.property)
    if cls is None:
        return Reading(None, Quality.DECODE_ERROR, f"unknown property {ref.property}")
    try:
        return Reading(to_value(any_value.cast_out(cls, null=issubclass(cls, Atomic))))
    except (ValueTypeError, ValueError, TypeError, AttributeError, IndexError) as e:
        return Reading(None, Quality.DECODE_ERROR, f"{ref.property}: {e}"[:120])


class _Server(IPv4DatagramServer):  # type: ignore[misc]  # bacpypes3 is untyped
    """bacpypes3's UDP server, bound once, strictly, to one interface."""

    interface = ""
    bind_error: OSError | None = None

    async def retrying_create_datagram_endpoint(
        self, loop: asyncio.AbstractEventLoop, addrTuple: tuple[str, int], bind_socket: Any = None
    ) -> Any:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            with contextlib.suppress(OSError):  # needs CAP_NET_RAW on older kernels
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.bind(addrTuple)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            self.bind_error = self.bind_error or e
            raise

        def factory() -> Any:
            protocol = IPv4DatagramProtocol()
            protocol.server = self
            return protocol

        return await loop.create_datagram_endpoint(factory, sock=sock)

    def set_local_transport_protocol(self, address: Any, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is None:
            super().set_local_transport_protocol(address, task)

    def set_broadcast_transport_protocol(self, address: Any, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is None:
            super().set_broadcast_transport_protocol(address, task)


class _Link(BIPNormal):  # type: ignore[misc]  # bacpypes3 is untyped
    """bacpypes3's normal BACnet/IP link layer over `_Server`."""

    def __init__(self, local: IPv4Address, interface: str) -> None:
        BIPNormal.__init__(self)
        self.codec = BVLLCodec()
        self.multiplexer = UDPMultiplexer()
        self.server = _Server(local)
        self.server.interface = interface  # read when its bind task runs, after this
        bind(self, self.codec, self.multiplexer.annexJ)
        bind(self.multiplexer, self.server)


class App(Application):  # type: ignore[misc]  # bacpypes3 is untyped
    """The Box's BACnet application: the standard services plus our I-Am and COV hooks."""

    def __init__(self, device: Any, local: IPv4Address, interface: str, stack: Stack) -> None:
        Application.__init__(self)
        self.asap = ApplicationServiceAccessPoint(device, self.device_info_cache)
        self.nsap = NetworkServiceAccessPoint()
        self.nse = NetworkServiceElement()
        bind(self.nse, self.nsap)
        bind(self, self.asap, self.nsap)
        self.link = _Link(local, interface)
        self.nsap.bind(self.link, address=local)
        self.add_object(device)
        self._stack = stack

    def close(self) -> None:
        self.link.server.close()  # Application.close() only closes the link layers it made itself

    async def do_IAmRequest(self, apdu: Any) -> None:
        await super().do_IAmRequest(apdu)
        i_am = IAm(
            instance=int(apdu.iAmDeviceIdentifier[1]),
            address=address_key(apdu.pduSource),
            max_apdu=int(apdu.maxAPDULengthAccepted),
            segmentation=str(apdu.segmentationSupported),
            vendor_id=int(apdu.vendorID),
        )
        if self._stack.on_i_am is not None and self._stack.wants(i_am.instance):
            await self.device_info_cache.set_device_info(apdu)
            self._stack.on_i_am(i_am)

    async def _notified(self, apdu: Any) -> bool:
        if self._stack.on_cov is None:
            return False
        obj = apdu.monitoredObjectIdentifier
        ref = Ref(str(ObjectType(obj[0])), int(obj[1]), "present-value")
        values = []
        for pv in apdu.listOfValues:
            prop = str(pv.propertyIdentifier)
            values.append((prop, decode(pv.value, Ref(ref.object_type, ref.instance, prop))))
        return await self._stack.on_cov(address_key(apdu.pduSource), int(apdu.subscriberProcessIdentifier), ref,
                                        values)

    async def do_ConfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        if not await self._notified(apdu):
            raise ServicesError(errorCode="unknownSubscription")
        await self.response(SimpleAckPDU(context=apdu))  # the readings are on disk: acknowledged

    async def do_UnconfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        await self._notified(apdu)
