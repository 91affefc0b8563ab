"""Alerting: pure routing rules, the dedup/cooldown ledger and the SNS publisher.

- `config`     thresholds, cooldowns and switches (`[alerts.<type>]` in the settings file)
- `rules`      `route_alerts`, `Alert`, `Prediction`: pure functions and values, no I/O
- `ledger`     `AlertLedger` port, DynamoDB adapter and in-memory twin: cooldowns, churn, no duplicates
- `publisher`  `AlertPublisher` port, SNS adapter and in-memory twin

Per batch the pipeline does: `route_alerts` per customer -> `ledger.claim_all` -> publish the
claims that `should_publish` -> `ledger.mark_all_sent` on what was published.
"""

from worker.alerts.config import AlertsConfig
from worker.alerts.rules import Alert, AlertType, Prediction, Severity, route_alerts

__all__ = ["Alert", "AlertType", "AlertsConfig", "Prediction", "Severity", "route_alerts"]
