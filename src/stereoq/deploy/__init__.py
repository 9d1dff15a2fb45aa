"""Deployment: ONNX export, backend checks, compiled artifacts and their performance reports."""
