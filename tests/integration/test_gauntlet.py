"""The gauntlet's CI subset (`ci: true` scenarios) against the real operator on the sandbox: the incidents
held on the right workload at the right rung, with the effect verified and an exact release; the look-alikes
(a declared backfill, a daily peak against a yesterday written into Prometheus) left alone; the crash loop
paged to its owner, not held; nobody else paged. The full gauntlet is `make gauntlet` (docs/GAUNTLET.md)."""

from __future__ import annotations

from sequestra.gauntlet import runner
from sequestra.gauntlet.scenarios import default_scenarios_dir, load_scenarios
from sequestra.sandbox.paths import SandboxPaths


def test_the_ci_subset_of_the_gauntlet_is_handled_as_a_good_operator_would(sandbox: SandboxPaths) -> None:
    scenarios = [s for s in load_scenarios(default_scenarios_dir()) if s.ci]
    assert {s.kind for s in scenarios} >= {"incident", "look-alike", "not-containable"}
    outcomes = runner.run(sandbox, scenarios, print)
    print(runner.table(outcomes))
    assert [o.row() for o in outcomes if not o.ok] == []
    incidents = [o for o in outcomes if o.expected]
    assert all(o.released_exactly for o in incidents)  # something was held, and put back as it was
    assert runner.summary(outcomes)["holdsOnLookAlikes"] == 0
