"""The validator's public API (agora.validator.http) and the dashboard reading it.

A real node in-process on loopback, simulated miners (two honest, one wrong), a real validator
with the MiniLM reference model: the API is announced on the ledger with a ``serve``
transaction, serves what the validator measured, and the dashboard finds it through the
metagraph (and ignores the miners' endpoints).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from test_validator_service import BEHAVIOURS, MINERS, NETUID, minilm, network

from agora.dashboard.server import DashboardConfig, create_app
from agora.models import Engine
from agora.validator import Validator, Verdict
from agora.validator.errors import SetupFailed
from agora.validator.http import ProbeWindow, announced_ip, percentile, public_api
from agora.validator.scoring import ProbeOutcome

pytestmark = pytest.mark.anyio
__all__ = ["minilm"]  # the fixture, shared with the validator's own tests


def test_percentiles_are_measured_values() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.95) == 95.0
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0


def test_the_window_forgets_a_uid_whose_hotkey_changed() -> None:
    window = ProbeWindow(size=3)
    ok = [ProbeOutcome(1, "a", Verdict.OK, "", latency=t / 10, tokens=10) for t in range(1, 6)]
    window.record(ok, at_ms=1000)
    summary = window.summary(1, "a")
    assert summary["window"] == 3  # only the last three
    assert summary["latency_p50_ms"] == 400.0 and summary["latency_p95_ms"] == 500.0
    assert summary["last_probe_ms"] == 1000
    assert window.summary(1, "b")["window"] == 0
    window.record([ProbeOutcome(1, "b", Verdict.HTTP_ERROR, "status 500")], at_ms=2000)
    assert window.summary(1, "b")["window_failures"] == 1
    assert window.summary(1, "a")["window"] == 0


def test_an_unannounceable_address_is_refused() -> None:
    assert announced_ip("localhost") == "127.0.0.1"
    assert announced_ip("0.0.0.0", "10.0.0.5") == "10.0.0.5"
    for bad in ("0.0.0.0", "example.org"):
        with pytest.raises(SetupFailed, match="--external-ip"):
            announced_ip(bad)


async def test_the_dashboard_reads_what_the_validator_measured(
    tmp_path: Path, minilm: Engine
) -> None:
    async with network(tmp_path, minilm, BEHAVIOURS) as net:
        validator = await Validator.create(net.config(), engine=minilm)
        try:
            async with public_api(validator, "127.0.0.1", 0) as url:
                port = int(url.rsplit(":", 1)[1])
                graph = await net.ledger.metagraph(NETUID)
                me = next(n for n in graph.neurons if n.hotkey == validator.hotkey.address)
                assert me.endpoint is not None
                assert (me.endpoint.ip, me.endpoint.port) == ("127.0.0.1", port)

                for _ in range(3):
                    await validator.run_round()
                async with httpx.AsyncClient() as client:
                    health = (await client.get(url + "/health")).json()
                    assert health["status"] == "validator"  # a gateway does not route to it
                    body = (await client.get(url + "/v1/validator/scores")).json()
                assert body["hotkey"] == validator.hotkey.address and body["netuid"] == NETUID
                assert body["round"] == 3
                rows = {row["hotkey"]: row for row in body["scores"]}
                assert set(rows) == {m.address for m in MINERS}
                for honest in MINERS[:2]:
                    row = rows[honest.address]
                    assert row["ok"] == 3 and row["failures"] == 0 and row["window"] == 3
                    assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"]
                    assert row["score"] > 0 and row["last_probe_ms"] > 0
                cheat = rows[MINERS[2].address]
                assert cheat["proven"] == 3 and cheat["ok"] == 0 and cheat["window_failures"] == 3
                assert cheat["last_verdict"] == "wrong_output" and cheat["score"] == 0
                assert cheat["latency_p50_ms"] is None  # wrong answers are not timed

                # The dashboard finds it through the metagraph; the miners' endpoint is skipped.
                dashboard = create_app(DashboardConfig(node_url=net.url))
                transport = httpx.ASGITransport(app=dashboard)
                async with httpx.AsyncClient(transport=transport, base_url="http://d") as page:
                    found = (await page.get(f"/validators/{NETUID}")).json()
                    assert [v["hotkey"] for v in found["validators"]] == [validator.hotkey.address]
                    seen = found["validators"][0]
                    assert seen["url"] == url and seen["uid"] == me.uid
                    assert {r["hotkey"] for r in seen["scores"]} == set(rows)
                    missing = await page.get("/validators/99")
                    assert missing.status_code == 404

            # Stopped: the dashboard says it does not answer rather than failing.
            async with httpx.AsyncClient(transport=transport, base_url="http://d") as page:
                gone = (await page.get(f"/validators/{NETUID}")).json()["validators"]
                assert [v["hotkey"] for v in gone] == [validator.hotkey.address]
                assert "does not answer" in gone[0]["error"]
            await dashboard.state.http.aclose()
        finally:
            await validator.close()
