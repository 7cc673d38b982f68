"""The PennyLane front-end: QFleetDevice and @qelectron."""

from qfleet.pennylane import pickling
from qfleet.pennylane.device import QFleetDevice
from qfleet.pennylane.qelectron import QElectron, QFuture, qelectron

pickling.register()

__all__ = ["QElectron", "QFleetDevice", "QFuture", "qelectron"]
