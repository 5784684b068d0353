"""Cross-check dashpay's address derivation against an independent implementation:
@dashevo/dashcore-lib (the JavaScript library Dash's own tools use), run by
tests/node/derive.js in a real node subprocess.

Every key format dashpay accepts (xpub on both networks, tpub, drkv, DRKV) is checked
over at least 200 indices, plus the legacy <key>/<i> layout and indices at the top of
the non-hardened range. Cases are batched, one node process per CPU, to keep it fast.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from bip_utils import Base58Decoder, Base58Encoder

from dashpay.domain.wallet import Wallet, derive_address, generate_account_key, validate_address
from tests.conftest import REPO, SERIAL_KEYS, VECTOR_XPUB, XDIST_KEYS, require
from tests.unit.test_wallet import DRKV_MAINNET, DRKV_TESTNET

pytestmark = pytest.mark.node

NODE_DIR = REPO / "tests" / "node"
DERIVE_JS = NODE_DIR / "derive.js"
NODE_TIMEOUT = 60  # seconds; a batch takes a few seconds on a slow CI machine
INDICES_PER_FORMAT = 200


def as_tpub(key: str) -> str:
    """The same key material labelled tpub (bip-utils' base58, not dashpay's)."""
    return Base58Encoder.CheckEncode(bytes.fromhex("043587cf") + Base58Decoder.CheckDecode(key)[4:])


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    key: str
    network: str
    chain: int | None  # None: the legacy layout, addresses at <key>/<i>
    start: int
    count: int

    def dashpay_addresses(self) -> list[str]:
        if self.chain is None:
            return [
                derive_address(self.key, [i], self.network)
                for i in range(self.start, self.start + self.count)
            ]
        return Wallet(self.key, self.network, self.chain).addresses(self.start, self.count)


CASES = [
    Case("xpub-mainnet", VECTOR_XPUB, "mainnet", 0, 0, INDICES_PER_FORMAT),
    Case("xpub-testnet", VECTOR_XPUB, "testnet", 0, 0, INDICES_PER_FORMAT),
    Case("tpub-chain-1", as_tpub(VECTOR_XPUB), "testnet", 1, 0, INDICES_PER_FORMAT),
    Case("tpub-generated", generate_account_key("testnet"), "testnet", 0, 0, INDICES_PER_FORMAT),
    Case("xpub-generated", generate_account_key("mainnet"), "mainnet", 0, 0, INDICES_PER_FORMAT),
    Case("drkv", DRKV_MAINNET, "mainnet", 0, 0, INDICES_PER_FORMAT),
    Case("DRKV", DRKV_TESTNET, "testnet", 0, 0, INDICES_PER_FORMAT),
    Case("drkv-legacy-layout", DRKV_MAINNET, "mainnet", None, 0, INDICES_PER_FORMAT),
    Case("DRKV-legacy-layout", DRKV_TESTNET, "testnet", None, 0, INDICES_PER_FORMAT),
    Case("xpub-top-of-range", VECTOR_XPUB, "mainnet", 2**31 - 1, 2**31 - 50, 50),
]
# The wallet keys of the test daemons, serial and per pytest-xdist worker: the
# addresses tests/conftest.py lists for them are dashcore-lib's too.
KEY_TABLE = {f"daemon-keys-{i}": keys for i, keys in enumerate([SERIAL_KEYS, *XDIST_KEYS])}
CASES += [Case(name, keys.test, "mainnet", 0, 0, 3) for name, keys in KEY_TABLE.items()]


def _node_or_skip() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "`node` is not on PATH"
    elif not (NODE_DIR / "node_modules" / "@dashevo" / "dashcore-lib").is_dir():
        problem = f"{NODE_DIR}/node_modules is missing (run `npm ci` there, or tests/run)"
    if problem:
        if require("NODE"):
            pytest.fail(f"DASHPAY_REQUIRE_NODE=1 but {problem}")
        pytest.skip(f"dashcore-lib cross-check needs node: {problem}")
    assert node is not None
    return node


def _run_derive_js(node: str, cases: list[Case]) -> dict[str, list[str]]:
    """One node process answering a batch of cases (derive.js takes a JSON array)."""
    requests = [
        {
            "key": case.key,
            "network": case.network,
            "chain": case.chain,
            "start": case.start,
            "count": case.count,
        }
        for case in cases
    ]
    proc = subprocess.run(
        [node, str(DERIVE_JS)],
        cwd=NODE_DIR,
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
    )
    names = [case.name for case in cases]
    assert proc.returncode == 0, f"derive.js failed for {names}:\n{proc.stderr}"
    answers = json.loads(proc.stdout)
    return dict(zip(names, answers, strict=True))


@pytest.fixture(scope="module")
def dashcore_lib_addresses() -> dict[str, list[str]]:
    """All cases through derive.js, one node process per CPU; addresses by case name."""
    node = _node_or_skip()
    workers = max(1, min(os.cpu_count() or 1, len(CASES)))
    batches = [CASES[i::workers] for i in range(workers)]
    results: dict[str, list[str]] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for answers in pool.map(lambda batch: _run_derive_js(node, batch), batches):
            results.update(answers)
    return results


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_dashpay_derives_the_same_addresses_as_dashcore_lib(case, dashcore_lib_addresses):
    expected = dashcore_lib_addresses[case.name]
    assert len(expected) == case.count
    got = case.dashpay_addresses()
    mismatches = [
        (case.start + i, mine, theirs)
        for i, (mine, theirs) in enumerate(zip(got, expected, strict=True))
        if mine != theirs
    ]
    assert not mismatches, f"{case.name} ({case.key}): first mismatches {mismatches[:3]}"
    assert all(validate_address(address, case.network) == address for address in got)


@pytest.mark.parametrize("name", KEY_TABLE)
def test_the_listed_addresses_of_each_test_daemon_key_are_dashcore_libs(
    name, dashcore_lib_addresses
):
    assert KEY_TABLE[name].test_addresses == dashcore_lib_addresses[name]
