"""`boxctl modem status` and `boxctl modem watch`: the 4G modem in an installer's words.

When boxd runs, it owns the modem (its AT port is opened exclusively; with ModemManager it drives
the bearer): both commands read what the daemon reports in ``<state>/run/status.json``, and
`watch` asks it (a fresh ``<state>/run/modem-watch``) to read the signal every second. When boxd
does not run, they talk to the modem themselves, with the backend of the configuration's
``[modem]`` section. Every problem is one line saying what to do ("no SIM card detected", "the
network refused the APN 'x'", "the modem does not answer: power-cycling it"); never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

from provisioning.errors import ProvisionError

WATCH_FILE = "run/modem-watch"
RUNG_WORDS = {"": "came back by itself", "reconnect": "reconnected the data bearer", "reregister": "registered again",
              "reset": "reset the modem", "power_cycle": "power-cycled the modem", "reboot": "rebooted the Box"}
BAR = 20


def _daemon(state_dir: Path) -> dict[str, object] | None:
    from provisioning._status import daemon_state

    return daemon_state(state_dir) if state_dir.is_dir() else None


def _settings(config: Path) -> object:
    import boxconfig as boxd_config
    from boxconfig.errors import ConfigError

    try:
        cfg = boxd_config.load(config)
    except ConfigError as e:
        raise ProvisionError(str(e)) from None
    if cfg.modem is None:
        raise ProvisionError(f"the configuration {config} has no [modem] section: this Box has no 4G modem configured")
    return cfg.modem


async def _query(settings: object, signal_only: bool = False) -> dict[str, object]:
    """Ask the modem itself (boxd is not running)."""
    from boxconfig.modem import ModemSettings
    from boxd._modem_report import signal_doc
    from drivers.modem import ModemError, ModemGone, ModemTimeout, make_backend

    assert isinstance(settings, ModemSettings)
    b = make_backend(settings.backend, settings.port, interface=settings.interface, baudrate=settings.baudrate,
                     timeout_s=float(settings.ladder.at_timeout_s))
    try:
        await b.open()
        doc: dict[str, object] = {"signal": signal_doc(await b.signal()), "backend": b.name, "port": settings.port,
                                  "apn": settings.apn, "interface": settings.interface, "answers": True}
        if not signal_only:
            ident, sim, reg, bearer = await b.identity(), await b.sim(), await b.registration(), await b.bearer()
            doc.update({"model": f"{ident.manufacturer} {ident.model}".strip(), "imei": ident.imei,
                        "iccid": ident.iccid, "sim": sim.state.value, "reg": reg.state.value,
                        "operator": reg.operator, "tech": reg.tech, "band": reg.band, "cell": reg.cell,
                        "state": "connected" if bearer.connected else reg.state.value, "address": bearer.address,
                        "pin_attempts": sim.pin_attempts})
        return doc
    except ModemGone as e:
        raise ProvisionError(f"{e}: is the modem plugged in and powered?") from None
    except ModemTimeout as e:
        raise ProvisionError(f"the modem does not answer ({e}): power-cycle it (unplug it, or "
                             "systemctl start boxd-modem-power)") from None
    except ModemError as e:
        raise ProvisionError(f"the modem refused: {e}") from None
    finally:
        await b.close()


def status(state_dir: Path, config: Path, as_json: bool) -> int:
    """Print the modem's status; 0 when it carries data, 1 otherwise."""
    st = _daemon(state_dir)
    if st is not None:
        doc = st.get("modem")
        if not isinstance(doc, dict):
            raise ProvisionError("boxd runs without a [modem] section in its configuration: no 4G modem is managed")
        doc = {**doc, "source": "boxd"}
    else:
        doc = {**asyncio.run(_query(_settings(config))), "source": "modem"}
    if as_json:
        print(json.dumps(doc, indent=1))
    else:
        print("\n".join(lines(doc)))
    return 0 if doc.get("state") == "connected" and not doc.get("fault") else 1


