"""The inspection service: FastAPI app factory, settings, routes, product store, batching worker, metrics.

Imports go one way: service -> model. Build an app with `service.app.create_app(settings)`;
run one with `python -m service --host H --port P`.
"""
