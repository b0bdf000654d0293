"""Socket.IO v5 client (Engine.IO v4, websocket transport) for Evolution API's event channel.

`codec` holds the protocol as a sans-I/O state machine; `client` keeps a connection alive with
`websockets` and reports through a `SocketIOListener`.
"""

from .client import (
    MAX_FRAME_SIZE,
    SocketIOClient,
    SocketIOListener,
    SocketIOStats,
    build_socketio_url,
    describe_failure,
)
from .codec import (
    ROOT_NAMESPACE,
    ClientSession,
    Closed,
    EngineIOPacket,
    EngineIOPacketType,
    EventReceived,
    HandshakeInfo,
    Ignored,
    Malformed,
    NamespaceConnected,
    NamespaceDisconnected,
    NamespaceRefused,
    Opened,
    ProtocolError,
    SessionEvent,
    SocketIOPacket,
    SocketIOPacketType,
    decode_engineio,
    decode_socketio,
    encode_engineio,
    encode_socketio,
    parse_open,
)

__all__ = [
    "MAX_FRAME_SIZE",
    "ROOT_NAMESPACE",
    "ClientSession",
    "Closed",
    "EngineIOPacket",
    "EngineIOPacketType",
    "EventReceived",
    "HandshakeInfo",
    "Ignored",
    "Malformed",
    "NamespaceConnected",
    "NamespaceDisconnected",
    "NamespaceRefused",
    "Opened",
    "ProtocolError",
    "SessionEvent",
    "SocketIOClient",
    "SocketIOListener",
    "SocketIOPacket",
    "SocketIOPacketType",
    "SocketIOStats",
    "build_socketio_url",
    "decode_engineio",
    "decode_socketio",
    "describe_failure",
    "encode_engineio",
    "encode_socketio",
    "parse_open",
]
