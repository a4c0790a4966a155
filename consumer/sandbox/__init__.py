"""Local stand-ins used by tests, the benchmark and `demo`: the LivePerson API sandbox."""
