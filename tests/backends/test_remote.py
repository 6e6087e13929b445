"""The remote (NDIF) path: serialised traces == local ones, pre-flight, retries, errors.

Three levels, none of which contacts an external host:

1. ``remote="local"`` (nnsight serialises the trace as for NDIF, deserialises it with
   this package hidden, runs it here), made *strict*: nnsight's simulation hides
   ``sys.modules`` entries but an editable install can re-import ``fsnn`` from disk,
   so an import blocker makes any fsnn code that was not shipped by value fail.
2. A fake NDIF on 127.0.0.1 (``FakeNDIF``): ``/status``, the ``/subscribe``
   websocket and ``POST /request`` as nnsight's client speaks them. It can execute
   a request on a real local model (deserialise with fsnn blocked, run, send the
   saved values back as a COMPLETED frame), so a *meta-device* client model
   (``load_model(folder, backend="ndif")``) goes through nnsight's real RemoteBackend.
3. The same server answering as an unavailable / failing service, for the
   pre-flight check, the retries and the one-line errors.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.abc
import io
import json
import linecache
import logging
import queue
import socket
import sys
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nnsight
import pytest
import torch

from fsnn.backends.ndif import (
    api_key,
    call_remote,
    is_transient,
    ndif_config,
    ndif_host,
    payload_sizes,
    preflight,
    result_size,
)
from fsnn.backends.retry import RetryPolicy
from fsnn.errors import FsnnError
from fsnn.models.load import load_model
from fsnn.steering.references import ReferenceItem, capture_references
from fsnn.steering.steer import steer_in_session, steered_generate

SECRET = "ndif-test-key-6f1d0c8a9b"
NO_WAIT = RetryPolicy(attempts=3, backoff_base=0.0)

ITEMS = [
    ReferenceItem(
        question="Who wrote Hamlet?",
        answer="William Shakespeare",
        explanation="He wrote it around 1600.",
    ),
    ReferenceItem(question="What is the capital of France?", answer="Paris"),
    ReferenceItem(
        question="Which planet is largest?", answer="Jupiter", explanation="A gas giant."
    ),
]
PROMPTS = [
    "Question: Who wrote Hamlet?\nAnswer and explanation:",
    "Question: What is the capital of France?\nAnswer and explanation:",
    "Question: Which planet is largest?\nAnswer and explanation:",
    "Question: Who wrote Hamlet?\nAnswer and explanation:",
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def smol_folder(smol_tokenizer_dir: Path) -> Path:
    """The converted SmolLM2 checkpoint folder (conftest), as a meta client loads it."""
    return Path(smol_tokenizer_dir)


@pytest.fixture(scope="module")
def tiny_folder(smol_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded 4-layer random Llama with the real SmolLM2 tokenizer, saved to disk."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(smol_folder))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_folder: Path) -> Any:
    return load_model(str(tiny_folder))


@pytest.fixture(scope="module")
def smol(smollm2: Any) -> Any:
    return smollm2  # the session-wide SmolLM2 of conftest


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never route the 127.0.0.1 test traffic through a proxy from the environment."""
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("NDIF_HOST", raising=False)


# --------------------------------------------------------------------------- strict simulation


class _NoFsnn(importlib.abc.MetaPathFinder):
    """Refuse to import fsnn: what an NDIF server (no fsnn installed) does."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "fsnn" or name.startswith("fsnn."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: the server has no fsnn)")
        return None


@contextlib.contextmanager
def _fsnn_hidden():
    """Pop fsnn from sys.modules and block re-importing it (restored on exit)."""
    blocker = _NoFsnn()
    hidden = {
        k: sys.modules.pop(k) for k in list(sys.modules) if k == "fsnn" or k.startswith("fsnn.")
    }
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
        sys.modules.update(hidden)


@pytest.fixture
def strict_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``remote="local"`` fail on any fsnn code that was not shipped by value."""
    from nnsight.intervention.backends.local import LocalSimulationBackend

    hide, restore = LocalSimulationBackend._hide_local_modules, LocalSimulationBackend._restore
    blocker = _NoFsnn()

    def strict_hide(self: Any) -> dict:
        hidden = hide(self)
        sys.meta_path.insert(0, blocker)
        return hidden

    def strict_restore(self: Any, hidden: dict) -> None:
        if blocker in sys.meta_path:
            sys.meta_path.remove(blocker)
        restore(self, hidden)

    monkeypatch.setattr(LocalSimulationBackend, "_hide_local_modules", strict_hide)
    monkeypatch.setattr(LocalSimulationBackend, "_restore", strict_restore)


