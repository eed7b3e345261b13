"""The CLI verbs: each module turns a composed config into calls of the library's API (``run(cfg)``)."""
