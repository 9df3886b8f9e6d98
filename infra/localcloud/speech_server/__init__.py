"""A local stand-in for the Cloud.ru speech API, running a real offline engine.

`python -m localcloud.speech_server --help` runs it in the foreground; `SpeechServer` runs it in a
background thread for tests and the local cloud.
"""

from localcloud.speech_server.app import (
    DEFAULT_API_KEY,
    DEFAULT_MODEL,
    SpeechService,
    Switches,
    create_app,
)
from localcloud.speech_server.engines import Engine, decode_audio, load_engine
from localcloud.speech_server.runner import SpeechServer

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODEL",
    "Engine",
    "SpeechServer",
    "SpeechService",
    "Switches",
    "create_app",
    "decode_audio",
    "load_engine",
]
