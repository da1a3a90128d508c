"""Helpers for node tests over real DDS: an isolated rclpy context and a spin-until loop."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import rclpy


@contextmanager
def ros_context(domain_id: int) -> Iterator[rclpy.context.Context]:
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)


def spin_until(ctx, node, done: Callable[[], bool], timeout: float,
               proc: subprocess.Popen | None = None) -> bool:
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if done():
                return True
            if proc is not None and proc.poll() is not None:
                return done()
            executor.spin_once(timeout_sec=0.1)
        return done()
    finally:
        executor.remove_node(node)


def start(args: list[str], env: dict[str, str], executable: str = sys.executable,
          cwd: str | None = None) -> subprocess.Popen:
    """`python ARGS` (or `executable ARGS`) in a subprocess; its stdout/stderr are drained
    by background threads (read them with :func:`stop`): an undrained pipe fills up
    (64 KiB) with a long test's throttled warnings and the node then blocks in its
    logging call."""
    proc = subprocess.Popen([executable, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    bufs: tuple[list[str], list[str]] = ([], [])
    threads = [threading.Thread(target=_drain, args=(stream, buf), daemon=True)
               for stream, buf in zip((proc.stdout, proc.stderr), bufs)]
    for t in threads:
        t.start()
    proc.fit3d_drain = (threads, bufs)  # type: ignore[attr-defined]
    return proc


def _drain(stream, buf: list[str]) -> None:
    try:
        for line in iter(stream.readline, ""):
            buf.append(line)
    except (OSError, ValueError):  # closed under us
        pass


def play(bag, env: dict[str, str], duration: float, delay: float = 2) -> subprocess.Popen:
    """`fit3d-ros play BAG --loop` in a subprocess (stop it with :func:`stop`); `duration`
    only bounds a player that a failed test would leave running: make it longer than the
    test waits for (slow CI)."""
    return start(["-m", "fit3d_ros.cli", "play", str(bag), "--loop", "--delay", str(delay),
                  "--duration", str(duration)], env)


def stop(proc: subprocess.Popen) -> str:
    """Terminate (then kill) the process if still running; its stdout + stderr so far
    (may be called again: returns the whole output each time)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    threads, (out, err) = proc.fit3d_drain  # type: ignore[attr-defined]
    for t in threads:
        t.join(10)
    return "".join(out) + "".join(err)


def diagnostic_counts(arrays, node_name: str = "") -> dict[str, int]:
    """Largest integer value seen per key in DiagnosticArray messages (of `node_name`)."""
    best: dict[str, int] = {}
    for arr in arrays:
        for st in arr.status:
            if node_name in st.name:
                for v in st.values:
                    if v.value.isdigit():
                        best[v.key] = max(best.get(v.key, 0), int(v.value))
    return best
