"""The partition Kafka producers give a key: needed to place a contact the state has never
seen (its events only in an archive) in the shard its next live event will reach."""

from __future__ import annotations

import zlib
from typing import Callable

__all__ = ["PARTITIONERS", "murmur2", "detect_partitioner"]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's and Kafka Streams' default partitioner, librdkafka's
    `murmur2` and `murmur2_random`), as an unsigned 32-bit value."""
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length - length % 4
    for i in range(0, end, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


#: name -> (key bytes, partitions) -> partition
PARTITIONERS: dict[str, Callable[[bytes, int], int]] = {
    "murmur2": lambda key, n: (murmur2(key) & 0x7FFFFFFF) % n,  # Java client, Kafka Streams, Connect
    "crc32": lambda key, n: zlib.crc32(key) % n,  # librdkafka's default (consistent_random), confluent-kafka
}


def detect_partitioner(placed: dict[str, int], partitions: int) -> str | None:
    """The partitioner that puts every key of `placed` ({contact id: its partition}) where it
    is, or None (another partitioner, or keys moved by a partition count change)."""
    if not placed or partitions < 2:
        return None if not placed else next(iter(PARTITIONERS))
    for name, fn in PARTITIONERS.items():
        if all(fn(cid.encode(), partitions) == p for cid, p in placed.items()):
            return name
    return None
