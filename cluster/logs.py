"""Library output to a log file instead of the console: Ray, Ray Data/Train/Serve, DeepSpeed, torch, vLLM and
transformers talk a lot (start-up notices, deprecations, "progress bars disabled", worker tracebacks that Ray
retries), and a console that carries all of it hides what a run did.

`library_output_to(path)` sends, for as long as it is entered,
- every console handler of the process's loggers (those attached later, by a library imported mid-run or by
  `ray.init`, included) to the file,
- Python warnings (through `logging.captureWarnings`) to the file,
- the stdout/stderr that Ray forwards from its workers, and the warnings its raylet and autoscaler push to
  the driver, to the file (once `cluster.ray_session` has connected, which calls `route_worker_output`),
  except the distributed progress bars (`ray.experimental.tqdm_ray`), which stay on the console.
What xalign prints itself (rich consoles, the capabilities' `log` callbacks, tqdm bars in the driver) is not
logging and stays where it was. Everything is put back on exit. The policy (which file; `--verbose` keeps it
all on the console) belongs to the user's layer.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_WORKERS = "xalign.worker_output"  # the logger that carries lines Ray forwards from its processes


class _Formatter(logging.Formatter):
    """Library records with time, level and logger; lines forwarded from Ray's processes as Ray prints them."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage() if record.name == _WORKERS else super().format(record)


class _Once(logging.Filter):
    """Passes a record the first time only: the file handler sits on several loggers of one chain."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_xalign_library_log", False):
            return False
        record._xalign_library_log = True
        return True


class _FileHandler(logging.FileHandler):
    """A file handler that keeps its own format (libraries set formatters on the handlers of their loggers) and
    creates its file, folder included, at the first record: a run that fails before any leaves nothing behind."""

    _format = _Formatter(_FORMAT)

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

    def format(self, record: logging.LogRecord) -> str:
        return self._format.format(record)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def retarget(self, path: Path) -> None:
        """Write the next records to `path` (appending)."""
        self.acquire()
        try:
            old, self.stream = self.stream, None
            self.baseFilename = str(path.resolve())
            if old is not None:
                old.close()
        finally:
            self.release()


class LibraryLog:
    """The log file library output goes to while `library_output_to` is entered; `switch` moves it (one file per
    demo stage)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handler = _FileHandler(path)
        self.handler.setLevel(logging.INFO)
        self.handler.addFilter(_Once())
        self.workers = logging.getLogger(_WORKERS)
        self.forwarding = False  # whether Ray's forwarded output comes here (see route_worker_output)
        self.pushed: Any = None  # Ray's printer of pushed warnings, while replaced

    def switch(self, path: Path) -> None:
        """Write from now on to `path` (appending)."""
        self.handler.retarget(path)
        self.path = path

    def worker_output(self, data: dict[str, Any]) -> None:
        """Ray's per-batch handler of forwarded output: progress-bar updates to Ray's own renderer (the console),
        every other line to the file, prefixed as Ray prints it: `(RayTrainWorker pid=123) ...`."""
        from ray._private import worker as ray_worker
        from ray.experimental.tqdm_ray import RAY_TQDM_MAGIC

        pid = data.get("pid")
        lines = data.get("lines", [])
        if pid == "autoscaler":
            lines = list(ray_worker.filter_autoscaler_events(lines))
        origin = data.get("actor_name") or data.get("task_name")
        prefix = f"({origin} pid={pid})" if origin else f"(pid={pid})" if pid not in ("raylet", "autoscaler") \
            else f"({pid})"
        for line in lines:
            if RAY_TQDM_MAGIC in line:
                ray_worker.process_tqdm(line)
            else:
                self.workers.info("%s %s", prefix, line)

    def close(self) -> None:
        self.handler.close()


_ACTIVE: LibraryLog | None = None
_LOCK = threading.Lock()


def _is_console(handler: logging.Handler) -> bool:
    if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return False
    return getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


