"""`Stack`: the Box's BACnet/IP requests on one interface (the I/O shell).

Does: look up the interface's address and bind the application (`_app.App`) to it,
never 0.0.0.0; send Who-Is, ReadProperty, ReadPropertyMultiple, WriteProperty and
SubscribeCOV and turn their answers into `Reading` values or our errors
(`NoAnswerError`, `DeviceRefusedError`); count requests and failures. Does not: decide
what to read when (`_device`), plan batches (`_plan`) or keep state about devices
beyond bacpypes3's device-info cache.

bacpypes3 (0.0.110, pinned) behaviour this relies on: constructing the application
needs a running loop (it starts tasks), so `open()` does it; an unanswered confirmed
request ends as an `AbortPDU` (no-response) that our own segmentation state machine
made; the peer's Error, Reject and Abort PDUs are raised by the awaited future (they
derive from BaseException, not Exception).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from bacpypes3.apdu import (
    AbortPDU,
    ErrorRejectAbortNack,
    ReadPropertyACK,
    ReadPropertyMultipleACK,
    ReadPropertyMultipleRequest,
    ReadPropertyRequest,
    SubscribeCOVRequest,
    WritePropertyRequest,
)
from bacpypes3.basetypes import PropertyIdentifier, PropertyReference, ReadAccessSpecification, Segmentation
from bacpypes3.constructeddata import SequenceOf
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import Address, IPv4Address
from bacpypes3.primitivedata import ObjectIdentifier, ObjectType, Unsigned

from drivers._types import Quality
from drivers.bacnet._app import App, CovCallback, IAm, IAmCallback, Reading, Ref, address_key, decode, failure_text
from drivers.bacnet._names import property_type
from drivers.bacnet._net import InterfaceAddress, interface_address
from drivers.bacnet.errors import BindError, DeviceRefusedError, NoAnswerError

log = logging.getLogger("drivers.bacnet")

OWN_MAX_APDU: Final = 1476
OWN_MAX_SEGMENTS: Final = 16
VENDOR_ID: Final = 999  # bacpypes3's sample vendor; a product would use its ASHRAE vendor id
_GRACE_S: Final = 2.0  # beyond the stack's own timeout and retries, before we stop waiting

__all__ = ["OWN_MAX_APDU", "OWN_MAX_SEGMENTS", "IAm", "Reading", "Ref", "Stack", "is_too_big", "is_unsupported"]


class Stack:
    """The Box's BACnet/IP application on one interface; `open()` binds, `close()` unbinds.

    Counters: `requests` (requests sent, broadcasts included) and `errors` (requests
    not answered or refused).
    """

    def __init__(
        self, *, interface: str, port: int, device_instance: int, apdu_timeout_s: float,
        apdu_retries: int, name: str = "box",
    ) -> None:
        """Remember the settings; no I/O."""
        self.interface, self.port = interface, port
        self.device_instance = device_instance
        self.timeout_s, self.retries = apdu_timeout_s, apdu_retries
        self.name = name
        self.requests = 0
        self.errors = 0
        self.on_i_am: IAmCallback | None = None
        self.on_cov: CovCallback | None = None
        self.wants: Callable[[int], bool] = lambda _instance: True
        self.local: InterfaceAddress | None = None
        self._app: App | None = None

    @property
    def request_time_s(self) -> float:
        """The longest a confirmed request takes before it counts as unanswered."""
        return self.timeout_s * (self.retries + 1)

    async def open(self) -> InterfaceAddress:
        """Look up the interface's address and bind to it.

        Raises:
            InterfaceError: the interface is missing, down or has no IPv4 address.
            BindError: the port is in use on that address.
        """
        local = interface_address(self.interface)
        device = DeviceObject(
            objectIdentifier=("device", self.device_instance), objectName=self.name,
            vendorIdentifier=VENDOR_ID, maxApduLengthAccepted=OWN_MAX_APDU,
            segmentationSupported=Segmentation.segmentedReceive, maxSegmentsAccepted=OWN_MAX_SEGMENTS,
            apduTimeout=round(self.timeout_s * 1000), apduSegmentTimeout=round(self.timeout_s * 1000),
            numberOfApduRetries=self.retries,
        )
        app = App(device, IPv4Address(f"{local.cidr}:{self.port}"), self.interface, self)
        server: Any = app.link.server
        try:
            await asyncio.gather(*server._transport_tasks)
            server._transport_tasks = []
        except OSError as e:
            app.close()
            raise BindError(
                f"cannot bind UDP port {self.port} on {self.interface} ({local.address}): {e.strerror}"
                + (" (is another BACnet application running on it?)" if e.errno == 98 else "")
            ) from e
        self.local, self._app = local, app
        log.info("bacnet %s: bound to %s:%d on %s", self.name, local.address, self.port, self.interface)
        return local

    async def close(self) -> None:
        """Close the sockets (they are gone when this returns); `open()` may be called again."""
        app, self._app = self._app, None
        if app is not None:
            app.close()
            await asyncio.sleep(0)  # the transports close their sockets in a callback

    def _require(self) -> App:
        if self._app is None:
            raise NoAnswerError("the BACnet stack is not open")
        return self._app

    async def who_is(self, low: int | None, high: int | None, address: str | None, timeout_s: float) -> list[IAm]:
        """Send a Who-Is (broadcast, or to one address) and collect the I-Ams for `timeout_s`."""
        app = self._require()
        self.requests += 1
        target = Address(address) if address else None
        found = await app.who_is(low, high, target, timeout=timeout_s)
        return [
            IAm(int(a.iAmDeviceIdentifier[1]), address_key(a.pduSource), int(a.maxAPDULengthAccepted),
                str(a.segmentationSupported), int(a.vendorID))
            for a in found
        ]

    async def _request(self, apdu: Any) -> Any:
        """Send a confirmed request; the answer, or NoAnswerError / DeviceRefusedError."""
        app = self._require()
        self.requests += 1
        try:
            async with asyncio.timeout(self.request_time_s + _GRACE_S):
                return await app.request(apdu)
        except TimeoutError:
            self.errors += 1
            raise NoAnswerError(f"no answer from {apdu.pduDestination}") from None
        except AbortPDU as pdu:
            self.errors += 1
            if not pdu.apduSrv and str(pdu.apduAbortRejectReason) == "no-response":
                raise NoAnswerError(f"no answer from {apdu.pduDestination}") from None
            raise DeviceRefusedError(failure_text(pdu)) from None
        except ErrorRejectAbortNack as pdu:
            self.errors += 1
            raise DeviceRefusedError(failure_text(pdu)) from None

    async def read_property(self, address: str, ref: Ref) -> Reading:
        """ReadProperty of one property; a device fault becomes the reading's quality."""
        request = ReadPropertyRequest(
            objectIdentifier=ObjectIdentifier((ref.object_type, ref.instance)),
            propertyIdentifier=PropertyIdentifier(ref.property), destination=Address(address),
        )
        try:
            ack = await self._request(request)
        except NoAnswerError as e:
            return Reading(None, Quality.NO_ANSWER, str(e))
        except DeviceRefusedError as e:
            return Reading(None, Quality.DEVICE_EXCEPTION, str(e))
        if not isinstance(ack, ReadPropertyACK):
            return Reading(None, Quality.BAD_FRAME, f"answer is a {type(ack).__name__}")
        return decode(ack.propertyValue, ref)

    async def read_object_list(self, address: str, instance: int) -> list[tuple[str, int]]:
        """The device object's object-list, whole or (if too big for one answer) item by item.

        Raises:
            NoAnswerError, DeviceRefusedError: the list could not be read.
        """
        array: Any = property_type("device", "object-list")

        async def read(index: int | None) -> Any:
            request = ReadPropertyRequest(
                objectIdentifier=ObjectIdentifier(("device", instance)),
                propertyIdentifier=PropertyIdentifier("object-list"), destination=Address(address),
            )
            if index is not None:
                request.propertyArrayIndex = index
            ack = await self._request(request)
            cls = array if index is None else Unsigned if index == 0 else array._subtype
            return ack.propertyValue.cast_out(cls)

        try:
            items = list(await read(None))
        except DeviceRefusedError as e:
            if not is_too_big(e):
                raise
            count = int(await read(0))
            items = [await read(i) for i in range(1, count + 1)]
        return [(str(ObjectType(o[0])), int(o[1])) for o in items]

    async def read_multiple(self, address: str, refs: Sequence[Ref]) -> list[Reading]:
        """One ReadPropertyMultiple for these properties.

        Raises:
            NoAnswerError: the device did not answer.
            DeviceRefusedError: it refused the whole request (e.g. "reject
                unrecognized-service" from a device without RPM).
        """
        specs: dict[tuple[str, int], list[Any]] = {}
        for ref in refs:
            specs.setdefault((ref.object_type, ref.instance), []).append(
                PropertyReference(propertyIdentifier=PropertyIdentifier(ref.property))
            )
        request = ReadPropertyMultipleRequest(
            listOfReadAccessSpecs=SequenceOf(ReadAccessSpecification)([
                ReadAccessSpecification(objectIdentifier=ObjectIdentifier(key), listOfPropertyReferences=props)
                for key, props in specs.items()
            ]),
            destination=Address(address),
        )
        ack = await self._request(request)
        if not isinstance(ack, ReadPropertyMultipleACK):
            return [Reading(None, Quality.BAD_FRAME, f"answer is a {type(ack).__name__}")] * len(refs)
        got: dict[tuple[str, int, str], Reading] = {}
        for result in ack.listOfReadAccessResults:
            obj = result.objectIdentifier
            otype, inst = str(ObjectType(obj[0])), int(obj[1])
            for element in result.listOfResults:
                prop = str(element.propertyIdentifier)
                read_result = element.readResult
                if read_result.propertyAccessError is not None:
                    err = read_result.propertyAccessError
                    reading = Reading(None, Quality.DEVICE_EXCEPTION, f"error {err.errorClass}/{err.errorCode}")
                else:
                    reading = decode(read_result.propertyValue, Ref(otype, inst, prop))
                got[otype, inst, prop] = reading
        missing = Reading(None, Quality.BAD_FRAME, "not in the answer")
        return [got.get((r.object_type, r.instance, r.property), missing) for r in refs]

    async def write_property(self, address: str, ref: Ref, value: Any, priority: int | None) -> None:
        """WriteProperty (NULL relinquishes at `priority`).

        Raises:
            NoAnswerError, DeviceRefusedError: the write was not done.
        """
        request = WritePropertyRequest(
            objectIdentifier=ObjectIdentifier((ref.object_type, ref.instance)),
            propertyIdentifier=PropertyIdentifier(ref.property), propertyValue=value,
            destination=Address(address),
        )
        if priority is not None:
            request.priority = priority
        await self._request(request)

    async def subscribe(
        self, address: str, ref: Ref, process_id: int, lifetime_s: int | None, confirmed: bool
    ) -> None:
        """SubscribeCOV (renewal is the same request); `lifetime_s=None` cancels.

        Raises:
            NoAnswerError, DeviceRefusedError: not subscribed.
        """
        request = SubscribeCOVRequest(
            subscriberProcessIdentifier=process_id,
            monitoredObjectIdentifier=ObjectIdentifier((ref.object_type, ref.instance)),
            destination=Address(address),
        )
        if lifetime_s is not None:
            request.issueConfirmedNotifications = confirmed
            request.lifetime = lifetime_s
        await self._request(request)


def is_unsupported(error: DeviceRefusedError) -> bool:
    """Whether a refusal says the device does not implement the service at all."""
    text = str(error)
    return text in ("reject unrecognized-service", "error services/service-request-denied") or text.endswith(
        "/optional-functionality-not-supported"
    )


def is_too_big(error: DeviceRefusedError) -> bool:
    """Whether a refusal says the answer would not fit (split the request and retry)."""
    return str(error) in (
        "abort segmentation-not-supported", "abort buffer-overflow", "abort apdu-too-long",
        "reject buffer-overflow", "abort out-of-resources",
    )


