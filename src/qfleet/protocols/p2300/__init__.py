"""QuTech 2300 control software over ZeroMQ (compute-runtime schema, protocol v3).

- :mod:`.messages`: the messages as pydantic models (sans-IO).
- :mod:`.session`: 2300's side as a state machine (sans-IO): lock, commands, validation.
- :mod:`.client`: the job processor's side: a lazy-pirate REQ client and a state listener
  (pyzmq, asyncio).
- :mod:`.emulator`: ``qfleet serve-2300``, a local 2300 backed by libqasm and qxelarator.

Only :mod:`.client` and :mod:`.emulator` import pyzmq (the ``qutech`` extra), and only when
they are used.
"""

from qfleet.protocols.p2300.messages import (
    PROTOCOL_VERSION,
    ExecutePayload,
    ExecuteResult,
    ProtocolError,
    PublishState,
    Reply,
    Request,
    State,
    StaticData,
)
from qfleet.protocols.p2300.session import ControlSession, ExecuteJob

__all__ = [
    "PROTOCOL_VERSION",
    "ControlSession",
    "ExecuteJob",
    "ExecutePayload",
    "ExecuteResult",
    "ProtocolError",
    "PublishState",
    "Reply",
    "Request",
    "State",
    "StaticData",
]
