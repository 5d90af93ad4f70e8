"""Assemble the embedded KMS from a data directory: root key, SoftHSM2 token, metadata DB."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pkcs11 import ObjectClass
from sqlalchemy import text
from sqlalchemy.engine import Engine

from kms_core.accounts import AccountService
from kms_core.audit import AuditLog
from kms_core.buckets import BucketClaims
from kms_core.changes import ChangeFeed
from kms_core.db import make_engine
from kms_core.errors import KeyUnavailable
from kms_core.keystore.hsm import HsmConfig, HsmKeyStore
from kms_core.keystore.softhsm import ensure_embedded_token
from kms_core.keystore.software import RootSealer, SoftwareKeyStore
from kms_core.metering import Meter
from kms_core.models import utcnow
from kms_core.observe import Flusher, Observer
from kms_core.regions import DEFAULT_POOL_ID
from kms_core.repository import DEFAULT_CACHE_TTL
from kms_core.rootkey import open_root_key
from kms_core.schema import cluster_lock
from kms_core.service import KmsService
from kms_core.specs import Protection

DEFAULT_REGION = DEFAULT_POOL_ID  # 华东1


def default_data_dir() -> Path:
    return Path(os.environ.get("SSEGW_DATA_DIR", "./var"))


@dataclass
class KmsConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    db_url: str | None = None
    # The pool this process acts in by default (CLI, default SigV4 region of clients), and the
    # pools a deployment serves (`ssegw serve --region`, repeatable): requests signed for any
    # other pool are refused. Empty `regions` means just `region`.
    region: str = DEFAULT_REGION
    regions: tuple[str, ...] = ()
    # None: the embedded SoftHSM2 token under <data_dir>/hsm, created on first use. Otherwise
    # the cluster's HSM (--pkcs11-module, --pkcs11-token, --pkcs11-pin-file).
    hsm: HsmConfig | None = None
    # "file": the software root key in <data_dir>/root.key; "hsm": sealed by the HSM, in the DB.
    root_key: str = "file"
    # How long a process trusts its snapshot of a key's state (SSEGW_KMS_CACHE_SECONDS). Other
    # nodes' changes arrive at once on PostgreSQL (kms_core.changes); this bounds the rest.
    cache_ttl: float = field(default_factory=lambda: float(
        os.environ.get("SSEGW_KMS_CACHE_SECONDS", DEFAULT_CACHE_TTL)))
    clock: Callable[[], datetime] = utcnow

    @property
    def served_regions(self) -> tuple[str, ...]:
        return self.regions or (self.region,)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'kms.db').resolve()}"


@dataclass
class Kms:
    config: KmsConfig
    engine: Engine
    service: KmsService
    accounts: AccountService
    observer: Observer
    meter: Meter
    audit: AuditLog
    changes: ChangeFeed
    buckets: BucketClaims
    flusher: Flusher | None = None

    def start_background(self, flush_interval: float = 1.0) -> None:
        """Flush metering and audit buffers periodically and listen for other nodes' changes
        (servers); CLIs just call close()."""
        self.changes.start()
        if self.flusher is None:
            self.flusher = Flusher(self.observer, flush_interval)
            self.flusher.start()

    def ready_checks(self) -> dict[str, Callable[[], None]]:
        """Probes of what this KMS needs to answer (served at /readyz): each raises when its
        dependency cannot be reached."""
        return {"database": self.check_database, "hsm": self.check_hsm}

    def check_database(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def check_hsm(self) -> None:
        """The HSM answers and still holds the root key (a no-op without an HSM key store)."""
        store = self.service.keystore(Protection.HSM)
        if isinstance(store, HsmKeyStore):
            root = store.hsm.config.root_label
            if not store.hsm.has_object(ObjectClass.SECRET_KEY, root):
                raise KeyUnavailable(f"the HSM root key {root!r} is not in the token")

    def close(self) -> None:
        """Write what is buffered (usage counts, audit events); loses nothing on a clean stop."""
        self.changes.stop()
        if self.flusher is not None:
            self.flusher.stop()
            self.flusher = None
        else:
            self.observer.flush()
        self.engine.dispose()


def open_kms(config: KmsConfig) -> Kms:
    """Open (creating on first use) the KMS of a data directory and metadata database.

    Raises RootKeyError when this node's root key is not the database's: it must not serve.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.database_url)
    hsm_stores: list[HsmKeyStore] = []

    def hsm_store() -> HsmKeyStore:
        # One per process; made on first use (HSM keys) or at once (--root-key hsm).
        if not hsm_stores:
            hsm = config.hsm or ensure_embedded_token(config.data_dir / "hsm")
            hsm_stores.append(HsmKeyStore(hsm, lock=lambda: cluster_lock(engine, "hsm-objects")))
        return hsm_stores[0]

    try:
        root_key = open_root_key(config.root_key, config.data_dir, engine,
                                 lambda: cluster_lock(engine, "root-key"), hsm_store)
    except BaseException:
        engine.dispose()
        raise
    sealer = RootSealer(root_key)

    changes = ChangeFeed(engine)
    accounts = AccountService(engine, sealer, config.cache_ttl, changes)
    meter, audit = Meter(engine, config.clock), AuditLog(engine, config.clock)
    observer = Observer(accounts, meter, audit)
    service = KmsService(
        engine,
        {Protection.SOFTWARE: SoftwareKeyStore(sealer), Protection.HSM: hsm_store},
        cache_ttl=config.cache_ttl,
        clock=config.clock,
        observer=observer,
        changes=changes,
    )
    changes.subscribe(service.on_change)
    changes.subscribe(accounts.on_change)
    return Kms(config, engine, service, accounts, observer, meter, audit, changes, BucketClaims(engine))
