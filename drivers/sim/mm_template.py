"""A python-dbusmock template: ModemManager with one modem, its SIM and bearers, and faults.

Loaded by python-dbusmock (`drivers.sim.fake_mm` starts it on a private bus, under Debian's
python3 with dbus-python): it builds on dbusmock's own ModemManager template (the daemon object and
its ObjectManager) and adds what boxd's backend uses, as ModemManager 1.20 does: the modem
(State, StateFailedReason, UnlockRequired, UnlockRetries, Sim, Bearers, identity, Device, Ports;
Enable, Reset), Modem3gpp (RegistrationState, OperatorName, OperatorCode; Register), Modem.Signal
(Rate, Lte; Setup), Modem.Simple (Connect, Disconnect), the SIM (SimIdentifier; SendPin), bearers
(Connected, Interface, Ip4Config, Properties, Stats), and InhibitDevice on the daemon object.

Faults and counters through the interface ``org.boxd.FakeModem`` of the daemon object:
``Fault(s)`` with "sim-missing" (the SIM pulled: the bearer goes, the modem fails), "sim-in",
"pin:<attempts>", "denied", "home", "roaming", "searching" (the network lost: the bearer goes),
"drop" (the network drops the bearer), "reboot" (the modem resets by itself: the bearer goes, it
comes back disabled), "apns:<a,b>", "signal:<rsrp>,<rsrq>,<snr>"; ``Counts() -> s`` (JSON: resets,
pin_tries, registrations, connects, inhibits).

Every function runs inside the dbusmock process; nothing here is imported by boxd.
"""

# mypy: ignore-errors

from __future__ import annotations

import json

BUS_NAME = "org.freedesktop.ModemManager1"
MAIN_OBJ = "/org/freedesktop/ModemManager1"
MAIN_IFACE = "org.freedesktop.ModemManager1"
SYSTEM_BUS = True
IS_OBJECT_MANAGER = False
MODEM_PATH = "/org/freedesktop/ModemManager1/Modem/0"
SIM_PATH = "/org/freedesktop/ModemManager1/SIM/0"
MODEM = "org.freedesktop.ModemManager1.Modem"
G3PP = MODEM + ".Modem3gpp"
SIGNAL = MODEM + ".Signal"
SIMPLE = MODEM + ".Simple"
SIM = "org.freedesktop.ModemManager1.Sim"
BEARER = "org.freedesktop.ModemManager1.Bearer"
CONTROL = "org.boxd.FakeModem"
ERR = "org.freedesktop.ModemManager1.Error."
STATE_FAILED, STATE_LOCKED, STATE_DISABLED, STATE_REGISTERED, STATE_CONNECTED = -1, 2, 3, 8, 11
PIN = "1234"
_s: dict = {"apns": ["internet.test"], "pin": 3, "locked": False, "missing": False, "reg": 1,
            "counts": {}, "bearers": 0, "enabled": False}


def _error(name, text):
    import dbus

    return dbus.exceptions.DBusException(text, name=ERR + name)


def _count(key):
    _s["counts"][key] = _s["counts"].get(key, 0) + 1


def _modem():
    from dbusmock import mockobject

    return mockobject.objects[MODEM_PATH]


def _refresh():
    """The modem's state properties from the fake's state."""
    import dbus

    m = _modem()
    if _s["missing"]:
        state, reason, lock = STATE_FAILED, 2, 1
    elif _s["locked"]:
        state, reason, lock = STATE_LOCKED, 0, 2 if _s["pin"] > 0 else 4
    elif not _s["enabled"]:
        state, reason, lock = STATE_DISABLED, 0, 1
    else:
        state, reason, lock = STATE_REGISTERED if _s["reg"] in (1, 5) else 7, 0, 1
    m.UpdateProperties(MODEM, {"State": dbus.Int32(state), "StateFailedReason": dbus.UInt32(reason),
                               "UnlockRequired": dbus.UInt32(lock),
                               "UnlockRetries": dbus.Dictionary({dbus.UInt32(2): dbus.UInt32(_s["pin"])},
                                                                signature="uu")})
    m.UpdateProperties(G3PP, {"RegistrationState": dbus.UInt32(_s["reg"] if _s["enabled"] and not _s["locked"]
                                                                else 0)})


