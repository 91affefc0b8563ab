"""The example chat consumer (infra/consumers/chat_card.py) and its stack (infra/alert-delivery.yaml).

The handler runs on real alert bodies (`lifecycle_bodies`: built by the alert code itself, valid
against docs/schemas/alert.schema.json first) wrapped as SNS records the way Lambda hands them
over, and posts to a real HTTP server on 127.0.0.1 that keeps what it receives: one card per alert
saying what people act on; a bad record is skipped in one log line and the others still post; a
webhook error raises (Lambda retries, then the dead-letter queue). The template subscribes what it
deploys, with least privilege, and its e-mail filter policy uses only names and values the
publisher really sends.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra.consumers import chat_card
from tests.functional.test_contract_schemas import ALERT, assert_valid, documented_alert, lifecycle_bodies
from tests.infra_policy import ACCOUNT, REGION, Template, allows
from worker.alerts.lifecycle import resolution_of
from worker.alerts.rules import STATUSES, Alert, AlertType, Severity

TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:churn-alerts"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0a1b2c3d-0000-4000-8000-000000000000"
STACK = {
    "AlertTopicArn": TOPIC,
    "WebhookUrl": "https://hooks.slack.com/services/T000/B000/XXXX",
    "KmsKeyArn": KEY,
    "CodeS3Bucket": "churn-models",
    "CodeS3Key": "consumers/chat_card-0123abc.zip",
}


@dataclass
class Webhook:
    """A chat webhook on 127.0.0.1: what was POSTed to it, and the status it answers with."""

    url: str = ""
    status: int = 200
    posts: list[dict[str, Any]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)

    @property
    def cards(self) -> list[dict[str, Any]]:
        return self.posts


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            hook.content_types.append(self.headers["Content-Type"])
            hook.posts.append(json.loads(data))
            reply = b"ok" if hook.status < 400 else b"internal_error"
            self.send_response(hook.status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX"
    monkeypatch.setenv(chat_card.WEBHOOK_VARIABLE, hook.url)
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sns_record(message: str, n: int = 0) -> dict[str, Any]:
    """One record of the event SNS invokes a Lambda function with."""
    return {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": f"{TOPIC}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
        "Sns": {
            "Type": "Notification",
            "MessageId": f"95df01b4-ee98-5cb9-9903-4c221d41eb5e-{n}",
            "TopicArn": TOPIC,
            "Subject": "churn alert",
            "Message": message,
            "Timestamp": "2026-11-27T12:00:00.500Z",
            "MessageAttributes": {},
        },
    }


def sns_event(*records: Any) -> dict[str, Any]:
    return {"Records": list(records)}


def of(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    return sns_event(*(sns_record(json.dumps(body), n) for n, body in enumerate(bodies)))


def text_of(card: dict[str, Any]) -> str:
    """Every text a person sees on the card, in order."""
    parts: list[str] = []
    for block in card["blocks"]:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [f["text"] for f in block.get("fields", [])]
        parts += [e["text"] for e in block.get("elements", [])]
    return "\n".join(parts)


def header_of(card: dict[str, Any]) -> str:
    [header] = [b["text"]["text"] for b in card["blocks"] if b["type"] == "header"]
    return str(header)


@pytest.fixture(scope="module")
def bodies() -> dict[str, dict[str, Any]]:
    found = lifecycle_bodies()
    assert_valid(ALERT, list(found.values()))  # the contract first: these are what the topic carries
    return found


def test_each_alert_becomes_a_card_saying_what_people_act_on(
    webhook: Webhook, bodies: dict[str, dict[str, Any]]
) -> None:
    names = ["open", "escalated", "resolved", "rules_only", "first_scoring"]
    assert chat_card.handler(of([bodies[n] for n in names])) == {"posted": 5, "skipped": 0}
    assert len(webhook.cards) == 5
    assert set(webhook.content_types) == {"application/json; charset=utf-8"}
    cards = dict(zip(names, webhook.cards, strict=True))

    for name, card in cards.items():
        body, text = bodies[name], text_of(cards[name])
        assert header_of(card) == (
            f"[{body['severity']}] {body['type']}: customer {body['customer_id']} ({body['status']})"
        )
        # The line a person reads first: what changed, or the alert's message when nothing is known.
        headline = body["what_changed"] or body["message"]
        assert chat_card.escape(headline) in text
        assert f"*Customer*\n{body['customer_id']}" in text
        assert f"*Status*\n{body['status'].capitalize()}" in text
        assert body["alert_id"] in text
        assert card["text"].startswith(f"{chat_card.SEVERITY_ICONS[body['severity']]} {header_of(card)}")

    opened = text_of(cards["open"])
    assert "completed sessions in the last 7 days 4 -&gt; 0" in opened  # mrkdwn-escaped arrows
    assert "*30-day churn probability*\n68%" in opened and "*Health score*\n32/100" in opened
    assert "*Recommended:* Offer discount or free session credit (Reduce churn by 35%)" in opened
    assert "budget retention (40/day)" in opened and "model 2026-11-20-ab12cd" in opened

    # The escalation names the same alert, says why it came, and shows the scores now.
    escalated = text_of(cards["escalated"])
    assert bodies["escalated"]["alert_id"] == bodies["open"]["alert_id"]
    assert "Escalated: 30-day churn risk is 86% (escalation above 80%)" in escalated
    assert "*30-day churn probability*\n86%" in escalated and "*Recommended:*" in escalated
    assert "Escalated: 30-day churn risk is 86%" in cards["escalated"]["text"]  # the notification too

    # The resolution: nothing left to do, and when it cleared.
    resolved = text_of(cards["resolved"])
    assert "Resolved: the HIGH_CHURN_RISK condition has been clear since" in resolved
    assert "resolved 2026-11-30T18:00:00Z" in resolved and "*Recommended:*" not in resolved

    # Without the model: no scores to show, the recommendation still there.
    spike = text_of(cards["rules_only"])
    assert "*30-day churn probability*" not in spike and "*Health score*" not in spike
    assert "rules only, no model score" in spike
    assert "*Recommended:* Assign retention specialist within 24 hours" in spike

    first = text_of(cards["first_scoring"])
    assert bodies["first_scoring"]["what_changed"] is None
    assert "Customer health score is 32/100 (below 40)" in first


def test_bad_records_are_skipped_in_one_line_each_and_the_others_still_post(
    webhook: Webhook, bodies: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    good, later = bodies["open"], bodies["escalated"]
    event = sns_event(
        sns_record(json.dumps(good), 0),
        sns_record("{not json", 1),
        sns_record(json.dumps(["an", "array"]), 2),
        sns_record(json.dumps({"hello": "world"}), 3),  # JSON, but not an alert
        sns_record(json.dumps({**good, "customer_id": 8}), 4),
        sns_record(json.dumps({**good, "arm": "control"}), 5),  # the holdout never reaches people
        {"EventSource": "aws:sqs", "body": json.dumps(good)},  # not an SNS notification
        "garbage",
        {"EventSource": "aws:sns", "Sns": "not an object"},
        sns_record(json.dumps(later), 9),
    )
    with caplog.at_level(logging.WARNING, logger="chat_card"):
        assert chat_card.handler(event) == {"posted": 2, "skipped": 8}

    assert [card["blocks"][0]["text"]["text"] for card in webhook.cards] == [
        header_of(chat_card.render(good)),
        header_of(chat_card.render(later)),
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "chat_card"]
    assert len(lines) == 8 and all("\n" not in line for line in lines)
    assert all(line.startswith("skipped record ") for line in lines)
    assert "(SNS message 95df01b4-ee98-5cb9-9903-4c221d41eb5e-1): message is not JSON" in lines[0]
    assert "not an alert: no alert_id, type, severity, customer_id, message" in lines[2]
    assert "not an alert: no customer_id" in lines[3]
    assert "control-arm or shadow alert" in lines[4]
    assert "not an SNS notification" in lines[5]


def test_a_webhook_error_raises_so_lambda_retries(
    webhook: Webhook, bodies: dict[str, dict[str, Any]]
) -> None:
    webhook.status = 500
    with pytest.raises(urllib.error.HTTPError) as raised:
        chat_card.handler(of([bodies["open"], bodies["escalated"]]))
    assert raised.value.code == 500
    assert len(webhook.cards) == 1  # stopped at the first failure: a retry re-posts only that one


def test_no_webhook_configured_raises(
    monkeypatch: pytest.MonkeyPatch, bodies: dict[str, dict[str, Any]]
) -> None:
    monkeypatch.delenv(chat_card.WEBHOOK_VARIABLE, raising=False)
    with pytest.raises(RuntimeError, match=chat_card.WEBHOOK_VARIABLE):
        chat_card.handler(of([bodies["open"]]))


def test_an_unreachable_webhook_raises(
    monkeypatch: pytest.MonkeyPatch, bodies: dict[str, dict[str, Any]]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    monkeypatch.setenv(chat_card.WEBHOOK_VARIABLE, f"http://127.0.0.1:{port}/hook")
    with pytest.raises(urllib.error.URLError):
        chat_card.handler(of([bodies["open"]]))


def test_a_body_from_before_status_existed_is_an_open_alert(bodies: dict[str, dict[str, Any]]) -> None:
    old = {
        k: v for k, v in bodies["open"].items() if k not in ("status", "what_changed", "changes", "budget")
    }
    card = chat_card.render(old)
    assert header_of(card).endswith("(open)")
    assert "30-day churn risk is 68% (above 60%)" in text_of(card)


def test_the_operations_guides_sample_card_is_what_the_handler_renders() -> None:
    """docs/operations.md shows the card of docs/contracts.md's example alert: it must stay true."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    match = re.search(r"A card, as a chat client shows it.*?```\n(.*?)\n```", guide, re.S)
    assert match, "docs/operations.md has no sample card"
    lines = match.group(1).splitlines()
    card = chat_card.render(documented_alert())
    sections = [
        html.unescape(b["text"]["text"]) for b in card["blocks"] if b["type"] == "section" and "text" in b
    ]
    [context] = [html.unescape(b["elements"][0]["text"]) for b in card["blocks"] if b["type"] == "context"]
    [fields] = [b["fields"] for b in card["blocks"] if "fields" in b]
    assert lines[0] == header_of(card)
    shown = [f["text"].split("\n")[1] for f in fields]
    assert lines[2].split() == shown[:2] and lines[4].split() == shown[2:]
    assert f"{lines[5]} {lines[6]}" == sections[0]  # what changed, wrapped in the guide
    assert lines[7] == sections[1].replace("*", "")
    assert lines[8] == context.replace("`", "")


