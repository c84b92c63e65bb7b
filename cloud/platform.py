"""The reference cloud as one object: PKI, database, broker, receiver and enrollment endpoint.

`Cloud.init()` creates a home directory once; `start()`/`stop()` run the services
(used by `boxcloud run`, the demo and the tests). Box administration (`add_box`,
`revoke`, tags, deployments) works whether or not the services run in this process:
the running cloud's threads publish what is queued in the database (outbox), advance the
deployments (`cloud.deploy`, every half second) and renew the TUF metadata before it
expires (checked every minute).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from boxkit.files import write_atomic
from cloud import deploy
from cloud import tufrepo as ota_repository
from cloud._admin import Administration
from cloud._broker_parts import private_home
from cloud._checks import check_port_free, check_settings, database_url
from cloud.api import ApiServer
from cloud.api._secrets import Seeds
from cloud.api.server import seeds_key
from cloud.broker import Broker
from cloud.endpoint import EnrollServer
from cloud.enroll import Enroller
from cloud.errors import CloudError
from cloud.hooks import HookWorker, Limits, targets
from cloud.mqttconn import MqttWorker
from cloud.mqttconn.link import PUBLIC_ONLY as MQTT_PUBLIC_ONLY
from cloud.pki import Pki
from cloud.receiver import Receiver
from cloud.store import Store
from cloud.store._roles import RUN_TIME, SERVICES, role
from proto.downlink import ConfigPush, command, encode_command
from proto.errors import WireError
from proto.topics import Down

log = logging.getLogger("boxcloud")

CRL_REFRESH_S = 86400
CRL_WATCH_S = 2.0  # how often the running cloud looks whether the CRL changed (to give it to the Boxes)
SERVER_CERTS = ("broker", "enroll", "api")
OUTBOX_S = 0.2  # how often the running cloud looks for configurations and commands to send
DEPLOY_S = 0.5  # how often the running cloud advances the deployments
TUF_RENEW_CHECK_S = 60.0  # how often it checks the TUF metadata's expiry
MAINTAIN_S = 3600.0  # how often the running cloud makes the database's time partitions ahead (PostgreSQL)


@dataclass(frozen=True)
class Settings:
    """Where the cloud is reached; written by `init`, read by every command."""

    host: str = "localhost"  # the name Boxes use for the broker and the enrollment endpoint
    broker_port: int = 8883
    enroll_port: int = 8443
    bind: str = ""  # the address to listen on ("" = all)
    api_port: int = 9443  # the users' API (HTTPS, Basic or API keys; cloud.api)
    # the database: "" for SQLite (<home>/cloud.db), or a PostgreSQL URL without user or password
    # ("postgresql+psycopg:///boxcloud?host=/run/postgresql"): each service connects as its own role,
    # <database_role_prefix>_<service> (cloud.store._roles), by peer authentication or a 0600 passfile
    database: str = ""
    database_role_prefix: str = "boxcloud"
    # webhooks (cloud.hooks), the operator's only (never the users' API): private networks of the
    # operator's own that endpoints may be in (CIDRs; none by default: public addresses only; the
    # cloud metadata, link-local and the like stay refused), the ports allowed, trust anchors for
    # endpoints' certificates besides the system's (a PEM file; "": none), each outbox's cap (MiB)
    webhook_allow_networks: tuple[str, ...] = ()
    webhook_ports: tuple[int, ...] = (443, 8443)
    webhook_ca_file: str = ""
    webhook_outbox_mb: int = 256
    # MQTT connectors (cloud.mqttconn), the same exception for customers' brokers, set apart: other
    # ports (MQTT over TLS), and a network the operator opens to one kind of outbound traffic is not
    # thereby opened to the other; the broker's CA is each connector's own (given through the API)
    mqtt_allow_networks: tuple[str, ...] = ()
    mqtt_ports: tuple[int, ...] = (8883, 8884)

    def __post_init__(self) -> None:  # read from JSON: lists
        for name in ("webhook_allow_networks", "webhook_ports", "mqtt_allow_networks", "mqtt_ports"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def webhook_reach(self) -> targets.Reach:
        """Where webhooks may be sent. Raises ValueError for a setting that cannot be used."""
        return targets.operator_reach(self.webhook_allow_networks, self.webhook_ports)

    @property
    def mqtt_reach(self) -> targets.Reach:
        """Where MQTT connectors' brokers may be. Raises ValueError for a setting that cannot be used."""
        return targets.operator_reach(self.mqtt_allow_networks, self.mqtt_ports, what="MQTT broker")