# --------------------------------------------------------------------------- fake NDIF

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeNDIF:
    """NDIF's three endpoints on 127.0.0.1, scripted per test.

    Attributes:
        model: a LoadedModel that executes requests (None: requests need an error mode).
        status: the ``/status`` JSON; ``status_code`` its HTTP status.
        subscribe_fail: HTTP statuses for the next websocket handshakes (popped).
        request_fail: (status, detail) answers for the next ``POST /request`` (popped).
        job_error: description of an ERROR status for every accepted request.
        hits: count per endpoint; ``keys``: the api-key headers received.
        payloads / results: bytes of each received request / sent result.
    """

    def __init__(self, model: Any = None) -> None:
        self.model = model
        self.status: dict = {"deployments": {}}
        self.status_code = 200
        self.subscribe_fail: list[int] = []
        self.request_fail: list[tuple[int, str]] = []
        self.job_error: str | None = None
        self.hits: dict[str, int] = {}
        self.keys: list[str] = []
        self.payloads: list[int] = []
        self.results: list[int] = []
        self.sessions: dict[str, queue.Queue] = {}
        self._n = 0
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"ndif": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next_id(self) -> str:
        with self._lock:
            self._n += 1
            return f"req-{self._n:04d}"

    def deserialize(self, blob: bytes, meta: dict) -> Any:
        """Rebuild a request's tracer against ``self.model``, fsnn hidden as on NDIF.

        Called while the client still waits for the POST's answer, so hiding fsnn
        from ``sys.modules`` cannot race with the client thread.
        """
        from nnsight.schema.request import RequestModel

        lm = self.model.lm
        cache = dict(linecache.cache)  # deserialize registers the block source there
        try:
            with _fsnn_hidden():
                return RequestModel.deserialize(
                    blob, lm._remoteable_persistent_objects(), compress=meta.get("compress", False)
                )
        finally:
            linecache.cache.clear()
            linecache.cache.update(cache)

    def execute(self, tracer: Any, meta: dict) -> bytes:
        """Run a deserialised request as the server does; the result blob."""
        import zstandard as zstd
        from nnsight.tracing.tracer import _saves, dec, inc

        self.model.lm._remoteable_set_env(meta.get("env") or {})
        inc()
        try:
            tracer.execute(tracer.info.code)
            saves = _saves()
            saved = {k: v for k, v in tracer.info.frame.f_locals.items() if id(v) in saves}
        finally:
            dec()
        buffer = io.BytesIO()
        torch.save(saved, buffer, pickle_protocol=4)
        data = buffer.getvalue()
        if meta.get("compress"):
            data = zstd.ZstdCompressor(level=6).compress(data)
        return data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ndif: FakeNDIF

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _hit(self, name: str) -> None:
        with self.ndif._lock:
            self.ndif.hits[name] = self.ndif.hits.get(name, 0) + 1
            key = self.headers.get("ndif-api-key")
            if key:
                self.ndif.keys.append(key)

    def _json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/status":
            self._hit("status")
            self._json(
                self.ndif.status_code,
                self.ndif.status if self.ndif.status_code == 200 else {"detail": "down"},
            )
        elif self.path == "/subscribe":
            self._hit("subscribe")
            self._websocket()
        else:
            self._json(404, {"detail": "not found"})

    def _frame(self, payload: bytes, opcode: int) -> None:
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, n])
        elif n < 1 << 16:
            head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
        self.wfile.write(head + payload)
        self.wfile.flush()

    def _websocket(self) -> None:
        if self.ndif.subscribe_fail:
            self._json(self.ndif.subscribe_fail.pop(0), {"detail": "service unavailable"})
            return
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        session = f"session-{self.ndif.next_id()}"
        inbox: queue.Queue = queue.Queue()
        self.ndif.sessions[session] = inbox
        self._frame(json.dumps({"session_id": session}).encode(), 1)
        try:
            kind, payload = inbox.get(timeout=120)
            if kind != "none":
                self._frame(payload, 2 if kind == "binary" else 1)
            self.connection.settimeout(5)
            if self.rfile.read(2):  # the client's close frame: answer it, or it waits 3 s
                self._frame(b"", 8)
        except (OSError, queue.Empty):
            pass
        self.close_connection = True

    def do_POST(self) -> None:
        from nnsight.schema.response import ResponseModel, Status

        if self.path != "/request":
            self._json(404, {"detail": "not found"})
            return
        self._hit("request")
        body = self.rfile.read(int(self.headers["Content-Length"]))
        msg = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
        )
        fields = {
            part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in msg.iter_parts()
        }
        meta, blob = json.loads(fields["data"]), fields["blob"]
        self.ndif.payloads.append(len(blob))
        inbox = self.ndif.sessions[meta["session_id"]]
        if self.ndif.request_fail:
            code, detail = self.ndif.request_fail.pop(0)
            self._json(code, {"detail": detail})
            inbox.put(("none", b""))
            return
        rid = self.ndif.next_id()
        tracer, failed = None, None
        if self.ndif.job_error is None:
            try:
                tracer = self.ndif.deserialize(blob, meta)
            except Exception as exc:  # reported as the server would, after RECEIVED
                failed = exc
        self._json(200, json.loads(ResponseModel(id=rid, status=Status.RECEIVED).model_dump_json()))
        if self.ndif.job_error is not None:
            error = ResponseModel(id=rid, status=Status.ERROR, description=self.ndif.job_error)
            inbox.put(("text", error.model_dump_json().encode()))
            return
        try:
            if failed is not None:
                raise failed
            data = self.ndif.execute(tracer, meta)
        except Exception as exc:  # report it as the server would
            error = ResponseModel(
                id=rid, status=Status.ERROR, description=f"{type(exc).__name__}: {exc}"
            )
            inbox.put(("text", error.model_dump_json().encode()))
            return
        self.ndif.results.append(len(data))
        inbox.put(("binary", ResponseModel(id=rid, status=Status.COMPLETED, data=data).pickle()))