# -- the stack -------------------------------------------------------------------------------------


def alert_of(body: dict[str, Any]) -> Alert:
    return Alert.from_body(body, datetime.fromisoformat(body["opened_at"]), "premium")


# What the publisher can send, per name: a filter on any other value never matches anything.
VALUES: dict[str, set[str]] = {
    "severity": {s.value for s in Severity},
    "alert_type": {t.value for t in AlertType},
    "status": set(STATUSES),
    "arm": {"treatment", "control"},
    "customer_tier": {"budget", "standard", "premium", "unknown"},
}


def delivered(policy: dict[str, list[str]], scope: str, alert: Alert) -> bool:
    """SNS's matching for a policy of exact string values, on the attributes or the body."""
    fields: dict[str, Any] = alert.attributes() if scope == "MessageAttributes" else alert.body()
    return all(fields.get(name) in allowed for name, allowed in policy.items())


def test_the_email_filter_policy_uses_only_what_the_publisher_sends(
    bodies: dict[str, dict[str, Any]],
) -> None:
    stack = Template("alert-delivery.yaml", {**STACK, "NotificationEmail": "retention-leads@example.com"})
    assert stack.created("EmailSubscription")
    email = stack.properties("EmailSubscription")
    assert (email["Protocol"], email["TopicArn"]) == ("email", TOPIC)
    policy: dict[str, list[str]] = email["FilterPolicy"]
    scope = email.get("FilterPolicyScope", "MessageAttributes")

    spike = alert_of(bodies["rules_only"])  # CRITICAL
    sent = spike.published_at(spike.as_of)
    names = set(sent.attributes()) if scope == "MessageAttributes" else set(sent.body())
    assert set(policy) <= names, f"{scope} filter on names the publisher never sets: {set(policy) - names}"
    for name, allowed in policy.items():
        assert set(allowed) <= VALUES[name], f"{name}: {set(allowed) - VALUES[name]} is never sent"
    # The status is only in the body, so a policy on it must be scoped to the body.
    if "status" in policy:
        assert "status" not in sent.attributes() and scope == "MessageBody"

    # What reaches the inbox: critical alerts that are open or escalated, nothing else.
    resolved = resolution_of(spike, spike.as_of + timedelta(days=3), spike.as_of)
    escalated = spike.model_copy(update={"status": "escalated"})
    assert delivered(policy, scope, sent) and delivered(policy, scope, escalated)
    assert not delivered(policy, scope, resolved)
    for name in ("open", "escalated", "first_scoring"):  # HIGH
        assert not delivered(policy, scope, alert_of(bodies[name]))

    assert not Template("alert-delivery.yaml", STACK).created("EmailSubscription")


