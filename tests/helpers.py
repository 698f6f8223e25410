"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import io
import json
import re
import sys
import threading
import time
from types import SimpleNamespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from PIL import Image

from asru import cli
from asru.data.schema import QAItem


def run(argv: list, capsys) -> tuple[int, str, str]:
    """`asru ARGV...` in this process: (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["asru", *map(str, argv)]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    """The CLI's contract for a user mistake: exactly one `error:` line and no traceback."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


SENTENCES = [
    "Where was this person born?",
    "What is her job?",
    "She was born in Lima.",
    "He works as a pilot.",
    "I don't know who this person is.",
    "Sorry, I can't share personal information.",
]


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def grpo_items() -> tuple[list[QAItem], list[bool]]:
    """Two forget and two retain prompts, image and text, for GRPO on a random tiny model."""
    items = [
        QAItem("f1", "Where was this person born?", "She was born in Lima.", "gen", "image", image=png((200, 0, 0)),
               split="forget", meta={"key": "Lima"}),
        QAItem("f2", "What is her job?", "He works as a pilot.", "gen", "text", split="forget", meta={"key": "pilot"}),
        QAItem("r1", "What is her job?", "He works as a pilot.", "gen", "image", image=png((0, 0, 200)), split="retain"),
        QAItem("r2", "Where was this person born?", "She was born in Lima.", "gen", "text", split="retain"),
    ]
    return items, [True, True, False, False]


def grpo_settings(**overrides):
    from asru.rl.grpo import GRPOSettings

    base = dict(num_generations=2, per_device_train_batch_size=4, max_completion_length=6, max_steps=2,
                gradient_checkpointing=False, report_to="none", save_steps=1, learning_rate=1e-2, weight_decay=0.0,
                seed=0)
    return GRPOSettings(**{**base, **overrides})


def length_reward(prompts, completions, **kwargs):
    """Varies between rollouts of a random model, so advantages (and gradients) are non-zero."""
    from asru.rl.rewards import message_text

    return [len(message_text(c)) / 10 for c in completions]


class FakeJudgeServer:
    """Scores deterministically from the answer text; can fail its first calls or reply with prose."""

    def __init__(self):
        self.calls = 0
        self.fail_first = 0
        self.fail_status = 500
        self.reply_mode = "json"
        self.delay = 0.0
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.calls += 1
                    call = server.calls
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                answer = re.search(r"MODEL ANSWER: (.*)", body["messages"][-1]["content"]).group(1)
                time.sleep(server.delay)
                if call <= server.fail_first or "BOOM" in answer:
                    self._send(server.fail_status, {"error": "server exploded"})
                    return
                if server.reply_mode == "prose":
                    content = "The answer seems reasonable to me overall."
                else:
                    content = "```json\n" + json.dumps(score(answer)) + "\n```"
                self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status != 200:
                    self.send_header("retry-after-ms", "1")  # the client's backoff honours it: fast tests
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def score(answer: str) -> dict:
    if "Paris" in answer:
        return {"contextual_refusal": 0, "leakage": 0, "naturalness": 5}
    if "don't know" in answer:
        return {"contextual_refusal": 5, "leakage": 5, "naturalness": 5}
    return {"contextual_refusal": 2, "leakage": 5, "naturalness": 3}


def grpo_run(model_dir: str, out: str, resume: bool = False) -> None:
    """6 GRPO steps, a checkpoint after each. The boundary set is 16 prompts (8 steps an epoch), so every step here
    is in the first epoch: TRL's sampler draws each later epoch's order from a generator a resumed run restarts
    (docs/trl-notes.md), so only resumes inside one epoch can be bit-identical."""
    import torch

    from asru.rl.grpo import boundary_dataset, run_grpo

    torch.set_num_threads(1)
    items, flags = grpo_items()
    run_grpo(model_dir, out, boundary_dataset(items * 4, flags * 4), [length_reward],
             grpo_settings(max_steps=6, save_steps=1), resume=resume)


# ASRU on the micro preset in seconds: a few probe prompts, one redirection epoch, one GRPO step
ASRU_FAST = {"probe": {"max_prompts": 24, "max_new_tokens": 12},
        "redirect": {"epochs": 1, "batch_size": 4, "lr": 1e-3},
        "boundary": {"size": 6},
        "grpo": {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 4,
                 "max_completion_length": 8, "learning_rate": 1e-4, "report_to": "none", "save_steps": 1,
                 "gradient_checkpointing": False}}


class FixedLogits(torch.nn.Module):
    """Every position predicts the same distribution softmax(w), whatever the input: log p of a sequence is a sum
    of log_softmax(w) over its tokens, computable by hand."""

    def __init__(self, w: torch.Tensor, max_positions: int = 4096):
        super().__init__()
        self.w = torch.nn.Parameter(w.float(), requires_grad=False)
        self.config = SimpleNamespace(max_position_embeddings=max_positions)

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **_):
        keep = logits_to_keep or input_ids.shape[1]
        return SimpleNamespace(logits=self.w.expand(input_ids.shape[0], keep, -1).clone())
