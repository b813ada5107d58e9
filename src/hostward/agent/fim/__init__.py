"""File integrity monitoring: baseline, check and realtime watch of configured paths.

Layout (collectors own the OS handles, the comparison is pure):

- ``config``   what to monitor (``WatchRoot``, the default set, ``RootSet`` path -> root lookup)
- ``scan``     walk + stat + hash (threads, throttle); rows are plain tuples (``Entry`` layout)
- ``store``    the SQLite baseline
- ``diff``     pure comparison of two states -> ``Change`` records
- ``pkgdb``    package databases (dpkg md5sums, rpm digests): "package update" labelling
- ``engine``   ``FimEngine``: baseline / check / check_paths, ties the above together
- ``inotify``, ``fanotify``  ctypes bindings; ``watch``: the realtime ``FimWatcher`` thread
- ``monitor``  ``FimMonitor``: what the agent runtime drives (policy in, ``fim_changes`` observations out)

The pure half (changes -> alarms and records, the ``file_integrity`` policy) is
``hostward.agent.detectors.fim``; the standalone CLI is ``hostward.cli.fim_cmds``.
"""
