"""What tests, benchmarks and the local cloud use to stand in for the world: in-memory fakes of
the ports (`fakes`) and makers of real audio files (`audio`). Installed with the project for
development, never shipped in the Lambda layer."""
