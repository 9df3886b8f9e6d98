"""Speech-to-text APIs: the `Transcriber` interface and one module per backend."""
