"""The alert rules (deploy/alerts.yml) and their unit tests (deploy/alerts.test.yml), and the logs' way
to Grafana (Loki and Alloy in the compose file's monitoring profile).

- promtool (Debian's `prometheus` package, installed by `make alerts`) checks the rules and runs their
  unit tests: each rule fires on a scripted history and stays quiet on a healthy one.
- Every rule has such a test, and every metric a rule reads is one the bot serves on GET /metrics.
- The webhook backlog's gauge follows the real sender.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metrics import Metrics
from tests.web.test_webhooks import Clock, hooked_key, receiver, sender, store  # noqa: F401 (fixtures)

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "alerts.test.yml"
ALLOY = ROOT / "deploy" / "alloy.alloy"
MUST_ALERT = {"ComfyBotDown", "ComfyUINoUsableServer", "DiscordDisconnected", "QueueWaitHigh", "JobFailureRateHigh",
              "WebhookBacklog", "RunPodSpendOverBudget", "ComfyBotRestarting"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "le",
                "offset"}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def promtool() -> str:
    """`make alerts` puts it beside the venv's python; else one on PATH."""
    beside = Path(sys.executable).parent / "promtool"
    found = str(beside) if beside.exists() else shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: `make alerts` installs it (Debian's prometheus package)")
        pytest.skip("promtool is not installed: `make alerts` installs it")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    checked = run(promtool(), "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tested = run(promtool(), "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_promtool_catches_a_wrong_bound(tmp_path):
    """The unit tests are not vacuous: with the failure-rate bound at 50 %, its test fails by name."""
    (tmp_path / "alerts.yml").write_text(RULES.read_text().replace("> 0.2\n", "> 0.5\n"))
    (tmp_path / "alerts.test.yml").write_text(RULE_TESTS.read_text())
    tested = run(promtool(), "test", "rules", str(tmp_path / "alerts.test.yml"))
    assert tested.returncode != 0 and "alertname: JobFailureRateHigh" in tested.stdout + tested.stderr


def test_the_alerts_an_operator_needs_each_with_a_firing_and_a_quiet_test():
    found = {rule["alert"]: rule for rule in rules()}
    assert set(found) == MUST_ALERT
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fired == MUST_ALERT, f"no firing test for {sorted(MUST_ALERT - fired)}"
    assert quiet == MUST_ALERT, f"no quiet test for {sorted(MUST_ALERT - quiet)}"


def served_names(text: str) -> set[str]:
    """The sample names a /metrics text serves (a histogram's _bucket, _sum and _count, a counter's _total)."""
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_a_rule_reads_is_served_by_the_bot():
    metrics = Metrics()  # the registry the web app's GET /metrics renders
    metrics.job_finished("txt2img", "failed", waited=1.0, ran=2.0)  # labelled series appear once recorded
    metrics.server("ComfyUI", up=True, load=0)
    metrics.gpu("RunPod", 1.0, 0.5)
    metrics.error("X")
    served = served_names(metrics.render()[0].decode()) | {"up"}  # `up` is Prometheus' own, per scrape target
    for rule in rules():
        # without label matchers, ranges and groupings: the names left are metrics and functions
        expr = re.sub(r'\{[^}]*\}|\[[^]]*\]|\b(by|without|on|ignoring)\s*\([^)]*\)', "", rule["expr"])
        names = {word for word in re.findall(r"\b[a-z_][a-z0-9_]*\b(?!\s*\()", expr)} - PROMQL_WORDS
        assert names, rule["alert"]
        assert names <= served, f"{rule['alert']} reads {sorted(names - served)}, which the bot does not serve"


async def test_the_webhook_backlog_gauge_follows_the_sender(store, receiver):  # noqa: F811 (fixtures)
    metrics = Metrics()
    clock = Clock()
    webhooks = sender(store, clock, metrics=metrics)
    key_id = await hooked_key(store, receiver.url())
    for job_id in (1, 2, 3):
        await webhooks.notify(key_id, job_id, "done", [], None)
    try:
        assert await webhooks.deliver_due() == 3
        assert "comfybot_webhook_deliveries_due 3.0" in metrics.render()[0].decode().splitlines()
        assert len(receiver.received) == 3
        assert await webhooks.deliver_due() == 0
        assert "comfybot_webhook_deliveries_due 0.0" in metrics.render()[0].decode().splitlines()
    finally:
        await webhooks.close()


def test_prometheus_loads_the_rules_and_the_monitoring_profile_ships_logs_to_loki():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert "./deploy/alerts.yml:" + prometheus["rule_files"][0] + ":ro" in services["prometheus"]["volumes"]
    assert services["loki"]["image"].startswith("grafana/loki:3.") and not services["loki"].get("ports")
    alloy = services["alloy"]
    assert alloy["image"].startswith("grafana/alloy:v1.")
    assert "./deploy/alloy.alloy:/etc/alloy/config.alloy:ro" in alloy["volumes"]
    assert "/etc/alloy/config.alloy" in alloy["command"]
    assert "./deploy/loki.yml:/etc/loki/loki.yml:ro" in services["loki"]["volumes"]
    config = ALLOY.read_text()
    assert 'url = "http://loki:3100/loki/api/v1/push"' in config
    keep = re.search(r'regex\s*=\s*"([^"]+)"\s*\n\s*action\s*=\s*"keep"', config).group(1)
    shipped = {name for name in services if re.fullmatch(keep, name)}
    assert shipped == {"bot", "bot-2"}, "the bot processes' logs, and only theirs"
    assert services["bot"].get("environment", {}).get("LOG_JSON", "true") == "true"
    assert "LOG_JSON=true" in (ROOT / "Dockerfile").read_text(), "the image logs JSON: one object per line"
    assert config.count("{") == config.count("}"), "balanced blocks"


def test_the_dashboard_shows_a_jobs_logs_by_its_id():
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["job_id"]["type"] == "textbox"
    (logs,) = [panel for panel in dashboard["panels"] if panel["type"] == "logs"]
    (target,) = logs["targets"]
    assert logs["datasource"] == {"type": "loki", "uid": "${loki}"}
    assert target["expr"].endswith('| json | job_id="${job_id}"')
    assert re.fullmatch(target["expr"].split('"')[1], "bot")  # the stream selector matches the bot's service label
    (link,) = [link for link in dashboard["links"] if "${job_id}" in link["title"]]
    assert link["url"].startswith("/explore?") and "job_id%3D%5C%22${job_id}%5C%22" in link["url"]
