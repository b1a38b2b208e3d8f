"""Answer sources (b) self-distillation and (c) an OpenAI-compatible endpoint (a loopback stub server)."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from vsfa.data.build import build_variants
from vsfa.data.sources import DESCRIBER_PROMPT, EndpointSource, SelfDistillSource, make_source
from vsfa.errors import DataError
from vsfa.io import read_jsonl, read_manifest


class _Stub(BaseHTTPRequestHandler):
    requests: list = []
    fail: bool = False

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if _Stub.fail:
            self.send_response(400)
            self.end_headers()
            return
        user = body["messages"][1]["content"]
        question = user[0]["text"]
        has_image = any(p["type"] == "image_url" for p in user)
        reply = {
            "choices": [
                {"message": {"role": "assistant", "content": f"  Seen: {question} image={has_image} "}}
            ]
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def stub():
    _Stub.requests, _Stub.fail = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Stub
    server.shutdown()
    server.server_close()


def test_endpoint_source_builds_all_variants(stub, tmp_path, monkeypatch):
    url, handler = stub
    monkeypatch.setenv("VSFA_TEST_KEY", "sekret")
    src = EndpointSource(url, "describer-1", api_key_env="VSFA_TEST_KEY", workers=2)
    out = build_variants(tmp_path / "d", procedural=3, procedural_size=32, source=src, questions_per_image=2)
    recs = read_jsonl(out / "image" / "data.jsonl")
    assert len(recs) == 6 and all(r["answer_source"] == "endpoint" for r in recs)
    assert recs[0]["messages"][1]["content"][0]["text"] == f"Seen: {recs[0]['question']} image=True"
    text = read_jsonl(out / "text" / "data.jsonl")[0]["messages"][0]["content"][0]["text"]
    assert (
        "Seen: Describe the image in one sentence. image=True" in text
    )  # the description came from the endpoint
    # 3 threat images x (2 questions + 1 description) + 3 neutral images x 2 questions
    assert len(handler.requests) == 15
    req = handler.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sekret"
    assert req["body"]["model"] == "describer-1" and req["body"]["messages"][0]["content"] == DESCRIBER_PROMPT
    image_url = req["body"]["messages"][1]["content"][1]["image_url"]["url"]
    png = base64.b64decode(image_url.removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(png)).size == (32, 32)
    assert read_manifest(out / "image")["answer_source"]["model"] == "describer-1"


def test_endpoint_failure_is_one_clear_error(stub, tmp_path):
    url, handler = stub
    handler.fail = True
    with pytest.raises(DataError, match=r"chat/completions: answer source endpoint failed \(HTTP 400"):
        build_variants(
            tmp_path / "d", ["image"], procedural=2, procedural_size=32, source=EndpointSource(url, "m")
        )
    assert not (tmp_path / "d").exists()
    with pytest.raises(DataError, match="--endpoint"):
        make_source("endpoint")


def test_self_distillation_uses_batched_generation(tiny_model, tmp_path):
    import torch

    from vsfa.models.loading import load_vlm

    folder = tiny_model("llava")
    vlm = load_vlm(folder)
    src = SelfDistillSource(str(folder), batch_size=4, max_new_tokens=6, vlm=vlm)
    out = build_variants(
        tmp_path / "d",
        ["image", "text"],
        procedural=3,
        procedural_size=32,
        source=src,
        questions_per_image=2,
        allow_labelled=True,  # a random-weight model may emit any word of its vocabulary
    )
    recs = read_jsonl(out / "image" / "data.jsonl")
    assert len(recs) == 6 and all(r["answer_source"] == "self" for r in recs)
    man = read_manifest(out / "image")["answer_source"]
    assert (
        man["name"] == "self"
        and man["decoding"]["max_new_tokens"] == 6
        and len(man["model_fingerprint"]) == 64
    )
    # the recorded answer is the base model's own greedy continuation of the same prompt
    from vsfa.data.images import load_image

    rec = recs[0]
    msgs = [{"role": "system", "content": [{"type": "text", "text": DESCRIBER_PROMPT}]}, rec["messages"][0]]
    batch = vlm.encode([vlm.render(msgs)], [[load_image(out / "image" / rec["images"][0])]])
    with torch.no_grad():
        gen = vlm.hf_model.generate(
            **batch, max_new_tokens=6, do_sample=False, pad_token_id=vlm.tokenizer.pad_token_id
        )
    direct = " ".join(
        vlm.tokenizer.decode(gen[0, batch["input_ids"].shape[1] :], skip_special_tokens=True).split()
    )
    assert rec["messages"][1]["content"][0]["text"] == direct