def load(mock, parameters):
    """Called by dbusmock: the daemon object, then our modem and SIM."""
    import dbus
    from dbusmock.templates import modemmanager as upstream

    upstream.load(mock, parameters)
    # ModemManager's modems live under .../Modem/<n> (the upstream template lists .../Modems/)
    code = f"ret = {{dbus.ObjectPath(k): objects[k].props for k in objects if k.startswith('{MAIN_OBJ}/Modem/')}}"
    mock.AddMethod("org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "", "a{oa{sa{sv}}}", code)
    mock.AddMethods(MAIN_IFACE, [("InhibitDevice", "sb", "", _inhibit)])
    mock.AddMethods(CONTROL, [("Fault", "s", "", _fault), ("Counts", "", "s", _counts)])
    mock.AddObject(MODEM_PATH, MODEM, {
        "State": dbus.Int32(STATE_DISABLED), "StateFailedReason": dbus.UInt32(0), "UnlockRequired": dbus.UInt32(1),
        "UnlockRetries": dbus.Dictionary({}, signature="uu"), "Sim": dbus.ObjectPath(SIM_PATH),
        "Bearers": dbus.Array([], signature="o"), "EquipmentIdentifier": "867698041234567",
        "Manufacturer": "Quectel", "Model": "EG25", "Revision": "EG25GGBR07A08M2G",
        "AccessTechnologies": dbus.UInt32(1 << 14), "Device": "/sys/devices/pci0000:00/usb1/1-1",
        "Ports": dbus.Array([("cdc-wdm0", dbus.UInt32(6)), ("ttyUSB2", dbus.UInt32(3))], signature="(su)"),
        "PrimaryPort": "cdc-wdm0"}, [("Enable", "b", "", _enable), ("Reset", "", "", _reset)])
    m = _modem()
    m.AddProperties(G3PP, {"RegistrationState": dbus.UInt32(0), "OperatorName": "Sim Telecom",
                           "OperatorCode": "00101", "Imei": "867698041234567"})
    m.AddMethods(G3PP, [("Register", "s", "", _register)])
    m.AddProperties(SIGNAL, {"Rate": dbus.UInt32(0), "Lte": dbus.Dictionary(
        {"rssi": -61.0, "rsrp": -88.0, "rsrq": -10.0, "snr": 12.0}, signature="sv")})
    m.AddMethods(SIGNAL, [("Setup", "u", "", f"self.Set('{SIGNAL}', 'Rate', dbus.UInt32(args[0]))")])
    m.AddMethods(SIMPLE, [("Connect", "a{sv}", "o", _connect), ("Disconnect", "o", "", _disconnect)])
    mock.AddObject(SIM_PATH, SIM, {"SimIdentifier": "89490200001234567890", "Active": True},
                   [("SendPin", "s", "", _send_pin)])
    _refresh()


def _inhibit(self, uid, inhibit):
    _count("inhibits" if inhibit else "uninhibits")


def _fault(self, fault):
    import dbus
    from dbusmock import mockobject

    name, _, value = fault.partition(":")
    lost = {"sim-missing": {"missing": True, "enabled": False}, "searching": {"reg": 2}, "drop": {},
            "reboot": {"enabled": False}}
    if name in lost:  # the data session goes with each
        for path in list(_modem().Get(MODEM, "Bearers")):
            _drop(path)
        _s.update(lost[name])
    elif name == "sim-in":
        _s["missing"] = False
    elif name == "pin":
        _s["locked"], _s["pin"] = True, int(value)
    elif name in ("denied", "home", "roaming"):
        _s["reg"] = {"denied": 3, "home": 1, "roaming": 5}[name]
    elif name == "apns":
        _s["apns"] = value.split(",")
    elif name == "signal":
        rsrp, rsrq, snr = (float(v) for v in value.split(","))
        _modem().UpdateProperties(SIGNAL, {"Lte": dbus.Dictionary(
            {"rssi": -60.0, "rsrp": rsrp, "rsrq": rsrq, "snr": snr}, signature="sv")})
    elif name == "sim-iccid":
        mockobject.objects[SIM_PATH].UpdateProperties(SIM, {"SimIdentifier": value})
    else:
        raise _error("Core.InvalidArgs", f"no such fault: {fault}")
    _refresh()


def _counts(self):
    return json.dumps(_s["counts"])


def _enable(self, enable):
    if _s["missing"]:
        raise _error("MobileEquipment.SimNotInserted", "SIM not inserted")
    if _s["locked"]:
        raise _error("Core.WrongState", "the modem is locked")
    _s["enabled"] = bool(enable)
    _refresh()


def _reset(self):
    _count("resets")
    for path in list(_modem().Get(MODEM, "Bearers")):
        _drop(path)
    _s["enabled"] = False
    _refresh()


def _register(self, operator):
    _count("registrations")
    if _s["reg"] == 3:
        raise _error("MobileEquipment.GprsPlmnNotAllowed", "PLMN not allowed")


def _send_pin(self, pin):
    _count("pin_tries")
    if not _s["locked"]:
        return
    if _s["pin"] <= 0:
        raise _error("MobileEquipment.SimPuk", "SIM PUK required")
    if pin != PIN:
        _s["pin"] -= 1
        _refresh()
        raise _error("MobileEquipment.IncorrectPassword", "incorrect password")
    _s["locked"], _s["pin"] = False, 3
    _refresh()


def _connect(self, props):
    import dbus

    _count("connects")
    apn = str(props.get("apn", ""))
    if not _s["enabled"] or _s["reg"] not in (1, 5):
        raise _error("Core.WrongState", "not registered")
    if apn not in _s["apns"]:
        raise _error("MobileEquipment.GprsMissingOrUnknownApn", f"missing or unknown APN {apn}")
    _s["bearers"] += 1
    path = f"/org/freedesktop/ModemManager1/Bearer/{_s['bearers']}"
    self.AddObject(path, BEARER, {
        "Connected": True, "Interface": "wwan0",
        "Ip4Config": dbus.Dictionary({"method": dbus.UInt32(3), "address": "100.64.9.2", "prefix": dbus.UInt32(30),
                                      "gateway": "100.64.9.1"}, signature="sv"),
        "Properties": dbus.Dictionary({"apn": apn}, signature="sv"),
        "Stats": dbus.Dictionary({"rx-bytes": dbus.UInt64(1000), "tx-bytes": dbus.UInt64(500)}, signature="sv")}, [])
    m = _modem()
    m.UpdateProperties(MODEM, {"Bearers": dbus.Array([*m.Get(MODEM, "Bearers"), dbus.ObjectPath(path)], signature="o"),
                               "State": dbus.Int32(STATE_CONNECTED)})
    return dbus.ObjectPath(path)


def _disconnect(self, which):
    for path in list(_modem().Get(MODEM, "Bearers")):
        if which in ("/", path):
            _drop(path)
    _refresh()


def _drop(path):
    import dbus
    from dbusmock import mockobject

    m = _modem()
    if path in mockobject.objects:
        m.RemoveObject(path)
    m.UpdateProperties(MODEM, {"Bearers": dbus.Array([p for p in m.Get(MODEM, "Bearers") if p != path],
                                                     signature="o")})