class Cloud(Administration):
    """The reference cloud under one home directory. The constructor does no I/O."""

    def __init__(self, home: Path, *, database: Path | None = None) -> None:
        """`database`: the cloud's SQLite file, if not `<home>/cloud.db` (e.g. on another disk); a
        PostgreSQL database is named by the settings (`Settings.database`)."""
        self.home = home
        self.pki = Pki(home / "pki")
        self._database_file = database or home / "cloud.db"
        self._stores: dict[str, Store] = {}  # service -> its store (on PostgreSQL, its own role)
        self._deployer: deploy.Deployments | None = None
        self._settings: Settings | None = None
        self._broker: Broker | None = None
        self.receiver: Receiver | None = None
        self.enroll: EnrollServer | None = None
        self.api: ApiServer | None = None
        self.hooks: HookWorker | None = None
        self.mqtt: MqttWorker | None = None
        self.mqtt_options: dict[str, Any] = {}  # MqttWorker's keywords (a test's CA, resolver, namespace)
        self._stop = threading.Event()
        self._crl_thread: threading.Thread | None = None
        self._outbox_thread: threading.Thread | None = None
        self._deploy_thread: threading.Thread | None = None
        self.clock: Callable[[], float] = time.time  # the deployment and renewal thread's clock (tests move it)
        self.tuf_renew_check_s = TUF_RENEW_CHECK_S

    # -- the database ---------------------------------------------------------------------------

    def store_for(self, service: str) -> Store:
        """The store `service` uses (`cloud.store._roles`: owner, admin, receiver, api): on SQLite one
        store for all; on PostgreSQL a store connected as the service's own role. Opened on first use,
        upgraded only by `init` and `start` (`upgrade_store`).

        Raises:
            CloudError: the settings' database URL is refused (a password in it, a remote host...).
        """
        store = self._stores.get(service)
        if store is None:
            s = self.settings_or_default
            if not s.database:  # one file, one store
                store = next(iter(self._stores.values()), None) or Store(self._database_file, migrate=False)
            else:
                store = Store(database_url(s.database, role(s.database_role_prefix, service)), migrate=False)
            self._stores[service] = store
        return store

    @property
    def store(self) -> Store:
        """The store of the `boxcloud` commands and of the running cloud's control threads (admin)."""
        return self.store_for("admin")

    @store.setter
    def store(self, store: Store) -> None:  # a bench's own store, for every service
        self._stores = dict.fromkeys(SERVICES, store)
        self._deployer = None

    @property
    def deployer(self) -> deploy.Deployments:
        """The deployments' engine (over the admin store)."""
        if self._deployer is None:
            self._deployer = deploy.Deployments(self.store, self.ota_repo, self.send_command)
        return self._deployer

    @deployer.setter
    def deployer(self, deployer: deploy.Deployments) -> None:
        self._deployer = deployer

    # -- set-up -------------------------------------------------------------------------------

    def init(self, settings: Settings, extra_names: list[str] | None = None) -> None:
        """Create the PKI, the server and service certificates and the settings file."""
        if (self.home / "cloud.json").exists():
            raise CloudError(f"a cloud already exists in {self.home}: nothing changed (another --home for a new one)")
        check_settings(settings, extra_names or [])
        private_home(self.home)
        self._settings = settings
        self.upgrade_store()
        self.pki.init()
        names = sorted({settings.host, "localhost", "127.0.0.1", *(extra_names or [])})
        self.pki.issue_server("broker", names)
        self.pki.issue_server("enroll", names)
        self.pki.issue_server("api", names)
        for service in ("receiver", "admin"):
            self.pki.issue_service(service)
        self.ensure_ota_repository()
        write_atomic(self.home / "cloud.json", json.dumps(asdict(settings), indent=1).encode())

    def require(self) -> None:
        """Refuse a home where `init` never ran (nothing is created there).

        Raises:
            CloudError: no cloud in this home, said with how to make one or find the right one.
        """
        if not (self.home / "cloud.json").is_file():
            raise CloudError(f"no cloud in {self.home}: give the right --home (or BOXCLOUD_HOME), "
                             f"or create one with 'boxcloud --home {self.home} init'")

    def upgrade_store(self) -> None:
        """Create the database, or bring its schema up to this code's (in place, every row kept).

        Raises:
            SchemaError: it was made by a newer boxcloud (nothing changed).
        """
        owner, s = self.store_for("owner"), self.settings_or_default
        before, after = owner.migrate()
        if before != after:
            log.info("cloud database %s: schema upgraded from %s to %s", owner.display_name,
                     before or "none (new, or made before schema versions)", after)
        self.maintain_store()
        if s.database:  # each service's role: its privileges on the tables as they now are
            missing = sorted({role(s.database_role_prefix, r) for r in RUN_TIME}
                             - set(owner.grant_roles(s.database_role_prefix)))
            if missing:
                raise CloudError(f"the database has no role {', '.join(missing)}: create them first (README, "
                                 "'PostgreSQL'); the services never connect as the owner")

    def maintain_store(self) -> None:
        """Make the database's time partitions ahead (PostgreSQL; nothing on SQLite), as its owner."""
        made = self.store_for("owner").maintain()
        if made:
            log.info("cloud database: time partitions made: %s", ", ".join(made))

    @property
    def settings_or_default(self) -> Settings:
        """The settings, or the defaults before `init` wrote them."""
        if self._settings is None and not (self.home / "cloud.json").exists():
            return Settings()
        return self.settings

    @property
    def settings(self) -> Settings:
        """The settings written by `init`."""
        if self._settings is None:
            try:
                raw = json.loads((self.home / "cloud.json").read_text())
                self._settings = Settings(**raw)
            except FileNotFoundError:
                raise CloudError(f"no cloud in {self.home}: run 'boxcloud init' first") from None
            except (OSError, ValueError, TypeError) as e:
                raise CloudError(f"the settings file in {self.home} is unreadable: {e}") from e
        return self._settings

    @property
    def ota_repo(self) -> Path:
        """The TUF repository of Box software (served to Boxes under /tuf/ on the enrollment port)."""
        return self.home / "ota" / "repo"

    @property
    def ota_keys(self) -> Path:
        """The repository's keys (offline/ for root: to be moved off this machine; online/)."""
        return self.home / "ota" / "keys"

    def ensure_ota_repository(self) -> None:
        """Create the TUF repository with fresh keys if this cloud has none yet."""
        if not (self.ota_repo / "metadata" / "1.root.json").exists():
            ota_repository.init_repository(self.ota_repo, self.ota_keys)
            log.info("created the TUF repository in %s", self.ota_repo)

    @property
    def broker(self) -> Broker:
        """The broker (started or not)."""
        if self._broker is None:
            s = self.settings
            self._broker = Broker(self.home, self.pki, self.store, host=s.host, port=s.broker_port, bind=s.bind)
        return self._broker

    # -- services ------------------------------------------------------------------------------

    def start(self, *, receiver: bool = True) -> None:
        """Upgrade the database's schema, start the broker, the receiver (unless `receiver` is False:
        receivers run in processes of their own, `boxcloud receive`) and the enrollment endpoint; on a
        failure, stop what was started and raise.

        Raises:
            CloudError: a port is taken (named), a service cannot start, or the database was
                made by a newer boxcloud.
        """
        s = self.settings
        for what, port in (("broker", s.broker_port), ("enrollment", s.enroll_port), ("users' API", s.api_port)):
            check_port_free(s.bind, port, what)
        self.upgrade_store()
        try:
            self._start(receiver)
        except BaseException:
            self.stop()
            raise

    def _start(self, receiver: bool) -> None:
        s = self.settings
        self.write_crl()
        self.broker.start()
        if receiver:
            self.receiver = self.make_receiver()
            self.receiver.start()
        self.ensure_ota_repository()
        self.enroll = EnrollServer(
            Enroller(self.pki, self.store, self.broker, self.revocations_changed),
            self.pki.dir / "enroll.crt", self.pki.dir / "enroll.key", s.bind, s.enroll_port,
            client_ca=self.pki.root_cert, tuf_repo=self.ota_repo,
        )
        try:
            self.enroll.start()
        except OSError as e:
            self.enroll = None
            raise CloudError(f"cannot listen for enrollment on {s.bind or '*'}:{s.enroll_port}: "
                             f"{e.strerror or e}") from None
        self._start_api()
        self._start_hooks()
        self._start_mqtt()
        self._stop.clear()
        self._crl_thread = threading.Thread(target=self._refresh_crl, name="crl", daemon=True)
        self._crl_thread.start()
        self._outbox_thread = threading.Thread(target=self._outbox, name="outbox", daemon=True)
        self._outbox_thread.start()
        self._deploy_thread = threading.Thread(target=self._deploy_loop, name="deploy", daemon=True)
        self._deploy_thread.start()
        log.info("cloud up: broker %s:%d, enrollment https://%s:%d, users' API https://%s:%d/v1", s.host, s.broker_port,
                 s.host, s.enroll_port, s.host, s.api_port)

    def _start_hooks(self) -> None:
        """The webhooks' feed and deliveries (cloud.hooks), with the operator's settings (said and
        audited when they let webhooks reach private networks)."""
        s = self.settings
        reach = s.webhook_reach
        self._operator_reach("webhooks may be sent to", reach, targets.PUBLIC_ONLY, "webhook")
        extra_ca = Path(s.webhook_ca_file) if s.webhook_ca_file else None
        if extra_ca is not None:
            log.info("webhooks: endpoints' certificates may also chain to %s", extra_ca)
        self.hooks = HookWorker(self.store, Seeds(seeds_key(self.home / "api-seeds.key")), reach=reach,
                                extra_ca=extra_ca, limits=Limits(outbox_bytes=s.webhook_outbox_mb << 20))
        self.hooks.start()

    def _operator_reach(self, what: str, reach: targets.Reach, default: targets.Reach, setting: str) -> None:
        """Say and audit the operator's exception when `reach` opens more than `default`."""
        if reach.networks or reach.ports != default.ports:
            nets = ", ".join(map(str, reach.networks)) or "none"
            log.warning("%s the operator's private networks %s, ports %s (settings %s_allow_networks, %s_ports): "
                        "anyone with connector.manage can make the platform connect to hosts there", what, nets,
                        ", ".join(map(str, sorted(reach.ports))), setting, setting)
            self.store.audit(None, "operator", f"platform.{setting}_reach", "settings", networks=nets,
                             ports=sorted(reach.ports))

    def _start_mqtt(self) -> None:
        """The MQTT connectors' queues and links (cloud.mqttconn), within the operator's reach."""
        reach = self.settings.mqtt_reach
        self._operator_reach("MQTT connectors may connect to brokers in", reach, MQTT_PUBLIC_ONLY, "mqtt")
        options: dict[str, Any] = {"reach": reach, **self.mqtt_options}
        self.mqtt = MqttWorker(self.store, Seeds(seeds_key(self.home / "api-seeds.key")), self.send_command, **options)
        self.mqtt.start()

    def make_receiver(self, member: int = 0, group: str = "", broker: tuple[str, int] | None = None) -> Receiver:
        """A receiver of this cloud (not started): alone, or `member` N of the shared subscription
        `group` (`cloud.receiver`), with its own certificate, issued here the first time; connecting to
        `broker` (host, port) when given, else to the settings' host and broker port."""
        host, port = broker or (self.settings.host, self.settings.broker_port)
        rx = Receiver(self.pki, self.store_for("receiver"), host, port, member=member, group=group)
        if not (self.pki.dir / f"svc-{rx.identity}.crt").exists():
            self.pki.issue_service(rx.identity)
        rx.on_ota = lambda box_id, doc: self.deployer.on_event(box_id, doc, self.clock())
        return rx

    def _start_api(self) -> None:
        """The users' API on its own port, with its own server certificate (made here for a cloud
        created before it had one)."""
        s = self.settings
        cert, key = self.pki.dir / "api.crt", self.pki.dir / "api.key"
        if not cert.exists():
            self.pki.issue_server("api", sorted({s.host, "localhost", "127.0.0.1",
                                                 *self.pki.cert_names(self.pki.dir / "enroll.crt")}))
        self.api = ApiServer(self.store_for("api"), self, cert, key, seeds_file=self.home / "api-seeds.key",
                             bind=s.bind, port=s.api_port, hook_reach=s.webhook_reach,
                             mqtt_reach=s.mqtt_reach)
        try:
            self.api.start()
        except OSError as e:
            self.api = None
            raise CloudError(f"cannot listen for the users' API on {s.bind or '*'}:{s.api_port}: "
                             f"{e.strerror or e}") from None

    def stop(self) -> None:
        """Stop every service this object started."""
        self._stop.set()
        if self.hooks is not None:
            self.hooks.stop()
            self.hooks = None
        if self.mqtt is not None:
            self.mqtt.stop()
            self.mqtt = None
        if self.api is not None:
            self.api.stop()
        if self.enroll is not None:
            self.enroll.stop()
        if self.receiver is not None:
            self.receiver.stop()
        if self._broker is not None:
            self._broker.stop()
        for t in (self._crl_thread, self._outbox_thread, self._deploy_thread):
            if t is not None:
                t.join(5)

    def supervise(self) -> None:
        """Restart the broker if it died, run the monitor's checks (every second, by `boxcloud run`)."""
        if self.receiver is not None:
            self.receiver.monitor.check()
        broker = self._broker
        if broker is not None and broker.exited():
            log.error("the broker exited unexpectedly (%s); restarting it", broker.last_log_line())
            self.write_crl()
            broker.start()

    def _refresh_crl(self) -> None:
        """Rewrite the CRL every CRL_REFRESH_S; whenever it changed (here or by a `boxcloud` command in
        another process), give it to every online Box."""
        last_write, seen = time.monotonic(), self._crl_stamp()
        while not self._stop.wait(CRL_WATCH_S):
            try:
                if time.monotonic() - last_write >= CRL_REFRESH_S:
                    last_write = time.monotonic()
                    self.write_crl()
                    self.broker.crl_changed()
                stamp = self._crl_stamp()
                if stamp != seen and self.receiver is not None:
                    seen = stamp
                    self.receiver.crl_changed()
                    for b in self.store.boxes():
                        if b.online and b.revoked is None:
                            self.receiver.send_crl(b.box_id)
            except Exception:  # the thread must outlive a bad moment; it is logged every time
                log.exception("cannot refresh or send the CRL")

    def _crl_stamp(self) -> tuple[int, int]:
        try:
            st = self.pki.crl.stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def _outbox(self) -> None:
        """Send what `push_config` and `send_command` queued (from this or another process)."""
        while not self._stop.wait(OUTBOX_S):
            try:
                self.flush_outbox()
            except Exception:  # the thread must outlive a bad row or a database hiccup
                log.exception("cannot send the queued configurations and commands")

    def _deploy_loop(self) -> None:
        """Advance the deployments every DEPLOY_S; renew the TUF metadata when due (checked at start,
        then every `tuf_renew_check_s`)."""
        last_check: float | None = None
        last_maintained = time.monotonic()  # and at start (upgrade_store)
        while True:
            if time.monotonic() - last_maintained >= MAINTAIN_S:
                last_maintained = time.monotonic()
                try:
                    self.maintain_store()
                except Exception:  # rows go to the default partition meanwhile: nothing is lost
                    log.exception("cannot make the database's time partitions")
                try:  # not at start (upgrade_store): a day's rewrite takes a while
                    if done := self.store_for("owner").reorder():
                        log.info("cloud database: %s rewritten in (Box, time) order", done)
                except Exception:  # the day stays as it was, read as before; the next hour tries again
                    log.exception("cannot rewrite a finished day of the samples in (Box, time) order")
            try:
                if last_check is None or time.monotonic() - last_check >= self.tuf_renew_check_s:
                    last_check = time.monotonic()
                    self.renew_tuf_metadata(self.clock())
            except Exception:  # the thread must outlive a broken repository; it is logged every check
                log.exception("cannot renew the TUF metadata")
            try:
                self.deployer.tick(self.clock())
            except Exception:  # ... and a bad row or a database hiccup
                log.exception("cannot advance the deployments")
            if self._stop.wait(DEPLOY_S):
                return

    def renew_tuf_metadata(self, now: float) -> list[str]:
        """Re-sign the TUF roles close to expiry at time `now` (see `cloud.tufrepo.renew_expiring`).

        Returns:
            the roles renewed.
        """
        renewed = ota_repository.renew_expiring(self.ota_repo, self.ota_keys, datetime.fromtimestamp(now, UTC))
        if renewed:
            log.info("TUF metadata renewed: %s", ", ".join(renewed))
        return renewed

    def flush_outbox(self) -> None:
        """Publish every queued configuration (retained: a Box that comes online gets the latest
        meant for it) and every queued command that has not expired."""
        rx = self.receiver
        if rx is None:
            return
        for c in self.store.unpublished_configs():
            if rx.publish_down(c.box_id, Down.CONFIG, ConfigPush(c.version, c.toml, c.allow_empty).encode(),
                               retain=True):
                self.store.mark_config_published(c.box_id, c.version)
                log.info("configuration version %d sent to %s", c.version, c.box_id)
        for box_id in self.store.retained_to_clear():
            if rx.publish_down(box_id, Down.CONFIG, b"", retain=True):  # an empty retained message clears it
                self.store.retained_cleared(box_id)
                log.info("retained configuration of %s cleared", box_id)
        for cmd in self.store.unpublished_commands(time.time()):
            try:
                payload = encode_command(command(cmd.id, cmd.name, cmd.expires, cmd.args))
            except WireError as e:  # checked when it was queued: a row from elsewhere
                log.error("command %s for %s is not a valid command, not sent: %s", cmd.id, cmd.box_id, e)
                self.store.cancel_command(cmd.id)
                continue
            if not self.store.claim_command(cmd.id):  # cancelled meanwhile (a deployment stopped)
                continue
            if rx.publish_down(cmd.box_id, Down.CMD, payload):
                log.info("command %s (%s) sent to %s", cmd.id, cmd.name, cmd.box_id)
            else:
                self.store.unclaim_command(cmd.id)

    def write_crl(self) -> None:
        """Rewrite the CRL from the database."""
        self.pki.write_crl((s, datetime.fromtimestamp(t, UTC)) for s, t in self.store.revoked_certs())

    def reissue_server_cert(self, name: str) -> int:
        """Issue a new server certificate `name` ("broker" or "enroll") and revoke the one it replaces
        (its key is lost, or it was shown somewhere it should not have been); the broker re-reads
        its certificate and the CRL, the Boxes get the CRL. Returns the revoked serial.

        Raises:
            CloudError: not a server certificate of this cloud.
        """
        if name not in SERVER_CERTS:
            raise CloudError(f"no server certificate {name!r}: one of {', '.join(SERVER_CERTS)}")
        current = self.pki.dir / f"{name}.crt"
        old = self.pki.cert_serial(current)
        names = sorted({self.settings.host, "localhost", "127.0.0.1", *self.pki.cert_names(current)})
        self.pki.issue_server(name, names)
        self.store.revoke_cert(old, f"server:{name}")
        if name == "broker" and self.broker.running_pid() is not None:
            self.broker.write_config()  # its copy of the new key
        self.revocations_changed()
        return old

    def revocations_changed(self) -> None:
        """Certificates went on the revocation list: new CRL, and the broker re-reads it."""
        self.write_crl()
        self.broker.crl_changed()