def _loggers() -> list[logging.Logger]:
    found = [logging.getLogger()]
    found += [lg for lg in list(logging.root.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]
    return found


class _Reroute:
    """Moves console handlers to the log file and remembers where they were, so that exit restores them."""

    def __init__(self, log: LibraryLog) -> None:
        self.log = log
        self.moved: list[tuple[logging.Logger, logging.Handler]] = []
        self.added: list[logging.Logger] = []
        self.add_handler = logging.Logger.addHandler
        self.remove_handler = logging.Logger.removeHandler

    def take(self, logger: logging.Logger, handler: logging.Handler) -> bool:
        """Route `handler`'s records to the file instead; True when it was a console handler."""
        if logger.name == _WORKERS or not _is_console(handler):
            return False
        self.moved.append((logger, handler))
        # The file handler takes the console handler's place (whether the logger propagates may change after, as
        # dictConfig sets it last); a record that reaches it again up the chain is written once (`_Once`).
        if logger is not logging.root and self.log.handler not in logger.handlers:
            self.add_handler(logger, self.log.handler)
            self.added.append(logger)
        return True

    def install(self) -> None:
        for logger in _loggers():
            for handler in list(logger.handlers):
                if self.take(logger, handler):
                    logger.removeHandler(handler)
        reroute = self

        def add_handler(logger: logging.Logger, handler: logging.Handler) -> None:
            if not reroute.take(logger, handler):
                reroute.add_handler(logger, handler)

        def remove_handler(logger: logging.Logger, handler: logging.Handler) -> None:
            if (logger, handler) in reroute.moved:  # the library dropped it: it is not ours to put back
                reroute.moved.remove((logger, handler))
            reroute.remove_handler(logger, handler)

        logging.Logger.addHandler = add_handler  # type: ignore[method-assign]
        logging.Logger.removeHandler = remove_handler  # type: ignore[method-assign]

    def uninstall(self) -> None:
        logging.Logger.addHandler = self.add_handler  # type: ignore[method-assign]
        logging.Logger.removeHandler = self.remove_handler  # type: ignore[method-assign]
        for logger in self.added:
            logger.removeHandler(self.log.handler)
        for logger, handler in self.moved:
            if handler not in logger.handlers:
                logger.addHandler(handler)


@contextmanager
def library_output_to(path: Path | None) -> Iterator[LibraryLog | None]:
    """Library output to `path` for the duration (see the module's docstring); `None` changes nothing (verbose)."""
    global _ACTIVE
    if path is None:
        yield None
        return
    with _LOCK:
        if _ACTIVE is not None:
            raise RuntimeError(f"library output already goes to {_ACTIVE.path}")
        log = _ACTIVE = LibraryLog(Path(path))
    root, workers = logging.getLogger(), log.workers
    saved = (workers.propagate, workers.level)
    workers.propagate, workers.level = False, logging.INFO
    workers.addHandler(log.handler)
    root.addHandler(log.handler)
    reroute = _Reroute(log)
    reroute.install()
    capturing = getattr(logging, "_warnings_showwarning", None) is not None
    logging.captureWarnings(True)
    try:
        route_worker_output()
        yield log
    finally:
        logging.captureWarnings(capturing)
        reroute.uninstall()
        root.removeHandler(log.handler)
        workers.removeHandler(log.handler)
        workers.propagate, workers.level = saved
        _restore_worker_output(log)
        with _LOCK:
            _ACTIVE = None
        log.close()


def active() -> LibraryLog | None:
    """The log file library output goes to now, if any."""
    return _ACTIVE


def route_worker_output() -> None:
    """Send what Ray forwards from its processes to the active log file: a no-op without one, without a Ray
    connection, or when the connection forwards nothing (`log_to_driver=False`).

    Ray prints forwarded lines from one handler of its driver-side dispatcher (`ray_print_logs`, which
    `ray.init(log_to_driver=True)` adds), and the warnings its processes push to the driver ("N worker processes
    have been started", ...) with `print_to_stdstream`; both go through `LibraryLog.worker_output` instead,
    which keeps Ray's progress-bar rendering."""
    log = _ACTIVE
    dispatcher = _dispatcher()
    if log is None or dispatcher is None:
        return
    from ray._private import worker as ray_worker

    with dispatcher._lock:
        names = [name for name, _ in dispatcher.handlers]
    if "ray_print_logs" in names:
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("ray_print_logs", log.worker_output)
        log.forwarding = True
    if getattr(ray_worker, "print_to_stdstream", None) is not None and log.pushed is None:
        log.pushed = ray_worker.print_to_stdstream
        ray_worker.print_to_stdstream = lambda data, ignore_prefix=False: log.worker_output(data)


def _restore_worker_output(log: LibraryLog) -> None:
    """Hand forwarding back to Ray's printer when the connection outlives the log file."""
    import functools

    if log.pushed is not None:
        from ray._private import worker as ray_worker

        ray_worker.print_to_stdstream = log.pushed
    dispatcher = _dispatcher()
    if dispatcher is None or not log.forwarding:
        return
    with dispatcher._lock:
        ours = any(handler == log.worker_output for _, handler in dispatcher.handlers)
    if not ours:  # ray.shutdown() removed it already
        return
    from ray._private import worker as ray_worker

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", functools.partial(
        ray_worker.print_to_stdstream,
        ignore_prefix=ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)))


def _dispatcher() -> Any:
    """Ray's driver-side dispatcher of forwarded output (Ray 2.60) when Ray is connected; else None."""
    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return None
    if not all(hasattr(dispatcher, a) for a in ("add_handler", "remove_handler", "handlers", "_lock")):
        return None
    return dispatcher