def test_the_stack_subscribes_this_handler_with_least_privilege() -> None:
    stack = Template("alert-delivery.yaml", STACK)
    function = stack.properties("Function")
    module, name = function["Handler"].split(".")
    assert (module, name) == ("chat_card", "handler") and callable(getattr(chat_card, name))
    assert function["Runtime"].startswith("python3.")
    assert function["Code"] == {"S3Bucket": "churn-models", "S3Key": "consumers/chat_card-0123abc.zip"}
    assert function["Environment"]["Variables"] == {chat_card.WEBHOOK_VARIABLE: STACK["WebhookUrl"]}
    assert function["KmsKeyArn"] == KEY
    assert function["ReservedConcurrentExecutions"] == "2"
    assert function["DeadLetterConfig"] == {"TargetArn": "<DeadLetterQueue.Arn>"}
    assert stack.body["Parameters"]["WebhookUrl"]["NoEcho"] is True
    assert function["Timeout"] > 2 * chat_card.TIMEOUT_SECONDS

    retries = stack.properties("FunctionInvokeConfig")
    assert retries["MaximumRetryAttempts"] == 2

    subscription = stack.properties("FunctionSubscription")
    assert subscription == {"TopicArn": TOPIC, "Protocol": "lambda", "Endpoint": "<Function.Arn>"}
    permission = stack.properties("TopicInvokesFunction")
    assert permission == {
        "FunctionName": "<Function.Arn>",
        "Action": "lambda:InvokeFunction",
        "Principal": "sns.amazonaws.com",
        "SourceArn": TOPIC,
    }

    statements = stack.statements("FunctionRole")
    actions = {
        a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:SendMessage",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    assert all("*" not in a for a in actions)
    assert all(s["Resource"] != "*" for s in statements)
    assert allows(statements, "logs:PutLogEvents", "<LogGroup.Arn>")
    assert allows(statements, "sqs:SendMessage", "<DeadLetterQueue.Arn>")
    assert not allows(statements, "sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:churn-events")
    assert allows(statements, "kms:Decrypt", KEY)
    assert stack.properties("LogGroup")["LogGroupName"] == "/aws/lambda/churn-alert-chat-card"
    assert function["FunctionName"] == "churn-alert-chat-card"
