"""drsn-asr: a streaming keyword recognizer for noisy streets, built on Deep Residual Shrinkage Networks.

    import drsn_asr
    rec = drsn_asr.Recognizer(on_detection=print)     # the shipped default model
    rec.feed(chunk)                                   # any length, int16 or float32, 16 kHz mono
    drsn_asr.transcribe("street.flac")                # -> [Detection(label, score, start_s, end_s), ...]
"""

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

from .runtime.checkpoint import available_models, load_model
from .runtime.stream import Detection, Recognizer
from .runtime.transcribe import transcribe

__all__ = ["Detection", "MultiStreamRecognizer", "Recognizer", "available_models", "load_model", "transcribe", "listen",
           "__version__"]


def __getattr__(name: str):
    # sounddevice enumerates audio devices at import: only pay for it when live capture is used
    if name == "listen":
        from .runtime.microphone import listen

        return listen
    if name == "MultiStreamRecognizer":
        from .runtime.multistream import MultiStreamRecognizer

        return MultiStreamRecognizer
    raise AttributeError(f"module 'drsn_asr' has no attribute {name!r}")
