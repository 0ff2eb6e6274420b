"""Several gateway processes on one port (`TASKGATE_PROCESSES`), and only those.

One Python process serves gRPC on one core. With `TASKGATE_PROCESSES` above 1 the
gateway is a parent and that many processes, each a whole gateway: the parent
checks that nothing holds the port, then keeps it for the group with a socket
bound with SO_REUSEPORT (bound, never listening, so it takes no connection), and
starts the processes, which bind the same port with gRPC's SO_REUSEPORT. Linux
lets only sockets of the same user join a port's reuseport group, and only while
every socket on the port asked for it: a server of another user, or one that did
not ask, can never share it; one of the same user that asks can, as with any
SO_REUSEPORT server. The kernel spreads new connections over the processes.

The parent forwards SIGTERM, SIGINT and SIGHUP to the processes and exits when they
have. A process that exits on its own brings the group down (the others get SIGTERM
and their grace, the parent exits 1), so that the supervisor restarts the whole
gateway, as it would restart a single process; processes whose parent is gone stop
the same way.
"""

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from taskgate.server.app import serve
from taskgate.server.config import GatewaySettings
from taskgate.server.launch import (
    configuration_errors_in_one_line,
    configure_logging,
    event_loop_runner,
)
from taskgate.server.listener import bind_failure, host_and_port, port_taken, socket_for

logger = logging.getLogger(__name__)

READY_TIMEOUT = 120.0
"""How long the processes have to start serving."""
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

Member = Callable[[GatewaySettings, Connection], None]
"""One process of the group: serves `settings` on the shared port, sends its pid
on the connection once it serves. Run in a fresh interpreter (spawn)."""


def serve_in_group(settings: GatewaySettings, announce: Connection) -> None:
    """One process of a group: serve on the shared port, say so once serving."""
    with configuration_errors_in_one_line():
        configure_logging()
        threading.Thread(target=_stop_when_orphaned, name="parent-watch", daemon=True).start()
        serving = serve(settings, shared_port=True, on_listening=lambda: announce.send(os.getpid()))
        event_loop_runner()(serving)


def _stop_when_orphaned() -> None:
    """SIGTERM this process once its parent is gone (SIGKILL, a crash), so that no
    process keeps serving the port unsupervised."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        logger.error("the group's parent is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)


def reserve_port(listen: str) -> socket.socket:
    """A socket holding `listen` for the group; ConfigurationError when it is taken."""
    reason = bind_failure(listen)
    if reason is not None:
        raise port_taken(listen, reason)
    host, port = host_and_port(listen)
    reservation = socket_for(host)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reservation.bind((host, port))
    except OSError as exc:  # taken in the moment since the check
        reservation.close()
        raise port_taken(listen, exc.strerror or str(exc)) from None
    return reservation


def run_group(settings: GatewaySettings, member: Member) -> int:
    """Serve with `settings.processes` processes until they stop; the exit status."""
    with reserve_port(settings.listen) as reservation:
        host = settings.listen.rpartition(":")[0]
        listen = f"{host}:{reservation.getsockname()[1]}"  # port 0 resolved once, for all
        group = ProcessGroup(replace(settings, listen=listen), member)
        return group.run()


def member_settings(settings: GatewaySettings, number: int) -> GatewaySettings:
    """The settings of process `number` (from 0): `/metrics` on a port of its own, the
    configured one plus `number` (each process counts only its own calls)."""
    metrics = settings.observability.metrics_listen
    if metrics is None or metrics.endswith(":0"):
        return settings
    host, _, port = metrics.rpartition(":")
    own = replace(settings.observability, metrics_listen=f"{host}:{int(port) + number}")
    return replace(settings, observability=own)


class ProcessGroup:
    """Starts the processes, forwards signals to them and watches them exit."""

    def __init__(self, settings: GatewaySettings, member: Member) -> None:
        self._settings = settings
        self._member = member
        self._processes: list[BaseProcess] = []
        self._stopping = False

    def run(self) -> int:
        """Start, wait until every process serves, then until all have exited."""
        for signum in FORWARDED:
            signal.signal(signum, self._forward)
        context = multiprocessing.get_context("spawn")  # fork would copy gRPC's threads
        ready, announce = context.Pipe(duplex=False)
        for number in range(self._settings.processes):
            process = context.Process(
                target=self._member,
                args=(member_settings(self._settings, number), announce),
                name=f"taskgate-{number + 1}",
            )
            process.start()
            self._processes.append(process)
        announce.close()
        if not self._await_ready(ready):
            self._supervise()
            return 1
        pids = ", ".join(str(process.pid) for process in self._processes)
        logger.info(
            "taskgate listening on %s with %d processes (pids %s)",
            self._settings.listen,
            len(self._processes),
            pids,
        )
        return self._supervise()

    def _await_ready(self, ready: Connection) -> bool:
        """True once every process serves; False when one exited first or time ran out."""
        waiting = {process.sentinel: process for process in self._processes}
        serving = 0
        deadline = time.monotonic() + READY_TIMEOUT
        while serving < len(self._processes) and not self._stopping:
            left = deadline - time.monotonic()
            events = wait([ready, *waiting], timeout=max(left, 0))
            if not events:
                self._stop_all("the gateway processes did not start within %gs", READY_TIMEOUT)
                return False
            if ready in events and ready.poll():
                ready.recv()
                serving += 1
            elif any(process.exitcode is not None for process in self._processes):
                self._stop_all("a gateway process exited while the group started")
                return False
        return serving == len(self._processes)

    def _supervise(self) -> int:
        """Wait for every process to exit; 1 when one exited before it was told to."""
        failed = False
        running = list(self._processes)
        while running:
            wait([process.sentinel for process in running])
            for process in [process for process in running if not process.is_alive()]:
                running.remove(process)
                if not self._stopping:
                    failed = True
                    self._stop_all(
                        "gateway process %s exited with status %s: stopping the group",
                        process.pid,
                        process.exitcode,
                    )
        codes = [process.exitcode for process in self._processes]
        return 1 if failed or any(codes) else 0

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            self._stopping = True
        self._send(signum)

    def _stop_all(self, why: str, *args: object) -> None:
        logger.error(why, *args)
        self._stopping = True
        self._send(signal.SIGTERM)

    def _send(self, signum: int) -> None:
        for process in self._processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signum)