def lines(d: dict[str, object]) -> list[str]:
    """The status in lines, for a person."""
    def row(label: str, text: str) -> str:
        return f"{label + ':':<14} {text}"

    out = [row("Modem", f"{d.get('model') or 'unknown'} (IMEI {d.get('imei') or '?'}), {d.get('backend')} on "
                        f"{d.get('port') or 'ModemManager'}" + ("" if d.get("source") == "boxd" else
                                                                "; boxd is not running: asked the modem directly"))]
    sim = d.get("sim", "?")
    out.append(row("SIM", f"{sim}" + (f" (ICCID {d['iccid']})" if d.get("iccid") else "")))
    reg = d.get("reg", "?")
    where = ", ".join(str(x) for x in (str(d.get("tech", "")).upper(), d.get("band"),
                                        f"cell {d['cell']}" if d.get("cell") else "") if x)
    out.append(row("Network", f"{reg}" + (f" on {d['operator']}" if d.get("operator") else "")
                   + (f" ({where})" if where else "")))
    out.append(row("Signal", signal_words(d.get("signal"))))
    bearer = "connected" if d.get("state") == "connected" else "not connected"
    out.append(row("Data bearer", f"{bearer}, APN {d.get('apn')}" + (f", {d['address']}" if d.get("address") else "")
                   + (f" on {d['interface']}" if d.get("interface") else "")))
    use = d.get("usage")
    if isinstance(use, dict):
        rx, tx, budget = int(use.get("rx", 0)), int(use.get("tx", 0)), int(use.get("budget", 0))
        share = f"; budget {budget / 1e6:.0f} MB ({(rx + tx) / budget:.0%})" if budget else ""
        saving = "; SAVING DATA (bigger batches, slower points)" if use.get("saving") else ""
        out.append(row("Data used", f"{(rx + tx) / 1e6:.2f} MB since {use.get('period')} ({rx / 1e6:.2f} received, "
                                    f"{tx / 1e6:.2f} sent){share}{saving}"))
    if d.get("wan"):
        out.append(row("Uplink", "4G" if d["wan"] == "cellular" else "the preferred wired/Wi-Fi uplink"))
    ladder = d.get("ladder")
    if isinstance(ladder, dict):
        last = ladder.get("last_recovery")
        if ladder.get("doing"):
            out.append(row("Recovery", f"NOW {ladder['doing']} ({ladder.get('trouble_s', 0)} s of trouble)"))
        if isinstance(last, dict):
            what = RUNG_WORDS.get(str(last.get("rung")), "?")
            at = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(str(last.get("at", 0)))))
            out.append(row("Last recovery", f"{what} at {at}, after {last.get('took_s')} s ({last.get('why')})"))
        if ladder.get("held"):
            out.append(row("Held", str(ladder["held"])))
    problem = d.get("fault_text") or ("" if d.get("answers", True) else d.get("note") or "the modem does not answer")
    if problem:
        out.append(row("PROBLEM", str(problem)))
    return out


def signal_words(sig: object) -> str:
    """"good: RSRP -85 dBm, RSRQ -9 dB, SINR 15 dB (LTE)"."""
    if not isinstance(sig, dict):
        return "unknown"
    units = {"rsrp": "dBm", "rsrq": "dB", "sinr": "dB", "rssi": "dBm"}
    values = ", ".join(f"{k.upper()} {sig[k]} {u}" for k, u in units.items() if isinstance(sig.get(k), int | float))
    tech = f" ({str(sig['tech']).upper()})" if sig.get("tech") else ""
    return f"{sig.get('grade', 'none')}: {values or 'no measurement'}{tech}"


def _bar(grade: str) -> str:
    n = {"excellent": BAR, "good": BAR * 3 // 4, "fair": BAR // 2, "poor": BAR // 4}.get(grade, 0)
    return "#" * n + "." * (BAR - n)


def watch(state_dir: Path, config: Path, count: int | None) -> int:
    """The signal once a second with its grade, until Ctrl-C (or `count` lines)."""
    st = _daemon(state_dir)
    settings = None if st is not None else _settings(config)
    if st is not None and not isinstance(st.get("modem"), dict):
        raise ProvisionError("boxd runs without a [modem] section in its configuration: no 4G modem is managed")
    print("the signal, once a second (Ctrl-C ends); move the antenna and wait for a few lines at each place",
          flush=True)
    shown = 0
    with contextlib.suppress(KeyboardInterrupt):
        while count is None or shown < count:
            if st is not None:
                with contextlib.suppress(OSError):
                    (state_dir / WATCH_FILE).touch()
                st = _daemon(state_dir)
                if st is None:
                    raise ProvisionError("boxd stopped")
                modem = st.get("modem")
                sig = modem.get("signal") if isinstance(modem, dict) else None
            else:
                sig = asyncio.run(_query(settings, signal_only=True))["signal"]
            grade = str(sig.get("grade", "none")) if isinstance(sig, dict) else "none"
            print(f"{time.strftime('%H:%M:%S')}  {_bar(grade)}  {signal_words(sig)}", flush=True)
            shown += 1
            if count is None or shown < count:
                time.sleep(1.0)
    sys.stdout.flush()
    return 0
