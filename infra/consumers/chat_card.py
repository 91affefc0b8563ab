"""An example consumer of the alerts topic: each alert as a card in a team chat channel.

An AWS Lambda handler (`chat_card.handler`, Python standard library only) subscribed to the alerts
SNS topic (`infra/alert-delivery.yaml` deploys it). Each SNS record's message is an alert body
(docs/contracts.md, Alerts; docs/schemas/alert.schema.json); it becomes a Slack-compatible card
(Block Kit `blocks`, plus a plain `text` for notifications and for chat tools that read only
`text`), POSTed as JSON to the incoming-webhook URL in the environment variable
`CHAT_WEBHOOK_URL`.

The card: severity, type, customer and status in the header; `what_changed` (or `message` when the
alert has none); the recommendation and expected impact; the 30-day churn probability and health
score when the model scored the customer; the alert id, when it opened (and resolved), the model
and the budget in small print. An escalation or a resolution is a card of its own naming the same
alert id (an incoming webhook cannot edit the earlier card).

Failures:
- A record that is not an alert (not an SNS notification, a message that is not JSON, a body
  without the alert's identifying fields) or that must not reach people (a control-arm or shadow
  alert from the wrong topic) is logged in one line and skipped; the other records still post.
- The webhook answering an error (or not answering) raises, so the invocation fails and Lambda
  retries it, then hands it to the function's dead-letter queue. SNS invokes the function with one
  record at a time, so a retry re-posts nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

WEBHOOK_VARIABLE = "CHAT_WEBHOOK_URL"
TIMEOUT_SECONDS = 10.0
REQUIRED = ("alert_id", "type", "severity", "customer_id", "message")
SEVERITY_ICONS = {
    "CRITICAL": ":red_circle:",
    "HIGH": ":large_orange_circle:",
    "MEDIUM": ":large_yellow_circle:",
}
STATUS_WORDS = {"open": "Open", "escalated": "Escalated", "resolved": "Resolved"}
HEADER_LIMIT = 150  # Slack's limit for a header block's text
TEXT_LIMIT = 3000  # ... and for a section's

log = logging.getLogger("chat_card")  # Lambda's runtime sends it to the function's log group


class BadRecord(ValueError):
    """A record this consumer cannot or must not turn into a card."""


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: `&`, `<` and `>` are control characters there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _percent(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{value:.0%}"


def alert_of(record: Any) -> dict[str, Any]:
    """The alert body one SNS record of a Lambda event carries; BadRecord says why not."""
    if not isinstance(record, dict):
        raise BadRecord("not an object")
    sns = record.get("Sns")
    if record.get("EventSource") != "aws:sns" or not isinstance(sns, dict):
        raise BadRecord(f"not an SNS notification (EventSource {record.get('EventSource')!r})")
    message = sns.get("Message")
    if not isinstance(message, str):
        raise BadRecord("SNS record without a Message")
    try:
        body = json.loads(message)
    except json.JSONDecodeError as exc:
        raise BadRecord(f"message is not JSON ({exc.msg})") from None
    if not isinstance(body, dict):
        raise BadRecord("message is not a JSON object")
    missing = [key for key in REQUIRED if not isinstance(body.get(key), str) or not body[key]]
    if missing:
        raise BadRecord(f"not an alert: no {', '.join(missing)}")
    if body.get("arm", "treatment") != "treatment" or body.get("shadow"):
        raise BadRecord(f"alert {body['alert_id']} is a control-arm or shadow alert: never shown to people")
    return body


def render(alert: dict[str, Any]) -> dict[str, Any]:
    """The Slack-compatible card (`text` and `blocks`) for one alert body."""
    status = str(alert.get("status") or "open")  # bodies from before `status` existed are open alerts
    severity, alert_type, customer = alert["severity"], alert["type"], alert["customer_id"]
    word = STATUS_WORDS.get(status, status.capitalize())
    header = f"[{severity}] {alert_type}: customer {customer} ({word.lower()})"
    headline = alert.get("what_changed") or alert["message"]
    # The headline is what changed; an escalation's or a resolution's own message says why it came.
    note = alert["message"] if alert.get("what_changed") and status != "open" else None

    facts = [f"*Customer*\n{escape(customer)}", f"*Status*\n{escape(word)}"]
    churn = _percent(alert.get("churn_probability"))
    if churn is not None:
        facts.append(f"*30-day churn probability*\n{churn}")
    score = alert.get("score")
    if isinstance(score, int | float) and not isinstance(score, bool):
        facts.append(f"*Health score*\n{score:.0f}/100")

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(header, HEADER_LIMIT)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": fact} for fact in facts]},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(headline), TEXT_LIMIT)}},
    ]
    if note:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(note), TEXT_LIMIT)}})
    recommendation = alert.get("recommendation")
    if recommendation and status != "resolved":
        line = f"*Recommended:* {recommendation}"
        if alert.get("expected_impact"):
            line += f" ({alert['expected_impact']})"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(line), TEXT_LIMIT)}})

    small = [f"alert `{alert['alert_id']}`"]
    if alert.get("opened_at"):
        small.append(f"opened {alert['opened_at']}")
    if alert.get("resolved_at"):
        small.append(f"resolved {alert['resolved_at']}")
    small.append(
        f"model {alert['model_version']}" if alert.get("model_version") else "rules only, no model score"
    )
    budget = alert.get("budget")
    if isinstance(budget, dict) and budget.get("name"):
        small.append(f"budget {budget['name']} ({budget.get('max_per_day')}/day)")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(" | ".join(small))}]})

    icon = SEVERITY_ICONS.get(severity, ":white_circle:")
    text = "\n".join(line for line in (f"{icon} {header}", headline, note) if line)
    if recommendation and status != "resolved":
        text += f"\nRecommended: {recommendation}"
    return {"text": _cut(escape(text), TEXT_LIMIT), "blocks": blocks}


def post(url: str, card: dict[str, Any]) -> None:
    """POST the card as JSON; an HTTP error status or no answer raises (urllib's errors)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(card).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        response.read()


def handler(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """Lambda's entry point: one card per alert record; `{"posted": n, "skipped": m}`."""
    url = os.environ.get(WEBHOOK_VARIABLE)
    if not url:
        raise RuntimeError(f"{WEBHOOK_VARIABLE} is not set: no webhook to post alert cards to")
    records = event.get("Records") if isinstance(event, dict) else None
    posted = skipped = 0
    for index, record in enumerate(records if isinstance(records, list) else []):
        try:
            card = render(alert_of(record))
        except Exception as exc:  # this record only: the others still post
            sns = record.get("Sns") if isinstance(record, dict) else None
            message_id = sns.get("MessageId") if isinstance(sns, dict) else None
            reason = str(exc) if isinstance(exc, BadRecord) else f"cannot render: {exc!r}"
            log.warning("skipped record %d (SNS message %s): %s", index, message_id, " ".join(reason.split()))
            skipped += 1
            continue
        post(url, card)  # raises on a webhook error: Lambda retries the invocation
        posted += 1
    return {"posted": posted, "skipped": skipped}
