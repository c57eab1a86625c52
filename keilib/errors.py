"""The one exception tree of kei.

    KeiError
     +-- ConfigError          a keiconf.py problem, found before any thread starts
     +-- DeviceError          a port or module failed (I/O error, wrong answer)
     |    +-- DeviceTimeout   the device did not answer in time
     |    +-- DeviceGone      the port vanished (USB stick pulled, pty closed)
     +-- ProtocolError        bytes that do not follow the protocol
          +-- FrameError      a malformed ECHONET Lite frame

Drivers translate serial.SerialException and OSError into DeviceError
subclasses (``raise DeviceGone(...) from exc``) so that workers decide how far
to fall back by exception type alone.
"""


class KeiError(Exception):
    """Base of every error kei raises on purpose."""


class ConfigError(KeiError, ValueError):
    """The configuration is unusable; the message names the entry and argument.

    Also a ValueError: a device built inside keiconf.py (``WiSunRL7023(...)``)
    refuses a bad argument the way Python code expects."""


class DeviceError(KeiError):
    """A device or port failed."""


class DeviceTimeout(DeviceError):
    """A device did not answer within its deadline."""


class DeviceGone(DeviceError):
    """The port disappeared or could not be opened."""


class ProtocolError(KeiError):
    """Input that does not follow the expected protocol."""


class FrameError(ProtocolError):
    """A malformed ECHONET Lite frame (short, overlong or inconsistent)."""
