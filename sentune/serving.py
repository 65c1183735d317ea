"""`sentune serve`: a run's best model (or a model folder) behind an HTTP endpoint on Ray Serve.

One Serve application, ``sentune``, with one deployment (:class:`ModelServer`, a FastAPI ingress):
``POST /predict`` with ``{"texts": [...]}`` answers each text's label and class probabilities,
``GET /healthz`` answers ``{"status": "ok"}`` and ``GET /`` describes the model. Requests that arrive together
go through the model as one forward pass (``@serve.batch``, sized in texts). A bad request is a 4xx with
``{"error": "<one line>"}``, never a 500.

The replicas never read the run folder: the driver opens the model once (a broken folder fails here, in one
line, not in a replica Serve retries forever), puts the model folder's files into Ray's object store, and each
replica writes them to a temporary folder of its own node and opens the model there, holding the CPUs and GPU
fraction the job's trials held (``model.json``'s ``resources``).

On the embedded local Ray the serving process owns Ray: it records where that Ray is
(its pid in ``$SENTUNE_HOME/serve/<port>.json``), so that ``sentune serve --stop`` from another shell can stop it
(SIGTERM, taken as Ctrl-C); it then deletes the app and shuts its Ray down.
"""

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentune._log import log_line, warn
from sentune._paths import home
from sentune.errors import SentuneError, one_line

__all__ = ["APP_NAME", "ModelServer", "ServingError", "check_texts", "serve_model", "stop_serving"]

APP_NAME = "sentune"
BATCH_TEXTS = 256  # the most texts of several requests that go through the model in one forward pass
BATCH_WAIT_S = 0.005  # how long a forward pass waits for more requests to join it
READY_TIMEOUT_S = 300.0  # how long the driver waits for the app to answer /healthz


class ServingError(SentuneError):
    """The model cannot be served: a bad source or option, a port in use, Serve not answering."""


class BadRequest(Exception):
    """A request the endpoint refuses: its HTTP status and one line saying why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = one_line(reason)


def check_texts(body: bytes, *, max_texts: int, max_chars: int) -> list[str]:
    """The texts of a ``POST /predict`` body, or :class:`BadRequest` saying what is wrong with it."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, f"the body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, 'the body must be a JSON object: {"texts": ["...", ...]}')
    texts = payload.get("texts")
    if texts is None:
        raise BadRequest(400, 'no "texts": send {"texts": ["...", ...]}')
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest(400, '"texts" must be a list of strings')
    if not texts:
        raise BadRequest(400, '"texts" is empty')
    if len(texts) > max_texts:
        raise BadRequest(413, f"{len(texts)} texts in one request; at most {max_texts}")
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise BadRequest(413, f"text {i} has {len(text)} characters; at most {max_chars}")
    return texts


