from resizeflow.cli import entrypoint

entrypoint()
