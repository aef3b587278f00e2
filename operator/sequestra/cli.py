"""`sequestra …`: the operator, the local sandbox and helpers for humans."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from sequestra import __version__

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False)
sandbox_app = typer.Typer(no_args_is_help=True, help="The local sandbox of real components.")
app.add_typer(sandbox_app, name="sandbox")

_started = time.monotonic()


def _progress(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code=1)


def _require_checkout(command: str) -> None:
    """The sandbox, the demo and the gauntlet are the project's test world: not in the wheel or the image."""
    import importlib.util

    if importlib.util.find_spec("sequestra.sandbox") is None:
        _fail(f"`sequestra {command}` runs the project's local sandbox, which the installed package does not "
              "carry: run it from a checkout of the repository (make install, then .venv/bin/sequestra)")


@sandbox_app.callback()
def _sandbox_commands() -> None:
    _require_checkout("sandbox")


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command()
def run(
    namespace: Annotated[list[str], typer.Option("--namespace", "-n", help="watch only these (globs allowed)")] = [],  # noqa: B006
    standalone: Annotated[bool, typer.Option(help="no peering with other replicas (local runs and tests)")] = False,
    liveness: Annotated[str | None, typer.Option(help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")] = None,
    leader_elect: Annotated[bool, typer.Option(
        "--leader-elect", help="act only while holding a Lease, so several replicas can run")] = False,
    lease_name: Annotated[str, typer.Option(help="the Lease replicas compete for")] = "sequestra-leader",
    lease_namespace: Annotated[str | None, typer.Option(
        help="where the Lease lives (default: SEQUESTRA_OPERATOR_NAMESPACE)")] = None,
    lease_duration: Annotated[float, typer.Option(help="seconds a silent holder keeps the Lease")] = 15.0,
    renew_period: Annotated[float, typer.Option(help="seconds between the leader's renewals")] = 5.0,
) -> None:
    """Run the operator against the current kubeconfig (or in-cluster config)."""
    import asyncio

    import kopf

    from sequestra import logs
    from sequestra.controller import handlers  # noqa: F401  (registers the handlers)
    from sequestra.settings import Settings

    logs.configure(Settings().log_level)
    if leader_elect:
        from sequestra.controller import leader

        try:
            timing = leader.LeaseTiming(duration_s=lease_duration, renew_period_s=renew_period)
        except ValueError as exc:
            _fail(str(exc))
        elector = leader.LeaseElector(lease_namespace or Settings().operator_namespace, lease_name, timing=timing)
        # The Lease decides who acts; kopf's own peering would only pause a replica, so it runs standalone.
        asyncio.run(leader.run_as_leader(elector, lambda: kopf.operator(
            clusterwide=not namespace, namespaces=namespace, standalone=True, liveness_endpoint=liveness),
            liveness))
        return
    asyncio.run(kopf.operator(clusterwide=not namespace, namespaces=namespace, standalone=standalone,
                              liveness_endpoint=liveness))


@app.command("install-crds")
def install_crds() -> None:
    """Create or update Sequestra's CRDs (crds/, shipped in the package) and its admission guard
    (crds/guard/) in the current cluster; the identity running this is let through the guard as the operator."""
    from kubernetes import config

    from sequestra import install
    from sequestra.signals.guard import guard_installed

    api_client = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    try:
        names = install.crds(api_client)
    except install.InstallError as exc:
        _fail(str(exc))
    for name in names:
        print(f"customresourcedefinition {name} established")
    print(guard_installed(api_client).summary())


@app.command()
def explain(
    name: Annotated[str, typer.Argument(help="the Sequestration")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
) -> None:
    """What a Sequestration holds, why, what it changed and what happened, in order."""
    from sequestra import humans

    try:
        print(humans.explain(name, namespace))
    except LookupError as exc:
        _fail(str(exc))


@app.command()
def release(
    name: Annotated[str, typer.Argument(help="the Sequestration")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
) -> None:
    """Ask the operator to release a workload now; it restores the recorded prior state."""
    from sequestra import humans

    try:
        print(humans.request_release(name, namespace))
    except LookupError as exc:
        _fail(str(exc))


@app.command("pre-uninstall")
def pre_uninstall(
    namespace: Annotated[list[str], typer.Option(
        "--namespace", "-n", help="the operator's watched namespaces, as given to `run` (none: the whole cluster)",
    )] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(help="seconds to wait for the operator to release them")] = 120.0,
    operator: Annotated[str | None, typer.Option(
        help="the operator's Deployment (namespace/name), named in the error")] = None,
) -> None:
    """Delete every hold and policy the operator manages and wait until it has released them (the chart's
    pre-delete hook, while the operator still runs). Fails listing what is left; never removes a finalizer."""
    from kubernetes import client

    from sequestra import logs, uninstall
    from sequestra.controller import leader
    from sequestra.settings import Settings

    logs.configure(Settings().log_level)
    objects = client.CustomObjectsApi(leader.load_api_client())
    try:
        uninstall.release_all(objects, uninstall.Scope(tuple(namespace)), timeout_s=timeout, operator=operator)
    except uninstall.UninstallError as exc:
        _fail(str(exc))


@sandbox_app.command("up")
def sandbox_up() -> None:
    """Provision (first time, cached afterwards) and start every component; idempotent."""
    from sequestra.sandbox import lifecycle
    from sequestra.sandbox.errors import SandboxError
    from sequestra.sandbox.paths import SandboxPaths

    paths = SandboxPaths.default()
    try:
        report = lifecycle.up(paths, _progress)
    except SandboxError as exc:
        _fail(str(exc))
    print(f"provisioning: {report.provision_s:.1f} s, start: {report.start_s:.1f} s")
    print(f"logs: {paths.logs}   environment: eval \"$(sequestra sandbox env)\"")


@sandbox_app.command("down")
def sandbox_down(
    purge: Annotated[bool, typer.Option(help="also delete data, certificates and logs (caches stay)")] = False,
) -> None:
    """Stop exactly the processes `up` started (by recorded PID); caches are kept."""
    from sequestra.sandbox import lifecycle
    from sequestra.sandbox.paths import SandboxPaths

    strays = lifecycle.down(SandboxPaths.default(), _progress, purge=purge)
    for pid, cmd in strays:
        print(f"stray process {pid} still points into the sandbox: {cmd[:160]}", file=sys.stderr)
    if strays:
        raise typer.Exit(code=1)


@sandbox_app.command("status")
def sandbox_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Each component, its address and health; exit 1 unless all are healthy."""
    from dataclasses import asdict

    from sequestra.sandbox import lifecycle
    from sequestra.sandbox.paths import SandboxPaths

    paths = SandboxPaths.default()
    rows = lifecycle.status(paths)
    strays = lifecycle.stray_processes(paths)
    if as_json:
        print(json.dumps({"components": [asdict(r) for r in rows], "strays": [p for p, _ in strays]}, indent=2))
    else:
        print(f"{'COMPONENT':<24} {'STATE':<9} {'PID':>7} {'RSS':>8}  {'ADDRESS':<28} DETAIL")
        for r in rows:
            state = "healthy" if r.healthy else ("unhealthy" if r.running else "stopped")
            rss = f"{r.rss_bytes / 2**20:.0f}Mi" if r.running else "-"
            print(f"{r.name:<24} {state:<9} {r.pid or '-':>7} {rss:>8}  {r.address:<28} {r.detail}")
        if any(r.running for r in rows):
            print(f"total resident memory: {sum(r.rss_bytes for r in rows) / 2**20:.0f} MiB")
        for pid, cmd in strays:
            print(f"stray process {pid}: {cmd[:120]}")
    if not all(r.healthy for r in rows):
        raise typer.Exit(code=1)


@sandbox_app.command("env")
def sandbox_env() -> None:
    """Print `export …` lines for a shell: eval "$(sequestra sandbox env)"."""
    from sequestra.sandbox import lifecycle
    from sequestra.sandbox.paths import SandboxPaths

    for key, value in lifecycle.environment(SandboxPaths.default()).items():
        quoted = value if key == "PATH" else f"'{value}'"
        print(f"export {key}={quoted}" if key != "PATH" else f'export PATH="{value}"')


@sandbox_app.command("scenario")
def sandbox_scenario(
    file: Annotated[Path, typer.Argument(help="YAML scenario: steps of workload-metrics overrides")],
) -> None:
    """Play a scenario file on the workload-metrics stand-in (timed CPU/memory/restart changes)."""
    import httpx
    import yaml

    from sequestra.sandbox import endpoints

    steps = yaml.safe_load(file.read_text())
    response = httpx.post(f"{endpoints.workload_metrics_url()}/v1/scenario", json=steps, timeout=5)
    if response.status_code != 200:
        _fail(f"scenario refused: {response.text}")
    print(f"scheduled {len(steps.get('steps', []))} steps")


@app.command()
def score(
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV with a header and timestamp,value columns")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV written: timestamp,value,anomaly_score")],
) -> None:
    """Backtest: stream a series through the online scorer; anomaly_score in [0,1] per row (unknown = 0).

    Timestamps are epoch seconds or ISO 8601 (UTC when no zone is given); an empty/NaN value is missing.
    Each row is scored from the rows before it only. Unknown scores (missing value, warm-up) are written
    as 0. The output appears only when the whole input was read (a malformed row stops with its line).
    """
    import csv

    from sequestra.scoring.backtest import MalformedRow, score_rows

    partial = output.with_name(f".{output.name}.partial")
    try:
        with input.open(newline="") as source, partial.open("w", newline="") as sink:
            writer = csv.writer(sink)
            writer.writerow(["timestamp", "value", "anomaly_score"])
            for timestamp, value, point in score_rows(csv.reader(source)):
                writer.writerow([timestamp, value, f"{point.score or 0.0:.10g}"])
    except MalformedRow as exc:
        partial.unlink(missing_ok=True)
        _fail(f"{input}: {exc}")
    except OSError as exc:
        partial.unlink(missing_ok=True)
        _fail(str(exc))
    partial.replace(output)


@app.command()
def demo(
    llm: Annotated[bool, typer.Option("--llm", help="diagnose with the sandbox's language model (rules contain "
                                                    "first; the model's reviewed answer follows)")] = False,
) -> None:
    """Bring the sandbox up, show each real component at work, then replay a producer flood and a runaway
    Spark application against the real operator."""
    _require_checkout("demo")
    from sequestra import demo as incident
    from sequestra.install import InstallError
    from sequestra.sandbox import lifecycle, tour
    from sequestra.sandbox.errors import SandboxError
    from sequestra.sandbox.paths import SandboxPaths

    paths = SandboxPaths.default()
    try:
        lifecycle.up(paths, _progress)
        tour.run(paths, print)
        print("\n=== The incident Sequestra exists for: a flag flip floods Kafka, and nobody is paged ===")
        incident.run(paths, print, model=llm)
    except (SandboxError, InstallError) as exc:
        _fail(str(exc))


@app.command()
def gauntlet(
    scenarios: Annotated[str | None, typer.Option(help="scenario file or directory (default: gauntlet/scenarios/)")]
    = None,
    only: Annotated[list[str], typer.Option("--only", help="run only these scenarios (repeatable)")] = [],  # noqa: B006
    ci: Annotated[bool, typer.Option("--ci", help="only the scenarios marked `ci: true` (what make test runs)")]
    = False,
    report: Annotated[str | None, typer.Option(help="write the table here (Markdown, and JSON beside it)")] = None,
) -> None:
    """Every gauntlet scenario against the real operator in enforce mode on the sandbox; exit 1 when one is
    not handled as a good operator would."""
    import subprocess as sp

    _require_checkout("gauntlet")

    from sequestra.gauntlet import runner
    from sequestra.gauntlet.scenarios import default_scenarios_dir, load_scenarios
    from sequestra.install import InstallError
    from sequestra.sandbox import lifecycle
    from sequestra.sandbox.errors import SandboxError
    from sequestra.sandbox.paths import SandboxPaths

    try:
        chosen = load_scenarios(scenarios or default_scenarios_dir())
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    unknown = sorted(set(only) - {s.name for s in chosen})
    if unknown:
        _fail(f"no scenario named {', '.join(unknown)}")
    chosen = [s for s in chosen if (not only or s.name in only) and (not ci or s.ci)]
    paths = SandboxPaths.default()
    try:
        lifecycle.up(paths, _progress)
        outcomes = runner.run(paths, chosen, lambda line: print(line, flush=True))
    except (SandboxError, InstallError) as exc:
        _fail(str(exc))
    print(runner.table(outcomes))
    print(json.dumps(runner.summary(outcomes)))
    if report:
        commit = sp.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        runner.write_report(outcomes, Path(report), commit or "unknown")
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


runbook_app = typer.Typer(no_args_is_help=True, help="Runbooks: a team's incident knowledge as data.")
app.add_typer(runbook_app, name="runbook")
_RUNBOOKS_HELP = "runbook file or directory (default: the repository's runbooks/)"
_SCENARIOS_HELP = "scenario file or directory (default: the repository's evals/scenarios/)"


@app.command("eval")
def eval_(
    ctx: typer.Context,
    diagnoser: Annotated[str, typer.Option(help="rules, or llm (OPENAI_BASE_URL, OPENAI_API_KEY)")] = "rules",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    runbooks: Annotated[Path | None, typer.Option(help=_RUNBOOKS_HELP)] = None,
    scenarios: Annotated[Path | None, typer.Option(help=_SCENARIOS_HELP)] = None,
    model: Annotated[str | None, typer.Option(help="model name (default SEQUESTRA_LLM_MODEL or gpt-4o-mini)")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (default OPENAI_BASE_URL)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds per model request")] = None,
    review: Annotated[bool, typer.Option(help="a second model call reviews each proposal")] = True,
    min_category_accuracy: Annotated[float, typer.Option(help="fail below this (0..1)")] = 0.85,
    min_action_accuracy: Annotated[float, typer.Option(help="fail below this (0..1)")] = 0.9,
    max_false_sequester_rate: Annotated[float, typer.Option(help="fail above this (0..1)")] = 0.0,
    max_missed_sequester_rate: Annotated[float, typer.Option(help="fail above this (0..1)")] = 0.1,
    suite: Annotated[str, typer.Option(help="diagnosis, or containment (tamper, evasion, look-alikes; "
                                             "default scenarios evals/containment/)")] = "diagnosis",
    qualify: Annotated[bool, typer.Option(help="qualify the model (--diagnoser llm implied): rules alone, the "
                                               "model alone and model + gate + reviewer, with a report")] = False,
    thresholds_file: Annotated[Path | None, typer.Option("--thresholds", help="with --qualify: a YAML file of the "
                                                                              "team's thresholds (docs/DIAGNOSIS.md)")
                               ] = None,
    report_file: Annotated[Path | None, typer.Option("--report", help="with --qualify: write the report here "
                                                                       "(Markdown) and beside it as .json")] = None,
) -> None:
    """Run the diagnosis eval suite; print accuracy, false/missed sequesters, tokens and latency per
    scenario; exit 1 when a threshold is not met or any action falls outside policy. With --suite
    containment: replay the tamper and evasion scenarios; exit 1 when any expectation fails. With
    --qualify: the model qualification report; exit 1 when the model is not qualified."""
    import logging

    import structlog

    # Warnings (fallbacks, refusals) on stderr: stdout is the table, the report or the JSON. As it was after
    # (for a caller in the same process: the tests).
    saved = structlog.get_config()
    ctx.call_on_close(lambda: structlog.configure(**saved))
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if qualify:
        _qualify(runbooks, scenarios, model, base_url, timeout, review, thresholds_file, report_file, as_json)
        return
    if suite == "containment":
        _eval_containment(scenarios, as_json)
        return
    if suite != "diagnosis":
        _fail(f"--suite must be diagnosis or containment, not {suite!r}")
    from sequestra.diagnosis import Diagnoser, LlmSettings, RunbookError, default_runbooks_dir, load_runbooks
    from sequestra.evals import diagnosis as evals

    if diagnoser not in ("rules", "llm"):
        _fail(f"--diagnoser must be rules or llm, not {diagnoser!r}")
    settings = None
    if diagnoser == "llm":
        settings = LlmSettings.from_env(dict(os.environ), model=model, base_url=base_url, timeout_s=timeout,
                                        review=review)
        if not settings.base_url and not settings.api_key:
            _fail("--diagnoser llm needs OPENAI_BASE_URL (or --base-url) or OPENAI_API_KEY")
    try:
        loaded = load_runbooks(runbooks or default_runbooks_dir())
        cases = evals.load_scenarios(scenarios or evals.default_scenarios_dir())
    except (RunbookError, ValueError) as exc:
        _fail(str(exc))
    report = evals.run(cases, Diagnoser(loaded, settings).diagnose)
    thresholds = evals.Thresholds(min_category_accuracy, min_action_accuracy, max_false_sequester_rate,
                                  max_missed_sequester_rate)
    failures = report.failures(thresholds)
    _report_eval(as_json, {"summary": report.summary(), "failures": failures, "perRunbook": report.per_runbook(loaded),
                           "scenarios": [o.row() for o in report.outcomes]}, evals.table(report), failures)


def _qualify(runbooks: Path | None, scenarios: Path | None, model: str | None, base_url: str | None,
             timeout: float | None, review: bool, thresholds_file: Path | None, report: Path | None,
             as_json: bool) -> None:
    import platform
    import subprocess
    from datetime import UTC, datetime

    from sequestra.diagnosis import Diagnoser, LlmSettings, RunbookError, default_runbooks_dir, load_runbooks
    from sequestra.evals import diagnosis as evals
    from sequestra.evals import qualify

    # No hourly budget here: a qualification asks about every scenario, and a skipped one would count
    # as the model's failure.
    settings = LlmSettings.from_env(dict(os.environ), model=model, base_url=base_url, timeout_s=timeout,
                                    review=review, tokens_per_hour=10**12, review_always=True)
    if not settings.base_url and not settings.api_key:
        _fail("--qualify needs a model: OPENAI_BASE_URL (or --base-url) or OPENAI_API_KEY")
    try:
        loaded = load_runbooks(runbooks or default_runbooks_dir())
        scenarios_dir = scenarios or evals.default_scenarios_dir()
        cases = evals.load_scenarios(scenarios_dir)
        limits = qualify.load_thresholds(thresholds_file)
    except (RunbookError, ValueError) as exc:
        _fail(str(exc))

    def progress(index: int, case: qualify.Case) -> None:
        d = case.with_model
        _progress(f"{index + 1}/{len(cases)} {case.scenario.name}: model {case.answer('model').action}, "
                  f"pipeline {d.action} ({d.review.verdict if d.review else d.fallback_reason or 'no review'}), "
                  f"{d.latency_ms / 1000:.1f} s")

    _progress(f"qualifying {settings.model} at {settings.base_url or 'api.openai.com'} on {len(cases)} scenarios")
    done = qualify.run(cases, Diagnoser(loaded).diagnose, Diagnoser(loaded, settings).diagnose, progress)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    about = {"model": settings.model, "reviewModel": settings.review_model or settings.model,
             "endpoint": settings.base_url or "https://api.openai.com/v1", "scenarios": len(cases),
             "scenariosDir": str(scenarios) if scenarios else "evals/scenarios",
             "date": datetime.now(UTC).strftime("%Y-%m-%d"), "commit": commit,
             "machine": f"{platform.machine()}, {os.cpu_count()} cores", "review": settings.review}
    document = qualify.document(done, limits, about)
    text = qualify.markdown(document)
    if report is not None:
        report.write_text(text)
        report.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2) if as_json else text)
    if document["misses"]:
        print(f"NOT QUALIFIED: {'; '.join(document['misses'])}", file=sys.stderr)
        raise typer.Exit(code=1)


def _report_eval(as_json: bool, document: dict[str, Any], table: str, failures: list[str]) -> None:
    """An eval suite's result: JSON or the table (failures on stderr); exit 1 when any expectation failed."""
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        print(table)
        for failure in failures:
            print(f"FAIL: {failure}", file=sys.stderr)
    if failures:
        raise typer.Exit(code=1)


def _eval_containment(scenarios: Path | None, as_json: bool) -> None:
    from sequestra.evals import containment

    try:
        report = containment.run(containment.load_scenarios(scenarios or containment.default_scenarios_dir()))
    except ValueError as exc:
        _fail(str(exc))
    failures = report.failures()
    _report_eval(as_json, {"summary": report.summary(), "failures": failures,
                           "scenarios": [o.row() for o in report.outcomes]}, containment.table(report), failures)


@runbook_app.command("test")
def runbook_test(
    runbook: Annotated[str, typer.Argument(help="a runbook YAML file, or the name of a runbook in --runbooks")],
    runbooks: Annotated[Path | None, typer.Option(help=_RUNBOOKS_HELP)] = None,
    scenarios: Annotated[Path | None, typer.Option(help=_SCENARIOS_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Run a runbook against the eval scenarios: which it matches, and how accuracy and the
    false-sequester rate change with it (against the other runbooks without it)."""
    from sequestra.diagnosis import Diagnoser, RunbookError, default_runbooks_dir, load_runbooks
    from sequestra.evals import diagnosis as evals

    try:
        others = load_runbooks(runbooks or default_runbooks_dir())
        if Path(runbook).exists():
            candidates = load_runbooks(Path(runbook))
        else:
            candidates = [r for r in others if r.name == runbook]
            if not candidates:
                _fail(f"no runbook file or runbook named {runbook!r} (known: {', '.join(r.name for r in others)})")
        cases = evals.load_scenarios(scenarios or evals.default_scenarios_dir())
    except (RunbookError, ValueError) as exc:
        _fail(str(exc))
    results = []
    for candidate in candidates:
        trial = evals.trial(candidate, others, cases, lambda rbs: Diagnoser(rbs).diagnose)
        decided = [o.row() for o in trial.with_it.outcomes if o.diagnosis.runbook == candidate.name]
        results.append({"runbook": candidate.name, "matched": trial.matched, "without": trial.without.summary(),
                        "with": trial.with_it.summary(), "decided": decided})
        if not as_json:
            print(f"runbook {candidate.name} ({candidate.source}): matches {len(trial.matched)} of {len(cases)} "
                  f"scenarios: {', '.join(trial.matched) or '-'}")
            print(f"  {'':<22} {'WITHOUT':>8} {'WITH':>8}")
            for label, attribute in (("category accuracy", "category_accuracy"), ("action accuracy", "action_accuracy"),
                                     ("false-sequester rate", "false_sequester_rate"),
                                     ("missed-sequester rate", "missed_sequester_rate")):
                before, after = getattr(trial.without, attribute), getattr(trial.with_it, attribute)
                print(f"  {label:<22} {before:>8.1%} {after:>8.1%}")
            for row in decided:
                verdict = "ok" if row["actionOk"] and row["categoryOk"] else (
                    f"expected {row['expectedCategory']} -> {row['expectedAction']}")
                print(f"  decides {row['scenario']}: {row['category']} -> {row['action']} ({verdict})")
    if as_json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app()