@pytest.fixture
def ndif() -> Any:
    server = FakeNDIF()
    yield server
    server.close()


@contextlib.contextmanager
def _meta_client(folder: Path):
    """A meta-device (remote) model of ``folder``; its model key needs no Hub lookup."""
    from nnsight.modeling import huggingface

    client = load_model(str(folder), backend="ndif")
    huggingface._ID_CACHE[client.lm.repo_id] = "fsnn-test/" + folder.name
    try:
        yield client
    finally:
        huggingface._ID_CACHE.pop(client.lm.repo_id, None)


@pytest.fixture(scope="module")
def tiny_client(tiny_folder: Path) -> Any:
    with _meta_client(tiny_folder) as client:
        yield client


@pytest.fixture(scope="module")
def smol_client(smol_folder: Path) -> Any:
    with _meta_client(smol_folder) as client:
        yield client


# --------------------------------------------------------------------------- helpers


def _coefficients(n_rows: int, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A search step: every row its own (alpha, gamma), segment-wise; one row all zero."""
    g = torch.Generator().manual_seed(1)
    alpha = torch.rand(n_rows, n_layers, generator=g) * 0.99 + 0.01
    gamma = torch.rand(n_rows, n_layers, generator=g) * 0.99 + 0.01
    thirds = torch.tensor_split(torch.arange(n_layers), 3)
    alpha[1, thirds[0]] = 0.0  # segmented row with an unsteered segment
    alpha[-1] = 0.0  # unsteered row rides in the same batch
    return alpha, gamma


def _refs(model: Any, rows: int) -> torch.Tensor:
    h = torch.as_tensor(capture_references(model, ITEMS).values)
    return h[torch.arange(rows) % len(ITEMS)]


def _ids(outputs: list) -> list[tuple[list[int], bool]]:
    return [(o.ids, o.stopped) for o in outputs]


# --------------------------------------------------------------------------- backend="serialised"


@pytest.mark.usefixtures("strict_local")
def test_capture_local_simulation_equals_local(tiny: Any) -> None:
    local = capture_references(tiny, ITEMS, batch_size=2)
    with payload_sizes() as sizes:
        simulated = capture_references(tiny, ITEMS, batch_size=2, backend="serialised")
    assert torch.equal(torch.as_tensor(local.values), torch.as_tensor(simulated.values))
    assert len(sizes) == 2  # one request per batch, really serialised


@pytest.mark.usefixtures("strict_local")
@pytest.mark.parametrize("mode", ["faithful", "cached"])
def test_steer_local_simulation_equals_local(tiny: Any, mode: str) -> None:
    h = _refs(tiny, len(PROMPTS))
    alpha, gamma = _coefficients(len(PROMPTS), tiny.n_layers)
    local = steered_generate(tiny, PROMPTS, h, alpha, gamma, mode=mode, max_new_tokens=6)
    with payload_sizes() as sizes:
        simulated = steered_generate(
            tiny, PROMPTS, h, alpha, gamma, mode=mode, max_new_tokens=6, backend="serialised"
        )
    assert _ids(simulated) == _ids(local)
    assert len(sizes) == 1  # the whole multi-row search step is one request
    unsteered = steered_generate(tiny, PROMPTS, h, alpha * 0, gamma, mode=mode, max_new_tokens=6)
    assert _ids(unsteered) != _ids(local)  # non-vacuous: the coefficients matter


@pytest.mark.usefixtures("strict_local")
@pytest.mark.parametrize("operator", ["angular", "centred"])
@pytest.mark.parametrize("mode", ["faithful", "cached"])
def test_operator_local_simulation_equals_local(tiny: Any, mode: str, operator: str) -> None:
    """A non-default operator and schedule ship by value (fsnn.steering.operators registered)."""
    from fsnn.steering.references import capture_generic_mean

    h = _refs(tiny, len(PROMPTS))
    alpha, gamma = _coefficients(len(PROMPTS), tiny.n_layers)
    mu = torch.as_tensor(capture_generic_mean(tiny).values)
    assert torch.equal(mu, torch.as_tensor(capture_generic_mean(tiny, backend="serialised").values))
    options = dict(
        mode=mode, max_new_tokens=6, operator=operator, schedule="decay:0.8", mu_generic=mu
    )
    local = steered_generate(tiny, PROMPTS, h, alpha, gamma, **options)
    with payload_sizes() as sizes:
        simulated = steered_generate(
            tiny, PROMPTS, h, alpha, gamma, backend="serialised", **options
        )
    assert _ids(simulated) == _ids(local)
    assert len(sizes) == 1
    session = steer_in_session(
        tiny, PROMPTS, h, alpha, gamma, batch_size=3, backend="serialised", **options
    )
    assert _ids(session) == _ids(local)
    unsteered = steered_generate(tiny, PROMPTS, h, alpha * 0, gamma, **options)
    assert _ids(unsteered) != _ids(local)  # non-vacuous: the operator changed the tokens
    assert _ids(unsteered)[-1] == _ids(local)[-1]  # the all-zero row rode along untouched


@pytest.mark.usefixtures("strict_local")
def test_gemma2_local_simulation_equals_local(tiny_gemma2: Any) -> None:
    """The paper's architecture (tiny random Gemma-2), both modes, one multi-row request."""
    h = torch.as_tensor(capture_references(tiny_gemma2, ITEMS, backend="serialised").values)
    assert torch.equal(h, torch.as_tensor(capture_references(tiny_gemma2, ITEMS).values))
    h = h[torch.arange(len(PROMPTS)) % len(ITEMS)]
    alpha, gamma = _coefficients(len(PROMPTS), tiny_gemma2.n_layers)
    for mode in ("faithful", "cached"):
        local = steered_generate(tiny_gemma2, PROMPTS, h, alpha, gamma, mode=mode, max_new_tokens=4)
        sim = steered_generate(
            tiny_gemma2, PROMPTS, h, alpha, gamma, mode=mode, max_new_tokens=4, backend="serialised"
        )
        assert _ids(sim) == _ids(local)


def test_steering_request_carries_each_reference_once(tiny: Any) -> None:
    """Per-layer slices of h must not drag the whole (rows, layer, hidden) storage along."""
    prompts = (PROMPTS * 2)[:8]
    h = torch.randn(8, tiny.n_layers, tiny.d_model)
    alpha, gamma = torch.rand(8, tiny.n_layers), torch.rand(8, tiny.n_layers)
    with payload_sizes() as sizes:
        steered_generate(tiny, prompts, h, alpha, gamma, max_new_tokens=1, backend="serialised")
        steered_generate(tiny, prompts, h, alpha * 0, gamma, max_new_tokens=1, backend="serialised")
    steered, unsteered = sizes
    assert steered.raw - unsteered.raw < 2 * h.numel() * 4  # a view per layer: n_layers copies


@pytest.mark.usefixtures("strict_local")
@pytest.mark.parametrize("mode", ["faithful", "cached"])
def test_session_groups_chunks_in_one_request(tiny: Any, mode: str) -> None:
    h = _refs(tiny, len(PROMPTS))
    alpha, gamma = _coefficients(len(PROMPTS), tiny.n_layers)
    per_trace = steered_generate(
        tiny, PROMPTS, h, alpha, gamma, mode=mode, max_new_tokens=5, batch_size=3
    )
    with payload_sizes() as sizes:
        grouped = steer_in_session(
            tiny,
            PROMPTS,
            h,
            alpha,
            gamma,
            mode=mode,
            max_new_tokens=5,
            batch_size=3,
            backend="serialised",
        )
    assert len(sizes) == 1  # two chunks, one request
    assert _ids(grouped) == _ids(per_trace)
    assert [o.text for o in grouped] == [o.text for o in per_trace]


@pytest.mark.filterwarnings("ignore:.*was never reached")
def test_session_keeps_steps_of_an_early_eos_stop(tiny: Any) -> None:
    h = _refs(tiny, 1).repeat(2, 1, 1)
    alpha, gamma = torch.full((2, tiny.n_layers), 0.5), torch.full((2, tiny.n_layers), 0.5)
    prompts = [PROMPTS[0]] * 2  # identical rows: both hit the EOS at the same step
    free = steered_generate(tiny, prompts, h, alpha, gamma, max_new_tokens=6, stop_at_eos=False)
    stop = next(j for j in range(1, 6) if free[0].ids[j] not in free[0].ids[:j])
    # set and restored by hand: pytest's monkeypatch cannot undo a tokenizer's
    # computed special-token attribute on every pytest version
    original = tiny.tokenizer.eos_token_id
    tiny.tokenizer.eos_token_id = free[0].ids[stop]
    try:
        expected = steered_generate(tiny, prompts, h, alpha, gamma, max_new_tokens=6)
        assert all(o.stopped and len(o.ids) == stop for o in expected)
        grouped = steer_in_session(
            tiny, prompts, h, alpha, gamma, max_new_tokens=6, batch_size=1, backend="serialised"
        )
    finally:
        tiny.tokenizer.eos_token_id = original
    assert tiny.tokenizer.eos_token_id == original
    assert _ids(grouped) == _ids(expected)


@pytest.mark.usefixtures("strict_local")
def test_strict_simulation_rejects_unshipped_fsnn_code(tiny: Any) -> None:
    """Non-vacuity of the strict fixture: a trace using an unregistered fsnn name fails."""
    enc = tiny.tokenizer(["hello"], return_tensors="pt")
    layer = tiny.layer(0)
    with pytest.raises(Exception, match="fsnn"):
        with tiny.lm.trace(enc, remote="local"):
            out = nnsight.save(layer.output)
            if out is None:
                raise FsnnError("unreachable: only here to be pickled by reference")


# --------------------------------------------------------------------------- fake NDIF end to end


def test_meta_model_keeps_inputs_on_cpu(tiny_client: Any) -> None:
    assert next(tiny_client.hf_model.parameters()).device.type == "meta"
    assert tiny_client.remote and tiny_client.device == torch.device("cpu")


def test_fake_ndif_runs_meta_client_like_local(
    tiny: Any,
    tiny_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A meta-device client through nnsight's real RemoteBackend == the local model."""
    from nnsight.schema.config import CONFIG

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("NDIF_API_KEY", SECRET)
    monkeypatch.setenv("NNSIGHT_CONFIG", str(tmp_path / "nnsight.yaml"))
    before = (CONFIG.API.HOST, CONFIG.API.APIKEY)
    client = tiny_client
    server = FakeNDIF(model=tiny)
    try:
        h_local = capture_references(tiny, ITEMS)
        h_remote = call_remote(
            lambda: capture_references(client, ITEMS, backend="ndif"), host=server.url
        )
        assert torch.equal(torch.as_tensor(h_local.values), torch.as_tensor(h_remote.values))
        h = torch.as_tensor(h_local.values)[torch.arange(len(PROMPTS)) % len(ITEMS)]
        alpha, gamma = _coefficients(len(PROMPTS), tiny.n_layers)
        for mode in ("faithful", "cached"):
            local = steered_generate(tiny, PROMPTS, h, alpha, gamma, mode=mode, max_new_tokens=5)
            remote = call_remote(
                lambda mode=mode: steered_generate(
                    client, PROMPTS, h, alpha, gamma, mode=mode, max_new_tokens=5, backend="ndif"
                ),
                host=server.url,
            )
            assert _ids(remote) == _ids(local)
        grouped = call_remote(
            lambda: steer_in_session(
                client, PROMPTS, h, alpha, gamma, max_new_tokens=5, batch_size=2
            ),
            host=server.url,
        )
        assert _ids(grouped) == _ids(
            steered_generate(tiny, PROMPTS, h, alpha, gamma, max_new_tokens=5)
        )
    finally:
        server.close()
    assert server.hits["request"] == 4 and len(server.results) == 4
    assert set(server.keys) == {SECRET}  # the key was sent, as a header
    assert (CONFIG.API.HOST, CONFIG.API.APIKEY) == before  # set only for the calls
    assert not (tmp_path / "nnsight.yaml").exists()  # never written to nnsight's config file
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text


# --------------------------------------------------------------------------- errors and retries


def test_transient_handshake_failures_are_retried(
    tiny: Any, tiny_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = tiny_client
    server = FakeNDIF(model=tiny)
    server.subscribe_fail = [503, 502]
    try:
        h = capture_references(tiny, ITEMS[:1])
        got = call_remote(
            lambda: capture_references(client, ITEMS[:1], backend="ndif"),
            host=server.url,
            policy=NO_WAIT,
        )
    finally:
        server.close()
    assert torch.equal(torch.as_tensor(h.values), torch.as_tensor(got.values))
    assert server.hits["subscribe"] == 3 and server.hits["request"] == 1
    assert caplog.text.count("retry") == 2


def test_persistent_5xx_gives_one_line_after_bounded_retries(
    tiny_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    ndif: FakeNDIF,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("NDIF_API_KEY", SECRET)
    client = tiny_client
    ndif.request_fail = [(503, f"overloaded (key {SECRET})")] * 5  # a server echoing the key
    with pytest.raises(FsnnError) as info:
        call_remote(
            lambda: capture_references(client, ITEMS[:1], backend="ndif"),
            host=ndif.url,
            policy=NO_WAIT,
            what="reference capture",
        )
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"reference capture failed at {ndif.url}")
    assert "after 3 attempts" in message and "overloaded" in message
    assert SECRET not in message and "***" in message
    assert ndif.hits["request"] == 3
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text


def test_job_error_names_the_request_and_is_not_retried(tiny_client: Any, ndif: FakeNDIF) -> None:
    client = tiny_client
    ndif.job_error = (
        "CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback (most recent call last): ..."
    )
    h = torch.zeros(1, client.n_layers, client.d_model)
    ones = torch.ones(1, client.n_layers)
    with pytest.raises(FsnnError) as info:
        call_remote(
            lambda: steered_generate(
                client, PROMPTS[:1], h, ones, ones, max_new_tokens=2, backend="ndif"
            ),
            host=ndif.url,
            policy=NO_WAIT,
        )
    message = str(info.value)
    assert "(request req-0002)" in message  # session-0001 was the websocket, req-0002 the job
    assert "CUDA out of memory" in message and "\n" not in message and "attempts" not in message
    assert ndif.hits["request"] == 1


def test_bad_key_is_not_retried_and_hints_at_the_env_var(tiny_client: Any, ndif: FakeNDIF) -> None:
    client = tiny_client
    ndif.subscribe_fail = [401]
    with pytest.raises(FsnnError, match="check NDIF_API_KEY") as info:
        call_remote(
            lambda: capture_references(client, ITEMS[:1], backend="ndif"),
            host=ndif.url,
            policy=NO_WAIT,
        )
    assert "401" in str(info.value)
    assert ndif.hits["subscribe"] == 1 and "request" not in ndif.hits


def test_a_server_traceback_is_reduced_to_its_error_line(ndif: FakeNDIF) -> None:
    def fails() -> None:
        raise RuntimeError(
            'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom'
        )

    with pytest.raises(FsnnError, match=r"failed at .*: RuntimeError: ValueError: boom$"):
        call_remote(fails, host=ndif.url, policy=NO_WAIT)


def test_input_errors_pass_through_untouched(ndif: FakeNDIF) -> None:
    calls = []

    def bad() -> None:
        calls.append(1)
        raise FsnnError("references are for 3 layers")

    with pytest.raises(FsnnError, match="^references are for 3 layers$"):
        call_remote(bad, host=ndif.url, policy=NO_WAIT)
    assert calls == [1]


def test_transient_classification() -> None:
    import httpx
    import websocket
    from nnsight.intervention.backends.remote import RemoteError

    request = httpx.Request("POST", "http://x/request")

    def status(code: int) -> Exception:
        cause = httpx.HTTPStatusError(
            "e", request=request, response=httpx.Response(code, request=request)
        )
        try:
            raise RemoteError("Failed to send request: e") from cause
        except RemoteError as exc:
            return exc

    assert is_transient(status(503)) and is_transient(status(429)) and is_transient(status(500))
    assert not is_transient(status(401)) and not is_transient(status(422))
    assert is_transient(websocket.WebSocketBadStatusException("h", 502))
    assert not is_transient(websocket.WebSocketBadStatusException("h", 403))
    assert is_transient(ConnectionRefusedError()) and is_transient(httpx.ConnectError("x"))
    assert not is_transient(RemoteError("RuntimeError: shape mismatch"))  # the job itself failed
    assert not is_transient(ValueError("bad"))


# --------------------------------------------------------------------------- pre-flight


def _deployment(
    repo: str, state: str = "RUNNING", level: str = "HOT", revision: str = "main"
) -> dict:
    return {
        "repo_id": repo,
        "revision": revision,
        "deployment_level": level,
        "application_state": state,
        "task": "text-generation",
        "model_key": f"nnsight.modeling.transformers.TransformersModel:{repo}",
    }


def test_preflight_accepts_a_running_model(ndif: FakeNDIF) -> None:
    ndif.status = {
        "deployments": {
            "a": _deployment("google/gemma-2-2b-it"),
            "b": _deployment("meta-llama/Llama-3.1-8B"),
        }
    }
    entry = preflight("Google/Gemma-2-2b-it", host=ndif.url, policy=NO_WAIT)
    assert entry["repo_id"] == "google/gemma-2-2b-it" and entry["state"] == "RUNNING"


def test_preflight_lists_running_models_when_missing(ndif: FakeNDIF) -> None:
    ndif.status = {
        "deployments": {
            "a": _deployment("meta-llama/Llama-3.1-8B"),
            "b": _deployment("openai-community/gpt2"),
            "c": _deployment("EleutherAI/pythia-70m", state="UNHEALTHY"),
            "d": _deployment("Qwen/Qwen2.5-7B", level="COLD"),
        }
    }
    with pytest.raises(FsnnError) as info:
        preflight("google/gemma-2-2b-it", host=ndif.url, policy=NO_WAIT)
    message = str(info.value)
    assert message == (
        f"model google/gemma-2-2b-it is not running on NDIF at {ndif.url}; "
        "running models: meta-llama/Llama-3.1-8B, openai-community/gpt2"
    )


def test_preflight_says_when_the_model_is_deployed_but_not_running(ndif: FakeNDIF) -> None:
    ndif.status = {"deployments": {"a": _deployment("google/gemma-2-2b-it", state="DEPLOYING")}}
    with pytest.raises(FsnnError, match=r"on NDIF at .* but not running \(HOT/DEPLOYING\)"):
        preflight("google/gemma-2-2b-it", host=ndif.url, policy=NO_WAIT)


def test_preflight_retries_a_5xx_then_fails_in_one_line(ndif: FakeNDIF) -> None:
    ndif.status_code = 503
    with pytest.raises(FsnnError) as info:
        preflight("google/gemma-2-2b-it", host=ndif.url, policy=NO_WAIT)
    message = str(info.value)
    assert message.startswith(
        f"NDIF status check failed at {ndif.url} after 3 attempts: HTTPStatusError"
    )
    assert "503" in message and "\n" not in message
    assert ndif.hits["status"] == 3


def test_preflight_unreachable_host() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        FsnnError,
        match=r"NDIF status check failed at http://127.0.0.1:\d+ after 2 attempts: ConnectError",
    ):
        preflight(
            "x/y", host=f"http://127.0.0.1:{port}", policy=RetryPolicy(attempts=2, backoff_base=0)
        )


# --------------------------------------------------------------------------- config


def test_api_key_and_host_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnsight.schema.config import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    assert api_key() is None
    monkeypatch.setenv("NDIF_API_KEY", f"  {SECRET}\n")
    assert api_key() == SECRET
    assert ndif_host() == CONFIG.API.HOST.rstrip("/")
    monkeypatch.setenv("NDIF_HOST", "http://127.0.0.1:9/")
    assert ndif_host() == "http://127.0.0.1:9"
    assert ndif_host("https://example.invalid") == "https://example.invalid"
    with pytest.raises(FsnnError, match="http"):
        ndif_host("ftp://nope")
    before = (CONFIG.API.HOST, CONFIG.API.APIKEY)
    with ndif_config("http://127.0.0.1:9") as url:
        assert url == "http://127.0.0.1:9"
        assert (CONFIG.API.HOST, CONFIG.API.APIKEY) == (url, SECRET)
    assert (CONFIG.API.HOST, CONFIG.API.APIKEY) == before


def test_retry_policy_validation() -> None:
    with pytest.raises(FsnnError):
        RetryPolicy(attempts=0)
    policy = RetryPolicy(backoff_base=2.0, backoff_max=5.0)
    assert 1.0 <= policy.delay(0) <= 2.0 and policy.delay(10) <= 5.0


def test_result_size_counts_saved_tensors() -> None:
    size = result_size({"picked": [torch.zeros(8, dtype=torch.long) for _ in range(100)]})
    assert size.raw > 8 * 8 * 100 and size.compressed < size.raw


# --------------------------------------------------------------------------- real SmolLM2


@pytest.fixture(scope="module")
def smol_h(smol: Any) -> torch.Tensor:
    """Real references of two prompts, (2, layer, hidden)."""
    return torch.as_tensor(capture_references(smol, ITEMS[:2]).values)


@pytest.mark.real
@pytest.mark.usefixtures("strict_local")
def test_smollm2_local_simulation_equals_local(smol: Any, smol_h: torch.Tensor) -> None:
    sim_h = capture_references(smol, ITEMS[:2], backend="serialised")
    assert torch.equal(smol_h, torch.as_tensor(sim_h.values))
    alpha, gamma = _coefficients(2, smol.n_layers)
    alpha[-1] = 0.5  # both rows steered, with different coefficients
    for mode in ("faithful", "cached"):
        local = steered_generate(
            smol, PROMPTS[:2], smol_h, alpha, gamma, mode=mode, max_new_tokens=3
        )
        sim = steered_generate(
            smol,
            PROMPTS[:2],
            smol_h,
            alpha,
            gamma,
            mode=mode,
            max_new_tokens=3,
            backend="serialised",
        )
        assert _ids(sim) == _ids(local)


@pytest.mark.real
def test_smollm2_meta_client_through_fake_ndif(
    smol: Any, smol_client: Any, smol_h: torch.Tensor
) -> None:
    alpha, gamma = _coefficients(2, smol.n_layers)
    alpha[-1] = 0.5
    server = FakeNDIF(model=smol)
    try:
        local = steered_generate(
            smol, PROMPTS[:2], smol_h, alpha, gamma, mode="cached", max_new_tokens=3
        )
        remote = call_remote(
            lambda: steered_generate(
                smol_client,
                PROMPTS[:2],
                smol_h,
                alpha,
                gamma,
                mode="cached",
                max_new_tokens=3,
                backend="ndif",
            ),
            host=server.url,
        )
    finally:
        server.close()
    assert _ids(remote) == _ids(local)
