"""Remote mode: copy the exported models and ``runner.py`` to a device over SSH, run it there, bring JSON back.

Why system ``ssh``/``scp``: they honour the user's ``~/.ssh/config`` (host aliases, keys, jump
hosts) and check host keys the way it says; we never turn that off. Commands are argument lists
(no local shell); the one remote command line is built with ``shlex.quote`` from names we chose
(the temp dir, ``runner.py``, ``job.json``) plus the --remote-python path, never from model paths.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runner as runner_module
from .errors import HostUnreachableError, InputShapeError, RemoteError, RemotePythonError, RemoteRuntimeError

PROBE_MODULES = sorted({need for b in runner_module.BACKENDS.values() for need in b.needs if need != "trtexec"}
                       | {"numpy"})
PROBE = ("import importlib.util, json, os, platform, shutil\nout = {'python': platform.python_version()}\n"
         "for m in %r:\n"
         "    out[m] = 'found' if importlib.util.find_spec(m) is not None else None\n"
         "out['trtexec'] = shutil.which('trtexec') or next((p for p in %r if os.access(p, os.X_OK)), None)\n"
         "print(json.dumps(out))" % (PROBE_MODULES, runner_module.TRTEXEC_PLACES))  # find_spec: torch takes seconds
CUDA_PROBE = ("import json, torch\nprint(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
              "'available': torch.cuda.is_available()}))")


@dataclass
class SSHTarget:
    """Where and how to connect. ``options`` are passed as ``-o`` to both ssh and scp."""

    host: str
    port: int | None = None
    identity: str | None = None
    options: list[str] = field(default_factory=list)
    python: str = "python3"
    connect_timeout: int = 10

    def _common(self) -> list[str]:
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.identity:
            args += ["-i", self.identity]
        for opt in self.options:
            args += ["-o", opt]
        return args

    def ssh_args(self, remote_command: str) -> list[str]:
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *self._common(), *port, "--", self.host, remote_command]

    def scp_args(self, files: list[Path], remote_dir: str) -> list[str]:
        port = ["-P", str(self.port)] if self.port else []
        return ["scp", "-q", *self._common(), *port, "--", *[str(f) for f in files], f"{self.host}:{remote_dir}/"]


def remote_word(path: str) -> str:
    """Quote a path for the remote shell; a leading ``~/`` stays the device user's home (``"$HOME"/...``)."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _check_tools() -> None:
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            raise RemoteError(f"{tool} is not on PATH: install the OpenSSH client (apt-get install openssh-client)")


def _run(args: list[str], target: SSHTarget, what: str, *, stream_stderr: bool = False,
         timeout: float | None = 120) -> subprocess.CompletedProcess:
    """Run ssh/scp; exit status 255 (ssh's own failure) becomes HostUnreachableError naming the fix."""
    try:
        done = subprocess.run(args, stdout=subprocess.PIPE, stderr=None if stream_stderr else subprocess.PIPE,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"{what} on {target.host} took longer than {timeout:.0f} s; is the device busy?") from exc
    if done.returncode == 255:
        err = (done.stderr or "").strip().splitlines()
        raise HostUnreachableError(
            f"cannot reach {target.host}{':' + str(target.port) if target.port else ''} over SSH while trying to "
            f"{what}: {err[-1] if err else 'ssh exited with 255'}. Check that the device is on, sshd runs, "
            "`ssh <host> true` works without a password prompt (key in ~/.ssh/authorized_keys) and the host key "
            "is in known_hosts")
    return done


def probe(target: SSHTarget) -> dict[str, Any]:
    """Check the device's Python and runtimes before copying anything."""
    cmd = f"{remote_word(target.python)} -c {shlex.quote(PROBE)}"
    done = _run(target.ssh_args(cmd), target, "check its Python")
    if done.returncode == 127 or (done.returncode != 0 and "not found" in (done.stderr or "")):
        raise RemotePythonError(f"{target.python!r} is not found on {target.host}: install Python 3 there or "
                                "point --remote-python at it (e.g. --remote-python /usr/bin/python3)")
    if done.returncode != 0:
        raise RemotePythonError(f"{target.python!r} on {target.host} failed (exit {done.returncode}): "
                                f"{(done.stderr or '').strip()[-300:]}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise RemotePythonError(f"{target.python!r} on {target.host} printed no version report; is it Python 3? "
                                f"got {done.stdout[-200:]!r}") from exc


def check_runtimes(versions: dict[str, Any], backends: list[str], target: SSHTarget) -> None:
    """A clear error naming the pip command when a backend's runtime is missing on the device."""
    for b in backends:
        spec = runner_module.BACKENDS[b]
        missing = [m for m in spec.needs if not versions.get(m)]
        if missing == ["trtexec"]:
            raise RemoteRuntimeError(f"{target.host} has no trtexec for backend {b!r} (looked on PATH and in "
                                     f"{runner_module.TRTEXEC_PLACES}): {spec.hint}")
        if missing:
            raise RemoteRuntimeError(
                f"{target.python} on {target.host} lacks {', '.join(missing)} for backend {b!r}: on the device run "
                f"`{target.python} -m pip install {' '.join(missing)}` ({spec.hint})")


