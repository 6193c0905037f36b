"""REST latency and throughput: `ct-pipeline serve` answering one ~25-sentence answer, against the pyfunc in-process.

    PYTHONPATH=. python bench/serve_latency.py [--model models:/ct-sentence-labeller-quickstart@challenger]
                                               [-c configs/quickstart.yaml] [--requests 100] [--clients 4]
                                               [--threads 1]

Starts the real server (`python -m pipeline serve`, as a user would) on a free 127.0.0.1 port and posts one
constructed answer of about 25 sentences as a document (`{"id", "text"}`), end to end: JSON encoding, HTTP on
loopback, MLflow's parsing and schema check, segmentation, the model, JSON rows back.

- `in-process`: the same document through `mlflow.pyfunc.load_model(...).predict` in this process: the
  baseline the server's overhead is measured against (same model version, same machine, same run);
- `served, 1 client`: `--requests` sequential requests on one keep-alive connection, p50/p95, each right after
  one in-process call, so both see the same background load;
- `served, N clients`: N threads, each with its own connection, `--requests` requests in all (a bounded loop),
  sentences labelled per second of wall time.

The machine may be shared: ratios against the in-process baseline are the stable figures.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pandas as pd
import requests
from machine import machine_line  # bench/machine.py, beside this script

from pipeline.config import load_config
from pipeline.registry import pin_model_uri
from pipeline.tracking import configure_tracking

# Constructed sentences (written for this bench, not taken from any source).
OPENINGS = [
    "Regeringen tillför {n} miljoner kronor till {topic}.",
    "En särskild utredare ska föreslå förändringar som rör {topic}.",
    "Anhöriga kan få stöd och vägledning i frågor om {topic}.",
    "Myndigheten har fått i uppdrag att samordna {topic}.",
    "Regeringen följer noga utvecklingen när det gäller {topic}.",
]
TOPICS = [
    "det förebyggande arbetet mot radikalisering bland unga",
    "Säkerhetspolisens underrättelsearbete mot terrorister",
    "skyddet av offentliga platser mot attacker",
    "kontrollen av sprängämnesprekursorer och vapen",
    "kommunernas arbete med avhoppare från våldsbejakande miljöer",
]


def constructed_answer(sentences: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    body = [rng.choice(OPENINGS).format(n=rng.randint(5, 900), topic=rng.choice(TOPICS)) for _ in range(sentences - 1)]
    return " ".join(["Jag tackar för frågan.", *body])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(config: Path, model: str, port: int, log: Path, threads: int | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pipeline", "serve", "-c", str(config), "--model", model, "--port", str(port)]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve exited:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return process
        except requests.RequestException:
            time.sleep(0.5)
    stop(process)
    raise SystemExit("serve did not answer /ping within 300 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", type=Path, default=Path("configs/quickstart.yaml"))
    parser.add_argument("--model", default="models:/ct-sentence-labeller-quickstart@challenger")
    parser.add_argument("--sentences", type=int, default=25)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads, here and in the server (OMP_NUM_THREADS)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    configure_tracking(load_config(args.config).tracking)
    served = pin_model_uri(args.model)
    document = {"id": "bench-1", "text": constructed_answer(args.sentences)}
    frame = pd.DataFrame([document])
    model = mlflow.pyfunc.load_model(served.pinned)
    n_sentences = len(model.predict(frame))
    print(f"# {machine_line()}; torch threads: {args.threads or 'default'}")
    chars = len(document["text"])
    print(f"# {args.model} (version {served.version}); one answer: {n_sentences} sentences, {chars} chars")

    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    process = start_server(args.config, args.model, port, Path(f"/tmp/serve-bench-{port}.log"), args.threads)
    payload = {"dataframe_records": [document]}
    try:
        with requests.Session() as session:
            for _ in range(args.warmup):
                model.predict(frame)
                session.post(url, json=payload, timeout=60).raise_for_status()
            local, sequential = [], []
            for _ in range(args.requests):  # interleaved, so both see the same background load
                start = time.perf_counter()
                model.predict(frame)
                local.append(time.perf_counter() - start)
                start = time.perf_counter()
                response = session.post(url, json=payload, timeout=60)
                sequential.append(time.perf_counter() - start)
                response.raise_for_status()
                assert len(response.json()["predictions"]) == n_sentences

        def client(count: int) -> int:
            labelled = 0
            with requests.Session() as session:
                for _ in range(count):
                    response = session.post(url, json=payload, timeout=120)
                    response.raise_for_status()
                    labelled += len(response.json()["predictions"])
            return labelled

        shares = [args.requests // args.clients + (i < args.requests % args.clients) for i in range(args.clients)]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            labelled = sum(pool.map(client, shares))
        wall = time.perf_counter() - start
    finally:
        stop(process)

    local_p50, served_p50 = statistics.median(local), statistics.median(sequential)
    local_p95, served_p95 = percentile(local, 95), percentile(sequential, 95)
    one_client_rate = n_sentences / served_p50
    print("| | p50 ms | p95 ms | sentences/s | vs in-process |")
    print("|---|---|---|---|---|")
    print(
        f"| in-process `pyfunc.predict` (baseline) | {local_p50 * 1e3:.1f} | {local_p95 * 1e3:.1f} "
        f"| {n_sentences / local_p50:.0f} | 1.00 |"
    )
    print(
        f"| served, 1 client, {args.requests} requests | {served_p50 * 1e3:.1f} | {served_p95 * 1e3:.1f} "
        f"| {one_client_rate:.0f} | {served_p50 / local_p50:.2f}× latency |"
    )
    print(
        f"| served, {args.clients} clients, {args.requests} requests | | | {labelled / wall:.0f} "
        f"| {(labelled / wall) / (n_sentences / local_p50):.2f}× throughput |"
    )


if __name__ == "__main__":
    main()
