"""Two `wirelab serve` instances on one PostgreSQL and one broker, and a `wirelab worker`: a job made
on A is followed to its end through B on every transport, and a login on A reaches B's WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets

from tests.helpers import unavailable, wait_done
from tests.pipeline.lab import BROKERS, require_broker
from wirelab.clients import follower_for
from wirelab.pubsub.factory import remove_namespace
from wirelab.testing import ServerProcess

PG_URL = os.environ.get("WIRELAB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


class Cluster:
    def __init__(self, a: ServerProcess, b: ServerProcess) -> None:
        self.a, self.b = a, b


@pytest.fixture(scope="module", params=sorted(BROKERS))
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Wake-ups go by a RabbitMQ exchange or by Redis pub/sub, whichever broker the instances use."""
    broker = BROKERS[request.param]
    require_broker(broker)
    schema, namespace = f"wltest_{secrets.token_hex(4)}", f"wltest-{secrets.token_hex(4)}"
    try:
        asyncio.run(_sql(f'CREATE SCHEMA "{schema}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {PG_URL} unavailable: {exc!r}")
    data_dir = tmp_path_factory.mktemp("cluster")
    shared = ["--store", f"{PG_URL}?schema={schema}", "--broker", broker, "--namespace", namespace]
    a = ServerProcess(data_dir / "a", *shared, command="serve", log_path=data_dir / "a.log")
    b = ServerProcess(data_dir / "b", *shared, command="serve", log_path=data_dir / "b.log")
    worker_command = [sys.executable, "-m", "wirelab", "worker", "demo", "--consumers", "4"]
    worker_options = ["--broker", broker, "--namespace", namespace, "--data-dir", str(data_dir)]
    with open(data_dir / "worker.log", "wb") as log:
        worker = subprocess.Popen([*worker_command, *worker_options], stdout=log, stderr=subprocess.STDOUT)
    try:
        with a, b:
            yield Cluster(a, b)
    finally:
        worker.terminate()
        worker.wait(10)
        asyncio.run(remove_namespace(broker, namespace))
        asyncio.run(_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


async def _sql(statement: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _job_on(server: ServerProcess, steps: int = 8) -> str:
    response = httpx.post(f"{server.url}/jobs", json={"kind": "demo", "steps": steps, "step_ms": 60})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


@pytest.mark.parametrize("via", ["short", "long", "sse", "ws"])
def test_a_job_made_on_a_is_followed_to_its_end_through_b(cluster: Cluster, via: str) -> None:
    job_id = _job_on(cluster.a)

    async def follow() -> list[int]:
        follower = follower_for(via, cluster.b.url, interval=0.05, wait=5)
        versions: list[int] = []
        try:
            async for update in follower.follow(f"jobs/{job_id}"):
                versions.append(update.version)
                if update.data.get("state") == "done":
                    break
        finally:
            await follower.aclose()
        return versions

    versions = asyncio.run(asyncio.wait_for(follow(), 30))
    done = wait_done(cluster.b.url, job_id, timeout=5)
    assert done["state"] == "done" and done["version"] == versions[-1]
    if via != "short":  # the pushing and long-polling transports see every version, in order
        assert versions == list(range(versions[0], done["version"] + 1))


def test_a_login_on_a_reaches_a_websocket_subscriber_on_b(cluster: Cluster) -> None:
    async def scenario() -> dict[str, object]:
        ws_url = cluster.b.url.replace("http", "ws") + "/ws"
        async with websockets.connect(ws_url) as ws:
            await ws.send(json.dumps({"op": "subscribe", "topic": "logins"}))
            await asyncio.sleep(0.3)
            user = f"ada-{secrets.token_hex(3)}"
            async with httpx.AsyncClient() as http:
                assert (await http.post(f"{cluster.a.url}/logins", json={"user": user})).status_code == 202
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message.get("topic") == "logins" and message["data"]["user"] == user:
                    return message

    message = asyncio.run(scenario())
    assert message["event"] == "login"


def test_a_job_canceled_on_b_is_canceled_for_a(cluster: Cluster) -> None:
    job_id = _job_on(cluster.a, steps=200)
    assert httpx.delete(f"{cluster.b.url}/jobs/{job_id}").json()["state"] == "canceled"
    assert wait_done(cluster.a.url, job_id, timeout=5)["state"] == "canceled"
    assert httpx.delete(f"{cluster.a.url}/jobs/{job_id}").status_code == 409


def test_the_instances_answer_one_keyed_post_once(cluster: Cluster) -> None:
    post, key = secrets.token_hex(4), secrets.token_hex(8)
    body = {"post": post, "text": "once"}
    first = httpx.post(f"{cluster.a.url}/comments", json=body, headers={"idempotency-key": key})
    again = httpx.post(f"{cluster.b.url}/comments", json=body, headers={"idempotency-key": key})
    assert first.status_code == again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert httpx.get(f"{cluster.b.url}/comments", params={"post": post}).json()["count"] == 1


def test_the_logs_show_no_error(cluster: Cluster) -> None:
    for log in (cluster.a.log_path, cluster.b.log_path):
        assert "Traceback" not in Path(log).read_text()


def test_an_sse_reader_moving_to_the_other_instance_resumes_where_it_was(cluster: Cluster) -> None:
    job_id = _job_on(cluster.a, steps=12)

    def events(server: ServerProcess, headers: dict[str, str], count: int | None) -> list[int]:
        versions: list[int] = []
        with httpx.stream(
            "GET", f"{server.url}/jobs/{job_id}/events", headers=headers, timeout=30
        ) as stream:
            for line in stream.iter_lines():
                if line.startswith("id: "):
                    versions.append(int(line[4:]))
                    if count is not None and len(versions) == count:
                        break
        return versions

    first = events(cluster.a, {}, 3)
    rest = events(cluster.b, {"last-event-id": str(first[-1])}, None)
    done = wait_done(cluster.b.url, job_id, timeout=5)
    assert first + rest == list(range(first[0], done["version"] + 1))
