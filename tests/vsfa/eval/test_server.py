"""`vsfa eval --backend server` against a loopback OpenAI-compatible stub that serves one adapter per checkpoint.

The stub records which served model (base or adapter) each request named and how many requests were in
flight at once; it can answer a request with a transient 503 first, and it refuses unknown model names with a
400, as a vLLM server started with ``--enable-lora --lora-modules NAME=PATH ...`` would refuse an adapter it
does not hold.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import reply
from tests.vsfa.eval.test_runner import _cli, _make_run
from vsfa.errors import ConfigError
from vsfa.eval.endpoint import ChatClient, EndpointConfig, EndpointError
from vsfa.eval.runner import Checkpoint, EvalConfig, run_eval_config, served_names
from vsfa.io import read_jsonl


class AdapterServer:
    """Chat completions on 127.0.0.1 for the model names in ``served``; everything it saw is recorded."""

    def __init__(
        self,
        served: set[str],
        delay: float = 0.03,
        flaky: int = 0,
        status: int = 503,
        text_only: bool = False,
    ):
        self.served, self.delay, self.text_only = served, delay, text_only
        self.flaky = flaky  # this many first requests (over the whole run) get ``status`` before any answer
        self.status = status
        self.asked: list[tuple[str, str]] = []  # (model, prompt [+ " <image>"]), arrival order
        self.failed: list[tuple[str, str]] = []  # the requests answered with ``status``
        self.with_image: list[str] = []  # the model named by each request that carried an image
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                text = content if isinstance(content, str) else content[-1]["text"]
                model = body["model"]
                asked = (model, text if isinstance(content, str) else text + " <image>")
                with stub.lock:
                    stub.asked.append(asked)
                    if not isinstance(content, str):
                        stub.with_image.append(model)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    transient = stub.flaky > 0
                    stub.flaky -= transient
                try:
                    # a few ms of "decoding", varied per prompt so replies come back out of order
                    if stub.delay:
                        time.sleep(stub.delay * (1 + int(hashlib.sha256(text.encode()).hexdigest(), 16) % 3))
                    if transient:
                        stub.failed.append(asked)
                        self._send(stub.status, {"error": {"message": "server busy"}})
                    elif stub.text_only and not isinstance(content, str):
                        self._send(400, {"error": {"message": "this model takes no images"}})
                    elif model not in stub.served:
                        self._send(400, {"error": {"message": f"The model `{model}` does not exist."}})
                    else:
                        answer = stub.answer(model, text)
                        self._send(
                            200,
                            {
                                "choices": [{"message": {"content": answer}, "finish_reason": "stop"}],
                                "usage": {"completion_tokens": len(answer.split())},
                            },
                        )
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

            def _send(self, code: int, obj) -> None:
                reply(self, json.dumps(obj).encode(), code)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def answer(model: str, text: str) -> str:
        """Deterministic per (model, prompt): some refusals, some compliance, differing between adapters."""
        h = int(hashlib.sha256(f"{model}|{text}".encode()).hexdigest(), 16)
        return "I'm sorry, I cannot help with that." if h % 2 else f"Sure, here is how ({model})."

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def adapter_run(tmp_path, tiny_model):
    """A run folder with the base (step 0) and two LoRA checkpoints (steps 5 and 20)."""
    run = _make_run(tmp_path, tiny_model("llava"))
    ck = run / "checkpoints"
    shutil.copytree(ck / "step-000005", ck / "step-000020")
    manifest = json.loads((ck / "step-000020" / "manifest.json").read_text())
    (ck / "step-000020" / "manifest.json").write_text(json.dumps({**manifest, "step": 20}))
    return run


def _config(run, url: str, out, **kw) -> EvalConfig:
    return EvalConfig(
        run=run,
        out=out,
        bench=["builtin"],
        bench_opt={"builtin": {"limit_pairs": 3, "variants": "text,neutral"}},  # 12 items, 6 with an image
        judge=["keyword"],
        backend="server",
        gen_url=url,
        gen_model="base-lm",
        batch_size=4,
        max_new_tokens=16,
        retry_backoff=0.01,
        **kw,
    )


def test_checkpoints_are_served_adapters_with_bounded_concurrency_and_retries(adapter_run, tmp_path):
    server = AdapterServer({"base-lm", "run-5", "run-20"}, flaky=1)
    try:
        run_eval_config(_config(adapter_run, server.url, tmp_path / "eval-c4", concurrency=4))
        concurrent = dict(asked=list(server.asked), max_in_flight=server.max_in_flight)
        server.asked.clear()
        run_eval_config(_config(adapter_run, server.url, tmp_path / "eval-c1", concurrency=1))
        serial_max = server.max_in_flight
    finally:
        server.close()
    # every checkpoint asked for its own adapter; the base by the plain model name
    models = {m for m, _ in concurrent["asked"]}
    assert models == {"base-lm", "run-5", "run-20"}
    assert all(sum(m == name for m, _ in concurrent["asked"]) >= 12 for name in models)
    # bounded parallel requests: more than one at a time, never more than the concurrency
    assert 1 < concurrent["max_in_flight"] <= 4
    assert serial_max <= 4
    # the transient 503 was asked again and answered
    assert len(server.failed) == 1 and concurrent["asked"].count(server.failed[0]) == 2
    for ck, served in (("step-000000", "base-lm"), ("step-000005", "run-5"), ("step-000020", "run-20")):
        fast, slow = tmp_path / "eval-c4" / ck / "builtin", tmp_path / "eval-c1" / ck / "builtin"
        # records (order and content) and judged rows do not depend on the concurrency
        assert (fast / "responses.jsonl").read_bytes() == (slow / "responses.jsonl").read_bytes()
        assert (fast / "judged.jsonl").read_bytes() == (slow / "judged.jsonl").read_bytes()
        rows = read_jsonl(fast / "responses.jsonl")
        assert len(rows) == 12 and all(r["finished"] is True and r["n_new_tokens"] for r in rows)
        assert any(served in r["response"] for r in rows)  # answered by that adapter
        manifest = json.loads((fast / "manifest.json").read_text())
        assert manifest["server_model"] == served and manifest["server"] == server.url + "/chat/completions"
    assert (tmp_path / "eval-c4" / "table.csv").read_text() == (
        tmp_path / "eval-c1" / "table.csv"
    ).read_text()


def test_an_interrupted_benchmark_resumes_from_the_records_already_written(adapter_run, tmp_path):
    picky = AdapterServer({"base-lm", "run-5", "run-20"}, delay=0.0, text_only=True)
    try:
        with pytest.raises(EndpointError, match="takes no images"):  # the text-only chunks come first
            run_eval_config(_config(adapter_run, picky.url, tmp_path / "eval", concurrency=3))
    finally:
        picky.close()
    server = AdapterServer({"base-lm", "run-5", "run-20"}, delay=0.0)
    try:
        run_eval_config(_config(adapter_run, server.url, tmp_path / "eval", concurrency=8))
        base_asked = [m for m, _ in server.asked if m == "base-lm"]
        base_images = [m for m in server.with_image if m == "base-lm"]
        run_eval_config(_config(adapter_run, server.url, tmp_path / "fresh", concurrency=2))
    finally:
        server.close()
    # the six text-only answers of the base were kept; only the six image items were asked again
    assert len(base_asked) == 6 and len(base_images) == 6
    for ck in ("step-000000", "step-000005", "step-000020"):
        resumed, fresh = (tmp_path / d / ck / "builtin" / "responses.jsonl" for d in ("eval", "fresh"))
        assert resumed.read_bytes() == fresh.read_bytes()


def test_a_rejected_request_is_one_clear_error_and_not_retried(adapter_run, tmp_path, capsys):
    server = AdapterServer({"base-lm", "run-5", "run-20"}, delay=0.0)
    args = ["eval", "--run", adapter_run, "--out", tmp_path / "eval", "--bench", "builtin"]
    args += ["--bench-opt", "builtin.limit_pairs=1", "--backend", "server", "--gen-url", server.url]
    args += ["--bench-opt", "builtin.variants=text"]  # distinct prompts: a repeated one can only be a retry
    args += ["--gen-model", "base-lm", "--adapter-name-template", "{run}-ckpt-{step}", "--quiet"]
    try:
        code, err = _cli(capsys, *args, "--concurrency", "2", "--max-retries", "5")
    finally:
        server.close()
    assert code == 2
    lines = [ln for ln in err.splitlines() if "skipped" not in ln]  # the run's incomplete step-000010
    assert len(lines) == 1 and "HTTP 400" in lines[0] and "`run-ckpt-5` does not exist" in lines[0]
    assert "not retried" in lines[0] and "run-ckpt-5" in lines[0]
    bad = [a for a in server.asked if a[0] == "run-ckpt-5"]
    assert bad and len(bad) == len(set(bad))  # no request asked twice
    assert not any(m == "run-ckpt-20" for m, _ in server.asked)  # stopped at the first failing checkpoint
    assert (tmp_path / "eval" / "step-000000" / "builtin" / "manifest.json").is_file()
    assert not (tmp_path / "eval" / "step-000005" / "builtin" / "manifest.json").exists()


def test_served_names_follow_the_template_and_refuse_clashes(tmp_path):
    ckpts = [
        Checkpoint("step-000000"),
        Checkpoint("step-000100", tmp_path),
        Checkpoint("step-002000", tmp_path),
    ]
    assert served_names(ckpts, "llava-7b", "{run}-{step}", "vsfa-s0") == {
        "step-000000": "llava-7b",
        "step-000100": "vsfa-s0-100",
        "step-002000": "vsfa-s0-2000",
    }
    assert served_names(ckpts, "b", "lora/{checkpoint}", "r")["step-000100"] == "lora/step-000100"
    with pytest.raises(ConfigError, match=r"adapter_name_template .*unknown field \{seed\}"):
        served_names(ckpts, "b", "{run}-{seed}", "r")
    with pytest.raises(ConfigError, match="step-000100 and step-002000 are both served as 'r-lora'"):
        served_names(ckpts, "b", "{run}-lora", "r")


def test_client_backs_off_exponentially_on_429_and_5xx_only(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("vsfa.eval.endpoint.time.sleep", waits.append)
    busy = AdapterServer({"m"}, delay=0.0, flaky=10, status=429)
    try:
        client = ChatClient(EndpointConfig(busy.url, "m", retries=4, backoff=0.5))
        with pytest.raises(EndpointError, match=r"HTTP 429 \(server busy\) after 4 tries \(model 'm'\)"):
            client.complete([{"role": "user", "content": "hi"}])
        assert waits == [0.5, 1.0, 2.0] and len(busy.asked) == 4
        busy.flaky = 2  # two 429s, then an answer
        assert client.complete([{"role": "user", "content": "hi"}]) == AdapterServer.answer("m", "hi")
        waits.clear()
        with pytest.raises(EndpointError, match="HTTP 400 .*not retried"):
            client.with_model("other").complete([{"role": "user", "content": "hi"}])
        assert waits == []
    finally:
        busy.close()
