"""Ten nodes started at the same instant on an empty database and an empty data directory.

Each node is a real process running the gateway's start-up (`gateway.serve.prepare_node`: schema
migrations, root key file, embedded SoftHSM2 token, demo account). The processes import first
and say "ready"; the test releases them together, so they really race on every shared resource.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODES = 10

_NODE = """
import json, sys
from pathlib import Path
from gateway.serve import prepare_node
from kms_core.embedded import KmsConfig
print("ready", flush=True)
sys.stdin.readline()
kms, demo = prepare_node(KmsConfig(data_dir=Path(sys.argv[1]), db_url=sys.argv[2] or None))
kms.close()
print(json.dumps({"account": demo.account_id, "access_key": demo.access_key_id}), flush=True)
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ten_nodes_start_at_once_on_nothing(backend: str, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    data_dir = tmp_path / "data"
    db_url = "" if backend == "sqlite" else request.getfixturevalue("pg_empty_url")
    # The embedded token under the data dir, as a real first start makes it.
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    env["PYTHONPATH"] = str(ROOT)
    procs = [
        subprocess.Popen([sys.executable, "-c", _NODE, str(data_dir), db_url], cwd=ROOT, env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(NODES)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.communicate()[1]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outcomes = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    failures = [err for p, (_, err) in zip(procs, outcomes, strict=True) if p.returncode != 0]
    assert not failures, "\n".join(failures)  # every failed node's whole traceback
    demos = {out.strip().splitlines()[-1] for out, _ in outcomes}
    assert len(demos) == 1, demos  # one demo account, one access key, seen by every node
    assert set(json.loads(demos.pop())) == {"account", "access_key"}
    root_key = data_dir / "root.key"
    assert len(root_key.read_bytes()) == 32
    assert sorted(p.name for p in data_dir.iterdir() if p.name.startswith(".root.key")) == []
    assert json.loads((data_dir / "hsm" / "hsm.json").read_text())["token_label"]
