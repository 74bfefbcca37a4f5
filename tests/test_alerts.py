"""deploy/prometheusrule.yaml checked by Prometheus's own promtool: the rule groups load
(`promtool check rules`), and every alert fires on the series that should fire it and stays
silent on healthy ones (`promtool test rules`, cases in tests/prometheus/alerts_test.yaml).

The promtool tests are skipped when Debian's `prometheus` package (which brings promtool) is
not installed, except under CI (CI set), where they must run.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.support import PROVIDERS, ROOT, exported_series, installed, requires_tool
from texas.errors import REASONS
from texas.ops import telemetry

RULES = ROOT / "deploy" / "prometheusrule.yaml"
UNIT_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yaml"

# Labels a pod scrape adds to texas's series (kubernetes_sd relabelling, as on NAIS).
SCRAPE_LABELS = frozenset({"namespace", "app", "pod", "job", "instance", "container"})
# The values texas gives these labels.
LABEL_VALUES = {"provider": frozenset(PROVIDERS), "outcome": frozenset({"active", *REASONS})}
# Metrics the alerts may use that other exporters provide.
EXTERNAL_METRICS = frozenset({"kube_pod_container_status_restarts_total"})

Rule = dict[str, Any]
Test = TypeVar("Test", bound=Callable[..., None])


def with_promtool(test: Test) -> Test:
    marked: Test = pytest.mark.prometheus(requires_tool("promtool", "apt-get install prometheus")(test))
    return marked


def prometheus_rule() -> dict[str, Any]:
    (document,) = [d for d in yaml.safe_load_all(RULES.read_text()) if d is not None]
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    return dict(document)


def alerts(rule_groups: dict[str, Any]) -> dict[str, Rule]:
    rules = (rule for group in rule_groups["groups"] for rule in group["rules"])
    return {rule["alert"]: rule for rule in rules if "alert" in rule}


def unit_tests() -> dict[str, Any]:
    return dict(yaml.safe_load(UNIT_TESTS.read_text()))


def cases(tests: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(test name, alert_rule_test entry) for every alert check in the unit tests."""
    return [(test["name"], check) for test in tests["tests"] for check in test.get("alert_rule_test", [])]


def promtool_tests(tests: dict[str, Any], rules: dict[str, Rule], rule_file: str) -> dict[str, Any]:
    """The unit tests as promtool reads them: the rule file named, and each expected alert's
    annotations completed with the rule's own where they are plain text (templated ones must
    be written out in the test, rendered)."""
    tests = copy.deepcopy(tests)
    tests["rule_files"] = [rule_file]
    for name, check in cases(tests):
        rule = rules[check["alertname"]]
        for expected in check.get("exp_alerts") or []:
            annotations = expected.setdefault("exp_annotations", {})
            for key, text in rule.get("annotations", {}).items():
                if key in annotations:
                    continue
                assert "{{" not in text, (
                    f"{UNIT_TESTS.name}, {name!r}: give exp_annotations.{key} of {check['alertname']} "
                    "as it renders (it is templated)"
                )
                annotations[key] = text
    return tests


def write_rules(directory: Path, rule_groups: dict[str, Any]) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups, sort_keys=False))
    return path


