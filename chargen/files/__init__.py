"""Files: where chargen keeps its own, the paths a user gives, and the one atomic write.

  home.py        $CHARGEN_HOME: the per-user folder (history database, machine cache)
  user_paths.py  what a path a user gives is, and reads bounded by size
  atomic.py      atomic_write (temp file, fsync, rename) and content hashes
"""