def _error(status: int, reason: object) -> JSONResponse:
    return JSONResponse({"error": one_line(str(reason))}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request's body, or :class:`BadRequest` (413) once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body has {declared} bytes; at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


api = FastAPI(title="sentune", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, exc.detail)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(422, exc.errors()[0].get("msg", "invalid request") if exc.errors() else "invalid request")


def _write_files(root: Path, files: Sequence[tuple[str, bytes]]) -> Path:
    """The model folder's ``files`` (relative POSIX path, bytes) written under ``root``."""
    for rel, data in files:
        path = root.joinpath(*rel.split("/"))
        if ".." in rel.split("/") or not path.resolve().is_relative_to(root.resolve()):
            raise ServingError(f"a model file outside its folder: {rel}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _predictions(label_names: Sequence[str], probs) -> list[dict]:
    return [
        {"label": label_names[int(row.argmax())], "probabilities": dict(zip(label_names, map(float, row)))}
        for row in probs
    ]


@serve.deployment(name="ModelServer", max_ongoing_requests=64)
@serve.ingress(api)
class ModelServer:
    """One replica: the model opened from a copy of its folder, behind the HTTP routes."""

    def __init__(self, files: list, *, device: str = "cpu", max_texts: int = 256, max_chars: int = 5000):
        import ray

        from sentune.inference import open_model

        self._tmp = tempfile.mkdtemp(prefix="sentune-serve-")
        folder = _write_files(Path(self._tmp) / "model", ray.get(files[0]))
        self.model = open_model(folder, device=device)
        self.max_texts, self.max_chars = max_texts, max_chars
        self.body_limit = max_texts * (max_chars * 6 + 8) + 1024  # JSON-escaped characters, up to 6 bytes each
        self._forward.set_max_batch_size(max(BATCH_TEXTS, max_texts))  # type: ignore[attr-defined]

    def __del__(self):
        shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/")
    def describe(self) -> dict:
        return {**self.model.describe(), "max_texts": self.max_texts, "max_chars": self.max_chars}

    @api.post("/predict")
    async def predict(self, request: Request):
        try:
            texts = check_texts(
                await _read_body(request, self.body_limit), max_texts=self.max_texts, max_chars=self.max_chars
            )
        except BadRequest as exc:
            return _error(exc.status, exc.reason)
        probs = await self._forward(texts)
        return {"labels": list(self.model.label_names), "predictions": _predictions(self.model.label_names, probs)}

    @serve.batch(
        max_batch_size=BATCH_TEXTS, batch_wait_timeout_s=BATCH_WAIT_S, batch_size_fn=lambda reqs: sum(map(len, reqs))
    )
    async def _forward(self, requests: list[list[str]]) -> list:
        """One forward pass over the texts of every request in the batch (in a thread: requests arriving
        meanwhile queue for the next one), split back per request."""
        flat = [text for texts in requests for text in texts]
        probs = await asyncio.to_thread(self.model.predict_proba, flat)
        out, start = [], 0
        for texts in requests:
            out.append(probs[start : start + len(texts)])
            start += len(texts)
        return out


def _check_options(replicas: int, port: int, max_texts: int, max_chars: int) -> None:
    if replicas < 1:
        raise ServingError(f"--replicas must be at least 1, not {replicas}")
    if not 1 <= port <= 65535:
        raise ServingError(f"--port must be in 1..65535, not {port}")
    if max_texts < 1 or max_chars < 1:
        raise ServingError(f"max_texts and max_chars must be at least 1, not {max_texts} and {max_chars}")


def _open(source):
    """The model, opened once here: a bad source is one line before Ray starts."""
    from sentune.inference import open_model

    try:
        return open_model(source)
    except SentuneError as exc:
        raise ServingError(str(exc)) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServingError(f"{source}: cannot open the model: {type(exc).__name__}: {exc}") from None


def _folder_files(folder: Path) -> list[tuple[str, bytes]]:
    return [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


def _check_port(host: str, port: int) -> None:
    """A port another process listens on is one line here (Serve's proxy would retry it for a minute)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ServingError(f"--host {host}: {exc}") from None
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(where)
        except OSError as exc:
            raise ServingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _url(host: str, port: int) -> str:
    """The URL a client on this machine uses (the wildcard hosts are reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _replica_resources(info: dict) -> tuple[dict, str]:
    """(ray_actor_options, device) for one replica: what one worker of the job's trials held, within what the
    cluster has (a GPU model served where Ray has no GPU runs on CPU, with a warning)."""
    import ray

    res = info.get("resources") or {}
    cpus, gpus = float(res.get("cpus") or 1), float(res.get("gpus") or 0)
    total = ray.cluster_resources()
    if gpus and total.get("GPU", 0) < gpus:
        warn(f"the model's job used {gpus:g} GPU per worker but this Ray has {total.get('GPU', 0):g}: serving on CPU")
        gpus = 0.0
    cpus = min(cpus, max(total.get("CPU", 1), 0.0))
    return {"num_cpus": cpus, "num_gpus": gpus}, ("cuda" if gpus else "cpu")


def _healthy(url: str, timeout: float = 2.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as resp:  # noqa: S310 (our own URL)
            return resp.status == 200
    except OSError:
        return False


def _check_serve(host: str, port: int, *, local: bool) -> None:
    """Serve keeps the HTTP options it started with: on a Ray where it already runs, ``host:port`` must be where
    its proxy answers (then the app there is replaced); where it does not run, a local port must be free."""
    import urllib.request

    if not serve.status().proxies:
        if local:
            _check_port(host, port)
        return
    url = _url(host, port)
    try:
        with urllib.request.urlopen(f"{url}/-/routes", timeout=5) as resp:  # noqa: S310 (our own URL)
            if resp.status == 200:
                return
    except OSError:
        pass
    raise ServingError(f"Serve already runs on this Ray, not at {url}: serve there or stop it (sentune serve --stop)")


def _deploy(model, *, replicas: int, host: str, port: int, max_texts: int, max_chars: int) -> str:
    import ray

    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    options, device = _replica_resources(model.info)
    app = ModelServer.options(num_replicas=replicas, ray_actor_options=options).bind(  # type: ignore[attr-defined]
        [ray.put(_folder_files(model.folder))], device=device, max_texts=max_texts, max_chars=max_chars
    )
    try:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    except Exception as exc:  # a replica that cannot start: Serve gives up after its retries
        raise ServingError(f"the model's replicas did not start: {type(exc).__name__}: {exc}") from None
    url = _url(host, port)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _healthy(url):
        if time.monotonic() > deadline:
            raise ServingError(f"{url}/healthz does not answer {READY_TIMEOUT_S:.0f} s after the app started")
        time.sleep(0.5)
    return url


def _stop_here(*, shutdown_if_empty: bool = True) -> bool:
    """Delete the ``sentune`` app on the Ray this process is connected to (and Serve itself when no other app is
    left, which frees the port); True when the app was there."""
    try:
        apps = serve.status().applications
    except Exception:  # Serve's controller is gone (its Ray stopping): nothing left to stop
        return False
    found = APP_NAME in apps
    if found:
        serve.delete(APP_NAME)
    if shutdown_if_empty and not set(apps) - {APP_NAME}:
        serve.shutdown()
    return found


def _state_path(port: int) -> Path:
    return home() / "serve" / f"{port}.json"


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (None: no such process), to tell a recorded process from a reused pid."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _wait_while_served() -> None:
    """Return once the app is gone (deleted on its cluster) or on Ctrl-C / SIGTERM (``sentune serve --stop``)."""
    previous = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job starts with it ignored
        try:
            previous.append((sig, signal.signal(sig, _interrupt)))
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        while True:
            time.sleep(1.0)
            try:
                if APP_NAME not in serve.status().applications:
                    return
            except Exception:  # Serve's controller went away
                return
    except KeyboardInterrupt:
        return
    finally:
        for sig, handler in previous:
            signal.signal(sig, handler)


def _serve_until_stopped(url: str, port: int, *, owner: bool) -> None:
    """Serve until stopped; then stop what this process started. A serving process that owns its Ray records its
    pid meanwhile, for ``sentune serve --stop`` from another shell."""
    import ray

    state = _state_path(port) if owner else None
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "started_at": _started_at(os.getpid()), "url": url}
        state.write_text(json.dumps(record), encoding="utf-8")
    log_line(f"serving {url}: POST /predict, GET /healthz, GET / (Ctrl-C or `sentune serve --stop` stops it)")
    try:
        _wait_while_served()
    finally:
        _stop_here(shutdown_if_empty=not owner)  # a Ray of our own goes whole: Serve with it
        if state is not None:
            state.unlink(missing_ok=True)
        if owner:
            ray.shutdown()
        log_line(f"stopped serving {url}")


def serve_model(
    source: str | Path,
    *,
    replicas: int = 1,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    max_texts: int = 256,
    max_chars: int = 5000,
    blocking: bool = True,
) -> str:
    """Serve ``source`` (a run folder: its best model; or a model folder) on Ray Serve at ``host:port`` with
    ``replicas`` replicas, on the Ray at ``address`` (or ``RAY_ADDRESS``, or this process's Ray), else on the
    embedded local Ray. Returns the URL; with ``blocking``, serves until Ctrl-C or ``stop_serving``, then stops
    the app (and the Ray it started). Without it, the app keeps running: :func:`stop_serving` ends it."""
    import ray

    from sentune.tuning import init_ray

    _check_options(replicas, port, max_texts, max_chars)
    model = _open(source)
    owner = not ray.is_initialized()
    local = not (address or os.environ.get("RAY_ADDRESS"))  # the proxy runs on this machine
    if owner and local:
        _check_port(host, port)  # before Ray starts
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    init_ray(address)
    try:
        if not (owner and local):
            _check_serve(host, port, local=local)
        url = _deploy(model, replicas=replicas, host=host, port=port, max_texts=max_texts, max_chars=max_chars)
    except BaseException:
        if owner:
            ray.shutdown()
        raise
    if blocking:
        _serve_until_stopped(url, port, owner=owner)
    return url


def _stop_recorded() -> bool:
    """Stop every serving process of this machine that owns its Ray (SIGTERM: it deletes its app and stops its
    Ray), waiting up to a minute for each to exit."""
    stopped = False
    for path in sorted((home() / "serve").glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid, started = int(record["pid"]), float(record["started_at"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if _started_at(pid) != started:  # that process ended (the pid may be another's now)
            path.unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _started_at(pid) == started and time.monotonic() < deadline:
            time.sleep(0.2)
        stopped = True
    return stopped


def stop_serving(address: str | None = None) -> bool:
    """Stop the ``sentune`` app: on this process's Ray, on the Ray at ``address`` (or ``RAY_ADDRESS``), or else
    the ones the embedded serving processes of this machine run. True when an app was running."""
    import ray

    from sentune.tuning import init_ray

    if not (ray.is_initialized() or address or os.environ.get("RAY_ADDRESS")):
        return _stop_recorded()
    joined = not ray.is_initialized()
    init_ray(address)
    try:
        return _stop_here()
    finally:
        if joined:
            ray.shutdown()
