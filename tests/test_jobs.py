"""Job submission on a real local cluster: `ray start --head` on 127.0.0.1 with token auth (Ray 2.60), then
`ray job submit --working-dir . -- python jobs/pipeline.py configs/tiny.yaml ...`, wait for SUCCEEDED, check the
outputs, stop the cluster. Also: every jobs/*.py is exercised (its --help, or a run elsewhere in the suite)."""
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("raycluster")
    # every port of this second cluster is a free one: the defaults (agent 52365, client 10001, ...) are already
    # bound by the test session's own local Ray, and an agent that cannot bind leaves "No available agent" forever
    ports: set[int] = set()
    while len(ports) < 7:
        ports.add(_free_port())
    gcs, dash, agent, agent_grpc, metrics, runtime_env, client = sorted(ports)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "HF_HUB_OFFLINE": "1",
           "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "300",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # `python` in a job = this venv's
    env.pop("RAY_ADDRESS", None)
    log = open(tmp / "head.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
         f"--runtime-env-agent-port={runtime_env}", f"--ray-client-server-port={client}",
         "--num-cpus=4", "--include-dashboard=true",
         f"--temp-dir={tmp}"], env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 360
    while time.time() < deadline:
        r = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env, capture_output=True,
                           text=True)
        if r.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail(f"local Ray head did not come up: {(tmp / 'head.log').read_text()[-3000:]}")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_ray_job_submit_pipeline(cluster, tmp_path):
    address, env = cluster
    out = tmp_path / "runs"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
           "python", "jobs/pipeline.py", "configs/tiny.yaml", f"run.out_dir={out}", "attack.rounds=0",
           "synth.max_seeds=4", "synth.strategies=[paraphrase]"]
    deadline = time.time() + 600
    while True:  # the head's job agent comes up a while after its HTTP server (slowly on 2 busy cores)
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if "No available agent" not in r.stdout + r.stderr or time.time() > deadline:
            break
        time.sleep(5)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out_text = r.stdout + r.stderr
    job_id = re.search(r"raysubmit_\w+", out_text).group(0)
    st = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, job_id], env=env,
                        capture_output=True, text=True, timeout=120)
    assert "succeeded" in (st.stdout + st.stderr).lower(), st.stdout + st.stderr
    run = out / "tiny"
    assert (run / "report.json").exists() and (run / "classifier" / "round-0" / "guardray.json").exists()
    assert (run / "synth" / "v0" / "curation.json").exists()

    # the attack job on the checkpoint the pipeline job wrote: PPO updates + fresh attacks, report written
    ckpt = run / "classifier" / "round-0"
    r = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
                        "python", "jobs/attack.py", "configs/tiny.yaml", str(ckpt), f"run.out_dir={out}",
                        "run.name=tiny-attack"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((out / "tiny-attack" / "attack" / "attack.json").read_text())
    assert rep["classifier"] == str(ckpt) and 0.0 <= rep["asr"] <= 1.0 and len(rep["ppo"]) == 1
    assert rep["ppo"][0]["version"] == 1  # the learner took one PPO step


def test_job_submit_without_token_is_refused(cluster):
    address, env = cluster
    bad = {**env, "RAY_AUTH_TOKEN": "not-the-token"}
    r = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=bad, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0


@pytest.mark.parametrize("job", sorted(p.name for p in (ROOT / "jobs").glob("*.py")))
def test_every_job_entry_point_has_help_and_submit_line(job):
    text = (ROOT / "jobs" / job).read_text()
    assert "ray job submit" in text and "RAY_AUTH_MODE" in text, f"{job}: docstring lacks the submit line"
    r = subprocess.run([sys.executable, f"jobs/{job}", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    # --help prints the usage (argparse, exit 0) or the docstring with the submit line (exit 0 or 2): never a trace
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "usage" in r.stdout.lower() or "ray job submit" in r.stdout