def promtool(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [installed("promtool"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_unit_tests(directory: Path, rule_groups: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    rules_path = write_rules(directory, rule_groups)
    tests_path = directory / "alerts_test.yaml"
    generated = promtool_tests(unit_tests(), alerts(rule_groups), rules_path.name)
    tests_path.write_text(yaml.safe_dump(generated, sort_keys=False))
    return promtool("test", "rules", tests_path.name, cwd=directory)


# --- with promtool ----------------------------------------------------------------------------


@with_promtool
def test_promtool_accepts_the_rule_groups(tmp_path: Path) -> None:
    spec = prometheus_rule()["spec"]
    result = promtool("check", "rules", write_rules(tmp_path, spec), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(group["rules"]) for group in spec["groups"])
    assert f"SUCCESS: {count} rules found" in result.stdout, result.stdout


@with_promtool
def test_promtool_rejects_a_misspelt_function(tmp_path: Path) -> None:
    spec = prometheus_rule()["spec"]
    rule = spec["groups"][0]["rules"][0]
    rule["expr"] = rule["expr"].replace("increase(", "increse(", 1)
    result = promtool("check", "rules", write_rules(tmp_path, spec), cwd=tmp_path)
    assert result.returncode != 0
    assert "increse" in result.stdout + result.stderr


@with_promtool
def test_every_alert_behaves_as_its_unit_tests_say(tmp_path: Path) -> None:
    result = run_unit_tests(tmp_path, prometheus_rule()["spec"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@with_promtool
def test_alerts_that_can_never_fire_fail_their_unit_tests(tmp_path: Path) -> None:
    spec = prometheus_rule()["spec"]
    for rule in alerts(spec).values():
        rule["expr"] = "vector(1) unless vector(1)"  # always empty
    result = run_unit_tests(tmp_path, spec)
    assert result.returncode != 0
    for alert in alerts(spec):
        assert f"alertname: {alert}," in result.stdout + result.stderr, alert


# --- the rule file and its unit tests (no tool needed) ----------------------------------------


def test_every_alert_is_named_once_labelled_and_explained() -> None:
    rules = [rule for group in prometheus_rule()["spec"]["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_alerts_watch_what_the_issue_asks() -> None:
    """Each of these drives an alert in a case where it fires (and promtool shows that the
    alert then really fires)."""
    firing = {
        series_labels(item["series"])[0]
        for test in unit_tests()["tests"]
        if any(check.get("exp_alerts") for check in test.get("alert_rule_test", []))
        for item in test["input_series"]
    }
    assert {
        "texas_jwks_fetches_total",  # refresh failing
        "texas_jwks_staleness_seconds",  # stale, never loaded
        "texas_introspections_total",  # inactive share
        "kube_pod_container_status_restarts_total",  # restarts
        "texas_http_responses_total",  # 5xx
        "texas_internal_errors_total",  # faults inside texas, answered 200 on introspection
        "texas_grant_upstream_duration_seconds_count",  # token endpoint failing
    } <= firing


def test_exported_series_come_from_the_registry() -> None:
    series = exported_series()
    assert series["texas_introspections_total"] == {"provider", "outcome"}
    assert series["texas_http_request_duration_seconds_bucket"] == {"route", "le"}
    assert series["texas_http_requests_in_flight"] == frozenset()
    assert "texas_introspections" not in series  # a counter is only exposed with _total
    assert not any(name.endswith("_created") for name in series)  # not in multiprocess mode


def test_the_derived_staleness_gauge_is_in_the_exposition() -> None:
    assert f"# TYPE {telemetry.STALENESS_NAME} gauge" in telemetry.render().decode()
    assert telemetry.STALENESS_NAME in exported_series()


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """A new alert without unit tests fails here."""
    firing: set[str] = set()
    silent: set[str] = set()
    for _, check in cases(unit_tests()):
        (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = set(alerts(prometheus_rule()["spec"]))
    assert names - firing == set(), "alerts without a case in which they fire"
    assert names - silent == set(), "alerts without a case in which they stay silent"


def test_unit_tests_name_only_alerts_that_exist() -> None:
    # promtool passes a silent case for an alert name that no rule has.
    names = set(alerts(prometheus_rule()["spec"]))
    assert {check["alertname"] for _, check in cases(unit_tests())} <= names


def test_unit_tests_leave_the_rule_file_to_be_filled_in() -> None:
    assert "rule_files" not in unit_tests()


_SERIES = re.compile(r"^\s*(?P<name>[a-zA-Z_:][\w:]*)\s*(?:\{(?P<labels>.*)\})?\s*$")
_LABEL = re.compile(r'\s*(\w+)\s*=\s*("(?:[^"\\]|\\.)*")\s*,?')


def series_labels(series: str) -> tuple[str, dict[str, str]]:
    """Name and labels of a series in promtool's input notation `name{a="b", ...}`."""
    match = _SERIES.match(series)
    assert match, series
    labels = match.group("labels") or ""
    assert _LABEL.sub("", labels).strip() == "", series
    return match.group("name"), {name: json.loads(value) for name, value in _LABEL.findall(labels)}


def test_input_series_are_shaped_like_the_series_texas_exports() -> None:
    """An alert tested on a series texas does not export (a misspelt name, a missing or
    invented label) would pass its unit test and never fire in a cluster."""
    exported = exported_series()
    for test in unit_tests()["tests"]:
        for item in test["input_series"]:
            name, labels = series_labels(item["series"])
            where = f"{test['name']!r}: {item['series']}"
            if name in EXTERNAL_METRICS:
                continue
            assert name in exported, f"{where}: texas exports no {name}"
            assert exported[name] <= labels.keys(), f"{where}: texas always sets {sorted(exported[name])}"
            assert labels.keys() <= exported[name] | SCRAPE_LABELS, f"{where}: labels texas does not set"
            for label, values in LABEL_VALUES.items():
                assert labels.get(label, next(iter(values))) in values, f"{where}: texas sets no such {label}"


def test_the_series_notation_is_read_as_promtool_reads_it() -> None:
    assert series_labels('texas_x_total{a="1", b="x,\\"y\\""}') == ("texas_x_total", {"a": "1", "b": 'x,"y"'})
    assert series_labels("up") == ("up", {})


def test_a_templated_annotation_left_out_of_a_test_is_named() -> None:
    tests = {"tests": [{"name": "t", "alert_rule_test": [{"alertname": "A", "exp_alerts": [{}]}]}]}
    rules = {"A": {"annotations": {"summary": "{{ $labels.pod }} is down", "runbook": "read the log"}}}
    with pytest.raises(AssertionError, match=r"exp_annotations\.summary of A"):
        promtool_tests(tests, rules, "rules.yaml")
    rules["A"]["annotations"]["summary"] = "down"
    generated = promtool_tests(tests, rules, "rules.yaml")
    expected = generated["tests"][0]["alert_rule_test"][0]["exp_alerts"][0]
    assert expected["exp_annotations"] == {"summary": "down", "runbook": "read the log"}
    assert generated["rule_files"] == ["rules.yaml"]
