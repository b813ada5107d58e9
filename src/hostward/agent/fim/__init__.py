"""File integrity monitoring: baseline, check and realtime watch of configured paths.

Layout (collectors own the OS handles, the comparison is pure):

- ``config``   what to monitor (``WatchRoot``, the default set, ``RootSet`` path -> root lookup)
- ``scan``     walk + stat + hash (threads, throttle); rows are plain tuples (``Entry`` layout)
- ``store``    the SQLite baseline
- ``diff``     pure comparison of two states -> ``Change`` records
- ``pkgdb``    package databases (dpkg md5sums, rpm digests): "package update" labelling
- ``engine``   ``FimEngine``: baseline / check / check_paths, ties the above together
- ``inotify``, ``fanotify``  ctypes bindings; ``watch``: the realtime ``FimWatcher`` thread
"""
