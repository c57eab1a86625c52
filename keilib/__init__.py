"""kei: a smart-meter (Route B) and serial-sensor logging daemon.

The package is organised one module per layer (see README.md):
record, worker, clock, errors, echonet, skstack, broute, serial, recorder,
uploader, daemon, and the simulator in keilib.sim.
"""

__version__ = "0.2.0"
