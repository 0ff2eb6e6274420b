"""Reading a gateway's `/metrics` as Prometheus would, with prometheus-client's own parser."""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from scripts.stack import Gateway

Labels = frozenset[tuple[str, str]]


def metrics_url(gateway: Gateway) -> str:
    """Where `gateway` said it serves `/metrics`."""
    assert gateway.metrics_url, gateway.log_text()[-2000:]
    return gateway.metrics_url


def scrape(url: str) -> dict[tuple[str, Labels], float]:
    """Every sample of `url`, keyed by sample name and labels."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels`; 0 when it is absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)
