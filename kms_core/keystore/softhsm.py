"""The embedded HSM: a SoftHSM2 token initialised under the data directory on first start.

SoftHSM2 reads its configuration (where tokens live) from SOFTHSM2_CONF once per process, when
the PKCS#11 library is first initialised, and sees tokens created later by another process only
after re-initialising. So the token is created here, before the library is loaded, and the
settings (module, token label, PIN) are kept in `hsm/hsm.json` (mode 0600) for later starts.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from kms_core.errors import KeyUnavailable
from kms_core.keystore.hsm import HsmConfig

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def find_softhsm_module() -> str:
    env = os.environ.get("SSEGW_PKCS11_MODULE")
    if env:
        return env
    for path in MODULE_CANDIDATES:
        if os.path.exists(path):
            return path
    raise KeyUnavailable(
        "SoftHSM2 is not installed (libsofthsm2.so not found); `apt-get install softhsm2`, "
        "or use another HSM with --pkcs11-module PATH --pkcs11-token LABEL"
    )


def softhsm_conf(hsm_dir: Path) -> Path:
    """The SoftHSM2 configuration this process uses, creating the data dir's own if needed."""
    env = os.environ.get("SOFTHSM2_CONF")
    if env:
        return Path(env)
    conf = hsm_dir / "softhsm2.conf"
    if not conf.exists():
        tokens = hsm_dir / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f"directories.tokendir = {tokens.resolve()}\n"
            "objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
        )
    os.environ["SOFTHSM2_CONF"] = str(conf.resolve())
    return conf


def init_token(conf: Path, label: str, pin: str) -> None:
    util = shutil.which("softhsm2-util")
    if util is None:
        raise KeyUnavailable("softhsm2-util not found; `apt-get install softhsm2`")
    so_pin = secrets.token_hex(16)
    proc = subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise KeyUnavailable(f"could not initialise the SoftHSM2 token: {proc.stderr.strip()}")


def ensure_embedded_token(hsm_dir: Path) -> HsmConfig:
    """Create (once, even with concurrent starters) and return the embedded token's settings."""
    hsm_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings = hsm_dir / "hsm.json"
    with open(hsm_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conf = softhsm_conf(hsm_dir)
        if settings.exists():
            data = json.loads(settings.read_text())
        else:
            data = {
                "module": find_softhsm_module(),
                # Unique per data dir, so several data dirs can share one token directory.
                "token_label": f"ssegw-{secrets.token_hex(4)}",
                "pin": secrets.token_hex(16),
            }
            init_token(conf, data["token_label"], data["pin"])
            tmp = settings.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, settings)
    return HsmConfig(module=data["module"], token_label=data["token_label"], pin=data["pin"])
