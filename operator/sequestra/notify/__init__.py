"""Telling people, instead of paging them: Alertmanager silences for the alerts Sequestra handled, one
batched digest per incident, and a page only when automation cannot handle it.

Everything here is an edge (HTTP to Alertmanager, webhooks, PagerDuty) around pure pieces that decide
and format (`silences.workload_matcher_sets`, `digest.render_*`, `pager.alertmanager_alert`). Nothing in this
package raises out of a delivery: a failed webhook is counted and logged; only silences, whose absence
the caller must know about, raise a retryable `AlertmanagerUnavailable`.
"""
