"""rosbag2 reading and atomic writing with ``rosbags`` (mcap and sqlite3 storage, no ROS).

Design note: the reader wraps ``rosbags.highlevel.AnyReader`` (itself built on
``rosbags.rosbag2.Reader``), so messages are deserialised with the typestore made from
the message definitions stored *in the bag* (a default typestore only for bags that
carry none), and every failure — a truncated file, a corrupt payload — becomes a
``BagError`` naming the path and, where known, the topic and the per-topic message
index. Output layout: a path ending in ``.mcap`` (or ``.db3``) is written as ONE
self-contained storage file (rosbag2's mcap storage embeds the bag metadata; ``ros2 bag
play OUT.mcap`` and rosbags read it directly); any other path is a rosbag2 directory
``OUT/`` holding ``metadata.yaml`` and ``OUT.db3`` (default) or ``OUT.mcap``. Readers
accept all three forms. Writes go to a hidden temporary directory next to the target
and are renamed into place only when the ``with`` block succeeds; on an exception the
temporary output is removed, so a failed conversion never leaves a partial bag.
"""
from __future__ import annotations

import operator
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import (CompressionFormat, CompressionMode, ReaderError, StoragePlugin,
                             Writer, WriterError)

from ..msgs.types import rosbags_typestore


def default_typestore() -> Any:
    """The rosbags typestore of `fit3d_ros.msgs.rosbags_types` (``ROS2_KILTED``)."""
    return rosbags_typestore()


class BagError(ValueError):
    """A bag cannot be read or written; the message names path, topic and message index."""


@dataclass
class TopicInfo:
    """One topic of a bag: its message type and message count."""

    msgtype: str
    count: int


@dataclass
class BagMessage:
    """One deserialised message; ``index`` counts the topic's messages from 0 in log order
    within the selection read (the whole bag when no time window is given)."""

    topic: str
    msgtype: str
    log_time_ns: int
    index: int
    msg: Any


def bag_storage(path: str | Path) -> str:
    """Storage id of an existing bag path: ``"mcap"`` or ``"sqlite3"``."""
    path = Path(path)
    if path.is_dir():
        meta = path / "metadata.yaml"
        if not meta.is_file():
            raise BagError(f"{path}: not a rosbag2 directory (no metadata.yaml)")
        for line in meta.read_text().splitlines():
            if line.strip().startswith("storage_identifier:"):
                return line.split(":", 1)[1].strip()
        raise BagError(f"{meta}: no storage_identifier")
    suffix = {".mcap": "mcap", ".db3": "sqlite3"}.get(path.suffix)
    if suffix is None:
        raise BagError(f"{path}: unknown bag format (expected a .mcap or .db3 file or a "
                       "rosbag2 directory)")
    return suffix


