"""In-process metrics, served by the health server as Prometheus text (`/metrics`) and JSON
(`/metrics.json`, which a CloudWatch agent or an ECS sidecar can ingest)."""

from __future__ import annotations

import time
from collections import defaultdict, deque

import numpy as np

_SAMPLES = 2048  # latency samples kept per series: enough for p50/p95/p99 of recent traffic


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.gauges: dict[str, float] = {}
        self.samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=_SAMPLES))

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += amount

    def count_request(self, service: str, operation: str) -> None:
        """`AwsClients(..., on_request=metrics.count_request)`: AWS requests by service and operation."""
        self.inc("aws_requests", service=service, operation=operation)

    def set(self, name: str, value: float, **labels: str) -> None:
        """A gauge; with labels it is kept as `name{k="v"}`, the Prometheus series it becomes."""
        key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        self.gauges[key] = value

    def observe(self, name: str, value: float) -> None:
        self.samples[name].append(value)

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.counters.items() if n == name)

    def quantiles(self, name: str) -> dict[str, float]:
        values = np.asarray(self.samples.get(name, ()))
        if not len(values):
            return {}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "count": float(len(values))}

    def as_json(self) -> dict[str, object]:
        counters: dict[str, float] = {}
        for (name, labels), value in sorted(self.counters.items()):
            key = name + ("{" + ",".join(f"{k}={v}" for k, v in labels) + "}" if labels else "")
            counters[key] = value
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "counters": counters,
            "gauges": dict(self.gauges),
            "latency": {name: self.quantiles(name) for name in self.samples},
        }

    def prometheus(self) -> str:
        lines = []
        for (name, labels), value in sorted(self.counters.items()):
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"churn_{name}_total{{{label_text}}} {value:g}")
        for name, value in sorted(self.gauges.items()):
            lines.append(f"churn_{name} {value:g}")
        for name in sorted(self.samples):
            for quantile, value in self.quantiles(name).items():
                if quantile != "count":
                    lines.append(f'churn_{name}{{quantile="0.{quantile[1:]}"}} {value:g}')
        return "\n".join(lines) + "\n"
