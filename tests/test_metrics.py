"""``GET /metrics``: Prometheus' text format, parsed by prometheus_client's own parser, moving as requests come."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from service_support import make_checkpoint, thread_server

from chargen.runs.checkpoint import load_checkpoint
from chargen.serve import create_app

TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"{url}/metrics", headers=AUTH)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_by_the_right_amounts(tmp_path: Path) -> None:
    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "tiny.safetensors"))
    app = create_app({"tiny": checkpoint}, f"sqlite:///{tmp_path / 'h.db'}", TOKEN)
    with thread_server(app) as url:
        before = scrape(url)
        for seed in range(3):
            answer = httpx.post(f"{url}/v1/generate", headers=AUTH, json={"length": 12, "seed": seed})
            assert answer.status_code == 200
        streamed = httpx.post(f"{url}/v1/generate", headers=AUTH, json={"length": 5, "num_samples": 2,
                                                                         "stream": True, "seed": 1})
        assert streamed.status_code == 200
        assert httpx.post(f"{url}/v1/completions", headers=AUTH, json={"model": "tiny", "prompt": "a",
                                                                        "max_tokens": 7}).status_code == 200
        assert httpx.post(f"{url}/v1/generate", headers=AUTH, json={"model": "nope"}).status_code == 404
        assert httpx.get(f"{url}/v1/generations/ABC", headers={"Authorization": "Bearer wrong"}).status_code == 401
        after = scrape(url)
    generate_ok = {"route": "/v1/generate", "method": "POST", "status": "200"}
    assert value(after, "chargen_http_requests_total", **generate_ok) \
        - value(before, "chargen_http_requests_total", **generate_ok) == 4
    assert value(after, "chargen_http_requests_total", route="/v1/generate", method="POST", status="404") == 1
    assert value(after, "chargen_http_requests_total", route="/v1/completions", method="POST", status="200") == 1
    assert value(after, "chargen_http_requests_total", route="/v1/generations/{gen_id}", method="GET",
                 status="401") == 1
    assert value(after, "chargen_tokens_generated_total", model="tiny") \
        - value(before, "chargen_tokens_generated_total", model="tiny") == 3 * 12 + 2 * 5 + 7
    assert value(after, "chargen_history_rows_written_total") - value(before, "chargen_history_rows_written_total") \
        == 5
    assert value(after, "chargen_history_commit_rows_count") >= 1
    assert value(after, "chargen_history_write_failures_total") == 0
    assert value(after, "chargen_time_to_first_token_seconds_count", model="tiny") == 5
    assert value(after, "chargen_queue_wait_seconds_count", model="tiny") == 5
    steps = value(after, "chargen_batch_rows_count", model="tiny")
    assert steps >= 12 and value(after, "chargen_token_latency_seconds_count", model="tiny") == steps
    assert value(after, "chargen_batch_rows_sum", model="tiny") >= 3 * 11 + 2 * 4 + 6  # rows x steps
    assert value(after, "chargen_active_streams", model="tiny") == 0


def test_metrics_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "tiny.safetensors"))
    with thread_server(create_app({"tiny": checkpoint}, None, TOKEN)) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers=AUTH).status_code == 200
