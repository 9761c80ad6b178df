"""The export stage's error: input that cannot be exported (bad options, an output folder in the way,
a written file that does not read back). A checkpoint that cannot be read raises
allava.checkpoint.CheckpointError instead; the export commands report both the same way."""


class ExportError(RuntimeError):
    """The input cannot be exported; the message says which file and why."""
