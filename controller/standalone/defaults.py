"""The daemon's defaults, in a module of their own so that `localmodel --help` need not import the daemon."""

DEFAULT_INTERVAL = 30.0  # seconds between drift passes
DEFAULT_CONCURRENCY = 16  # models reconciled at the same time
DEFAULT_DELETION_GRACE = 30.0  # seconds a LocalModel must stay gone from the files before its deletionPolicy runs
DEFAULT_WATCH_PERIOD = 1.0  # seconds between two looks of the engine watch (controller.engine.watch has the same)