def check_cuda(target: SSHTarget) -> dict[str, Any]:
    """``--device cuda`` on a device: its torch must find the GPU (one import of torch there: seconds)."""
    done = _run(target.ssh_args(f"{remote_word(target.python)} -c {shlex.quote(CUDA_PROBE)}"), target,
                "check CUDA in its torch")
    try:
        found = json.loads((done.stdout or "").strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        found = {}
    if done.returncode != 0 or not found.get("available"):
        detail = (f"torch {found.get('torch')} (CUDA {found.get('cuda')}) finds no GPU" if found else
                  (done.stderr or "").strip()[-200:])
        raise RemoteRuntimeError(f"--device cuda, but CUDA is not available to {target.python} on {target.host}: "
                                 f"{detail}. Install a CUDA build of PyTorch there (on a Jetson: JetPack's "
                                 "PyTorch wheel) or use --device cpu")
    return found


def preflight(target: SSHTarget, backends: list[str], device: str | None = None) -> dict[str, Any]:
    """Fail fast (before any model is built): ssh/scp present, host reachable, Python and runtimes there,
    and CUDA in its torch for ``device='cuda'``."""
    _check_tools()
    versions = probe(target)
    check_runtimes(versions, backends, target)
    if device == "cuda" and any("torch" in runner_module.BACKENDS[b].needs for b in backends):
        versions["cuda"] = check_cuda(target)
    return versions


def run_remote(target: SSHTarget, job_models: list[dict[str, Any]], job: dict[str, Any], progress: bool = True,
               checked: bool = False) -> dict[str, Any]:
    """Copy runner + models + job to a fresh temp dir on the device, run, fetch JSON, clean up."""
    if not checked:
        preflight(target, job["backends"], job.get("device"))
    done = _run(target.ssh_args("mktemp -d -t lrp-latency.XXXXXX"), target, "create a temp dir")
    remote_dir = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""
    if not remote_dir.startswith("/"):
        raise RemoteError(f"could not create a temp dir on {target.host}: {(done.stderr or '').strip()[-300:]}")
    try:
        with tempfile.TemporaryDirectory(prefix="lrp-latency-stage-") as stage:
            stage_dir = Path(stage)
            files, models = [], []
            for i, m in enumerate(job_models):  # copy under names we chose: no user path reaches the device
                entry = {"name": m["name"]}
                for key, suffix in (("onnx", ".onnx"), ("torchscript", ".ts.pt"), ("ncnn_param", ".ncnn.param"),
                                    ("ncnn_bin", ".ncnn.bin")):
                    if m.get(key):
                        local = stage_dir / f"model{i}{suffix}"
                        shutil.copyfile(m[key], local)
                        files.append(local)
                        entry[key] = local.name
                models.append(entry)
            shutil.copyfile(runner_module.__file__, stage_dir / "runner.py")
            (stage_dir / "job.json").write_text(json.dumps({**job, "models": models}))
            files += [stage_dir / "runner.py", stage_dir / "job.json"]
            if progress:
                print(f"copying {len(files)} files to {target.host}:{remote_dir}", file=sys.stderr, flush=True)
            try:
                cp = _run(target.scp_args(files, remote_dir), target, "copy the models", timeout=600)
            except HostUnreachableError as exc:  # ssh worked a moment ago: the copy itself failed
                raise RemoteError(f"{exc}. ssh itself works, so scp failed: the device's sshd may lack the SFTP "
                                  "subsystem scp uses (add `Subsystem sftp internal-sftp` to its sshd_config)") from exc
            if cp.returncode != 0:
                raise RemoteError(f"scp to {target.host}:{remote_dir} failed: {(cp.stderr or '').strip()[-300:]}")
        cmd = (f"cd {shlex.quote(remote_dir)} && {remote_word(target.python)} runner.py job.json"
               + ("" if progress else " --quiet"))
        done = _run(target.ssh_args(cmd), target, "run the timing", stream_stderr=True, timeout=None)
        return _parse_result(done, target)
    finally:
        subprocess.run(target.ssh_args(f"rm -rf {shlex.quote(remote_dir)}"), capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60, check=False)


def _parse_result(done: subprocess.CompletedProcess, target: SSHTarget) -> dict[str, Any]:
    lines = (done.stdout or "").strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise RemoteError(f"the runner on {target.host} exited {done.returncode} without a JSON result; its "
                          "stderr is above") from exc
    if "error" in result:
        kind, msg = result["error"]["kind"], result["error"]["message"]
        cls = {"runtime_missing": RemoteRuntimeError, "module_missing": RemoteRuntimeError,
               "bad_input": InputShapeError}.get(kind, RemoteError)
        raise cls(f"on {target.host}: {msg}")
    if done.returncode != 0:
        raise RemoteError(f"the runner on {target.host} exited {done.returncode}")
    return result


__all__ = ["SSHTarget", "check_runtimes", "preflight", "probe", "run_remote"]
