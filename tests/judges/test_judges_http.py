"""The OpenAI-compatible HTTP judge against a local chat-completions server.

The server runs on 127.0.0.1 (ephemeral port) in a thread and plays a script of
replies: normal answers, 500s, 429 with Retry-After, slow replies, malformed JSON,
answers without a grade. Every failure must come back as a missing grade with its
reason, after a bounded number of attempts (counted on the server), and the API key
must appear in no output, cache, log or dataset.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fsnn.errors import FsnnError
from fsnn.judges import JudgeCache, JudgeConfig, make_judge
from fsnn.judges.http import HttpJudge, _retry_after

KEY_ENV = "FSNN_TEST_JUDGE_KEY"
FAKE_KEY = "sk-fake-9f3c1e-DO-NOT-LEAK"
ITEM = ("Who received the IEEE Frank Rosenblatt Award in 2010?", "Michio Sugeno", "Geoffrey Hinton")


class ChatServer:
    """A scripted chat-completions server; the last script entry repeats forever.

    A script entry is a dict with optional keys ``status`` (200), ``content`` (answer
    text), ``body`` (raw bytes instead of a JSON reply), ``headers`` and ``delay`` (s).
    """

    def __init__(self, script: list[dict[str, Any]] | None = None) -> None:
        self.script = script or [{"content": "Score: 4\nHallucination: N\nNotes: Fine."}]
        self.hits = 0
        self.inflight = 0
        self.max_inflight = 0
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    entry = server.script[min(server.hits, len(server.script) - 1)]
                    server.hits += 1
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                    server.requests.append({"path": self.path, "json": payload})
                    server.auth.append(self.headers.get("Authorization", ""))
                try:
                    time.sleep(entry.get("delay", 0.0))
                    body = entry.get("body")
                    if body is None:
                        reply = {
                            "id": "x",
                            "object": "chat.completion",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {
                                        "role": "assistant",
                                        "content": entry.get("content", ""),
                                    },
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                        body = json.dumps(reply).encode()
                    self.send_response(entry.get("status", 200))
                    for k, v in entry.get("headers", {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out
                    pass
                finally:
                    with server._lock:
                        server.inflight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    servers: list[ChatServer] = []

    def factory(script=None) -> ChatServer:
        servers.append(ChatServer(script))
        return servers[-1]

    yield factory
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def fake_release(folder: Path, n: int = 12) -> Path:
    """A small release in the authors' column layout (all files the one reader checks;
    grader scores cycle 1-5)."""
    import csv

    def write(name, header, rows):
        with open(folder / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)

    folder.mkdir(parents=True)
    qs = [f"Question {i}?" for i in range(n)]
    gts = [f"answer {i}" for i in range(n)]
    texts = [f"Question {i}?\nsome text" for i in range(n)]
    write(
        "incorrect.csv",
        ["prompt", "response", "ground_truth", "grade_string"],
        [[q, t, g, "INCORRECT"] for q, t, g in zip(qs, texts, gts, strict=True)],
    )
    tail = ["generated_text", "prompt", "ground_truth", "explanation", "score"]
    write(
        "per_prompt_optuna_summary_full.csv",
        ["prompt_idx", "alpha", "gamma", "token_overlap", "perplexity", "combined_score", *tail],
        [[i, 0.5, 0.5, 0.0, 10.0, -0.03, texts[i], qs[i], gts[i], "", i % 5 + 1] for i in range(n)],
    )
    seg_cols = [f"{p}_{s}" for p in ("alpha", "gamma") for s in ("early", "middle", "late")]
    write(
        "per_prompt_optuna_summary_segmented.csv",
        ["prompt_idx", *seg_cols, "token_overlap", "perplexity", "combined_score", *tail],
        [
            [
                i,
                0.1,
                0.2,
                0.3,
                0.4,
                0.5,
                0.6,
                0.0,
                10.0,
                -0.03,
                texts[i],
                qs[i],
                gts[i],
                "",
                i % 5 + 1,
            ]
            for i in range(n)
        ],
    )
    for method in ("baseline", "full", "segmented"):
        write(
            f"mistral_grader_results_{method}.csv",
            ["prompt_id", "question", "target", "predicted", "score", "notes"],
            [[i, qs[i], gts[i], texts[i], i % 5 + 1, "n"] for i in range(n)],
        )
    return folder


def judge_for(server: ChatServer, *, cache=None, **kw) -> HttpJudge:
    settings = dict(
        backend="http",
        model="test-model",
        base_url=server.url,
        api_key_env=KEY_ENV,
        timeout=2.0,
        max_retries=2,
        backoff_base=0.01,
        backoff_max=0.05,
    )
    settings.update(kw)
    judge = make_judge(JudgeConfig(**settings), cache=cache)
    assert isinstance(judge, HttpJudge)
    return judge


def test_normal_answer(server_factory):
    server = server_factory()
    judge = judge_for(server)
    (grade,) = judge.grade_quality([ITEM])
    assert grade.value == 4 and grade.hallucination is False and grade.notes == "Fine."
    assert grade.error is None and not grade.cached
    assert grade.judge_id == f"http:test-model@{server.url}"
    assert server.hits == 1
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["json"]["model"] == "test-model" and req["json"]["temperature"] == 0.0
    assert req["json"]["messages"][0]["role"] == "user"
    assert "Michio Sugeno" in req["json"]["messages"][0]["content"]
    assert server.auth == [f"Bearer {FAKE_KEY}"]  # the key is sent, and only there


def test_simpleqa_letters(server_factory):
    server = server_factory([{"content": "B"}])
    (grade,) = judge_for(server).grade_simpleqa([ITEM])
    assert grade.value == "INCORRECT" and not grade.defaulted


def test_500_then_success(server_factory):
    server = server_factory([{"status": 500, "body": b"oops"}, {"content": "Score: 5"}])
    (grade,) = judge_for(server).grade_quality([ITEM])
    assert grade.value == 5 and server.hits == 2


def test_429_honours_retry_after(server_factory):
    server = server_factory([{"status": 429, "headers": {"Retry-After": "0.3"}}, {"content": "A"}])
    # Without Retry-After the backoff would sleep 2.5-5 s; the header asks for 0.3 s.
    judge = judge_for(server, backoff_base=5.0, backoff_max=5.0)
    start = time.monotonic()
    (grade,) = judge.grade_simpleqa([ITEM])
    elapsed = time.monotonic() - start
    assert grade.value == "CORRECT" and server.hits == 2
    assert 0.3 <= elapsed < 2.0


def test_retry_after_forms():
    assert _retry_after("2") == 2.0
    assert _retry_after("0.25") == 0.25
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


def test_timeout_is_missing_after_bounded_retries(server_factory):
    server = server_factory([{"delay": 1.5, "content": "Score: 3"}])
    judge = judge_for(server, timeout=0.2, max_retries=1)
    (grade,) = judge.grade_quality([ITEM])
    assert grade.value is None and grade.missing
    assert "timeout" in grade.error and "2 attempts" in grade.error
    assert server.hits == 2 and judge.requests == 2


def test_malformed_json_bounded(server_factory):
    server = server_factory([{"body": b"{not json"}])
    judge = judge_for(server, max_retries=2)
    grades = judge.grade_quality([ITEM])
    assert grades[0].value is None and "malformed response" in grades[0].error
    assert server.hits == 3


def test_wrong_shape_is_malformed(server_factory):
    server = server_factory([{"body": b'{"choices": []}'}])
    (grade,) = judge_for(server, max_retries=0).grade_simpleqa([ITEM])
    assert grade.value is None and "malformed" in grade.error and server.hits == 1


def test_answer_without_grade(server_factory):
    server = server_factory([{"content": "I would rather not say."}])
    judge = judge_for(server)
    (q,) = judge.grade_quality([ITEM])
    assert (
        q.value is None and q.error.startswith("unparseable") and q.raw == "I would rather not say."
    )
    (s,) = judge.grade_simpleqa([ITEM])
    assert s.value == "NOT_ATTEMPTED" and s.defaulted  # the rubric's default, C
    assert server.hits == 2  # unparseable answers are answers: not retried


def test_client_error_not_retried(server_factory):
    server = server_factory([{"status": 401, "body": b'{"message": "Unauthorized"}'}])
    (grade,) = judge_for(server).grade_quality([ITEM])
    assert grade.value is None and grade.error == "HTTP 401 (not retried)" and server.hits == 1


def test_connection_refused():
    config = JudgeConfig(
        backend="http",
        model="m",
        base_url="http://127.0.0.1:9/v1",
        max_retries=1,
        backoff_base=0.01,
        timeout=1.0,
    )
    (grade,) = make_judge(config, cache=None).grade_quality([ITEM])
    assert grade.value is None and "connection error" in grade.error


def test_bounded_concurrency(server_factory):
    server = server_factory([{"delay": 0.4, "content": "Score: 2"}])
    judge = judge_for(server, concurrency=3)
    items = [(f"q{i}", "t", "p") for i in range(9)]
    grades = judge.grade_quality(items)
    assert [g.value for g in grades] == [2] * 9
    assert server.hits == 9 and 1 < server.max_inflight <= 3


def test_duplicates_asked_once(server_factory):
    server = server_factory()
    grades = judge_for(server).grade_quality([ITEM, ITEM, ITEM])
    assert [g.value for g in grades] == [4, 4, 4] and server.hits == 1


def test_cache_hit_and_failures_not_cached(server_factory, tmp_path):
    server = server_factory(
        [{"status": 503}, {"status": 503}, {"status": 503}, {"content": "Score: 3"}]
    )
    cache = JudgeCache(tmp_path / "judges.sqlite")
    judge = judge_for(server, cache=cache)
    (first,) = judge.grade_quality([ITEM])
    assert first.value is None and server.hits == 3 and len(cache) == 0
    (second,) = judge.grade_quality([ITEM])  # the failure was not cached: asked again
    assert second.value == 3 and not second.cached and server.hits == 4
    hits_before = cache.hits
    (third,) = judge_for(server, cache=JudgeCache(tmp_path / "judges.sqlite")).grade_quality([ITEM])
    assert third.value == 3 and third.cached and server.hits == 4
    assert cache.hits == hits_before  # the second JudgeCache object counted that hit
    other = judge_for(server, cache=cache, model="another-model")
    other.grade_quality([ITEM])
    assert server.hits == 5  # the key includes the judge id


def test_missing_key_env_is_a_clear_error(server_factory, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    server = server_factory()
    with pytest.raises(FsnnError, match=KEY_ENV):
        judge_for(server).grade_quality([ITEM])
    assert server.hits == 0


def test_key_value_is_rejected_as_env_name():
    with pytest.raises(FsnnError) as err:
        JudgeConfig(backend="http", model="m", base_url="http://x", api_key_env=FAKE_KEY)
    assert FAKE_KEY not in str(err.value)


def test_official_template_option(monkeypatch, server_factory):
    config = dict(simpleqa_template="simple-evals")
    server = server_factory([{"content": "A"}])
    with pytest.raises(FsnnError, match="simple-evals"):
        judge_for(server, **config).grade_simpleqa([ITEM])
    package = types.ModuleType("simple_evals")
    module = types.ModuleType("simple_evals.simpleqa_eval")
    module.GRADER_TEMPLATE = "OFFICIAL Q={question} T={target} P={predicted_answer}"
    monkeypatch.setitem(sys.modules, "simple_evals", package)
    monkeypatch.setitem(sys.modules, "simple_evals.simpleqa_eval", module)
    judge = judge_for(server, **config)
    (grade,) = judge.grade_simpleqa([ITEM])
    assert grade.value == "CORRECT" and judge.id.endswith(";template=simple-evals")
    sent = server.requests[-1]["json"]["messages"][0]["content"]
    assert sent == f"OFFICIAL Q={ITEM[0]} T={ITEM[1]} P={ITEM[2]}"


def test_key_never_leaks(server_factory, tmp_path, caplog, capsys, monkeypatch):
    """Every output, cache, log, repr and dataset is free of the API key."""
    from fsnn.cli import main

    release = str(fake_release(tmp_path / "release"))
    caplog.set_level(logging.DEBUG)
    server = server_factory(
        [
            {"status": 500},
            {"status": 429, "headers": {"Retry-After": "0"}},
            {"delay": 0.6},
            {"body": b"{bad"},
            {"status": 400, "body": json.dumps({"echo": f"Bearer {FAKE_KEY}"}).encode()},
            {"content": "Score: 2\nHallucination: Y\nNotes: wrong name."},
        ]
    )
    cache_path = tmp_path / "cache" / "judges.sqlite"
    judge = judge_for(server, cache=JudgeCache(cache_path), timeout=0.3, concurrency=1)
    grades = (
        judge.grade_quality([ITEM]) + judge.grade_quality([ITEM]) + judge.grade_simpleqa([ITEM])
    )
    monkeypatch.setenv("FSNN_CACHE_DIR", str(tmp_path / "fsnn-cache"))
    status = main(
        [
            "judge-agreement",
            "--judge",
            f"http:test-model@{server.url}",
            "--api-key-env",
            KEY_ENV,
            "--release-dir",
            release,
            "--limit",
            "20",
            "--out",
            str(tmp_path / "out" / "agree"),
            "--cache",
            str(cache_path),
            "--no-progress",
        ]
    )
    assert status == 0
    report = json.loads((tmp_path / "out" / "agree.json").read_text())
    assert report["n_rows_graded"] == 20 and report["judge_config"]["api_key_env"] == KEY_ENV
    texts = [caplog.text, *capsys.readouterr(), repr(judge), repr(judge.config), repr(grades)]
    texts += [json.dumps(judge.config.to_dict())]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    assert len(texts) > 6 and (tmp_path / "out" / "agree.nc").is_file()
    for text in texts:
        assert FAKE_KEY not in text
        assert "9f3c1e" not in text
    assert any(g.error for g in grades)  # the failures really happened
    assert all(a == f"Bearer {FAKE_KEY}" for a in server.auth)


def test_no_key_for_keyless_servers(server_factory, tmp_path):
    server = server_factory()
    judge = judge_for(server, api_key_env=None)
    assert judge.grade_quality([ITEM])[0].value == 4
    assert server.auth == [""]


def test_judge_id_and_spec():
    cfg = JudgeConfig.from_spec("http:mistral-small-latest@https://api.mistral.ai/v1/")
    assert cfg.judge_id == "http:mistral-small-latest@https://api.mistral.ai/v1"
    assert JudgeConfig.from_spec("mistral").api_key_env == "MISTRAL_API_KEY"
    assert JudgeConfig.from_spec("mistral").judge_id == cfg.judge_id
    assert JudgeConfig.from_spec("local:qwen2.5-coder-1.5b").judge_id == "local:qwen2.5-coder-1.5b"
    hot = JudgeConfig.from_spec("mistral", temperature=0.7)
    assert hot.judge_id.endswith(";temperature=0.7")
    with pytest.raises(FsnnError):
        JudgeConfig.from_spec("gpt-4")
    with pytest.raises(FsnnError):
        JudgeConfig(backend="http", model="m")
    with pytest.raises(TypeError):
        JudgeConfig("http", "m")  # keyword-only
    with pytest.raises(AttributeError):
        cfg.model = "x"  # frozen


def test_cache_file_holds_no_prompt_or_header(tmp_path, server_factory):
    server = server_factory()
    cache = JudgeCache(tmp_path / "c.sqlite")
    judge_for(server, cache=cache).grade_quality([ITEM])
    cache.close()
    blob = Path(tmp_path / "c.sqlite").read_bytes()
    assert b"Score: 4" in blob and FAKE_KEY.encode() not in blob and b"Authorization" not in blob
