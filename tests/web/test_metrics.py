"""Tests for the Prometheus metrics (metrics.py) and the public /metrics, /healthz and /readyz routes
(web/health.py), over real HTTP on 127.0.0.1 with the web app's own WebServer and a Store in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from metrics import LABEL_CHARS, LABEL_VALUES, Metrics, watch_loop
from store import Store
from tests.conftest import make_settings
from web.app import SECURITY_HEADERS, WebServer
from web.health import STALE_AFTER

SECRET = "web-secret-never-shown-7f3a"
TOKEN = "MTAxNTk.discord-token-never-shown.Xy9"
AUTH = "comfy-auth-never-shown-42"
PASSWORD = "hunter2-password"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **options) -> AsyncIterator[tuple[WebServer, aiohttp.ClientSession]]:
    settings = make_settings(tmp_path, web_secret=SECRET, discord_token=TOKEN, comfyui_auth_token=AUTH, comfyui_auth_header="X-Api-Key",
                             comfyui_url=f"http://admin:{PASSWORD}@127.0.0.1:8188")
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    server = WebServer(store, settings, port=0, **options)
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            yield server, session
    finally:
        await server.stop()
        await store.close()


async def get(session: aiohttp.ClientSession, server: WebServer, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with session.get(server.url + path, allow_redirects=False) as response:
        return response.status, await response.text(), response


def no_secret(text: str) -> None:
    for secret in (SECRET, TOKEN, AUTH, PASSWORD):
        assert secret not in text


def scripted(metrics: Metrics) -> None:
    """3 jobs done, 1 failed, 1 cancelled, acks, errors, servers, GPU time, loop lag."""
    metrics.job_finished("txt2img", "done", waited=1.0, ran=4.0, delivery=0.25)
    metrics.job_finished("txt2img", "done", waited=2.0, ran=8.0, delivery=0.5)
    metrics.job_finished("txt2img", "done", waited=0.25, ran=30.0, delivery=1.5)
    metrics.job_finished("upscale", "failed", waited=3.0, ran=1.0)
    metrics.job_finished("txt2img", "cancelled", waited=700.0, ran=None)
    metrics.acked(0.02)
    metrics.acked(0.3)
    metrics.acked(2.75)
    metrics.error("Unreachable")
    metrics.error("Unreachable")
    metrics.error(MemoryError("CUDA out of memory"))
    metrics.queue(4, 2)
    metrics.server("ComfyUI server 1", up=True, load=2)
    metrics.server("ComfyUI server 2", up=True, load=1)
    metrics.server("ComfyUI server 2", up=False, load=0)
    metrics.gpu("ComfyUI server 1", 4.0, 0.5)
    metrics.gpu("ComfyUI server 1", 8.0, 1.0)
    metrics.gpu("ComfyUI server 2", 30.0)
    metrics.loop_lag(0.002)
    metrics.loop_lag(0.2)
    metrics.discord(True)


EXPECTED = """
comfybot_jobs_total{kind="txt2img",state="done"} 3.0
comfybot_jobs_total{kind="upscale",state="failed"} 1.0
comfybot_jobs_total{kind="txt2img",state="cancelled"} 1.0
comfybot_jobs_waiting 4.0
comfybot_jobs_running 2.0
comfybot_job_wait_seconds_count{kind="txt2img"} 4.0
comfybot_job_wait_seconds_sum{kind="txt2img"} 703.25
comfybot_job_wait_seconds_bucket{kind="txt2img",le="0.5"} 1.0
comfybot_job_wait_seconds_bucket{kind="txt2img",le="2.0"} 3.0
comfybot_job_wait_seconds_bucket{kind="txt2img",le="600.0"} 3.0
comfybot_job_wait_seconds_bucket{kind="txt2img",le="1800.0"} 4.0
comfybot_job_wait_seconds_bucket{kind="txt2img",le="+Inf"} 4.0
comfybot_job_run_seconds_count{kind="txt2img"} 3.0
comfybot_job_run_seconds_sum{kind="txt2img"} 42.0
comfybot_job_run_seconds_bucket{kind="txt2img",le="5.0"} 1.0
comfybot_job_run_seconds_bucket{kind="txt2img",le="10.0"} 2.0
comfybot_job_run_seconds_bucket{kind="txt2img",le="30.0"} 3.0
comfybot_job_run_seconds_count{kind="upscale"} 1.0
comfybot_delivery_seconds_count{kind="txt2img"} 3.0
comfybot_delivery_seconds_sum{kind="txt2img"} 2.25
comfybot_delivery_seconds_bucket{kind="txt2img",le="0.25"} 1.0
comfybot_delivery_seconds_bucket{kind="txt2img",le="1.0"} 2.0
comfybot_ack_seconds_count 3.0
comfybot_ack_seconds_sum 3.07
comfybot_ack_seconds_bucket{le="0.025"} 1.0
comfybot_ack_seconds_bucket{le="2.5"} 2.0
comfybot_ack_seconds_bucket{le="3.0"} 3.0
comfybot_errors_total{error="Unreachable"} 2.0
comfybot_errors_total{error="MemoryError"} 1.0
comfybot_server_up{server="ComfyUI server 1"} 1.0
comfybot_server_up{server="ComfyUI server 2"} 0.0
comfybot_server_load{server="ComfyUI server 1"} 2.0
comfybot_server_load{server="ComfyUI server 2"} 0.0
comfybot_gpu_seconds_total{server="ComfyUI server 1"} 12.0
comfybot_gpu_seconds_total{server="ComfyUI server 2"} 30.0
comfybot_cost_total{server="ComfyUI server 1"} 1.5
comfybot_cost_total{server="ComfyUI server 2"} 0.0
comfybot_event_loop_lag_seconds_count 2.0
comfybot_event_loop_lag_seconds_bucket{le="0.0025"} 1.0
comfybot_event_loop_lag_seconds_bucket{le="0.25"} 2.0
comfybot_discord_connected 1.0
# TYPE comfybot_jobs_total counter
# TYPE comfybot_job_run_seconds histogram
# TYPE comfybot_server_up gauge
"""


async def test_metrics_over_http(tmp_path: Path):
    metrics = Metrics()
    scripted(metrics)
    async with serving(tmp_path, metrics=metrics) as (server, session):
        status, body, response = await get(session, server, "/metrics")
    assert status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert response.headers["Cache-Control"] == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    lines = set(body.splitlines())
    missing = [line for line in EXPECTED.strip().splitlines() if line not in lines]
    assert missing == []
    assert not any(line.startswith('comfybot_job_run_seconds_count{kind="txt2img",') for line in lines)
    assert 'comfybot_ack_seconds_sum 3.07' in lines  # floats exactly as Prometheus reads them
    assert body == metrics.render()[0].decode()
    no_secret(body)


def test_registries_are_separate():
    first, second = Metrics(), Metrics()  # two bots in one process: no "Duplicated timeseries"
    first.job_finished("txt2img", "done", waited=1, ran=1)
    first_text, second_text = first.render()[0].decode(), second.render()[0].decode()
    assert 'comfybot_jobs_total{kind="txt2img",state="done"} 1.0' in first_text
    assert "comfybot_jobs_total{" not in second_text
    from prometheus_client import REGISTRY, generate_latest
    assert b"comfybot_" not in generate_latest(REGISTRY)


def label_values(body: str, metric: str, label: str) -> set[str]:
    return set(re.findall(rf'^{metric}{{[^}}]*{label}="((?:[^"\\]|\\.)*)"', body, re.MULTILINE))


def test_label_cardinality_and_cleaning():
    metrics = Metrics()
    for n in range(LABEL_VALUES + 200):
        metrics.server(f"hostile server {n}", up=True, load=1)
        metrics.gpu(f"hostile server {n}", 1.0, 0.1)
        metrics.error(f"Error{n}")
        metrics.job_finished(f"kind{n}", "done", waited=1.0, ran=1.0, delivery=0.1)
    metrics.job_finished("txt2img", "exploded", waited=1.0, ran=None)
    body = metrics.render()[0].decode()
    servers = label_values(body, "comfybot_server_up", "server")
    errors = label_values(body, "comfybot_errors_total", "error")
    kinds = label_values(body, "comfybot_jobs_total", "kind")
    for values in (servers, errors, kinds):
        assert len(values) == LABEL_VALUES + 1 and "other" in values
    assert 'comfybot_errors_total{error="other"} 200.0' in body
    assert 'comfybot_gpu_seconds_total{server="other"} 200.0' in body
    assert 'comfybot_jobs_total{kind="other",state="done"} 200.0' in body
    assert 'state="other"' in body and "exploded" not in body  # the state is one of a fixed set
    assert len(body.splitlines()) < 10_000

    clean = Metrics()
    clean.error("X" * 10_000)
    clean.error("Bad\nName\r\x00\u2028")
    clean.server(f"http://admin:{PASSWORD}@gpu.example.org:8188", up=True, load=0)
    clean.server("", up=False, load=0)
    body = clean.render()[0].decode()
    errors = label_values(body, "comfybot_errors_total", "error")
    assert "X" * LABEL_CHARS in errors and all(len(value) <= LABEL_CHARS for value in errors)
    assert "Bad_Name___" in errors
    assert label_values(body, "comfybot_server_up", "server") == {"http://gpu.example.org:8188", "unknown"}
    no_secret(body)
    assert all(not line or line.startswith(("#", "comfybot_")) for line in body.split("\n"))


def test_bad_values_never_raise():
    metrics = Metrics()
    nan, inf = float("nan"), float("inf")
    metrics.job_finished("txt2img", "done", waited=nan, ran=-3, delivery=inf)
    metrics.job_finished("txt2img", "done", waited="soon", ran=None, delivery=True)  # type: ignore[arg-type]
    metrics.acked(-1)
    metrics.acked(nan)
    metrics.queue(-1, nan)  # type: ignore[arg-type]
    metrics.server(None, up=True, load=nan)  # type: ignore[arg-type]
    metrics.gpu("s", -5, nan)
    metrics.gpu("s", inf, -1)
    metrics.loop_lag(nan)
    metrics.error(object())  # type: ignore[arg-type]

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    metrics.error(Hostile())  # type: ignore[arg-type]
    metrics.job_finished(Hostile(), "done", waited=1, ran=1)  # type: ignore[arg-type]
    body = metrics.render()[0].decode()
    assert 'comfybot_jobs_total{kind="txt2img",state="done"} 2.0' in body
    assert "comfybot_job_wait_seconds_count{" not in body  # nothing observed: no series
    assert "comfybot_ack_seconds_count 0.0" in body
    assert 'server="s"' not in body  # nothing valid to record
    assert "NaN" not in body and "Inf " not in body.replace('le="+Inf"', "")


async def test_metrics_404_without_metrics(tmp_path: Path):
    async with serving(tmp_path) as (server, session):
        status, body, response = await get(session, server, "/metrics")
        assert status == 404 and body == "metrics are off\n"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        status, body, _ = await get(session, server, "/healthz")
        assert (status, body) == (200, "ok\n")  # no watcher: answering proves the loop runs
        status, body, _ = await get(session, server, "/readyz")
        assert (status, body) == (200, "ready\n")  # no readiness check given
        status, body, _ = await get(session, server, "/metricsx")
        assert status == 404  # the gallery's own 404 page


async def test_healthz_fresh_and_stale_watcher(tmp_path: Path):
    clock = Clock()
    metrics = Metrics(clock=clock)
    async with serving(tmp_path, metrics=metrics) as (server, session):
        status, body, _ = await get(session, server, "/healthz")
        assert (status, body) == (200, "ok\n")  # no watcher attached
        metrics.loop_lag(0.0015)
        clock.now += 2.5
        status, body, response = await get(session, server, "/healthz")
        assert status == 200 and body == "ok: loop watcher last ticked 2.5 s ago, lag 1.5 ms\n"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
        clock.now += STALE_AFTER
        status, body, _ = await get(session, server, "/healthz")
        assert status == 503 and body == "stuck: loop watcher last ticked 12.5 s ago, lag 1.5 ms\n"
        metrics.loop_lag(0.0)
        status, body, _ = await get(session, server, "/healthz")
        assert status == 200 and body.startswith("ok: loop watcher last ticked 0.0 s ago")
        async with session.head(server.url + "/healthz") as response:
            assert response.status == 200
        no_secret(body)


async def test_readyz_reasons(tmp_path: Path):
    state: dict = {"answer": (False, "not connected to Discord")}

    def ready() -> tuple[bool, str]:
        if isinstance(state["answer"], Exception):
            raise state["answer"]
        return state["answer"]

    async with serving(tmp_path, metrics=Metrics(), ready=ready) as (server, session):
        status, body, response = await get(session, server, "/readyz")
        assert (status, body) == (503, "not ready: not connected to Discord\n")
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        state["answer"] = (False, "no ComfyUI server is usable")
        status, body, _ = await get(session, server, "/readyz")
        assert (status, body) == (503, "not ready: no ComfyUI server is usable\n")
        state["answer"] = (False, "line one\nline two " + "x" * 500)
        status, body, _ = await get(session, server, "/readyz")
        assert status == 503 and body.startswith("not ready: line one line two x") and len(body) < 250
        state["answer"] = (True, "")
        status, body, _ = await get(session, server, "/readyz")
        assert (status, body) == (200, "ready\n")
        state["answer"] = (True, "2 of 3 servers usable")
        status, body, _ = await get(session, server, "/readyz")
        assert (status, body) == (200, "ready: 2 of 3 servers usable\n")
        state["answer"] = RuntimeError(f"boom {SECRET}")
        status, body, _ = await get(session, server, "/readyz")
        assert (status, body) == (503, "not ready: the readiness check failed\n")


async def test_no_secret_in_any_public_body(tmp_path: Path):
    metrics = Metrics()
    scripted(metrics)
    metrics.loop_lag(0.001)
    async with serving(tmp_path, metrics=metrics, ready=lambda: (False, "not connected to Discord")) as (server, session):
        for path in ("/metrics", "/healthz", "/readyz", "/metrics?token=x", "/healthz/"):
            status, body, response = await get(session, server, path)
            no_secret(body)
            no_secret(str(dict(response.headers)))


async def test_watch_loop_measures_lag():
    metrics = Metrics()
    assert metrics.since_tick() is None
    task = asyncio.create_task(watch_loop(metrics, interval=0.01))
    try:
        await asyncio.sleep(0)
        assert metrics.since_tick() is not None  # attached at once
        deadline = time.monotonic() + 5
        while metrics.last_lag is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        time.sleep(0.06)  # block the loop: the watcher wakes about 50 ms late
        await asyncio.sleep(0.1)
        assert metrics.last_lag is not None
        assert metrics.since_tick() < 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    body = metrics.render()[0].decode()
    count = float(re.search(r"^comfybot_event_loop_lag_seconds_count (\S+)$", body, re.MULTILINE).group(1))
    fast = float(re.search(r'^comfybot_event_loop_lag_seconds_bucket\{le="0.025"\} (\S+)$', body, re.MULTILINE).group(1))
    assert count >= 2 and fast < count


async def test_scrapes_follow_changes_and_share_renders(tmp_path: Path):
    metrics = Metrics()
    renders = 0
    render = metrics.render

    def counted() -> tuple[bytes, str]:
        nonlocal renders
        renders += 1
        return render()

    metrics.render = counted  # type: ignore[method-assign]
    async with serving(tmp_path, metrics=metrics) as (server, session):
        metrics.job_finished("txt2img", "done", waited=1, ran=1)
        _, body, _ = await get(session, server, "/metrics")
        assert 'comfybot_jobs_total{kind="txt2img",state="done"} 1.0' in body
        metrics.job_finished("txt2img", "done", waited=1, ran=1)
        _, body, _ = await get(session, server, "/metrics")
        assert 'comfybot_jobs_total{kind="txt2img",state="done"} 2.0' in body  # never a stale copy
        assert renders == 2
        for _ in range(5):  # nothing recorded since: the same text, not rendered again
            assert (await get(session, server, "/metrics"))[1] == body
        assert renders == 2
        metrics.queue(3, 1)
        replies = await asyncio.gather(*(get(session, server, "/metrics") for _ in range(20)))
        assert {status for status, _, _ in replies} == {200}
        assert len({text for _, text, _ in replies}) == 1 and "comfybot_jobs_waiting 3.0" in replies[0][1]
        assert renders <= 4  # concurrent scrapes share one render
