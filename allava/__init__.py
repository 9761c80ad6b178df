"""Core package of the ALLaVA edge toolkit.

Holds what every stage shares: model presets, the chat format, the ALLaVA-4V data schema and the
built-in world. Stage folders (``train/``, ``export/``, ...) import from here and talk to each
other only through folders on disk.
"""

__version__ = "0.1.0"
