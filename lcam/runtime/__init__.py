"""Run plumbing shared by the entry points: task wrapper, CLI args, the error convention, quiet start-up, allocator,
launchers, loggers, distributed helpers, config location, atomic IO and image reading, optional dependencies, batching.
May import: nothing of lcam (the bottom layer); nothing of the method lives here."""