class BagReader:
    """Typed iteration over a rosbag2 bag (directory, ``.mcap`` or ``.db3`` file).

    Use as a context manager::

        with BagReader("run.mcap") as bag:
            for m in bag.messages(["/tf"]):
                ...
    """

    def __init__(self, path: str | Path, typestore: Any = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag {self.path} does not exist")
        self.storage = bag_storage(self.path)
        self._default_typestore = typestore or default_typestore()
        self._reader: AnyReader | None = None

    # -- context management -------------------------------------------------------------
    def open(self) -> "BagReader":
        try:
            reader = AnyReader([self.path], default_typestore=self._default_typestore)
            reader.open()
        except (AnyReaderError, ReaderError) as exc:
            raise BagError(f"{self.path}: cannot open bag (truncated or corrupt?): "
                           f"{exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any storage failure is a bad bag
            raise BagError(f"{self.path}: cannot open bag: {type(exc).__name__}: "
                           f"{exc}") from exc
        self._reader = reader
        return self

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def __enter__(self) -> "BagReader":
        return self.open() if self._reader is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reader(self) -> AnyReader:
        if self._reader is None:
            raise BagError(f"{self.path}: bag is not open (use `with BagReader(...)`)")
        return self._reader

    @property
    def typestore(self) -> Any:
        """The typestore built from the bag's own message definitions."""
        return self.reader.typestore

    # -- metadata -------------------------------------------------------------------
    @property
    def topics(self) -> dict[str, TopicInfo]:
        return {name: TopicInfo(info.msgtype or "", int(info.msgcount))
                for name, info in self.reader.topics.items()}

    @property
    def message_count(self) -> int:
        return int(self.reader.message_count)

    @property
    def start_ns(self) -> int:
        """Log time of the first message (0 for an empty bag)."""
        return int(self.reader.start_time) if self.message_count else 0

    @property
    def end_ns(self) -> int:
        """Log time of the last message (0 for an empty bag)."""
        return int(self.reader.end_time) - 1 if self.message_count else 0

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    # -- messages -------------------------------------------------------------------
    def raw_messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                     stop_ns: int | None = None) -> Iterator[tuple[str, str, int, int, bytes]]:
        """(topic, msgtype, log_time_ns, index, cdr bytes) in log order, not deserialised.

        ``start_ns`` is inclusive, ``stop_ns`` exclusive (rosbags semantics).
        """
        reader = self.reader
        wanted = None if topics is None else set(topics)
        if wanted is not None:
            unknown = wanted - set(reader.topics)
            if unknown:
                raise BagError(f"{self.path}: no topic(s) {sorted(unknown)} in bag "
                               f"(has {sorted(reader.topics)})")
            conns = [c for c in reader.connections if c.topic in wanted]
        else:
            conns = list(reader.connections)
        if not conns:
            return
        counters: dict[str, int] = {}
        last = "no message read yet"
        stream = reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        while True:
            try:
                conn, stamp, data = next(stream)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - storage-level corruption
                raise BagError(f"{self.path}: corrupt or truncated bag after {last}: "
                               f"{type(exc).__name__}: {exc}") from exc
            index = counters.get(conn.topic, 0)
            counters[conn.topic] = index + 1
            last = f"topic {conn.topic} message {index}"
            yield conn.topic, conn.msgtype, int(stamp), index, data

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Deserialised messages in log order (optionally of some topics / a time window).

        Raises ``BagError`` naming topic and index for a message that does not decode.
        """
        store = self.reader.typestore
        for topic, msgtype, stamp, index, data in self.raw_messages(topics, start_ns, stop_ns):
            try:
                msg = store.deserialize_cdr(data, msgtype)
            except Exception as exc:  # noqa: BLE001 - any decode failure is corrupt data
                raise BagError(f"{self.path}: topic {topic} message {index} ({msgtype}) "
                               f"does not deserialise: {type(exc).__name__}: {exc}") from exc
            yield BagMessage(topic, msgtype, stamp, index, msg)


def open_bag(path: str | Path) -> BagReader:
    """An opened ``BagReader`` (use it as a context manager to close it)."""
    return BagReader(path).open()


def _latched_qos() -> Qos:
    """Transient-local, keep-last-1 QoS (how tf2 publishes /tf_static)."""
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


LATCHED_TOPICS = frozenset({"/tf_static"})


class BagWriter:
    """Atomic rosbag2 writer; connections are registered on first use of a topic.

    ``storage`` defaults from the path: ``*.mcap`` → one mcap file, ``*.db3`` → one
    sqlite3 file, anything else → a rosbag2 directory with sqlite3 storage (pass
    ``storage="mcap"`` for an mcap directory). Refuses to replace an existing path unless
    ``overwrite=True``. ``compress=True`` zstd-compresses mcap chunks (self-describing,
    any mcap reader decodes them) or, for sqlite3 directories, each message (recorded in
    metadata.yaml; so not for a bare ``.db3`` file, which has no metadata.yaml).
    """

    def __init__(self, path: str | Path, storage: str | None = None, typestore: Any = None,
                 overwrite: bool = False, compress: bool = False) -> None:
        self.path = Path(path)
        suffix = self.path.suffix
        self.single_file = suffix in (".mcap", ".db3")
        inferred = {".mcap": "mcap", ".db3": "sqlite3"}.get(suffix, "sqlite3")
        self.storage = storage or inferred
        if self.storage not in ("mcap", "sqlite3"):
            raise BagError(f"{self.path}: unknown storage {self.storage!r} (mcap|sqlite3)")
        if self.single_file and self.storage != inferred:
            raise BagError(f"{self.path}: suffix {suffix} contradicts storage={self.storage}")
        if compress and self.storage == "sqlite3" and self.single_file:
            raise BagError(f"{self.path}: a bare .db3 file cannot record compression; write "
                           "a directory or .mcap")
        self.compress = compress
        self.overwrite = overwrite
        self.typestore = typestore or default_typestore()
        self.counts: dict[str, int] = {}
        self._connections: dict[str, Any] = {}
        self._writer: Writer | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> "BagWriter":
        if self.path.exists() and not self.overwrite:
            raise FileExistsError(f"{self.path} exists (pass overwrite / --force to replace)")
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial",
                                          dir=parent))
        name = self.path.stem if self.single_file else self.path.name
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self._tmp / name, version=Writer.VERSION_LATEST,
                              storage_plugin=plugin)
        if self.compress:
            mode = CompressionMode.STORAGE if self.storage == "mcap" else CompressionMode.MESSAGE
            self._writer.set_compression(mode, CompressionFormat.ZSTD)
        try:
            self._writer.open()
        except BaseException:
            self._discard()
            raise
        return self

    def write(self, topic: str, msgtype: str, stamp_ns: int, msg: Any) -> None:
        """Serialise ``msg`` (a rosbags message of ``msgtype``) at log time ``stamp_ns``."""
        if self._writer is None:
            raise BagError(f"{self.path}: writer is not open (use `with BagWriter(...)`)")
        index = self.counts.get(topic, 0)
        conn = self._connections.get(topic)
        if conn is None:
            qos = [_latched_qos()] if topic in LATCHED_TOPICS else []
            try:
                conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                   offered_qos_profiles=qos)
            except (WriterError, KeyError) as exc:
                raise BagError(f"{self.path}: cannot add topic {topic} ({msgtype}): "
                               f"{exc}") from exc
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"{self.path}: topic {topic} message {index} has type {msgtype}, "
                           f"topic was opened with {conn.msgtype}")
        try:
            log_time = operator.index(stamp_ns)  # int or numpy integer, never a float
        except TypeError:
            log_time = -1
        if log_time < 0:
            raise BagError(f"{self.path}: topic {topic} message {index}: invalid log time "
                           f"{stamp_ns!r} (need a non-negative int of ns)")
        try:
            data = self.typestore.serialize_cdr(msg, msgtype)
        except Exception as exc:  # noqa: BLE001 - any field mismatch is bad input
            raise BagError(f"{self.path}: topic {topic} message {index} ({msgtype}) does not "
                           f"serialise: {type(exc).__name__}: {exc}") from exc
        self._writer.write(conn, log_time, data)
        self.counts[topic] = index + 1

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._finish()
        except BaseException:
            self._discard()
            raise

    def _finish(self) -> None:
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        self._writer = None
        bagdir = self._tmp / (self.path.stem if self.single_file else self.path.name)
        source = bagdir / f"{bagdir.name}{self.path.suffix}" if self.single_file else bagdir
        if self.path.is_dir() and not self.path.is_symlink():  # overwrite=True, checked on enter
            shutil.rmtree(self.path)  # a directory cannot be replaced in one rename
        elif self.path.is_symlink() or (self.path.exists() and source.is_dir()):
            self.path.unlink()
        os.replace(source, self.path)  # atomic for a file over a file
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def _discard(self) -> None:
        """Drop the temporary output (no partial bag survives an exception)."""
        writer, self._writer = self._writer, None
        if writer is not None and writer.storage is not None:
            try:
                writer.storage.abort()
            except Exception:  # noqa: BLE001 - we are discarding anyway
                pass
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def bag_info(path: str | Path, rates: bool = True) -> dict[str, Any]:
    """Summary of a bag: topics (type, count, rate_hz), duration, start/end, storage.

    ``rate_hz`` is (count - 1) / (last - first log time) of the topic, ``None`` for
    topics with fewer than two messages or zero span; computing it scans the log times
    (raw records, no deserialisation); ``rates=False`` skips the scan.
    """
    with BagReader(path) as bag:
        topics = bag.topics
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        if rates and bag.message_count:
            for topic, _, stamp, _, _ in bag.raw_messages():
                first.setdefault(topic, stamp)
                last[topic] = stamp
        out_topics: dict[str, dict[str, Any]] = {}
        for name, info in sorted(topics.items()):
            span = last.get(name, 0) - first.get(name, 0)
            rate = (info.count - 1) / (span / 1e9) if info.count > 1 and span > 0 else None
            out_topics[name] = {"type": info.msgtype, "count": info.count,
                                "rate_hz": None if rate is None else round(rate, 6)}
        return {"path": str(Path(path)), "storage": bag.storage, "topics": out_topics,
                "message_count": bag.message_count, "duration_s": bag.duration_s,
                "start_ns": bag.start_ns, "end_ns": bag.end_ns}
