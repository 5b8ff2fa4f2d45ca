"""The service on ZeroMQ: wire protocol, publisher, subscriber client, CURVE, tick feed.

    protocol.py    the wire: topics, envelopes, JSON Schemas, tick and snapshot messages
    publisher.py   XPUB that never blocks, snapshots for late joiners, heartbeats, metrics
    subscriber.py  async iterator client: snapshot on join, gaps, liveness, reconnects
    security.py    optional CURVE with an allow-list folder of client keys
    feed.py        the live tick feed: checks, per-symbol trackers, batched decoding
    sockets.py     endpoint checks and the socket-to-event-loop wake-up

`streamer.net.feed` is not imported here: it pulls in the market models, which a
plain client (``streamer listen``) does not need.
"""

from streamer.net.protocol import DEFAULT_HWM, DEFAULT_PUB, VERSION, Message
from streamer.net.publisher import Publisher
from streamer.net.security import CurveClient, CurveServer, create_keypair
from streamer.net.subscriber import PublisherGone, Subscriber, SubscriberStats

__all__ = [
    "DEFAULT_HWM",
    "DEFAULT_PUB",
    "VERSION",
    "CurveClient",
    "CurveServer",
    "Message",
    "Publisher",
    "PublisherGone",
    "Subscriber",
    "SubscriberStats",
    "create_keypair",
]
