"""Serverless speech-to-text batch pipeline: the code every function shares (the Lambda layer)."""

PIPELINE_VERSION = "1"
