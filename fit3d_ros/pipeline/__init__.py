"""ROS-free runtime shared by the nodes and replay."""
from .latency import LatencyStats
from .worker import LatestWinsWorker, WorkerCounters

__all__ = ["LatencyStats", "LatestWinsWorker", "WorkerCounters"]
